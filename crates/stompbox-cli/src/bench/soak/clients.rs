//! The soak's clients: producers (topic and queue), topic subscribers that
//! stay for the whole run, queue consumers that acknowledge every message
//! (NACKing some once and leaving now and then without acknowledging), and
//! churners that keep connecting, exchanging a few messages and leaving.

use super::ledger::{Counts, Ledger};
use crate::bench::conn::{Conn, Endpoint, unexpected};
use crate::bench::report::Errors;
use crate::bench::stopped;
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use stompbox_codec::{Command, Frame, Version, header};
use tokio::sync::watch;
use tokio::time::Instant;

/// Frames a producer writes before flushing them in one go.
const FLUSH_EVERY: usize = 32;
/// How far behind its due time a paced loop may fall before it gives up
/// catching up: after a stall it resumes the rate instead of bursting.
const CATCH_UP: Duration = Duration::from_millis(200);
/// How often a producer held back by its consumers looks again.
const GATE_POLL: Duration = Duration::from_millis(1);
/// Messages a churner sends to itself per topic cycle.
const CHURN_OWN_MESSAGES: u64 = 3;
/// How long a churner waits for its own messages after their RECEIPT.
const CHURN_OWN_WAIT: Duration = Duration::from_secs(2);
/// Queue messages a churner takes per queue cycle; it acknowledges all but
/// the last, which the server must then redeliver to someone else.
const CHURN_QUEUE_TAKE: usize = 3;
/// How long a churner waits for queue messages before leaving with fewer.
const CHURN_QUEUE_WAIT: Duration = Duration::from_millis(200);

/// A paced loop's next due time: `rate` per second from `due`, never
/// further behind `now` than [`CATCH_UP`].
fn next_due(due: Instant, rate: f64, now: Instant) -> Instant {
    let step = Duration::from_secs_f64(1.0 / rate.max(1e-3));
    let next = due + step;
    if next + CATCH_UP < now { now } else { next }
}

/// What holds a producer back when the consumers fall behind: the soak
/// runs at a chosen rate, and a flat-out calibration must measure what the
/// whole path sustains, not fill queues to their limits or have the server
/// drop subscribers that cannot keep up.
#[derive(Debug)]
pub(super) enum Gate {
    /// A topic: the next expected sequence number of every subscriber that
    /// stays for the run and matches it.
    Topic(Vec<Arc<AtomicU64>>),
    /// A queue: messages acknowledged at least once.
    Queue(Arc<Ledger>),
}

impl Gate {
    fn delivered(&self) -> u64 {
        match self {
            Gate::Topic(progress) => progress
                .iter()
                .map(|p| p.load(Ordering::Relaxed))
                .min()
                .unwrap_or(u64::MAX),
            Gate::Queue(ledger) => ledger.distinct(),
        }
    }
}

/// One producer: a connection that SENDs `seq`-numbered messages to one
/// destination.
#[derive(Debug)]
pub(super) struct Producer {
    pub(super) destination: String,
    /// A RECEIPT is asked for every this many messages (1: every message).
    pub(super) receipt_every: u64,
    /// RECEIPTs awaited at most at once.
    pub(super) window: usize,
    /// Messages sent but not yet delivered (by the [`Gate`]) at most.
    pub(super) max_lag: u64,
    pub(super) gate: Gate,
    pub(super) body: Bytes,
    pub(super) counts: Arc<Counts>,
}

