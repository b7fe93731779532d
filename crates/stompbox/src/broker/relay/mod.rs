//! The broker relay: client sessions and server-originated messages go to
//! an external STOMP broker (RabbitMQ's STOMP plugin, ActiveMQ), so many
//! stompbox instances share one message space.
//!
//! Each client session gets its own upstream connection, opened on the
//! client's CONNECT; the server's own messages share one system connection.
//! Receipts are answered only when the broker's own RECEIPT arrives.

mod pool;
mod session;
mod shared_session;
mod stats;
mod system;
mod upstream;

use super::stats::Busiest;
use super::{
    BoxFuture, Broker, BrokerError, BrokerSession, BrokerStats, DestinationKind, DestinationStats,
    Publish, RelayStats, SessionContext,
};
use pool::Pool;
use session::RelaySession;
use shared_session::SharedSession;
use stats::RelayCounters;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use stompbox_codec::{Command, header};
use system::SystemConnection;
use tokio::sync::watch;

/// Settings of the relay. Every field has a documented default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayConfig {
    /// How client sessions reach the broker. Default [`RelayMode::Shared`]:
    /// a pool of `connections` links whatever the number of clients.
    pub mode: RelayMode,
    /// Broker links of the shared pool ([`RelayMode::Shared`]), besides the
    /// system connection. Default 4.
    pub connections: usize,
    /// Unacknowledged messages the broker may hand one relayed queue (or
    /// client-acknowledged) subscription at a time, in shared mode
    /// (RabbitMQ's `prefetch-count`, ActiveMQ's `activemq.prefetchSize`),
    /// so one slow client holds at most this many on a shared link.
    /// Default 64.
    pub prefetch: usize,
    /// Longest an acknowledging link of the shared pool keeps messages a
    /// departed client left unacknowledged. RabbitMQ hands those back only
    /// when the connection that received them closes, so such a link takes
    /// no new subscriptions and closes when its last one ends, or after
    /// this long at the latest: the clients still on it then get an ERROR
    /// (their own unacknowledged messages are redelivered too). Default 30 s.
    pub retire_timeout: Duration,
    /// Broker STOMP addresses (`host:port`), tried in order; the first that
    /// answers wins. Default `["127.0.0.1:61613"]`.
    pub addresses: Vec<String>,
    /// The `host` header of CONNECT (RabbitMQ's virtual host). Default `/`.
    pub virtual_host: String,
    /// Login of every client session's broker connection. Default `guest`
    /// (as Spring's relay): the client's own `login` identifies it to the
    /// application, not to the broker. `None` passes the client's own.
    pub client_login: Option<String>,
    /// Passcode for client sessions. Default `guest`; `None` passes the
    /// client's own.
    pub client_passcode: Option<String>,
    /// Login of the system connection. Default `guest`.
    pub system_login: String,
    /// Passcode of the system connection. Default `guest`.
    pub system_passcode: String,
    /// Heart-beat interval offered to the broker; zero turns it off. Default 10 s.
    pub heartbeat_send: Duration,
    /// Heart-beat interval asked of the broker; zero turns it off. Default 10 s.
    pub heartbeat_receive: Duration,
    /// Destination prefixes clients may use through the relay. Default
    /// `/topic/` and `/queue/`.
    ///
    /// RabbitMQ's own namespaces — `/exchange/` (any exchange, such as
    /// `amq.rabbitmq.trace`), `/amq/queue/` (any existing queue) and
    /// `/temp-queue/` — are left out on purpose: every client session uses
    /// the relay's own broker login, so a relayed prefix reaches whatever
    /// that login may. Add them only together with access rules that say
    /// who may use which names.
    ///
    /// The user-destination namespace ([`user_destination_prefix`]) need not
    /// be under one of these: the server uses it itself, and clients can
    /// never name it directly.
    ///
    /// [`user_destination_prefix`]: RelayConfig::user_destination_prefix
    pub prefixes: Vec<String>,
    /// Where user destinations live on the broker. Default
    /// `/exchange/amq.direct/stompbox-user.` (RabbitMQ; a direct exchange,
    /// so no wildcard subscription can reach it).
    pub user_destination_prefix: String,
    /// Client SUBSCRIBE headers passed on to the broker, by exact
    /// (case-sensitive) name. Default none: the broker sees only the
    /// relay's own `id`, `destination`, `ack` and `receipt`.
    ///
    /// Everything else a client puts on SUBSCRIBE is a broker option that
    /// outlives or widens the subscription: with RabbitMQ `durable`,
    /// `auto-delete` and `x-queue-name` leave a named queue behind that
    /// keeps collecting messages after the client has gone, `exclusive`,
    /// `prefetch-count` and the `x-` queue arguments shape queues; with
    /// ActiveMQ `selector`, `activemq.subscriptionName` (durable
    /// subscriptions) and the other `activemq.` options. List a header here
    /// only if any client may set it.
    ///
    /// A listed `prefetch-count` (which the embedded broker honours too) may
    /// only lower `prefetch` in shared mode: the relay sends the lesser.
    ///
    /// With `durable` (or `persistent`) listed, a SUBSCRIBE carrying
    /// `durable:true` is a durable subscription: its id upstream is derived
    /// from the user and the client's own id (see the relay's `session`
    /// module), so the same user re-subscribing with the same id resumes it
    /// and no two users share one; an anonymous session is refused (unless
    /// a listed `x-queue-name` names the queue, which then decides). An
    /// UNSUBSCRIBE passes on `durable`, `persistent` and `auto-delete` when
    /// listed here, so `durable:true` there deletes the subscription.
    pub subscribe_headers: Vec<String>,
    /// Client ACK and NACK headers passed on to the broker, by exact
    /// (case-sensitive) name. Default `["requeue"]`: RabbitMQ's
    /// `requeue:false` on NACK discards (or dead-letters) a message instead
    /// of redelivering it. The relay writes `id`, `message-id`,
    /// `subscription` and `receipt` itself; `transaction` stays with the
    /// session. The embedded broker reads `requeue` itself and no other.
    pub ack_headers: Vec<String>,
    /// Broker-interpreted SEND headers passed on anyway, by exact
    /// (case-sensitive) name. Default none.
    ///
    /// A client's other SEND headers pass (they become the MESSAGE's
    /// headers, as with the embedded broker), except those a broker acts
    /// on, which are dropped unless listed here. With RabbitMQ: `persistent`,
    /// `reply-to`, `expiration`, `priority`, `timestamp`, `user-id`,
    /// `app-id`, `cluster-id`, `amqp-message-id`, `durable`, `auto-delete`,
    /// `exclusive`, `prefetch-count`, `CC`, `BCC` and its queue arguments
    /// (`x-queue-type`, `x-max-length`, `x-message-ttl`, … listed in the
    /// source);
    /// with ActiveMQ: `persistent`, `priority`, `expires`, `timestamp`,
    /// `reply-to`, `transformation`, `amq-msg-type` and every `JMS…`,
    /// `activemq.` and `AMQ_…` header. Names are matched without regard to
    /// case. The rule applies to every message the relay publishes,
    /// including the server's own (a client's SEND to another user goes
    /// through the server's connection).
    ///
    /// Without `persistent`, both brokers keep relayed messages as
    /// transient ones, which a broker restart loses: list it when messages
    /// must survive one.
    pub send_headers: Vec<String>,
    /// First reconnect delay of the system connection. Default 500 ms.
    pub reconnect_initial: Duration,
    /// Longest reconnect delay. Default 30 s.
    pub reconnect_max: Duration,
    /// Time allowed to connect and get CONNECTED. Default 10 s.
    pub connect_timeout: Duration,
    /// Time the broker has to confirm a server-originated message. Default 10 s.
    pub publish_timeout: Duration,
    /// Largest frame accepted from the broker. Default 1 MiB.
    pub max_frame_bytes: usize,
    /// Unsent bytes buffered per upstream connection. Default 512 KiB.
    pub upstream_buffer_bytes: usize,
    /// Receipts awaiting the broker at once: server-originated messages on
    /// the system connection, and each client session's (in shared mode
    /// also 16 times this per pool link, as a bound on memory). Default
    /// 10,000.
    pub max_in_flight: usize,
    /// TLS to the broker; plain TCP when `None` (the default).
    pub tls: Option<RelayTls>,
    /// Percent-encode `/` (and `%`) in names under `/topic/`, `/queue/` and
    /// `/amq/queue/`, so that `/topic/chat/1` works as it does with the
    /// embedded broker: RabbitMQ refuses a raw `/` there but decodes `%2F`.
    /// Default `true`; turn off for brokers that take `/` as is (ActiveMQ).
    pub encode_slashes: bool,
}

