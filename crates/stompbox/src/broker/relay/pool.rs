//! The shared relay's broker links: a fixed pool of reconnecting links that
//! carry every session's SENDs and the upstream subscriptions whose
//! messages need no acknowledgement (one per topic and instance, fanned out
//! locally), and acknowledging links, opened on demand, for subscriptions
//! in the client ack modes.
//!
//! The two kinds are apart because of what a broker does with messages a
//! subscription received but never acknowledged when it is cancelled while
//! its connection stays open: RabbitMQ keeps them unacknowledged on that
//! connection until it closes (a NACK after the UNSUBSCRIBE is refused,
//! one before it is redelivered to the same subscription). On a link that
//! never closed they would be lost to every other consumer. So a link with
//! such messages is *retiring*: it takes no new subscriptions and is closed
//! once its last one ends, which hands them back to the queue. Links that
//! carry only `ack:auto` subscriptions never hold any, so they never need
//! to close.

use super::RelayConfig;
use super::stats::RelayCounters;
use super::upstream::{self, Event, Link};
use crate::broker::message::{FanOut, Message};
use crate::broker::{AckMode, BrokerError};
use crate::frames::{StompError, encode, receipt_frame};
use crate::outbox::{OutFrame, Outbox, PushError};
use bytes::Bytes;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use stompbox_codec::{Command, Frame, Version, header};
use tokio::sync::{Notify, oneshot, watch};

/// Every link of the pool speaks STOMP 1.2 to the broker; messages are
/// re-encoded for each client's own version.
pub(super) const LINK_VERSION: Version = Version::V1_2;

/// How often a pool link that sessions sent on asks the broker to confirm
/// what it has (see [`Pool::checkpoint`]).
const CHECKPOINT_EVERY: std::time::Duration = std::time::Duration::from_secs(1);

pub(super) fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

/// One local subscriber of a shared topic subscription.
#[derive(Debug)]
pub(super) struct LocalSubscriber {
    pub(super) id: Bytes,
    /// Shown instead of the message's destination (user destinations).
    pub(super) display: Option<Bytes>,
    pub(super) version: Version,
    pub(super) outbox: Arc<Outbox>,
    /// Set on UNSUBSCRIBE: a fan-out still holding an older subscriber
    /// list skips it.
    pub(super) cancelled: AtomicBool,
}

/// One upstream subscription shared by every local subscriber of one
/// destination (or pattern) on this instance.
#[derive(Debug)]
pub(super) struct TopicEntry {
    /// The destination as the broker sees it: the key of the topic map.
    key: String,
    link: usize,
    state: Mutex<TopicState>,
}

#[derive(Debug)]
struct TopicState {
    upstream_id: Bytes,
    /// Copy on write: a fan-out clones the `Arc` and delivers with no lock.
    /// Copy-on-write: a fan-out clones the `Arc` and walks it unlocked;
    /// a join or leave copies the list only while such a walk holds it.
    subscribers: Arc<Vec<Arc<LocalSubscriber>>>,
    /// The broker confirmed the upstream SUBSCRIBE (on the current link).
    confirmed: bool,
    /// Clients' SUBSCRIBE receipts waiting for that confirmation.
    waiting: Vec<Arc<ReceiptJoin>>,
}

/// A client's SUBSCRIBE receipt, answered once every upstream side of the
/// subscription (a user destination has two, maybe on two links) is
/// confirmed.
#[derive(Debug)]
pub(super) struct ReceiptJoin {
    remaining: AtomicUsize,
    outbox: Arc<Outbox>,
    version: Version,
    receipt: Bytes,
}

impl ReceiptJoin {
    pub(super) fn new(
        sides: usize,
        outbox: Arc<Outbox>,
        version: Version,
        receipt: Bytes,
    ) -> Arc<ReceiptJoin> {
        Arc::new(ReceiptJoin {
            remaining: AtomicUsize::new(sides),
            outbox,
            version,
            receipt,
        })
    }

    fn done(&self) {
        if self.remaining.fetch_sub(1, Ordering::AcqRel) == 1 {
            let _ = self.outbox.push(receipt_frame(&self.receipt));
        }
    }
}

/// What one client session shares with the links that deliver to it.
#[derive(Debug)]
pub(super) struct SessionState {
    pub(super) outbox: Arc<Outbox>,
    pub(super) version: Version,
    next_tag: AtomicU64,
    /// Delivered, not yet acknowledged messages of the session's
    /// client-ack subscriptions, by the ack tag the client was shown.
    pub(super) pending: Mutex<BTreeMap<u64, PendingAck>>,
    /// Upstream acks of `ack:auto` queue deliveries held back while the
    /// client's outbox is over half full: the broker then sends no more
    /// than `prefetch` ahead of what the client has taken. Sent when it
    /// drains.
    pub(super) deferred: Mutex<Vec<DeferredAck>>,
    /// Receipts this session awaits from the broker on pool links: its
    /// share of a link's `max_in_flight × 16`, so a few pipelining clients
    /// cannot take every other session's receipts.
    receipts_in_flight: Arc<AtomicUsize>,
    /// Set, under that link's lock, when a pool link was lost before the
    /// broker confirmed this session's SENDs on it: the session is being
    /// ended, and sends nothing more. A later SEND on another link could
    /// reach a queue before one the broker still held from the lost
    /// connection, and the client was told only that some may be lost.
    cut: AtomicBool,
}

