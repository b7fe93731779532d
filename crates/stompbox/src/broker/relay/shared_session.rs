//! A client session of the shared relay: no broker connection of its own.
//!
//! Its SENDs to a destination go on that destination's pool link (where
//! its shared subscription is too), or, while that link is down, on the
//! next one up. A destination whose SENDs went elsewhere stays there while
//! the broker has not confirmed them all, so that one destination's
//! messages keep their order when its own link comes back (a broker orders
//! only what one connection sends).
//!
//! A subscription in `ack:auto` mode to a destination every
//! subscriber gets a copy of (`/topic/…`, `/exchange/…`, a user
//! destination) with no broker options joins the instance's one upstream
//! subscription of that destination, fanned out locally. Other `ack:auto`
//! subscriptions (queues, durable or with broker options) get an upstream
//! subscription of their own on a pool link. Subscriptions in the client
//! ack modes get one on an acknowledging link, with `prefetch` so that the
//! broker hands a slow client only so many at a time, and ack tags of the
//! relay's own, mapped back to the broker's on ACK and NACK.

use super::RelayConfig;
use super::pool::{
    AckLink, LocalSubscriber, OwnSubscription, Pool, ReceiptJoin, SessionState, TopicEntry, lock,
};
use super::session::{check_durable, durable_id};
use super::stats::SessionSubscriptions;
use crate::auth::User;
use crate::broker::{
    AckMode, AckTarget, BoxFuture, BrokerError, BrokerSession, Publish, SessionContext,
    SubscribeRequest,
};
use crate::frames::receipt_frame;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use stompbox_codec::{Command, Frame, Headers, header};

/// RabbitMQ's per-subscription bound on unacknowledged messages.
const PREFETCH_COUNT: &str = "prefetch-count";
/// Entries of [`SharedSession::away`] below which it is not pruned.
const AWAY_PRUNE_MIN: usize = 16;
/// One upstream side of a client subscription (a user destination has two).
#[derive(Debug)]
enum Held {
    Topic {
        entry: Arc<TopicEntry>,
        subscriber: Arc<LocalSubscriber>,
    },
    Own {
        link: usize,
        upstream_id: Bytes,
    },
    Acked {
        link: Arc<AckLink>,
        upstream_id: Bytes,
    },
}

#[derive(Debug)]
pub(crate) struct SharedSession {
    pool: Arc<Pool>,
    state: Arc<SessionState>,
    /// Pool links this session sent on (a bit each): its DISCONNECT's
    /// receipt waits for them.
    used_links: u64,
    /// Destinations (broker form) whose last SEND went on a pool link other
    /// than their own, and that link: their next SEND goes there too while
    /// it holds SENDs of this session the broker has not confirmed. Entries
    /// whose link holds none are stale and pruned when the map doubles, so
    /// it stays within about twice the destinations still in flight.
    away: HashMap<Bytes, usize>,
    /// The size of `away` at which it is pruned next.
    prune_away_at: usize,
    /// Acknowledging links this session sent ACK or NACK on: its
    /// DISCONNECT's receipt waits for them too.
    used_ack_links: Vec<Arc<AckLink>>,
    user: User,
    subscriptions: HashMap<Bytes, Vec<Held>>,
    /// Their sides, in the relay's figures.
    counted: SessionSubscriptions,
}

/// True for a destination where every subscriber gets its own copy, so one
/// upstream subscription can serve all of an instance's subscribers.
fn fans_out(config: &RelayConfig, destination: &str) -> bool {
    destination.starts_with("/topic/")
        || destination.starts_with("/exchange/")
        || config.is_user_destination(destination)
}

impl SharedSession {
    pub(crate) fn open(pool: Arc<Pool>, context: SessionContext) -> SharedSession {
        let counted = SessionSubscriptions::new(&pool.counters);
        SharedSession {
            state: SessionState::new(context.outbox, context.version),
            pool,
            used_links: 0,
            away: HashMap::new(),
            prune_away_at: AWAY_PRUNE_MIN,
            used_ack_links: Vec::new(),
            user: context.user,
            subscriptions: HashMap::new(),
            counted,
        }
    }