/// TLS settings of the relay's broker connections.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct RelayTls {
    /// The name the broker's certificate must carry. Default: the host part
    /// of the address being connected to.
    pub server_name: Option<String>,
    /// PEM file of the CA certificates to trust. Default: the Mozilla root
    /// store (webpki-roots).
    pub ca_file: Option<std::path::PathBuf>,
}

/// SUBSCRIBE headers the relay sets itself: a client's are never copied.
const OWN_SUBSCRIBE_HEADERS: [&str; 4] = [
    header::ID,
    header::DESTINATION,
    header::ACK,
    header::RECEIPT,
];

/// UNSUBSCRIBE headers passed on when `subscribe_headers` lists them: what
/// RabbitMQ needs to delete a durable subscription. Never `x-queue-name`:
/// on an UNSUBSCRIBE with `durable:true` RabbitMQ deletes the queue of that
/// name, whichever it is.
const UNSUBSCRIBE_HEADERS: [&str; 3] = ["durable", "persistent", "auto-delete"];

/// ACK and NACK headers the relay sets itself (`transaction` belongs to the
/// session, which holds the frame until COMMIT).
const OWN_ACK_HEADERS: [&str; 5] = [
    header::ID,
    header::MESSAGE_ID,
    header::SUBSCRIPTION,
    header::RECEIPT,
    header::TRANSACTION,
];

