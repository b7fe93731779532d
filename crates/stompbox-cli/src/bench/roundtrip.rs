//! `stompbox bench roundtrip`: request and reply through an application
//! handler.
//!
//! Each client subscribes to its reply destination (`/user/queue/echo`,
//! confirmed by a RECEIPT), then loops: SEND to `/app/bench/echo` with `seq`
//! and `ts` headers, and wait for the handler's reply, which carries them
//! back. `--in-flight` requests per client are outstanding at any time. Only
//! replies that arrive inside the measuring window (after `--warmup-secs`)
//! count; when it closes, clients stop sending and wait for what is still in
//! flight, which must all come back. `ts` is µs since the run's epoch on this
//! process's clock, so latency needs no clock sync.

use super::conn::{Conn, Delivery, Fleet, close_all, connect_all, unexpected};
use super::floor::FloorPlan;
use super::report::{CpuMark, Errors, Histogram, Json, rss_kib};
use super::{Out, Outcome, Target, TargetArgs, failed, micros, since};
use bytes::Bytes;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Duration;
use stompbox_codec::{Command, Frame, header};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Flags of `stompbox bench roundtrip`.
#[derive(Debug, clap::Args)]
pub(crate) struct RoundtripArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Client connections, each sending requests and reading its replies.
    #[arg(long, default_value_t = 100)]
    clients: usize,
    /// Requests each client keeps outstanding.
    #[arg(long, default_value_t = 1)]
    in_flight: usize,
    /// Length of the measuring window, in seconds.
    #[arg(long, default_value_t = 10)]
    secs: u64,
    /// Round trips before the window opens: connections, caches and the
    /// server's buffers settle. Not counted.
    #[arg(long, default_value_t = 1)]
    warmup_secs: u64,
    /// Each client stops after this many counted round trips, even if the
    /// window is still open (0: only --secs ends it).
    #[arg(long, default_value_t = 0)]
    count: u64,
    /// Body size of each request (and reply), in bytes.
    #[arg(long, default_value_t = 100)]
    body: usize,
    /// Clients connecting at the same time.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// Where requests go: the echo handler of `bench serve-echo`.
    #[arg(long, default_value = "/app/bench/echo")]
    destination: String,
    /// Where each client subscribes for its replies.
    #[arg(long, default_value = "/user/queue/echo")]
    reply_to: String,
    /// First measure the machine's floor in the same run: as many clients
    /// with as many messages in flight, each the size of a request, over
    /// bare TCP to an echo server. `comparison.floor` then gives each
    /// target's server CPU per round trip as a multiple of the echo
    /// server's.
    #[arg(long)]
    floor: bool,
}

/// After the window closes, how long clients wait for replies still in
/// flight before counting them lost.
const DRAIN_GRACE: Duration = Duration::from_secs(5);

pub(crate) async fn run(args: RoundtripArgs) -> Result<(), String> {
    if args.clients == 0 || args.in_flight == 0 || args.secs == 0 || args.connect_concurrency == 0 {
        return Err(
            "bench roundtrip: --clients, --in-flight, --secs and --connect-concurrency must be > 0"
                .into(),
        );
    }
    if args.warmup_secs + args.secs >= args.target.duration_secs {
        return Err(format!(
            "bench roundtrip: --warmup-secs + --secs ({} s) must be less than --duration-secs ({} s), \
             which also has to cover connecting",
            args.warmup_secs + args.secs,
            args.target.duration_secs
        ));
    }
    let params = Json::obj()
        .with("clients", Json::uint(args.clients as u64))
        .with("in_flight", Json::uint(args.in_flight as u64))
        .with("secs", Json::uint(args.secs))
        .with("warmup_secs", Json::uint(args.warmup_secs))
        .with("count", Json::uint(args.count))
        .with("body", Json::uint(args.body as u64))
        .with("destination", Json::str(args.destination.as_str()))
        .with("reply_to", Json::str(args.reply_to.as_str()))
        .with("duration_secs", Json::uint(args.target.duration_secs));
    let mut floor = if args.floor {
        let plan = FloorPlan {
            clients: args.clients,
            in_flight: args.in_flight,
            size: request_size(&args),
            warmup_secs: args.warmup_secs,
            secs: args.secs,
        };
        let out = Out {
            quiet: args.target.json_only,
        };
        Some(super::floor::measure(&plan, out).await?)
    } else {
        None
    };
    let args = Arc::new(args);
    let common = args.target.clone();
    let urls = common.urls.clone();
    super::run_targets_with(
        "roundtrip",
        &["bench", "serve-echo"],
        &common,
        params,
        &[super::Spawn::default()],
        |results, out| {
            let reference = super::compare_with_reference(
                results,
                "round_trips_per_sec",
                &urls,
                "roundtrip",
                out,
            );
            super::floor::add_to(reference, floor.take(), |floor| {
                against_floor(results, floor, out)
            })
        },
        |target, out| {
            let args = Arc::clone(&args);
            async move { measure(target, &args, out).await }
        },
    )
    .await
}

