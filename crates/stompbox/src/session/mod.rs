//! One client's STOMP session: what each frame means, in which state, and
//! what the client is told. The connection driver feeds it decoded frames and
//! writes whatever it queues to the outbox.

use crate::admission::UserSlot;
use crate::app::user::{ReplyRoutes, session_key, user_key};
use crate::app::{SessionInfo, SubscriptionInfo, User};
use crate::auth::Handshake;
use crate::auth::access::Operation;
use crate::broker::{AckMode, AckTarget, BrokerError, BrokerSession, Publish, SubscribeRequest};
use crate::frames::{ErrorReason, StompError, receipt_frame};
use crate::outbox::{OutFrame, Outbox};
use crate::router::{self, Target};
use crate::small_map::SmallMap;

mod churn;
mod connect;
mod identity;

use crate::shared::ServerShared;
use crate::telemetry::SessionEntry;
use bytes::Bytes;
use churn::SubscriptionRate;
pub use identity::SENDER_HEADER;
pub(crate) use identity::is_reserved_header;
use identity::{stamp_sender, strip_reserved};
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;
use stompbox_codec::{Command, Frame, Version, header};
use tokio::time::Instant;

/// The `server` header of CONNECTED.
pub const SERVER_NAME: &str = concat!("stompbox/", env!("CARGO_PKG_VERSION"));

// Told to the client as an ERROR; kept here rather than in `frames` so that
// module stays below the broker.
impl From<BrokerError> for StompError {
    fn from(e: BrokerError) -> StompError {
        let reason = match e {
            BrokerError::QueueFull { .. }
            | BrokerError::TooManyDestinations { .. }
            | BrokerError::PatternTooLong { .. }
            | BrokerError::TooManyWildcardSubscriptions { .. } => ErrorReason::Limit,
            BrokerError::Unavailable(_) | BrokerError::Refused(_) => ErrorReason::Broker,
            _ => ErrorReason::Protocol,
        };
        StompError::new(e.to_string()).because(reason)
    }
}

/// What the driver should do after a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Flow {
    Continue,
    /// The session ended normally (DISCONNECT): flush and close.
    Close,
}

/// Heart-beat intervals agreed at CONNECT; `None` means off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Heartbeat {
    pub(crate) send_every: Option<Duration>,
    pub(crate) expect_every: Option<Duration>,
}

/// [`Heartbeat`] as a session keeps it: in milliseconds (STOMP's unit), 0
/// for off, in 8 bytes instead of 32. An interval past `u32::MAX` ms (49
/// days) is held as that.
#[derive(Debug, Clone, Copy, Default)]
struct HeartbeatMs {
    send: u32,
    expect: u32,
}

impl HeartbeatMs {
    fn new(agreed: Heartbeat) -> HeartbeatMs {
        let ms = |every: Option<Duration>| {
            every.map_or(0, |every| {
                u32::try_from(every.as_millis()).unwrap_or(u32::MAX).max(1)
            })
        };
        HeartbeatMs {
            send: ms(agreed.send_every),
            expect: ms(agreed.expect_every),
        }
    }

    fn get(self) -> Heartbeat {
        let every = |ms: u32| (ms > 0).then(|| Duration::from_millis(u64::from(ms)));
        Heartbeat {
            send_every: every(self.send),
            expect_every: every(self.expect),
        }
    }
}

/// What a subscription id stands for.
#[derive(Debug, Clone)]
enum SubscriptionKind {
    /// A broker subscription.
    Broker,
    /// A SUBSCRIBE to an application destination: answered once by its
    /// handler, no broker subscription.
    App,
    /// A user destination (`/user/queue/x`): the user's and the session's
    /// broker destinations under one id.
    User,
}