/// SEND headers that belong to the client's leg (the relay sets its own
/// `destination`, `receipt` and `content-length`; transactions are kept by
/// the session, not the broker), and `message-id`, which the broker sets:
/// RabbitMQ answers a SEND carrying it with an ERROR and closes the
/// connection, which in the shared mode every client is on.
const CLIENT_LEG_HEADERS: [&str; 5] = [
    header::DESTINATION,
    header::RECEIPT,
    header::TRANSACTION,
    header::CONTENT_LENGTH,
    header::MESSAGE_ID,
];

/// SEND headers that a broker acts on instead of carrying them to the
/// subscriber, compared without regard to case. From the STOMP adapters of
/// RabbitMQ 3.10 and ActiveMQ 5.17 (their source, and the brokers here);
/// `content-type`, `content-encoding`, `correlation-id` and `type` are only
/// carried (ActiveMQ's `type` is JMSType, a label), so they pass.
const BROKER_HEADERS: [&str; 44] = [
    // Both brokers. `persistent` stores the message on disk; `priority`
    // reorders queues; `reply-to` (RabbitMQ) with a `/temp-queue/` value
    // creates a queue on the publishing connection, (ActiveMQ) becomes
    // JMSReplyTo; `timestamp` is parsed by both, and a value that does not
    // parse loses the message with an ERROR (ActiveMQ also closes the
    // connection).
    "persistent",
    "priority",
    "reply-to",
    "timestamp",
    // RabbitMQ. `expiration` is a per-message TTL; `user-id` must equal
    // the broker login or the connection is closed; `app-id`, `cluster-id`
    // and `amqp-message-id` are AMQP properties that AMQP consumers read as
    // the publisher's own.
    "expiration",
    "user-id",
    "app-id",
    "cluster-id",
    "amqp-message-id",
    // RabbitMQ: on a SEND to `/queue/…` these shape the queue it declares;
    // `prefetch-count` is a subscription option with no place on a message.
    "durable",
    "auto-delete",
    "exclusive",
    "prefetch-count",
    // RabbitMQ's sender-selected distribution: extra routing keys, and a
    // text value (all STOMP can send) makes it close the connection.
    "cc",
    "bcc",
    // ActiveMQ. `expires` is JMSExpiration; `transformation` makes the
    // broker convert the body into a JMS object or map message (XStream or
    // JSON); `amq-msg-type` chooses the JMS message type.
    "expires",
    "transformation",
    "amq-msg-type",
    // RabbitMQ reads these x- headers as the arguments of the queue a SEND or
    // SUBSCRIBE to `/queue/…` declares (type, length limits, TTLs,
    // dead-lettering, consumers) or as stream and plugin options. Only these
    // names: other x- headers are application headers, carried like any
    // other, as the embedded broker carries them.
    "x-queue-name",
    "x-queue-type",
    "x-queue-mode",
    "x-queue-version",
    "x-queue-master-locator",
    "x-queue-leader-locator",
    "x-message-ttl",
    "x-expires",
    "x-max-length",
    "x-max-length-bytes",
    "x-max-priority",
    "x-max-age",
    "x-overflow",
    "x-dead-letter-exchange",
    "x-dead-letter-routing-key",
    "x-dead-letter-strategy",
    "x-delivery-limit",
    "x-single-active-consumer",
    "x-initial-cluster-size",
    "x-quorum-initial-group-size",
    "x-stream-max-segment-size-bytes",
    "x-stream-offset",
    "x-stream-filter",
    "x-stream-filter-value",
    "x-delay",
    "x-deduplication-header",
];

/// Name prefixes of SEND headers a broker acts on, compared without regard
/// to case. A prefix, not a list of names, because ActiveMQ keeps adding
/// names under them and applications do not use them for their own.
const BROKER_HEADER_PREFIXES: [&str; 3] = [
    // ActiveMQ: JMS headers and JMSX properties it acts on (JMSXGroupID
    // pins messages to one consumer, JMSXUserID, JMSPriority…).
    "jms",
    // ActiveMQ's broker options (`activemq.subscriptionName`,
    // `activemq.exclusive`, `activemq.retroactive`…).
    "activemq.",
    // ActiveMQ's scheduled delivery: AMQ_SCHEDULED_DELAY, _PERIOD, _REPEAT,
    // _CRON.
    "amq_",
];

