//! Listening: the HTTP server with the WebSocket endpoint, the optional
//! plain TCP listener, the connection limit and graceful shutdown.

use crate::admission::{AddressLimits, UserSessions};
use crate::app::{App, Messaging};
use crate::auth::Authenticator;
use crate::broker::embedded::EmbeddedBroker;
use crate::broker::relay::RelayBroker;
use crate::broker::{Broker, BrokerError, BrokerStats, DestinationStats};
use crate::budget::Budget;
use crate::config::ServerConfig;
use crate::listener::{HttpListener, ListenerName, accept_tcp, listen, serve_http};
use crate::ops;
use crate::origin::OriginPolicy;
use crate::outbox::Backlog;
use crate::shared::{ServerShared, Stats};
use crate::tls::{ServerTls, TlsReloader};
use crate::upgrade::ws_upgrade;
use axum::Router;
use axum::routing::get;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

const HTTP_LISTENER: ListenerName = ListenerName {
    what: "HTTP",
    setting: "http_addr",
};
const TCP_LISTENER: ListenerName = ListenerName {
    what: "TCP",
    setting: "tcp_addr",
};
const METRICS_LISTENER: ListenerName = ListenerName {
    what: "metrics",
    setting: "metrics.addr",
};

/// A bound, not yet running, stompbox server.
///
/// [`Server::bind`] opens the listeners (so a taken port fails here, naming
/// the listener); [`Server::run_until`] or [`Server::spawn`] then serves.
///
/// ```
/// use stompbox::{Server, ServerConfig};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let mut config = ServerConfig::default();
/// config.http_addr = "127.0.0.1:0".parse()?; // any free port
/// let server = Server::bind(config).await?;
/// println!("STOMP over WebSocket at ws://{}/ws", server.http_addr()?);
/// let handle = server.spawn();
/// // … clients connect …
/// handle.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct Server {
    shared: Arc<ServerShared>,
    http: TcpListener,
    tcp: Option<TcpListener>,
    /// `metrics.addr`: `/metrics` and the health endpoints, for operators.
    ops: Option<TcpListener>,
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

