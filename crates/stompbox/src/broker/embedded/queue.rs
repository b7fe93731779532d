//! Point-to-point queues: each message goes to one consumer, in turn, and is
//! held while no consumer can take it.

use super::stats::Counters;
use super::subscription::{DeliveryError, HOLD_OVERHEAD, Pending, Subscription};
use crate::broker::message::Message;
use crate::broker::{BrokerError, QueueLimit};
use crate::budget::Budget;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
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
    /// Most memory of the messages waiting in one queue.
    pub(crate) max_bytes: usize,
    /// Memory of every queue message of the broker from SEND until it is
    /// acknowledged (waiting or delivered and unacknowledged), shared.
    pub(crate) total: Arc<Budget>,
    /// The broker's figures for an operator.
    pub(crate) counters: Arc<Counters>,
}

/// What a waiting message counts against the limits.
fn held(message: &Message) -> usize {
    message.memory_bytes() + HOLD_OVERHEAD
}

#[derive(Debug)]
pub(crate) struct Queue {
    pub(crate) name: Box<str>,
    limits: QueueLimits,
    state: Mutex<State>,
    /// Messages of this queue delivered and not yet acknowledged; kept by
    /// their pending entries, outside the state lock.
    unacked: AtomicUsize,
}

/// One queue's figures at one moment.
#[derive(Debug, Clone, Copy)]
pub(crate) struct QueueFigures {
    pub(crate) consumers: usize,
    pub(crate) ready: usize,
    pub(crate) ready_bytes: usize,
    pub(crate) unacked: usize,
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
            unacked: AtomicUsize::new(0),
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
        let full = |limit, value| {
            Err(BrokerError::QueueFull {
                destination: self.name.to_string(),
                limit,
                value,
            })
        };
        if state.ready.len() >= self.limits.max_messages {
            return full(QueueLimit::Messages, self.limits.max_messages);
        }
        let size = held(&message);
        if state.ready_bytes + size > self.limits.max_bytes {
            return full(QueueLimit::Bytes, self.limits.max_bytes);
        }
        if !self.limits.total.try_take(size) {
            return full(QueueLimit::TotalBytes, self.limits.total.max());
        }
        state.ready_bytes += size;
        state.ready.push_back(Ready {
            message,
            redelivered: false,
        });
        self.limits.counters.ready.fetch_add(1, Ordering::Relaxed);
        dispatch(&mut state, &self.limits);
        Ok(Enqueued::Done)
    }

    /// The budget of every queue message, which a delivered message stays
    /// under until it is acknowledged.
    pub(crate) fn budget(&self) -> &Arc<Budget> {
        &self.limits.total
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

    /// A message of this queue was delivered in a client ack mode and is
    /// pending until acknowledged.
    pub(crate) fn unacked_added(&self) {
        self.unacked.fetch_add(1, Ordering::Relaxed);
        self.limits
            .counters
            .queue_unacked
            .fetch_add(1, Ordering::Relaxed);
    }

    /// A pending message of this queue went (acknowledged, requeued, or its
    /// subscription closed).
    pub(crate) fn unacked_removed(&self) {
        self.unacked.fetch_sub(1, Ordering::Relaxed);
        self.limits
            .counters
            .queue_unacked
            .fetch_sub(1, Ordering::Relaxed);
    }

    /// Removes every waiting message and gives back its memory; the
    /// delivered, unacknowledged ones stay with their consumers. Returns
    /// how many went.
    pub(crate) fn purge(&self) -> usize {
        let removed = {
            let mut state = self.lock();
            let removed = std::mem::take(&mut state.ready);
            self.limits.total.release(state.ready_bytes);
            state.ready_bytes = 0;
            removed
        };
        self.limits
            .counters
            .ready
            .fetch_sub(removed.len(), Ordering::Relaxed);
        // The messages themselves are freed here, with no lock held.
        removed.len()
    }

    /// Consumers, waiting messages and unacknowledged ones now.
    pub(crate) fn figures(&self) -> QueueFigures {
        let state = self.lock();
        QueueFigures {
            consumers: state.consumers.len(),
            ready: state.ready.len(),
            ready_bytes: state.ready_bytes,
            unacked: self.unacked.load(Ordering::Relaxed),
        }
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
/// moment: they were accepted once and must not be lost. Their memory moves
/// from the pending entry back to the queue.
fn requeue_front(state: &mut State, pending: Vec<Pending>, limits: &QueueLimits) {
    limits
        .counters
        .ready
        .fetch_add(pending.len(), Ordering::Relaxed);
    for p in pending.into_iter().rev() {
        let message = Arc::clone(&p.message);
        let size = held(&message);
        state.ready_bytes += size;
        limits.total.force_take(size);
        drop(p);
        state.ready.push_front(Ready {
            message,
            redelivered: true,
        });
    }
}

fn dispatch(state: &mut State, limits: &QueueLimits) {
    while !state.consumers.is_empty() {
        let Some(size) = state.ready.front().map(|r| held(&r.message)) else {
            return;
        };
        let count = state.consumers.len();
        let Some(index) = (0..count)
            .map(|i| (state.next + i) % count)
            .find(|&i| state.consumers[i].has_capacity(size))
        else {
            return;
        };
        let Some(ready) = state.ready.pop_front() else {
            return;
        };
        let consumer = &state.consumers[index];
        match consumer.deliver(&ready.message, ready.redelivered, None) {
            Ok(()) => {
                // A client-mode consumer's pending entry has taken its own
                // charge of the queues' budget; the waiting one goes.
                state.ready_bytes -= size;
                limits.total.release(size);
                limits.counters.ready.fetch_sub(1, Ordering::Relaxed);
                state.next = (index + 1) % count;
            }
            Err(DeliveryError::Full) => {
                state.ready.push_front(ready);
                return;
            }
            Err(DeliveryError::Gone) => {
                // Its connection is closing; its session will remove it, but
                // it must not be offered more in the meantime.
                state.ready.push_front(ready);
                state.consumers.remove(index);
                state.next = 0;
            }
        }
    }
}
