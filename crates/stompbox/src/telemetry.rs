//! What an operator can see of a running server: every open connection in a
//! registry (for the admin page and the per-transport gauges), and the
//! server-wide counters (frames by command, ERRORs and authentication
//! failures by reason). The Prometheus endpoint, the admin API and the stats
//! log line all read from here.
//!
//! Nothing here is on a message's fan-out path: per-session figures are
//! counted by the session's own connection task (uncontended), and a
//! session's totals are folded into its registry shard when it ends, so a
//! server-wide total is the shard's ended sessions plus its live ones, read
//! under the shard's lock (and so never goes backwards).

use crate::frames::ErrorReason;
use crate::outbox::{Outbox, Taken};
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::SystemTime;
use stompbox_codec::{Command, Version};

/// Shards of the session registry: opening and closing connections on
/// different shards do not wait for each other, and a walk (a scrape, the
/// admin page) holds one shard at a time.
const SHARDS: usize = 16;

/// Client frame commands, in the order of the `frames_received` counters.
pub(crate) const CLIENT_COMMANDS: [Command; 11] = [
    Command::Connect,
    Command::Stomp,
    Command::Send,
    Command::Subscribe,
    Command::Unsubscribe,
    Command::Ack,
    Command::Nack,
    Command::Begin,
    Command::Commit,
    Command::Abort,
    Command::Disconnect,
];

fn command_index(command: Command) -> Option<usize> {
    CLIENT_COMMANDS.iter().position(|c| *c == command)
}

/// Why a CONNECT was refused, as counted. The authenticators' own reasons
/// ([`AuthError::reason`](crate::auth::AuthError::reason)) and the
/// server's limits.
pub(crate) const AUTH_FAILURE_REASONS: [&str; 9] = [
    "bad_credentials",
    "invalid_token",
    "token_expired",
    "token_not_yet_valid",
    "credentials_required",
    "service_unavailable",
    "refused",
    "too_many_failed_logins",
    "too_many_user_sessions",
];

/// Why a client was cut off as a slow consumer, as counted.
pub(crate) const SLOW_CONSUMER_REASONS: [&str; 3] =
    ["outbox_full", "send_timeout", "unacked_limit"];

/// The transports a session runs over, as labelled.
pub(crate) const TRANSPORTS: [&str; 3] = ["websocket", "tcp", "tls"];

/// STOMP versions, as labelled.
pub(crate) const VERSIONS: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

/// Counters of one server.
pub(crate) struct Telemetry {
    pub(crate) sessions: SessionRegistry,
    frames_received: [AtomicU64; CLIENT_COMMANDS.len()],
    errors: [AtomicU64; ErrorReason::ALL.len()],
    auth_failures: [AtomicU64; AUTH_FAILURE_REASONS.len()],
    slow_consumers: [AtomicU64; SLOW_CONSUMER_REASONS.len()],
    opened: [AtomicU64; TRANSPORTS.len()],
    /// Time application handlers took, by kind (`message`, `subscribe`)
    /// and route template: as many series as the application has routes.
    pub(crate) handler_latency: prometheus::HistogramVec,
    /// When the server was built, for `process_start_time_seconds` and uptime.
    pub(crate) started: SystemTime,
}

impl Default for Telemetry {
    fn default() -> Telemetry {
        Telemetry {
            sessions: SessionRegistry::default(),
            frames_received: Default::default(),
            errors: Default::default(),
            auth_failures: Default::default(),
            slow_consumers: Default::default(),
            opened: Default::default(),
            handler_latency: handler_latency(),
            started: SystemTime::now(),
        }
    }
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry").finish_non_exhaustive()
    }
}

fn handler_latency() -> prometheus::HistogramVec {
    let options = prometheus::HistogramOpts::new(
        "stompbox_handler_duration_seconds",
        "Time application handlers took to answer, by kind (message: a SEND, subscribe: a SUBSCRIBE) and route.",
    )
    .buckets(vec![
        0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    ]);
    // The name, help and labels are constants that the crate accepts.
    prometheus::HistogramVec::new(options, &["kind", "route"])
        .expect("constant histogram options are valid")
}

impl Telemetry {
    /// An application handler answered after `took`.
    /// `cached` keeps the route's histogram after the first look-up (a
    /// route belongs to one server, so to this telemetry).
    pub(crate) fn handler_finished(
        &self,
        subscribe: bool,
        route: &str,
        cached: &std::sync::OnceLock<prometheus::Histogram>,
        took: std::time::Duration,
    ) {
        let histogram = match cached.get() {
            Some(histogram) => histogram,
            None => {
                let kind = if subscribe { "subscribe" } else { "message" };
                let Ok(histogram) = self
                    .handler_latency
                    .get_metric_with_label_values(&[kind, route])
                else {
                    return;
                };
                cached.get_or_init(|| histogram)
            }
        };
        histogram.observe(took.as_secs_f64());
    }

