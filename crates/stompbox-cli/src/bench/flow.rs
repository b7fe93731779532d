//! `stompbox bench burst` and `stompbox bench stalled`: the two shapes of
//! publisher flow control.
//!
//! `burst`: one publisher writes a whole burst at once (10,000 × 1 KiB,
//! then 300 × 60 KiB) to a few subscribers that read as fast as they can.
//! None may be cut off; the publisher should be held back instead, and the
//! time its writes were blocked says how much.
//!
//! `stalled`: many subscribers of one topic that never read, fed at a steady
//! rate, while a canary publisher and subscriber use another topic. The
//! canary's latency during the attack, against its own latency measured
//! before the attack in the same run, says whether the stalled subscribers
//! slowed anyone else down.

use super::conn::{Conn, Delivery, Fleet, close_all, connect_all};
use super::report::{Histogram, Json, random_u64};
use super::{Out, Outcome, Target, TargetArgs, failed, micros, since, verdict};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use stompbox_codec::{Command, Frame, header};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// A write that took at least this long was held back by the server (its
/// socket buffers full because it stopped reading), not just copied.
const BLOCKED: Duration = Duration::from_millis(1);

/// Flags of `stompbox bench burst`.
#[derive(Debug, clap::Args)]
pub(crate) struct BurstArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Subscriber connections, all on the burst's topic, reading as fast as
    /// they can.
    #[arg(long, default_value_t = 5)]
    subscribers: usize,
    /// A burst as COUNTxBYTES (messages × body size), sent in one go.
    /// Repeatable; each burst gets a fresh topic and fresh subscribers.
    #[arg(
        long = "burst",
        value_name = "COUNTxBYTES",
        default_values_t = ["10000x1024".to_owned(), "300x61440".to_owned()]
    )]
    bursts: Vec<String>,
}

/// One burst shape.
#[derive(Debug, Clone, Copy)]
struct Shape {
    count: u64,
    body: usize,
}

fn parse_shape(text: &str) -> Result<Shape, String> {
    let (count, body) = text
        .split_once('x')
        .ok_or_else(|| format!("bench burst: --burst {text}: expected COUNTxBYTES"))?;
    let count: u64 = count
        .parse()
        .map_err(|_| format!("bench burst: --burst {text}: bad count"))?;
    let body: usize = body
        .parse()
        .map_err(|_| format!("bench burst: --burst {text}: bad size"))?;
    if count == 0 {
        return Err(format!("bench burst: --burst {text}: count must be > 0"));
    }
    Ok(Shape { count, body })
}

pub(crate) async fn run_burst(args: BurstArgs) -> Result<(), String> {
    if args.subscribers == 0 {
        return Err("bench burst: --subscribers must be > 0".into());
    }
    let shapes = args
        .bursts
        .iter()
        .map(|b| parse_shape(b))
        .collect::<Result<Vec<_>, _>>()?;
    let params = Json::obj()
        .with("subscribers", Json::uint(args.subscribers as u64))
        .with(
            "bursts",
            Json::Arr(args.bursts.iter().map(|b| Json::str(b.as_str())).collect()),
        )
        .with("duration_secs", Json::uint(args.target.duration_secs));
    let args = Arc::new(args);
    let shapes = Arc::new(shapes);
    let common = args.target.clone();
    super::run_targets("burst", &["serve"], &common, params, |target, out| {
        let (args, shapes) = (Arc::clone(&args), Arc::clone(&shapes));
        async move { measure_bursts(target, &args, &shapes, out).await }
    })
    .await
}

async fn measure_bursts(target: Target, args: &BurstArgs, shapes: &[Shape], out: Out) -> Outcome {
    let (json, _, endpoint) = match target
        .prepare(&args.target, args.subscribers as u64 + 1, out)
        .await
    {
        Ok(prepared) => prepared,
        Err(outcome) => return outcome,
    };
    let deadline = Instant::now() + Duration::from_secs(args.target.duration_secs);
    let mut results = Vec::new();
    let mut failure = Vec::new();
    for shape in shapes {
        say!(
            out,
            "\n== burst on {}: {} × {} bytes to {} subscribers, all written at once",
            target.label,
            shape.count,
            shape.body,
            args.subscribers
        );
        match one_burst(&endpoint, args, *shape, deadline, out).await {
            Ok((figures, problems)) => {
                failure.extend(
                    problems
                        .into_iter()
                        .map(|p| format!("{}x{}: {p}", shape.count, shape.body)),
                );
                results.push(figures);
            }
            Err(e) => {
                failure.push(format!("{}x{}: {e}", shape.count, shape.body));
                break;
            }
        }
    }
    let (ok, json) = verdict(out, json.with("bursts", Json::Arr(results)), &failure);
    Outcome { ok, json }
}