struct Connected {
    version: Version,
    user: User,
    /// When the credential expires (a token's `exp`); the session is closed then.
    expires_at: Option<Instant>,
    /// Counts the session against its user's limit while it lasts.
    _user_slot: Option<UserSlot>,
    broker: Box<dyn BrokerSession>,
    subscriptions: SmallMap<Bytes, (SubscriptionKind, String)>,
    transactions: OpenTransactions,
    /// Memory of the frames buffered by all open transactions, taken from
    /// the server's transaction budget (given back when the session goes).
    transaction_bytes: crate::budget::Held,
    /// The destination of the last SEND the access rules allowed: a
    /// publisher usually sends to one destination again and again, and the
    /// rules (fixed for the server) and the user (fixed for the session) give
    /// the same answer each time.
    last_send_allowed: Option<Box<str>>,
}

/// The STOMP versions of the WebSocket subprotocols a client offered, as
/// a set (one byte in every session, not a list on the heap).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct OfferedVersions(u8);

impl OfferedVersions {
    fn bit(version: Version) -> u8 {
        1 << version as u8
    }

    pub(crate) fn insert(&mut self, version: Version) {
        self.0 |= Self::bit(version);
    }

    pub(crate) fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn contains(self, version: Version) -> bool {
        self.0 & Self::bit(version) != 0
    }

    fn oldest_first(self) -> impl DoubleEndedIterator<Item = Version> {
        Version::ALL.into_iter().filter(move |v| self.contains(*v))
    }

    fn newest(self) -> Option<Version> {
        self.oldest_first().next_back()
    }
}

/// The frames each open transaction buffers until COMMIT, by transaction
/// id. Most sessions never BEGIN one: the map is made at the first, so an
/// idle session holds a pointer instead of an empty map.
#[derive(Default)]
// The box is the point: 8 bytes in every session instead of 48.
#[allow(clippy::box_collection)]
struct OpenTransactions(Option<Box<HashMap<Bytes, Vec<Frame>>>>);

impl OpenTransactions {
    fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |map| map.len())
    }

    fn contains(&self, tx: &Bytes) -> bool {
        self.0.as_ref().is_some_and(|map| map.contains_key(tx))
    }

    fn open(&mut self, tx: Bytes) {
        self.0.get_or_insert_default().insert(tx, Vec::new());
    }

    fn frames(&mut self, tx: &Bytes) -> Option<&mut Vec<Frame>> {
        self.0.as_mut()?.get_mut(tx)
    }

    fn close(&mut self, tx: &Bytes) -> Option<Vec<Frame>> {
        let map = self.0.as_mut()?;
        let frames = map.remove(tx);
        if map.is_empty() {
            self.0 = None;
        }
        frames
    }
}

/// The session state machine.
pub(crate) struct Session {
    server: Arc<ServerShared>,
    outbox: Arc<Outbox>,
    /// The session as operators see it (the admin page, metrics); also
    /// where its id is kept.
    entry: Arc<SessionEntry>,
    /// The STOMP versions of the WebSocket subprotocols the client
    /// offered; `None` over TCP or when it offered none of ours.
    subprotocol_versions: Option<OfferedVersions>,
    /// What the handshake carried; taken by CONNECT, so an idle session
    /// does not keep the headers.
    handshake: Option<Arc<Handshake>>,
    heartbeat: HeartbeatMs,
    connected: Option<Connected>,
    next_reply: u64,
    /// Where the session's handler replies go on the broker.
    reply_routes: ReplyRoutes,
    subscription_rate: SubscriptionRate,
}

fn required<'a>(frame: &'a Frame, name: &str) -> Result<&'a str, StompError> {
    frame.headers.get(name).ok_or_else(|| {
        StompError::new(format!(
            "{} frame is missing the required '{name}' header",
            frame.command
        ))
    })
}

fn required_bytes(frame: &Frame, name: &str) -> Result<Bytes, StompError> {
    frame.headers.get_bytes(name).cloned().ok_or_else(|| {
        StompError::new(format!(
            "{} frame is missing the required '{name}' header",
            frame.command
        ))
    })
}

impl Session {
    pub(crate) fn new(
        server: Arc<ServerShared>,
        outbox: Arc<Outbox>,
        entry: Arc<SessionEntry>,
        subprotocol_versions: Option<OfferedVersions>,
        handshake: Arc<Handshake>,
    ) -> Session {
        Session {
            outbox,
            entry,
            subprotocol_versions,
            handshake: Some(handshake),
            heartbeat: HeartbeatMs::default(),
            connected: None,
            next_reply: 0,
            reply_routes: ReplyRoutes::default(),
            subscription_rate: SubscriptionRate::new(
                server.config.subscriptions_per_sec,
                Instant::now(),
            ),
            server,
        }
    }