    fn config(&self) -> &RelayConfig {
        &self.pool.config
    }

    /// The upstream SUBSCRIBE of a subscription of its own.
    fn subscribe_frame(&self, request: &SubscribeRequest, destination: &str, id: &Bytes) -> Frame {
        let acked = request.ack != AckMode::Auto || !fans_out(self.config(), destination);
        let mut frame = Frame::new(Command::Subscribe)
            .header(header::DESTINATION, &self.config().broker_form(destination))
            .header(
                header::ACK,
                if acked { "client-individual" } else { "auto" },
            );
        frame
            .headers
            .push(Bytes::from_static(header::ID.as_bytes()), id.clone());
        // A client's own `prefetch-count`, where the operator lets it
        // through, may only lower the link's bound: RabbitMQ reads the
        // first of two, so it replaces the relay's instead of following it.
        let own_prefetch = self
            .config()
            .forwards_header(Command::Subscribe, PREFETCH_COUNT.as_bytes())
            .then(|| {
                request
                    .frame
                    .headers
                    .get(PREFETCH_COUNT)?
                    .parse::<usize>()
                    .ok()
            })
            .flatten()
            .filter(|&count| count > 0);
        if acked {
            // RabbitMQ's and ActiveMQ's names for the same bound; each
            // broker ignores the other's.
            let prefetch = self.config().prefetch.max(1);
            let prefetch = own_prefetch.map_or(prefetch, |own| own.min(prefetch));
            let prefetch = prefetch.to_string();
            frame.headers.push_str(PREFETCH_COUNT, &prefetch);
            frame.headers.push_str("activemq.prefetchSize", &prefetch);
        }
        for (name, value) in request.frame.headers.iter_bytes() {
            if acked && own_prefetch.is_some() && name.as_ref() == PREFETCH_COUNT.as_bytes() {
                continue;
            }
            if self.config().forwards_header(Command::Subscribe, name) {
                frame.headers.push(name.clone(), value.clone());
            }
        }
        frame
    }

    /// Ends one upstream side; `receipt` rides on its last frame.
    fn release(&self, client_id: &Bytes, held: Held, headers: &Headers, receipt: Option<Bytes>) {
        let unsubscribe = |upstream_id: Bytes| {
            let mut frame = Frame::new(Command::Unsubscribe);
            frame
                .headers
                .push(Bytes::from_static(header::ID.as_bytes()), upstream_id);
            // `durable:true` makes RabbitMQ delete a durable subscription.
            for (name, value) in headers.iter_bytes() {
                if self.config().forwards_header(Command::Unsubscribe, name) {
                    frame.headers.push(name.clone(), value.clone());
                }
            }
            frame
        };
        let with = |receipt: Option<Bytes>| receipt.map(|r| (Arc::clone(&self.state), r));
        match held {
            Held::Topic { entry, subscriber } => {
                self.pool.leave_topic(&entry, &subscriber, receipt);
            }
            Held::Own { link, upstream_id } => {
                let frame = unsubscribe(upstream_id.clone());
                let _ = self
                    .pool
                    .unsubscribe_own(link, &upstream_id, frame, with(receipt));
            }
            Held::Acked { link, upstream_id } => {
                let frame = unsubscribe(upstream_id.clone());
                // What an `ack:auto` consumer's outbox took is delivered.
                let settle = || {
                    let owed = {
                        let mut deferred = lock(&self.state.deferred);
                        let (mine, rest): (Vec<_>, Vec<_>) =
                            std::mem::take(&mut *deferred).into_iter().partition(|d| {
                                d.client_id == *client_id && Arc::ptr_eq(&d.link, &link)
                            });
                        *deferred = rest;
                        mine.into_iter().map(|d| d.upstream_ack).collect()
                    };
                    (owed, self.forget_pending(&link, client_id))
                };
                let _ =
                    self.pool
                        .unsubscribe_acked(&link, &upstream_id, frame, settle, with(receipt));
            }
        }
    }