/// One receipt a session awaits, counted in its share until dropped.
#[derive(Debug)]
struct InFlight(Arc<AtomicUsize>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// An upstream ack the relay owes for an `ack:auto` queue delivery.
#[derive(Debug)]
pub(super) struct DeferredAck {
    pub(super) client_id: Bytes,
    pub(super) upstream_ack: Bytes,
    pub(super) link: Arc<AckLink>,
}

impl SessionState {
    pub(super) fn new(outbox: Arc<Outbox>, version: Version) -> Arc<SessionState> {
        Arc::new(SessionState {
            outbox,
            version,
            next_tag: AtomicU64::new(0),
            pending: Mutex::new(BTreeMap::new()),
            deferred: Mutex::new(Vec::new()),
            receipts_in_flight: Arc::new(AtomicUsize::new(0)),
            cut: AtomicBool::new(false),
        })
    }
}

/// A message a client has yet to acknowledge, and how to acknowledge it
/// upstream.
#[derive(Debug)]
pub(super) struct PendingAck {
    pub(super) client_id: Bytes,
    /// `client` mode: an ACK also acknowledges every earlier message of the
    /// subscription.
    pub(super) cumulative: bool,
    /// The broker's `ack` header (the links speak 1.2).
    pub(super) upstream_ack: Bytes,
    pub(super) message_id: Bytes,
    pub(super) link: Arc<AckLink>,
}

/// A subscription with an upstream subscription of its own: queues, client
/// ack modes, durable subscriptions and those with broker options.
#[derive(Debug)]
pub(super) struct OwnSubscription {
    pub(super) client_id: Bytes,
    pub(super) display: Option<Bytes>,
    pub(super) ack: AckMode,
    pub(super) session: Arc<SessionState>,
    pub(super) upstream_id: Bytes,
    /// The upstream SUBSCRIBE, sent again when a pool link reconnects.
    pub(super) subscribe: Frame,
}

/// Where MESSAGE frames of one upstream subscription go.
#[derive(Debug, Clone)]
enum Route {
    Topic(Arc<TopicEntry>),
    Own(Arc<OwnSubscription>),
}

/// Who waits for an upstream RECEIPT.
#[derive(Debug)]
enum Waiter {
    /// A client's receipt; `done` is told when it was answered (DISCONNECT
    /// waits for it).
    Client {
        outbox: Arc<Outbox>,
        version: Version,
        receipt: Bytes,
        done: Option<oneshot::Sender<()>>,
        /// The session's count of receipts in flight, where one is kept.
        _slot: Option<InFlight>,
        /// A SEND's session (by address) and its number on the link: when
        /// that was the session's last SEND there, the broker now has all
        /// it sent, and the session need not be told if the link is lost.
        sent: Option<(usize, u64)>,
    },
    /// A shared topic subscription's SUBSCRIBE.
    Topic(Arc<TopicEntry>),
    /// One side of a client's SUBSCRIBE.
    Join(Arc<ReceiptJoin>),
    /// Everything sent on the link before this point was taken (a
    /// DISCONNECT's receipt waits for it on each link the session used).
    Flush(oneshot::Sender<()>),
}

impl Waiter {
    /// A client's receipt that takes one of its session's places for
    /// receipts in flight (refused when none is left, or when the link
    /// already awaits `awaited` receipts, past what any sessions may hold).
    fn counted(
        session: &SessionState,
        receipt: Bytes,
        done: Option<oneshot::Sender<()>>,
        sent: Option<(usize, u64)>,
        awaited: usize,
        max_in_flight: usize,
    ) -> Result<Waiter, BrokerError> {
        reserve_receipt(&session.receipts_in_flight, awaited, max_in_flight)?;
        Ok(Waiter::Client {
            outbox: Arc::clone(&session.outbox),
            version: session.version,
            receipt,
            done,
            _slot: Some(InFlight(Arc::clone(&session.receipts_in_flight))),
            sent,
        })
    }
}

/// What every link holds, pool or acknowledging.
#[derive(Debug, Default)]
struct LinkState {
    /// Frames for the broker; for an acknowledging link it exists before
    /// the connection does, so frames queue while it opens.
    outbox: Option<Arc<Outbox>>,
    link: Option<Arc<Link>>,
    routes: HashMap<Bytes, Route>,
    receipts: HashMap<Bytes, Waiter>,
    /// Sessions that sent on this connection (by address) since the
    /// broker last confirmed everything before a checkpoint, with the
    /// number of their last SEND: if it is lost, what they sent since may
    /// be lost with it, so they are told.
    senders: HashMap<usize, (Weak<SessionState>, u64)>,
    /// SENDs of sessions on this link so far.
    sends: u64,
}

impl LinkState {
    /// Attaches upstream receipt `id` to `frame`; the broker's RECEIPT for
    /// it answers the client's `receipt`.
    fn await_receipt(
        &mut self,
        id: Bytes,
        session: &SessionState,
        receipt: Bytes,
        frame: &mut Frame,
    ) {
        self.receipts.insert(
            id.clone(),
            Waiter::Client {
                outbox: Arc::clone(&session.outbox),
                version: session.version,
                receipt,
                done: None,
                _slot: None,
                sent: None,
            },
        );
        frame
            .headers
            .push(Bytes::from_static(header::RECEIPT.as_bytes()), id);
    }

    /// Routes a subscription of its own here; returns the outbox and its
    /// upstream SUBSCRIBE, with `receipt` (the upstream id and the client's
    /// join) attached.
    fn route_own(
        &mut self,
        subscription: &Arc<OwnSubscription>,
        receipt: Option<(Bytes, Arc<ReceiptJoin>)>,
    ) -> Result<(Arc<Outbox>, Frame), BrokerError> {
        let outbox = self.outbox()?;
        let mut frame = subscription.subscribe.clone();
        if let Some((id, receipt)) = receipt {
            self.receipts.insert(id.clone(), Waiter::Join(receipt));
            frame
                .headers
                .push(Bytes::from_static(header::RECEIPT.as_bytes()), id);
        }
        self.routes.insert(
            subscription.upstream_id.clone(),
            Route::Own(Arc::clone(subscription)),
        );
        Ok((outbox, frame))
    }

    fn outbox(&self) -> Result<Arc<Outbox>, BrokerError> {
        self.outbox
            .clone()
            .ok_or_else(|| BrokerError::Unavailable("the message broker is unavailable".into()))
    }
}

/// Sends `frame` on `outbox`, refusing (not closing the shared link) when
/// its buffer is full. Noted like a subscriber's outbox: the publishing
/// session pauses until the broker took what it sent.
fn offer(outbox: &Arc<Outbox>, frame: &Frame) -> Result<(), BrokerError> {
    offer_encoded(outbox, encode(frame, LINK_VERSION))
}

/// As [`offer`], for a frame encoded already (outside a link's lock).
fn offer_encoded(outbox: &Arc<Outbox>, frame: OutFrame) -> Result<(), BrokerError> {
    outbox.offer(frame).map_err(|e| match e {
        PushError::Overflow => {
            BrokerError::Unavailable("the message broker is not keeping up".into())
        }
        PushError::Closed => {
            BrokerError::Unavailable("the connection to the message broker is closed".into())
        }
    })
}

/// Acknowledges one delivery upstream on `outbox`, with no receipt.
fn ack_on(outbox: &Arc<Outbox>, upstream_ack: Bytes) {
    let mut frame = Frame::new(Command::Ack);
    frame
        .headers
        .push(Bytes::from_static(header::ID.as_bytes()), upstream_ack);
    // Refused only when the broker stopped reading, which its heart-beats
    // turn into a lost link, redelivering.
    let _ = offer(outbox, &frame);
}

/// A reconnecting pool link.
#[derive(Debug)]
pub(super) struct PoolLink {
    state: Mutex<LinkState>,
    lost: Notify,
    up: AtomicBool,
}

/// An acknowledging link: client-ack subscriptions only, opened on demand,
/// closed when retiring and empty, never reopened (its sessions are told
/// when it is lost, so the broker redelivers what they held).
#[derive(Debug)]
pub(super) struct AckLink {
    state: Mutex<LinkState>,
    subscriptions: AtomicUsize,
    /// A subscription ended with messages unacknowledged: take no new ones,
    /// close when the last goes, or `retire_timeout` after this was set.
    retiring: AtomicBool,
    closed: AtomicBool,
    /// The connection ended other than by the relay's DISCONNECT (or never
    /// opened): what was sent on it may not have reached the broker.
    lost: AtomicBool,
    retire_timeout: std::time::Duration,
}

impl AckLink {
    /// Acknowledges one delivery upstream, with no receipt.
    pub(super) fn ack(&self, upstream_ack: Bytes) {
        let Ok(outbox) = lock(&self.state).outbox() else {
            return;
        };
        ack_on(&outbox, upstream_ack);
    }

    /// Takes no new subscriptions from now on, and closes (handing back
    /// what it holds unacknowledged) once it has none.
    fn retire(self: &Arc<Self>) {
        self.start_retiring();
        if self.subscriptions.load(Ordering::Relaxed) == 0 {
            self.close();
        }
    }

    /// Marks the link retiring. The first time, a timer closes it after
    /// `retire_timeout` if subscriptions still keep it open: what a
    /// departed client left unacknowledged is held no longer than that.
    fn start_retiring(self: &Arc<Self>) {
        if self.retiring.swap(true, Ordering::Relaxed) {
            return;
        }
        let weak = Arc::downgrade(self);
        let timeout = self.retire_timeout;
        tokio::spawn(async move {
            tokio::time::sleep(timeout).await;
            if let Some(link) = weak.upgrade()
                && !link.closed.load(Ordering::Relaxed)
            {
                link.close_telling_sessions();
            }
        });
    }

    /// Closes a retiring link that subscriptions still keep open: their
    /// sessions get an ERROR, and the broker redelivers everything the link
    /// held unacknowledged, theirs included.
    fn close_telling_sessions(&self) {
        let (routes, receipts) = {
            let mut state = lock(&self.state);
            (
                state.routes.drain().map(|(_, r)| r).collect::<Vec<_>>(),
                state.receipts.drain().map(|(_, w)| w).collect::<Vec<_>>(),
            )
        };
        tracing::info!(
            subscriptions = routes.len(),
            "relay acknowledging link closed after relay.retire_timeout to hand back \
             unacknowledged messages"
        );
        tell_sessions(
            routes,
            receipts,
            "the relay closed its broker connection to hand back messages another client \
             left unacknowledged; your unacknowledged messages will be redelivered; reconnect",
        );
        self.close();
    }

    fn close(&self) {
        if self.closed.swap(true, Ordering::Relaxed) {
            return;
        }
        let state = lock(&self.state);
        // DISCONNECT after everything queued; a link still opening is
        // closed by its opener when it sees `closed`.
        if let Some(outbox) = &state.outbox {
            outbox.finish(encode(&Frame::new(Command::Disconnect), LINK_VERSION));
        }
    }
}

/// The shared relay's links and topic subscriptions.
#[derive(Debug)]
pub(crate) struct Pool {
    pub(super) config: RelayConfig,
    links: Vec<Arc<PoolLink>>,
    ack_links: Mutex<Vec<Arc<AckLink>>>,
    topics: Mutex<HashMap<String, Arc<TopicEntry>>>,
    next_id: AtomicU64,
    /// Pool links up now.
    up: watch::Sender<usize>,
    pub(super) counters: Arc<RelayCounters>,
}

/// The pool's side of the relay's figures.
#[derive(Debug, Clone, Copy)]
pub(super) struct PoolFigures {
    pub(super) links_up: usize,
    pub(super) links_total: usize,
    /// Shared topic subscriptions (destinations and patterns).
    pub(super) topics: usize,
    /// Routes on connected links: what the broker holds for this relay.
    pub(super) upstream_subscriptions: usize,
}

impl Pool {
    pub(crate) fn start(
        config: RelayConfig,
        counters: Arc<RelayCounters>,
        stop: watch::Receiver<bool>,
    ) -> Arc<Pool> {
        let links = (0..config.connections.max(1))
            .map(|_| {
                Arc::new(PoolLink {
                    state: Mutex::new(LinkState::default()),
                    lost: Notify::new(),
                    up: AtomicBool::new(false),
                })
            })
            .collect();
        let pool = Arc::new(Pool {
            config,
            links,
            ack_links: Mutex::new(Vec::new()),
            topics: Mutex::new(HashMap::new()),
            next_id: AtomicU64::new(0),
            up: watch::channel(0).0,
            counters,
        });
        for index in 0..pool.links.len() {
            tokio::spawn(keep_up(Arc::downgrade(&pool), index, stop.clone()));
        }
        pool
    }

    pub(super) fn next_id(&self, prefix: &str) -> Bytes {
        Bytes::from(format!(
            "{prefix}{}",
            self.next_id.fetch_add(1, Ordering::Relaxed)
        ))
    }

    /// The pool link for a destination (broker form). SENDs to it and its
    /// shared subscription go on the same link, so a RECEIPT never
    /// overtakes the MESSAGE its SEND caused on this instance, and one
    /// destination's messages keep their order. (While it is down, SENDs go
    /// on another link, and stay there until the broker confirmed them: see
    /// [`Pool::send_from`].)
    pub(super) fn link_for(&self, destination: &str) -> usize {
        use std::hash::{BuildHasher, BuildHasherDefault};
        let hasher: BuildHasherDefault<std::collections::hash_map::DefaultHasher> =
            BuildHasherDefault::default();
        (hasher.hash_one(destination) % self.links.len() as u64) as usize
    }

    /// Waits until every frame sent before on pool link `link` was taken by
    /// the broker (an empty transaction, whose ABORT it answers in order),
    /// bounded by the connect timeout. True when the broker confirmed it;
    /// false at once if the link is down (what was sent on it may be lost
    /// with it) or when the broker did not answer in time.
    pub(super) async fn flush(&self, link: usize) -> bool {
        self.flush_state(&self.links[link % self.links.len()].state)
            .await
    }

    /// As [`Pool::flush`], for an acknowledging link: the ACKs and NACKs a
    /// session sent there.
    pub(super) async fn flush_acked(&self, link: &AckLink) -> bool {
        // A link the relay closed sent its DISCONNECT after everything
        // else, which the broker takes in order before it closes; once
        // gone, there is no connection left to ask.
        if link.closed.load(Ordering::Acquire) {
            return !link.lost.load(Ordering::Acquire);
        }
        self.flush_state(&link.state).await
    }

    async fn flush_state(&self, link: &Mutex<LinkState>) -> bool {
        let tx = self.next_id("x");
        let mut begin = Frame::new(Command::Begin);
        begin.headers.push(
            Bytes::from_static(header::TRANSACTION.as_bytes()),
            tx.clone(),
        );
        let mut abort = Frame::new(Command::Abort);
        abort
            .headers
            .push(Bytes::from_static(header::TRANSACTION.as_bytes()), tx);
        let receipt = self.next_id("f");
        abort.headers.push(
            Bytes::from_static(header::RECEIPT.as_bytes()),
            receipt.clone(),
        );
        let (done, confirmed) = oneshot::channel();
        let outbox = {
            let mut state = lock(link);
            let Ok(outbox) = state.outbox() else {
                return false;
            };
            state.receipts.insert(receipt.clone(), Waiter::Flush(done));
            outbox
        };
        if offer(&outbox, &begin)
            .and_then(|()| offer(&outbox, &abort))
            .is_err()
        {
            lock(link).receipts.remove(&receipt);
            // An acknowledging link we closed ourselves (retired, its last
            // subscription gone) sent its DISCONNECT after everything else,
            // which the broker takes in order before it closes.
            return outbox.is_finished();
        }
        let confirmed = matches!(
            tokio::time::timeout(self.config.connect_timeout, confirmed).await,
            Ok(Ok(()))
        );
        if !confirmed {
            lock(link).receipts.remove(&receipt);
        }
        confirmed
    }

    fn login(&self) -> (String, String) {
        (
            self.config
                .client_login
                .clone()
                .unwrap_or_else(|| self.config.system_login.clone()),
            self.config
                .client_passcode
                .clone()
                .unwrap_or_else(|| self.config.system_passcode.clone()),
        )
    }

    /// Links and subscriptions now. Locks each link (at most
    /// `3 × relay.connections` of them) and the topic map, one at a time
    /// and briefly.
    pub(super) fn figures(&self) -> PoolFigures {
        let connected_routes = |state: &Mutex<LinkState>| {
            let state = lock(state);
            if state.link.is_some() {
                state.routes.len()
            } else {
                0
            }
        };
        let ack_links: Vec<_> = lock(&self.ack_links).clone();
        let upstream_subscriptions = self
            .links
            .iter()
            .map(|l| connected_routes(&l.state))
            .chain(ack_links.iter().map(|l| connected_routes(&l.state)))
            .sum();
        PoolFigures {
            links_up: *self.up.borrow(),
            links_total: self.links.len(),
            topics: lock(&self.topics).len(),
            upstream_subscriptions,
        }
    }

    /// Calls `visit` with each shared topic subscription's destination (as
    /// clients name it) and its local subscribers, under the topic map's
    /// lock.
    pub(super) fn for_each_topic(&self, mut visit: impl FnMut(&str, usize)) {
        let topics = lock(&self.topics);
        for entry in topics.values() {
            let subscribers = lock(&entry.state).subscribers.len();
            visit(&self.config.client_form(&entry.key), subscribers);
        }
    }

    /// Watches the number of pool links up.
    pub(crate) fn watch_links(&self) -> watch::Receiver<usize> {
        self.up.subscribe()
    }

    fn count_links(&self) {
        let up = self
            .links
            .iter()
            .filter(|l| l.up.load(Ordering::Relaxed))
            .count();
        self.up.send_replace(up);
    }

    /// A client session's SEND to a destination whose own pool link is
    /// `preferred`; returns the link it went on. `previous` is the link the
    /// session's last SEND to that destination went on, when that was not
    /// its own (its own link was down then).
    ///
    /// A broker keeps the order of what one connection sends, not across
    /// connections. So while `previous` (or else `preferred`) still holds
    /// SENDs of this session the broker has not confirmed, the SEND goes
    /// there too, even if the destination's own link has come back meanwhile;
    /// only once they are confirmed (a receipt of its last SEND there, or a
    /// checkpoint) does it move, to its own link if up, else the next one up.
    /// The session is remembered on the link it used, so that it is told if
    /// that link is lost.
    pub(super) fn send_from(
        &self,
        preferred: usize,
        previous: Option<usize>,
        mut frame: Frame,
        session: &Arc<SessionState>,
        receipt: Option<Bytes>,
    ) -> Result<usize, BrokerError> {
        let count = self.links.len();
        let preferred = preferred % count;
        let previous = previous.map_or(preferred, |link| link % count);
        let key = Arc::as_ptr(session) as usize;
        // Numbered and encoded before any lock is taken.
        let upstream_receipt = receipt.as_ref().map(|_| self.next_id("r"));
        if let Some(id) = &upstream_receipt {
            frame
                .headers
                .push(Bytes::from_static(header::RECEIPT.as_bytes()), id.clone());
        }
        let encoded = encode(&frame, LINK_VERSION);
        let mut link = previous;
        let mut state = lock(&self.links[previous].state);
        // Read under the lock of the link whose loss would have set it: the
        // link this destination's SENDs went on last.
        if session.cut.load(Ordering::Acquire) {
            return Err(BrokerError::Unavailable(
                "the connection to the message broker was lost; reconnect".into(),
            ));
        }
        if !state.senders.contains_key(&key) {
            // Nothing of this session's is unconfirmed there: free to move.
            let chosen = (0..count)
                .map(|i| (preferred + i) % count)
                .find(|&i| self.links[i].up.load(Ordering::Relaxed))
                .unwrap_or(preferred);
            if chosen != previous {
                drop(state);
                link = chosen;
                state = lock(&self.links[link].state);
            }
        }
        let outbox = state.outbox()?;
        if let (Some(id), Some(client_receipt)) = (&upstream_receipt, receipt) {
            let waiter = Waiter::counted(
                session,
                client_receipt,
                None,
                Some((key, state.sends + 1)),
                state.receipts.len(),
                self.config.max_in_flight,
            )?;
            state.receipts.insert(id.clone(), waiter);
        }
        state.sends += 1;
        let sends = state.sends;
        state.senders.insert(key, (Arc::downgrade(session), sends));
        // Queued under the lock that numbered it: a checkpoint, which reads
        // the number under the same lock, then follows every SEND it counts.
        let offered = offer_encoded(&outbox, encoded);
        if offered.is_err()
            && let Some(id) = &upstream_receipt
        {
            state.receipts.remove(id);
        }
        offered.map(|()| link)
    }

    /// True while pool link `link` holds SENDs of `session` the broker has
    /// not confirmed.
    pub(super) fn holds_sends(&self, link: usize, session: &Arc<SessionState>) -> bool {
        lock(&self.links[link % self.links.len()].state)
            .senders
            .contains_key(&(Arc::as_ptr(session) as usize))
    }

    /// Once a second on a link sessions sent on: when the broker confirms
    /// everything sent so far, those sessions have nothing left to lose
    /// with the link, and a later outage leaves them connected.
    async fn checkpoint(&self, link: usize) {
        let sent = {
            let state = lock(&self.links[link].state);
            if state.senders.is_empty() {
                return;
            }
            state.sends
        };
        if self.flush(link).await {
            lock(&self.links[link].state)
                .senders
                .retain(|_, (_, last)| *last > sent);
        }
    }

    /// Forgets a session that ends, on each pool link it sent on.
    pub(super) fn forget_sender(&self, links: u64, session: &Arc<SessionState>) {
        for (k, link) in self.links.iter().enumerate() {
            if links & (1 << (k % 64)) != 0 {
                lock(&link.state)
                    .senders
                    .remove(&(Arc::as_ptr(session) as usize));
            }
        }
    }

    fn send_on(
        &self,
        link: usize,
        mut frame: Frame,
        receipt: Option<(Arc<SessionState>, Bytes, Option<oneshot::Sender<()>>)>,
    ) -> Result<(), BrokerError> {
        let link = &self.links[link % self.links.len()];
        let mut state = lock(&link.state);
        let outbox = state.outbox()?;
        let upstream_receipt = match receipt {
            Some((session, client_receipt, done)) => {
                let waiter = Waiter::counted(
                    &session,
                    client_receipt,
                    done,
                    None,
                    state.receipts.len(),
                    self.config.max_in_flight,
                )?;
                let id = self.next_id("r");
                state.receipts.insert(id.clone(), waiter);
                frame
                    .headers
                    .push(Bytes::from_static(header::RECEIPT.as_bytes()), id.clone());
                Some(id)
            }
            None => None,
        };
        drop(state);
        let sent = offer(&outbox, &frame);
        if sent.is_err()
            && let Some(id) = upstream_receipt
        {
            lock(&link.state).receipts.remove(&id);
        }
        sent
    }

    /// Adds a local subscriber to the shared subscription of `destination`
    /// (broker form), subscribing upstream on pool link `link` if it is the
    /// first. The client's
    /// receipt is answered once the broker confirmed the subscription.
    pub(super) fn join_topic(
        &self,
        destination: &str,
        link: usize,
        subscriber: Arc<LocalSubscriber>,
        receipt: Option<Arc<ReceiptJoin>>,
    ) -> Result<Arc<TopicEntry>, BrokerError> {
        let mut topics = lock(&self.topics);
        if let Some(entry) = topics.get(destination) {
            let entry = Arc::clone(entry);
            // The map stays locked until the subscriber is in: the last
            // subscriber leaving takes the entry out under the same lock.
            let mut state = lock(&entry.state);
            Arc::make_mut(&mut state.subscribers).push(Arc::clone(&subscriber));
            self.counters
                .topic_subscribers
                .fetch_add(1, Ordering::Relaxed);
            if let Some(receipt) = receipt {
                if state.confirmed {
                    receipt.done();
                } else {
                    state.waiting.push(receipt);
                }
            }
            drop(state);
            drop(topics);
            return Ok(entry);
        }
        let upstream_id = self.next_id("t");
        let entry = Arc::new(TopicEntry {
            key: destination.to_owned(),
            link,
            state: Mutex::new(TopicState {
                upstream_id: upstream_id.clone(),
                subscribers: Arc::new(vec![Arc::clone(&subscriber)]),
                confirmed: false,
                waiting: receipt.into_iter().collect(),
            }),
        });
        topics.insert(destination.to_owned(), Arc::clone(&entry));
        drop(topics);
        self.counters
            .topic_subscribers
            .fetch_add(1, Ordering::Relaxed);
        let link = &self.links[link];
        let mut state = lock(&link.state);
        state
            .routes
            .insert(upstream_id.clone(), Route::Topic(Arc::clone(&entry)));
        // Sent now if the link is up; otherwise when it is (re)connected,
        // as every route is.
        if let Ok(outbox) = state.outbox() {
            let (frame, receipt) = self.topic_subscribe(&entry.key, &upstream_id);
            state
                .receipts
                .insert(receipt, Waiter::Topic(Arc::clone(&entry)));
            drop(state);
            // An overflowing link is the broker not reading at all: the
            // heart-beats end that link and the resubscription follows.
            let _ = offer(&outbox, &frame);
        }
        Ok(entry)
    }

    fn topic_subscribe(&self, destination: &str, upstream_id: &Bytes) -> (Frame, Bytes) {
        let receipt = self.next_id("tr");
        let mut frame = Frame::new(Command::Subscribe)
            .header(header::DESTINATION, destination)
            .header(header::ACK, "auto");
        frame.headers.push(
            Bytes::from_static(header::ID.as_bytes()),
            upstream_id.clone(),
        );
        frame.headers.push(
            Bytes::from_static(header::RECEIPT.as_bytes()),
            receipt.clone(),
        );
        (frame, receipt)
    }

    /// Removes a local subscriber; the last one takes the upstream
    /// subscription with it, and its client's `receipt` waits for the
    /// broker's. Others are answered at once: delivery to them stopped here.
    pub(super) fn leave_topic(
        &self,
        entry: &Arc<TopicEntry>,
        subscriber: &Arc<LocalSubscriber>,
        receipt: Option<Bytes>,
    ) {
        let answer_now = |receipt: Option<Bytes>| {
            if let Some(receipt) = receipt {
                let _ = subscriber.outbox.push(receipt_frame(&receipt));
            }
        };
        subscriber.cancelled.store(true, Ordering::Relaxed);
        let mut topics = lock(&self.topics);
        let mut state = lock(&entry.state);
        if let Some(at) = state
            .subscribers
            .iter()
            .position(|s| Arc::ptr_eq(s, subscriber))
        {
            let list = Arc::make_mut(&mut state.subscribers);
            list.remove(at);
            if list.capacity() > 4 * list.len() + 8 {
                list.shrink_to_fit();
            }
            self.counters
                .topic_subscribers
                .fetch_sub(1, Ordering::Relaxed);
        }
        let last = state.subscribers.is_empty();
        if !last {
            answer_now(receipt);
            return;
        }
        let upstream_id = state.upstream_id.clone();
        drop(state);
        if topics
            .get(&entry.key)
            .is_some_and(|current| Arc::ptr_eq(current, entry))
        {
            topics.remove(&entry.key);
        }
        drop(topics);
        let link = &self.links[entry.link];
        let mut state = lock(&link.state);
        state.routes.remove(&upstream_id);
        let Ok(outbox) = state.outbox() else {
            answer_now(receipt);
            return;
        };
        let mut frame = Frame::new(Command::Unsubscribe);
        frame
            .headers
            .push(Bytes::from_static(header::ID.as_bytes()), upstream_id);
        let upstream_receipt = receipt.as_ref().map(|receipt| {
            let id = self.next_id("r");
            state.receipts.insert(
                id.clone(),
                Waiter::Client {
                    outbox: Arc::clone(&subscriber.outbox),
                    version: subscriber.version,
                    receipt: receipt.clone(),
                    done: None,
                    _slot: None,
                    sent: None,
                },
            );
            frame
                .headers
                .push(Bytes::from_static(header::RECEIPT.as_bytes()), id.clone());
            id
        });
        drop(state);
        if offer(&outbox, &frame).is_err() {
            if let Some(id) = upstream_receipt {
                lock(&link.state).receipts.remove(&id);
            }
            answer_now(receipt);
        }
    }

    /// Adds a subscription of its own on pool link `link` (`ack:auto`
    /// upstream). The client's receipt rides on the SUBSCRIBE.
    pub(super) fn subscribe_own(
        &self,
        link: usize,
        subscription: Arc<OwnSubscription>,
        receipt: Option<Arc<ReceiptJoin>>,
    ) -> Result<(), BrokerError> {
        let link = &self.links[link % self.links.len()];
        let mut state = lock(&link.state);
        if state.routes.contains_key(&subscription.upstream_id) {
            return Err(BrokerError::NotAllowed(
                "this durable subscription is already active".into(),
            ));
        }
        let (outbox, frame) =
            state.route_own(&subscription, receipt.map(|r| (self.next_id("r"), r)))?;
        drop(state);
        let sent = offer(&outbox, &frame);
        if sent.is_err() {
            lock(&link.state).routes.remove(&subscription.upstream_id);
        }
        sent
    }

    /// True when pool link `link` has a route for `upstream_id` (a durable
    /// subscription active there).
    /// True while pool link `link` is connected.
    pub(super) fn link_up(&self, link: usize) -> bool {
        self.links[link % self.links.len()]
            .up
            .load(Ordering::Relaxed)
    }

    pub(super) fn has_route(&self, link: usize, upstream_id: &Bytes) -> bool {
        lock(&self.links[link % self.links.len()].state)
            .routes
            .contains_key(upstream_id)
    }

    pub(super) fn link_count(&self) -> usize {
        self.links.len()
    }

    /// Ends a subscription of its own on pool link `link`.
    pub(super) fn unsubscribe_own(
        &self,
        link: usize,
        upstream_id: &Bytes,
        frame: Frame,
        receipt: Option<(Arc<SessionState>, Bytes)>,
    ) -> Result<(), BrokerError> {
        let down = {
            let mut state = lock(&self.links[link % self.links.len()].state);
            state.routes.remove(upstream_id);
            state.outbox.is_none()
        };
        // A link that is down holds no subscription: without its route it
        // is not subscribed again, and there is nothing to cancel. Never on
        // another link: RabbitMQ answers an UNSUBSCRIBE of an id it does not
        // know there with an ERROR and closes that link.
        if down {
            if let Some((session, receipt)) = receipt {
                let _ = session.outbox.push(receipt_frame(&receipt));
            }
            return Ok(());
        }
        match receipt {
            Some((session, receipt)) => self.send_on(link, frame, Some((session, receipt, None))),
            None => self.send_on(link, frame, None).or(Ok(())),
        }
    }

    /// An acknowledging link for one more subscription (one without
    /// `upstream_id` active, for a durable subscription's fixed id): one
    /// that is not retiring, else a new one. Links in use are at most
    /// `relay.connections`, and retiring ones (closing within
    /// `retire_timeout`) at most as many again, so a subscription goes on a
    /// retiring link, to be ended when it closes, only when both are full;
    /// then on the one with the fewest subscriptions. A new one starts
    /// connecting in the background; frames queue in its outbox meanwhile,
    /// and if it cannot connect its sessions are told.
    pub(super) fn ack_link(
        self: &Arc<Self>,
        upstream_id: &Bytes,
    ) -> Result<Arc<AckLink>, BrokerError> {
        let mut links = lock(&self.ack_links);
        links.retain(|l| !l.closed.load(Ordering::Relaxed));
        let free = |l: &&Arc<AckLink>| !lock(&l.state).routes.contains_key(upstream_id);
        if let Some(link) = links
            .iter()
            .filter(free)
            .find(|l| !l.retiring.load(Ordering::Relaxed))
        {
            return Ok(Arc::clone(link));
        }
        let cap = self.config.connections.max(1);
        let in_use = links
            .iter()
            .filter(|l| !l.retiring.load(Ordering::Relaxed))
            .count();
        if in_use >= cap || links.len() >= cap * 2 {
            return links
                .iter()
                .filter(free)
                .min_by_key(|l| l.subscriptions.load(Ordering::Relaxed))
                .cloned()
                .ok_or_else(|| {
                    BrokerError::NotAllowed(
                        "this durable subscription is already active on every broker \
                         connection of this server"
                            .into(),
                    )
                });
        }
        let outbox = Arc::new(Outbox::new(self.config.upstream_buffer_bytes));
        let link = Arc::new(AckLink {
            state: Mutex::new(LinkState {
                outbox: Some(Arc::clone(&outbox)),
                ..LinkState::default()
            }),
            subscriptions: AtomicUsize::new(0),
            retiring: AtomicBool::new(false),
            closed: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            retire_timeout: self.config.retire_timeout,
        });
        links.push(Arc::clone(&link));
        drop(links);
        let (login, passcode) = self.login();
        let config = self.config.clone();
        let counters = Arc::clone(&self.counters);
        let weak = Arc::downgrade(&link);
        tokio::spawn(async move {
            let headers = [
                (header::HOST, config.virtual_host.as_str()),
                (header::LOGIN, login.as_str()),
                (header::PASSCODE, passcode.as_str()),
            ];
            let names = config.clone();
            let handler_link = Weak::clone(&weak);
            let opened = upstream::open(
                &config,
                &counters,
                LINK_VERSION,
                &headers,
                None,
                Some(outbox),
                move |event| {
                    if let Some(link) = handler_link.upgrade() {
                        on_ack_link_event(&link, event, &names);
                    }
                },
            )
            .await;
            let Some(link) = weak.upgrade() else { return };
            match opened {
                Ok(opened) => {
                    let opened = Arc::new(opened);
                    lock(&link.state).link = Some(Arc::clone(&opened));
                    // Retired while it was opening.
                    if link.closed.load(Ordering::Relaxed) {
                        opened.disconnect(LINK_VERSION);
                    }
                }
                Err(e) => on_ack_link_event(&link, Event::Closed(Some(e.to_string())), &config),
            }
        });
        Ok(link)
    }

    /// Subscribes on an acknowledging link with room for it; returns the
    /// link.
    pub(super) fn subscribe_acked(
        self: &Arc<Self>,
        upstream_id: &Bytes,
        subscription: Arc<OwnSubscription>,
        receipt: Option<Arc<ReceiptJoin>>,
    ) -> Result<Arc<AckLink>, BrokerError> {
        // The link chosen may retire and close (a MESSAGE for a route just
        // gone) before the subscription is on it: then on a new one.
        let mut attempts = 0;
        loop {
            let link = self.ack_link(upstream_id)?;
            match self.subscribe_on(&link, Arc::clone(&subscription), receipt.clone()) {
                Err(_) if link.closed.load(Ordering::Relaxed) && attempts < 2 => attempts += 1,
                result => return result.map(|()| link),
            }
        }
    }

    fn subscribe_on(
        &self,
        link: &Arc<AckLink>,
        subscription: Arc<OwnSubscription>,
        receipt: Option<Arc<ReceiptJoin>>,
    ) -> Result<(), BrokerError> {
        let mut state = lock(&link.state);
        if link.closed.load(Ordering::Relaxed) {
            return Err(BrokerError::Unavailable(
                "the connection to the message broker is closed".into(),
            ));
        }
        let (outbox, frame) =
            state.route_own(&subscription, receipt.map(|r| (self.next_id("r"), r)))?;
        link.subscriptions.fetch_add(1, Ordering::Relaxed);
        drop(state);
        let sent = offer(&outbox, &frame);
        if sent.is_err()
            && lock(&link.state)
                .routes
                .remove(&subscription.upstream_id)
                .is_some()
        {
            // Not subscribed: the link must not wait for it to close.
            if link.subscriptions.fetch_sub(1, Ordering::Relaxed) == 1
                && link.retiring.load(Ordering::Relaxed)
            {
                link.close();
            }
        }
        sent
    }

    /// Sends an ACK or NACK (or another frame) on an acknowledging link.
    pub(super) fn send_acked(
        &self,
        link: &AckLink,
        mut frame: Frame,
        receipt: Option<(Arc<SessionState>, Bytes)>,
    ) -> Result<(), BrokerError> {
        let mut state = lock(&link.state);
        let outbox = state.outbox()?;
        if let Some((session, receipt)) = receipt {
            state.await_receipt(self.next_id("r"), &session, receipt, &mut frame);
        }
        drop(state);
        offer(&outbox, &frame)
    }

    /// Ends a subscription on an acknowledging link. `settle` runs once
    /// its route is gone, under the link's lock, so that no delivery of it
    /// is recorded after: it gives the upstream acks the session still owes
    /// (sent before the UNSUBSCRIBE: RabbitMQ refuses them after it) and
    /// whether unacknowledged messages remain, which retires the link. A
    /// retiring link whose last subscription this was closes, which hands
    /// those messages back to their queues.
    pub(super) fn unsubscribe_acked(
        &self,
        link: &Arc<AckLink>,
        upstream_id: &Bytes,
        mut frame: Frame,
        settle: impl FnOnce() -> (Vec<Bytes>, bool),
        receipt: Option<(Arc<SessionState>, Bytes)>,
    ) -> Result<(), BrokerError> {
        let mut state = lock(&link.state);
        let subscribed = state.routes.remove(upstream_id).is_some();
        // The session's records go either way: a link that lost the
        // subscription (lost itself, or closed) takes no ACK for it.
        let (owed, held) = settle();
        if !subscribed {
            return Ok(());
        }
        let sent = state.outbox().and_then(|outbox| {
            for upstream_ack in owed {
                ack_on(&outbox, upstream_ack);
            }
            if let Some((session, receipt)) = receipt {
                state.await_receipt(self.next_id("r"), &session, receipt, &mut frame);
            }
            offer(&outbox, &frame)
        });
        drop(state);
        if held {
            link.start_retiring();
        }
        let left = link.subscriptions.fetch_sub(1, Ordering::Relaxed) - 1;
        if left == 0 && link.retiring.load(Ordering::Relaxed) {
            link.close();
        }
        sent
    }

    /// A new ack tag for a delivery to `session`.
    fn tag(session: &SessionState) -> u64 {
        session.next_tag.fetch_add(1, Ordering::Relaxed) + 1
    }
}

/// Keeps pool link `index` connected while the pool exists: connects with
/// backoff, subscribes every route again on each new connection.
async fn keep_up(pool: Weak<Pool>, index: usize, mut stop: watch::Receiver<bool>) {
    let mut attempt = 0u32;
    // Set once the link was lost: its next connection is a reconnect.
    let mut lost = false;
    loop {
        if *stop.borrow() {
            return;
        }
        let Some(strong) = pool.upgrade() else { return };
        let config = strong.config.clone();
        let link = Arc::clone(&strong.links[index]);
        let (login, passcode) = strong.login();
        let counters = Arc::clone(&strong.counters);
        drop(strong);
        let headers = [
            (header::HOST, config.virtual_host.as_str()),
            (header::LOGIN, login.as_str()),
            (header::PASSCODE, passcode.as_str()),
        ];
        let weak = Weak::clone(&pool);
        let opened = upstream::open(
            &config,
            &counters,
            LINK_VERSION,
            &headers,
            None,
            None,
            move |event| {
                if let Some(pool) = weak.upgrade() {
                    on_pool_link_event(&pool, index, event);
                }
            },
        )
        .await;
        let delay = match opened {
            Ok(opened) => {
                if lost {
                    counters.reconnects.fetch_add(1, Ordering::Relaxed);
                }
                let up_since = tokio::time::Instant::now();
                let Some(strong) = pool.upgrade() else { return };
                resubscribe(&strong, &link, Arc::new(opened));
                link.up.store(true, Ordering::Relaxed);
                strong.count_links();
                drop(strong);
                tracing::debug!(link = index, "relay pool link up");
                let mut checkpoints = tokio::time::interval(CHECKPOINT_EVERY);
                checkpoints.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    let checkpoint = tokio::select! {
                        () = link.lost.notified() => false,
                        stopped = stop.wait_for(|s| *s) => {
                            drop(stopped);
                            false
                        }
                        _ = checkpoints.tick() => true,
                    };
                    if !checkpoint {
                        break;
                    }
                    if let Some(strong) = pool.upgrade() {
                        strong.checkpoint(index).await;
                    }
                }
                link.up.store(false, Ordering::Relaxed);
                if let Some(strong) = pool.upgrade() {
                    strong.count_links();
                }
                let taken = {
                    let mut state = lock(&link.state);
                    state.outbox = None;
                    state.link.take()
                };
                if let Some(upstream) = taken {
                    upstream.disconnect(LINK_VERSION);
                }
                if *stop.borrow() {
                    return;
                }
                tracing::warn!(
                    link = index,
                    "relay pool link to the broker lost; reconnecting"
                );
                lost = true;
                if up_since.elapsed() >= config.reconnect_max {
                    attempt = 0;
                }
                super::system::backoff(&config, attempt)
            }
            Err(e) => {
                tracing::debug!(link = index, error = %e, attempt, "relay pool link connect failed");
                super::system::backoff(&config, attempt)
            }
        };
        attempt = attempt.saturating_add(1);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Installs a new connection and subscribes every route on it again:
/// shared topics (their waiting receipts answered on confirmation) and
/// subscriptions of their own, which on a pool link are all `ack:auto`.
fn resubscribe(pool: &Pool, link: &PoolLink, opened: Arc<Link>) {
    let mut state = lock(&link.state);
    state.outbox = Some(Arc::clone(&opened.outbox));
    state.link = Some(Arc::clone(&opened));
    let routes: Vec<(Bytes, Route)> = state
        .routes
        .iter()
        .map(|(id, route)| (id.clone(), route.clone()))
        .collect();
    let mut frames = Vec::with_capacity(routes.len());
    for (id, route) in routes {
        match route {
            Route::Topic(entry) => {
                let (frame, receipt) = pool.topic_subscribe(&entry.key, &id);
                state.receipts.insert(receipt, Waiter::Topic(entry));
                frames.push(frame);
            }
            Route::Own(own) => frames.push(own.subscribe.clone()),
        }
    }
    drop(state);
    for frame in frames {
        // Pushed as is: at most one frame per route, and a link that cannot
        // take them is lost again at once.
        let _ = opened.outbox.push(encode(&frame, LINK_VERSION));
    }
}

fn on_pool_link_event(pool: &Pool, index: usize, event: Event) {
    let link = &pool.links[index];
    match event {
        Event::Frame(frame) => on_frame(&link.state, frame, None, &pool.config),
        Event::Closed(reason) => {
            let mut state = lock(&link.state);
            state.outbox = None;
            state.link = None;
            let receipts: Vec<Waiter> = state.receipts.drain().map(|(_, w)| w).collect();
            let senders: Vec<Arc<SessionState>> = state
                .senders
                .drain()
                .filter_map(|(_, (s, _))| s.upgrade())
                .collect();
            // Under the link's lock: a SEND of theirs that finds them gone
            // from it (see `Pool::send_from`) sees this.
            for session in &senders {
                session.cut.store(true, Ordering::Release);
            }
            for entry in state.routes.values().filter_map(|r| match r {
                Route::Topic(entry) => Some(entry),
                Route::Own(_) => None,
            }) {
                lock(&entry.state).confirmed = false;
            }
            drop(state);
            // A client waiting for a receipt cannot know whether its frame
            // reached the broker: it is told, and reconnects. Shared topics
            // and ack:auto subscriptions stay and are subscribed again.
            for waiter in receipts {
                let (outbox, version, receipt) = match waiter {
                    Waiter::Client {
                        outbox,
                        version,
                        receipt,
                        ..
                    } => (outbox, version, receipt),
                    // A SUBSCRIBE of a subscription of its own: subscribed
                    // again on the next link, but without the receipt, which
                    // would otherwise never come.
                    Waiter::Join(join) => {
                        (Arc::clone(&join.outbox), join.version, join.receipt.clone())
                    }
                    Waiter::Topic(_) | Waiter::Flush(_) => continue,
                };
                let mut error = StompError::new(
                    "the connection to the message broker was lost before it confirmed \
                     this frame; reconnect and send it again if it matters",
                );
                error.receipt_id = Some(receipt);
                outbox.finish(error.to_frame(version));
            }
            // Sessions that sent on it without a receipt: the broker may not
            // have had what they sent last. They are told, as a session
            // whose own link was lost is in per-session mode. (Those told
            // above are finished already; finishing again does nothing.)
            for session in senders {
                let error = StompError::new(
                    "the connection to the message broker was lost; messages sent \
                     without a receipt may not have arrived; reconnect",
                );
                session.outbox.finish(error.to_frame(session.version));
            }
            if reason.is_some() {
                link.lost.notify_one();
            }
        }
    }
}

fn on_ack_link_event(link: &Arc<AckLink>, event: Event, names: &RelayConfig) {
    match event {
        Event::Frame(frame) => on_frame(&link.state, frame, Some(link), names),
        Event::Closed(reason) => {
            if reason.is_some() {
                link.lost.store(true, Ordering::Release);
            }
            link.closed.store(true, Ordering::Release);
            let mut state = lock(&link.state);
            state.outbox = None;
            state.link = None;
            let routes: Vec<Route> = state.routes.drain().map(|(_, r)| r).collect();
            let receipts: Vec<Waiter> = state.receipts.drain().map(|(_, w)| w).collect();
            drop(state);
            // The relay closes a link once it has no subscription left, but
            // one can land on it meanwhile (its session chose the link while
            // another's UNSUBSCRIBE was closing it): its client is told,
            // instead of waiting on a subscription no broker serves.
            if reason.is_none() && !routes.iter().any(|r| matches!(r, Route::Own(_))) {
                return;
            }
            tracing::info!(reason = ?reason, "relay acknowledging link to the broker lost");
            tell_sessions(
                routes,
                receipts,
                "the connection to the message broker was lost; unacknowledged messages \
                 will be redelivered; reconnect",
            );
        }
    }
}

/// Ends, with an ERROR saying `why`, every session with a subscription
/// (`routes`) or a receipt (`receipts`) on an acknowledging link that is
/// going: the broker redelivers what they held, which they must not
/// acknowledge on a connection that is gone.
fn tell_sessions(routes: Vec<Route>, receipts: Vec<Waiter>, why: &str) {
    let mut told: Vec<Arc<Outbox>> = Vec::new();
    let mut tell = |outbox: &Arc<Outbox>, version: Version| {
        if !told.iter().any(|o| Arc::ptr_eq(o, outbox)) {
            outbox.finish(StompError::new(why).to_frame(version));
            told.push(Arc::clone(outbox));
        }
    };
    for route in routes {
        if let Route::Own(own) = route {
            tell(&own.session.outbox, own.session.version);
        }
    }
    for waiter in receipts {
        if let Waiter::Client {
            outbox, version, ..
        } = waiter
        {
            tell(&outbox, version);
        }
    }
}

/// A frame from the broker on any link.
fn on_frame(
    state: &Mutex<LinkState>,
    frame: Frame,
    ack_link: Option<&Arc<AckLink>>,
    names: &RelayConfig,
) {
    match frame.command {
        Command::Message => {
            let Some(upstream_id) = frame.headers.get_bytes(header::SUBSCRIPTION) else {
                return;
            };
            // A MESSAGE for a route already gone is dropped: on a pool link
            // it needed no acknowledgement; on an acknowledging link the
            // link retires and its closing hands it back.
            let Some(route) = lock(state).routes.get(upstream_id).cloned() else {
                if let Some(link) = ack_link {
                    link.retire();
                }
                return;
            };
            match route {
                Route::Topic(entry) => fan_out(&entry, frame, names),
                Route::Own(own) => deliver_own(&own, frame, ack_link, names),
            }
        }
        Command::Receipt => {
            let Some(id) = frame.headers.get_bytes(header::RECEIPT_ID) else {
                return;
            };
            let waiter = lock(state).receipts.remove(id);
            match waiter {
                Some(Waiter::Client {
                    outbox,
                    receipt,
                    done,
                    sent,
                    ..
                }) => {
                    if let Some((session, number)) = sent {
                        let mut state = lock(state);
                        if state
                            .senders
                            .get(&session)
                            .is_some_and(|(_, last)| *last == number)
                        {
                            state.senders.remove(&session);
                        }
                    }
                    let _ = outbox.push(receipt_frame(&receipt));
                    if let Some(done) = done {
                        let _ = done.send(());
                    }
                }
                Some(Waiter::Flush(done)) => {
                    let _ = done.send(());
                }
                Some(Waiter::Join(receipt)) => receipt.done(),
                Some(Waiter::Topic(entry)) => {
                    let mut topic = lock(&entry.state);
                    topic.confirmed = true;
                    for receipt in topic.waiting.drain(..) {
                        receipt.done();
                    }
                }
                None => {}
            }
        }
        Command::Error => {
            // The broker closes the link after an ERROR; whoever waited for
            // the frame it answers is told why, the rest when the link goes.
            let message = frame
                .headers
                .get(header::MESSAGE)
                .unwrap_or("error from the message broker")
                .to_owned();
            tracing::warn!(%message, "message broker sent ERROR on a relay pool link");
            let waiter = frame
                .headers
                .get_bytes(header::RECEIPT_ID)
                .and_then(|id| lock(state).receipts.remove(id));
            if let Some(Waiter::Client {
                outbox,
                version,
                receipt,
                ..
            }) = waiter
            {
                let mut error = StompError::new(format!("message broker: {message}"));
                error.receipt_id = Some(receipt);
                outbox.finish(error.to_frame(version));
            }
        }
        _ => {}
    }
}

/// One upstream MESSAGE to every local subscriber of a shared topic, by
/// the embedded broker's fan-out: encoded once per version, pushed to each
/// outbox. A full outbox ends that client as a slow consumer; the link goes
/// on reading.
fn fan_out(entry: &TopicEntry, frame: Frame, names: &RelayConfig) {
    let subscribers = Arc::clone(&lock(&entry.state).subscribers);
    if subscribers.is_empty() {
        return;
    }
    let message_id = frame
        .headers
        .get_bytes(header::MESSAGE_ID)
        .cloned()
        .unwrap_or_default();
    let destination = names
        .client_form(frame.headers.get(header::DESTINATION).unwrap_or_default())
        .into_owned();
    let message = Message::new(message_id, &destination, frame);
    let mut fan_out = FanOut::new(&message);
    for subscriber in subscribers.iter() {
        if subscriber.cancelled.load(Ordering::Relaxed) {
            continue;
        }
        let out = fan_out.frame(
            &subscriber.id,
            subscriber.display.as_ref(),
            subscriber.version,
        );
        let _ = subscriber.outbox.push(out);
    }
}

/// Takes a place for one more receipt awaited from the broker, bounded
/// per session (as a per-session link would be) and, as a backstop for
/// memory, per link (`awaited` receipts on it now).
fn reserve_receipt(
    in_flight: &AtomicUsize,
    awaited: usize,
    max_in_flight: usize,
) -> Result<(), BrokerError> {
    if in_flight.load(Ordering::Relaxed) >= max_in_flight
        || awaited >= max_in_flight.saturating_mul(16)
    {
        return Err(BrokerError::Unavailable(format!(
            "too many receipts awaiting the message broker (limit {max_in_flight} per session)"
        )));
    }
    in_flight.fetch_add(1, Ordering::Relaxed);
    Ok(())
}

/// A MESSAGE of a subscription of its own, rewritten for its client: the
/// client's subscription id, the destination it named, and for client ack
/// modes an ack tag of this relay's, mapped back on ACK.
fn deliver_own(
    own: &OwnSubscription,
    frame: Frame,
    ack_link: Option<&Arc<AckLink>>,
    names: &RelayConfig,
) {
    let session = &own.session;
    // `ack:auto` on an acknowledging link: a queue consumer, acknowledged
    // upstream once its message is in the client's outbox.
    let auto_ack = match (own.ack, ack_link) {
        (AckMode::Auto, Some(link)) => frame
            .headers
            .get_bytes(header::ACK)
            .cloned()
            .map(|ack| (Arc::clone(link), ack)),
        _ => None,
    };
    let tag = match (own.ack, ack_link) {
        (AckMode::Auto, _) | (_, None) => None,
        (mode, Some(link)) => {
            let Some(upstream_ack) = frame.headers.get_bytes(header::ACK).cloned() else {
                return;
            };
            // Recorded only while the subscription is on the link: its
            // UNSUBSCRIBE takes the route and then the records under the
            // same lock, so a delivery it missed retires the link instead.
            let state = lock(&link.state);
            if !serves(&state, own) {
                drop(state);
                link.retire();
                return;
            }
            let tag = Pool::tag(session);
            lock(&session.pending).insert(
                tag,
                PendingAck {
                    client_id: own.client_id.clone(),
                    cumulative: mode == AckMode::Client,
                    upstream_ack,
                    message_id: frame
                        .headers
                        .get_bytes(header::MESSAGE_ID)
                        .cloned()
                        .unwrap_or_default(),
                    link: Arc::clone(link),
                },
            );
            drop(state);
            Some(tag)
        }
    };
    let ack = tag
        .filter(|_| session.version == Version::V1_2)
        .map(|tag| tag.to_string());
    let message = names.client_message(
        frame,
        own.client_id.clone(),
        own.display.as_ref(),
        Some(ack),
    );
    if session
        .outbox
        .push(encode(&message, session.version))
        .is_err()
    {
        // Cut off: the link retires when this subscription goes, and the
        // broker redelivers what was not acknowledged. A client-ack
        // delivery is in `pending`, so its session's leaving retires the
        // link; an `ack:auto` one is in no record, so retire it here, or it
        // stays unacknowledged on a link that never closes.
        if let Some((link, _)) = auto_ack {
            link.retire();
        }
        return;
    }
    if let Some((link, upstream_ack)) = auto_ack {
        // Under the link's lock, as the UNSUBSCRIBE is sent: an ACK after it
        // is refused, leaving the message unacknowledged on a link that
        // need never close, so a subscription gone meanwhile retires it.
        let state = lock(&link.state);
        if !serves(&state, own) {
            drop(state);
            link.retire();
            return;
        }
        if session.outbox.half_full(true) {
            lock(&session.deferred).push(DeferredAck {
                client_id: own.client_id.clone(),
                upstream_ack,
                link: Arc::clone(&link),
            });
        } else if let Ok(outbox) = state.outbox() {
            ack_on(&outbox, upstream_ack);
        }
    }
}

/// True while `own` is subscribed on the link whose state this is.
fn serves(state: &LinkState, own: &OwnSubscription) -> bool {
    matches!(
        state.routes.get(&own.upstream_id),
        Some(Route::Own(current)) if std::ptr::eq(Arc::as_ptr(current), own)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ack_link() -> Arc<AckLink> {
        Arc::new(AckLink {
            state: Mutex::new(LinkState::default()),
            subscriptions: AtomicUsize::new(0),
            retiring: AtomicBool::new(true),
            closed: AtomicBool::new(false),
            lost: AtomicBool::new(false),
            retire_timeout: std::time::Duration::from_secs(30),
        })
    }

    /// A subscription that landed on an acknowledging link while the relay
    /// closed it (its last other subscription just gone) is served by no
    /// broker once the link is closed: its client gets an ERROR.
    #[test]
    fn a_subscription_left_on_a_link_the_relay_closed_ends_its_session() {
        let link = ack_link();
        let outbox = Arc::new(Outbox::new(1 << 20));
        let session = SessionState::new(Arc::clone(&outbox), Version::V1_2);
        let upstream_id = Bytes::from_static(b"s1");
        lock(&link.state).routes.insert(
            upstream_id.clone(),
            Route::Own(Arc::new(OwnSubscription {
                client_id: Bytes::from_static(b"sub"),
                display: None,
                ack: AckMode::ClientIndividual,
                session,
                upstream_id,
                subscribe: Frame::new(Command::Subscribe),
            })),
        );
        on_ack_link_event(&link, Event::Closed(None), &RelayConfig::default());
        assert!(outbox.is_finished(), "the late subscriber was not told");
    }

    /// A link the relay closed with nothing on it tells no one.
    #[test]
    fn an_empty_link_the_relay_closed_ends_no_session() {
        let link = ack_link();
        let outbox = Arc::new(Outbox::new(1 << 20));
        let _session = SessionState::new(Arc::clone(&outbox), Version::V1_2);
        on_ack_link_event(&link, Event::Closed(None), &RelayConfig::default());
        assert!(!outbox.is_finished());
        assert!(link.closed.load(Ordering::Relaxed));
    }
}