/// True for a SEND header that a broker acts on (see [`BROKER_HEADERS`]).
fn broker_interpreted(name: &[u8]) -> bool {
    BROKER_HEADERS
        .iter()
        .any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
        || BROKER_HEADER_PREFIXES.iter().any(|p| {
            name.get(..p.len())
                .is_some_and(|start| start.eq_ignore_ascii_case(p.as_bytes()))
        })
}

/// Characters that make ActiveMQ read one destination name as several
/// (`/queue/a,b` is a composite of two queues) or as a name with options
/// (`?consumer.exclusive=true`). Refused with every broker: a name is
/// checked whole, so a second name hidden after a comma would reach what
/// no check saw.
const SPLITTING: [char; 2] = [',', '?'];

/// Name prefixes whose rest RabbitMQ parses as one name.
const NAMED: [&str; 3] = ["/topic/", "/queue/", "/amq/queue/"];

impl RelayConfig {
    /// Refuses a client's wildcard subscription that could match the user
    /// namespace, when that namespace is under a topic prefix (as it must be
    /// for ActiveMQ, which has no direct exchange): a pattern must start with
    /// a literal word that is not the namespace's own.
    pub(crate) fn check_wildcards(&self, destination: &str) -> Result<(), BrokerError> {
        let Some(namespace) = self.user_destination_prefix.strip_prefix("/topic/") else {
            return Ok(());
        };
        let Some(pattern) = destination.strip_prefix("/topic/") else {
            return Ok(());
        };
        let first = pattern.split(['.', '/']).next().unwrap_or_default();
        let own = namespace.trim_end_matches(['.', '/']);
        if matches!(first, "*" | "#" | ">") || first == own {
            return Err(BrokerError::InvalidDestination(format!(
                "{destination}: a topic pattern must start with a literal word other than '{own}'"
            )));
        }
        Ok(())
    }

    /// Whether a header of a client's SUBSCRIBE, UNSUBSCRIBE, SEND, ACK or
    /// NACK goes on to the broker. SUBSCRIBE: only names in
    /// `subscribe_headers` (the relay writes `id`, `destination`, `ack` and
    /// `receipt` itself). UNSUBSCRIBE: `durable`, `persistent` and
    /// `auto-delete`, when `subscribe_headers` lists them. SEND: every name
    /// but the client leg's own, except that a header a broker acts on needs
    /// to be in `send_headers`. ACK and NACK: only names in `ack_headers`.
    /// Nothing else is relayed from a client.
    pub(crate) fn forwards_header(&self, command: Command, name: &[u8]) -> bool {
        let listed = |names: &[String]| names.iter().any(|n| n.as_bytes() == name);
        let own = |names: &[&str]| names.iter().any(|n| n.as_bytes() == name);
        match command {
            Command::Subscribe => !own(&OWN_SUBSCRIBE_HEADERS) && listed(&self.subscribe_headers),
            Command::Unsubscribe => own(&UNSUBSCRIBE_HEADERS) && listed(&self.subscribe_headers),
            Command::Ack | Command::Nack => !own(&OWN_ACK_HEADERS) && listed(&self.ack_headers),
            Command::Send => {
                !own(&CLIENT_LEG_HEADERS)
                    && (listed(&self.send_headers) || !broker_interpreted(name))
            }
            _ => false,
        }
    }

    /// Refuses a destination outside what a session may use: a relayed
    /// prefix for the client's own destinations, the user-destination
    /// namespace for those the session `resolved` for a user destination.
    /// Checked again at the last step before the broker, where the relay's
    /// own login would reach anything.
    pub(crate) fn check_relayed(
        &self,
        destination: &str,
        resolved: bool,
    ) -> Result<(), BrokerError> {
        let allowed = if resolved {
            self.is_user_destination(destination)
        } else {
            self.is_client_destination(destination) && !rabbitmq_refuses(destination)
        };
        if allowed {
            Ok(())
        } else {
            Err(BrokerError::InvalidDestination(format!(
                "{destination}: not relayed to the message broker (relayed: {})",
                self.prefixes.join(", ")
            )))
        }
    }

    /// The SEND for the broker: its destination in the broker's form, the
    /// client's headers that `forwards_header` lets through, and the body.
    pub(crate) fn send_frame(&self, message: super::Publish) -> stompbox_codec::Frame {
        let mut frame = stompbox_codec::Frame::new(Command::Send)
            .header(header::DESTINATION, &self.broker_form(&message.destination));
        for (name, value) in message.frame.headers.iter_bytes() {
            if self.forwards_header(Command::Send, name) {
                frame.headers.push(name.clone(), value.clone());
            }
        }
        frame.headers.push_str(
            header::CONTENT_LENGTH,
            &message.frame.body.len().to_string(),
        );
        frame.body = message.frame.body;
        frame
    }

