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
use crate::listener::{accept_tcp, listen, serve_http};
use crate::origin::OriginPolicy;
use crate::outbox::Backlog;
use crate::shared::ServerShared;
use crate::tls::{ServerTls, TlsReloader};
use crate::upgrade::ws_upgrade;
use axum::Router;
use axum::routing::get;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};
use tokio::task::JoinHandle;

/// Counters an operator may want, read with [`Server::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// Open client connections: sessions, and HTTP connections not (yet)
    /// upgraded, as counted against `max_connections`.
    pub connections: usize,
    /// Connected STOMP sessions (past CONNECT).
    pub sessions: usize,
    /// Subscriptions those sessions hold.
    pub subscriptions: usize,
    /// SEND frames received from clients since start.
    pub messages_in: u64,
    /// Messages the server published itself since start: application
    /// handlers' replies, `Messaging`, the HTTP publish API.
    pub messages_published_by_server: u64,
    /// MESSAGE frames written to clients since start.
    pub messages_out: u64,
    /// Bytes read from clients (STOMP bytes, WebSocket payloads) since start.
    pub bytes_in: u64,
    /// Bytes of frames written to clients since start.
    pub bytes_out: u64,
    /// Clients disconnected as slow consumers since start.
    pub slow_consumers: u64,
    /// Memory of queue messages, waiting or unacknowledged, as counted
    /// against `max_total_queue_bytes` (embedded broker).
    pub queue_bytes: usize,
    /// Memory of unacknowledged topic messages, as counted against
    /// `max_total_topic_unacked_bytes` (embedded broker).
    pub topic_unacked_bytes: usize,
    /// Memory of frames held by open transactions, as counted against
    /// `max_total_transaction_bytes`.
    pub transaction_bytes: usize,
    /// Times a client's frames were held back because what it published
    /// left a subscriber's outbox (or, with the relay, its own link to the
    /// broker) past its pause mark (an eighth of `outbox_bytes`), since start.
    pub publisher_pauses: u64,
    /// Time those pauses lasted, in all.
    pub publisher_paused: Duration,
    /// Bytes of encoded frames not yet written, across every connection;
    /// a frame shared by many subscribers counts once.
    pub backlog_bytes: usize,
    /// Times a session's SUBSCRIBE or UNSUBSCRIBE was held back for coming
    /// faster than `subscriptions_per_sec`, since start.
    pub subscription_holds: u64,
}

/// A bound, not yet running, stompbox server.
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
    /// When an address cannot be bound, or a setting cannot be used (a TLS
    /// certificate or key, an authentication key, an origin): then the
    /// error is of kind `InvalidInput` and says which.
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
        let http = listen(config.http_addr)?;
        let tcp = match config.tcp_addr {
            Some(addr) => Some(listen(addr)?),
            None => None,
        };
        let ops = match config.metrics.addr {
            Some(addr) => Some(listen(addr)?),
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
        if !shared.api_tokens.is_empty() {
            router = router.route(
                "/api/publish",
                axum::routing::post(crate::http_api::publish),
            );
        }
        if shared.config.metrics.enabled {
            router = router.route("/metrics", get(crate::ops::metrics::serve));
        }
        if let Some(admin) = crate::ops::admin::routes(&shared, stats) {
            router = router.merge(admin);
        }
        let router = router.with_state(Arc::clone(&shared)).merge(self.routes);
        let http = tokio::spawn(serve_http(
            self.http,
            Arc::clone(&shared),
            router,
            stop.clone(),
        ));
        // The operators' listener answers until the drain is over, so a
        // scrape or a probe still sees the shutdown as it happens.
        let (ops_stop, ops_stopped) = watch::channel(false);
        let ops = self.ops.map(|listener| {
            let mut router = Router::new();
            if shared.config.metrics.enabled {
                router = router.route("/metrics", get(crate::ops::metrics::serve));
            }
            tokio::spawn(serve_http(
                listener,
                Arc::clone(&shared),
                router.with_state(Arc::clone(&shared)),
                ops_stopped,
            ))
        });
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
        let result = http.await.map_err(io::Error::other);
        ops_stop.send_replace(true);
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
        stats(&self.shared)
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

fn stats(shared: &ServerShared) -> Stats {
    let memory = shared.broker.memory();
    let totals = shared.telemetry.sessions.totals();
    let mut sessions = 0;
    let mut subscriptions = 0;
    shared.telemetry.sessions.for_each(|entry| {
        if entry.connected().is_some() {
            sessions += 1;
            subscriptions += entry.subscriptions();
        }
    });
    Stats {
        sessions,
        subscriptions,
        messages_in: totals.messages_in,
        messages_published_by_server: shared.messaging.published(),
        messages_out: totals.messages_out,
        bytes_in: totals.bytes_in,
        bytes_out: totals.bytes_out,
        connections: shared.config.max_connections - shared.connections.available_permits(),
        slow_consumers: shared.telemetry.slow_consumers_total(),
        queue_bytes: memory.queue_bytes,
        topic_unacked_bytes: memory.topic_unacked_bytes,
        transaction_bytes: shared.transaction_bytes.used(),
        publisher_pauses: shared.publisher_pauses.count(),
        publisher_paused: shared.publisher_pauses.total(),
        backlog_bytes: shared.backlog.bytes(),
        subscription_holds: shared.subscription_holds.load(Ordering::Relaxed),
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
        stats(&self.shared)
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