    /// Drops this session's record of the unacknowledged messages of one
    /// client subscription on `link`; true when there were any (the broker
    /// still holds them for the link).
    fn forget_pending(&self, link: &Arc<AckLink>, client_id: &Bytes) -> bool {
        let mut pending = lock(&self.state.pending);
        let before = pending.len();
        pending.retain(|_, p| !(Arc::ptr_eq(&p.link, link) && p.client_id == *client_id));
        pending.len() != before
    }

    /// Records where a SEND to `destination` (whose own link is `own`)
    /// went; see [`SharedSession::away`].
    fn note_away(&mut self, destination: Bytes, own: usize, sent_on: usize) {
        if sent_on == own {
            if !self.away.is_empty() {
                self.away.remove(&destination);
            }
            return;
        }
        if self.away.len() >= self.prune_away_at && !self.away.contains_key(&destination) {
            let holding: Vec<bool> = (0..self.pool.link_count())
                .map(|k| self.pool.holds_sends(k, &self.state))
                .collect();
            self.away
                .retain(|_, link| holding.get(*link).copied().unwrap_or(false));
            self.prune_away_at = (self.away.len() * 2).max(AWAY_PRUNE_MIN);
        }
        self.away.insert(destination, sent_on);
    }

    fn teardown(&mut self) {
        let none = Headers::default();
        for (id, helds) in std::mem::take(&mut self.subscriptions) {
            self.counted.remove(helds.len());
            for held in helds {
                self.release(&id, held, &none, None);
            }
        }
        lock(&self.state.pending).clear();
    }
}

impl BrokerSession for SharedSession {
    fn drained(&mut self) {
        let owed = std::mem::take(&mut *lock(&self.state.deferred));
        for owed in owed {
            owed.link.ack(owed.upstream_ack);
        }
    }

