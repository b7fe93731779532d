//! Settings of a stompbox server, as plain data. The binary loads them from
//! TOML, the environment and flags; a library user builds them in code.

use crate::broker::embedded::EmbeddedConfig;
use crate::broker::relay::RelayConfig;
use std::net::SocketAddr;
use std::time::Duration;
use stompbox_codec::Limits;

/// Everything a [`Server`](crate::Server) needs. Every field has a default,
/// listed on the field.
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
    /// Most open client connections. Default 50,000.
    pub max_connections: usize,
    /// Most subscriptions one session may hold. Default 1,024.
    pub max_subscriptions: usize,
    /// Most open transactions per session. Default 16.
    pub max_transactions: usize,
    /// Most frames buffered by one transaction. Default 1,000.
    pub max_transaction_frames: usize,
    /// Most bytes all open transactions of one session may buffer until
    /// COMMIT. Default 1 MiB.
    pub max_transaction_bytes: usize,
    /// Most unwritten bytes queued for one connection; past it the client is
    /// a slow consumer and is disconnected. Default 512 KiB.
    pub outbox_bytes: usize,
    /// Unwritten bytes across all connections above which connections stop
    /// reading new frames until the writers bring it under half: publishers
    /// are slowed while the server cannot keep up, instead of subscribers
    /// being cut off. Default 16 MiB.
    pub backlog_bytes: usize,
    /// Longest a write to one client may take before it is a slow consumer.
    /// Default 10 s.
    pub send_timeout: Duration,
    /// Time allowed for the first frame (CONNECT) after the connection
    /// opens. Default 10 s.
    pub connect_timeout: Duration,
    /// Shortest interval the server offers to send heart-beats at (the `sx`
    /// of CONNECTED's `heart-beat`); zero turns them off. Default 10 s.
    pub heartbeat_send: Duration,
    /// Interval the server asks clients to send heart-beats at (`sy`); zero
    /// turns the check off. Default 10 s.
    pub heartbeat_receive: Duration,
    /// How long past its heart-beat promise a client may stay silent before
    /// it is disconnected, as a factor of the interval. Default 1.5.
    pub heartbeat_grace: f64,
    /// Time given to flush outboxes and close sessions on shutdown. Default 5 s.
    pub shutdown_timeout: Duration,
    /// Token for `POST /api/publish`; the endpoint exists only when set.
    /// Default `None`.
    pub api_token: Option<String>,
    /// Prefixes of application destinations, routed to handlers. Default `["/app"]`.
    pub app_prefixes: Vec<String>,
    /// Prefix of user destinations. Default `/user`.
    pub user_prefix: String,
    /// The embedded broker's settings (used when `relay` is `None`).
    pub embedded: EmbeddedConfig,
    /// Relay to an external STOMP broker instead of the embedded one.
    /// Default `None`.
    pub relay: Option<RelayConfig>,
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
            max_transactions: 16,
            max_transaction_frames: 1_000,
            max_transaction_bytes: 1024 * 1024,
            outbox_bytes: 512 * 1024,
            backlog_bytes: 16 * 1024 * 1024,
            send_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(10),
            heartbeat_send: Duration::from_secs(10),
            heartbeat_receive: Duration::from_secs(10),
            heartbeat_grace: 1.5,
            shutdown_timeout: Duration::from_secs(5),
            api_token: None,
            app_prefixes: vec!["/app".into()],
            user_prefix: "/user".into(),
            embedded: EmbeddedConfig::default(),
            relay: None,
        }
    }
}
