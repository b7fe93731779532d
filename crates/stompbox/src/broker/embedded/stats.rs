//! The embedded broker's figures for an operator: counters kept where
//! subscriptions, queues and messages come and go, so that
//! [`Broker::stats`](crate::broker::Broker::stats) reads a few atomics
//! however many sessions and destinations there are; the busiest
//! destinations, walked on request; and purging a queue.

use super::{Kind, Shared, USER_NAMESPACE};
use crate::broker::stats::Busiest;
use crate::broker::{BrokerError, BrokerStats, DestinationKind, DestinationStats};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};

/// Counts shared by the broker, its queues and its pending messages. Each
/// change is one relaxed atomic add, next to work that already takes a
/// lock or an atomic of its own (an enqueue, a dispatch, a pending entry):
/// a topic fan-out in `ack:auto` mode changes none of them.
#[derive(Debug, Default)]
pub(crate) struct Counters {
    /// Broker subscriptions (topic, pattern, user destination, queue).
    pub(crate) subscriptions: AtomicUsize,
    /// Queues in the registry.
    pub(crate) queues: AtomicUsize,
    /// Messages waiting in queues.
    pub(crate) ready: AtomicUsize,
    /// Queue messages delivered, not yet acknowledged.
    pub(crate) queue_unacked: AtomicUsize,
    /// Topic deliveries in client ack modes, not yet acknowledged.
    pub(crate) topic_unacked: AtomicUsize,
    /// Queue messages dropped by a NACK with `requeue:false`, since start.
    pub(crate) discarded: AtomicU64,
}

impl Shared {
    pub(super) fn stats(&self) -> BrokerStats {
        let c = &self.counters;
        let queues = c.queues.load(Ordering::Relaxed);
        BrokerStats {
            destinations: self.topics.destination_count()
                + self.user_topics.destination_count()
                + queues,
            queues,
            subscriptions: c.subscriptions.load(Ordering::Relaxed),
            queue_messages_ready: c.ready.load(Ordering::Relaxed),
            queue_messages_unacked: c.queue_unacked.load(Ordering::Relaxed),
            topic_messages_unacked: c.topic_unacked.load(Ordering::Relaxed),
            queue_messages_discarded: c.discarded.load(Ordering::Relaxed),
            relay: None,
        }
    }

    /// Topic names carry the first topic prefix: the registry is shared by
    /// every prefix, so `/topic/a` and another prefix's `a` are one topic.
    pub(super) fn destinations(&self, limit: usize) -> Vec<DestinationStats> {
        if limit == 0 {
            return Vec::new();
        }
        let mut busiest = Busiest::new(limit);
        let topic_prefix = self
            .config
            .topic_prefixes
            .first()
            .map_or("/topic/", String::as_str);
        for (registry, prefix, user) in [
            (&self.topics, topic_prefix, false),
            (&self.user_topics, USER_NAMESPACE, true),
        ] {
            registry.for_each_destination(|topic| {
                if !busiest.admits(topic.unacked, topic.subscribers) {
                    return;
                }
                let kind = match (user, topic.pattern) {
                    (true, _) => DestinationKind::User,
                    (false, true) => DestinationKind::Pattern,
                    (false, false) => DestinationKind::Topic,
                };
                busiest.offer(DestinationStats {
                    unacked: topic.unacked,
                    ..DestinationStats::new(
                        format!("{prefix}{}", topic.routing_key),
                        kind,
                        topic.subscribers,
                    )
                });
            });
        }
        // The registry lock only for taking the handles; each queue's own
        // lock only while reading its figures.
        let queues: Vec<_> = self.lock_queues().values().map(Arc::clone).collect();
        for queue in queues {
            let figures = queue.figures();
            if !busiest.admits(figures.ready + figures.unacked, figures.consumers) {
                continue;
            }
            busiest.offer(DestinationStats {
                ready: figures.ready,
                ready_bytes: figures.ready_bytes,
                unacked: figures.unacked,
                ..DestinationStats::new(&*queue.name, DestinationKind::Queue, figures.consumers)
            });
        }
        busiest.into_sorted()
    }

