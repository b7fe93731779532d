//! One client subscription as the embedded broker sees it: where to deliver,
//! how to encode, and the messages it has not acknowledged yet.

use super::queue::Queue;
use super::stats::Counters;
use crate::broker::AckMode;
use crate::broker::message::{DeliveryHeaders, Message, Tails};
use crate::budget::Budget;
use crate::outbox::{Outbox, PushError};
use bytes::Bytes;
use std::collections::{BTreeMap, VecDeque};
use std::sync::atomic::Ordering::Relaxed;
use std::sync::{Arc, Mutex, MutexGuard};
use stompbox_codec::Version;

/// What one held message costs beyond the message itself: its slot in a
/// queue's ready list or a subscription's pending map.
pub(crate) const HOLD_OVERHEAD: usize = 64;

/// A delivered message waiting for ACK or NACK. It holds its share of the
/// memory budgets and gives it back when it goes (acknowledged, requeued,
/// or its subscription closed), whichever way it goes.
#[derive(Debug)]
pub(crate) struct Pending {
    pub(crate) message: Arc<Message>,
    /// Taken from the session's budget, one per pending entry.
    charge: usize,
    session: Arc<Budget>,
    shared: SharedCharge,
}

/// Every session's unacknowledged topic bytes, so that at the server-wide
/// topic cap the session holding the most is the one cut off, not whichever
/// subscriber happens to receive the next message.
#[derive(Debug, Default)]
pub(crate) struct TopicHolders {
    /// By the address of the session's counter.
    sessions: Mutex<std::collections::HashMap<usize, Holder>>,
}

/// One session's unacknowledged topic bytes and where to cut it off.
type Holder = (std::sync::Weak<Budget>, std::sync::Weak<Outbox>);

impl TopicHolders {
    pub(crate) fn register(&self, held: &Arc<Budget>, outbox: &Arc<Outbox>) {
        lock(&self.sessions).insert(
            Arc::as_ptr(held) as usize,
            (Arc::downgrade(held), Arc::downgrade(outbox)),
        );
    }

    pub(crate) fn unregister(&self, held: &Arc<Budget>) {
        lock(&self.sessions).remove(&(Arc::as_ptr(held) as usize));
    }

    /// At the server-wide cap: when another session holds more than `mine`
    /// will after taking `need`, that session is cut off (if it is not
    /// already going) and the caller may pass the cap by its message until
    /// the other's memory comes back, moments later. False when the caller
    /// itself holds the most.
    fn make_room(&self, mine: &Arc<Budget>, need: usize) -> bool {
        let sessions = lock(&self.sessions);
        let largest = sessions
            .values()
            .filter_map(|(held, outbox)| Some((held.upgrade()?, outbox.upgrade()?)))
            .filter(|(held, _)| !Arc::ptr_eq(held, mine))
            .max_by_key(|(held, _)| held.used());
        match largest {
            Some((held, outbox)) if held.used() > mine.used().saturating_add(need) => {
                if !outbox.is_closed() {
                    outbox.fail_unacked(HoldRefused::Server.as_str());
                }
                true
            }
            _ => false,
        }
    }
}

/// The server-wide charge of a pending message.
#[derive(Debug)]
enum SharedCharge {
    /// A queue message stays under the queues' budget until acknowledged,
    /// and counts among its queue's unacknowledged messages.
    Queue(Arc<Queue>),
    /// A topic message is charged once to the server-wide unacknowledged
    /// budget however many subscribers hold it, and to the session's own
    /// count of topic bytes (see [`TopicHolders`]); each holder counts
    /// once in the broker's unacknowledged topic deliveries.
    Topic {
        budget: Arc<Budget>,
        session_topic: Arc<Budget>,
        counters: Arc<Counters>,
    },
}

/// Which cap refused a pending entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum HoldRefused {
    Prefetch,
    Session,
    Server,
}

