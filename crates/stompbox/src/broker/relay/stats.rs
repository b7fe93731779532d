//! The relay's figures for an operator: its connections to the broker and
//! the subscriptions it holds there, counted where links open, close and
//! subscribe.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counts shared by every link and session of one relay.
#[derive(Debug, Default)]
pub(crate) struct RelayCounters {
    /// TCP connections to the broker open now.
    pub(crate) broker_connections: AtomicUsize,
    /// Links connected again after being lost.
    pub(crate) reconnects: AtomicU64,
    /// Connect attempts that failed.
    pub(crate) connection_failures: AtomicU64,
    /// Client subscriptions' sides (a user destination has two): every
    /// one is an upstream subscription in per-session mode.
    pub(crate) subscriptions: AtomicUsize,
    /// Local subscribers of shared topic subscriptions (shared mode).
    pub(crate) topic_subscribers: AtomicUsize,
}

/// One open TCP connection to the broker, counted until dropped (with the
/// link's task, or when its CONNECT fails).
#[derive(Debug)]
pub(crate) struct OpenConnection(Arc<RelayCounters>);

impl OpenConnection {
    pub(crate) fn new(counters: &Arc<RelayCounters>) -> OpenConnection {
        counters.broker_connections.fetch_add(1, Ordering::Relaxed);
        OpenConnection(Arc::clone(counters))
    }
}

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.broker_connections.fetch_sub(1, Ordering::Relaxed);
    }
}

/// One session's subscriptions in [`RelayCounters::subscriptions`]; what
/// it still counts goes when the session does, however it ends.
#[derive(Debug)]
pub(crate) struct SessionSubscriptions {
    counters: Arc<RelayCounters>,
    held: usize,
}

impl SessionSubscriptions {
    pub(crate) fn new(counters: &Arc<RelayCounters>) -> SessionSubscriptions {
        SessionSubscriptions {
            counters: Arc::clone(counters),
            held: 0,
        }
    }

    pub(crate) fn add(&mut self, n: usize) {
        self.held += n;
        self.counters.subscriptions.fetch_add(n, Ordering::Relaxed);
    }

    pub(crate) fn remove(&mut self, n: usize) {
        let n = n.min(self.held);
        self.held -= n;
        self.counters.subscriptions.fetch_sub(n, Ordering::Relaxed);
    }
}

impl Drop for SessionSubscriptions {
    fn drop(&mut self) {
        self.remove(self.held);
    }
}
