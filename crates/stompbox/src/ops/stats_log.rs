//! The stats log line: every `stats_interval`, the headline figures of the
//! server, like Spring's `WebSocketMessageBrokerStats` but with rates over
//! the interval, so a line read on its own says how busy the server was.
//! The figures are structured fields (target `stompbox::stats`), so a JSON
//! log format turns each line into an object a log pipeline can graph.

use crate::shared::Stats;
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::{Instant, MissedTickBehavior};

/// What one line says: the figures now, and the change of the counters
/// since the line before.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct StatsLine {
    pub(crate) stats: Stats,
    /// Seconds the rates are over.
    pub(crate) interval_secs: f64,
    pub(crate) messages_in_per_sec: f64,
    /// Messages the server published itself (handlers' replies,
    /// `Messaging`, the HTTP API).
    pub(crate) messages_by_server_per_sec: f64,
    pub(crate) messages_out_per_sec: f64,
    pub(crate) bytes_in_per_sec: f64,
    pub(crate) bytes_out_per_sec: f64,
    /// Slow consumers disconnected in the interval.
    pub(crate) slow_consumers: u64,
    /// Publisher pauses that began in the interval.
    pub(crate) publisher_pauses: u64,
    pub(crate) broker_available: bool,
}

/// Per second, to one decimal: a log line is read by people, and a finer
/// figure over a minute is noise.
fn rate(before: u64, now: u64, secs: f64) -> f64 {
    if secs <= 0.0 {
        return 0.0;
    }
    // Counters only grow; a smaller figure would be a reset, not a
    // negative rate.
    #[allow(clippy::cast_precision_loss)]
    let per_sec = now.saturating_sub(before) as f64 / secs;
    (per_sec * 10.0).round() / 10.0
}

impl StatsLine {
    /// The line for `now`, `elapsed` after the figures `before`.
    pub(crate) fn between(
        before: &Stats,
        now: Stats,
        elapsed: Duration,
        broker_available: bool,
    ) -> StatsLine {
        let secs = elapsed.as_secs_f64();
        StatsLine {
            interval_secs: (secs * 10.0).round() / 10.0,
            messages_in_per_sec: rate(before.messages_in, now.messages_in, secs),
            messages_by_server_per_sec: rate(
                before.messages_published_by_server,
                now.messages_published_by_server,
                secs,
            ),
            messages_out_per_sec: rate(before.messages_out, now.messages_out, secs),
            bytes_in_per_sec: rate(before.bytes_in, now.bytes_in, secs),
            bytes_out_per_sec: rate(before.bytes_out, now.bytes_out, secs),
            slow_consumers: now.slow_consumers.saturating_sub(before.slow_consumers),
            publisher_pauses: now.publisher_pauses.saturating_sub(before.publisher_pauses),
            broker_available,
            stats: now,
        }
    }

    fn log(&self) {
        let s = &self.stats;
        tracing::info!(
            target: "stompbox::stats",
            interval_secs = self.interval_secs,
            connections = s.connections,
            sessions = s.sessions,
            subscriptions = s.subscriptions,
            messages_in = s.messages_in,
            messages_in_per_sec = self.messages_in_per_sec,
            messages_by_server = s.messages_published_by_server,
            messages_by_server_per_sec = self.messages_by_server_per_sec,
            messages_out = s.messages_out,
            messages_out_per_sec = self.messages_out_per_sec,
            bytes_in = s.bytes_in,
            bytes_in_per_sec = self.bytes_in_per_sec,
            bytes_out = s.bytes_out,
            bytes_out_per_sec = self.bytes_out_per_sec,
            backlog_bytes = s.backlog_bytes,
            queue_bytes = s.queue_bytes,
            slow_consumers = self.slow_consumers,
            slow_consumers_total = s.slow_consumers,
            publisher_pauses = self.publisher_pauses,
            publisher_pauses_total = s.publisher_pauses,
            broker_available = self.broker_available,
            "stats"
        );
    }
}

/// Logs a [`StatsLine`] every `interval` until `stop` turns true. `read`
/// gives the figures and whether the broker is available.
pub(crate) async fn run(
    interval: Duration,
    mut read: impl FnMut() -> (Stats, bool),
    mut stop: watch::Receiver<bool>,
) {
    let mut ticks = tokio::time::interval_at(Instant::now() + interval, interval);
    // A runtime too busy to tick on time should not then log a burst of
    // lines over nearly no time.
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let (mut before, _) = read();
    let mut at = Instant::now();
    loop {
        tokio::select! {
            _ = ticks.tick() => {}
            _ = stop.wait_for(|s| *s) => return,
        }
        let (now, broker_available) = read();
        let now_at = Instant::now();
        let line = StatsLine::between(&before, now, now_at - at, broker_available);
        line.log();
        before = now;
        at = now_at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_are_the_change_per_second_to_one_decimal() {
        assert!((rate(100, 400, 60.0) - 5.0).abs() < f64::EPSILON);
        assert!((rate(0, 1, 3.0) - 0.3).abs() < f64::EPSILON);
        assert!((rate(0, 10, 0.0)).abs() < f64::EPSILON);
        // A counter that went down (never, but not a panic or a negative).
        assert!((rate(10, 5, 1.0)).abs() < f64::EPSILON);
    }
}