impl HoldRefused {
    fn as_str(self) -> &'static str {
        match self {
            HoldRefused::Prefetch => "max_unacked",
            HoldRefused::Session => "max_session_unacked_bytes",
            HoldRefused::Server => "max_total_topic_unacked_bytes",
        }
    }
}

impl Pending {
    fn hold(
        source: &Source,
        budgets: &UnackedBudgets,
        message: &Arc<Message>,
    ) -> Result<Pending, HoldRefused> {
        let charge = message.memory_bytes() + HOLD_OVERHEAD;
        if !budgets.session.try_take(charge) {
            return Err(HoldRefused::Session);
        }
        let shared = match source {
            // Accepted once under the queues' budget at SEND: it must not
            // be refused now, only moved from ready to pending.
            Source::Queue(queue) => {
                queue.budget().force_take(charge);
                queue.unacked_added();
                SharedCharge::Queue(Arc::clone(queue))
            }
            Source::Topic { .. } | Source::User { .. } => {
                let budget = Arc::clone(&budgets.topic);
                let mut holders = lock(&message.unacked_holders);
                if *holders == 0 && !budget.try_take(message.memory_bytes()) {
                    if budgets.holders.make_room(&budgets.session_topic, charge) {
                        budget.force_take(message.memory_bytes());
                    } else {
                        drop(holders);
                        budgets.session.release(charge);
                        return Err(HoldRefused::Server);
                    }
                }
                *holders += 1;
                budgets.session_topic.force_take(charge);
                budgets.counters.topic_unacked.fetch_add(1, Relaxed);
                SharedCharge::Topic {
                    budget,
                    session_topic: Arc::clone(&budgets.session_topic),
                    counters: Arc::clone(&budgets.counters),
                }
            }
        };
        Ok(Pending {
            message: Arc::clone(message),
            charge,
            session: Arc::clone(&budgets.session),
            shared,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.session.release(self.charge);
        match &self.shared {
            SharedCharge::Queue(queue) => {
                queue.budget().release(self.charge);
                queue.unacked_removed();
            }
            SharedCharge::Topic {
                budget,
                session_topic,
                counters,
            } => {
                counters.topic_unacked.fetch_sub(1, Relaxed);
                session_topic.release(self.charge);
                let mut holders = lock(&self.message.unacked_holders);
                *holders = holders.saturating_sub(1);
                if *holders == 0 {
                    budget.release(self.message.memory_bytes());
                }
            }
        }
    }
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|e| e.into_inner())
}

#[derive(Debug)]
pub(crate) struct PendingSet {
    /// By delivery tag, which grows with delivery order, so a cumulative ACK
    /// is a range.
    pub(crate) by_tag: BTreeMap<u64, Pending>,
    /// Topic messages past the subscription's `prefetch-count`, oldest
    /// first, waiting for an ACK or NACK to make room, and NACKed ones
    /// (marked redelivered) at the front: what RabbitMQ's per-subscription
    /// queue holds. They are charged like delivered ones, so `max_unacked`
    /// and the unacknowledged-bytes caps bound them too.
    held_back: VecDeque<(Pending, bool)>,
    next_tag: u64,
    /// What the entries are charged to.
    budgets: UnackedBudgets,
}

/// The caps a subscription's unacknowledged messages count against.
#[derive(Debug, Clone)]
pub(crate) struct UnackedBudgets {
    /// Unacknowledged bytes of every subscription of the session.
    pub(crate) session: Arc<Budget>,
    /// Unacknowledged topic bytes of the whole broker.
    pub(crate) topic: Arc<Budget>,
    /// The session's own unacknowledged topic bytes (no cap of its own).
    pub(crate) session_topic: Arc<Budget>,
    /// Every session's `session_topic`, for the server-wide cap.
    pub(crate) holders: Arc<TopicHolders>,
    /// The broker's figures for an operator.
    pub(crate) counters: Arc<Counters>,
}

impl PendingSet {
    pub(crate) fn new(budgets: UnackedBudgets) -> PendingSet {
        PendingSet {
            by_tag: BTreeMap::new(),
            held_back: VecDeque::new(),
            next_tag: 0,
            budgets,
        }
    }
}

impl Default for PendingSet {
    /// Unbounded budgets of its own (for tests of other parts).
    fn default() -> PendingSet {
        PendingSet::new(UnackedBudgets {
            session: Arc::new(Budget::new(usize::MAX)),
            topic: Arc::new(Budget::new(usize::MAX)),
            session_topic: Arc::new(Budget::new(usize::MAX)),
            holders: Arc::default(),
            counters: Arc::default(),
        })
    }
}

/// Where a subscription's messages come from.
#[derive(Debug)]
pub(crate) enum Source {
    Topic { routing_key: Box<str> },
    User { key: Box<str> },
    Queue(Arc<Queue>),
}

/// Every topic publish reads these fields of each subscriber, so they come
/// first and together (`repr(C)` keeps the order): one cache line per
/// subscriber, where the compiler's order spread them over two and the
/// id's bytes over a third (cachegrind, 1,000 subscribers: three first-
/// level misses per delivery there).
#[derive(Debug)]
#[repr(C)]
pub(crate) struct Subscription {
    /// Set on UNSUBSCRIBE, before the subscription leaves the registries: a
    /// publisher still holding an older subscriber list then skips it, so no
    /// MESSAGE for a cancelled id follows the UNSUBSCRIBE's RECEIPT.
    pub(crate) cancelled: std::sync::atomic::AtomicBool,
    pub(crate) version: Version,
    /// Acknowledges automatically and shows the message's own destination:
    /// a topic publish's fan-out encodes its deliveries.
    pub(crate) fans_out: bool,
    pub(crate) ack: AckMode,
    /// The id, when short, beside the rest of what a publish reads.
    short_id: ShortId,
    pub(crate) outbox: Arc<Outbox>,
    pub(crate) id: Bytes,
    /// What MESSAGE frames show as their destination, when not the message's own.
    pub(crate) display_destination: Option<Bytes>,
    /// Session-local number, the first part of every ack id this
    /// subscription hands out, so an ACK finds its subscription directly.
    pub(crate) key: u64,
    pub(crate) source: Source,
    /// Most messages held unacknowledged: in flight to the client plus,
    /// on a topic, held back. A queue consumer's is the lesser of
    /// `max_unacked` and its `prefetch-count`.
    pub(crate) max_unacked: usize,
    /// A topic subscription's `prefetch-count`, when below `max_unacked`:
    /// most messages in flight to the client; the rest wait in
    /// `held_back`.
    pub(crate) prefetch: Option<usize>,
    pub(crate) pending: Mutex<PendingSet>,
}

/// Ids up to this long (clients' `sub-0`, `sub-12345`, numbers) are kept
/// inside the subscription itself.
const SHORT_ID: usize = 27;

/// A subscription id of at most [`SHORT_ID`] bytes, or none.
#[derive(Debug, Clone, Copy)]
struct ShortId {
    /// The id's length, or `u8::MAX` when it is longer.
    len: u8,
    bytes: [u8; SHORT_ID],
}

impl ShortId {
    fn new(id: &[u8]) -> ShortId {
        let mut bytes = [0; SHORT_ID];
        match bytes.get_mut(..id.len()) {
            Some(short) => {
                short.copy_from_slice(id);
                ShortId {
                    len: u8::try_from(id.len()).unwrap_or(u8::MAX),
                    bytes,
                }
            }
            None => ShortId {
                len: u8::MAX,
                bytes,
            },
        }
    }

