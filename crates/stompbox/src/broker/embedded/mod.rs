//! The embedded in-memory broker: the default, nothing to install.
//!
//! `/topic/…` is publish/subscribe with RabbitMQ's topic wildcards; `/queue/…`
//! is point-to-point with competing consumers, acknowledgements and
//! redelivery, holding messages while nobody consumes (bounded). Both match
//! what clients see through RabbitMQ's STOMP plugin, so an application can move
//! to the relay without a change.

mod queue;
mod stats;
mod subscription;
mod topic;

use super::message::{self, Message};
use super::{
    AckMode, AckTarget, BoxFuture, Broker, BrokerError, BrokerMemory, BrokerSession, BrokerStats,
    DestinationStats, Publish, SessionContext, SubscribeRequest,
};
use crate::budget::Budget;
use crate::small_map::SmallMap;
use bytes::{BufMut, Bytes, BytesMut};
use queue::{Enqueued, Queue, QueueLimits};
use stats::Counters;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use stompbox_codec::Headers;
use subscription::{PendingSet, Source, Subscription, TopicHolders, UnackedBudgets};
use topic::TopicRegistry;

/// Settings of the embedded broker. Every field has a documented default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct EmbeddedConfig {
    /// Prefixes of publish/subscribe destinations. Default `["/topic/"]`.
    pub topic_prefixes: Vec<String>,
    /// Prefixes of point-to-point destinations. Default `["/queue/"]`.
    pub queue_prefixes: Vec<String>,
    /// Most messages held by one queue. Default 10,000.
    pub max_queue_messages: usize,
    /// Most memory the messages waiting in one queue may occupy (each
    /// message counted as it sits in memory: body, every header entry,
    /// bookkeeping). Default 64 MiB.
    pub max_queue_bytes: usize,
    /// Most queues at once. Default 100,000.
    pub max_queues: usize,
    /// Most memory all queue messages together may occupy, from SEND until
    /// acknowledged: waiting for a consumer, and delivered but not yet
    /// acknowledged (as RabbitMQ counts unacknowledged messages in queue
    /// memory). A SEND past it is refused with an ERROR naming it.
    /// Default 256 MiB.
    pub max_total_queue_bytes: usize,
    /// Most unacknowledged messages per subscription in client ack modes
    /// (the prefetch). A queue stops dispatching to a consumer at this
    /// number; a topic subscriber past it is a slow consumer. A client's
    /// `prefetch-count` may lower it for its subscription, never raise it;
    /// a topic subscription's messages held back past its `prefetch-count`
    /// count here too. Default 1,000.
    pub max_unacked: usize,
    /// Most memory of the messages one session holds unacknowledged, over
    /// all its subscriptions (queue and topic), so that one connection
    /// cannot take a server-wide cap alone. A queue stops dispatching to
    /// the session at it; a topic subscriber past it is a slow consumer.
    /// Default 16 MiB.
    pub max_session_unacked_bytes: usize,
    /// Most memory of topic messages delivered in client ack modes and not
    /// yet acknowledged, over the whole server; a message held by many
    /// subscribers counts once. A topic message cannot wait, so at the cap
    /// the session holding the most is cut off as a slow consumer to make
    /// room; the cap may be passed by at most its share while it goes.
    /// Default 64 MiB.
    pub max_total_topic_unacked_bytes: usize,
    /// Most words in a topic pattern (a routing key with a `*` or `#`
    /// word); a longer one is refused at SUBSCRIBE. Each word of a pattern
    /// is a node of the matching trie a publish may walk. Default 32: real
    /// routing keys have a handful of words, and 32 keeps one pattern's
    /// nodes to a few KiB.
    pub max_pattern_words: usize,
    /// Most wildcard topic subscriptions one session may hold. Together
    /// with `max_pattern_words` this bounds what one connection adds to
    /// the trie (128 × 32 words: about half a MiB, the size of its
    /// outbox). Default 128.
    pub max_wildcard_subscriptions: usize,
}

impl Default for EmbeddedConfig {
    fn default() -> EmbeddedConfig {
        EmbeddedConfig {
            topic_prefixes: vec!["/topic/".into()],
            queue_prefixes: vec!["/queue/".into()],
            max_queue_messages: 10_000,
            max_queue_bytes: 64 * 1024 * 1024,
            max_queues: 100_000,
            max_total_queue_bytes: 256 * 1024 * 1024,
            max_unacked: 1_000,
            max_session_unacked_bytes: 16 * 1024 * 1024,
            max_total_topic_unacked_bytes: 64 * 1024 * 1024,
            max_pattern_words: 32,
            max_wildcard_subscriptions: 128,
        }
    }
}

