//! How fast one session may SUBSCRIBE and UNSUBSCRIBE.
//!
//! Every change of subscriptions costs the server more than a SEND (the
//! registries change under their locks, hooks run, an application may tell a
//! room that someone joined or left), and a client looping over
//! SUBSCRIBE/UNSUBSCRIBE could turn that into a flood. A session past its
//! rate is slowed, not refused: its next frame waits for a token while its
//! output keeps flowing, so an application that subscribes to many
//! destinations at start-up only takes a little longer.

use std::time::Duration;
use tokio::time::Instant;

/// A token bucket of `per_sec` tokens a second, holding at most a second's
/// worth, so a burst of `per_sec` changes passes at once.
#[derive(Debug)]
pub(crate) struct SubscriptionRate {
    per_sec: u32,
    /// `f32` so that the bucket fits 24 bytes of every session; counted in
    /// `f64` while taking.
    tokens: f32,
    refilled: Instant,
}

impl SubscriptionRate {
    /// A full bucket; `per_sec == 0` is no limit.
    pub(crate) fn new(per_sec: u32, now: Instant) -> SubscriptionRate {
        SubscriptionRate {
            per_sec,
            tokens: per_sec as f32,
            refilled: now,
        }
    }

    /// Takes a token and returns `None`, or returns when one will be there
    /// (taking nothing).
    pub(crate) fn take(&mut self, now: Instant) -> Option<Instant> {
        if self.per_sec == 0 {
            return None;
        }
        let rate = f64::from(self.per_sec);
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        let tokens = (f64::from(self.tokens) + elapsed * rate).min(rate);
        self.refilled = now;
        if tokens >= 1.0 {
            self.tokens = (tokens - 1.0) as f32;
            return None;
        }
        self.tokens = tokens as f32;
        Some(now + Duration::from_secs_f64((1.0 - tokens) / rate))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_of_the_rate_passes_then_one_change_per_interval() {
        let start = Instant::now();
        let mut rate = SubscriptionRate::new(10, start);
        for _ in 0..10 {
            assert_eq!(rate.take(start), None);
        }
        let at = rate.take(start).expect("the bucket is empty");
        assert!(at > start && at <= start + Duration::from_millis(101));
        // Asking again before then still waits, and takes nothing.
        assert!(rate.take(start + Duration::from_millis(50)).is_some());
        assert_eq!(rate.take(at), None);
        assert!(rate.take(at).is_some());
        // A long quiet spell refills to a second's worth, no more.
        let later = at + Duration::from_secs(60);
        for _ in 0..10 {
            assert_eq!(rate.take(later), None);
        }
        assert!(rate.take(later).is_some());
    }

    #[test]
    fn zero_is_no_limit() {
        let now = Instant::now();
        let mut rate = SubscriptionRate::new(0, now);
        for _ in 0..10_000 {
            assert_eq!(rate.take(now), None);
        }
    }
}