    /// A broker's MESSAGE as its client sees it: the client's subscription
    /// id, the destination it named (`display` for user destinations, else
    /// the broker's name decoded), no upstream receipt (RabbitMQ copies the
    /// publisher's into MESSAGE frames), and a content-length. `ack`: keep
    /// the broker's ack header (`None`), or put the relay's own in its place
    /// (`Some`; `Some(None)` for none, a client of STOMP 1.0 or 1.1).
    pub(crate) fn client_message(
        &self,
        frame: stompbox_codec::Frame,
        client_id: bytes::Bytes,
        display: Option<&bytes::Bytes>,
        ack: Option<Option<String>>,
    ) -> stompbox_codec::Frame {
        use bytes::Bytes;
        let mut headers = stompbox_codec::Headers::with_capacity(frame.headers.len() + 1);
        headers.push(
            Bytes::from_static(header::SUBSCRIPTION.as_bytes()),
            client_id,
        );
        if let Some(Some(ack)) = &ack {
            headers.push_str(header::ACK, ack);
        }
        for (name, value) in frame.headers.iter_bytes() {
            match name.as_ref() {
                b"subscription" | b"receipt" => {}
                b"ack" if ack.is_some() => {}
                b"destination" => match display {
                    Some(display) => headers.push(name.clone(), display.clone()),
                    None => {
                        match self.client_form(std::str::from_utf8(value).unwrap_or_default()) {
                            std::borrow::Cow::Borrowed(_) => {
                                headers.push(name.clone(), value.clone())
                            }
                            std::borrow::Cow::Owned(decoded) => {
                                headers.push(name.clone(), Bytes::from(decoded));
                            }
                        }
                    }
                },
                _ => headers.push(name.clone(), value.clone()),
            }
        }
        if frame.headers.get(header::CONTENT_LENGTH).is_none() {
            headers.push_str(header::CONTENT_LENGTH, &frame.body.len().to_string());
        }
        stompbox_codec::Frame {
            command: Command::Message,
            headers,
            body: frame.body,
        }
    }

    /// True for a destination clients may use: under a relayed prefix and
    /// outside the user-destination namespace.
    pub(crate) fn is_client_destination(&self, destination: &str) -> bool {
        self.prefixes
            .iter()
            .any(|p| destination.starts_with(p.as_str()))
            && !self.is_user_destination(destination)
            && !destination.contains(SPLITTING)
    }

    /// True for a destination in the user-destination namespace, which only
    /// the server itself uses.
    pub(crate) fn is_user_destination(&self, destination: &str) -> bool {
        destination.starts_with(&self.user_destination_prefix)
    }

    /// The destination as the broker wants it.
    pub(crate) fn broker_form<'a>(&self, destination: &'a str) -> std::borrow::Cow<'a, str> {
        if !self.encode_slashes {
            return destination.into();
        }
        for prefix in NAMED {
            if let Some(name) = destination.strip_prefix(prefix)
                && name.contains(['/', '%'])
            {
                return format!("{prefix}{}", name.replace('%', "%25").replace('/', "%2F")).into();
            }
        }
        destination.into()
    }

    /// The destination as clients named it.
    pub(crate) fn client_form<'a>(&self, destination: &'a str) -> std::borrow::Cow<'a, str> {
        if !self.encode_slashes || !destination.contains('%') {
            return destination.into();
        }
        for prefix in NAMED {
            if let Some(name) = destination.strip_prefix(prefix) {
                return format!("{prefix}{}", name.replace("%2F", "/").replace("%25", "%")).into();
            }
        }
        destination.into()
    }
}

/// True for a name RabbitMQ answers with an ERROR that closes the whole
/// connection: an empty queue or topic name, or a queue under its reserved
/// `amq.` prefix (which it refuses to declare). Through the shared relay
/// that connection carries every client's frames, so such a name must never
/// reach it; no client can mean one.
fn rabbitmq_refuses(destination: &str) -> bool {
    ["/topic/", "/queue/", "/amq/queue/"]
        .iter()
        .any(|prefix| destination.strip_prefix(prefix).is_some_and(str::is_empty))
        || destination
            .strip_prefix("/queue/")
            .is_some_and(|name| name.starts_with("amq."))
}

