//! A count of bytes against a cap, shared by whatever holds memory under it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

/// Bytes held under one cap (all queues, one session's unacknowledged
/// messages, all open transactions…). Taking is all or nothing, so the count
/// never passes the cap, even with many threads taking at once.
#[derive(Debug)]
pub(crate) struct Budget {
    used: AtomicUsize,
    max: usize,
    /// Set when something was turned away for lack of room, so whoever
    /// frees room knows whether anyone may be waiting for it.
    refused: AtomicBool,
}

impl Budget {
    pub(crate) fn new(max: usize) -> Budget {
        Budget {
            used: AtomicUsize::new(0),
            max,
            refused: AtomicBool::new(false),
        }
    }

    /// Takes `n` bytes if they fit under the cap.
    pub(crate) fn try_take(&self, n: usize) -> bool {
        let take = || {
            self.used
                .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                    used.checked_add(n).filter(|&total| total <= self.max)
                })
                .is_ok()
        };
        if take() {
            return true;
        }
        // Flag first, then try once more: room freed between the two is
        // either taken now or finds the flag set (see `take_refused`).
        self.refused.store(true, Ordering::SeqCst);
        take()
    }

    /// Takes `n` bytes whatever the cap: for memory that was accepted once
    /// and must not be lost (a redelivered message).
    pub(crate) fn force_take(&self, n: usize) {
        self.used.fetch_add(n, Ordering::AcqRel);
    }

    /// Gives back `n` bytes taken before.
    pub(crate) fn release(&self, n: usize) {
        let _ = self
            .used
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |used| {
                Some(used.saturating_sub(n))
            });
    }

    /// Whether `n` more bytes would fit now.
    pub(crate) fn has_room(&self, n: usize) -> bool {
        let room = || self.used.load(Ordering::SeqCst).saturating_add(n) <= self.max;
        if room() {
            return true;
        }
        self.refused.store(true, Ordering::SeqCst);
        room()
    }

    /// True (once) when a take or a room check failed since the last call.
    pub(crate) fn take_refused(&self) -> bool {
        self.refused.swap(false, Ordering::SeqCst)
    }

    pub(crate) fn used(&self) -> usize {
        self.used.load(Ordering::Acquire)
    }

    pub(crate) fn max(&self) -> usize {
        self.max
    }
}

/// What one holder (a session's open transactions) took from a shared
/// budget; whatever it still holds goes back when it is dropped, however the
/// holder ends.
#[derive(Debug)]
pub(crate) struct Held {
    budget: Arc<Budget>,
    n: usize,
}

impl Held {
    pub(crate) fn new(budget: Arc<Budget>) -> Held {
        Held { budget, n: 0 }
    }

    pub(crate) fn try_take(&mut self, n: usize) -> bool {
        let taken = self.budget.try_take(n);
        if taken {
            self.n += n;
        }
        taken
    }

    pub(crate) fn release(&mut self, n: usize) {
        let n = n.min(self.n);
        self.n -= n;
        self.budget.release(n);
    }

    pub(crate) fn bytes(&self) -> usize {
        self.n
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        self.budget.release(self.n);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn taking_stops_at_the_cap_and_release_makes_room() {
        let budget = Budget::new(100);
        assert!(budget.try_take(60));
        assert!(!budget.try_take(41));
        assert_eq!(budget.used(), 60);
        assert!(budget.take_refused());
        assert!(!budget.take_refused());
        budget.release(60);
        assert!(budget.try_take(100));
        assert!(!budget.take_refused());
        assert!(!budget.has_room(1));
        assert!(budget.take_refused());
    }
}