#[derive(Debug)]
struct Shared {
    config: EmbeddedConfig,
    topics: TopicRegistry,
    user_topics: TopicRegistry,
    queues: Mutex<HashMap<Box<str>, Arc<Queue>>>,
    /// Memory of every queue message, waiting or unacknowledged.
    queued_bytes: Arc<Budget>,
    /// Memory of unacknowledged topic messages, each counted once.
    topic_unacked_bytes: Arc<Budget>,
    /// Each session's share of those, to find the largest at the cap.
    topic_holders: Arc<TopicHolders>,
    message_prefix: String,
    next_message: AtomicU64,
    /// Figures for an operator, kept as things change.
    counters: Arc<Counters>,
}

/// The embedded in-memory broker.
#[derive(Debug, Clone)]
pub struct EmbeddedBroker {
    shared: Arc<Shared>,
}

enum Kind<'a> {
    Topic(&'a str),
    Queue,
    User(&'a str),
}

/// The internal namespace of user destinations. It is under no client
/// prefix, so no client can subscribe or send to it, and it has its own
/// registry, so no `/topic/#` subscription can reach it.
const USER_NAMESPACE: &str = "/stompbox-user/";

impl EmbeddedBroker {
    /// A broker with `config`.
    pub fn new(config: EmbeddedConfig) -> EmbeddedBroker {
        // Message ids stay unique across restarts of the process, so a
        // client that deduplicates by id is not fooled after a restart.
        let epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_micros())
            .unwrap_or_default();
        let queued_bytes = Arc::new(Budget::new(config.max_total_queue_bytes));
        let topic_unacked_bytes = Arc::new(Budget::new(config.max_total_topic_unacked_bytes));
        EmbeddedBroker {
            shared: Arc::new(Shared {
                config,
                topics: TopicRegistry::default(),
                user_topics: TopicRegistry::default(),
                queues: Mutex::new(HashMap::new()),
                queued_bytes,
                topic_unacked_bytes,
                topic_holders: Arc::default(),
                message_prefix: format!("{epoch:x}-"),
                next_message: AtomicU64::new(1),
                counters: Arc::default(),
            }),
        }
    }
}

