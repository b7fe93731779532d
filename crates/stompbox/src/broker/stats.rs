//! What a broker holds, as an operator sees it (metrics, the admin page):
//! headline counts, the busiest destinations, and the relay's links.

use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;

/// What a broker holds now, for an operator. Cheap to read: the embedded
/// broker keeps these as counters, changed where subscriptions, queues and
/// messages come and go, so nothing is walked to answer.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct BrokerStats {
    /// Destinations the broker holds now: topics with at least one
    /// subscriber, wildcard patterns subscribed, queues (which exist while
    /// they hold messages or consumers) and user destinations subscribed.
    /// The shared relay counts its shared topic subscriptions only; the
    /// broker behind it holds the queues.
    pub destinations: usize,
    /// Queues held now (embedded broker; 0 for a relay).
    pub queues: usize,
    /// Broker subscriptions: topic subscribers, pattern subscribers and
    /// queue consumers. A client's SUBSCRIBE to a user destination is two
    /// (the user's and the session's destination).
    pub subscriptions: usize,
    /// Messages waiting in queues for a consumer, all queues together.
    pub queue_messages_ready: usize,
    /// Queue messages delivered and not yet acknowledged.
    pub queue_messages_unacked: usize,
    /// Topic deliveries in the client ack modes not yet acknowledged (one
    /// per subscriber that holds one).
    pub topic_messages_unacked: usize,
    /// Queue messages discarded since start by a NACK with
    /// `requeue:false` (embedded broker: it has no dead-letter queue, so
    /// they are dropped, as RabbitMQ does without a dead-letter exchange).
    pub queue_messages_discarded: u64,
    /// The relay's links to its broker; `None` for the embedded broker.
    pub relay: Option<RelayStats>,
}

/// The relay's side of [`BrokerStats`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RelayStats {
    /// `"shared"` or `"per-session"` ([`RelayMode`](super::relay::RelayMode)).
    pub mode: &'static str,
    /// The broker can be reached: the system link is up, and in shared
    /// mode at least one pool link.
    pub available: bool,
    /// TCP connections to the broker open now: the system link, pool links
    /// and acknowledging links (shared mode) or one per session
    /// (per-session mode), counted from connect until closed.
    pub broker_connections: usize,
    /// Pool links connected now (shared mode; 0 in per-session mode).
    pub links_up: usize,
    /// Pool links configured (`relay.connections`; 0 in per-session mode).
    pub links_total: usize,
    /// Links (system and pool links) connected again after being lost,
    /// since start.
    pub reconnects: u64,
    /// Attempts to connect to the broker that failed (no TCP connection,
    /// TLS, or CONNECT refused or unanswered), on any link, since start.
    pub connection_failures: u64,
    /// Subscriptions the relay holds at the broker now. Shared mode: one
    /// per shared topic and one per queue or client-ack subscription, on
    /// connected links; per-session mode: every session's.
    pub upstream_subscriptions: usize,
    /// Local subscribers fed by the shared topic subscriptions (shared
    /// mode; 0 in per-session mode).
    pub relayed_topic_subscribers: usize,
}

/// What kind of destination a [`DestinationStats`] is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum DestinationKind {
    /// Publish/subscribe, an exact name.
    Topic,
    /// A wildcard topic subscription (`*`, `#`).
    Pattern,
    /// Point-to-point.
    Queue,
    /// A destination in the user-destination namespace (one user's or one
    /// session's `/user/…` destination).
    User,
}

impl DestinationKind {
    /// A lower-case name, for labels and JSON.
    pub fn as_str(self) -> &'static str {
        match self {
            DestinationKind::Topic => "topic",
            DestinationKind::Pattern => "pattern",
            DestinationKind::Queue => "queue",
            DestinationKind::User => "user",
        }
    }
}

/// One destination a broker holds, for an operator.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct DestinationStats {
    /// As clients name it (`/topic/chat.lobby`, `/queue/jobs`); a wildcard
    /// pattern as subscribed; a user destination by its broker name (the
    /// name [`Broker::purge`](super::Broker::purge) takes).
    pub name: String,
    /// What kind it is.
    pub kind: DestinationKind,
    /// Topic subscribers, or queue consumers.
    pub subscribers: usize,
    /// Messages waiting in a queue (0 for topics).
    pub ready: usize,
    /// Memory of those waiting messages, as counted against the queue
    /// limits (`max_queue_bytes`).
    pub ready_bytes: usize,
    /// Messages delivered and not yet acknowledged.
    pub unacked: usize,
}

