//! The system connection: one shared link for messages that come from the
//! server itself (handler replies, the messaging handle, the HTTP API). It
//! reconnects forever with exponential backoff and jitter, and its state is
//! the broker's availability.

use super::RelayConfig;
use super::stats::RelayCounters;
use super::upstream::{self, Event, Link};
use crate::broker::{BrokerError, Publish};
use crate::frames::encode;
use crate::outbox::PushError;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;
use stompbox_codec::{Command, Frame, Version, header};
use tokio::sync::{Notify, oneshot, watch};

/// Receipts awaited on the current link.
type Pending = HashMap<Bytes, oneshot::Sender<Result<(), BrokerError>>>;

#[derive(Debug)]
pub(crate) struct SystemConnection {
    config: RelayConfig,
    counters: Arc<RelayCounters>,
    available: watch::Sender<bool>,
    link: Mutex<Option<Arc<Link>>>,
    pending: Arc<Mutex<Pending>>,
    next_receipt: AtomicU64,
    lost: Notify,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The delay before reconnect attempt `attempt` (0-based): doubling from
/// the initial delay up to the maximum, then scaled by a random factor in
/// [0.5, 1.0) so that many instances do not reconnect in lockstep.
pub(crate) fn backoff(config: &RelayConfig, attempt: u32) -> Duration {
    let base = config
        .reconnect_initial
        .saturating_mul(2u32.saturating_pow(attempt.min(16)))
        .min(config.reconnect_max);
    let mut random = [0u8; 2];
    let jitter = if getrandom::fill(&mut random).is_ok() {
        f64::from(u16::from_le_bytes(random)) / f64::from(u16::MAX)
    } else {
        0.5
    };
    base.mul_f64(0.5 + jitter / 2.0)
}

impl SystemConnection {
    pub(crate) fn new(config: RelayConfig, counters: Arc<RelayCounters>) -> Arc<SystemConnection> {
        Arc::new(SystemConnection {
            config,
            counters,
            available: watch::channel(false).0,
            link: Mutex::new(None),
            pending: Arc::new(Mutex::new(HashMap::new())),
            next_receipt: AtomicU64::new(0),
            lost: Notify::new(),
        })
    }

    pub(crate) fn availability(&self) -> watch::Receiver<bool> {
        self.available.subscribe()
    }

    pub(crate) fn is_available(&self) -> bool {
        *self.available.borrow()
    }

    /// Keeps the link up for as long as `stop` is not set.
    pub(crate) async fn run(self: Arc<Self>, mut stop: watch::Receiver<bool>) {
        let mut attempt = 0u32;
        // Set once a link was lost: the next one up is a reconnect.
        let mut lost = false;
        loop {
            if *stop.borrow() {
                break;
            }
            let headers = [
                (header::HOST, self.config.virtual_host.as_str()),
                (header::LOGIN, self.config.system_login.as_str()),
                (header::PASSCODE, self.config.system_passcode.as_str()),
            ];
            let pending = Arc::clone(&self.pending);
            let me = Arc::downgrade(&self);
            let opened = upstream::open(
                &self.config,
                &self.counters,
                Version::V1_2,
                &headers,
                None,
                None,
                move |event| match event {
                    Event::Frame(frame) => on_frame(&pending, frame),
                    Event::Closed(reason) => {
                        fail_all(&pending, reason.as_deref().unwrap_or("closed"));
                        if let Some(me) = me.upgrade() {
                            me.lost.notify_one();
                        }
                    }
                },
            )
            .await;
            match opened {
                Ok(link) => {
                    if lost {
                        self.counters.reconnects.fetch_add(1, Ordering::Relaxed);
                    }
                    let up_since = tokio::time::Instant::now();
                    *lock(&self.link) = Some(Arc::new(link));
                    self.available.send_replace(true);
                    tracing::info!("message broker available (system connection up)");
                    tokio::select! {
                        () = self.lost.notified() => {}
                        _ = stop.wait_for(|s| *s) => {}
                    }
                    self.available.send_replace(false);
                    if let Some(link) = lock(&self.link).take() {
                        link.disconnect(Version::V1_2);
                    }
                    if *stop.borrow() {
                        break;
                    }
                    tracing::warn!("message broker unavailable (system connection lost)");
                    lost = true;
                    // Only a link that stayed up for a while resets the
                    // backoff: a broker that accepts and then drops us at
                    // once must not be hammered in a tight loop.
                    if up_since.elapsed() >= self.config.reconnect_max {
                        attempt = 0;
                    }
                    let delay = backoff(&self.config, attempt);
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                }
                Err(e) => {
                    let delay = backoff(&self.config, attempt);
                    if attempt == 0 {
                        tracing::warn!(error = %e, "message broker unavailable; retrying");
                    } else {
                        tracing::debug!(error = %e, attempt, ?delay, "broker reconnect failed");
                    }
                    attempt = attempt.saturating_add(1);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stop.wait_for(|s| *s) => break,
                    }
                }
            }
        }
        self.available.send_replace(false);
    }