impl Shared {
    fn kind<'a>(&self, destination: &'a str) -> Option<Kind<'a>> {
        if let Some(key) = destination.strip_prefix(USER_NAMESPACE) {
            return Some(Kind::User(key));
        }
        if let Some(key) = self
            .config
            .topic_prefixes
            .iter()
            .find_map(|p| destination.strip_prefix(p.as_str()))
        {
            return Some(Kind::Topic(key));
        }
        self.config
            .queue_prefixes
            .iter()
            .any(|p| destination.starts_with(p.as_str()))
            .then_some(Kind::Queue)
    }

    fn lock_queues(&self) -> MutexGuard<'_, HashMap<Box<str>, Arc<Queue>>> {
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn queue(&self, name: &str) -> Result<Arc<Queue>, BrokerError> {
        let mut queues = self.lock_queues();
        if let Some(queue) = queues.get(name) {
            return Ok(Arc::clone(queue));
        }
        if queues.len() >= self.config.max_queues {
            return Err(BrokerError::TooManyDestinations {
                limit: self.config.max_queues,
            });
        }
        let queue = Arc::new(Queue::new(
            name,
            QueueLimits {
                max_messages: self.config.max_queue_messages,
                max_bytes: self.config.max_queue_bytes,
                total: Arc::clone(&self.queued_bytes),
                counters: Arc::clone(&self.counters),
            },
        ));
        queues.insert(name.into(), Arc::clone(&queue));
        self.counters.queues.fetch_add(1, Ordering::Relaxed);
        Ok(queue)
    }

    fn drop_queue_if_unused(&self, queue: &Queue) {
        let mut queues = self.lock_queues();
        // Only the queue registered under its name is counted out: a stale
        // handle's queue left the registry already.
        if queue.delete_if_unused()
            && queues
                .get(&queue.name)
                .is_some_and(|q| std::ptr::eq(&**q, queue))
        {
            queues.remove(&queue.name);
            self.counters.queues.fetch_sub(1, Ordering::Relaxed);
        }
    }

    fn publish(&self, publish: Publish) -> Result<(), BrokerError> {
        let id = self.next_message.fetch_add(1, Ordering::Relaxed);
        let mut message_id = BytesMut::with_capacity(self.message_prefix.len() + 20);
        message_id.put_slice(self.message_prefix.as_bytes());
        // The decimal digits, written here rather than through a String.
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut rest = id;
        loop {
            at -= 1;
            digits[at] = b'0' + (rest % 10) as u8;
            rest /= 10;
            if rest == 0 {
                break;
            }
        }
        message_id.put_slice(&digits[at..]);
        let destination = publish.destination;
        let message = Arc::new(Message::new(
            message_id.freeze(),
            &destination,
            publish.frame,
        ));
        match self.kind(&destination) {
            Some(Kind::Topic(routing_key)) => {
                self.publish_topic(&self.topics, routing_key, &message, false);
                Ok(())
            }
            Some(Kind::User(key)) => {
                self.publish_topic(&self.user_topics, key, &message, true);
                Ok(())
            }
            Some(Kind::Queue) => {
                let mut message = message;
                loop {
                    match self.queue(&destination)?.enqueue(message)? {
                        Enqueued::Done => return Ok(()),
                        Enqueued::Deleted(m) => message = m,
                    }
                }
            }
            None => Err(BrokerError::InvalidDestination(destination)),
        }
    }

    /// `usually_one`: the destination mostly has a single subscriber (a
    /// user destination; a session's own has exactly one), so the first
    /// delivery that cannot reuse a whole frame is encoded straight into
    /// its frame, and only later ones share an encoded tail (which costs a
    /// buffer and a copy more when nothing else uses it).
    fn publish_topic(
        &self,
        registry: &TopicRegistry,
        routing_key: &str,
        message: &Arc<Message>,
        usually_one: bool,
    ) {
        // The encoded tail of the message is shared by every delivery of
        // this publish, and goes with it: a message held unacknowledged
        // holds its body once, in its frame.
        let mut fan_out = message::FanOut::new(message);
        let mut direct = usually_one;
        registry.for_each_match(routing_key, |subscription| {
            if subscription.is_cancelled() {
                return;
            }
            if !subscription.fans_out {
                let tails = if std::mem::take(&mut direct) {
                    None
                } else {
                    Some(fan_out.tails())
                };
                let _ = subscription.deliver(message, false, tails);
                return;
            }
            let frame = fan_out.frame(subscription.id_bytes(), None, subscription.version);
            // A full outbox closes that connection as a slow consumer; the
            // other subscribers are unaffected.
            let _ = subscription.outbox.deliver(frame);
        });
    }
}

impl Broker for EmbeddedBroker {
    fn open_session(
        &self,
        context: SessionContext,
    ) -> BoxFuture<'_, Result<Box<dyn BrokerSession>, BrokerError>> {
        let topic_unacked = Arc::new(Budget::new(usize::MAX));
        self.shared
            .topic_holders
            .register(&topic_unacked, &context.outbox);
        let session = EmbeddedSession {
            unacked: Arc::new(Budget::new(self.shared.config.max_session_unacked_bytes)),
            topic_unacked,
            shared: Arc::clone(&self.shared),
            context,
            subscriptions: SmallMap::new(),
            by_key: SmallMap::new(),
            next_key: 1,
            wildcard_subscriptions: 0,
        };
        Box::pin(async move { Ok(Box::new(session) as Box<dyn BrokerSession>) })
    }

    fn publish(&self, message: Publish) -> BoxFuture<'_, Result<(), BrokerError>> {
        let result = self.shared.publish(message);
        Box::pin(async move { result })
    }

    fn handles(&self, destination: &str) -> bool {
        matches!(
            self.shared.kind(destination),
            Some(Kind::Topic(_) | Kind::Queue)
        )
    }

    fn user_destination(&self, key: &str) -> String {
        format!("{USER_NAMESPACE}{key}")
    }

    fn is_user_destination(&self, destination: &str) -> bool {
        destination.starts_with(USER_NAMESPACE)
    }

    fn availability(&self) -> tokio::sync::watch::Receiver<bool> {
        // Nothing ever changes it; the sender may go at once.
        tokio::sync::watch::channel(true).1
    }

    fn memory(&self) -> BrokerMemory {
        BrokerMemory {
            queue_bytes: self.shared.queued_bytes.used(),
            topic_unacked_bytes: self.shared.topic_unacked_bytes.used(),
        }
    }

    fn stats(&self) -> BrokerStats {
        self.shared.stats()
    }

    fn destinations(&self, limit: usize) -> Vec<DestinationStats> {
        self.shared.destinations(limit)
    }

    /// Purges a queue by its name (`/queue/jobs`). A user destination
    /// answers `Ok(0)`: messages for a user go straight to its sessions and
    /// never wait. An unknown queue is
    /// [`BrokerError::UnknownDestination`].
    fn purge<'a>(&'a self, destination: &'a str) -> BoxFuture<'a, Result<usize, BrokerError>> {
        Box::pin(std::future::ready(self.shared.purge(destination)))
    }

    fn prefixes(&self) -> Vec<String> {
        let config = &self.shared.config;
        config
            .topic_prefixes
            .iter()
            .chain(&config.queue_prefixes)
            .cloned()
            .collect()
    }
}