/// What one burst subscriber saw.
#[derive(Debug, Default)]
struct Reader {
    received: u64,
    out_of_order: u64,
    last_at: Option<Duration>,
    /// Why it ended before it had everything: an ERROR or a close.
    cut_off: Option<String>,
}

async fn read_burst(mut conn: Conn, count: u64, epoch: Instant) -> Reader {
    let mut reader = Reader::default();
    let mut next_seq = 0;
    while reader.received < count {
        match conn.next_delivery().await {
            Ok(Some(Delivery::Message { seq, .. })) => {
                if seq != Some(next_seq) {
                    reader.out_of_order += 1;
                }
                next_seq = seq.map_or(next_seq, |s| s + 1);
                reader.received += 1;
                reader.last_at = Some(since(epoch));
            }
            Ok(Some(Delivery::Other(frame))) => {
                reader.cut_off = Some(super::conn::unexpected(&frame, "MESSAGE"));
                break;
            }
            Ok(None) => {
                reader.cut_off = Some(format!("closed ({})", conn.close_reason()));
                break;
            }
            Err(e) => {
                reader.cut_off = Some(e);
                break;
            }
        }
    }
    conn.close().await;
    reader
}

/// Sends one burst and waits for every subscriber: the burst's figures, and
/// what went wrong (empty: nothing).
async fn one_burst(
    endpoint: &Arc<super::conn::Endpoint>,
    args: &BurstArgs,
    shape: Shape,
    deadline: Instant,
    out: Out,
) -> Result<(Json, Vec<String>), String> {
    let topic = format!("/topic/bench-burst-{:016x}", random_u64());
    let fleet = Fleet {
        count: args.subscribers,
        concurrency: args.subscribers,
        heartbeat: None,
        limit: Duration::from_secs(args.target.connect_timeout_secs),
        deadline,
        what: "subscribers",
        distinct_ids: false,
    };
    let (subscribers, setup_errors) = connect_all(endpoint, fleet, |_| topic.clone()).await;
    if !setup_errors.is_empty() {
        close_all(subscribers).await;
        return Err(format!(
            "subscribers failed to set up: {}",
            setup_errors.lines().collect::<Vec<_>>().join("; ")
        ));
    }
    let mut publisher = tokio::time::timeout_at(deadline, endpoint.connect(None, None))
        .await
        .map_err(|_| "the publisher could not connect in time".to_owned())?
        .map_err(|e| format!("publisher: {e}"))?;
    let epoch = Instant::now();
    let mut readers = JoinSet::new();
    for conn in subscribers {
        readers.spawn(read_burst(conn, shape.count, epoch));
    }
    let body = Bytes::from(vec![b'x'; shape.body]);
    let mut blocked = Duration::ZERO;
    let written = tokio::time::timeout_at(deadline, async {
        for seq in 0..shape.count {
            let mut frame = Frame::new(Command::Send)
                .header(header::DESTINATION, &topic)
                .header("seq", &seq.to_string())
                .body(body.clone());
            if seq + 1 == shape.count {
                frame = frame.header(header::RECEIPT, "burst");
            }
            let started = Instant::now();
            publisher.feed(&frame).await?;
            let took = started.elapsed();
            if took >= BLOCKED {
                blocked += took;
            }
        }
        let started = Instant::now();
        publisher.flush().await?;
        let took = started.elapsed();
        if took >= BLOCKED {
            blocked += took;
        }
        let write_secs = since(epoch);
        publisher.expect_receipt("burst").await?;
        Ok::<_, String>((write_secs, since(epoch)))
    })
    .await;
    let (write_secs, receipt_secs) = match written {
        Ok(Ok(times)) => times,
        Ok(Err(e)) => {
            readers.abort_all();
            return Err(format!("publisher: {e}"));
        }
        Err(_) => {
            readers.abort_all();
            return Err("deadline passed while publishing".into());
        }
    };
    publisher.close().await;
    let mut stats = Vec::new();
    let all_read = tokio::time::timeout_at(deadline, async {
        while let Some(joined) = readers.join_next().await {
            if let Ok(reader) = joined {
                stats.push(reader);
            }
        }
    })
    .await;
    readers.abort_all();
    let expected = shape.count * args.subscribers as u64;
    let delivered: u64 = stats.iter().map(|r| r.received).sum();
    let out_of_order: u64 = stats.iter().map(|r| r.out_of_order).sum();
    let cut_off: Vec<&str> = stats.iter().filter_map(|r| r.cut_off.as_deref()).collect();
    let burst_secs = stats
        .iter()
        .filter_map(|r| r.last_at)
        .max()
        .unwrap_or_default()
        .as_secs_f64();
    let blocked_secs = blocked.as_secs_f64();
    let blocked_share = (burst_secs > 0.0).then(|| blocked_secs / burst_secs);
    let mib_per_sec =
        (burst_secs > 0.0).then(|| delivered as f64 * shape.body as f64 / burst_secs / 1_048_576.0);
    say!(
        out,
        "deliveries {delivered}/{expected}, {} subscribers cut off, {out_of_order} out of order",
        cut_off.len()
    );
    say!(
        out,
        "burst {burst_secs:.3} s to the last delivery ({} MiB/s delivered); publisher's writes done at {:.3} s, RECEIPT at {:.3} s; writes blocked {blocked_secs:.3} s ({} of the burst)",
        mib_per_sec.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}")),
        write_secs.as_secs_f64(),
        receipt_secs.as_secs_f64(),
        blocked_share.map_or_else(|| "-".to_owned(), |s| format!("{:.0} %", s * 100.0))
    );
    for reason in &cut_off {
        say!(out, "  cut off: {reason}");
    }
    let mut problems = Vec::new();
    if !cut_off.is_empty() {
        problems.push(format!("{} subscribers cut off", cut_off.len()));
    }
    if delivered < expected {
        problems.push(format!(
            "{} deliveries missing{}",
            expected - delivered,
            if all_read.is_err() {
                " when the deadline passed"
            } else {
                ""
            }
        ));
    }
    if out_of_order > 0 {
        problems.push(format!("{out_of_order} deliveries out of order"));
    }
    let figures = Json::obj()
        .with("count", Json::uint(shape.count))
        .with("body", Json::uint(shape.body as u64))
        .with("deliveries", Json::uint(delivered))
        .with("expected", Json::uint(expected))
        .with("disconnects", Json::uint(cut_off.len() as u64))
        .with("out_of_order", Json::uint(out_of_order))
        .with("burst_secs", Json::Num(burst_secs))
        .with("write_secs", Json::Num(write_secs.as_secs_f64()))
        .with("receipt_secs", Json::Num(receipt_secs.as_secs_f64()))
        .with("publisher_blocked_secs", Json::Num(blocked_secs))
        .with("publisher_blocked_share", Json::opt_num(blocked_share))
        .with("mib_per_sec", Json::opt_num(mib_per_sec));
    Ok((figures, problems))
}