/// Builds a [`Server`]: configuration, application and broker.
///
/// ```no_run
/// use stompbox::app::App;
/// use stompbox::{HttpRouter, Server, ServerConfig};
///
/// // SEND /app/shout with a text body: the reply goes to /topic/shout.
/// async fn shout(text: String) -> String {
///     text.to_uppercase()
/// }
///
/// # async fn run() -> std::io::Result<()> {
/// let page = HttpRouter::new().route("/", axum::routing::get(|| async { "hello" }));
/// let server = Server::builder(ServerConfig::default()) // 127.0.0.1:8080
///     .app(App::new().message("/shout", shout))
///     .routes(page) // served next to the WebSocket endpoint
///     .bind()
///     .await?;
/// server
///     .run_until(async {
///         let _ = tokio::signal::ctrl_c().await;
///     })
///     .await
/// # }
/// ```
pub struct ServerBuilder<S = ()> {
    config: ServerConfig,
    app: App<S>,
    broker: Option<Arc<dyn Broker>>,
    authenticator: Option<Arc<dyn Authenticator>>,
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
            authenticator: self.authenticator,
            routes: self.routes,
        }
    }

    /// Serves `routes` (an axum router: pages, REST endpoints) on the same
    /// HTTP listener as the WebSocket endpoint. The server's own paths
    /// (the WebSocket path, `/health/live`, `/health/ready`,
    /// `/api/publish` when enabled) are taken.
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

    /// Authenticates CONNECTs with `authenticator` instead of the built-in
    /// methods of [`ServerConfig::auth`](crate::ServerConfig). Combine
    /// several with [`AuthChain`](crate::auth::AuthChain).
    #[must_use]
    pub fn authenticator(mut self, authenticator: impl Authenticator) -> ServerBuilder<S> {
        self.authenticator = Some(Arc::new(authenticator));
        self
    }

    /// Binds the configured addresses.
    ///
    /// # Errors
    ///
    /// When an address cannot be bound (the error keeps the OS error's kind,
    /// such as `AddrInUse`, and names the listener, its address and the
    /// setting, e.g. "HTTP listener 127.0.0.1:8080: address already in
    /// use; … `http_addr`"), or a setting cannot be used (a TLS certificate
    /// or key, an authentication key, an origin): then the error is of kind
    /// `InvalidInput` and says which.
    pub async fn bind(self) -> io::Result<Server> {
        let mut config = self.config;
        // Past the descriptors there are, accept fails and clients hang;
        // within them, a connection past the limit is refused with an answer.
        config.clamp_max_connections();
        let invalid = |message: String| io::Error::new(io::ErrorKind::InvalidInput, message);
        let authenticator: Option<Arc<dyn Authenticator>> = match self.authenticator {
            Some(custom) => Some(custom),
            None if config.auth.has_methods() => {
                Some(Arc::new(config.auth.chain().map_err(invalid)?))
            }
            None => None,
        };
        if config.max_concurrent_api_requests == 0 {
            return Err(invalid(
                "max_concurrent_api_requests must be at least 1".into(),
            ));
        }
        crate::ops::admin::check_config(&config, authenticator.is_some()).map_err(invalid)?;
        if config.http_idle_timeout.is_zero() {
            return Err(invalid("http_idle_timeout must be more than zero".into()));
        }
        let origins = OriginPolicy::new(&config.allowed_origins)
            .map_err(|e| invalid(format!("allowed_origins: {e}")))?;
        let api_tokens = crate::api_tokens::tokens(&config).map_err(invalid)?;
        let tls = match &config.tls {
            Some(tls) => Some(ServerTls::new(tls).map_err(|e| invalid(format!("TLS: {e}")))?),
            None => None,
        };
        let broker: Arc<dyn Broker> = match (self.broker, &config.relay) {
            (Some(broker), _) => broker,
            (None, Some(relay)) => Arc::new(RelayBroker::start(relay.clone())),
            (None, None) => Arc::new(EmbeddedBroker::new(config.embedded.clone())),
        };
        let http = listen(HTTP_LISTENER, config.http_addr)?;
        let tcp = match config.tcp_addr {
            Some(addr) => Some(listen(TCP_LISTENER, addr)?),
            None => None,
        };
        let ops = match config.metrics.addr {
            Some(addr) => Some(listen(METRICS_LISTENER, addr)?),
            None => None,
        };
        let backlog_bytes = config.backlog_bytes;
        let addresses = AddressLimits::new(
            config.max_connections_per_address,
            config.connects_per_address_per_sec,
            config.auth.failures_per_address_per_min,
        );
        let (shutdown, _) = watch::channel(false);
        let messaging = Messaging::new(Arc::clone(&broker), &config.user_prefix);
        let transaction_bytes = Arc::new(Budget::new(config.max_total_transaction_bytes));
        Ok(Server {
            shared: Arc::new(ServerShared {
                connections: Arc::new(Semaphore::new(config.max_connections)),
                open_connections: Arc::default(),
                api_requests: Semaphore::new(config.max_concurrent_api_requests),
                config: Arc::new(config),
                broker,
                app: self.app.into_runtime(),
                messaging,
                shutdown,
                telemetry: Arc::default(),
                publisher_pauses: Arc::default(),
                subscription_holds: AtomicU64::new(0),
                backlog: Arc::new(Backlog::new(backlog_bytes)),
                transaction_bytes,
                authenticator,
                origins,
                addresses,
                user_sessions: Arc::new(UserSessions::default()),
                tls,
                api_tokens,
            }),
            http,
            tcp,
            ops,
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
            authenticator: None,
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

    /// The address of the operators' listener (`metrics.addr`), when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.ops.as_ref().and_then(|t| t.local_addr().ok())
    }

    /// Runs until `signal` resolves, then shuts down gracefully: refuses
    /// new sessions, closes every session (WebSocket close code 1001) after
    /// flushing its outbox, and returns once all connections are gone or
    /// the shutdown timeout passed. Until then the HTTP listener still
    /// answers `GET /health/ready` (503, "shutting down") and
    /// `GET /health/live` (200), and nothing else (503).
    ///
    /// Every `stats_interval` (unless zero) it logs a line of its headline
    /// figures at target `stompbox::stats`.
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
        if !shared.api_tokens.is_empty() {
            router = router.route(
                "/api/publish",
                axum::routing::post(crate::http_api::publish),
            );
        }
        // The admin page and API, on the main listener only: it is where
        // operators' browsers come, and it is refused while draining.
        if let Some(admin) = ops::admin::routes(&shared) {
            router = router.merge(admin);
        }
        // The operators' endpoints, on the main listener (also while it
        // drains) and on the operators' own.
        let mut operators = ops::health::routes();
        if shared.config.metrics.enabled {
            operators = operators.route("/metrics", crate::ops::metrics::route());
        }
        let operators = operators.with_state(Arc::clone(&shared));
        let main = HttpListener::Main {
            serving: router
                .with_state(Arc::clone(&shared))
                .merge(operators.clone())
                .merge(self.routes),
            draining: ops::health::draining(operators.clone()),
        };
        // Closes the HTTP listeners once the drain is over; until then they
        // answer the operators' endpoints (readiness: 503).
        let (closed, closed_signal) = watch::channel(false);
        let http = tokio::spawn(serve_http(
            self.http,
            Arc::clone(&shared),
            main,
            stop.clone(),
            closed_signal.clone(),
        ));
        // The operators' listener answers until the drain is over, so a
        // scrape or a probe still sees the shutdown as it happens.
        let ops = self.ops.map(|listener| {
            tokio::spawn(serve_http(
                listener,
                Arc::clone(&shared),
                HttpListener::Operators(operators),
                stop.clone(),
                closed_signal,
            ))
        });
        let tcp: Option<JoinHandle<()>> = self
            .tcp
            .map(|listener| tokio::spawn(accept_tcp(listener, Arc::clone(&shared))));
        let stats_log = (!shared.config.stats_interval.is_zero()).then(|| {
            let source = Arc::clone(&shared);
            tokio::spawn(ops::stats_log::run(
                shared.config.stats_interval,
                move || (source.stats(), *source.broker.availability().borrow()),
                stop.clone(),
            ))
        });
        tokio::select! {
            () = signal => {}
            _ = stop.wait_for(|s| *s) => {}
        }
        tracing::info!("shutting down");
        shared.shutdown.send_replace(true);
        // Sessions registered from here on see the flag themselves.
        shared
            .telemetry
            .sessions
            .for_each(|entry| entry.outbox.shut_down());
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
        if let Some(stats_log) = stats_log {
            stats_log.abort();
        }
        closed.send_replace(true);
        let result = http.await.map_err(io::Error::other);
        if let Some(ops) = ops {
            let _ = ops.await;
        }
        result
    }

    /// Starts the server on the current runtime and returns a handle to
    /// stop it.
    pub fn spawn(self) -> ServerHandle {
        let shared = Arc::clone(&self.shared);
        let http_addr = self.http.local_addr().ok();
        let tcp_addr = self.tcp_addr();
        let metrics_addr = self.metrics_addr();
        let task = tokio::spawn(self.run_until(std::future::pending()));
        ServerHandle {
            shared,
            http_addr,
            tcp_addr,
            metrics_addr,
            task,
        }
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// Whether the message broker can be reached, as a value to watch
    /// (always `true` for the embedded broker).
    pub fn broker_availability(&self) -> watch::Receiver<bool> {
        self.shared.broker.availability()
    }

    /// What the message broker holds now (see [`Broker::stats`]).
    pub fn broker_stats(&self) -> BrokerStats {
        self.shared.broker.stats()
    }

    /// The broker's busiest `limit` destinations (see
    /// [`Broker::destinations`]).
    pub fn broker_destinations(&self, limit: usize) -> Vec<DestinationStats> {
        self.shared.broker.destinations(limit)
    }

    /// Removes the messages waiting in a queue (see [`Broker::purge`]);
    /// answers how many.
    ///
    /// # Errors
    ///
    /// The broker's refusal: not a queue, no such queue, or a broker that
    /// cannot purge (the relay).
    pub async fn purge_queue(&self, destination: &str) -> Result<usize, BrokerError> {
        self.shared.broker.purge(destination).await
    }

    /// Reloads the TLS certificate and key from their files (say on
    /// SIGHUP), when the server has TLS; sessions already open go on.
    pub fn tls_reloader(&self) -> Option<TlsReloader> {
        self.shared.tls.as_ref().map(|t| t.reloader.clone())
    }
}

/// A running server.
#[derive(Debug)]
pub struct ServerHandle {
    shared: Arc<ServerShared>,
    http_addr: Option<SocketAddr>,
    tcp_addr: Option<SocketAddr>,
    metrics_addr: Option<SocketAddr>,
    task: JoinHandle<io::Result<()>>,
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

    /// The address of the operators' listener (`metrics.addr`), when enabled.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics_addr
    }

    /// Current counters.
    pub fn stats(&self) -> Stats {
        self.shared.stats()
    }

    /// What the message broker holds now (see [`Broker::stats`]).
    pub fn broker_stats(&self) -> BrokerStats {
        self.shared.broker.stats()
    }

    /// The broker's busiest `limit` destinations (see
    /// [`Broker::destinations`]).
    pub fn broker_destinations(&self, limit: usize) -> Vec<DestinationStats> {
        self.shared.broker.destinations(limit)
    }

    /// Removes the messages waiting in a queue (see [`Broker::purge`]);
    /// answers how many.
    ///
    /// # Errors
    ///
    /// The broker's refusal: not a queue, no such queue, or a broker that
    /// cannot purge (the relay).
    pub async fn purge_queue(&self, destination: &str) -> Result<usize, BrokerError> {
        self.shared.broker.purge(destination).await
    }

    /// Reloads the TLS certificate and key from their files, when the
    /// server has TLS; sessions already open go on.
    pub fn tls_reloader(&self) -> Option<TlsReloader> {
        self.shared.tls.as_ref().map(|t| t.reloader.clone())
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
