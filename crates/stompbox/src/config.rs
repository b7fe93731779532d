//! Settings of a stompbox server, as plain data. The binary loads them from
//! TOML, the environment and flags; a library user builds them in code.

use crate::admission::IpNetwork;
use crate::auth::AuthConfig;
use crate::broker::embedded::EmbeddedConfig;
use crate::broker::relay::RelayConfig;
use std::net::SocketAddr;
use std::time::Duration;
use stompbox_codec::Limits;

pub use crate::tls::TlsConfig;

/// A token for `POST /api/publish` and the destinations it may publish to.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct ApiToken {
    /// The secret a request sends as `Authorization: Bearer <token>`.
    pub token: String,
    /// Destination patterns (as in the access rules, without `{user}`) this
    /// token may publish to, e.g. `["/user/**"]`.
    pub destinations: Vec<String>,
}

impl ApiToken {
    /// A token that may publish to the `destinations` patterns.
    pub fn new<I, P>(token: impl Into<String>, destinations: I) -> ApiToken
    where
        I: IntoIterator<Item = P>,
        P: Into<String>,
    {
        ApiToken {
            token: token.into(),
            destinations: destinations.into_iter().map(Into::into).collect(),
        }
    }
}

impl std::fmt::Debug for ApiToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ApiToken")
            .field("destinations", &self.destinations)
            .finish_non_exhaustive()
    }
}

/// Who may use the admin page and API. With neither `token` nor `role` set
/// (the default) `/admin` and `/admin/api/…` answer 404.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct AdminConfig {
    /// A secret an operator sends as `Authorization: Bearer <token>`.
    /// Default `None`.
    pub token: Option<String>,
    /// Users the server's authenticator verifies and who hold this role may
    /// use the admin page, logging in with `Authorization: Basic`
    /// (login and password) or `Authorization: Bearer <JWT>`, as a CONNECT
    /// would carry them. Default `None`.
    pub role: Option<String>,
    /// Most admin event streams (`GET /admin/api/events`, one per open
    /// admin page) at once; one more is refused with 503. Each costs a
    /// snapshot of the server per second. Default 8.
    pub max_event_streams: usize,
}

impl Default for AdminConfig {
    fn default() -> AdminConfig {
        AdminConfig {
            token: None,
            role: None,
            max_event_streams: 8,
        }
    }
}

impl AdminConfig {
    /// Whether the admin page and API are on: a token or a role is set.
    pub fn enabled(&self) -> bool {
        self.token.is_some() || self.role.is_some()
    }
}

impl std::fmt::Debug for AdminConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The token is a secret: say whether there is one, not what it is.
        f.debug_struct("AdminConfig")
            .field("token", &self.token.as_ref().map(|_| "(set)"))
            .field("role", &self.role)
            .field("max_event_streams", &self.max_event_streams)
            .finish()
    }
}

/// The Prometheus endpoint, `GET /metrics`.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct MetricsConfig {
    /// Whether `/metrics` is served. Default `true`.
    pub enabled: bool,
    /// A listener of its own for `/metrics` and the health endpoints (say
    /// on an internal interface), besides the main HTTP listener. Default
    /// `None`.
    pub addr: Option<std::net::SocketAddr>,
    /// A secret Prometheus must send as `Authorization: Bearer <token>`
    /// (its `authorization` scrape setting); without one `/metrics` is open
    /// to whoever reaches the listener. Default `None`.
    pub token: Option<String>,
    /// Series per destination (subscribers, queue depth), for the busiest
    /// `max_destination_series` destinations only, so a server with many
    /// destinations does not flood Prometheus. Default `false`.
    pub per_destination: bool,
    /// Most destinations with series of their own. Default 100.
    pub max_destination_series: usize,
}

impl Default for MetricsConfig {
    fn default() -> MetricsConfig {
        MetricsConfig {
            enabled: true,
            addr: None,
            token: None,
            per_destination: false,
            max_destination_series: 100,
        }
    }
}

impl std::fmt::Debug for MetricsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetricsConfig")
            .field("enabled", &self.enabled)
            .field("addr", &self.addr)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .field("per_destination", &self.per_destination)
            .field("max_destination_series", &self.max_destination_series)
            .finish()
    }
}

