//! A client session relayed to the upstream broker over its own link.
//!
//! Subscription ids upstream are the relay's, not the client's: a per-session
//! counter (`s1`, `s2`, …) for ordinary subscriptions, so that nothing a
//! client chooses reaches the broker's syntax. A durable subscription is
//! different: RabbitMQ names its queue after (destination, subscription id),
//! so its id upstream must be the same each time the same client subscribes
//! and different for every other client. It is `d-` and the SHA-256 (in hex)
//! of the authenticated user name, length-prefixed, followed by the client's
//! own id ([`durable_id`]): the same user re-subscribing with the same id
//! resumes the queue, two users never meet in one, and the value is hex
//! whatever the user or id contain. Two sessions of one user with the same
//! id and destination are one durable subscription, sharing its messages
//! (as two connections doing so directly to RabbitMQ would). An anonymous
//! session has nothing that identifies it on its next connection, so its
//! durable SUBSCRIBE is refused with an ERROR, unless it names the queue
//! itself with an `x-queue-name` the operator lets through.

use super::RelayConfig;
use super::stats::{RelayCounters, SessionSubscriptions};
use super::upstream::{self, Event, Link};
use crate::auth::User;
use crate::broker::{
    AckTarget, BrokerError, BrokerSession, Publish, SessionContext, SubscribeRequest,
};
use crate::frames::{StompError, encode, receipt_frame};
use crate::outbox::{Outbox, PushError};
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard};
use stompbox_codec::{Command, Frame, Headers, Version, header};

#[derive(Debug)]
struct Route {
    client_id: Bytes,
    display_destination: Option<Bytes>,
}

/// What the link's task and the session share.
#[derive(Debug, Default)]
struct Maps {
    /// Upstream subscription id → the client's subscription.
    subscriptions: HashMap<Bytes, Route>,
    /// Upstream receipt id → the client's receipt id.
    receipts: HashMap<Bytes, Bytes>,
    /// The receipt of the newest frame sent, for an ERROR that does not say
    /// which frame it answers (RabbitMQ's do not): it is about that frame.
    newest_receipt: Option<(Bytes, Bytes)>,
    /// The upstream receipt of DISCONNECT, and who waits for it.
    disconnecting: Option<(Bytes, tokio::sync::oneshot::Sender<()>)>,
}

#[derive(Debug)]
pub(crate) struct RelaySession {
    config: RelayConfig,
    link: Link,
    version: Version,
    maps: Arc<Mutex<Maps>>,
    /// Client subscription id → its upstream ids (two for user destinations).
    client_subscriptions: HashMap<Bytes, Vec<Bytes>>,
    next_id: u64,
    /// Who the client is: names its durable subscriptions.
    user: User,
    /// Its upstream subscriptions, in the relay's figures.
    counted: SessionSubscriptions,
}

fn lock(maps: &Mutex<Maps>) -> MutexGuard<'_, Maps> {
    maps.lock().unwrap_or_else(|e| e.into_inner())
}

impl RelaySession {
    pub(crate) async fn open(
        config: &RelayConfig,
        counters: &Arc<RelayCounters>,
        context: SessionContext,
    ) -> Result<RelaySession, BrokerError> {
        let login = config.client_login.clone().or(context.login.clone());
        let passcode = config.client_passcode.clone().or(context.passcode.clone());
        let host = config.virtual_host.clone();
        let mut headers: Vec<(&str, &str)> = vec![(header::HOST, host.as_str())];
        if let Some(login) = &login {
            headers.push((header::LOGIN, login));
        }
        if let Some(passcode) = &passcode {
            headers.push((header::PASSCODE, passcode));
        }
        let maps = Arc::new(Mutex::new(Maps::default()));
        let handler_maps = Arc::clone(&maps);
        let client = Arc::clone(&context.outbox);
        let version = context.version;
        let names = config.clone();
        let user = context.user.clone();
        let downstream = Some(Arc::clone(&context.outbox));
        let link = upstream::open(
            config,
            counters,
            version,
            &headers,
            downstream,
            None,
            move |event| {
                forward(event, &handler_maps, &client, version, &names);
            },
        )
        .await?;
        Ok(RelaySession {
            config: config.clone(),
            link,
            version,
            maps,
            client_subscriptions: HashMap::new(),
            next_id: 0,
            user,
            counted: SessionSubscriptions::new(counters),
        })
    }

