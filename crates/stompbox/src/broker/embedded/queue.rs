//! Point-to-point queues: each message goes to one consumer, in turn, and is
//! held while no consumer can take it.

use super::message::Message;
use super::subscription::{Pending, Subscription};
use crate::broker::BrokerError;
use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard};

#[derive(Debug)]
struct Ready {
    message: Arc<Message>,
    redelivered: bool,
}

#[derive(Debug, Default)]
struct State {
    ready: VecDeque<Ready>,
    ready_bytes: usize,
    consumers: Vec<Arc<Subscription>>,
    /// Index of the consumer to try first next time (round robin).
    next: usize,
    /// Set when the queue left the registry; a publisher holding a stale
    /// handle must look the queue up again instead of enqueueing into it.
    deleted: bool,
}

/// Depth limits of one queue, and of all queues together.
#[derive(Debug, Clone)]
pub(crate) struct QueueLimits {
    pub(crate) max_messages: usize,
    pub(crate) max_bytes: usize,
    /// Bytes held by every queue of the broker (shared).
    pub(crate) total: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    pub(crate) max_total: usize,
}

impl QueueLimits {
    fn hold(&self, n: usize) {
        self.total
            .fetch_add(n, std::sync::atomic::Ordering::Relaxed);
    }

    fn release(&self, n: usize) {
        self.total
            .fetch_sub(n, std::sync::atomic::Ordering::Relaxed);
    }
}

#[derive(Debug)]
pub(crate) struct Queue {
    pub(crate) name: Box<str>,
    limits: QueueLimits,
    state: Mutex<State>,
}

/// The outcome of an enqueue.
#[derive(Debug)]
pub(crate) enum Enqueued {
    Done,
    /// The queue had been deleted; look it up again and retry.
    Deleted(Arc<Message>),
}

impl Queue {
    pub(crate) fn new(name: &str, limits: QueueLimits) -> Queue {
        Queue {
            name: name.into(),
            limits,
            state: Mutex::new(State::default()),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(crate) fn enqueue(&self, message: Arc<Message>) -> Result<Enqueued, BrokerError> {
        let mut state = self.lock();
        if state.deleted {
            return Ok(Enqueued::Deleted(message));
        }
        if state.ready.len() >= self.limits.max_messages {
            return Err(BrokerError::QueueFull {
                destination: self.name.to_string(),
                limit: self.limits.max_messages,
            });
        }
        if state.ready_bytes + message.body_len() > self.limits.max_bytes {
            return Err(BrokerError::QueueFull {
                destination: self.name.to_string(),
                limit: self.limits.max_bytes,
            });
        }
        let total = self.limits.total.load(std::sync::atomic::Ordering::Relaxed);
        if total + message.body_len() > self.limits.max_total {
            return Err(BrokerError::QueueFull {
                destination: self.name.to_string(),
                limit: self.limits.max_total,
            });
        }
        state.ready_bytes += message.body_len();
        self.limits.hold(message.body_len());
        state.ready.push_back(Ready {
            message,
            redelivered: false,
        });
        dispatch(&mut state, &self.limits);
        Ok(Enqueued::Done)
    }

    pub(crate) fn add_consumer(&self, consumer: Arc<Subscription>) -> Result<(), ()> {
        let mut state = self.lock();
        if state.deleted {
            return Err(());
        }
        state.consumers.push(consumer);
        dispatch(&mut state, &self.limits);
        Ok(())
    }

    /// Removes a consumer and puts its unacknowledged messages back at the
    /// front, in their original order, marked redelivered.
    pub(crate) fn remove_consumer(&self, consumer: &Arc<Subscription>) {
        let mut state = self.lock();
        state.consumers.retain(|c| !Arc::ptr_eq(c, consumer));
        let pending = consumer.take_pending();
        requeue_front(&mut state, pending, &self.limits);
        dispatch(&mut state, &self.limits);
    }

    /// Puts rejected messages back (NACK) for the next consumer in turn.
    pub(crate) fn requeue(&self, pending: Vec<Pending>) {
        let mut state = self.lock();
        requeue_front(&mut state, pending, &self.limits);
        dispatch(&mut state, &self.limits);
    }

    /// Called after an ACK freed room on a consumer.
    pub(crate) fn dispatch(&self) {
        dispatch(&mut self.lock(), &self.limits);
    }

    /// Marks the queue deleted if nothing is in it and nobody consumes it.
    pub(crate) fn delete_if_unused(&self) -> bool {
        let mut state = self.lock();
        if state.ready.is_empty() && state.consumers.is_empty() {
            state.deleted = true;
        }
        state.deleted
    }
}

/// Redelivered messages may push the queue past its depth limit for a
/// moment: they were accepted once and must not be lost.
fn requeue_front(state: &mut State, pending: Vec<Pending>, limits: &QueueLimits) {
    for p in pending.into_iter().rev() {
        state.ready_bytes += p.message.body_len();
        limits.hold(p.message.body_len());
        state.ready.push_front(Ready {
            message: p.message,
            redelivered: true,
        });
    }
}

fn dispatch(state: &mut State, limits: &QueueLimits) {
    while !state.ready.is_empty() && !state.consumers.is_empty() {
        let count = state.consumers.len();
        let Some(index) = (0..count)
            .map(|i| (state.next + i) % count)
            .find(|&i| state.consumers[i].has_capacity())
        else {
            return;
        };
        let Some(ready) = state.ready.pop_front() else {
            return;
        };
        let consumer = &state.consumers[index];
        if consumer.deliver(&ready.message, ready.redelivered).is_ok() {
            state.ready_bytes -= ready.message.body_len();
            limits.release(ready.message.body_len());
            state.next = (index + 1) % count;
        } else {
            // Its connection is closing; its session will remove it, but it
            // must not be offered more in the meantime.
            state.ready.push_front(ready);
            state.consumers.remove(index);
            state.next = 0;
        }
    }
}
