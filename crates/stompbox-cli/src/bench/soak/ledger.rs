//! The soak's bookkeeping: which queue messages were acknowledged how
//! often, the server's RSS over the run, and the `--duration` syntax.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One queue's messages by sequence number: how many times a consumer
/// acknowledged each. Consumers come and go (and churners take a few and
/// leave), so the record lives here rather than in any one of them.
#[derive(Debug)]
pub(super) struct Ledger {
    /// Acknowledgements per sequence number, saturating at 255.
    acked: Mutex<Vec<u8>>,
    /// Sequence numbers acknowledged at least once: the producer's flow
    /// control compares it with what it sent.
    distinct: AtomicU64,
    /// What the queue's producer wrote and had confirmed.
    pub(super) counts: Arc<Counts>,
}

/// A producer's progress, shared with whoever checks on it.
#[derive(Debug, Default)]
pub(super) struct Counts {
    /// Messages written (sequence numbers below this exist).
    pub(super) sent: AtomicU64,
    /// Messages the server confirmed (by a RECEIPT for them or for a later
    /// frame on the same connection): it took them, so each must arrive.
    pub(super) confirmed: AtomicU64,
}

/// What a [`Ledger`] adds up to at the end.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(super) struct Tally {
    /// Confirmed messages (RECEIPT from the server).
    pub(super) confirmed: u64,
    /// Confirmed messages acknowledged at least once.
    pub(super) received: u64,
    /// Confirmed messages never acknowledged.
    pub(super) lost: u64,
    /// Acknowledgements beyond the first of a message (redelivered after a
    /// consumer left before its ACK counted).
    pub(super) duplicates: u64,
    /// Written but never confirmed (the producer failed before its
    /// RECEIPT): not counted as lost when missing.
    pub(super) unconfirmed: u64,
}

impl Ledger {
    pub(super) fn new(counts: Arc<Counts>) -> Ledger {
        Ledger {
            acked: Mutex::default(),
            distinct: AtomicU64::new(0),
            counts,
        }
    }

    /// Records one acknowledgement of `seq`. `false` when `seq` was never
    /// sent (a message the bench cannot account for).
    pub(super) fn record(&self, seq: u64) -> bool {
        if seq >= self.counts.sent.load(Ordering::Acquire) {
            return false;
        }
        let Ok(index) = usize::try_from(seq) else {
            return false;
        };
        let mut acked = self.acked.lock().unwrap_or_else(|e| e.into_inner());
        if index >= acked.len() {
            // Grown in steps: sequence numbers arrive nearly in order.
            let len = (index + 1).next_power_of_two().max(1024);
            acked.resize(len, 0);
        }
        let count = &mut acked[index];
        if *count == 0 {
            self.distinct.fetch_add(1, Ordering::Relaxed);
        }
        *count = count.saturating_add(1);
        true
    }

    /// Messages acknowledged at least once.
    pub(super) fn distinct(&self) -> u64 {
        self.distinct.load(Ordering::Relaxed)
    }

    /// True once every confirmed message has been acknowledged.
    pub(super) fn drained(&self) -> bool {
        self.tally().lost == 0
    }

    pub(super) fn tally(&self) -> Tally {
        let confirmed = self.counts.confirmed.load(Ordering::Acquire);
        let sent = self.counts.sent.load(Ordering::Acquire).max(confirmed);
        let acked = self.acked.lock().unwrap_or_else(|e| e.into_inner());
        let count = |seq: u64| {
            usize::try_from(seq)
                .ok()
                .and_then(|i| acked.get(i))
                .copied()
                .unwrap_or(0)
        };
        let mut tally = Tally {
            confirmed,
            ..Tally::default()
        };
        for seq in 0..sent {
            let n = count(seq);
            if n > 0 {
                tally.duplicates += u64::from(n - 1);
                if seq < confirmed {
                    tally.received += 1;
                }
            } else if seq < confirmed {
                tally.lost += 1;
            } else {
                tally.unconfirmed += 1;
            }
        }
        tally
    }
}

/// The server's resident memory, read every few seconds of the run.
#[derive(Debug, Default, Clone)]
pub(super) struct RssTrack {
    /// (seconds since the run phase started, KiB)
    samples: Vec<(f64, u64)>,
}

/// How many readings the warm and end figures are the median of: one
/// reading can catch a burst's buffers, three rarely all do.
const MEDIAN_OF: usize = 3;

impl RssTrack {
    pub(super) fn push(&mut self, at_secs: f64, kib: u64) {
        self.samples.push((at_secs, kib));
    }