    fn next(&mut self, prefix: &str) -> Bytes {
        self.next_id += 1;
        Bytes::from(format!("{prefix}{}", self.next_id))
    }

    fn upstream(&self, frame: &Frame) -> Result<(), BrokerError> {
        // Noted like a subscriber's outbox: a client whose frames fill its
        // broker link past half is not read from until the broker took them,
        // so a burst waits for the broker instead of overflowing the link.
        self.link
            .outbox
            .deliver(encode(frame, self.version))
            .map_err(|e| match e {
                PushError::Overflow => {
                    BrokerError::Unavailable("the message broker is not keeping up".into())
                }
                PushError::Closed => BrokerError::Unavailable(
                    "the connection to the message broker is closed".into(),
                ),
            })
    }

    /// Attaches a receipt the broker will answer, remembered for the client.
    fn with_receipt(
        &mut self,
        mut frame: Frame,
        receipt: Option<Bytes>,
    ) -> Result<Frame, BrokerError> {
        if let Some(client_receipt) = receipt {
            let upstream_receipt = self.next("r");
            let mut maps = lock(&self.maps);
            // Bounded: a broker that stops answering receipts must not make
            // this map grow without end.
            if maps.receipts.len() >= self.config.max_in_flight {
                return Err(BrokerError::Unavailable(format!(
                    "too many receipts awaiting the message broker (limit {})",
                    self.config.max_in_flight
                )));
            }
            maps.receipts
                .insert(upstream_receipt.clone(), client_receipt.clone());
            maps.newest_receipt = Some((upstream_receipt.clone(), client_receipt));
            drop(maps);
            frame.headers.push(
                Bytes::from_static(header::RECEIPT.as_bytes()),
                upstream_receipt,
            );
        }
        Ok(frame)
    }
}

/// The upstream id of `user`'s durable subscription `id`. The user name is
/// length-prefixed so that no two (user, id) pairs hash the same input;
/// hex keeps every client-chosen byte out of the broker's syntax, and the
/// fixed length keeps RabbitMQ's consumer tag (`T_` and the id) within
/// AMQP's 255 bytes whatever the id's length.
pub(super) fn durable_id(user: &str, id: &[u8]) -> Bytes {
    use sha2::{Digest, Sha256};
    use std::fmt::Write;
    let mut hash = Sha256::new();
    hash.update((user.len() as u64).to_be_bytes());
    hash.update(user.as_bytes());
    hash.update(id);
    let mut name = String::with_capacity(2 + 64);
    name.push_str("d-");
    for byte in hash.finalize() {
        let _ = write!(name, "{byte:02x}");
    }
    Bytes::from(name)
}

/// Whether a SUBSCRIBE is durable (see [`asks_durable`]), refusing what
/// cannot be: a durable user destination, and a durable subscription of an
/// anonymous session, which nothing would recognise on its next connection,
/// unless an allowed `x-queue-name` names the queue itself.
pub(super) fn check_durable(
    config: &RelayConfig,
    user: &User,
    request: &SubscribeRequest,
) -> Result<bool, BrokerError> {
    if !asks_durable(config, &request.frame.headers) {
        return Ok(false);
    }
    if let Some(shown) = &request.display_destination {
        return Err(BrokerError::NotAllowed(format!(
            "durable subscriptions are not available for user destinations such as '{shown}'"
        )));
    }
    // With an allowed `x-queue-name` the client names the queue itself and
    // can find it again; the relay's naming is moot.
    let named = request.frame.headers.iter_bytes().any(|(name, _)| {
        name.as_ref() == b"x-queue-name" && config.forwards_header(Command::Subscribe, name)
    });
    if !user.is_authenticated() && !named {
        return Err(BrokerError::NotAllowed(format!(
            "a durable subscription to '{}' needs a logged-in user: an anonymous \
             session cannot be recognised on its next connection to resume it",
            request.destination
        )));
    }
    Ok(true)
}