/// Sends until `stop`, at `rate` messages per second (`None`: as fast as
/// RECEIPTs and the gate allow), then waits for the outstanding RECEIPTs
/// and DISCONNECTs; the DISCONNECT's RECEIPT confirms the last messages.
pub(super) async fn produce(
    mut conn: Conn,
    producer: Producer,
    mut rate: watch::Receiver<Option<f64>>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), String> {
    let content_length = producer.body.len().to_string();
    let mut pending: VecDeque<u64> = VecDeque::new();
    let mut seq = 0u64;
    let mut current = *rate.borrow_and_update();
    let mut due = Instant::now();
    let mut unflushed = 0usize;
    let mut stopping = false;
    let mut rate_open = true;
    loop {
        if rate.has_changed().unwrap_or(false) {
            current = *rate.borrow_and_update();
            due = Instant::now();
        }
        let now = Instant::now();
        let paced = current.is_none() || due <= now;
        let room = pending.len() < producer.window;
        let gated = seq.saturating_sub(producer.gate.delivered()) >= producer.max_lag;
        if !stopping && paced && room && !gated {
            let mut frame = Frame::new(Command::Send)
                .header(header::DESTINATION, &producer.destination)
                .header("seq", &seq.to_string())
                .header(header::CONTENT_LENGTH, &content_length)
                .body(producer.body.clone());
            if (seq + 1).is_multiple_of(producer.receipt_every) {
                frame = frame.header(header::RECEIPT, &format!("r{seq}"));
                pending.push_back(seq);
            }
            // Before the frame leaves: a consumer may see the message
            // before this task runs again.
            producer.counts.sent.store(seq + 1, Ordering::Release);
            conn.feed(&frame).await?;
            seq += 1;
            unflushed += 1;
            if let Some(rate) = current {
                due = next_due(due, rate, now);
            }
            if unflushed >= FLUSH_EVERY {
                conn.flush().await?;
                unflushed = 0;
            }
            continue;
        }
        if unflushed > 0 {
            conn.flush().await?;
            unflushed = 0;
        }
        if stopping && pending.is_empty() {
            break;
        }
        let wake = if !paced {
            due
        } else if gated {
            now + GATE_POLL
        } else {
            // Waiting for a RECEIPT (room) or, when stopping, for the last.
            now + Duration::from_secs(1)
        };
        tokio::select! {
            frame = conn.next_frame() => {
                let frame = frame?.ok_or_else(|| {
                    format!("connection closed by server ({})", conn.close_reason())
                })?;
                if frame.command != Command::Receipt {
                    return Err(unexpected(&frame, "RECEIPT"));
                }
                let Some(expected) = pending.pop_front() else {
                    return Err("a RECEIPT nobody asked for".into());
                };
                let id = frame.headers.get(header::RECEIPT_ID).unwrap_or_default();
                if id != format!("r{expected}") {
                    return Err(format!("expected RECEIPT r{expected}, got {id}"));
                }
                producer.counts.confirmed.fetch_max(expected + 1, Ordering::AcqRel);
            }
            () = tokio::time::sleep_until(wake) => {}
            changed = rate.changed(), if rate_open => {
                if changed.is_err() {
                    rate_open = false;
                } else {
                    current = *rate.borrow_and_update();
                    due = Instant::now();
                }
            }
            () = stopped(&mut stop), if !stopping => stopping = true,
        }
    }
    conn.disconnect("bye").await?;
    producer.counts.confirmed.fetch_max(seq, Ordering::AcqRel);
    Ok(())
}

/// Reads frames until the RECEIPT `id`, handing MESSAGEs to `on_message`.
async fn receipt_among_messages(
    conn: &mut Conn,
    id: &str,
    mut on_message: impl FnMut(&Frame),
) -> Result<(), String> {
    loop {
        let frame = conn.next_frame().await?.ok_or_else(|| {
            format!(
                "connection closed by server ({}) while waiting for RECEIPT {id}",
                conn.close_reason()
            )
        })?;
        match frame.command {
            Command::Message => on_message(&frame),
            Command::Receipt if frame.headers.get(header::RECEIPT_ID) == Some(id) => {
                return Ok(());
            }
            _ => return Err(unexpected(&frame, "RECEIPT")),
        }
    }
}

/// DISCONNECT with a receipt, MESSAGEs still arriving meanwhile handed to
/// `on_message`, then close.
async fn leave(mut conn: Conn, on_message: impl FnMut(&Frame)) -> Result<(), String> {
    let disconnect = Frame::new(Command::Disconnect).header(header::RECEIPT, "bye");
    conn.send(&disconnect).await?;
    let confirmed = receipt_among_messages(&mut conn, "bye", on_message).await;
    conn.close().await;
    confirmed
}

fn seq_of(frame: &Frame) -> Option<u64> {
    frame.headers.get("seq").and_then(|v| v.parse().ok())
}

