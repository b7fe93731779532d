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
use std::sync::atomic::AtomicU64;
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
}

impl ServerShared {
    pub(crate) fn next_session_id(&self) -> String {
        crate::app::user::new_session_id()
    }

    pub(crate) fn try_admit(&self) -> Option<OwnedSemaphorePermit> {
        Arc::clone(&self.connections).try_acquire_owned().ok()
    }
}

impl std::fmt::Debug for ServerShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServerShared").finish_non_exhaustive()
    }
}