/// Flags of `stompbox bench stalled`.
#[derive(Debug, clap::Args)]
pub(crate) struct StalledArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Subscribers of the stalled topic that never read.
    #[arg(long, default_value_t = 50)]
    stalled: usize,
    /// Bytes per second published to the stalled topic.
    #[arg(long, default_value_t = 100_000)]
    feed_bytes_per_sec: u64,
    /// Body size of the stalled topic's messages.
    #[arg(long, default_value_t = 1024)]
    body: usize,
    /// Canary messages per second, on a topic of their own.
    #[arg(long, default_value_t = 50)]
    canary_rate: u64,
    /// Seconds of canary traffic before the stalled subscribers come: the
    /// reference latency.
    #[arg(long, default_value_t = 3)]
    baseline_secs: u64,
    /// Seconds of canary traffic with the stalled subscribers fed.
    #[arg(long, default_value_t = 15)]
    attack_secs: u64,
}

/// The canary latency at the 99th percentile that passes, in ms.
const CANARY_P99_TARGET_MS: f64 = 50.0;

pub(crate) async fn run_stalled(args: StalledArgs) -> Result<(), String> {
    if args.stalled == 0 || args.canary_rate == 0 || args.body == 0 || args.attack_secs == 0 {
        return Err(
            "bench stalled: --stalled, --canary-rate, --body and --attack-secs must be > 0".into(),
        );
    }
    let params = Json::obj()
        .with("stalled", Json::uint(args.stalled as u64))
        .with("feed_bytes_per_sec", Json::uint(args.feed_bytes_per_sec))
        .with("body", Json::uint(args.body as u64))
        .with("canary_rate", Json::uint(args.canary_rate))
        .with("baseline_secs", Json::uint(args.baseline_secs))
        .with("attack_secs", Json::uint(args.attack_secs));
    let args = Arc::new(args);
    let common = args.target.clone();
    super::run_targets("stalled", &["serve"], &common, params, |target, out| {
        let args = Arc::clone(&args);
        async move { measure_stalled(target, &args, out).await }
    })
    .await
}

