//! Listening: the HTTP server with the WebSocket endpoint, the optional
//! plain TCP listener, the connection limit and graceful shutdown.

use crate::app::{App, AppRuntime, Messaging};
use crate::broker::Broker;
use crate::broker::embedded::EmbeddedBroker;
use crate::broker::relay::RelayBroker;
use crate::config::ServerConfig;
use crate::connection;
use crate::outbox::Backlog;
use crate::transport::Transport;
use axum::Router;
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::serve::ListenerExt;
use base64::Engine;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use stompbox_codec::Version;
use tokio::net::TcpListener;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};
use tokio::task::JoinHandle;

/// State shared by every connection of one server.
pub(crate) struct ServerShared {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) app: AppRuntime,
    pub(crate) messaging: Messaging,
    pub(crate) shutdown: watch::Sender<bool>,
    pub(crate) slow_consumers: AtomicU64,
    pub(crate) backlog: Arc<Backlog>,
    connections: Arc<Semaphore>,
}

impl ServerShared {
    pub(crate) fn next_session_id(&self) -> String {
        crate::app::user::new_session_id()
    }

    fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.connections).try_acquire_owned().ok()
    }
}

/// Counters an operator may want, read with [`Server::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Open client connections.
    pub connections: usize,
    /// Clients disconnected as slow consumers since start.
    pub slow_consumers: u64,
}

/// A bound, not yet running, stompbox server.
pub struct Server {
    shared: Arc<ServerShared>,
    http: TcpListener,
    tcp: Option<TcpListener>,
    routes: Router,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("http", &self.http.local_addr().ok())
            .field("tcp", &self.tcp.as_ref().and_then(|t| t.local_addr().ok()))
            .finish_non_exhaustive()
    }
}

/// The WebSocket subprotocols, in the order the server prefers them.
const SUBPROTOCOLS: [(&str, Version); 3] = [
    ("v12.stomp", Version::V1_2),
    ("v11.stomp", Version::V1_1),
    ("v10.stomp", Version::V1_0),
];

/// Binds with a listen queue long enough for a burst of connections (the
/// default 128 drops SYNs when hundreds of clients reconnect at once).
fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Builds a [`Server`]: configuration, application and broker.
pub struct ServerBuilder<S = ()> {
    config: ServerConfig,
    app: App<S>,
    broker: Option<Arc<dyn Broker>>,
    routes: Router,
}

impl<S> std::fmt::Debug for ServerBuilder<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerBuilder")
            .field("config", &self.config)
            .field("app", &self.app)
            .finish_non_exhaustive()
    }
}

impl<S: Clone + Send + Sync + 'static> ServerBuilder<S> {
    /// Sets the application (handlers and hooks).
    #[must_use]
    pub fn app<T: Clone + Send + Sync + 'static>(self, app: App<T>) -> ServerBuilder<T> {
        ServerBuilder {
            config: self.config,
            app,
            broker: self.broker,
            routes: self.routes,
        }
    }

    /// Serves `routes` (an axum router: pages, REST endpoints) on the same
    /// HTTP listener as the WebSocket endpoint.
    #[must_use]
    pub fn routes(mut self, routes: Router) -> ServerBuilder<S> {
        self.routes = self.routes.merge(routes);
        self
    }

    /// Uses `broker` instead of the embedded broker.
    #[must_use]
    pub fn broker(mut self, broker: Arc<dyn Broker>) -> ServerBuilder<S> {
        self.broker = Some(broker);
        self
    }

    /// Binds the configured addresses.
    ///
    /// # Errors
    ///
    /// When an address cannot be bound.
    pub async fn bind(self) -> io::Result<Server> {
        let config = self.config;
        let broker: Arc<dyn Broker> = match (self.broker, &config.relay) {
            (Some(broker), _) => broker,
            (None, Some(relay)) => Arc::new(RelayBroker::start(relay.clone())),
            (None, None) => Arc::new(EmbeddedBroker::new(config.embedded.clone())),
        };
        let http = listen(config.http_addr)?;
        let tcp = match config.tcp_addr {
            Some(addr) => Some(listen(addr)?),
            None => None,
        };
        let backlog_bytes = config.backlog_bytes;
        let (shutdown, _) = watch::channel(false);
        let messaging = Messaging::new(Arc::clone(&broker), &config.user_prefix);
        Ok(Server {
            shared: Arc::new(ServerShared {
                connections: Arc::new(Semaphore::new(config.max_connections)),
                config: Arc::new(config),
                broker,
                app: self.app.into_runtime(),
                messaging,
                shutdown,
                slow_consumers: AtomicU64::new(0),
                backlog: Arc::new(Backlog::new(backlog_bytes)),
            }),
            http,
            tcp,
            routes: self.routes,
        })
    }
}