/// A subscriber that stays for the whole run.
#[derive(Debug)]
pub(super) struct TopicSubscriber {
    /// What it subscribes to (a topic or a wildcard pattern).
    pub(super) destination: String,
    /// Per topic of the run: its progress when it matches that topic.
    pub(super) progress: Vec<Option<Arc<AtomicU64>>>,
    /// Topic destinations are this and the topic's index.
    pub(super) topic_prefix: String,
}

/// What a lasting subscriber saw.
#[derive(Debug, Default)]
pub(super) struct TopicStats {
    /// Distinct messages per topic index.
    pub(super) received: Vec<u64>,
    /// Messages with a sequence number at or below one already seen.
    pub(super) duplicates: u64,
    /// Messages of other runs' topics (`*.tN` on a shared server), or
    /// without a number.
    pub(super) foreign: u64,
    pub(super) error: Option<String>,
}

/// Reads until `finish`, tracking each topic's sequence numbers, then
/// DISCONNECTs.
pub(super) async fn subscribe(
    mut conn: Conn,
    subscriber: TopicSubscriber,
    mut finish: watch::Receiver<bool>,
) -> TopicStats {
    let mut stats = TopicStats {
        received: vec![0; subscriber.progress.len()],
        ..TopicStats::default()
    };
    let count = |frame: &Frame, stats: &mut TopicStats| {
        let topic = frame
            .headers
            .get(header::DESTINATION)
            .and_then(|d| d.strip_prefix(subscriber.topic_prefix.as_str()))
            .and_then(|i| i.parse::<usize>().ok());
        let progress = topic.and_then(|i| Some((i, subscriber.progress.get(i)?.as_ref()?)));
        let (Some((topic, progress)), Some(seq)) = (progress, seq_of(frame)) else {
            stats.foreign += 1;
            return;
        };
        // One publisher per topic, so its messages come in order: a lower
        // number is a repeat, a higher one than expected means a gap.
        if seq < progress.load(Ordering::Relaxed) {
            stats.duplicates += 1;
        } else {
            stats.received[topic] += 1;
            progress.store(seq + 1, Ordering::Relaxed);
        }
    };
    let ended = loop {
        let next = tokio::select! {
            biased;
            next = conn.next_frame() => next,
            () = stopped(&mut finish) => break Ok(()),
        };
        match next {
            Ok(Some(frame)) if frame.command == Command::Message => count(&frame, &mut stats),
            Ok(Some(frame)) => break Err(unexpected(&frame, "MESSAGE")),
            Ok(None) => {
                break Err(format!(
                    "subscriber {}: connection closed by server ({})",
                    subscriber.destination,
                    conn.close_reason()
                ));
            }
            Err(e) => break Err(format!("subscriber {}: {e}", subscriber.destination)),
        }
    };
    match ended {
        Ok(()) => {
            if let Err(e) = leave(conn, |frame| count(frame, &mut stats)).await {
                stats.error = Some(format!("subscriber {}: {e}", subscriber.destination));
            }
        }
        Err(e) => {
            stats.error = Some(e);
            // Gone: the producers must not wait for it any more.
            for progress in subscriber.progress.iter().flatten() {
                progress.store(u64::MAX, Ordering::Relaxed);
            }
            conn.close().await;
        }
    }
    stats
}

/// A queue consumer for the whole run, reconnecting every `lifetime`.
#[derive(Debug)]
pub(super) struct Consumer {
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) destination: String,
    pub(super) ledger: Arc<Ledger>,
    /// How long each of its sessions lasts before it drops the connection
    /// without acknowledging what it holds.
    pub(super) lifetime: Duration,
    /// The first session's, so that consumers do not all leave together.
    pub(super) first_lifetime: Duration,
    /// NACK a message the first time it comes when `seq % nack_every == 0`
    /// (0: never).
    pub(super) nack_every: u64,
    pub(super) connect_limit: Duration,
}

/// What a consumer did.
#[derive(Debug, Default)]
pub(super) struct ConsumerStats {
    pub(super) acked: u64,
    pub(super) nacked: u64,
    /// Messages that came with `redelivered:true`.
    pub(super) redelivered: u64,
    /// Sessions ended on purpose with messages possibly unacknowledged.
    pub(super) dropped_sessions: u64,
    /// Messages whose number was never sent.
    pub(super) unknown: u64,
    pub(super) errors: Errors,
}

