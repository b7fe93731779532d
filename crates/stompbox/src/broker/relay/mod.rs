//! The broker relay: client sessions and server-originated messages go to
//! an external STOMP broker (RabbitMQ's STOMP plugin, ActiveMQ), so many
//! stompbox instances share one message space.
//!
//! Each client session gets its own upstream connection, opened on the
//! client's CONNECT; the server's own messages share one system connection.
//! Receipts are answered only when the broker's own RECEIPT arrives.

mod session;
mod system;
mod upstream;

use super::{BoxFuture, Broker, BrokerError, BrokerSession, Publish, SessionContext};
use session::RelaySession;
use std::sync::Arc;
use std::time::Duration;
use system::SystemConnection;
use tokio::sync::watch;

/// Settings of the relay. Every field has a documented default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct RelayConfig {
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
    /// Destination prefixes relayed to the broker. Default `/topic/`,
    /// `/queue/`, `/exchange/`, `/amq/queue/`, `/temp-queue/`.
    pub prefixes: Vec<String>,
    /// Where user destinations live on the broker. Default
    /// `/exchange/amq.direct/stompbox-user.` (RabbitMQ; a direct exchange,
    /// so no wildcard subscription can reach it).
    pub user_destination_prefix: String,
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
    /// Server-originated messages awaiting the broker's receipt. Default 10,000.
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

impl Default for RelayConfig {
    fn default() -> RelayConfig {
        RelayConfig {
            addresses: vec!["127.0.0.1:61613".into()],
            virtual_host: "/".into(),
            client_login: Some("guest".into()),
            client_passcode: Some("guest".into()),
            system_login: "guest".into(),
            system_passcode: "guest".into(),
            heartbeat_send: Duration::from_secs(10),
            heartbeat_receive: Duration::from_secs(10),
            prefixes: [
                "/topic/",
                "/queue/",
                "/exchange/",
                "/amq/queue/",
                "/temp-queue/",
            ]
            .into_iter()
            .map(String::from)
            .collect(),
            user_destination_prefix: "/exchange/amq.direct/stompbox-user.".into(),
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
    stop: watch::Sender<bool>,
}

impl RelayBroker {
    /// Starts the relay: the system connection begins connecting (and
    /// retrying) in the background.
    pub fn start(config: RelayConfig) -> RelayBroker {
        let system = SystemConnection::new(config.clone());
        let (stop, stopped) = watch::channel(false);
        tokio::spawn(Arc::clone(&system).run(stopped));
        RelayBroker {
            config,
            system,
            stop,
        }
    }

    /// Watches the broker's availability (the system connection's state).
    pub fn availability(&self) -> watch::Receiver<bool> {
        self.system.availability()
    }
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
            if !self.system.is_available() {
                return Err(BrokerError::Unavailable(
                    "the message broker is unavailable; try again later".into(),
                ));
            }
            let session = RelaySession::open(&self.config, context).await?;
            Ok(Box::new(session) as Box<dyn BrokerSession>)
        })
    }

    fn publish(&self, message: Publish) -> BoxFuture<'_, Result<(), BrokerError>> {
        Box::pin(self.system.publish(message))
    }

    fn handles(&self, destination: &str) -> bool {
        self.config
            .prefixes
            .iter()
            .any(|p| destination.starts_with(p.as_str()))
            && !self.is_user_destination(destination)
    }

    fn user_destination(&self, key: &str) -> String {
        format!("{}{key}", self.config.user_destination_prefix)
    }

    fn is_user_destination(&self, destination: &str) -> bool {
        destination.starts_with(&self.config.user_destination_prefix)
    }

    fn availability(&self) -> watch::Receiver<bool> {
        self.system.availability()
    }

    fn prefixes(&self) -> Vec<String> {
        self.config.prefixes.clone()
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
}