/// One client session on the embedded broker.
#[derive(Debug)]
struct EmbeddedSession {
    shared: Arc<Shared>,
    /// Memory of the messages this session holds unacknowledged.
    unacked: Arc<Budget>,
    /// The topic part of it, which the server-wide topic cap compares.
    topic_unacked: Arc<Budget>,
    context: SessionContext,
    /// By client id; a user destination has two subscriptions under one id.
    subscriptions: SmallMap<Bytes, Vec<Arc<Subscription>>>,
    by_key: SmallMap<u64, Bytes>,
    next_key: u64,
    /// Wildcard topic subscriptions held, against `max_wildcard_subscriptions`.
    wildcard_subscriptions: usize,
}

impl EmbeddedSession {
    /// Everything asked took effect synchronously: answer the receipt now.
    fn answer(&self, receipt: Option<Bytes>) {
        if let Some(id) = receipt {
            let _ = self.context.outbox.push(crate::frames::receipt_frame(&id));
        }
    }

    fn subscribe_one(
        &mut self,
        request: &SubscribeRequest,
        destination: &str,
        prefetch: Option<usize>,
    ) -> Result<Arc<Subscription>, BrokerError> {
        let key = self.next_key;
        self.next_key += 1;
        let max_unacked = self.shared.config.max_unacked;
        // RabbitMQ bounds a subscription's messages in flight by its
        // `prefetch-count`, never past the caps here. A queue holds the
        // rest back for other consumers; a topic subscription has no queue
        // of its own, so it holds them itself, up to `max_unacked`.
        let limit = prefetch.filter(|&p| p < max_unacked);
        let make = |source: Source| {
            let (max_unacked, prefetch) = match (&source, limit) {
                (Source::Queue(_), Some(limit)) => (limit, None),
                (_, limit) => (max_unacked, limit),
            };
            Arc::new(Subscription::new(
                request.id.clone(),
                request
                    .display_destination
                    .as_ref()
                    .map(|d| Bytes::copy_from_slice(d.as_bytes())),
                key,
                request.ack,
                self.context.version,
                Arc::clone(&self.context.outbox),
                source,
                max_unacked,
                prefetch,
                PendingSet::new(UnackedBudgets {
                    session: Arc::clone(&self.unacked),
                    topic: Arc::clone(&self.shared.topic_unacked_bytes),
                    session_topic: Arc::clone(&self.topic_unacked),
                    holders: Arc::clone(&self.shared.topic_holders),
                    counters: Arc::clone(&self.shared.counters),
                }),
            ))
        };
        let subscription = match self.shared.kind(destination) {
            Some(Kind::Topic(routing_key)) => {
                if topic::is_pattern(routing_key) {
                    admit_pattern(
                        &self.shared.config,
                        &mut self.wildcard_subscriptions,
                        routing_key,
                    )?;
                }
                let subscription = make(Source::Topic {
                    routing_key: routing_key.into(),
                });
                self.shared
                    .topics
                    .add(routing_key, Arc::clone(&subscription));
                subscription
            }
            Some(Kind::User(key)) => {
                let subscription = make(Source::User { key: key.into() });
                self.shared.user_topics.add(key, Arc::clone(&subscription));
                subscription
            }
            Some(Kind::Queue) => loop {
                let queue = self.shared.queue(destination)?;
                let subscription = make(Source::Queue(Arc::clone(&queue)));
                // The queue may have been deleted between lookup and use.
                if queue.add_consumer(Arc::clone(&subscription)).is_ok() {
                    break subscription;
                }
            },
            None => return Err(BrokerError::InvalidDestination(destination.to_owned())),
        };
        self.by_key.insert(key, request.id.clone());
        self.shared
            .counters
            .subscriptions
            .fetch_add(1, Ordering::Relaxed);
        Ok(subscription)
    }

