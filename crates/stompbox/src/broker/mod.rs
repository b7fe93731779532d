//! The message broker behind every session, as a trait so that sessions and
//! handlers never know whether the embedded broker or a relay runs.

pub mod embedded;
mod message;
pub mod relay;
mod stats;

pub use stats::{BrokerStats, DestinationKind, DestinationStats, RelayStats};

use crate::outbox::Outbox;
use bytes::Bytes;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use stompbox_codec::{Frame, Headers, Version};
use thiserror::Error;

/// A boxed future, for the few async broker calls.
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a subscription acknowledges messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckMode {
    /// Delivered means acknowledged.
    Auto,
    /// An ACK acknowledges the message and every earlier one on the subscription.
    Client,
    /// An ACK acknowledges exactly one message.
    ClientIndividual,
}

impl AckMode {
    /// Parses the `ack` header of SUBSCRIBE.
    pub fn parse(value: &str) -> Option<AckMode> {
        match value {
            "auto" => Some(AckMode::Auto),
            "client" => Some(AckMode::Client),
            "client-individual" => Some(AckMode::ClientIndividual),
            _ => None,
        }
    }
}

/// Which message an ACK or NACK names, as the client's version spells it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AckTarget {
    /// STOMP 1.2: the `ack` header value of the MESSAGE.
    AckId(Bytes),
    /// STOMP 1.1: `message-id` and `subscription`.
    MessageOnSubscription {
        /// The MESSAGE's `message-id`.
        message_id: Bytes,
        /// The subscription id.
        subscription: Bytes,
    },
    /// STOMP 1.0: `message-id` alone.
    MessageId(Bytes),
}

/// What a session knows when it opens its broker session.
#[derive(Debug, Clone)]
pub struct SessionContext {
    /// The session id sent in CONNECTED.
    pub session_id: Arc<str>,
    /// The negotiated STOMP version, which decides how MESSAGE headers are escaped.
    pub version: Version,
    /// Where frames for this client go.
    pub outbox: Arc<Outbox>,
    /// `login` from CONNECT, if any.
    pub login: Option<String>,
    /// `passcode` from CONNECT, if any.
    pub passcode: Option<String>,
    /// `host` from CONNECT, if any.
    pub host: Option<String>,
    /// Who the session is: the verified user, or for an anonymous session
    /// the session itself. A relay names durable subscriptions after it,
    /// so that only the same user resumes one.
    pub user: crate::auth::user::User,
}

/// The limits that can refuse a message for a queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum QueueLimit {
    /// Messages waiting in this queue.
    Messages,
    /// Memory of the messages waiting in this queue.
    Bytes,
    /// Memory of every queue message of the server, waiting or
    /// unacknowledged.
    TotalBytes,
}

impl QueueLimit {
    /// What the limit bounds, in words.
    pub fn describe(self) -> &'static str {
        match self {
            QueueLimit::Messages => "per-queue message limit reached",
            QueueLimit::Bytes => "per-queue memory limit reached",
            QueueLimit::TotalBytes => {
                "server-wide queue memory limit reached (all queues, waiting and unacknowledged)"
            }
        }
    }

    /// The setting that configures it.
    pub fn setting(self) -> &'static str {
        match self {
            QueueLimit::Messages => "max_queue_messages",
            QueueLimit::Bytes => "max_queue_bytes",
            QueueLimit::TotalBytes => "max_total_queue_bytes",
        }
    }
}

/// Memory a broker holds under its server-wide caps, as it counts it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerMemory {
    /// Queue messages, waiting or delivered and unacknowledged (under
    /// `max_total_queue_bytes`).
    pub queue_bytes: usize,
    /// Topic messages delivered in client ack modes and unacknowledged,
    /// each counted once (under `max_total_topic_unacked_bytes`).
    pub topic_unacked_bytes: usize,
}