/// ACK or NACK of `frame` in the connection's STOMP version.
fn settle(frame: &Frame, version: Version, nack: bool) -> Frame {
    let command = if nack { Command::Nack } else { Command::Ack };
    let mut settle = Frame::new(command);
    if version == Version::V1_2 {
        settle = settle.header(
            header::ID,
            frame.headers.get(header::ACK).unwrap_or_default(),
        );
    } else {
        settle = settle
            .header(
                header::MESSAGE_ID,
                frame.headers.get(header::MESSAGE_ID).unwrap_or_default(),
            )
            .header(
                header::SUBSCRIPTION,
                frame.headers.get(header::SUBSCRIPTION).unwrap_or_default(),
            );
    }
    settle
}

/// Connects and SUBSCRIBEs to a queue with `ack:client-individual`.
async fn queue_session(
    endpoint: &Endpoint,
    destination: &str,
    limit: Duration,
    on_message: impl FnMut(&Frame),
) -> Result<Conn, String> {
    let setup = async {
        let mut conn = endpoint.connect(None, None).await?;
        let subscribe = Frame::new(Command::Subscribe)
            .header(header::ID, "0")
            .header(header::DESTINATION, destination)
            .header(header::ACK, "client-individual")
            .header(header::RECEIPT, "sub");
        conn.send(&subscribe).await?;
        // The queue may dispatch before the RECEIPT goes out.
        receipt_among_messages(&mut conn, "sub", on_message).await?;
        Ok::<Conn, String>(conn)
    };
    tokio::time::timeout(limit, setup)
        .await
        .unwrap_or_else(|_| Err(format!("connecting to {destination} took too long")))
}

/// How a consumer session ended.
enum SessionEnd {
    Finish,
    Lifetime,
    Failed(String),
}

