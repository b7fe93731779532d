//! The state every connection of one server shares. Held apart from the
//! server that builds it, so that connections, sessions and the router can
//! reach it without importing the listeners that drive them.

use crate::admission::{AddressLimits, UserSessions};
use crate::api_tokens::ScopedToken;
use crate::app::{AppRuntime, Messaging};
use crate::auth::Authenticator;
use crate::broker::Broker;
use crate::budget::Budget;
use crate::config::ServerConfig;
use crate::origin::OriginPolicy;
use crate::outbox::{Backlog, PublisherPauses};
use crate::telemetry::Telemetry;
use crate::tls::ServerTls;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

/// State shared by every connection of one server.
pub(crate) struct ServerShared {
    pub(crate) config: Arc<ServerConfig>,
    pub(crate) broker: Arc<dyn Broker>,
    pub(crate) app: AppRuntime,
    pub(crate) messaging: Messaging,
    pub(crate) shutdown: watch::Sender<bool>,
    /// Open connections and the server's counters, for operators.
    pub(crate) telemetry: Arc<Telemetry>,
    pub(crate) publisher_pauses: Arc<PublisherPauses>,
    /// SUBSCRIBE/UNSUBSCRIBE frames held for their session's rate.
    pub(crate) subscription_holds: AtomicU64,
    pub(crate) backlog: Arc<Backlog>,
    /// Memory of the frames buffered by every open transaction.
    pub(crate) transaction_bytes: Arc<Budget>,
    /// `None`: no authentication, every session is anonymous.
    pub(crate) authenticator: Option<Arc<dyn Authenticator>>,
    pub(crate) origins: OriginPolicy,
    pub(crate) addresses: Arc<AddressLimits>,
    pub(crate) user_sessions: Arc<UserSessions>,
    pub(crate) tls: Option<ServerTls>,
    pub(crate) api_tokens: Vec<ScopedToken>,
    /// Places for publish API requests whose bodies are being read.
    pub(crate) api_requests: Semaphore,
    /// Places for connections: taken through `try_admit`; the server reads
    /// them for its stats and waits for them all at shutdown.
    pub(crate) connections: Arc<Semaphore>,
    /// Places taken, counted by [`Admitted`].
    pub(crate) open_connections: Arc<AtomicUsize>,
}

impl ServerShared {
    pub(crate) fn next_session_id(&self) -> String {
        crate::app::user::new_session_id()
    }

    pub(crate) fn try_admit(&self) -> Option<Admitted> {
        let permit = Arc::clone(&self.connections).try_acquire_owned().ok()?;
        self.open_connections.fetch_add(1, Ordering::Relaxed);
        Some(Admitted {
            _permit: permit,
            open: Arc::clone(&self.open_connections),
        })
    }

    /// Connections holding a place now. Not read off the semaphore: the
    /// drain at shutdown takes its free places while it waits.
    pub(crate) fn open_connections(&self) -> usize {
        self.open_connections.load(Ordering::Relaxed)
    }
}

/// A connection's place in the server's budget, counted while it lasts.
#[derive(Debug)]
pub(crate) struct Admitted {
    _permit: OwnedSemaphorePermit,
    open: Arc<AtomicUsize>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl std::fmt::Debug for ServerShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerShared").finish_non_exhaustive()
    }
}

/// Counters an operator may want, read with [`Server::stats`](crate::Server::stats).
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

impl ServerShared {
    /// The figures of [`Stats`] now.
    pub(crate) fn stats(&self) -> Stats {
        let shared = self;
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
            connections: shared.open_connections(),
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
}