impl Server {
    /// A builder with `config`, no application handlers and the embedded broker.
    pub fn builder(config: ServerConfig) -> ServerBuilder<()> {
        ServerBuilder {
            config,
            app: App::new(),
            broker: None,
            routes: Router::new(),
        }
    }

    /// Binds the configured addresses with the embedded broker and no
    /// application handlers.
    ///
    /// # Errors
    ///
    /// When an address cannot be bound.
    pub async fn bind(config: ServerConfig) -> io::Result<Server> {
        Server::builder(config).bind().await
    }

    /// The handle to publish to destinations and users from anywhere.
    pub fn messaging(&self) -> Messaging {
        self.shared.messaging.clone()
    }

    /// The address the HTTP/WebSocket listener is bound to.
    ///
    /// # Errors
    ///
    /// As [`TcpListener::local_addr`].
    pub fn http_addr(&self) -> io::Result<SocketAddr> {
        self.http.local_addr()
    }

    /// The address of the plain TCP listener, when enabled.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp.as_ref().and_then(|t| t.local_addr().ok())
    }

    /// Runs until `signal` resolves, then shuts down gracefully: stops
    /// accepting, closes every session (WebSocket close code 1001) after
    /// flushing its outbox, and returns once all connections are gone or
    /// the shutdown timeout passed.
    ///
    /// # Errors
    ///
    /// When the HTTP server fails.
    pub async fn run_until(
        self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> io::Result<()> {
        let shared = self.shared;
        let mut stop = shared.shutdown.subscribe();
        let mut router = Router::new().route(&shared.config.ws_path, get(ws_upgrade));
        if shared.config.api_token.is_some() {
            router = router.route(
                "/api/publish",
                axum::routing::post(crate::http_api::publish),
            );
        }
        let router = router.with_state(Arc::clone(&shared)).merge(self.routes);
        let http_stop = {
            let mut stop = stop.clone();
            async move {
                let _ = stop.wait_for(|s| *s).await;
            }
        };
        let http = tokio::spawn(
            axum::serve(
                // Frames are written as soon as they are ready; Nagle's
                // algorithm would hold small ones back for up to ~40 ms.
                self.http.tap_io(|tcp| {
                    let _ = tcp.set_nodelay(true);
                }),
                router.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .with_graceful_shutdown(http_stop)
            .into_future(),
        );
        let tcp: Option<JoinHandle<()>> = self
            .tcp
            .map(|listener| tokio::spawn(accept_tcp(listener, Arc::clone(&shared))));
        tokio::select! {
            () = signal => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        tracing::info!("shutting down");
        shared.shutdown.send_replace(true);
        let all = u32::try_from(shared.config.max_connections).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(
            shared.config.shutdown_timeout + Duration::from_secs(1),
            shared.connections.acquire_many(all),
        )
        .await;
        if drained.is_err() {
            tracing::warn!("shutdown timeout passed with connections still open");
        }
        if let Some(tcp) = tcp {
            tcp.abort();
        }
        match http.await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(e)),
        }
    }

    /// Starts the server on the current runtime and returns a handle to
    /// stop it.
    pub fn spawn(self) -> ServerHandle {
        let shared = Arc::clone(&self.shared);
        let http_addr = self.http.local_addr().ok();
        let tcp_addr = self.tcp_addr();
        let task = tokio::spawn(self.run_until(std::future::pending()));
        ServerHandle {
            shared,
            http_addr,
            tcp_addr,
            task,
        }
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        stats(&self.shared)
    }

    /// Whether the message broker can be reached, as a value to watch
    /// (always `true` for the embedded broker).
    pub fn broker_availability(&self) -> watch::Receiver<bool> {
        self.shared.broker.availability()
    }
}