/// Everything a [`Server`](crate::Server) needs. Every field has a default,
/// listed on the field.
///
/// Start from the defaults and change what differs (the struct is
/// `#[non_exhaustive]`, so new settings do not break your code):
///
/// ```
/// use stompbox::ServerConfig;
///
/// # fn main() -> Result<(), std::net::AddrParseError> {
/// let mut config = ServerConfig::default();
/// config.http_addr = "0.0.0.0:8080".parse()?;
/// config.tcp_addr = Some("0.0.0.0:61613".parse()?); // plain STOMP over TCP too
/// config.allowed_origins = vec!["https://chat.example.com".into()];
/// # Ok(()) }
/// ```
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// HTTP and WebSocket listen address. Default `127.0.0.1:8080`.
    pub http_addr: SocketAddr,
    /// Path of the WebSocket endpoint. Default `/ws`.
    pub ws_path: String,
    /// Plain STOMP over TCP listen address; off when `None` (the default).
    pub tcp_addr: Option<SocketAddr>,
    /// Frame size, header count and header line limits. Defaults 64 KiB, 64, 8 KiB.
    pub frame_limits: Limits,
    /// Most open client connections: WebSocket and STOMP sessions, and HTTP
    /// connections from the moment they are accepted (a WebSocket session
    /// keeps its HTTP connection's place). One past it gets HTTP 503 or a
    /// STOMP ERROR. Lowered when binding to what the open-file limit allows,
    /// see [`ServerConfig::effective_max_connections`]. Default 50,000.
    pub max_connections: usize,
    /// Most subscriptions one session may hold. Default 1,024.
    pub max_subscriptions: usize,
    /// SUBSCRIBE and UNSUBSCRIBE frames one session may send per second (a
    /// burst of as many passes at once); past it the session's next frames
    /// wait, its output still flowing, so subscription churn cannot flood
    /// the registries or an application's join/leave notices. 0 is no
    /// limit. Default 100.
    pub subscriptions_per_sec: u32,
    /// Most open transactions per session. Default 16.
    pub max_transactions: usize,
    /// Most frames buffered by one transaction. Default 1,000.
    pub max_transaction_frames: usize,
    /// Most memory the frames buffered by all open transactions of one
    /// session may occupy until COMMIT (each frame counted as it sits in
    /// memory: every header entry, its buffer, bookkeeping). Default 1 MiB.
    pub max_transaction_bytes: usize,
    /// Most memory the frames buffered by every open transaction of the
    /// server may occupy, counted as `max_transaction_bytes` counts; a SEND,
    /// ACK or NACK in a transaction past it is refused with an ERROR naming
    /// it. Default 64 MiB.
    pub max_total_transaction_bytes: usize,
    /// Most memory the unwritten frames queued for one connection may occupy
    /// (their bytes, and each frame's place in the queue); past it the client
    /// is a slow consumer and is disconnected. Default 512 KiB.
    pub outbox_bytes: usize,
    /// Memory of unwritten output across all connections (a message shared
    /// by many counted once, each queued frame's own place besides) above
    /// which connections stop reading new frames until the writers bring it
    /// under half: publishers are slowed while the server cannot keep up,
    /// instead of subscribers being cut off. Default 64 MiB.
    pub backlog_bytes: usize,
    /// Longest a write to one client may take before it is a slow consumer.
    /// Default 10 s.
    pub send_timeout: Duration,
    /// Time allowed for the first frame (CONNECT) after the connection
    /// opens, and for an HTTP connection's first request head. Default 10 s.
    pub connect_timeout: Duration,
    /// How long a kept-alive HTTP connection may wait for its next request
    /// after a response (idle time and reading the request head together);
    /// past it the connection is closed. Also bounds the first request head
    /// when shorter than `connect_timeout`. Default 20 s.
    pub http_idle_timeout: Duration,
    /// Whether the server sends heart-beats: zero turns them off. A client
    /// that asks for them gets them at the interval it asks for, but no
    /// more often than `heartbeat_min`; to a client that asks for none,
    /// CONNECTED offers this interval (the `sx` of its `heart-beat`).
    /// Default 10 s.
    pub heartbeat_send: Duration,
    /// Whether the server checks that clients send heart-beats: zero turns
    /// the check off. A client that offers them is held to the interval it
    /// offers, but is not asked for them more often than `heartbeat_min`;
    /// to a client that offers none, CONNECTED asks for this interval
    /// (`sy`). Default 10 s.
    pub heartbeat_receive: Duration,
    /// The shortest heart-beat interval the server agrees to, either way: a
    /// client asking for heart-beats every 100 ms gets them every
    /// `heartbeat_min`, so no client makes the server wake (or read) more
    /// often than this. Zero counts as 1 ms. Default 1 s.
    pub heartbeat_min: Duration,
    /// How long past its heart-beat promise a client may stay silent before
    /// it is disconnected, as a factor of the interval. Default 1.5.
    pub heartbeat_grace: f64,
    /// Time given to flush outboxes and close sessions on shutdown. Default 5 s.
    pub shutdown_timeout: Duration,
    /// How often the server logs a line of its headline figures (target
    /// `stompbox::stats`: connections, sessions, messages and bytes with
    /// their rates over the interval, backlog, slow consumers, broker
    /// availability); zero turns it off. Default 60 s.
    pub stats_interval: Duration,
    /// Token for `POST /api/publish` to any destination. Default `None`.
    pub api_token: Option<String>,
    /// Tokens for `POST /api/publish`, each limited to some destinations.
    /// The endpoint exists when this or `api_token` is set. Default none.
    pub api_tokens: Vec<ApiToken>,
    /// Most `POST /api/publish` requests whose bodies are read at once;
    /// one more gets HTTP 503 at once. At least 1 (0 is refused by
    /// [`ServerBuilder::bind`](crate::ServerBuilder::bind)). Default 64.
    pub max_concurrent_api_requests: usize,
    /// Who may use the admin page (`/admin`) and its JSON API
    /// (`/admin/api/…`). Both exist only when a token or a role is set.
    /// Default: off.
    pub admin: AdminConfig,
    /// Authentication and access rules. Default: no authentication (every
    /// session anonymous) and open access.
    pub auth: AuthConfig,
    /// Origins besides the server's own whose pages may open WebSocket
    /// sessions (`https://chat.example.com`, `https://*.example.com`,
    /// `null`), or `*` for any. A handshake from another origin gets HTTP
    /// 403; clients that send no `Origin` (not browsers) are not affected.
    /// Default none: same-origin only.
    pub allowed_origins: Vec<String>,
    /// Proxies whose `X-Forwarded-For` names the client's address. Default none.
    pub trusted_proxies: Vec<IpNetwork>,
    /// TLS on the HTTP/WebSocket and STOMP TCP listeners. Default `None`.
    pub tls: Option<TlsConfig>,
    /// Most connections from one client address (an IPv6 /64 counts as one);
    /// 0 is no limit. Default 1,000.
    pub max_connections_per_address: usize,
    /// Most CONNECT attempts per client address per second (a burst of as
    /// many); 0 is no limit. Default 100.
    pub connects_per_address_per_sec: u32,
    /// Largest HTTP request head (request line and headers, so the
    /// WebSocket handshake's cookies too); a larger one is refused with 431
    /// before it is buffered further. At least 8 KiB. Default 16 KiB.
    pub max_request_head_bytes: usize,
    /// Largest frame accepted before CONNECT has succeeded, so an
    /// unauthenticated client cannot make the server buffer much. Default
    /// 16 KiB.
    pub unauthenticated_frame_bytes: usize,
    /// Prefixes of application destinations, routed to handlers. Default `["/app"]`.
    pub app_prefixes: Vec<String>,
    /// Prefix of user destinations. Default `/user`.
    pub user_prefix: String,
    /// The embedded broker's settings (used when `relay` is `None`).
    pub embedded: EmbeddedConfig,
    /// Relay to an external STOMP broker instead of the embedded one.
    /// Default `None`.
    pub relay: Option<RelayConfig>,
    /// The Prometheus endpoint. Default: on, on the main listener, open.
    pub metrics: MetricsConfig,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            http_addr: SocketAddr::from(([127, 0, 0, 1], 8080)),
            ws_path: "/ws".into(),
            tcp_addr: None,
            frame_limits: Limits::default(),
            max_connections: 50_000,
            max_subscriptions: 1_024,
            subscriptions_per_sec: 100,
            max_transactions: 16,
            max_transaction_frames: 1_000,
            max_transaction_bytes: 1024 * 1024,
            max_total_transaction_bytes: 64 * 1024 * 1024,
            outbox_bytes: 512 * 1024,
            backlog_bytes: 64 * 1024 * 1024,
            send_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            http_idle_timeout: Duration::from_secs(20),
            heartbeat_send: Duration::from_secs(10),
            heartbeat_receive: Duration::from_secs(10),
            heartbeat_min: Duration::from_secs(1),
            heartbeat_grace: 1.5,
            shutdown_timeout: Duration::from_secs(5),
            stats_interval: Duration::from_secs(60),
            api_token: None,
            api_tokens: Vec::new(),
            max_concurrent_api_requests: 64,
            admin: AdminConfig::default(),
            auth: AuthConfig::default(),
            allowed_origins: Vec::new(),
            trusted_proxies: Vec::new(),
            tls: None,
            max_connections_per_address: 1_000,
            connects_per_address_per_sec: 100,
            unauthenticated_frame_bytes: 16 * 1024,
            max_request_head_bytes: 16 * 1024,
            app_prefixes: vec!["/app".into()],
            user_prefix: "/user".into(),
            embedded: EmbeddedConfig::default(),
            relay: None,
            metrics: MetricsConfig::default(),
        }
    }
}