/// The shared plan of every client.
struct Plan {
    destination: String,
    body: Bytes,
    in_flight: usize,
    count: u64,
    epoch: Instant,
    /// Clients start sending.
    start: Instant,
    /// Replies from here on count.
    window_start: Instant,
    /// Clients stop sending.
    window_end: Instant,
    deadline: Instant,
}

/// What one client saw.
#[derive(Debug, Default)]
struct ClientStats {
    sent: u64,
    /// Replies, warm-up included.
    replies: u64,
    /// Replies inside the window: the figure.
    counted: u64,
    /// Time of the last counted reply, since the epoch.
    last_counted_at: Option<Duration>,
    /// Replies other than the oldest outstanding request's.
    out_of_order: u64,
    /// Replies to no outstanding request, or without `seq`/`ts`.
    unexpected: u64,
    /// Requests still unanswered when the client gave up waiting.
    unanswered: u64,
    latency_us: Histogram,
    error: Option<String>,
}

/// Takes `seq` off the outstanding requests. True when it was the oldest
/// (replies in order); `None` when it was not outstanding at all.
fn settle(outstanding: &mut VecDeque<u64>, seq: u64) -> Option<bool> {
    let at = outstanding.iter().position(|&s| s == seq)?;
    outstanding.remove(at);
    Some(at == 0)
}

/// Round trips per second over the counted replies: from the window's
/// start to the last counted reply.
fn rate(counted: u64, window_start: Duration, last: Option<Duration>) -> Option<f64> {
    let secs = last?.checked_sub(window_start)?.as_secs_f64();
    (secs > 0.0).then(|| counted as f64 / secs)
}