    fn remove(&mut self, subscription: &Arc<Subscription>) {
        subscription.cancel();
        self.by_key.remove(&subscription.key);
        self.shared
            .counters
            .subscriptions
            .fetch_sub(1, Ordering::Relaxed);
        match &subscription.source {
            Source::Topic { routing_key } => {
                if topic::is_pattern(routing_key) {
                    self.wildcard_subscriptions = self.wildcard_subscriptions.saturating_sub(1);
                }
                self.shared.topics.remove(routing_key, subscription);
                // Topic messages are not kept for anyone else.
                drop(subscription.take_pending());
            }
            Source::User { key } => {
                self.shared.user_topics.remove(key, subscription);
                drop(subscription.take_pending());
            }
            Source::Queue(queue) => {
                queue.remove_consumer(subscription);
                self.shared.drop_queue_if_unused(queue);
            }
        }
    }

    fn find_pending(&self, target: &AckTarget) -> Option<(&Arc<Subscription>, u64)> {
        match target {
            AckTarget::AckId(ack_id) => {
                let text = std::str::from_utf8(ack_id).ok()?;
                let (key, tag) = text.split_once('.')?;
                let key = key.parse::<u64>().ok()?;
                let id = self.by_key.get(&key)?;
                let subscription = self.subscriptions.get(id)?.iter().find(|s| s.key == key)?;
                let tag = tag.parse::<u64>().ok()?;
                subscription
                    .pending()
                    .by_tag
                    .contains_key(&tag)
                    .then_some((subscription, tag))
            }
            AckTarget::MessageOnSubscription {
                message_id,
                subscription,
            } => self
                .subscriptions
                .get(subscription)?
                .iter()
                .find_map(|s| Some((s, s.tag_of(message_id)?))),
            AckTarget::MessageId(message_id) => self
                .subscriptions
                .values()
                .flatten()
                .find_map(|s| Some((s, s.tag_of(message_id)?))),
        }
    }
}

impl BrokerSession for EmbeddedSession {
    fn subscribe(&mut self, request: SubscribeRequest) -> Result<(), BrokerError> {
        let prefetch = prefetch_count(&request)?;
        let mut made = Vec::with_capacity(2);
        for destination in std::iter::once(&request.destination).chain(request.also.as_ref()) {
            match self.subscribe_one(&request, destination, prefetch) {
                Ok(subscription) => made.push(subscription),
                Err(e) => {
                    for subscription in made {
                        self.remove(&subscription);
                    }
                    return Err(e);
                }
            }
        }
        self.subscriptions.insert(request.id, made);
        self.answer(request.receipt);
        Ok(())
    }

    fn unsubscribe(
        &mut self,
        id: &Bytes,
        _headers: &Headers,
        receipt: Option<Bytes>,
    ) -> Result<(), BrokerError> {
        let subscriptions = self.subscriptions.remove(id).ok_or_else(|| {
            BrokerError::UnknownSubscription(String::from_utf8_lossy(id).into_owned())
        })?;
        for subscription in subscriptions {
            self.remove(&subscription);
        }
        // What those held unacknowledged went back to the session's budget,
        // which its other queues may have been waiting for.
        if self.unacked.take_refused() {
            self.redispatch();
        }
        self.answer(receipt);
        Ok(())
    }

    fn send(&mut self, message: Publish, receipt: Option<Bytes>) -> Result<(), BrokerError> {
        self.shared.publish(message)?;
        self.answer(receipt);
        Ok(())
    }