    fn get(&self) -> Option<&[u8]> {
        self.bytes.get(..usize::from(self.len))
    }
}

/// Why a delivery did not happen.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DeliveryError {
    /// The subscriber's connection is gone or going.
    Gone,
    /// Its session holds as many unacknowledged bytes as it may; a queue
    /// keeps the message for later.
    Full,
}

impl Subscription {
    /// A subscription's fields, with those a publish reads laid out
    /// together.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        id: Bytes,
        display_destination: Option<Bytes>,
        key: u64,
        ack: AckMode,
        version: Version,
        outbox: Arc<Outbox>,
        source: Source,
        max_unacked: usize,
        prefetch: Option<usize>,
        pending: PendingSet,
    ) -> Subscription {
        Subscription {
            cancelled: std::sync::atomic::AtomicBool::new(false),
            version,
            fans_out: ack == AckMode::Auto && display_destination.is_none(),
            short_id: ShortId::new(&id),
            outbox,
            id,
            display_destination,
            key,
            ack,
            source,
            max_unacked,
            prefetch,
            pending: Mutex::new(pending),
        }
    }

    /// The subscription id, read from beside the subscription's other
    /// fields when it is short.
    pub(crate) fn id_bytes(&self) -> &[u8] {
        self.short_id.get().unwrap_or(&self.id)
    }

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

    /// Whether a queue may give this consumer a message of `memory` bytes
    /// now: its connection is open, its outbox has room (a deep queue must
    /// not overflow it in one go), and in client modes the prefetch and the
    /// session's unacknowledged bytes allow.
    pub(crate) fn has_capacity(&self, memory: usize) -> bool {
        if self.outbox.is_closed() || self.outbox.half_full(true) {
            return false;
        }
        if self.ack == AckMode::Auto {
            return true;
        }
        let pending = self.pending();
        pending.by_tag.len() < self.max_unacked
            && pending.budgets.session.has_room(memory + HOLD_OVERHEAD)
    }

    /// Delivers one message. In client ack modes the message is recorded as
    /// pending before it is queued, so an ACK can never overtake the record.
    /// `tails` shares the encoding between the subscribers of one publish.
    pub(crate) fn deliver(
        &self,
        message: &Arc<Message>,
        redelivered: bool,
        tails: Option<&mut Tails>,
    ) -> Result<(), DeliveryError> {
        if self.is_cancelled() {
            return Err(DeliveryError::Gone);
        }
        if self.ack == AckMode::Auto {
            let frame = message.encode(
                DeliveryHeaders {
                    subscription: &self.id,
                    destination: self.display_destination.as_deref(),
                    ack: None,
                    redelivered,
                    version: self.version,
                },
                tails,
            );
            return self.push(frame).map_err(|_| DeliveryError::Gone);
        }
        let tag = {
            let mut pending = self.pending();
            if self.is_cancelled() {
                return Err(DeliveryError::Gone);
            }
            // Only topics get past a full prefetch or a full session budget
            // (queues check capacity first): a topic subscriber that stopped
            // acknowledging is a slow consumer. So is one that would take the
            // broker past its unacknowledged-topic budget: a topic message
            // cannot wait, and the subscribers holding the most are the ones
            // that reach the cap.
            let held = if pending.by_tag.len() + pending.held_back.len() >= self.max_unacked {
                Err(HoldRefused::Prefetch)
            } else {
                Pending::hold(&self.source, &pending.budgets, message)
            };
            let held = match held {
                Ok(held) => held,
                // Another queue of the session took the room since the
                // capacity check: the message waits in its queue.
                Err(_) if matches!(self.source, Source::Queue(_)) => {
                    return Err(DeliveryError::Full);
                }
                Err(refused) => {
                    drop(pending);
                    tracing::debug!(
                        subscription = %String::from_utf8_lossy(&self.id),
                        cap = refused.as_str(),
                        "topic subscriber past its unacknowledged cap: slow consumer"
                    );
                    self.outbox.fail_unacked(refused.as_str());
                    return Err(DeliveryError::Gone);
                }
            };
            if let Some(prefetch) = self.prefetch {
                if pending.by_tag.len() >= prefetch || !pending.held_back.is_empty() {
                    pending.held_back.push_back((held, false));
                    return Ok(());
                }
                // Pushed under the lock, so that a message released by an
                // ACK on another task cannot be overtaken by a newer one.
                let tag = pending.next_tag;
                pending.next_tag += 1;
                pending.by_tag.insert(tag, held);
                let frame = self.frame(message, tag, redelivered, tails);
                return match self.push(frame) {
                    Ok(()) => Ok(()),
                    Err(PushError::Closed | PushError::Overflow) => {
                        let removed = pending.by_tag.remove(&tag);
                        drop(removed);
                        Err(DeliveryError::Gone)
                    }
                };
            }
            let tag = pending.next_tag;
            pending.next_tag += 1;
            pending.by_tag.insert(tag, held);
            tag
        };
        let frame = self.frame(message, tag, redelivered, tails);
        match self.push(frame) {
            Ok(()) => Ok(()),
            Err(PushError::Closed | PushError::Overflow) => {
                let removed = self.pending().by_tag.remove(&tag);
                drop(removed);
                Err(DeliveryError::Gone)
            }
        }
    }

    /// The MESSAGE frame of a client-mode delivery under `tag`.
    fn frame(
        &self,
        message: &Message,
        tag: u64,
        redelivered: bool,
        tails: Option<&mut Tails>,
    ) -> crate::outbox::OutFrame {
        let ack_id = format!("{}.{}", self.key, tag);
        message.encode(
            DeliveryHeaders {
                subscription: &self.id,
                destination: self.display_destination.as_deref(),
                ack: Some(ack_id.as_bytes()),
                redelivered,
                version: self.version,
            },
            tails,
        )
    }

    /// After an ACK or NACK on a topic subscription: delivers held-back
    /// messages, oldest first, while its `prefetch-count` allows.
    pub(crate) fn release_held_back(&self) {
        self.release(self.pending());
    }

    /// A NACK on a topic subscription: as RabbitMQ requeues the messages in
    /// the subscription's own queue, they go to the front of what it holds
    /// back and are delivered again, marked redelivered, as room allows.
    pub(crate) fn redeliver(&self, settled: Vec<Pending>) {
        let mut pending = self.pending();
        for held in settled.into_iter().rev() {
            pending.held_back.push_front((held, true));
        }
        self.release(pending);
    }

    fn release(&self, mut pending: MutexGuard<'_, PendingSet>) {
        let limit = self.prefetch.unwrap_or(self.max_unacked);
        while pending.by_tag.len() < limit && !self.is_cancelled() {
            let Some((held, redelivered)) = pending.held_back.pop_front() else {
                return;
            };
            let message = Arc::clone(&held.message);
            let tag = pending.next_tag;
            pending.next_tag += 1;
            pending.by_tag.insert(tag, held);
            let frame = self.frame(&message, tag, redelivered, None);
            // Like a queue's dispatch: the acknowledging session is not a
            // publisher to pause, and an overflow closes the subscriber.
            if self.outbox.push(frame).is_err() {
                let removed = pending.by_tag.remove(&tag);
                drop(removed);
                return;
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

    /// Messages delivered to this subscription and not yet acknowledged;
    /// nothing to look up in `ack:auto` mode, which holds none.
    pub(crate) fn unacked(&self) -> usize {
        if self.ack == AckMode::Auto {
            return 0;
        }
        let pending = self.pending();
        pending.by_tag.len() + pending.held_back.len()
    }

    /// Takes every pending message, oldest first (on unsubscribe or close).
    pub(crate) fn take_pending(&self) -> Vec<Pending> {
        let mut pending = self.pending();
        let held_back = std::mem::take(&mut pending.held_back);
        std::mem::take(&mut pending.by_tag)
            .into_values()
            .chain(held_back.into_iter().map(|(held, _)| held))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::{SHORT_ID, ShortId};

    #[test]
    fn a_short_id_is_kept_inline_and_a_long_one_is_not() {
        for id in [&b""[..], b"sub-0", &[b'i'; SHORT_ID]] {
            assert_eq!(ShortId::new(id).get(), Some(id));
        }
        assert_eq!(ShortId::new(&[b'i'; SHORT_ID + 1]).get(), None);
        assert_eq!(ShortId::new(&[b'i'; 300]).get(), None);
    }
}
