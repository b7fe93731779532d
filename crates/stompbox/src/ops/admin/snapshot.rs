//! What the admin API shows, as JSON: the server's figures, its sessions
//! and its destinations, each listing capped, and the rates between two
//! snapshots.

use crate::broker::{BrokerStats, DestinationStats, RelayStats};
use crate::shared::{ServerShared, Stats};
use crate::telemetry::{SessionEntry, SessionRegistry};
use serde::Serialize;
use std::cmp::{Ordering, Reverse};
use std::collections::BinaryHeap;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

/// Sessions listed when the request names no `limit`.
pub(super) const DEFAULT_SESSIONS: usize = 200;
/// The most sessions one listing holds, whatever the request asks.
pub(super) const MAX_SESSIONS: usize = 2_000;
/// Destinations listed when the request names no `limit`.
pub(super) const DEFAULT_DESTINATIONS: usize = 200;
/// The most destinations one listing holds.
pub(super) const MAX_DESTINATIONS: usize = 2_000;

fn unix_ms(at: SystemTime) -> u64 {
    at.duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The server's headline figures.
#[derive(Debug, Serialize)]
pub(super) struct Overview {
    pub(super) started_at_ms: u64,
    pub(super) uptime_seconds: u64,
    pub(super) connections: usize,
    pub(super) sessions: usize,
    pub(super) subscriptions: usize,
    pub(super) messages_in: u64,
    pub(super) messages_published_by_server: u64,
    pub(super) messages_out: u64,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    pub(super) backlog_bytes: usize,
    pub(super) queue_bytes: usize,
    pub(super) topic_unacked_bytes: usize,
    pub(super) transaction_bytes: usize,
    pub(super) slow_consumers: u64,
    pub(super) publisher_pauses: u64,
    pub(super) subscription_holds: u64,
    pub(super) broker: BrokerView,
}

/// The broker's side of the overview.
#[derive(Debug, Serialize)]
pub(super) struct BrokerView {
    pub(super) available: bool,
    pub(super) destinations: usize,
    pub(super) queues: usize,
    pub(super) subscriptions: usize,
    pub(super) queue_messages_ready: usize,
    pub(super) queue_messages_unacked: usize,
    pub(super) topic_messages_unacked: usize,
    /// `null` for the embedded broker.
    pub(super) relay: Option<RelayView>,
}

#[derive(Debug, Serialize)]
pub(super) struct RelayView {
    pub(super) mode: &'static str,
    pub(super) available: bool,
    pub(super) broker_connections: usize,
    pub(super) links_up: usize,
    pub(super) links_total: usize,
    pub(super) reconnects: u64,
    pub(super) connection_failures: u64,
    pub(super) upstream_subscriptions: usize,
    pub(super) relayed_topic_subscribers: usize,
}

impl From<&RelayStats> for RelayView {
    fn from(r: &RelayStats) -> RelayView {
        RelayView {
            mode: r.mode,
            available: r.available,
            broker_connections: r.broker_connections,
            links_up: r.links_up,
            links_total: r.links_total,
            reconnects: r.reconnects,
            connection_failures: r.connection_failures,
            upstream_subscriptions: r.upstream_subscriptions,
            relayed_topic_subscribers: r.relayed_topic_subscribers,
        }
    }
}

pub(super) fn overview(shared: &ServerShared, stats: &Stats) -> Overview {
    let broker: BrokerStats = shared.broker.stats();
    let started = shared.telemetry.started;
    Overview {
        started_at_ms: unix_ms(started),
        uptime_seconds: SystemTime::now()
            .duration_since(started)
            .map_or(0, |d| d.as_secs()),
        connections: stats.connections,
        sessions: stats.sessions,
        subscriptions: stats.subscriptions,
        messages_in: stats.messages_in,
        messages_published_by_server: stats.messages_published_by_server,
        messages_out: stats.messages_out,
        bytes_in: stats.bytes_in,
        bytes_out: stats.bytes_out,
        backlog_bytes: stats.backlog_bytes,
        queue_bytes: stats.queue_bytes,
        topic_unacked_bytes: stats.topic_unacked_bytes,
        transaction_bytes: stats.transaction_bytes,
        slow_consumers: stats.slow_consumers,
        publisher_pauses: stats.publisher_pauses,
        subscription_holds: stats.subscription_holds,
        broker: BrokerView {
            available: *shared.broker.availability().borrow(),
            destinations: broker.destinations,
            queues: broker.queues,
            subscriptions: broker.subscriptions,
            queue_messages_ready: broker.queue_messages_ready,
            queue_messages_unacked: broker.queue_messages_unacked,
            topic_messages_unacked: broker.topic_messages_unacked,
            relay: broker.relay.as_ref().map(RelayView::from),
        },
    }
}

/// One open connection.
#[derive(Debug, Serialize)]
pub(super) struct SessionRow {
    pub(super) id: String,
    /// `null` for an anonymous session, or before CONNECT.
    pub(super) user: Option<String>,
    pub(super) address: String,
    pub(super) transport: &'static str,
    /// The STOMP version; `null` before CONNECT.
    pub(super) version: Option<&'static str>,
    pub(super) subscriptions: usize,
    pub(super) outbox_bytes: usize,
    pub(super) messages_in: u64,
    pub(super) messages_out: u64,
    pub(super) bytes_in: u64,
    pub(super) bytes_out: u64,
    pub(super) opened_at_ms: u64,
    /// When CONNECT succeeded; `null` before.
    pub(super) connected_at_ms: Option<u64>,
}

impl SessionRow {
    fn of(entry: &SessionEntry, outbox_bytes: usize) -> SessionRow {
        let connected = entry.connected();
        let totals = entry.totals();
        SessionRow {
            id: entry.id.to_string(),
            user: connected.and_then(|c| c.user.clone()),
            address: entry.peer.to_string(),
            transport: entry.transport,
            version: connected.map(|c| c.version.as_str()),
            subscriptions: entry.subscriptions(),
            outbox_bytes,
            messages_in: totals.messages_in,
            messages_out: totals.messages_out,
            bytes_in: totals.bytes_in,
            bytes_out: totals.bytes_out,
            opened_at_ms: unix_ms(entry.opened),
            connected_at_ms: connected.map(|c| unix_ms(c.at)),
        }
    }
}

/// A capped listing of sessions.
#[derive(Debug, Serialize)]
pub(super) struct SessionList {
    /// Open connections, listed or not.
    pub(super) total: usize,
    pub(super) limit: usize,
    /// The fullest outboxes first (the slow consumers an operator looks
    /// for), then the oldest.
    pub(super) sessions: Vec<SessionRow>,
}

/// A row with the key it ranks by (greater comes first).
struct Ranked<K, R> {
    key: K,
    row: R,
}

impl<K: Ord, R> PartialEq for Ranked<K, R> {
    fn eq(&self, other: &Self) -> bool {
        self.key == other.key
    }
}
impl<K: Ord, R> Eq for Ranked<K, R> {}
impl<K: Ord, R> PartialOrd for Ranked<K, R> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<K: Ord, R> Ord for Ranked<K, R> {
    fn cmp(&self, other: &Self) -> Ordering {
        self.key.cmp(&other.key)
    }
}

/// Lists at most `limit` sessions while walking all of them: memory and
/// sorting bounded by `limit`, and a row built only for a session that
/// enters the listing.
pub(super) fn sessions(shared: &ServerShared, limit: usize) -> SessionList {
    sessions_of(&shared.telemetry.sessions, limit)
}

fn sessions_of(registry: &SessionRegistry, limit: usize) -> SessionList {
    type Key = (usize, Reverse<SystemTime>);
    let mut top: BinaryHeap<Reverse<Ranked<Key, SessionRow>>> =
        BinaryHeap::with_capacity(limit.min(MAX_SESSIONS) + 1);
    let mut total = 0;
    registry.for_each(|entry| {
        total += 1;
        if limit == 0 {
            return;
        }
        let outbox = entry.outbox.bytes();
        let key = (outbox, Reverse(entry.opened));
        let enters = top.len() < limit || top.peek().is_some_and(|Reverse(least)| key > least.key);
        if enters {
            top.push(Reverse(Ranked {
                key,
                row: SessionRow::of(entry, outbox),
            }));
            if top.len() > limit {
                top.pop();
            }
        }
    });
    let mut ranked: Vec<_> = top.into_iter().map(|Reverse(r)| r).collect();
    ranked.sort_by(|a, b| b.key.cmp(&a.key).then_with(|| a.row.id.cmp(&b.row.id)));
    SessionList {
        total,
        limit,
        sessions: ranked.into_iter().map(|r| r.row).collect(),
    }
}

/// One destination.
#[derive(Debug, Serialize)]
pub(super) struct DestinationRow {
    pub(super) name: String,
    /// `topic`, `pattern`, `queue` or `user`.
    pub(super) kind: &'static str,
    /// Topic subscribers or queue consumers.
    pub(super) subscribers: usize,
    /// Messages waiting (queues).
    pub(super) ready: usize,
    pub(super) ready_bytes: usize,
    /// Messages delivered and not yet acknowledged.
    pub(super) unacked: usize,
}

impl From<DestinationStats> for DestinationRow {
    fn from(d: DestinationStats) -> DestinationRow {
        DestinationRow {
            kind: d.kind.as_str(),
            name: d.name,
            subscribers: d.subscribers,
            ready: d.ready,
            ready_bytes: d.ready_bytes,
            unacked: d.unacked,
        }
    }
}

/// A capped listing of destinations, the busiest first.
#[derive(Debug, Serialize)]
pub(super) struct DestinationList {
    /// Destinations the broker holds, listed or not.
    pub(super) total: usize,
    pub(super) limit: usize,
    pub(super) destinations: Vec<DestinationRow>,
}

pub(super) fn destinations(shared: &ServerShared, limit: usize) -> DestinationList {
    DestinationList {
        total: shared.broker.stats().destinations,
        limit,
        destinations: shared
            .broker
            .destinations(limit)
            .into_iter()
            .map(DestinationRow::from)
            .collect(),
    }
}

/// Per second, between two snapshots.
#[derive(Debug, Serialize)]
pub(super) struct Rates {
    pub(super) messages_in: f64,
    pub(super) messages_out: f64,
    pub(super) messages_published_by_server: f64,
    pub(super) bytes_in: f64,
    pub(super) bytes_out: f64,
}

/// What one server-sent event carries.
#[derive(Debug, Serialize)]
pub(super) struct Snapshot {
    pub(super) at_ms: u64,
    pub(super) overview: Overview,
    /// `null` in a stream's first snapshot, which has none before it.
    pub(super) rates: Option<Rates>,
    pub(super) sessions: SessionList,
    pub(super) destinations: DestinationList,
}

/// Successive snapshots of one event stream, for the rates.
#[derive(Debug, Default)]
pub(super) struct Snapshots {
    previous: Option<(Instant, Stats)>,
}

impl Snapshots {
    pub(super) fn next(
        &mut self,
        shared: &ServerShared,
        stats: Stats,
        sessions_limit: usize,
        destinations_limit: usize,
    ) -> Snapshot {
        let now = Instant::now();
        let rates = self.previous.and_then(|(then, before)| {
            let seconds = now.duration_since(then).as_secs_f64();
            if seconds <= 0.0 {
                return None;
            }
            let rate = |after: u64, before: u64| after.saturating_sub(before) as f64 / seconds;
            Some(Rates {
                messages_in: rate(stats.messages_in, before.messages_in),
                messages_out: rate(stats.messages_out, before.messages_out),
                messages_published_by_server: rate(
                    stats.messages_published_by_server,
                    before.messages_published_by_server,
                ),
                bytes_in: rate(stats.bytes_in, before.bytes_in),
                bytes_out: rate(stats.bytes_out, before.bytes_out),
            })
        });
        self.previous = Some((now, stats));
        Snapshot {
            at_ms: unix_ms(SystemTime::now()),
            overview: overview(shared, &stats),
            rates,
            sessions: sessions(shared, sessions_limit),
            destinations: destinations(shared, destinations_limit),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::outbox::{OutFrame, Outbox};
    use crate::telemetry::Telemetry;
    use bytes::Bytes;
    use std::sync::Arc;

    #[test]
    fn sessions_are_listed_fullest_outbox_first_then_oldest_within_the_limit() {
        let telemetry = Arc::new(Telemetry::default());
        let mut held = Vec::new();
        for (id, queued) in [("a", 0), ("b", 100), ("c", 50), ("d", 0)] {
            let outbox = Arc::new(Outbox::new(1024));
            if queued > 0 {
                outbox
                    .push(OutFrame::new(Bytes::from(vec![b'x'; queued])))
                    .expect("room");
            }
            held.push(telemetry.register(
                id.into(),
                "127.0.0.1:1".parse().expect("addr"),
                "tcp",
                outbox,
            ));
        }
        let ids = |list: &SessionList| -> Vec<String> {
            list.sessions.iter().map(|s| s.id.clone()).collect()
        };
        let all = sessions_of(&telemetry.sessions, 10);
        assert_eq!(all.total, 4);
        assert_eq!(ids(&all), ["b", "c", "a", "d"]);
        // The frame's bytes and its place in the queue.
        assert_eq!(
            all.sessions[0].outbox_bytes,
            100 + std::mem::size_of::<OutFrame>()
        );
        let two = sessions_of(&telemetry.sessions, 2);
        assert_eq!((two.total, ids(&two)), (4, vec!["b".into(), "c".into()]));
        assert!(sessions_of(&telemetry.sessions, 0).sessions.is_empty());
    }
}