    fn ack(
        &mut self,
        target: &AckTarget,
        nack: bool,
        headers: &Headers,
        receipt: Option<Bytes>,
    ) -> Result<(), BrokerError> {
        let unknown = || BrokerError::UnknownAck(describe(target));
        let (subscription, tag) = self.find_pending(target).ok_or_else(unknown)?;
        let settled = subscription.settle(tag).ok_or_else(unknown)?;
        // RabbitMQ's `requeue:false` rejects for good. With no dead-letter
        // queue here the message is dropped, as RabbitMQ drops it from a
        // queue without a dead-letter exchange; the count tells an operator.
        let requeue = !(nack && headers.get("requeue") == Some("false"));
        match &subscription.source {
            Source::Queue(queue) if nack && requeue => queue.requeue(settled),
            Source::Queue(queue) => {
                if !requeue {
                    self.shared
                        .counters
                        .discarded
                        .fetch_add(settled.len() as u64, Ordering::Relaxed);
                }
                drop(settled);
                queue.dispatch();
            }
            _ if nack && requeue => subscription.redeliver(settled),
            _ => {
                drop(settled);
                subscription.release_held_back();
            }
        }
        // The settled messages freed room in the session's unacknowledged
        // budget. Only when that budget turned a delivery away may other
        // queues of the session be waiting for it; offering every queue
        // again on every ACK would make an ACK cost the session's
        // subscription count.
        if self.unacked.take_refused() {
            self.redispatch();
        }
        self.answer(receipt);
        Ok(())
    }

    fn drained(&mut self) {
        self.redispatch();
    }

    fn disconnect(&mut self, receipt: Option<Bytes>) -> BoxFuture<'_, ()> {
        let subscriptions: Vec<_> = self.subscriptions.drain().flat_map(|(_, s)| s).collect();
        for subscription in subscriptions {
            self.remove(&subscription);
        }
        self.answer(receipt);
        Box::pin(std::future::ready(()))
    }
}

impl EmbeddedSession {
    fn redispatch(&self) {
        for subscription in self.subscriptions.values().flatten() {
            if let Source::Queue(queue) = &subscription.source {
                queue.dispatch();
            }
        }
    }
}

impl Drop for EmbeddedSession {
    fn drop(&mut self) {
        let subscriptions: Vec<_> = self.subscriptions.drain().flat_map(|(_, s)| s).collect();
        for subscription in subscriptions {
            self.remove(&subscription);
        }
        self.shared.topic_holders.unregister(&self.topic_unacked);
    }
}

/// The `prefetch-count` of a SUBSCRIBE in a client ack mode, as RabbitMQ
/// reads it: a whole number, 0 for no limit of its own (the broker's caps
/// still apply). `ack:auto` ignores it, as RabbitMQ does.
fn prefetch_count(request: &SubscribeRequest) -> Result<Option<usize>, BrokerError> {
    const HEADER: &str = "prefetch-count";
    if request.ack == AckMode::Auto {
        return Ok(None);
    }
    let Some(value) = request.frame.headers.get_bytes(HEADER) else {
        return Ok(None);
    };
    let invalid = || BrokerError::InvalidHeader {
        header: HEADER,
        value: String::from_utf8_lossy(value).into_owned(),
        expected: "a whole number of messages (0 for no limit of its own)",
    };
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(invalid());
    }
    // All digits: only a value past `usize` fails to parse, and any such
    // value is past every cap anyway.
    let count = std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse::<usize>().ok())
        .unwrap_or(usize::MAX);
    Ok((count > 0).then_some(count))
}

/// Counts a wildcard subscription against a session's caps (`held` is its
/// count so far), or refuses it.
fn admit_pattern(
    config: &EmbeddedConfig,
    held: &mut usize,
    pattern: &str,
) -> Result<(), BrokerError> {
    let words = topic::word_count(pattern);
    if words > config.max_pattern_words {
        return Err(BrokerError::PatternTooLong {
            words,
            limit: config.max_pattern_words,
        });
    }
    if *held >= config.max_wildcard_subscriptions {
        return Err(BrokerError::TooManyWildcardSubscriptions {
            limit: config.max_wildcard_subscriptions,
        });
    }
    *held += 1;
    Ok(())
}

fn describe(target: &AckTarget) -> String {
    match target {
        AckTarget::AckId(id) => format!("id '{}'", String::from_utf8_lossy(id)),
        AckTarget::MessageOnSubscription {
            message_id,
            subscription,
        } => format!(
            "message-id '{}' on subscription '{}'",
            String::from_utf8_lossy(message_id),
            String::from_utf8_lossy(subscription)
        ),
        AckTarget::MessageId(id) => format!("message-id '{}'", String::from_utf8_lossy(id)),
    }
}