async fn measure(target: Target, args: &RoundtripArgs, out: Out) -> Outcome {
    let epoch = Instant::now();
    let deadline = epoch + Duration::from_secs(args.target.duration_secs);
    say!(
        out,
        "\n== roundtrip on {}: {} clients × {} in flight, {} bytes, {} → {}",
        target.label,
        args.clients,
        args.in_flight,
        args.body,
        args.destination,
        args.reply_to
    );
    // A relaying server's broker connections before any client (its
    // system connection alone) are compared below with every client connected.
    let (json, broker_before, endpoint) =
        match target.prepare(&args.target, args.clients as u64, out).await {
            Ok(prepared) => prepared,
            Err(outcome) => return outcome,
        };

    let setup_started = Instant::now();
    let fleet = Fleet {
        count: args.clients,
        concurrency: args.connect_concurrency,
        heartbeat: None,
        limit: Duration::from_secs(args.target.connect_timeout_secs),
        deadline,
        what: "clients",
        distinct_ids: false,
    };
    let (clients, setup_errors) = connect_all(&endpoint, fleet, |_| args.reply_to.clone()).await;
    let setup_secs = setup_started.elapsed().as_secs_f64();
    let ready = clients.len();
    say!(
        out,
        "clients ready: {ready}/{} in {setup_secs:.2} s",
        args.clients
    );
    let json = super::report_broker_connections(&target, broker_before, ready as u64, json, out)
        .with("clients_ready", Json::uint(ready as u64))
        .with("setup_secs", Json::Num(setup_secs))
        .with("setup_errors", setup_errors.to_json());
    if !setup_errors.is_empty() {
        for line in setup_errors.lines() {
            say!(out, "  setup error: {line}");
        }
        close_all(clients).await;
        return failed(
            out,
            json,
            format!(
                "{} of {} clients failed to set up",
                args.clients - ready,
                args.clients
            ),
        );
    }

    // Every client starts at the same moment, a little ahead so that all
    // tasks are spawned and waiting by then.
    let start = Instant::now() + Duration::from_millis(100);
    let window_start = start + Duration::from_secs(args.warmup_secs);
    let window_end = window_start + Duration::from_secs(args.secs);
    if window_end >= deadline {
        close_all(clients).await;
        return failed(
            out,
            json,
            "connecting took so long that the window would end after --duration-secs".into(),
        );
    }
    let plan = Arc::new(Plan {
        destination: args.destination.clone(),
        body: Bytes::from(vec![b'x'; args.body]),
        in_flight: args.in_flight,
        count: args.count,
        epoch,
        start,
        window_start,
        window_end,
        deadline,
    });
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for conn in clients {
        tasks.spawn(client_loop(conn, Arc::clone(&plan), stop_rx.clone()));
    }
    tokio::time::sleep_until(window_start).await;
    let cpu = CpuMark::now(target.pid);
    let broker_cpu = target.broker_cpu();
    let mut stats = Vec::with_capacity(ready);
    let mut panics = 0u64;
    let _ = tokio::time::timeout_at(window_end, async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(s) => stats.push(s),
                Err(_) => panics += 1,
            }
        }
    })
    .await;
    let (cpu_json, cpu_line) = cpu.since(target.pid);
    let broker_cpu = super::broker_cpu_since(&target, broker_cpu);
    let server_rss = target.pid.and_then(rss_kib);
    let _ = stop_tx.send(true);
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(s) => stats.push(s),
            Err(_) => panics += 1,
        }
    }

    let mut latency = Histogram::default();
    let mut errors = Errors::default();
    let (mut sent, mut replies, mut counted) = (0u64, 0u64, 0u64);
    let (mut out_of_order, mut unexpected_replies, mut unanswered) = (0u64, 0u64, 0u64);
    let mut last: Option<Duration> = None;
    for s in &stats {
        sent += s.sent;
        replies += s.replies;
        counted += s.counted;
        out_of_order += s.out_of_order;
        unexpected_replies += s.unexpected;
        unanswered += s.unanswered;
        last = last.max(s.last_counted_at);
        latency.merge(&s.latency_us);
        if let Some(e) = &s.error {
            errors.add(e.as_str());
        }
    }
    for _ in 0..panics {
        errors.add("client task panicked");
    }
    let window_start_at = window_start.saturating_duration_since(epoch);
    let per_sec = rate(counted, window_start_at, last);
    let span = last.and_then(|last| last.checked_sub(window_start_at));
    let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
    say!(
        out,
        "round trips: {counted} counted over {} s → {} round trips/s ({sent} requests, {replies} replies in all, {unanswered} unanswered, {out_of_order} out of order, {unexpected_replies} unexpected)",
        span.map_or_else(|| "-".to_owned(), |s| format!("{:.2}", s.as_secs_f64())),
        show(per_sec)
    );
    say!(out, "latency (send → reply): {}", latency.summary_ms());
    say!(out, "{cpu_line} (measuring window)");
    if let Some(secs) = broker_cpu {
        say!(out, "CPU of the broker behind the relay: {secs:.2} s");
    }
    if let Some(rss) = server_rss {
        say!(out, "server RSS now: {} MiB", rss / 1024);
    }
    for line in errors.lines() {
        say!(out, "  client error: {line}");
    }

    let mut failure = Vec::new();
    if unanswered > 0 {
        failure.push(format!(
            "{unanswered} requests unanswered {} s after the window closed",
            DRAIN_GRACE.as_secs()
        ));
    }
    if out_of_order > 0 || unexpected_replies > 0 {
        failure.push("replies out of order or unexpected".into());
    }
    if !errors.is_empty() {
        failure.push(format!("{} client errors", errors.total()));
    }
    if counted == 0 {
        failure.push("no round trip inside the window".into());
    }
    let (ok, json) = super::verdict(out, json, &failure);
    let json = json
        .with("sent", Json::uint(sent))
        .with("replies", Json::uint(replies))
        .with("counted", Json::uint(counted))
        .with("counted_secs", Json::opt_num(span.map(|s| s.as_secs_f64())))
        .with("round_trips_per_sec", Json::opt_num(per_sec))
        .with("unanswered", Json::uint(unanswered))
        .with("out_of_order", Json::uint(out_of_order))
        .with("unexpected", Json::uint(unexpected_replies))
        .with("latency", latency.to_json_ms())
        .with("client_errors", errors.to_json())
        .with("cpu", cpu_json)
        .with("broker_cpu_secs", Json::opt_num(broker_cpu))
        .with("server_rss_kib", Json::opt_uint(server_rss));
    Outcome { ok, json }
}