    pub(super) fn len(&self) -> usize {
        self.samples.len()
    }

    /// The median of the first readings at or after `from_secs`.
    pub(super) fn warm(&self, from_secs: f64) -> Option<u64> {
        let after: Vec<u64> = self
            .samples
            .iter()
            .filter(|(at, _)| *at >= from_secs)
            .take(MEDIAN_OF)
            .map(|(_, kib)| *kib)
            .collect();
        median(after)
    }

    /// The median of the last readings.
    pub(super) fn end(&self) -> Option<u64> {
        let skip = self.samples.len().saturating_sub(MEDIAN_OF);
        median(self.samples[skip..].iter().map(|(_, kib)| *kib).collect())
    }

    pub(super) fn peak(&self) -> Option<u64> {
        self.samples.iter().map(|(_, kib)| *kib).max()
    }
}

fn median(mut values: Vec<u64>) -> Option<u64> {
    values.sort_unstable();
    values.get(values.len() / 2).copied()
}

/// Growth from `warm` to `end` in percent (negative: it shrank).
pub(super) fn drift_percent(warm: Option<u64>, end: Option<u64>) -> Option<f64> {
    match (warm, end) {
        (Some(warm), Some(end)) if warm > 0 => {
            Some((end as f64 - warm as f64) / warm as f64 * 100.0)
        }
        _ => None,
    }
}

/// The longest `--duration` a soak accepts.
pub(super) const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);

/// `--duration` and `--calibration`: `90`, `90s`, `10m`, `2h`, `500ms`.
pub(super) fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("'{text}': expected a whole number and a unit: 90s, 10m, 1h"))?;
    let millis_per = match unit {
        "ms" => 1,
        "" | "s" => 1_000,
        "m" | "min" => 60_000,
        "h" => 3_600_000,
        _ => return Err(format!("'{text}': unknown unit '{unit}' (ms, s, m or h)")),
    };
    let duration = number
        .checked_mul(millis_per)
        .map(Duration::from_millis)
        .filter(|d| *d <= MAX_DURATION)
        .ok_or_else(|| format!("'{text}': at most {} h", MAX_DURATION.as_secs() / 3600))?;
    if duration.is_zero() {
        return Err(format!("'{text}': must be more than 0"));
    }
    Ok(duration)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_counts_lost_duplicates_and_unconfirmed() {
        let ledger = Ledger::new(Arc::default());
        ledger.counts.sent.store(6, Ordering::Release);
        ledger.counts.confirmed.store(5, Ordering::Release);
        for seq in [0, 1, 1, 3, 5] {
            assert!(ledger.record(seq));
        }
        // Never sent: not recorded.
        assert!(!ledger.record(6));
        assert!(!ledger.record(u64::MAX));
        assert_eq!(ledger.distinct(), 4);
        assert_eq!(
            ledger.tally(),
            Tally {
                confirmed: 5,
                received: 3,
                // 2 and 4.
                lost: 2,
                duplicates: 1,
                // 5 was written but never confirmed, and came anyway.
                unconfirmed: 0,
            }
        );
        assert!(!ledger.drained());
        ledger.record(2);
        ledger.record(4);
        assert!(ledger.drained());
        ledger.counts.sent.store(8, Ordering::Release);
        assert_eq!(ledger.tally().unconfirmed, 2);
    }

    #[test]
    fn rss_warm_and_end_are_medians_of_three() {
        let mut track = RssTrack::default();
        for (at, kib) in [(0.0, 900), (1.0, 100), (2.0, 130), (3.0, 110), (4.0, 500)] {
            track.push(at, kib);
        }
        assert_eq!(track.warm(1.0), Some(110));
        assert_eq!(track.end(), Some(130));
        assert_eq!(track.peak(), Some(900));
        assert_eq!(track.warm(10.0), None);
        assert_eq!(RssTrack::default().end(), None);
        let drift = drift_percent(Some(100), Some(105)).unwrap_or_default();
        assert!((drift - 5.0).abs() < 1e-9);
        assert_eq!(drift_percent(None, Some(1)), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("10m"), Ok(Duration::from_secs(600)));
        assert_eq!(parse_duration("5s"), Ok(Duration::from_secs(5)));
        assert_eq!(parse_duration("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        for bad in ["", "m", "0s", "5x", "-5s", "25h", "99999999999999999999h"] {
            assert!(parse_duration(bad).is_err(), "{bad}");
        }
    }
}