/// Consumes until `finish`: ACKs every message (recording it first), NACKs
/// some once, and every `lifetime` drops its connection without ACKing what
/// it holds, then reconnects.
pub(super) async fn consume(
    consumer: Consumer,
    mut finish: watch::Receiver<bool>,
) -> ConsumerStats {
    let mut stats = ConsumerStats::default();
    let mut lifetime = consumer.first_lifetime;
    loop {
        if *finish.borrow() {
            break;
        }
        // Messages that come before the SUBSCRIBE's RECEIPT are left
        // unacknowledged: this session drops them, the server redelivers.
        let connecting = queue_session(
            &consumer.endpoint,
            &consumer.destination,
            consumer.connect_limit,
            |_| {},
        );
        let mut conn = tokio::select! {
            conn = connecting => match conn {
                Ok(conn) => conn,
                Err(e) => {
                    stats.errors.add(format!("consumer {}: {e}", consumer.destination));
                    // Not in a tight loop against a server that refuses.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            () = stopped(&mut finish) => break,
        };
        let version = conn.version();
        let end_at = Instant::now() + lifetime;
        lifetime = consumer.lifetime;
        let end = loop {
            let next = tokio::select! {
                biased;
                next = conn.next_frame() => next,
                () = stopped(&mut finish) => break SessionEnd::Finish,
                () = tokio::time::sleep_until(end_at) => break SessionEnd::Lifetime,
            };
            let frame = match next {
                Ok(Some(frame)) if frame.command == Command::Message => frame,
                Ok(Some(frame)) => break SessionEnd::Failed(unexpected(&frame, "MESSAGE")),
                Ok(None) => {
                    break SessionEnd::Failed(format!(
                        "connection closed by server ({})",
                        conn.close_reason()
                    ));
                }
                Err(e) => break SessionEnd::Failed(e),
            };
            let redelivered = frame.headers.get(header::REDELIVERED) == Some("true");
            stats.redelivered += u64::from(redelivered);
            let Some(seq) = seq_of(&frame) else {
                stats.unknown += 1;
                continue;
            };
            let nack =
                consumer.nack_every > 0 && seq.is_multiple_of(consumer.nack_every) && !redelivered;
            if nack {
                stats.nacked += 1;
            } else {
                if !consumer.ledger.record(seq) {
                    stats.unknown += 1;
                }
                stats.acked += 1;
            }
            if let Err(e) = conn.send(&settle(&frame, version, nack)).await {
                break SessionEnd::Failed(e);
            }
        };
        match end {
            SessionEnd::Finish => {
                // After the drain: anything still coming is a redelivery of
                // a message already acknowledged.
                if let Err(e) = leave(conn, |_| {}).await {
                    stats
                        .errors
                        .add(format!("consumer {}: {e}", consumer.destination));
                }
                break;
            }
            SessionEnd::Lifetime => {
                stats.dropped_sessions += 1;
                conn.close().await;
            }
            SessionEnd::Failed(e) => {
                stats
                    .errors
                    .add(format!("consumer {}: {e}", consumer.destination));
                conn.close().await;
            }
        }
    }
    stats
}

/// A client that keeps connecting, exchanging a few messages and leaving.
#[derive(Debug)]
pub(super) struct Churner {
    pub(super) endpoint: Arc<Endpoint>,
    pub(super) index: usize,
    /// The run's topics, one subscribed per topic cycle.
    pub(super) topics: Vec<String>,
    /// The run's queues and their ledgers, one consumed per queue cycle.
    pub(super) queues: Vec<(String, Arc<Ledger>)>,
    /// Where it sends the messages it expects back.
    pub(super) own_topic: String,
    /// Longest one cycle may take.
    pub(super) cycle_limit: Duration,
    /// Cycles completed by every churner, for the calibration.
    pub(super) cycles_done: Arc<AtomicU64>,
}

/// What a churner did.
#[derive(Debug, Default)]
pub(super) struct ChurnStats {
    pub(super) topic_cycles: u64,
    pub(super) queue_cycles: u64,
    pub(super) own_sent: u64,
    pub(super) own_lost: u64,
    /// Messages of the run's topics that came during topic cycles.
    pub(super) topic_messages: u64,
    /// Queue messages acknowledged, and taken but left unacknowledged.
    pub(super) acked: u64,
    pub(super) left_unacked: u64,
    pub(super) errors: Errors,
}

/// Cycles until `stop`, alternating a topic cycle and a queue cycle, at
/// `rate` cycles per second (`None`: back to back).
pub(super) async fn churn(
    churner: Churner,
    mut rate: watch::Receiver<Option<f64>>,
    mut stop: watch::Receiver<bool>,
) -> ChurnStats {
    let mut stats = ChurnStats::default();
    let mut current = *rate.borrow_and_update();
    let mut due = Instant::now();
    let mut rate_open = true;
    let mut cycle = 0usize;
    loop {
        if *stop.borrow() {
            break;
        }
        if rate.has_changed().unwrap_or(false) {
            current = *rate.borrow_and_update();
            due = Instant::now();
        }
        if let Some(per_sec) = current {
            if due > Instant::now() {
                tokio::select! {
                    () = tokio::time::sleep_until(due) => {}
                    changed = rate.changed(), if rate_open => {
                        if changed.is_err() {
                            rate_open = false;
                        } else {
                            current = *rate.borrow_and_update();
                            due = Instant::now();
                        }
                        continue;
                    }
                    () = stopped(&mut stop) => break,
                }
            }
            due = next_due(due, per_sec, Instant::now());
        }
        let outcome = if cycle.is_multiple_of(2) {
            let topic = &churner.topics[(churner.index + cycle / 2) % churner.topics.len()];
            tokio::time::timeout(
                churner.cycle_limit,
                topic_cycle(&churner, topic, &mut stats),
            )
            .await
        } else {
            let (queue, ledger) =
                &churner.queues[(churner.index + cycle / 2) % churner.queues.len()];
            tokio::time::timeout(
                churner.cycle_limit,
                queue_cycle(&churner, queue, ledger, &mut stats),
            )
            .await
        };
        match outcome {
            Ok(Ok(())) => {}
            Ok(Err(e)) => stats.errors.add(format!("churner: {e}")),
            Err(_) => stats.errors.add(format!(
                "churner: a cycle took longer than {} s",
                churner.cycle_limit.as_secs()
            )),
        }
        cycle += 1;
        churner.cycles_done.fetch_add(1, Ordering::Relaxed);
    }
    stats
}

/// Subscribes to `topic` and to its own topic, sends itself a few
/// messages, waits for them, and leaves.
async fn topic_cycle(churner: &Churner, topic: &str, stats: &mut ChurnStats) -> Result<(), String> {
    let mut conn = churner.endpoint.connect(None, None).await?;
    let subscribe = |id: &str, destination: &str| {
        Frame::new(Command::Subscribe)
            .header(header::ID, id)
            .header(header::DESTINATION, destination)
    };
    conn.feed(&subscribe("0", topic)).await?;
    conn.send(&subscribe("1", &churner.own_topic).header(header::RECEIPT, "sub"))
        .await?;
    let mut topic_messages = 0u64;
    receipt_among_messages(&mut conn, "sub", |_| topic_messages += 1).await?;
    for seq in 0..CHURN_OWN_MESSAGES {
        let mut send = Frame::new(Command::Send)
            .header(header::DESTINATION, &churner.own_topic)
            .header("seq", &seq.to_string())
            .body(Bytes::from_static(b"churn"));
        if seq + 1 == CHURN_OWN_MESSAGES {
            send = send.header(header::RECEIPT, "sent");
        }
        conn.feed(&send).await?;
    }
    conn.flush().await?;
    stats.own_sent += CHURN_OWN_MESSAGES;
    // Nobody else sends to its topic, and it is subscribed throughout.
    // The wait for its messages is bounded once the server has confirmed
    // them (stompbox delivers before it confirms, a relay's broker may
    // not): what is missing by then was lost.
    let (mut own, mut confirmed_at) = (0u64, None::<Instant>);
    while own < CHURN_OWN_MESSAGES || confirmed_at.is_none() {
        let next = match confirmed_at {
            Some(at) => match tokio::time::timeout_at(at + CHURN_OWN_WAIT, conn.next_frame()).await
            {
                Ok(next) => next,
                Err(_) => break,
            },
            None => conn.next_frame().await,
        };
        let frame = next?.ok_or_else(|| {
            format!(
                "connection closed by server ({}) during a topic cycle",
                conn.close_reason()
            )
        })?;
        match frame.command {
            Command::Message if frame.headers.get(header::SUBSCRIPTION) == Some("1") => own += 1,
            Command::Message => topic_messages += 1,
            Command::Receipt if frame.headers.get(header::RECEIPT_ID) == Some("sent") => {
                confirmed_at = Some(Instant::now());
            }
            _ => return Err(unexpected(&frame, "MESSAGE or RECEIPT")),
        }
    }
    stats.own_lost += CHURN_OWN_MESSAGES.saturating_sub(own);
    leave(conn, |_| topic_messages += 1).await?;
    stats.topic_messages += topic_messages;
    stats.topic_cycles += 1;
    Ok(())
}

/// Consumes a few messages of `queue`, acknowledges all but the last of
/// them, and leaves: the server must redeliver what it left.
async fn queue_cycle(
    churner: &Churner,
    queue: &str,
    ledger: &Ledger,
    stats: &mut ChurnStats,
) -> Result<(), String> {
    let mut taken: Vec<Frame> = Vec::new();
    let mut conn = queue_session(&churner.endpoint, queue, churner.cycle_limit, |frame| {
        taken.push(frame.clone());
    })
    .await?;
    let until = Instant::now() + CHURN_QUEUE_WAIT;
    while taken.len() < CHURN_QUEUE_TAKE {
        let Ok(next) = tokio::time::timeout_at(until, conn.next_frame()).await else {
            break;
        };
        match next? {
            Some(frame) if frame.command == Command::Message => taken.push(frame),
            Some(frame) => return Err(unexpected(&frame, "MESSAGE")),
            None => {
                return Err(format!(
                    "connection closed by server ({}) during a queue cycle",
                    conn.close_reason()
                ));
            }
        }
    }
    // Messages dispatched before the SUBSCRIBE's RECEIPT may be more.
    let keep = taken.len().saturating_sub(1).min(CHURN_QUEUE_TAKE - 1);
    let version = conn.version();
    for frame in &taken[..keep] {
        if let Some(seq) = seq_of(frame) {
            ledger.record(seq);
        }
        conn.feed(&settle(frame, version, false)).await?;
        stats.acked += 1;
    }
    conn.flush().await?;
    stats.left_unacked += (taken.len() - keep) as u64;
    let mut more = 0u64;
    leave(conn, |_| more += 1).await?;
    stats.left_unacked += more;
    stats.queue_cycles += 1;
    Ok(())
}