/// How client sessions reach the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum RelayMode {
    /// A pool of [`RelayConfig::connections`] broker links per instance.
    /// A topic is subscribed upstream once per instance, however many
    /// local subscribers it has, and fanned out locally; queue and
    /// client-acknowledged subscriptions get their own upstream
    /// subscription on the pool. Every client session uses the relay's
    /// client login.
    #[default]
    Shared,
    /// One broker connection per client session (N + 1 per instance), for
    /// deployments where each client must log in to the broker with its own
    /// credentials (`client_login = None`).
    PerSession,
}

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig {
            mode: RelayMode::Shared,
            connections: 4,
            prefetch: 64,
            retire_timeout: Duration::from_secs(30),
            addresses: vec!["127.0.0.1:61613".into()],
            virtual_host: "/".into(),
            client_login: Some("guest".into()),
            client_passcode: Some("guest".into()),
            system_login: "guest".into(),
            system_passcode: "guest".into(),
            heartbeat_send: Duration::from_secs(10),
            heartbeat_receive: Duration::from_secs(10),
            prefixes: vec!["/topic/".into(), "/queue/".into()],
            user_destination_prefix: "/exchange/amq.direct/stompbox-user.".into(),
            subscribe_headers: Vec::new(),
            send_headers: Vec::new(),
            ack_headers: vec!["requeue".into()],
            reconnect_initial: Duration::from_millis(500),
            reconnect_max: Duration::from_secs(30),
            connect_timeout: Duration::from_secs(10),
            publish_timeout: Duration::from_secs(10),
            max_frame_bytes: 1024 * 1024,
            upstream_buffer_bytes: 512 * 1024,
            max_in_flight: 10_000,
            encode_slashes: true,
            tls: None,
        }
    }
}

/// The relay broker.
#[derive(Debug)]
pub struct RelayBroker {
    config: RelayConfig,
    system: Arc<SystemConnection>,
    /// The shared mode's links; `None` in per-session mode.
    pool: Option<Arc<Pool>>,
    /// The system connection is up, and in shared mode a pool link too.
    available: watch::Receiver<bool>,
    stop: watch::Sender<bool>,
    counters: Arc<RelayCounters>,
}

impl RelayBroker {
    /// Starts the relay: the system connection begins connecting (and
    /// retrying) in the background.
    pub fn start(config: RelayConfig) -> RelayBroker {
        let counters = Arc::new(RelayCounters::default());
        let system = SystemConnection::new(config.clone(), Arc::clone(&counters));
        let (stop, stopped) = watch::channel(false);
        let pool = (config.mode == RelayMode::Shared)
            .then(|| Pool::start(config.clone(), Arc::clone(&counters), stopped.clone()));
        let available = match &pool {
            Some(pool) => both_up(system.availability(), pool.watch_links(), stopped.clone()),
            None => system.availability(),
        };
        tokio::spawn(Arc::clone(&system).run(stopped));
        RelayBroker {
            config,
            system,
            pool,
            available,
            stop,
            counters,
        }
    }

    /// Watches the broker's availability: the system connection is up,
    /// and in shared mode at least one pool link.
    pub fn availability(&self) -> watch::Receiver<bool> {
        self.available.clone()
    }
}

/// True while the system connection and at least one pool link are up.
fn both_up(
    mut system: watch::Receiver<bool>,
    mut links: watch::Receiver<usize>,
    mut stop: watch::Receiver<bool>,
) -> watch::Receiver<bool> {
    let (sender, receiver) = watch::channel(false);
    tokio::spawn(async move {
        loop {
            let up = *system.borrow_and_update() && *links.borrow_and_update() > 0;
            sender.send_replace(up);
            tokio::select! {
                changed = system.changed() => if changed.is_err() { break },
                changed = links.changed() => if changed.is_err() { break },
                _ = stop.wait_for(|s| *s) => break,
            }
        }
        sender.send_replace(false);
    });
    receiver
}

impl Drop for RelayBroker {
    fn drop(&mut self) {
        self.stop.send_replace(true);
    }
}