/// One client: keeps `in_flight` requests outstanding until the window
/// closes (or `count` counted replies came), then waits for the rest.
async fn client_loop(
    mut conn: Conn,
    plan: Arc<Plan>,
    mut stop: watch::Receiver<bool>,
) -> ClientStats {
    let mut stats = ClientStats::default();
    let mut outstanding: VecDeque<u64> = VecDeque::with_capacity(plan.in_flight);
    let content_length = plan.body.len().to_string();
    let mut next_seq = 0u64;
    tokio::time::sleep_until(plan.start).await;
    let stopped = super::stopped(&mut stop);
    tokio::pin!(stopped);
    let window_end = tokio::time::sleep_until(plan.window_end);
    tokio::pin!(window_end);
    let mut sending = true;
    // Once sending stops: when to give up on the replies still missing.
    // One timer for the whole loop, moved when sending stops.
    let give_up = tokio::time::sleep_until(plan.deadline);
    tokio::pin!(give_up);
    loop {
        if sending && plan.count > 0 && stats.counted >= plan.count {
            sending = false;
            stop_sending(give_up.as_mut());
        }
        if sending && outstanding.len() < plan.in_flight {
            while outstanding.len() < plan.in_flight {
                let ts = micros(since(plan.epoch));
                let frame = Frame::new(Command::Send)
                    .header(header::DESTINATION, &plan.destination)
                    .header("seq", &next_seq.to_string())
                    .header("ts", &ts.to_string())
                    .header(header::CONTENT_TYPE, "text/plain")
                    .header(header::CONTENT_LENGTH, &content_length)
                    .body(plan.body.clone());
                if let Err(e) = conn.feed(&frame).await {
                    stats.error = Some(e);
                    break;
                }
                outstanding.push_back(next_seq);
                next_seq += 1;
                stats.sent += 1;
            }
            if stats.error.is_some() {
                break;
            }
            if let Err(e) = conn.flush().await {
                stats.error = Some(e);
                break;
            }
        }
        if !sending && outstanding.is_empty() {
            break;
        }
        let next = tokio::select! {
            biased;
            next = conn.next_delivery() => next,
            () = &mut window_end, if sending => {
                sending = false;
                stop_sending(give_up.as_mut());
                continue;
            }
            () = &mut stopped, if sending => {
                sending = false;
                stop_sending(give_up.as_mut());
                continue;
            }
            () = &mut give_up => break,
        };
        let delivery = match next {
            Ok(Some(delivery)) => delivery,
            Ok(None) => {
                stats.error = Some(format!(
                    "connection closed by server ({}) with {} requests outstanding",
                    conn.close_reason(),
                    outstanding.len()
                ));
                break;
            }
            Err(e) => {
                stats.error = Some(e);
                break;
            }
        };
        let (seq, ts) = match delivery {
            Delivery::Message { seq, ts } => (seq, ts),
            Delivery::Other(frame) => {
                stats.error = Some(unexpected(&frame, "MESSAGE"));
                break;
            }
        };
        let now = Instant::now();
        stats.replies += 1;
        let (Some(seq), Some(ts)) = (seq, ts) else {
            stats.unexpected += 1;
            continue;
        };
        match settle(&mut outstanding, seq) {
            None => {
                stats.unexpected += 1;
                continue;
            }
            Some(false) => stats.out_of_order += 1,
            Some(true) => {}
        }
        if now >= plan.window_start && now < plan.window_end {
            let at = now.saturating_duration_since(plan.epoch);
            stats.counted += 1;
            stats.last_counted_at = Some(at);
            stats.latency_us.record(micros(at).saturating_sub(ts));
        }
    }
    stats.unanswered = outstanding.len() as u64;
    conn.close().await;
    stats
}