    pub(super) fn purge(&self, destination: &str) -> Result<usize, BrokerError> {
        match self.kind(destination) {
            Some(Kind::Queue) => {
                let queue = self
                    .lock_queues()
                    .get(destination)
                    .cloned()
                    .ok_or_else(|| BrokerError::UnknownDestination(destination.to_owned()))?;
                let removed = queue.purge();
                // Emptied and unconsumed, it goes, as it would after its
                // last message was consumed.
                self.drop_queue_if_unused(&queue);
                tracing::debug!(destination, removed, "queue purged");
                Ok(removed)
            }
            // Messages for a user go straight to that user's sessions: a
            // user destination never holds any waiting.
            Some(Kind::User(_)) => Ok(0),
            Some(Kind::Topic(_)) => Err(BrokerError::InvalidDestination(format!(
                "{destination}: only queues can be purged; a topic holds no waiting messages"
            ))),
            None => Err(BrokerError::InvalidDestination(format!(
                "{destination}: not a destination of this broker"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::super::{EmbeddedBroker, EmbeddedConfig};
    use crate::auth::User;
    use crate::broker::{
        AckMode, Broker, BrokerError, BrokerSession, DestinationKind, Publish, SessionContext,
        SubscribeRequest,
    };
    use crate::outbox::Outbox;
    use bytes::Bytes;
    use std::sync::Arc;
    use stompbox_codec::{Command, Frame, Headers, Version};

    async fn session(broker: &EmbeddedBroker, id: &str) -> Box<dyn BrokerSession> {
        let session_id: Arc<str> = id.into();
        let context = SessionContext {
            user: User::anonymous(&session_id),
            session_id,
            version: Version::V1_2,
            outbox: Arc::new(Outbox::new(1 << 20)),
            login: None,
            passcode: None,
            host: None,
        };
        broker.open_session(context).await.expect("session")
    }

    fn subscribe(id: &str, destination: &str, ack: AckMode) -> SubscribeRequest {
        SubscribeRequest {
            id: Bytes::copy_from_slice(id.as_bytes()),
            destination: destination.to_owned(),
            also: None,
            display_destination: None,
            ack,
            frame: Frame::new(Command::Subscribe),
            receipt: None,
        }
    }

    async fn publish(broker: &EmbeddedBroker, destination: &str, n: usize) {
        for i in 0..n {
            broker
                .publish(Publish {
                    destination: destination.to_owned(),
                    frame: Frame::new(Command::Send).body(format!("m{i}")),
                })
                .await
                .expect("publish");
        }
    }

    #[tokio::test]
    async fn counts_follow_subscriptions_queues_and_deliveries() {
        let broker = EmbeddedBroker::new(EmbeddedConfig::default());
        assert_eq!(broker.stats(), Default::default());
        let mut a = session(&broker, "a").await;
        a.subscribe(subscribe("1", "/topic/chat.lobby", AckMode::Auto))
            .expect("topic");
        a.subscribe(subscribe("2", "/topic/chat.#", AckMode::ClientIndividual))
            .expect("pattern");
        a.subscribe(subscribe("3", "/queue/jobs", AckMode::ClientIndividual))
            .expect("queue");
        let mut b = session(&broker, "b").await;
        b.subscribe(subscribe("1", "/topic/chat.lobby", AckMode::Auto))
            .expect("topic");
        publish(&broker, "/queue/idle", 2).await;
        publish(&broker, "/queue/jobs", 3).await;
        publish(&broker, "/topic/chat.lobby", 1).await;
        let stats = broker.stats();
        assert_eq!(stats.subscriptions, 4);
        assert_eq!(stats.queues, 2);
        // chat.lobby, chat.#, two queues.
        assert_eq!(stats.destinations, 4);
        assert_eq!(stats.queue_messages_ready, 2);
        assert_eq!(stats.queue_messages_unacked, 3);
        assert_eq!(stats.topic_messages_unacked, 1);
        assert!(stats.relay.is_none());

        b.unsubscribe(&Bytes::from_static(b"1"), &Headers::default(), None)
            .expect("unsubscribe");
        assert_eq!(broker.stats().subscriptions, 3);
        // The session goes: its unacknowledged queue messages wait again,
        // its topic copies are dropped, and its destinations go with it.
        drop(a);
        let stats = broker.stats();
        assert_eq!(stats.subscriptions, 0);
        assert_eq!(stats.queue_messages_ready, 5);
        assert_eq!(stats.queue_messages_unacked, 0);
        assert_eq!(stats.topic_messages_unacked, 0);
        assert_eq!(stats.destinations, 2);
        assert_eq!(stats.queues, 2);
    }

    #[tokio::test]
    async fn destinations_list_the_busiest_first_within_the_limit() {
        let broker = EmbeddedBroker::new(EmbeddedConfig::default());
        let mut a = session(&broker, "a").await;
        a.subscribe(subscribe("1", "/topic/quiet", AckMode::Auto))
            .expect("topic");
        a.subscribe(subscribe("2", "/topic/x.*.#", AckMode::Auto))
            .expect("pattern");
        a.subscribe(subscribe("3", "/queue/consumed", AckMode::ClientIndividual))
            .expect("queue");
        let mut b = session(&broker, "b").await;
        b.subscribe(subscribe("1", "/topic/quiet", AckMode::Auto))
            .expect("topic");
        publish(&broker, "/queue/deep", 5).await;
        publish(&broker, "/queue/consumed", 2).await;
        let all = broker.destinations(10);
        let names: Vec<_> = all.iter().map(|d| (d.name.as_str(), d.kind)).collect();
        assert_eq!(
            names,
            [
                ("/queue/deep", DestinationKind::Queue),
                ("/queue/consumed", DestinationKind::Queue),
                ("/topic/quiet", DestinationKind::Topic),
                ("/topic/x.*.#", DestinationKind::Pattern),
            ]
        );
        assert_eq!(
            (all[0].ready, all[0].unacked, all[0].subscribers),
            (5, 0, 0)
        );
        assert!(all[0].ready_bytes > 0);
        assert_eq!(
            (all[1].ready, all[1].unacked, all[1].subscribers),
            (0, 2, 1)
        );
        assert_eq!(all[2].subscribers, 2);
        let top: Vec<_> = broker.destinations(2).into_iter().map(|d| d.name).collect();
        assert_eq!(top, ["/queue/deep", "/queue/consumed"]);
        assert!(broker.destinations(0).is_empty());
    }

    #[tokio::test]
    async fn purge_empties_ready_messages_and_gives_their_memory_back() {
        let broker = EmbeddedBroker::new(EmbeddedConfig {
            max_unacked: 2,
            ..EmbeddedConfig::default()
        });
        let mut consumer = session(&broker, "c").await;
        consumer
            .subscribe(subscribe("1", "/queue/jobs", AckMode::ClientIndividual))
            .expect("queue");
        publish(&broker, "/queue/jobs", 5).await;
        let before = broker.stats();
        assert_eq!(
            (before.queue_messages_ready, before.queue_messages_unacked),
            (3, 2)
        );
        let held = broker.memory().queue_bytes;
        assert_eq!(broker.purge("/queue/jobs").await, Ok(3));
        let unacked = 2;
        let after = broker.stats();
        assert_eq!(after.queue_messages_ready, 0);
        assert_eq!(after.queue_messages_unacked, unacked);
        let left = broker.memory().queue_bytes;
        assert!(left > 0 && left < held, "{left} of {held}");
        drop(consumer);
        // The unacknowledged ones came back when their consumer went.
        assert_eq!(broker.stats().queue_messages_ready, unacked);
        assert_eq!(broker.purge("/queue/jobs").await, Ok(unacked));
        assert_eq!(broker.memory().queue_bytes, 0);
        // Emptied and unconsumed, the queue is gone.
        assert_eq!(broker.stats().queues, 0);
        assert!(matches!(
            broker.purge("/queue/jobs").await,
            Err(BrokerError::UnknownDestination(_))
        ));
        assert!(matches!(
            broker.purge("/topic/chat").await,
            Err(BrokerError::InvalidDestination(m)) if m.contains("only queues")
        ));
        assert!(matches!(
            broker.purge("/elsewhere/x").await,
            Err(BrokerError::InvalidDestination(_))
        ));
        let user = broker.user_destination("u.abc");
        assert_eq!(broker.purge(&user).await, Ok(0));
    }
}