/// Canary latencies, split at the moment the attack began.
#[derive(Debug, Default)]
struct Canary {
    baseline: Histogram,
    attack: Histogram,
    received: u64,
    error: Option<String>,
}

/// Reads canary messages until it has `goal` of them (known once the
/// canary publisher stopped) or `stop`.
async fn read_canary(
    mut conn: Conn,
    epoch: Instant,
    attack_from_us: Arc<AtomicU64>,
    mut goal: tokio::sync::watch::Receiver<u64>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Canary {
    let mut canary = Canary::default();
    loop {
        if canary.received >= *goal.borrow() {
            break;
        }
        let next = tokio::select! {
            next = conn.next_delivery() => next,
            changed = goal.changed() => {
                if changed.is_err() {
                    break;
                }
                continue;
            }
            () = super::stopped(&mut stop) => break,
        };
        match next {
            Ok(Some(Delivery::Message { ts: Some(ts), .. })) => {
                let latency = micros(since(epoch)).saturating_sub(ts);
                canary.received += 1;
                if ts >= attack_from_us.load(Ordering::Relaxed) {
                    canary.attack.record(latency);
                } else {
                    canary.baseline.record(latency);
                }
            }
            Ok(Some(Delivery::Message { .. })) => {}
            Ok(Some(Delivery::Other(frame))) => {
                canary.error = Some(super::conn::unexpected(&frame, "MESSAGE"));
                break;
            }
            Ok(None) => {
                canary.error = Some(format!("closed ({})", conn.close_reason()));
                break;
            }
            Err(e) => {
                canary.error = Some(e);
                break;
            }
        }
    }
    conn.close().await;
    canary
}

/// Publishes to `topic` every `every` until `stop`, stamping `ts`; returns
/// how many it sent.
async fn publish_paced(
    mut conn: Conn,
    topic: String,
    body: Bytes,
    every: Duration,
    epoch: Instant,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<u64, String> {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    let mut sent = 0u64;
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            () = super::stopped(&mut stop) => break,
        }
        let frame = Frame::new(Command::Send)
            .header(header::DESTINATION, &topic)
            .header("seq", &sent.to_string())
            .header("ts", &micros(since(epoch)).to_string())
            .body(body.clone());
        // A publisher the server holds back blocks here; stop still ends it.
        tokio::select! {
            written = conn.send(&frame) => written?,
            () = super::stopped(&mut stop) => break,
        }
        sent += 1;
    }
    conn.close().await;
    Ok(sent)
}