fn stats(shared: &ServerShared) -> Stats {
    Stats {
        connections: shared.config.max_connections - shared.connections.available_permits(),
        slow_consumers: shared.slow_consumers.load(Ordering::Relaxed),
    }
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    shared: Arc<ServerShared>,
    http_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    task: JoinHandle<io::Result<()>>,
}

impl std::fmt::Debug for ServerShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerShared").finish_non_exhaustive()
    }
}

impl ServerHandle {
    /// Whether the message broker can be reached, as a value to watch
    /// (always `true` for the embedded broker).
    pub fn broker_availability(&self) -> watch::Receiver<bool> {
        self.shared.broker.availability()
    }

    /// The handle to publish to destinations and users from anywhere.
    pub fn messaging(&self) -> Messaging {
        self.shared.messaging.clone()
    }

    /// The HTTP/WebSocket address.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The plain TCP address, when enabled.
    pub fn tcp_addr(&self) -> Option<SocketAddr> {
        self.tcp_addr
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        stats(&self.shared)
    }

    /// Shuts down gracefully and waits for it.
    ///
    /// # Errors
    ///
    /// When the server task failed.
    pub async fn shutdown(self) -> io::Result<()> {
        self.shared.shutdown.send_replace(true);
        match self.task.await {
            Ok(result) => result,
            Err(e) => Err(io::Error::other(e)),
        }
    }
}

async fn accept_tcp(listener: TcpListener, shared: Arc<ServerShared>) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Usually out of file descriptors: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let Some(permit) = shared.try_admit() else {
            tracing::warn!(%peer, "connection refused: connection limit reached");
            tokio::spawn(refuse_tcp(stream));
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            connection::run(Transport::Tcp(stream), shared, None, peer.to_string()).await;
            drop(permit);
        });
    }
}

async fn refuse_tcp(mut stream: tokio::net::TcpStream) {
    use tokio::io::AsyncWriteExt;
    let frame = b"ERROR\nmessage:server at its connection limit; try again later\n\n\0";
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(frame)).await;
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn bad_request(message: &'static str) -> Response {
    (StatusCode::BAD_REQUEST, message).into_response()
}

/// Our own WebSocket upgrade, so that the subprotocol choice and the
/// connection limit are settled before the 101 is sent.
async fn ws_upgrade(
    State(shared): State<Arc<ServerShared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    if !header_has_token(headers, header::UPGRADE, "websocket")
        || !header_has_token(headers, header::CONNECTION, "upgrade")
    {
        return bad_request(
            "this endpoint speaks STOMP over WebSocket; send a WebSocket upgrade request\n",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut response = bad_request("unsupported WebSocket version; use 13\n");
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return bad_request("missing Sec-WebSocket-Key header\n");
    };
    let accept = {
        let mut sha = sha1_smol::Sha1::new();
        sha.update(key.as_bytes());
        sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
    };
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    let chosen = SUBPROTOCOLS
        .iter()
        .find(|(name, _)| offered.iter().any(|o| o.eq_ignore_ascii_case(name)));
    let Some(permit) = shared.try_admit() else {
        tracing::warn!(%peer, "connection refused: connection limit reached");
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            "server at its connection limit\n",
        )
            .into_response();
    };
    let on_upgrade = hyper::upgrade::on(&mut request);
    let pinned = chosen.map(|(_, version)| *version);
    // Larger than the STOMP frame limit, so that an oversized frame usually
    // reaches our decoder and gets a STOMP ERROR; a WebSocket message past
    // this bound is refused by the WebSocket layer itself (close code 1009),
    // since it cannot be read to the end without buffering it whole.
    let ws_limits = tokio_websockets::Limits::default().max_payload_len(Some(
        shared.config.frame_limits.max_frame_bytes.saturating_mul(4),
    ));
    tokio::spawn(async move {
        match on_upgrade.await {
            Ok(upgraded) => {
                let ws = tokio_websockets::ServerBuilder::new()
                    .limits(ws_limits)
                    .config(tokio_websockets::Config::default().flush_threshold(64 * 1024))
                    .serve(TokioIo::new(upgraded));
                connection::run(
                    Transport::WebSocket(Box::new(ws)),
                    shared,
                    pinned,
                    peer.to_string(),
                )
                .await;
            }
            Err(e) => tracing::debug!(%peer, error = %e, "WebSocket upgrade failed"),
        }
        drop(permit);
    });
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    if let Some((name, _)) = chosen {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(name),
        );
    }
    response
}