impl DestinationStats {
    /// A destination with nothing waiting or unacknowledged.
    pub fn new(name: impl Into<String>, kind: DestinationKind, subscribers: usize) -> Self {
        DestinationStats {
            name: name.into(),
            kind,
            subscribers,
            ready: 0,
            ready_bytes: 0,
            unacked: 0,
        }
    }
}

/// How a destination ranks: deepest (waiting + unacknowledged) first, then
/// the most subscribers, then by name.
fn rank(a: &DestinationStats, b: &DestinationStats) -> Ordering {
    let depth = |d: &DestinationStats| d.ready.saturating_add(d.unacked);
    depth(a)
        .cmp(&depth(b))
        .then(a.subscribers.cmp(&b.subscribers))
        .then_with(|| b.name.cmp(&a.name))
}

/// A destination in the heap, ordered by [`rank`] (greater is busier).
#[derive(Debug)]
struct Ranked(DestinationStats);

impl PartialEq for Ranked {
    fn eq(&self, other: &Ranked) -> bool {
        rank(&self.0, &other.0) == Ordering::Equal
    }
}

impl Eq for Ranked {}

impl PartialOrd for Ranked {
    fn partial_cmp(&self, other: &Ranked) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Ranked {
    fn cmp(&self, other: &Ranked) -> Ordering {
        rank(&self.0, &other.0)
    }
}

/// The busiest `limit` destinations of many offered, in memory and time
/// bounded by `limit` (a heap whose least busy entry is dropped when a
/// busier one comes), so a capped listing of 100,000 destinations costs
/// no sort of them all.
#[derive(Debug)]
pub(crate) struct Busiest {
    limit: usize,
    heap: BinaryHeap<Reverse<Ranked>>,
}

impl Busiest {
    pub(crate) fn new(limit: usize) -> Busiest {
        Busiest {
            limit,
            // Reserved up to what a listing can hold, not what a caller asks.
            heap: BinaryHeap::with_capacity(limit.min(1024)),
        }
    }

    /// Whether a destination with these figures would enter now, so that a
    /// caller builds its name only when it does.
    pub(crate) fn admits(&self, depth: usize, subscribers: usize) -> bool {
        if self.heap.len() < self.limit {
            return true;
        }
        // Ties on both are decided by name, which `offer` compares.
        self.heap.peek().is_some_and(|Reverse(Ranked(least))| {
            (depth, subscribers) >= (least.ready.saturating_add(least.unacked), least.subscribers)
        })
    }

    pub(crate) fn offer(&mut self, destination: DestinationStats) {
        if self.limit == 0 {
            return;
        }
        if self.heap.len() < self.limit {
            self.heap.push(Reverse(Ranked(destination)));
            return;
        }
        let busier = self
            .heap
            .peek()
            .is_some_and(|Reverse(Ranked(least))| rank(&destination, least) == Ordering::Greater);
        if busier {
            self.heap.pop();
            self.heap.push(Reverse(Ranked(destination)));
        }
    }

    /// The destinations kept, busiest first.
    pub(crate) fn into_sorted(self) -> Vec<DestinationStats> {
        // Ascending order of `Reverse` is descending busyness.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|Reverse(Ranked(d))| d)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn queue(name: &str, ready: usize, unacked: usize, subscribers: usize) -> DestinationStats {
        DestinationStats {
            ready,
            unacked,
            ..DestinationStats::new(name, DestinationKind::Queue, subscribers)
        }
    }

    #[test]
    fn busiest_keeps_the_deepest_then_the_most_subscribed_then_by_name() {
        let mut busiest = Busiest::new(3);
        for d in [
            queue("/queue/a", 0, 0, 1),
            queue("/queue/deep", 10, 5, 0),
            queue("/queue/b", 0, 0, 9),
            queue("/queue/c", 3, 0, 0),
            queue("/queue/d", 3, 0, 0),
            queue("/queue/e", 0, 0, 0),
        ] {
            if busiest.admits(d.ready + d.unacked, d.subscribers) {
                busiest.offer(d);
            }
        }
        let names: Vec<_> = busiest.into_sorted().into_iter().map(|d| d.name).collect();
        assert_eq!(names, ["/queue/deep", "/queue/c", "/queue/d"]);
    }

    #[test]
    fn a_zero_limit_keeps_nothing() {
        let mut busiest = Busiest::new(0);
        busiest.offer(queue("/queue/a", 1, 0, 0));
        assert!(busiest.into_sorted().is_empty());
    }
}