    pub(crate) fn frame_received(&self, command: Command) {
        if let Some(i) = command_index(command) {
            self.frames_received[i].fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Frames received, per command of [`CLIENT_COMMANDS`].
    pub(crate) fn frames_received(&self) -> impl Iterator<Item = (Command, u64)> + '_ {
        CLIENT_COMMANDS
            .iter()
            .zip(&self.frames_received)
            .map(|(c, n)| (*c, n.load(Ordering::Relaxed)))
    }

    /// An ERROR frame was sent (the session ends with it).
    pub(crate) fn error_sent(&self, reason: ErrorReason) {
        self.errors[reason as usize].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn errors(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        ErrorReason::ALL
            .iter()
            .map(|r| (r.label(), self.errors[*r as usize].load(Ordering::Relaxed)))
    }

    /// A CONNECT was refused; `reason` is one of [`AUTH_FAILURE_REASONS`]
    /// (anything else counts as `refused`).
    pub(crate) fn auth_failed(&self, reason: &str) {
        let i = AUTH_FAILURE_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(6);
        self.auth_failures[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn auth_failures(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        AUTH_FAILURE_REASONS
            .iter()
            .zip(&self.auth_failures)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
    }

    /// A client was cut off as a slow consumer; `reason` is one of
    /// [`SLOW_CONSUMER_REASONS`].
    pub(crate) fn slow_consumer(&self, reason: &str) {
        let i = SLOW_CONSUMER_REASONS
            .iter()
            .position(|r| *r == reason)
            .unwrap_or(0);
        self.slow_consumers[i].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn slow_consumers(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        SLOW_CONSUMER_REASONS
            .iter()
            .zip(&self.slow_consumers)
            .map(|(r, n)| (*r, n.load(Ordering::Relaxed)))
    }

    pub(crate) fn slow_consumers_total(&self) -> u64 {
        self.slow_consumers().map(|(_, n)| n).sum()
    }

    /// Connections opened (WebSocket sessions, STOMP TCP and TLS
    /// connections) since start, per transport of [`TRANSPORTS`].
    pub(crate) fn opened(&self) -> impl Iterator<Item = (&'static str, u64)> + '_ {
        TRANSPORTS
            .iter()
            .zip(&self.opened)
            .map(|(t, n)| (*t, n.load(Ordering::Relaxed)))
    }

    /// Registers a connection for as long as the returned guard lives.
    pub(crate) fn register(
        self: &Arc<Self>,
        id: Arc<str>,
        peer: SocketAddr,
        transport: &'static str,
        outbox: Arc<Outbox>,
    ) -> Registered {
        if let Some(i) = TRANSPORTS.iter().position(|t| *t == transport) {
            self.opened[i].fetch_add(1, Ordering::Relaxed);
        }
        let entry = Arc::new(SessionEntry {
            id,
            peer,
            transport,
            opened: SystemTime::now(),
            outbox,
            connected: OnceLock::new(),
            subscriptions: AtomicUsize::new(0),
            messages_in: AtomicU64::new(0),
            messages_out: AtomicU64::new(0),
            bytes_in: AtomicU64::new(0),
            bytes_out: AtomicU64::new(0),
            kicked: Mutex::new(None),
        });
        let key = self.sessions.insert(Arc::clone(&entry));
        Registered {
            telemetry: Arc::clone(self),
            key,
            entry,
        }
    }
}

/// What a session's CONNECT settled.
#[derive(Debug, Clone)]
pub(crate) struct ConnectedAs {
    /// The verified user name; `None` for an anonymous session.
    pub(crate) user: Option<String>,
    pub(crate) version: Version,
    pub(crate) at: SystemTime,
}

/// One open connection, as the registry shows it. The counters are written
/// by the connection's own task only.
#[derive(Debug)]
pub(crate) struct SessionEntry {
    pub(crate) id: Arc<str>,
    pub(crate) peer: SocketAddr,
    /// One of [`TRANSPORTS`].
    pub(crate) transport: &'static str,
    pub(crate) opened: SystemTime,
    pub(crate) outbox: Arc<Outbox>,
    connected: OnceLock<ConnectedAs>,
    subscriptions: AtomicUsize,
    messages_in: AtomicU64,
    messages_out: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    /// Set when an operator disconnected the session, with who did.
    kicked: Mutex<Option<String>>,
}

/// Adds `n` to a counter only its owner writes: a load and a store, not a
/// locked read-modify-write.
fn bump(counter: &AtomicU64, n: u64) {
    counter.store(
        counter.load(Ordering::Relaxed).wrapping_add(n),
        Ordering::Relaxed,
    );
}

impl SessionEntry {
    pub(crate) fn set_connected(&self, user: Option<String>, version: Version) {
        let _ = self.connected.set(ConnectedAs {
            user,
            version,
            at: SystemTime::now(),
        });
    }

    pub(crate) fn connected(&self) -> Option<&ConnectedAs> {
        self.connected.get()
    }

    pub(crate) fn set_subscriptions(&self, count: usize) {
        self.subscriptions.store(count, Ordering::Relaxed);
    }

    pub(crate) fn subscriptions(&self) -> usize {
        self.subscriptions.load(Ordering::Relaxed)
    }

    pub(crate) fn read(&self, bytes: usize) {
        bump(&self.bytes_in, bytes as u64);
    }

    /// A SEND from the client.
    pub(crate) fn message_in(&self) {
        bump(&self.messages_in, 1);
    }

    /// Counts a batch about to be written: its bytes, and its MESSAGE frames.
    pub(crate) fn writing(&self, batch: &Taken) {
        bump(&self.bytes_out, batch.bytes as u64);
        bump(&self.messages_out, batch.messages as u64);
    }

    pub(crate) fn totals(&self) -> Totals {
        Totals {
            messages_in: self.messages_in.load(Ordering::Relaxed),
            messages_out: self.messages_out.load(Ordering::Relaxed),
            bytes_in: self.bytes_in.load(Ordering::Relaxed),
            bytes_out: self.bytes_out.load(Ordering::Relaxed),
        }
    }

    /// Ends the session on an operator's word: the client gets an ERROR
    /// saying so after what is already queued, then the connection closes.
    /// False when it was already ending (the broker's ERROR, another
    /// operator's, an error of its own).
    pub(crate) fn kick(&self, by: &str) -> bool {
        // Held while the ERROR is queued: the connection task reads who
        // kicked once it has written the last frame, and must not see a
        // kick that came after the broker had already ended the session.
        let mut kicked = self.kicked.lock().unwrap_or_else(|e| e.into_inner());
        if kicked.is_some() {
            return false;
        }
        let version = self.connected().map_or(Version::V1_0, |c| c.version);
        let error = crate::frames::StompError::new("disconnected by the server's administrator")
            .because(ErrorReason::Administrator);
        if !self.outbox.finish(error.to_frame(version)) {
            return false;
        }
        *kicked = Some(by.to_owned());
        true
    }

    /// Who disconnected the session, if an operator did.
    pub(crate) fn kicked_by(&self) -> Option<String> {
        self.kicked
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

/// Traffic counters of sessions.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Totals {
    pub(crate) messages_in: u64,
    pub(crate) messages_out: u64,
    pub(crate) bytes_in: u64,
    pub(crate) bytes_out: u64,
}

impl Totals {
    fn add(&mut self, other: Totals) {
        self.messages_in += other.messages_in;
        self.messages_out += other.messages_out;
        self.bytes_in += other.bytes_in;
        self.bytes_out += other.bytes_out;
    }
}

#[derive(Default)]
struct Shard {
    live: HashMap<u64, Arc<SessionEntry>>,
    /// What the sessions that ended on this shard counted.
    ended: Totals,
}

/// Every open connection of the server.
pub(crate) struct SessionRegistry {
    shards: [Mutex<Shard>; SHARDS],
    next: AtomicU64,
}

impl Default for SessionRegistry {
    fn default() -> SessionRegistry {
        SessionRegistry {
            shards: Default::default(),
            next: AtomicU64::new(0),
        }
    }
}

fn lock(shard: &Mutex<Shard>) -> MutexGuard<'_, Shard> {
    // Every change under this lock is one insert or remove plus a sum:
    // nothing can be left half done by a panic.
    shard.lock().unwrap_or_else(|e| e.into_inner())
}

impl SessionRegistry {
    fn insert(&self, entry: Arc<SessionEntry>) -> u64 {
        let key = self.next.fetch_add(1, Ordering::Relaxed);
        lock(&self.shards[key as usize % SHARDS])
            .live
            .insert(key, entry);
        key
    }

    fn remove(&self, key: u64) {
        let mut shard = lock(&self.shards[key as usize % SHARDS]);
        if let Some(entry) = shard.live.remove(&key) {
            shard.ended.add(entry.totals());
        }
    }

    /// Sessions' traffic since start, the ended ones and the open ones.
    pub(crate) fn totals(&self) -> Totals {
        let mut totals = Totals::default();
        for shard in &self.shards {
            let shard = lock(shard);
            totals.add(shard.ended);
            for entry in shard.live.values() {
                totals.add(entry.totals());
            }
        }
        totals
    }

    /// Calls `f` with every open connection, one shard locked at a time
    /// (`f` must be quick and must not open or close connections).
    pub(crate) fn for_each(&self, mut f: impl FnMut(&SessionEntry)) {
        for shard in &self.shards {
            for entry in lock(shard).live.values() {
                f(entry);
            }
        }
    }

    /// Open connections.
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.shards.iter().map(|s| lock(s).live.len()).sum()
    }

    /// The open connection with session id `id`.
    pub(crate) fn find(&self, id: &str) -> Option<Arc<SessionEntry>> {
        self.shards.iter().find_map(|shard| {
            lock(shard)
                .live
                .values()
                .find(|e| &*e.id == id)
                .map(Arc::clone)
        })
    }
}

/// A connection's place in the registry; leaving it folds the session's
/// counters into the server's totals.
pub(crate) struct Registered {
    telemetry: Arc<Telemetry>,
    key: u64,
    pub(crate) entry: Arc<SessionEntry>,
}

/// The registered session's entry, without a clone of its `Arc` to hold
/// beside the registration.
impl std::ops::Deref for Registered {
    type Target = SessionEntry;

    fn deref(&self) -> &SessionEntry {
        &self.entry
    }
}

impl Drop for Registered {
    fn drop(&mut self) {
        self.telemetry.sessions.remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::OutFrame;
    use bytes::Bytes;

    fn entry(telemetry: &Arc<Telemetry>, id: &str) -> Registered {
        telemetry.register(
            id.into(),
            SocketAddr::from(([127, 0, 0, 1], 1)),
            "websocket",
            Arc::new(Outbox::new(1024)),
        )
    }

    #[test]
    fn totals_keep_what_ended_sessions_counted() {
        let telemetry = Arc::new(Telemetry::default());
        let a = entry(&telemetry, "a");
        let b = entry(&telemetry, "b");
        let frames: [&'static [u8]; 3] =
            [b"MESSAGE\nx:y\n\n\0", b"\n", b"RECEIPT\nreceipt-id:1\n\n\0"];
        let written: usize = frames.iter().map(|f| f.len()).sum();
        let mut batch = Taken::default();
        for frame in frames {
            batch.add(&OutFrame::new(Bytes::from_static(frame)));
        }
        a.entry.writing(&batch);
        a.entry.message_in();
        b.entry.read(10);
        assert_eq!(telemetry.sessions.len(), 2);
        let before = telemetry.sessions.totals();
        assert_eq!(before.messages_out, 1);
        assert_eq!(before.messages_in, 1);
        assert_eq!(before.bytes_in, 10);
        assert_eq!(before.bytes_out, written as u64);
        drop(a);
        assert_eq!(telemetry.sessions.len(), 1);
        assert_eq!(telemetry.sessions.totals(), before);
        assert!(telemetry.sessions.find("b").is_some());
        assert!(telemetry.sessions.find("a").is_none());
    }

    #[test]
    fn a_kicked_session_gets_an_error_as_its_last_frame_once() {
        let telemetry = Arc::new(Telemetry::default());
        let a = entry(&telemetry, "a");
        assert!(a.entry.kick("admin"));
        assert!(!a.entry.kick("admin"));
        assert!(a.entry.outbox.is_finished());
        let mut out = std::collections::VecDeque::new();
        a.entry.outbox.take_all(&mut out);
        let last = out.pop_back().map(|f| f.to_bytes()).unwrap_or_default();
        assert!(last.starts_with(b"ERROR\n"), "{last:?}");
        assert_eq!(a.entry.kicked_by().as_deref(), Some("admin"));
    }

    #[test]
    fn a_kick_after_the_broker_ended_the_session_is_not_who_ended_it() {
        let telemetry = Arc::new(Telemetry::default());
        let a = entry(&telemetry, "a");
        a.entry
            .outbox
            .finish(OutFrame::new(Bytes::from_static(b"ERROR\n\n\0")));
        assert!(!a.entry.kick("admin"));
        assert_eq!(a.entry.kicked_by(), None);
    }

    #[test]
    fn unknown_reasons_are_counted_under_a_known_label() {
        let telemetry = Telemetry::default();
        telemetry.auth_failed("something new");
        telemetry.auth_failed("bad_credentials");
        let counted: HashMap<_, _> = telemetry.auth_failures().collect();
        assert_eq!(counted["refused"], 1);
        assert_eq!(counted["bad_credentials"], 1);
        telemetry.error_sent(ErrorReason::AccessDenied);
        let errors: HashMap<_, _> = telemetry.errors().collect();
        assert_eq!(errors["access_denied"], 1);
        assert_eq!(errors["protocol"], 0);
    }
}