/// A broker failure or refusal, reported to the client as an ERROR frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum BrokerError {
    /// A queue limit was reached; the message was not accepted.
    #[error("queue '{destination}' is full: {} ({} = {value}); message not accepted", limit.describe(), limit.setting())]
    QueueFull {
        /// The queue.
        destination: String,
        /// Which limit was hit.
        limit: QueueLimit,
        /// Its configured value.
        value: usize,
    },
    /// No more destinations can be created.
    #[error("too many destinations on this server (limit {limit})")]
    TooManyDestinations {
        /// The limit.
        limit: usize,
    },
    /// A topic pattern longer than the embedded broker allows.
    #[error("topic pattern has {words} words, more than the limit of {limit} (max_pattern_words)")]
    PatternTooLong {
        /// Words in the pattern.
        words: usize,
        /// The limit.
        limit: usize,
    },
    /// The session already holds as many wildcard subscriptions as allowed.
    #[error(
        "too many wildcard subscriptions on this connection (limit {limit}, max_wildcard_subscriptions)"
    )]
    TooManyWildcardSubscriptions {
        /// The limit.
        limit: usize,
    },
    /// ACK or NACK of a message that is not pending on this session.
    #[error("no unacknowledged message matches {0}")]
    UnknownAck(String),
    /// A broker option header whose value the broker cannot take (the
    /// embedded broker's `prefetch-count`).
    #[error("invalid '{header}' header '{value}': expected {expected}")]
    InvalidHeader {
        /// The header's name.
        header: &'static str,
        /// The value sent.
        value: String,
        /// What the header takes, in words.
        expected: &'static str,
    },
    /// UNSUBSCRIBE of an unknown id.
    #[error("no subscription with id '{0}'")]
    UnknownSubscription(String),
    /// The destination is not valid for the broker.
    #[error("invalid destination '{0}'")]
    InvalidDestination(String),
    /// The broker cannot be reached (relay only).
    #[error("message broker unavailable: {0}")]
    Unavailable(String),
    /// The broker refused (relay only), with its reason.
    #[error("message broker refused: {0}")]
    Refused(String),
    /// A request this session cannot make, with the reason (relay only: a
    /// durable subscription of an anonymous session), or an operation the
    /// broker does not offer (a relay cannot purge a queue).
    #[error("{0}")]
    NotAllowed(String),
    /// A destination the broker does not hold (an operator's purge of a
    /// queue that does not exist, or no longer: an embedded queue goes
    /// once it is empty and unconsumed).
    #[error("no destination '{0}' on this broker")]
    UnknownDestination(String),
}

/// A subscription request, validated by the session.
#[derive(Debug, Clone)]
pub struct SubscribeRequest {
    /// The client's subscription id (for STOMP 1.0 without `id`, the destination).
    pub id: Bytes,
    /// The destination, under a broker prefix.
    pub destination: String,
    /// A second destination delivering under the same id (user
    /// destinations subscribe to the user's and the session's).
    pub also: Option<String>,
    /// The destination MESSAGE frames show, when it differs from
    /// `destination` (a user destination such as `/user/queue/x`).
    pub display_destination: Option<String>,
    /// The ack mode.
    pub ack: AckMode,
    /// Every header of the SUBSCRIBE, for broker-specific options.
    pub frame: Frame,
    /// The RECEIPT to send once the subscription is in place.
    pub receipt: Option<Bytes>,
}

/// A message a client (or the server) publishes.
#[derive(Debug, Clone)]
pub struct Publish {
    /// The destination, under a broker prefix.
    pub destination: String,
    /// The SEND frame (its headers become the MESSAGE's headers).
    pub frame: Frame,
}