    fn subscribe(&mut self, request: SubscribeRequest) -> Result<(), BrokerError> {
        let resolved = request.display_destination.is_some();
        if !resolved {
            self.config().check_wildcards(&request.destination)?;
        }
        let destinations: Vec<String> = std::iter::once(request.destination.clone())
            .chain(request.also.clone())
            .collect();
        for destination in &destinations {
            self.config().check_relayed(destination, resolved)?;
        }
        let durable = check_durable(self.config(), &self.user, &request)?;
        let options = request
            .frame
            .headers
            .iter_bytes()
            .any(|(name, _)| self.config().forwards_header(Command::Subscribe, name));
        let display = request
            .display_destination
            .as_ref()
            .map(|d| Bytes::copy_from_slice(d.as_bytes()));
        let receipt = request.receipt.clone().map(|r| {
            ReceiptJoin::new(
                destinations.len(),
                Arc::clone(&self.state.outbox),
                self.state.version,
                r,
            )
        });
        let mut helds = Vec::with_capacity(destinations.len());
        // Every side on the link of the first: a user destination's two
        // (the user's and the session's) then keep the order in which the
        // server sent to them.
        let home = self
            .pool
            .link_for(&self.config().broker_form(&request.destination));
        for destination in &destinations {
            let last_receipt = receipt.clone();
            let fan_out = fans_out(self.config(), destination);
            let held = (|| -> Result<Held, BrokerError> {
                Ok(
                    if request.ack == AckMode::Auto && !durable && !options && fan_out {
                        let subscriber = Arc::new(LocalSubscriber {
                            id: request.id.clone(),
                            display: display.clone(),
                            version: self.state.version,
                            outbox: Arc::clone(&self.state.outbox),
                            cancelled: AtomicBool::new(false),
                        });
                        let key = self.config().broker_form(destination).into_owned();
                        let entry = self.pool.join_topic(
                            &key,
                            home,
                            Arc::clone(&subscriber),
                            last_receipt,
                        )?;
                        Held::Topic { entry, subscriber }
                    } else {
                        let upstream_id = if durable {
                            durable_id(self.user.name(), &request.id)
                        } else {
                            self.pool.next_id("s")
                        };
                        let own = |upstream_id: &Bytes| {
                            Arc::new(OwnSubscription {
                                client_id: request.id.clone(),
                                display: display.clone(),
                                ack: request.ack,
                                session: Arc::clone(&self.state),
                                upstream_id: upstream_id.clone(),
                                subscribe: self.subscribe_frame(&request, destination, upstream_id),
                            })
                        };
                        if request.ack == AckMode::Auto && fan_out {
                            // A durable subscription's id is fixed: another session
                            // of the same user may hold it on one link, not on all.
                            // On a link that is up (a subscription of its
                            // own is sent at once, not when a link comes
                            // back), preferring its destination's.
                            let count = self.pool.link_count();
                            let link = (0..count)
                                .map(|k| (home + k) % count)
                                .filter(|&k| !self.pool.has_route(k, &upstream_id))
                                .min_by_key(|&k| !self.pool.link_up(k))
                                .ok_or_else(|| {
                                    BrokerError::NotAllowed(format!(
                                        "this durable subscription is already active {count} times \
                                 on this server"
                                    ))
                                })?;
                            self.pool
                                .subscribe_own(link, own(&upstream_id), last_receipt)?;
                            Held::Own { link, upstream_id }
                        } else {
                            let link = self.pool.subscribe_acked(
                                &upstream_id,
                                own(&upstream_id),
                                last_receipt,
                            )?;
                            Held::Acked { link, upstream_id }
                        }
                    },
                )
            })();
            match held {
                Ok(held) => helds.push(held),
                Err(e) => {
                    // The sides already subscribed would otherwise stay
                    // upstream (and hold their link) with no one to end them.
                    for held in helds {
                        self.release(&request.id, held, &Headers::default(), None);
                    }
                    return Err(e);
                }
            }
        }
        self.counted.add(helds.len());
        self.subscriptions.insert(request.id, helds);
        Ok(())
    }

    fn unsubscribe(
        &mut self,
        id: &Bytes,
        headers: &Headers,
        receipt: Option<Bytes>,
    ) -> Result<(), BrokerError> {
        let Some(helds) = self.subscriptions.remove(id) else {
            return Err(BrokerError::UnknownSubscription(
                String::from_utf8_lossy(id).into_owned(),
            ));
        };
        let mut receipt = receipt;
        let count = helds.len();
        self.counted.remove(count);
        for (i, held) in helds.into_iter().enumerate() {
            let r = if i + 1 == count { receipt.take() } else { None };
            self.release(id, held, headers, r);
        }
        Ok(())
    }

    fn send(&mut self, message: Publish, receipt: Option<Bytes>) -> Result<(), BrokerError> {
        self.config().check_relayed(&message.destination, false)?;
        let link = self
            .pool
            .link_for(&self.config().broker_form(&message.destination));
        let frame = self.config().send_frame(message);
        let destination = frame
            .headers
            .get_bytes(header::DESTINATION)
            .cloned()
            .unwrap_or_default();
        let previous = if self.away.is_empty() {
            None
        } else {
            self.away.get(&destination).copied()
        };
        let sent_on = self
            .pool
            .send_from(link, previous, frame, &self.state, receipt)?;
        self.used_links |= 1 << (sent_on % 64);
        self.note_away(destination, link, sent_on);
        Ok(())
    }