    /// `Some(when)` when `frame` is a SUBSCRIBE or UNSUBSCRIBE past the
    /// session's rate (`subscriptions_per_sec`): the driver holds it, and
    /// reads nothing more, until then. Otherwise it may be handled now.
    pub(crate) fn hold_until(&mut self, frame: &Frame, now: Instant) -> Option<Instant> {
        if !self.is_connected()
            || !matches!(frame.command, Command::Subscribe | Command::Unsubscribe)
        {
            return None;
        }
        let until = self.subscription_rate.take(now);
        if until.is_some() {
            self.server
                .subscription_holds
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        until
    }

    /// The version frames are encoded in; before CONNECT, the subprotocol
    /// the `101` named, or 1.2.
    pub(crate) fn version(&self) -> Version {
        self.connected
            .as_ref()
            .map(|c| c.version)
            .or_else(|| self.subprotocol_versions.and_then(OfferedVersions::newest))
            .unwrap_or(Version::V1_2)
    }

    /// The version an ERROR is encoded in. Before CONNECTED the client does
    /// not know the version yet, and clients read those frames unescaped as
    /// they read CONNECTED (stompjs would show `access refused\c …`); so
    /// they are written without escapes, in the 1.0 form.
    pub(crate) fn error_version(&self) -> Version {
        self.connected.as_ref().map_or(Version::V1_0, |c| c.version)
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.is_some()
    }

    pub(crate) fn heartbeat(&self) -> Heartbeat {
        self.heartbeat.get()
    }

    /// The frame limits of a connected session.
    pub(crate) fn frame_limits(&self) -> stompbox_codec::Limits {
        self.server.config.frame_limits
    }

    /// When the session's credential expires, if it does.
    pub(crate) fn expires_at(&self) -> Option<Instant> {
        self.connected.as_ref().and_then(|c| c.expires_at)
    }

    /// The outbox drained after queues held messages back for it.
    pub(crate) fn drained(&mut self) {
        if let Some(connected) = self.connected.as_mut() {
            connected.broker.drained();
        }
    }

    fn push(&self, frame: OutFrame) {
        // A failed push means the connection is already closing (slow
        // consumer or shutdown); the driver notices through the outbox.
        let _ = self.outbox.push(frame);
    }

    /// Handles one frame. An `Err` is to be sent as ERROR, then the
    /// connection closed.
    pub(crate) async fn handle(&mut self, frame: Frame) -> Result<Flow, StompError> {
        let receipt = frame.headers.get_bytes(header::RECEIPT).cloned();
        let result = self.dispatch(frame).await;
        result.map_err(|mut e| {
            e.receipt_id = receipt;
            e
        })
    }

    async fn dispatch(&mut self, mut frame: Frame) -> Result<Flow, StompError> {
        let command = frame.command;
        match command {
            Command::Connect | Command::Stomp => return self.connect(frame).await,
            Command::Connected | Command::Message | Command::Receipt | Command::Error => {
                return Err(StompError::new(format!(
                    "{command} is a server frame; a client cannot send it"
                )));
            }
            _ => {}
        }
        let Some(version) = self.connected.as_ref().map(|c| c.version) else {
            return Err(StompError::new(format!(
                "the first frame must be CONNECT or STOMP, not {command}"
            )));
        };
        let receipt = frame.headers.get_bytes(header::RECEIPT).cloned();
        // A RECEIPT still owed after the frame's work: operations the broker
        // carries out take the receipt along and answer it themselves (for a
        // relay, only once the upstream broker's own RECEIPT arrived).
        let owed = match command {
            // Boxed, as the handler paths in `apply`: rare next to SEND,
            // and larger than the rest of a frame's work, which is copied
            // onto the heap for every read.
            Command::Subscribe => Box::pin(self.subscribe(frame, receipt)).await?,
            Command::Unsubscribe => self.unsubscribe(&frame, version, receipt).await?,
            Command::Send | Command::Ack | Command::Nack => {
                if command == Command::Nack && version == Version::V1_0 {
                    return Err(StompError::new("NACK does not exist in STOMP 1.0"));
                }
                // Validate now, so that a bad frame is refused when sent,
                // not at COMMIT.
                let mut classified = None;
                if command == Command::Send {
                    // What the server marks a message with is never the
                    // client's to say: not to subscribers, nor to the
                    // application's hooks and handlers.
                    strip_reserved(&mut frame);
                    let destination = required(&frame, header::DESTINATION)?.to_owned();
                    let target = router::classify_send(&self.server, &destination)?;
                    self.authorize_send(&destination, &target, &frame).await?;
                    classified = Some((destination, target));
                } else {
                    ack_target(&frame, version)?;
                }
                match frame.headers.get_bytes(header::TRANSACTION).cloned() {
                    Some(tx) => {
                        self.buffer(tx, frame)?;
                        receipt
                    }
                    // Classified above: where a destination goes is fixed
                    // for the server, so it is not worked out twice.
                    None => self.apply(frame, receipt, classified).await?,
                }
            }
            Command::Begin => {
                self.begin(&frame)?;
                receipt
            }
            Command::Commit | Command::Abort => {
                let tx = required_bytes(&frame, header::TRANSACTION)?;
                let connected = self.connected_mut()?;
                let buffered = connected
                    .transactions
                    .close(&tx)
                    .ok_or_else(|| unknown_transaction(&tx))?;
                let mut owed = receipt;
                if command == Command::Commit {
                    // Each frame stays counted against the transaction caps
                    // until it is applied: a COMMIT paced by slow
                    // subscribers still holds the frames it has not sent.
                    let count = buffered.len();
                    for (i, frame) in buffered.into_iter().enumerate() {
                        let size = frame.memory_bytes();
                        // The last frame carries the COMMIT's receipt, so it
                        // arrives once everything before it took effect.
                        let carried = if i + 1 == count { owed.take() } else { None };
                        owed = owed.or(self.apply(frame, carried, None).await?);
                        self.connected_mut()?.transaction_bytes.release(size);
                        // A COMMIT of many SENDs is paced like as many SENDs.
                        crate::outbox::Congested::wait_here().await;
                    }
                } else {
                    let released: usize = buffered.iter().map(Frame::memory_bytes).sum();
                    connected.transaction_bytes.release(released);
                }
                owed
            }
            Command::Disconnect => {
                // The broker answers the receipt once the session is over
                // there: unacknowledged messages back in their queues, and
                // for a relay, the broker's own RECEIPT for DISCONNECT.
                self.end_with(receipt).await;
                return Ok(Flow::Close);
            }
            other => return Err(StompError::new(format!("unexpected {other} frame"))),
        };
        if let Some(id) = owed {
            self.push(receipt_frame(&id));
        }
        Ok(Flow::Continue)
    }

    fn connected_mut(&mut self) -> Result<&mut Connected, StompError> {
        self.connected
            .as_mut()
            .ok_or_else(|| StompError::new("the session is not connected"))
    }

    /// Ends a connected session: its subscriptions go (unacknowledged queue
    /// messages are redelivered), it leaves the user registry, and the
    /// disconnect hook runs. Runs at most once.
    pub(crate) async fn end(&mut self) {
        self.end_with(None).await;
    }

    async fn end_with(&mut self, receipt: Option<Bytes>) {
        let Some(connected) = self.connected.take() else {
            return;
        };
        let Connected {
            user,
            mut broker,
            _user_slot: user_slot,
            ..
        } = connected;
        // Released before the DISCONNECT's RECEIPT, so a client that got it
        // can connect again at once under the per-user limit.
        drop(user_slot);
        broker.disconnect(receipt).await;
        drop(broker);
        if let Some(hook) = &self.server.app.hooks.disconnect {
            let info = SessionInfo {
                session_id: Arc::clone(&self.entry.id),
                user,
            };
            let _ = router::guarded(hook(info)).await;
        }
    }

    async fn subscribe(
        &mut self,
        frame: Frame,
        receipt: Option<Bytes>,
    ) -> Result<Option<Bytes>, StompError> {
        let server = Arc::clone(&self.server);
        let config = &server.config;
        let connected = self.connected_mut()?;
        let version = connected.version;
        let destination = required(&frame, header::DESTINATION)?.to_owned();
        let id = match (version, frame.headers.get_bytes(header::ID)) {
            // A copy: the subscription outlives the frame, and a slice of
            // it would keep the whole read it came in alive.
            (_, Some(id)) => Bytes::copy_from_slice(id),
            (Version::V1_0, None) => Bytes::copy_from_slice(destination.as_bytes()),
            _ => required_bytes(&frame, header::ID)?,
        };
        let ack = match frame.headers.get(header::ACK) {
            None => AckMode::Auto,
            Some(value) => AckMode::parse(value).ok_or_else(|| {
                StompError::new(format!(
                    "invalid ack mode '{value}': use auto, client or client-individual"
                ))
            })?,
        };
        if connected.subscriptions.contains_key(&id) {
            return Err(StompError::new(format!(
                "subscription id '{}' is already in use on this connection",
                String::from_utf8_lossy(&id)
            )));
        }
        if connected.subscriptions.len() >= config.max_subscriptions {
            return Err(StompError::new(format!(
                "too many subscriptions on this connection (limit {})",
                config.max_subscriptions
            ))
            .because(ErrorReason::Limit));
        }
        let target = router::classify_subscribe(&server, &destination)?;
        let user = connected.user.clone();
        self.authorize(&user, Operation::Subscribe, &destination, &target)?;
        if let Some(hook) = &server.app.hooks.subscribe {
            let info = SubscriptionInfo {
                session_id: Arc::clone(&self.entry.id),
                user: user.clone(),
                destination: destination.clone(),
                id: String::from_utf8_lossy(&id).into_owned(),
            };
            match router::guarded(hook(info)).await {
                Ok(Ok(())) => {}
                Ok(Err(reject)) => {
                    return Err(StompError::new(reject.0).because(ErrorReason::Application));
                }
                Err(()) => {
                    return Err(StompError::new(format!(
                        "subscription to '{destination}' failed"
                    )));
                }
            }
        }
        let mut owed = None;
        let kind = match target {
            Target::App { path } => {
                let reply = router::run_handler(
                    &server,
                    true,
                    frame,
                    &destination,
                    &path,
                    &self.entry.id,
                    &user,
                )
                .await?;
                let message_id = self.next_reply_id();
                router::deliver_subscribe_reply(
                    &server,
                    &self.outbox,
                    reply,
                    router::SubscribeReplyTarget {
                        routes: &mut self.reply_routes,
                        subscription: &id,
                        destination: &destination,
                        path: &path,
                        session_id: &self.entry.id,
                        user: &user,
                        version,
                        message_id: &message_id,
                    },
                )
                .await;
                owed = receipt;
                SubscriptionKind::App
            }
            Target::OwnUser { target } => {
                if ack != AckMode::Auto {
                    return Err(StompError::new(format!(
                        "user destinations such as '{destination}' support only ack:auto"
                    )));
                }
                let for_session = server
                    .broker
                    .user_destination(&session_key(&self.entry.id, &target));
                // An anonymous session has no user to be reached as: only
                // what the server sends to this session arrives.
                let (resolved, also) = if user.is_authenticated() {
                    let for_user = server
                        .broker
                        .user_destination(&user_key(user.name(), &target));
                    (for_user, Some(for_session))
                } else {
                    (for_session, None)
                };
                self.connected_mut()?.broker.subscribe(SubscribeRequest {
                    id: id.clone(),
                    destination: resolved,
                    also,
                    display_destination: Some(destination.clone()),
                    ack,
                    frame,
                    receipt,
                })?;
                SubscriptionKind::User
            }
            Target::Broker => {
                self.connected_mut()?.broker.subscribe(SubscribeRequest {
                    id: id.clone(),
                    destination: destination.clone(),
                    also: None,
                    display_destination: None,
                    ack,
                    frame,
                    receipt,
                })?;
                SubscriptionKind::Broker
            }
            Target::OtherUser { .. } => {
                return Err(StompError::new(format!(
                    "cannot subscribe to '{destination}': subscribe to your own user destinations as {}/queue/…",
                    server.messaging.user_prefix()
                )));
            }
        };
        let subscriptions = &mut self.connected_mut()?.subscriptions;
        subscriptions.insert(id, (kind, destination));
        let count = subscriptions.len();
        self.entry.set_subscriptions(count);
        Ok(owed)
    }

    fn next_reply_id(&mut self) -> String {
        self.next_reply += 1;
        format!("{}-r{}", self.entry.id, self.next_reply)
    }

    async fn unsubscribe(
        &mut self,
        frame: &Frame,
        version: Version,
        receipt: Option<Bytes>,
    ) -> Result<Option<Bytes>, StompError> {
        let server = Arc::clone(&self.server);
        let entry = Arc::clone(&self.entry);
        let connected = self.connected_mut()?;
        let ids: Vec<Bytes> = match (version, frame.headers.get_bytes(header::ID)) {
            (_, Some(id)) => {
                if !connected.subscriptions.contains_key(id) {
                    return Err(StompError::new(format!(
                        "no subscription with id '{}'",
                        String::from_utf8_lossy(id)
                    )));
                }
                vec![id.clone()]
            }
            // STOMP 1.0 may unsubscribe by destination: every subscription
            // to it ends, whether its SUBSCRIBE had an id or not.
            (Version::V1_0, None) => {
                let destination = required(frame, header::DESTINATION)?;
                let mut ids: Vec<Bytes> = connected
                    .subscriptions
                    .iter()
                    .filter(|(_, (_, to))| to == destination)
                    .map(|(id, _)| id.clone())
                    .collect();
                if ids.is_empty() {
                    return Err(StompError::new(format!(
                        "no subscription to destination '{destination}'"
                    )));
                }
                // The receipt goes with the last broker unsubscribe (see
                // below): application subscriptions first.
                ids.sort_by_key(|id| {
                    !matches!(
                        connected.subscriptions.get(id),
                        Some((SubscriptionKind::App, _))
                    )
                });
                ids
            }
            _ => vec![required_bytes(frame, header::ID)?],
        };
        let last_broker = ids.iter().rposition(|id| {
            !matches!(
                connected.subscriptions.get(id),
                Some((SubscriptionKind::App, _))
            )
        });
        let mut receipt = receipt;
        let mut ended = Vec::with_capacity(ids.len());
        for (i, id) in ids.into_iter().enumerate() {
            let Some((kind, destination)) = connected.subscriptions.remove(&id) else {
                continue;
            };
            match kind {
                SubscriptionKind::App => {}
                SubscriptionKind::Broker | SubscriptionKind::User => {
                    // The broker answers the receipt when the effect is
                    // done; with several to end, once the last is.
                    let this_receipt = if Some(i) == last_broker {
                        receipt.take()
                    } else {
                        None
                    };
                    connected
                        .broker
                        .unsubscribe(&id, &frame.headers, this_receipt)?;
                }
            }
            ended.push((id, destination));
        }
        entry.set_subscriptions(connected.subscriptions.len());
        let user = connected.user.clone();
        if let Some(hook) = &server.app.hooks.unsubscribe {
            for (id, destination) in ended {
                let info = SubscriptionInfo {
                    session_id: Arc::clone(&self.entry.id),
                    user: user.clone(),
                    destination,
                    id: String::from_utf8_lossy(&id).into_owned(),
                };
                let _ = router::guarded(hook(info)).await;
            }
        }
        // What no broker took (application subscriptions only) is owed now.
        Ok(receipt)
    }

    fn begin(&mut self, frame: &Frame) -> Result<(), StompError> {
        let max = self.server.config.max_transactions;
        let tx = required_bytes(frame, header::TRANSACTION)?;
        let connected = self.connected_mut()?;
        if connected.transactions.contains(&tx) {
            return Err(StompError::new(format!(
                "transaction '{}' is already open",
                String::from_utf8_lossy(&tx)
            )));
        }
        if connected.transactions.len() >= max {
            return Err(
                StompError::new(format!("too many open transactions (limit {max})"))
                    .because(ErrorReason::Limit),
            );
        }
        connected.transactions.open(tx);
        Ok(())
    }

    fn buffer(&mut self, tx: Bytes, frame: Frame) -> Result<(), StompError> {
        let max = self.server.config.max_transaction_frames;
        let max_bytes = self.server.config.max_transaction_bytes;
        let max_total = self.server.transaction_bytes.max();
        let connected = self.connected_mut()?;
        // Across every open transaction of the session: memory held until
        // COMMIT is bounded in bytes, not only in frames, and counted as the
        // frame occupies it (held detached, so it does not pin the larger
        // read buffer).
        let held = connected.transaction_bytes.bytes();
        let frame = frame.detached();
        let size = frame.memory_bytes();
        let buffered = connected
            .transactions
            .frames(&tx)
            .ok_or_else(|| unknown_transaction(&tx))?;
        if buffered.len() >= max {
            return Err(StompError::new(format!(
                "transaction '{}' holds too many frames (max_transaction_frames = {max})",
                String::from_utf8_lossy(&tx)
            ))
            .because(ErrorReason::Limit));
        }
        if held + size > max_bytes {
            return Err(StompError::new(format!(
                "this session's open transactions hold too much memory \
                 (max_transaction_bytes = {max_bytes})"
            ))
            .because(ErrorReason::Limit));
        }
        if !connected.transaction_bytes.try_take(size) {
            return Err(StompError::new(format!(
                "open transactions of the whole server hold too much memory \
                 (max_total_transaction_bytes = {max_total})"
            ))
            .because(ErrorReason::Limit));
        }
        buffered.push(frame);
        Ok(())
    }

    /// Carries out a SEND, ACK or NACK (directly or at COMMIT).
    /// Returns the receipt if it is still owed (the broker did not take it).
    /// `classified`: a SEND's destination and target, when already known.
    async fn apply(
        &mut self,
        frame: Frame,
        receipt: Option<Bytes>,
        classified: Option<(String, Target)>,
    ) -> Result<Option<Bytes>, StompError> {
        let server = Arc::clone(&self.server);
        let version = self.connected_mut()?.version;
        match frame.command {
            Command::Send => {
                let (destination, target) = match classified {
                    Some(classified) => classified,
                    None => {
                        let destination = required(&frame, header::DESTINATION)?.to_owned();
                        let target = router::classify_send(&server, &destination)?;
                        (destination, target)
                    }
                };
                let mut frame = frame;
                match target {
                    Target::Broker => {
                        let connected = self.connected_mut()?;
                        stamp_sender(&mut frame, &connected.user);
                        connected
                            .broker
                            .send(Publish { destination, frame }, receipt)?;
                        return Ok(None);
                    }
                    Target::App { path } => {
                        let user = self.connected_mut()?.user.clone();
                        let reply = router::run_handler(
                            &server,
                            false,
                            frame,
                            &destination,
                            &path,
                            &self.entry.id,
                            &user,
                        )
                        .await?;
                        // Boxed: publishing a reply takes a future larger
                        // than a plain SEND's whole work (see `dispatch`).
                        Box::pin(router::deliver_reply(
                            &server,
                            &mut self.reply_routes,
                            reply,
                            &destination,
                            &path,
                            &self.entry.id,
                            &user,
                        ))
                        .await;
                    }
                    Target::OtherUser { user, target } => {
                        stamp_sender(&mut frame, &self.connected_mut()?.user);
                        let payload = router::payload_of(frame);
                        Box::pin(server.messaging.send_to_user(&user, &target, payload))
                            .await
                            .map_err(|e| StompError::new(e.to_string()))?;
                    }
                    Target::OwnUser { .. } => {
                        return Err(StompError::new(format!(
                            "cannot send to '{destination}': send to a user as {}/{{name}}/queue/…",
                            server.messaging.user_prefix()
                        )));
                    }
                }
            }
            command => {
                let target = ack_target(&frame, version)?;
                self.connected_mut()?.broker.ack(
                    &target,
                    command == Command::Nack,
                    &frame.headers,
                    receipt,
                )?;
                return Ok(None);
            }
        }
        Ok(receipt)
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        // The driver calls `end` on every path; this only matters if its
        // task unwound. The hook still runs exactly once, on another task.
        if let Some(connected) = self.connected.take() {
            let Connected { user, broker, .. } = connected;
            drop(broker);
            if let (Some(hook), Ok(runtime)) = (
                self.server.app.hooks.disconnect.clone(),
                tokio::runtime::Handle::try_current(),
            ) {
                let info = SessionInfo {
                    session_id: Arc::clone(&self.entry.id),
                    user,
                };
                runtime.spawn(async move { hook(info).await });
            }
        }
    }
}

fn ack_target(frame: &Frame, version: Version) -> Result<AckTarget, StompError> {
    Ok(match version {
        Version::V1_2 => AckTarget::AckId(required_bytes(frame, header::ID)?),
        Version::V1_1 => AckTarget::MessageOnSubscription {
            message_id: required_bytes(frame, header::MESSAGE_ID)?,
            subscription: required_bytes(frame, header::SUBSCRIPTION)?,
        },
        Version::V1_0 => AckTarget::MessageId(required_bytes(frame, header::MESSAGE_ID)?),
    })
}

fn unknown_transaction(tx: &[u8]) -> StompError {
    StompError::new(format!(
        "unknown transaction '{}': send BEGIN first",
        String::from_utf8_lossy(tx)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offered_versions_list_oldest_first_and_name_the_newest() {
        let mut offered = OfferedVersions::default();
        assert!(offered.is_empty());
        assert_eq!(offered.newest(), None);
        offered.insert(Version::V1_2);
        offered.insert(Version::V1_0);
        assert!(!offered.is_empty());
        assert!(offered.contains(Version::V1_0) && offered.contains(Version::V1_2));
        assert!(!offered.contains(Version::V1_1));
        assert_eq!(
            offered.oldest_first().collect::<Vec<_>>(),
            [Version::V1_0, Version::V1_2]
        );
        assert_eq!(offered.newest(), Some(Version::V1_2));
    }

    #[test]
    fn heartbeats_keep_their_milliseconds_and_off_stays_off() {
        let agreed = Heartbeat {
            send_every: Some(Duration::from_millis(10_000)),
            expect_every: None,
        };
        assert_eq!(HeartbeatMs::new(agreed).get(), agreed);
        assert_eq!(HeartbeatMs::default().get(), Heartbeat::default());
        // Past what 32 bits of milliseconds hold: kept as the longest.
        let long = Heartbeat {
            send_every: Some(Duration::from_secs(100 * 24 * 3600)),
            expect_every: Some(Duration::from_micros(10)),
        };
        assert_eq!(
            HeartbeatMs::new(long).get(),
            Heartbeat {
                send_every: Some(Duration::from_millis(u64::from(u32::MAX))),
                expect_every: Some(Duration::from_millis(1)),
            }
        );
    }

    #[test]
    fn open_transactions_hold_no_map_once_none_is_open() {
        let mut open = OpenTransactions::default();
        let tx = Bytes::from_static(b"tx1");
        assert!(!open.contains(&tx) && open.frames(&tx).is_none());
        open.open(tx.clone());
        open.open(Bytes::from_static(b"tx2"));
        assert_eq!(open.len(), 2);
        open.frames(&tx)
            .expect("open")
            .push(Frame::new(Command::Send));
        assert_eq!(open.close(&tx).map(|frames| frames.len()), Some(1));
        assert!(open.0.is_some());
        assert_eq!(open.close(&Bytes::from_static(b"tx2")), Some(Vec::new()));
        assert!(open.0.is_none());
        assert_eq!(open.close(&tx), None);
    }
}
