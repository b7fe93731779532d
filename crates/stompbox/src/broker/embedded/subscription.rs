//! One client subscription as the embedded broker sees it: where to deliver,
//! how to encode, and the messages it has not acknowledged yet.

use super::message::{DeliveryHeaders, Message};
use super::queue::Queue;
use crate::broker::AckMode;
use crate::outbox::{Outbox, PushError};
use bytes::Bytes;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use stompbox_codec::Version;

/// A delivered message waiting for ACK or NACK.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) message: Arc<Message>,
}

#[derive(Debug, Default)]
pub(crate) struct PendingSet {
    /// By delivery tag, which grows with delivery order, so a cumulative ACK
    /// is a range.
    pub(crate) by_tag: BTreeMap<u64, Pending>,
    next_tag: u64,
}

/// Where a subscription's messages come from.
#[derive(Debug)]
pub(crate) enum Source {
    Topic { routing_key: Box<str> },
    User { key: Box<str> },
    Queue(Arc<Queue>),
}

#[derive(Debug)]
pub(crate) struct Subscription {
    pub(crate) id: Bytes,
    /// What MESSAGE frames show as their destination, when not the message's own.
    pub(crate) display_destination: Option<Bytes>,
    /// Session-local number, the first part of every ack id this
    /// subscription hands out, so an ACK finds its subscription directly.
    pub(crate) key: u64,
    pub(crate) ack: AckMode,
    pub(crate) version: Version,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) source: Source,
    pub(crate) max_unacked: usize,
    pub(crate) pending: Mutex<PendingSet>,
    /// Set on UNSUBSCRIBE, before the subscription leaves the registries: a
    /// publisher still holding an older subscriber list then skips it, so no
    /// MESSAGE for a cancelled id follows the UNSUBSCRIBE's RECEIPT.
    pub(crate) cancelled: std::sync::atomic::AtomicBool,
}

/// Why a delivery did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeliveryError {
    /// The subscriber's connection is gone or going.
    Gone,
}

impl Subscription {
    pub(crate) fn pending(&self) -> MutexGuard<'_, PendingSet> {
        self.pending.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether a queue may give this consumer another message now: its
    /// connection is open, its outbox has room (a deep queue must not
    /// overflow it in one go), and in client modes the prefetch allows.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancelled.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Marks the subscription cancelled; takes the pending lock so that a
    /// delivery in progress in client mode finishes first.
    pub(crate) fn cancel(&self) {
        let _pending = self.pending();
        self.cancelled
            .store(true, std::sync::atomic::Ordering::Release);
    }

    pub(crate) fn has_capacity(&self) -> bool {
        if self.outbox.is_closed() || self.outbox.half_full(true) {
            return false;
        }
        self.ack == AckMode::Auto || self.pending().by_tag.len() < self.max_unacked
    }

    /// Delivers one message. In client ack modes the message is recorded as
    /// pending before it is queued, so an ACK can never overtake the record.
    pub(crate) fn deliver(
        &self,
        message: &Arc<Message>,
        redelivered: bool,
    ) -> Result<(), DeliveryError> {
        if self.is_cancelled() {
            return Err(DeliveryError::Gone);
        }
        if self.ack == AckMode::Auto {
            let frame = message.encode(DeliveryHeaders {
                subscription: &self.id,
                destination: self.display_destination.as_deref(),
                ack: None,
                redelivered,
                version: self.version,
            });
            return self.push(frame).map_err(|_| DeliveryError::Gone);
        }
        let tag = {
            let mut pending = self.pending();
            if self.is_cancelled() {
                return Err(DeliveryError::Gone);
            }
            if pending.by_tag.len() >= self.max_unacked {
                drop(pending);
                // Only topics get here (queues check capacity first): a topic
                // subscriber that stopped acknowledging is a slow consumer.
                self.outbox.fail_slow();
                return Err(DeliveryError::Gone);
            }
            let tag = pending.next_tag;
            pending.next_tag += 1;
            pending.by_tag.insert(
                tag,
                Pending {
                    message: Arc::clone(message),
                },
            );
            tag
        };
        let ack_id = format!("{}.{}", self.key, tag);
        let frame = message.encode(DeliveryHeaders {
            subscription: &self.id,
            destination: self.display_destination.as_deref(),
            ack: Some(ack_id.as_bytes()),
            redelivered,
            version: self.version,
        });
        match self.push(frame) {
            Ok(()) => Ok(()),
            Err(PushError::Closed | PushError::Overflow) => {
                self.pending().by_tag.remove(&tag);
                Err(DeliveryError::Gone)
            }
        }
    }

    /// Queues a frame for the subscriber. A topic's publisher is paused by a
    /// congested subscriber; a queue's is not, as the queue itself holds
    /// messages back while its consumers are half full.
    fn push(&self, frame: crate::outbox::OutFrame) -> Result<(), PushError> {
        match self.source {
            Source::Queue(_) => self.outbox.push(frame),
            Source::Topic { .. } | Source::User { .. } => self.outbox.deliver(frame),
        }
    }

    /// Removes and returns the pending messages an ACK/NACK covers: the one
    /// with `tag`, and in `client` mode every earlier one too.
    pub(crate) fn settle(&self, tag: u64) -> Option<Vec<Pending>> {
        let mut pending = self.pending();
        if !pending.by_tag.contains_key(&tag) {
            return None;
        }
        if self.ack == AckMode::Client {
            let rest = pending.by_tag.split_off(&(tag + 1));
            let settled = std::mem::replace(&mut pending.by_tag, rest);
            Some(settled.into_values().collect())
        } else {
            pending.by_tag.remove(&tag).map(|p| vec![p])
        }
    }

    /// The tag of the pending message with this `message-id`.
    pub(crate) fn tag_of(&self, message_id: &[u8]) -> Option<u64> {
        self.pending()
            .by_tag
            .iter()
            .find(|(_, p)| p.message.id.as_ref() == message_id)
            .map(|(tag, _)| *tag)
    }

    /// Takes every pending message, oldest first (on unsubscribe or close).
    pub(crate) fn take_pending(&self) -> Vec<Pending> {
        std::mem::take(&mut self.pending().by_tag)
            .into_values()
            .collect()
    }
}