    /// Publishes over the system link and waits for the broker's RECEIPT,
    /// so that success means the broker has the message.
    pub(crate) async fn publish(&self, message: Publish) -> Result<(), BrokerError> {
        // The messaging handle checks this already; the system connection
        // is where a destination would meet the relay's own login, so it
        // holds the line itself: relayed prefixes and the user namespace.
        if !self.config.is_client_destination(&message.destination)
            && !self.config.is_user_destination(&message.destination)
        {
            return Err(BrokerError::InvalidDestination(format!(
                "{}: not relayed to the message broker",
                message.destination
            )));
        }
        let link = lock(&self.link)
            .clone()
            .filter(|_| self.is_available())
            .ok_or_else(|| BrokerError::Unavailable("the message broker is unavailable".into()))?;
        let receipt = Bytes::from(format!(
            "sys-{}",
            self.next_receipt.fetch_add(1, Ordering::Relaxed)
        ));
        let (done, wait) = oneshot::channel();
        {
            let mut pending = lock(&self.pending);
            if pending.len() >= self.config.max_in_flight {
                return Err(BrokerError::Unavailable(format!(
                    "too many messages awaiting the broker (limit {})",
                    self.config.max_in_flight
                )));
            }
            pending.insert(receipt.clone(), done);
        }
        let mut frame = Frame::new(Command::Send).header(
            header::DESTINATION,
            &self.config.broker_form(&message.destination),
        );
        // A client's SEND to another user arrives here with the client's
        // headers, so the same rule as for client sessions applies. On this
        // shared link it matters more: with RabbitMQ a text `CC` or a
        // foreign `user-id` closes the connection, failing every
        // server-originated message in flight and refusing new sessions
        // until it is back; a `timestamp` that does not parse loses the
        // message and leaves its publish waiting for the time limit.
        for (name, value) in message.frame.headers.iter_bytes() {
            if self.config.forwards_header(Command::Send, name) {
                frame.headers.push(name.clone(), value.clone());
            }
        }
        frame.headers.push_str(
            header::CONTENT_LENGTH,
            &message.frame.body.len().to_string(),
        );
        frame.headers.push(
            Bytes::from_static(header::RECEIPT.as_bytes()),
            receipt.clone(),
        );
        frame.body = message.frame.body;
        if let Err(e) = link.outbox.push(encode(&frame, Version::V1_2)) {
            lock(&self.pending).remove(&receipt);
            return Err(BrokerError::Unavailable(match e {
                PushError::Overflow => "the message broker is not keeping up".into(),
                PushError::Closed => "the connection to the message broker is closed".into(),
            }));
        }
        match tokio::time::timeout(self.config.publish_timeout, wait).await {
            Ok(Ok(result)) => result,
            Ok(Err(_)) => Err(BrokerError::Unavailable(
                "the connection to the message broker was lost".into(),
            )),
            Err(_) => {
                lock(&self.pending).remove(&receipt);
                Err(BrokerError::Unavailable(
                    "the message broker did not confirm in time".into(),
                ))
            }
        }
    }
}

fn on_frame(pending: &Mutex<Pending>, frame: Frame) {
    match frame.command {
        Command::Receipt => {
            if let Some(id) = frame.headers.get_bytes(header::RECEIPT_ID)
                && let Some(done) = lock(pending).remove(id)
            {
                let _ = done.send(Ok(()));
            }
        }
        Command::Error => {
            let message = frame
                .headers
                .get(header::MESSAGE)
                .unwrap_or("error")
                .to_owned();
            tracing::warn!(%message, "message broker sent ERROR on the system connection");
            if let Some(id) = frame.headers.get_bytes(header::RECEIPT_ID)
                && let Some(done) = lock(pending).remove(id)
            {
                let _ = done.send(Err(BrokerError::Refused(message)));
            }
        }
        _ => {}
    }
}

fn fail_all(pending: &Mutex<Pending>, reason: &str) {
    for (_, done) in lock(pending).drain() {
        let _ = done.send(Err(BrokerError::Unavailable(format!(
            "the connection to the message broker was lost ({reason})"
        ))));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_up_to_the_maximum_with_jitter() {
        let config = RelayConfig {
            reconnect_initial: Duration::from_millis(100),
            reconnect_max: Duration::from_secs(2),
            ..RelayConfig::default()
        };
        for attempt in 0..20 {
            let delay = backoff(&config, attempt);
            let base =
                Duration::from_millis(100 * 2u64.pow(attempt.min(16))).min(config.reconnect_max);
            assert!(
                delay >= base / 2 && delay <= base,
                "attempt {attempt}: {delay:?} vs {base:?}"
            );
        }
        let spread: std::collections::BTreeSet<_> = (0..20).map(|_| backoff(&config, 3)).collect();
        assert!(spread.len() > 1, "no jitter");
    }
}