impl Broker for RelayBroker {
    fn open_session(
        &self,
        context: SessionContext,
    ) -> BoxFuture<'_, Result<Box<dyn BrokerSession>, BrokerError>> {
        Box::pin(async move {
            if !*self.available.borrow() {
                return Err(BrokerError::Unavailable(
                    "the message broker is unavailable; try again later".into(),
                ));
            }
            if let Some(pool) = &self.pool {
                let session = SharedSession::open(Arc::clone(pool), context);
                return Ok(Box::new(session) as Box<dyn BrokerSession>);
            }
            let session = RelaySession::open(&self.config, &self.counters, context).await?;
            Ok(Box::new(session) as Box<dyn BrokerSession>)
        })
    }

    fn publish(&self, message: Publish) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(self.system.publish(message))
    }

    fn handles(&self, destination: &str) -> bool {
        self.config.is_client_destination(destination)
    }

    fn check_destination(&self, destination: &str) -> Result<(), BrokerError> {
        if destination.contains(SPLITTING) {
            return Err(BrokerError::InvalidDestination(format!(
                "{destination}: ',' and '?' are not allowed in destinations relayed to the \
                 broker (ActiveMQ reads them as several destinations or as options)"
            )));
        }
        Ok(())
    }

    fn user_destination(&self, key: &str) -> String {
        format!("{}{key}", self.config.user_destination_prefix)
    }

    fn is_user_destination(&self, destination: &str) -> bool {
        self.config.is_user_destination(destination)
    }

    fn availability(&self) -> watch::Receiver<bool> {
        self.available.clone()
    }

    fn prefixes(&self) -> Vec<String> {
        self.config.prefixes.clone()
    }

    /// The relay's links and what it holds at the broker. Queues live in
    /// the broker, so `queues` and the message counts are 0; in shared
    /// mode `destinations` counts the shared topic subscriptions.
    fn stats(&self) -> BrokerStats {
        let c = &self.counters;
        let subscriptions = c.subscriptions.load(Ordering::Relaxed);
        let mut relay = RelayStats {
            available: *self.available.borrow(),
            broker_connections: c.broker_connections.load(Ordering::Relaxed),
            reconnects: c.reconnects.load(Ordering::Relaxed),
            connection_failures: c.connection_failures.load(Ordering::Relaxed),
            ..RelayStats::default()
        };
        let mut destinations = 0;
        match &self.pool {
            Some(pool) => {
                let figures = pool.figures();
                relay.mode = "shared";
                relay.links_up = figures.links_up;
                relay.links_total = figures.links_total;
                relay.upstream_subscriptions = figures.upstream_subscriptions;
                relay.relayed_topic_subscribers = c.topic_subscribers.load(Ordering::Relaxed);
                destinations = figures.topics;
            }
            None => {
                relay.mode = "per-session";
                relay.upstream_subscriptions = subscriptions;
            }
        }
        BrokerStats {
            destinations,
            subscriptions,
            relay: Some(relay),
            ..BrokerStats::default()
        }
    }

    /// In shared mode, the shared topic subscriptions with their local
    /// subscribers. Queues and their depths live in the broker (its own
    /// console shows them): they are not listed, and a topic's `ready` and
    /// `unacked` are 0 (client-ack topic subscriptions have upstream
    /// subscriptions of their own, not listed either). Nothing in
    /// per-session mode, where each session's subscriptions are its own.
    fn destinations(&self, limit: usize) -> Vec<DestinationStats> {
        let Some(pool) = &self.pool else {
            return Vec::new();
        };
        if limit == 0 {
            return Vec::new();
        }
        let mut busiest = Busiest::new(limit);
        pool.for_each_topic(|name, subscribers| {
            if !busiest.admits(0, subscribers) {
                return;
            }
            let kind = if self.config.is_user_destination(name) {
                DestinationKind::User
            } else if name.split(['.', '/']).any(|w| w == "*" || w == "#") {
                DestinationKind::Pattern
            } else {
                DestinationKind::Topic
            };
            busiest.offer(DestinationStats::new(name, kind, subscribers));
        });
        busiest.into_sorted()
    }

    /// STOMP has no purge: refused with [`BrokerError::NotAllowed`].
    fn purge<'a>(&'a self, destination: &'a str) -> BoxFuture<'a, Result<usize, BrokerError>> {
        let refused = BrokerError::NotAllowed(format!(
            "cannot purge '{destination}' through the relay (STOMP has no purge): purge it in \
             the broker's own console (e.g. RabbitMQ management)"
        ));
        Box::pin(std::future::ready(Err(refused)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slashes_round_trip_through_the_broker_form() {
        let config = RelayConfig::default();
        for name in [
            "/topic/chat/1",
            "/queue/a%b/c",
            "/topic/plain.name",
            "/exchange/x/y/z",
        ] {
            let there = config.broker_form(name);
            assert!(!there.contains("chat/1"), "{there}");
            assert_eq!(config.client_form(&there), name);
        }
        assert_eq!(config.broker_form("/topic/chat/1"), "/topic/chat%2F1");
        assert_eq!(config.broker_form("/exchange/x/y/z"), "/exchange/x/y/z");
    }

    fn passes(config: &RelayConfig, command: Command, names: &[&str]) -> Vec<String> {
        names
            .iter()
            .filter(|n| config.forwards_header(command, n.as_bytes()))
            .map(|n| (*n).to_owned())
            .collect()
    }

    #[test]
    fn subscribe_passes_only_allowed_client_headers() {
        let client = [
            "id",
            "destination",
            "ack",
            "receipt",
            "durable",
            "auto-delete",
            "exclusive",
            "x-queue-name",
            "x-max-length",
            "prefetch-count",
            "selector",
            "activemq.subscriptionName",
            "my-header",
        ];
        let mut config = RelayConfig::default();
        assert!(passes(&config, Command::Subscribe, &client).is_empty());
        config.subscribe_headers = vec!["prefetch-count".into(), "id".into(), "Selector".into()];
        // The relay's own headers are never copied, even if listed; names
        // match exactly.
        assert_eq!(
            passes(&config, Command::Subscribe, &client),
            ["prefetch-count"]
        );
    }

    #[test]
    fn send_drops_broker_headers_unless_allowed() {
        let client = [
            "destination",
            "receipt",
            "transaction",
            "content-length",
            "content-type",
            "correlation-id",
            "type",
            "stompbox-sender",
            "my-app-header",
            "persistent",
            "Persistent",
            "reply-to",
            "expiration",
            "priority",
            "timestamp",
            "user-id",
            "app-id",
            "cluster-id",
            "amqp-message-id",
            "durable",
            "auto-delete",
            "exclusive",
            "prefetch-count",
            "CC",
            "BCC",
            "x-queue-type",
            "X-Max-Length",
            "x-custom",
            "expires",
            "transformation",
            "amq-msg-type",
            "JMSXGroupID",
            "jmsType",
            "activemq.priority",
            "AMQ_SCHEDULED_DELAY",
            "amq_scheduled_period",
            "x",
            "jm",
        ];
        let mut config = RelayConfig::default();
        assert_eq!(
            passes(&config, Command::Send, &client),
            [
                "content-type",
                "correlation-id",
                "type",
                "stompbox-sender",
                "my-app-header",
                "x-custom",
                "x",
                "jm"
            ]
        );
        config.send_headers = vec!["persistent".into(), "x-max-length".into(), "receipt".into()];
        let passed = passes(&config, Command::Send, &client);
        // Listed names pass exactly as written; the client leg's own never.
        assert!(passed.contains(&"persistent".to_owned()));
        assert!(!passed.contains(&"Persistent".to_owned()));
        assert!(!passed.contains(&"X-Max-Length".to_owned()));
        assert!(!passed.contains(&"receipt".to_owned()));
        assert_eq!(passed.len(), 9, "{passed:?}");
    }

    #[test]
    fn other_frames_forward_no_client_header() {
        let config = RelayConfig::default();
        for command in [Command::Begin, Command::Commit, Command::Disconnect] {
            assert!(!config.forwards_header(command, b"my-app-header"));
        }
    }

    #[test]
    fn ack_and_nack_pass_only_allowed_headers() {
        let client = [
            "id",
            "message-id",
            "subscription",
            "receipt",
            "transaction",
            "requeue",
            "Requeue",
            "my-app-header",
        ];
        let mut config = RelayConfig::default();
        for command in [Command::Ack, Command::Nack] {
            assert_eq!(passes(&config, command, &client), ["requeue"]);
        }
        config.ack_headers = vec!["my-app-header".into(), "id".into(), "transaction".into()];
        assert_eq!(passes(&config, Command::Nack, &client), ["my-app-header"]);
        config.ack_headers.clear();
        assert!(passes(&config, Command::Nack, &client).is_empty());
    }

    #[test]
    fn unsubscribe_passes_only_the_durable_headers_subscribe_allows() {
        let client = [
            "id",
            "receipt",
            "durable",
            "persistent",
            "auto-delete",
            "x-queue-name",
            "prefetch-count",
        ];
        let mut config = RelayConfig::default();
        assert!(passes(&config, Command::Unsubscribe, &client).is_empty());
        config.subscribe_headers = vec![
            "durable".into(),
            "auto-delete".into(),
            "x-queue-name".into(),
            "prefetch-count".into(),
        ];
        assert_eq!(
            passes(&config, Command::Unsubscribe, &client),
            ["durable", "auto-delete"]
        );
    }

    #[test]
    fn only_topic_and_queue_are_client_destinations_by_default() {
        let config = RelayConfig::default();
        for allowed in ["/topic/a", "/queue/b"] {
            assert!(config.is_client_destination(allowed), "{allowed}");
        }
        for refused in [
            "/exchange/amq.fanout",
            "/exchange/amq.rabbitmq.trace/#",
            "/amq/queue/q",
            "/temp-queue/t",
            "/exchange/amq.direct/stompbox-user.k",
        ] {
            assert!(!config.is_client_destination(refused), "{refused}");
        }
        assert!(config.is_user_destination("/exchange/amq.direct/stompbox-user.k"));
        // Relaying /exchange/ does not open the user namespace.
        let config = RelayConfig {
            prefixes: vec!["/exchange/".into()],
            ..RelayConfig::default()
        };
        assert!(config.is_client_destination("/exchange/amq.fanout"));
        assert!(!config.is_client_destination("/exchange/amq.direct/stompbox-user.k"));
    }
}