/// True for a SUBSCRIBE the broker will make durable: `durable:true` or
/// RabbitMQ's older alias `persistent:true`, in a header the operator lets
/// through (otherwise it is dropped and the subscription is an ordinary one).
fn asks_durable(config: &RelayConfig, headers: &Headers) -> bool {
    headers.iter_bytes().any(|(name, value)| {
        matches!(name.as_ref(), b"durable" | b"persistent")
            && value.eq_ignore_ascii_case(b"true")
            && config.forwards_header(Command::Subscribe, name)
    })
}

/// Passes a broker frame on to the client, rewritten for its side.
fn forward(
    event: Event,
    maps: &Mutex<Maps>,
    client: &Outbox,
    version: Version,
    names: &RelayConfig,
) {
    let frame = match event {
        Event::Frame(frame) => frame,
        Event::Closed(None) => return,
        Event::Closed(Some(reason)) => {
            tracing::info!(%reason, "relay connection to the broker lost");
            let error = StompError::new("the connection to the message broker was lost; reconnect");
            client.finish(error.to_frame(version));
            return;
        }
    };
    match frame.command {
        Command::Message => {
            let Some(upstream_id) = frame.headers.get_bytes(header::SUBSCRIPTION).cloned() else {
                return;
            };
            let (client_id, display) = {
                let maps = lock(maps);
                // A MESSAGE for a subscription already cancelled is dropped:
                // the client no longer wants it (the broker requeues it if
                // it was unacknowledged when the link closes).
                let Some(route) = maps.subscriptions.get(&upstream_id) else {
                    return;
                };
                (route.client_id.clone(), route.display_destination.clone())
            };
            let message = names.client_message(frame, client_id, display.as_ref(), None);
            // A full client outbox makes the client a slow consumer, as with
            // the embedded broker; its driver closes it.
            let _ = client.push(encode(&message, version));
        }
        Command::Receipt => {
            let Some(upstream) = frame.headers.get_bytes(header::RECEIPT_ID) else {
                return;
            };
            let mut maps = lock(maps);
            if let Some(client_receipt) = maps.receipts.remove(upstream) {
                let _ = client.push(receipt_frame(&client_receipt));
            }
            if maps
                .disconnecting
                .as_ref()
                .is_some_and(|(id, _)| id == upstream)
                && let Some((_, done)) = maps.disconnecting.take()
            {
                let _ = done.send(());
            }
        }
        Command::Error => {
            let message = frame
                .headers
                .get(header::MESSAGE)
                .unwrap_or("error from the message broker");
            let mut error = StompError::new(format!("message broker: {message}"));
            let mut maps = lock(maps);
            error.receipt_id = match frame.headers.get_bytes(header::RECEIPT_ID) {
                Some(upstream) => maps.receipts.remove(upstream),
                None => maps
                    .newest_receipt
                    .take()
                    .and_then(|(upstream, client)| maps.receipts.remove(&upstream).map(|_| client)),
            };
            drop(maps);
            client.finish(error.to_frame(version));
        }
        _ => {}
    }
}