    fn ack(
        &mut self,
        target: &AckTarget,
        nack: bool,
        headers: &Headers,
        receipt: Option<Bytes>,
    ) -> Result<(), BrokerError> {
        let mut pending = lock(&self.state.pending);
        let tag = match target {
            AckTarget::AckId(id) => std::str::from_utf8(id)
                .ok()
                .and_then(|t| t.parse::<u64>().ok())
                .filter(|t| pending.contains_key(t)),
            AckTarget::MessageOnSubscription {
                message_id,
                subscription,
            } => pending
                .iter()
                .find(|(_, p)| p.message_id == message_id && p.client_id == subscription)
                .map(|(t, _)| *t),
            AckTarget::MessageId(message_id) => pending
                .iter()
                .find(|(_, p)| p.message_id == message_id)
                .map(|(t, _)| *t),
        };
        let Some(tag) = tag else {
            return Err(BrokerError::UnknownAck(match target {
                AckTarget::AckId(id) => format!("ack id '{}'", String::from_utf8_lossy(id)),
                AckTarget::MessageOnSubscription {
                    message_id,
                    subscription,
                } => format!(
                    "message '{}' on subscription '{}'",
                    String::from_utf8_lossy(message_id),
                    String::from_utf8_lossy(subscription)
                ),
                AckTarget::MessageId(m) => format!("message '{}'", String::from_utf8_lossy(m)),
            }));
        };
        // In `client` mode an ACK or NACK covers every earlier message of
        // the subscription too.
        let (client_id, cumulative) = pending
            .get(&tag)
            .map(|p| (p.client_id.clone(), p.cumulative))
            .unwrap_or_default();
        let tags: Vec<u64> = if cumulative {
            pending
                .range(..=tag)
                .filter(|(_, p)| p.client_id == client_id)
                .map(|(t, _)| *t)
                .collect()
        } else {
            vec![tag]
        };
        let settled: Vec<_> = tags.iter().filter_map(|t| pending.remove(t)).collect();
        drop(pending);
        let command = if nack { Command::Nack } else { Command::Ack };
        let mut receipt = receipt;
        let count = settled.len();
        let mut result = Ok(());
        for (i, entry) in settled.into_iter().enumerate() {
            let mut frame = Frame::new(command);
            frame.headers.push(
                Bytes::from_static(header::ID.as_bytes()),
                entry.upstream_ack,
            );
            // Broker options such as RabbitMQ's `requeue:false`, where allowed.
            for (name, value) in headers.iter_bytes() {
                if self.config().forwards_header(command, name) {
                    frame.headers.push(name.clone(), value.clone());
                }
            }
            let r = if i + 1 == count { receipt.take() } else { None };
            let sent =
                self.pool
                    .send_acked(&entry.link, frame, r.map(|r| (Arc::clone(&self.state), r)));
            if !self
                .used_ack_links
                .iter()
                .any(|l| Arc::ptr_eq(l, &entry.link))
            {
                self.used_ack_links.push(Arc::clone(&entry.link));
            }
            if sent.is_err() {
                result = sent;
            }
        }
        result
    }

    fn disconnect(&mut self, receipt: Option<Bytes>) -> BoxFuture<'_, ()> {
        Box::pin(async move {
            self.teardown();
            let Some(receipt) = receipt else { return };
            // The receipt follows everything this session sent before.
            let flushes = (0..self.pool.link_count())
                .filter(|k| self.used_links & (1 << (k % 64)) != 0)
                .map(|k| self.pool.flush(k));
            let acked = self.used_ack_links.iter().map(|l| self.pool.flush_acked(l));
            let (flushed, acked) = futures_util::future::join(
                futures_util::future::join_all(flushes),
                futures_util::future::join_all(acked),
            )
            .await;
            // No receipt the broker did not earn: a link lost or silent may
            // have lost what the session sent on it.
            if flushed.into_iter().chain(acked).all(|confirmed| confirmed) {
                let _ = self.state.outbox.push(receipt_frame(&receipt));
            }
        })
    }
}

impl Drop for SharedSession {
    fn drop(&mut self) {
        self.teardown();
        self.pool.forget_sender(self.used_links, &self.state);
    }
}