async fn measure_stalled(target: Target, args: &StalledArgs, out: Out) -> Outcome {
    let (json, _, endpoint) = match target
        .prepare(&args.target, args.stalled as u64 + 3, out)
        .await
    {
        Ok(prepared) => prepared,
        Err(outcome) => return outcome,
    };
    let deadline = Instant::now() + Duration::from_secs(args.target.duration_secs);
    let connect_limit = Duration::from_secs(args.target.connect_timeout_secs);
    let suffix = random_u64();
    let canary_topic = format!("/topic/bench-canary-{suffix:016x}");
    let stalled_topic = format!("/topic/bench-stalled-{suffix:016x}");
    say!(
        out,
        "\n== stalled on {}: {} subscribers that never read, fed {} B/s in {}-byte messages; canary at {}/s on another topic, {} s before and {} s during",
        target.label,
        args.stalled,
        args.feed_bytes_per_sec,
        args.body,
        args.canary_rate,
        args.baseline_secs,
        args.attack_secs
    );
    let setup = async {
        let canary_sub = super::conn::subscribed(
            &endpoint,
            None,
            None,
            &canary_topic,
            "canary",
            connect_limit,
        )
        .await?;
        let canary_pub = endpoint.connect(None, None).await?;
        let feeder = endpoint.connect(None, None).await?;
        Ok::<_, String>((canary_sub, canary_pub, feeder))
    };
    let (canary_sub, canary_pub, feeder) = match tokio::time::timeout_at(deadline, setup).await {
        Ok(Ok(conns)) => conns,
        Ok(Err(e)) => return failed(out, json, format!("canary setup: {e}")),
        Err(_) => return failed(out, json, "canary setup: deadline passed".into()),
    };
    let epoch = Instant::now();
    let attack_from_us = Arc::new(AtomicU64::new(u64::MAX));
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let (goal_tx, goal_rx) = tokio::sync::watch::channel(u64::MAX);
    let (stop_reader_tx, stop_reader_rx) = tokio::sync::watch::channel(false);
    let mut reader = tokio::spawn(read_canary(
        canary_sub,
        epoch,
        Arc::clone(&attack_from_us),
        goal_rx,
        stop_reader_rx,
    ));
    let canary_every = Duration::from_secs_f64(1.0 / args.canary_rate as f64);
    let canary_publisher = tokio::spawn(publish_paced(
        canary_pub,
        canary_topic,
        Bytes::from_static(b"canary"),
        canary_every,
        epoch,
        stop_rx.clone(),
    ));
    tokio::time::sleep(Duration::from_secs(args.baseline_secs)).await;

    // The attack: subscribers that never read, then their feed.
    let fleet = Fleet {
        count: args.stalled,
        concurrency: args.stalled.min(100),
        heartbeat: None,
        limit: connect_limit,
        deadline,
        what: "stalled subscribers",
        distinct_ids: false,
    };
    let (stalled, setup_errors) = connect_all(&endpoint, fleet, |_| stalled_topic.clone()).await;
    let stalled_ready = stalled.len();
    attack_from_us.store(micros(since(epoch)), Ordering::Relaxed);
    let feed_every =
        Duration::from_secs_f64(args.body as f64 / args.feed_bytes_per_sec.max(1) as f64);
    let feed = tokio::spawn(publish_paced(
        feeder,
        stalled_topic,
        Bytes::from(vec![b'x'; args.body]),
        feed_every,
        epoch,
        stop_rx,
    ));
    tokio::time::sleep(Duration::from_secs(args.attack_secs)).await;
    let _ = stop_tx.send(true);
    let canary_sent = canary_publisher
        .await
        .map_err(|e| e.to_string())
        .and_then(|sent| sent);
    // The canary's last messages are still on their way: the reader gets a
    // few seconds to receive everything that was sent.
    let _ = goal_tx.send(*canary_sent.as_ref().unwrap_or(&0));
    let joined = match tokio::time::timeout(Duration::from_secs(5), &mut reader).await {
        Ok(joined) => joined,
        Err(_) => {
            let _ = stop_reader_tx.send(true);
            reader.await
        }
    };
    let canary = joined.unwrap_or_else(|e| Canary {
        error: Some(format!("canary reader failed: {e}")),
        ..Canary::default()
    });
    let fed = feed.await.map_err(|e| e.to_string()).and_then(|sent| sent);
    // The stalled ones' sockets were never read; closing them is enough.
    drop(stalled);

    let p99 = |h: &Histogram| h.quantile(0.99).map(|us| us as f64 / 1000.0);
    let (base_p99, attack_p99) = (p99(&canary.baseline), p99(&canary.attack));
    let ratio = match (attack_p99, base_p99) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let met = attack_p99.is_some_and(|p| p < CANARY_P99_TARGET_MS);
    say!(
        out,
        "stalled subscribers connected: {stalled_ready}/{}; fed {} messages",
        args.stalled,
        fed.as_ref()
            .map_or_else(|e| format!("? ({e})"), ToString::to_string)
    );
    say!(out, "canary before: {}", canary.baseline.summary_ms());
    say!(out, "canary during: {}", canary.attack.summary_ms());
    say!(
        out,
        "canary p99 during / before: {} (target p99 < {CANARY_P99_TARGET_MS} ms: {})",
        ratio.map_or_else(|| "-".to_owned(), |r| format!("{r:.2}")),
        if met { "met" } else { "missed" }
    );
    let mut failure = Vec::new();
    if !setup_errors.is_empty() {
        failure.push(format!(
            "{} stalled subscribers failed to set up",
            args.stalled - stalled_ready
        ));
    }
    if let Some(e) = &canary.error {
        failure.push(format!("canary subscriber: {e}"));
    }
    match &canary_sent {
        Ok(sent) if canary.received < *sent => failure.push(format!(
            "canary: {} of {sent} messages received",
            canary.received
        )),
        Ok(_) => {}
        Err(e) => failure.push(format!("canary publisher: {e}")),
    }
    if let Err(e) = &fed {
        failure.push(format!("feed publisher: {e}"));
    }
    let json = json
        .with("stalled_ready", Json::uint(stalled_ready as u64))
        .with("fed", Json::opt_uint(fed.as_ref().ok().copied()))
        .with(
            "canary_sent",
            Json::opt_uint(canary_sent.as_ref().ok().copied()),
        )
        .with("canary_received", Json::uint(canary.received))
        .with("canary_before", canary.baseline.to_json_ms())
        .with("canary_during", canary.attack.to_json_ms())
        .with("canary_p99_ratio", Json::opt_num(ratio))
        .with("canary_p99_target_met", Json::Bool(met));
    let (ok, json) = verdict(out, json, &failure);
    Outcome { ok, json }
}