impl BrokerSession for RelaySession {
    fn subscribe(&mut self, request: SubscribeRequest) -> Result<(), BrokerError> {
        if request.display_destination.is_none() {
            self.config.check_wildcards(&request.destination)?;
        }
        let destinations: Vec<String> = std::iter::once(request.destination.clone())
            .chain(request.also.clone())
            .collect();
        // The session routes only relayed destinations here, and user
        // destinations it resolved itself; checked again because this is
        // the last step before the broker, where the relay's own login
        // would reach anything.
        for destination in &destinations {
            self.config
                .check_relayed(destination, request.display_destination.is_some())?;
        }
        let durable = check_durable(&self.config, &self.user, &request)?;
        let ack = match request.ack {
            crate::broker::AckMode::Auto => "auto",
            crate::broker::AckMode::Client => "client",
            crate::broker::AckMode::ClientIndividual => "client-individual",
        };
        let mut receipt = request.receipt.clone();
        let mut ids = Vec::with_capacity(destinations.len());
        for (i, destination) in destinations.iter().enumerate() {
            // A durable subscription has one destination (user destinations
            // were refused above), so one derived id.
            let upstream_id = if durable {
                durable_id(self.user.name(), &request.id)
            } else {
                self.next("s")
            };
            let mut frame = Frame::new(Command::Subscribe)
                .header(header::DESTINATION, &self.config.broker_form(destination))
                .header(header::ACK, ack);
            frame.headers.push(
                Bytes::from_static(header::ID.as_bytes()),
                upstream_id.clone(),
            );
            // Broker options (durable, auto-delete, x-queue-name, selector…)
            // pass only where the operator allowed them.
            for (name, value) in request.frame.headers.iter_bytes() {
                if self.config.forwards_header(Command::Subscribe, name) {
                    frame.headers.push(name.clone(), value.clone());
                }
            }
            let last = i + 1 == destinations.len();
            let frame = self.with_receipt(frame, if last { receipt.take() } else { None })?;
            lock(&self.maps).subscriptions.insert(
                upstream_id.clone(),
                Route {
                    client_id: request.id.clone(),
                    display_destination: request
                        .display_destination
                        .as_ref()
                        .map(|d| Bytes::copy_from_slice(d.as_bytes())),
                },
            );
            self.upstream(&frame)?;
            ids.push(upstream_id);
        }
        self.counted.add(ids.len());
        self.client_subscriptions.insert(request.id, ids);
        Ok(())
    }

    fn unsubscribe(
        &mut self,
        id: &Bytes,
        headers: &Headers,
        receipt: Option<Bytes>,
    ) -> Result<(), BrokerError> {
        let ids = self.client_subscriptions.remove(id).ok_or_else(|| {
            BrokerError::UnknownSubscription(String::from_utf8_lossy(id).into_owned())
        })?;
        let mut receipt = receipt;
        let count = ids.len();
        self.counted.remove(count);
        for (i, upstream_id) in ids.into_iter().enumerate() {
            lock(&self.maps).subscriptions.remove(&upstream_id);
            let mut frame = Frame::new(Command::Unsubscribe);
            frame
                .headers
                .push(Bytes::from_static(header::ID.as_bytes()), upstream_id);
            // `durable:true` makes RabbitMQ delete a durable subscription's
            // queue; without it the queue stays for the next SUBSCRIBE.
            for (name, value) in headers.iter_bytes() {
                if self.config.forwards_header(Command::Unsubscribe, name) {
                    frame.headers.push(name.clone(), value.clone());
                }
            }
            let frame =
                self.with_receipt(frame, if i + 1 == count { receipt.take() } else { None })?;
            self.upstream(&frame)?;
        }
        Ok(())
    }

    fn send(&mut self, message: Publish, receipt: Option<Bytes>) -> Result<(), BrokerError> {
        self.config.check_relayed(&message.destination, false)?;
        let frame = self.config.send_frame(message);
        let frame = self.with_receipt(frame, receipt)?;
        self.upstream(&frame)
    }

    fn ack(
        &mut self,
        target: &AckTarget,
        nack: bool,
        headers: &Headers,
        receipt: Option<Bytes>,
    ) -> Result<(), BrokerError> {
        let command = if nack { Command::Nack } else { Command::Ack };
        let mut frame = Frame::new(command);
        match target {
            AckTarget::AckId(id) => frame
                .headers
                .push(Bytes::from_static(header::ID.as_bytes()), id.clone()),
            AckTarget::MessageOnSubscription {
                message_id,
                subscription,
            } => {
                let upstream = self
                    .client_subscriptions
                    .get(subscription)
                    .and_then(|ids| ids.first())
                    .cloned()
                    .ok_or_else(|| {
                        BrokerError::UnknownAck(format!(
                            "subscription '{}'",
                            String::from_utf8_lossy(subscription)
                        ))
                    })?;
                frame.headers.push(
                    Bytes::from_static(header::MESSAGE_ID.as_bytes()),
                    message_id.clone(),
                );
                frame.headers.push(
                    Bytes::from_static(header::SUBSCRIPTION.as_bytes()),
                    upstream,
                );
            }
            AckTarget::MessageId(message_id) => frame.headers.push(
                Bytes::from_static(header::MESSAGE_ID.as_bytes()),
                message_id.clone(),
            ),
        }
        // Broker options such as RabbitMQ's `requeue:false`, where allowed.
        for (name, value) in headers.iter_bytes() {
            if self.config.forwards_header(command, name) {
                frame.headers.push(name.clone(), value.clone());
            }
        }
        let frame = self.with_receipt(frame, receipt)?;
        self.upstream(&frame)
    }