/// Gives the replies still in flight [`DRAIN_GRACE`] (never more than the
/// deadline already set).
fn stop_sending(give_up: std::pin::Pin<&mut tokio::time::Sleep>) {
    let grace = Instant::now() + DRAIN_GRACE;
    if grace < give_up.deadline() {
        give_up.reset(grace);
    }
}

/// What one request occupies on the wire: the SEND frame the clients send
/// (with seven-digit `seq` and `ts`), in a masked WebSocket frame.
fn request_size(args: &RoundtripArgs) -> usize {
    let frame = Frame::new(Command::Send)
        .header(header::DESTINATION, &args.destination)
        .header("seq", "1000000")
        .header("ts", "1000000")
        .header(header::CONTENT_TYPE, "text/plain")
        .header(header::CONTENT_LENGTH, &args.body.to_string())
        .body(Bytes::from(vec![b'x'; args.body]));
    super::floor::on_the_wire(&frame, true)
}

/// The floor's figures, and each target's server CPU per round trip as a
/// multiple of the echo server's.
fn against_floor(results: &[Json], floor: Json, out: Out) -> Json {
    let floor_us = floor
        .get("server_cpu_us_per_round_trip")
        .and_then(Json::as_f64);
    let mut ratios = Vec::new();
    for r in results {
        let label = r.get("target").and_then(Json::as_str).unwrap_or("?");
        let counted = r.get("counted").and_then(Json::as_f64);
        let server = r
            .get("cpu")
            .and_then(|cpu| cpu.get("server_cpu_secs"))
            .and_then(Json::as_f64);
        let us = match (server, counted) {
            (Some(secs), Some(n)) if n > 0.0 => Some(secs * 1e6 / n),
            _ => None,
        };
        let ratio = match (us, floor_us) {
            (Some(us), Some(f)) if f > 0.0 => Some(us / f),
            _ => None,
        };
        let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
        say!(
            out,
            "  {label}: server {} µs of CPU per round trip, {}× the floor's {} µs",
            show(us),
            show(ratio),
            show(floor_us)
        );
        ratios.push(
            Json::obj()
                .with("target", Json::str(label))
                .with("server_cpu_us_per_round_trip", Json::opt_num(us))
                .with("ratio", Json::opt_num(ratio)),
        );
    }
    floor.with("targets", Json::Arr(ratios))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settles_outstanding_requests() {
        let mut outstanding: VecDeque<u64> = [3, 4, 5].into_iter().collect();
        assert_eq!(settle(&mut outstanding, 3), Some(true));
        assert_eq!(settle(&mut outstanding, 5), Some(false));
        assert_eq!(settle(&mut outstanding, 5), None);
        assert_eq!(settle(&mut outstanding, 9), None);
        assert_eq!(settle(&mut outstanding, 4), Some(true));
        assert!(outstanding.is_empty());
    }

    #[test]
    fn rate_over_the_counted_span() {
        let start = Duration::from_secs(2);
        assert_eq!(
            rate(500, start, Some(Duration::from_millis(2500))),
            Some(1000.0)
        );
        assert_eq!(rate(500, start, None), None);
        assert_eq!(rate(500, start, Some(start)), None);
        assert_eq!(rate(500, start, Some(Duration::from_secs(1))), None);
    }
}