/// The broker, shared by all sessions.
pub trait Broker: Send + Sync + 'static {
    /// Opens the broker side of one client session. Called on CONNECT; the
    /// client's CONNECTED is sent only after this succeeds.
    fn open_session(
        &self,
        context: SessionContext,
    ) -> BoxFuture<'_, Result<Box<dyn BrokerSession>, BrokerError>>;

    /// Publishes a message that originates in the server itself.
    fn publish(&self, message: Publish) -> BoxFuture<'_, Result<(), BrokerError>>;

    /// True when a destination is one clients may use with this broker.
    fn handles(&self, destination: &str) -> bool;

    /// The broker destination for a user-destination routing key (see
    /// `app::user`). It lies in a namespace no client destination can reach.
    fn user_destination(&self, key: &str) -> String;

    /// True for destinations in the user-destination namespace.
    fn is_user_destination(&self, destination: &str) -> bool;

    /// Whether the broker can be reached now, as a value to watch. The
    /// embedded broker is always available.
    fn availability(&self) -> tokio::sync::watch::Receiver<bool>;

    /// The destination prefixes clients may use, for error messages.
    fn prefixes(&self) -> Vec<String>;

    /// Memory held under the server-wide caps. A relay holds no messages
    /// (its broker does), so the default is nothing.
    fn memory(&self) -> BrokerMemory {
        BrokerMemory::default()
    }

    /// Refuses a destination name under a client prefix that the broker
    /// would read as more than one name (ActiveMQ takes `a,b` as two
    /// destinations and `a?x=y` as options), which would get past the
    /// prefix, user-namespace and access checks made on the whole name.
    ///
    /// # Errors
    ///
    /// [`BrokerError::InvalidDestination`] saying why.
    fn check_destination(&self, destination: &str) -> Result<(), BrokerError> {
        let _ = destination;
        Ok(())
    }

    /// What the broker holds now, for an operator (metrics, the admin
    /// page). Cheap enough to call every second. The default (a broker
    /// that keeps no figures) is all zeros.
    fn stats(&self) -> BrokerStats {
        BrokerStats::default()
    }

    /// At most `limit` destinations, the busiest first: by waiting plus
    /// unacknowledged messages, then subscribers, then name, so that a cap
    /// keeps the ones an operator cares about. It walks the destinations
    /// (bounded in memory by `limit`), so call it for a capped listing, not
    /// on every publish. The default lists none.
    fn destinations(&self, limit: usize) -> Vec<DestinationStats> {
        let _ = limit;
        Vec::new()
    }

    /// Removes the messages waiting in a queue, as RabbitMQ's purge does:
    /// messages delivered and not yet acknowledged stay with their
    /// consumers (and come back on NACK or disconnect). Answers how many
    /// were removed.
    ///
    /// # Errors
    ///
    /// [`BrokerError::InvalidDestination`] for a destination that is not a
    /// queue, [`BrokerError::UnknownDestination`] for a queue the broker
    /// does not hold, and [`BrokerError::NotAllowed`] from a broker that
    /// cannot purge (the default, and the relay: STOMP has no purge).
    fn purge<'a>(&'a self, destination: &'a str) -> BoxFuture<'a, Result<usize, BrokerError>> {
        let refused = BrokerError::NotAllowed(format!(
            "this broker cannot purge '{destination}': purge it in the broker's own console"
        ));
        Box::pin(std::future::ready(Err(refused)))
    }
}

/// One client session's view of the broker. Calls are made from the session's
/// task, in frame order. Dropping it ends the session: its subscriptions go,
/// and messages it had not acknowledged are redelivered.
///
/// Every operation takes the client's `receipt` id, if it asked for one, and
/// sends the RECEIPT itself once the operation took effect: at once for the
/// embedded broker, when the upstream broker's own RECEIPT arrives for a
/// relay.
pub trait BrokerSession: Send {
    /// Adds a subscription; the session has checked that the id is new.
    ///
    /// # Errors
    ///
    /// A [`BrokerError`] when the broker refuses.
    fn subscribe(&mut self, request: SubscribeRequest) -> Result<(), BrokerError>;

    /// Removes a subscription, redelivering its unacknowledged messages.
    /// `headers` are the UNSUBSCRIBE's own, for broker options (a relay
    /// passes RabbitMQ's `durable:true`, which deletes a durable
    /// subscription).
    ///
    /// # Errors
    ///
    /// [`BrokerError::UnknownSubscription`] for an id the broker never saw.
    fn unsubscribe(
        &mut self,
        id: &Bytes,
        headers: &Headers,
        receipt: Option<Bytes>,
    ) -> Result<(), BrokerError>;

    /// Publishes a SEND from this client.
    ///
    /// # Errors
    ///
    /// A [`BrokerError`] when the message was not accepted.
    fn send(&mut self, message: Publish, receipt: Option<Bytes>) -> Result<(), BrokerError>;

    /// Acknowledges (or with `nack`, rejects and redelivers) a message.
    /// `headers` are the ACK's or NACK's own, for broker options: RabbitMQ's
    /// `requeue:false` on NACK, which a relay passes on and the embedded
    /// broker acts on itself (the message is discarded, not redelivered).
    ///
    /// # Errors
    ///
    /// [`BrokerError::UnknownAck`] when nothing pending matches.
    fn ack(
        &mut self,
        target: &AckTarget,
        nack: bool,
        headers: &Headers,
        receipt: Option<Bytes>,
    ) -> Result<(), BrokerError>;

    /// The client's outbox drained after queues held messages back for lack
    /// of room in it: offer them again.
    fn drained(&mut self) {}

    /// Ends the session (DISCONNECT, or the connection closing): its
    /// subscriptions go and unacknowledged messages are redelivered; then
    /// `receipt`, if any, is answered.
    fn disconnect(&mut self, receipt: Option<Bytes>) -> BoxFuture<'_, ()>;
}