    fn disconnect(&mut self, receipt: Option<Bytes>) -> crate::broker::BoxFuture<'_, ()> {
        Box::pin(async move {
            match receipt {
                Some(receipt) => self.disconnect_with_receipt(receipt).await,
                None => self.link.disconnect(self.version),
            }
        })
    }
}

impl RelaySession {
    /// DISCONNECT with a receipt, answered to the client only when the
    /// broker's own RECEIPT arrives (bounded by the connect timeout).
    async fn disconnect_with_receipt(&mut self, client_receipt: Bytes) {
        let (done, confirmed) = tokio::sync::oneshot::channel();
        let Ok(frame) = self.with_receipt(Frame::new(Command::Disconnect), Some(client_receipt))
        else {
            self.link.disconnect(self.version);
            return;
        };
        if let Some(upstream) = frame.headers.get_bytes(header::RECEIPT) {
            lock(&self.maps).disconnecting = Some((upstream.clone(), done));
        }
        self.link.outbox.finish(encode(&frame, self.version));
        let _ = tokio::time::timeout(self.config.connect_timeout, confirmed).await;
    }
}

impl Drop for RelaySession {
    fn drop(&mut self) {
        // DISCONNECT after whatever is queued: the broker then requeues the
        // session's unacknowledged messages and drops its subscriptions.
        self.link.disconnect(self.version);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durable_ids_are_hex_and_differ_for_every_user_and_id() {
        let pairs: [(&str, &[u8]); 6] = [
            ("ann", b"news"),
            ("ann", b"news2"),
            ("ben", b"news"),
            // The same bytes split differently between user and id.
            ("an", b"nnews"),
            ("ann\n", b"news"),
            ("", b"annnews"),
        ];
        let ids: Vec<Bytes> = pairs.iter().map(|(u, id)| durable_id(u, id)).collect();
        for (i, id) in ids.iter().enumerate() {
            assert_eq!(id.len(), 2 + 64);
            assert!(id.starts_with(b"d-"));
            assert!(
                id[2..]
                    .iter()
                    .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
            );
            assert!(!ids[..i].contains(id), "{:?} repeats", pairs[i]);
        }
        // The same user and id always give the same name: that is resuming.
        assert_eq!(durable_id("ann", b"news"), ids[0]);
        // Whatever the client's id holds, only hex reaches the broker.
        let odd = durable_id("ann", b"a:b\nc\\d,e?f");
        assert!(odd[2..].iter().all(u8::is_ascii_hexdigit));
    }

    #[test]
    fn only_an_allowed_durable_true_makes_a_subscription_durable() {
        let headers = |name: &str, value: &str| {
            let mut h = Headers::default();
            h.push_str(name, value);
            h
        };
        let mut config = RelayConfig::default();
        assert!(!asks_durable(&config, &headers("durable", "true")));
        config.subscribe_headers = vec!["durable".into()];
        assert!(asks_durable(&config, &headers("durable", "true")));
        assert!(!asks_durable(&config, &headers("durable", "false")));
        // `persistent` is RabbitMQ's alias, but only when it passes too.
        assert!(!asks_durable(&config, &headers("persistent", "true")));
        config.subscribe_headers.push("persistent".into());
        assert!(asks_durable(&config, &headers("persistent", "true")));
        assert!(!asks_durable(&config, &headers("auto-delete", "true")));
    }
}
