//! `stompbox bench patterns`: what wildcard patterns that cannot match a
//! topic cost the publishers of that topic.
//!
//! Holding connections subscribe patterns that start with a wildcard
//! (`#.x`, `*.*.x.#`: the shapes no first-word index can skip) and end in a
//! word of their own, so none matches anything. For each `--patterns` count,
//! in ascending order (the patterns of the earlier counts stay), one
//! publisher SENDs with a receipt, one at a time, to a topic none of them
//! matches, which one subscriber reads. The figure is receipted publishes
//! per second, and each count's figure is reported as a ratio of the first
//! count's (normally 0 patterns), measured in the same run. At the end of
//! each round every holding session closes at once while the publisher goes
//! on: the slowest receipted publish meanwhile is the stall those removals
//! cause.

use super::conn::{Conn, Endpoint, unexpected};
use super::report::{CpuMark, Errors, Json, random_u64, rss_kib};
use super::{Out, Outcome, Target, TargetArgs, failed};
use std::sync::Arc;
use std::time::Duration;
use stompbox_codec::{Command, Frame, header};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Flags of `stompbox bench patterns`.
#[derive(Debug, clap::Args)]
pub(crate) struct PatternsArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Non-matching wildcard patterns held while measuring, ascending and
    /// comma-separated; each later count is reported as a ratio of the
    /// first.
    #[arg(long, value_delimiter = ',', default_value = "0,10000,100000")]
    patterns: Vec<usize>,
    /// Patterns per holding connection: at most the server's
    /// broker.max_wildcard_subscriptions (default 128).
    #[arg(long, default_value_t = 128)]
    per_connection: usize,
    /// Receipted publishes measured at each count, per round.
    #[arg(long, default_value_t = 5000)]
    messages: u64,
    /// Receipted publishes before each round, not counted.
    #[arg(long, default_value_t = 300)]
    warmup: u64,
    /// Rounds; each goes through every count, then releases the patterns.
    /// Figures are the medians over the rounds.
    #[arg(long, default_value_t = 3)]
    rounds: u32,
    /// Holding connections subscribing at the same time.
    #[arg(long, default_value_t = 32)]
    connect_concurrency: usize,
    /// Lowest acceptable ratio of the last count's rate to the first's
    /// (0: report only).
    #[arg(long, default_value_t = 0.9)]
    min_ratio: f64,
}

pub(crate) async fn run(args: PatternsArgs) -> Result<(), String> {
    if args.patterns.is_empty()
        || args.patterns.windows(2).any(|w| w[0] > w[1])
        || args.per_connection == 0
        || args.messages == 0
        || args.rounds == 0
        || args.connect_concurrency == 0
    {
        return Err(
            "bench patterns: --patterns must be ascending; --per-connection, --messages, \
             --rounds and --connect-concurrency must be > 0"
                .into(),
        );
    }
    let params = Json::obj()
        .with(
            "patterns",
            Json::Arr(
                args.patterns
                    .iter()
                    .map(|&n| Json::uint(n as u64))
                    .collect(),
            ),
        )
        .with("per_connection", Json::uint(args.per_connection as u64))
        .with("messages", Json::uint(args.messages))
        .with("warmup", Json::uint(args.warmup))
        .with("rounds", Json::uint(u64::from(args.rounds)))
        .with("min_ratio", Json::Num(args.min_ratio));
    let args = Arc::new(args);
    let common = args.target.clone();
    super::run_targets("patterns", &["serve"], &common, params, |target, out| {
        let args = Arc::clone(&args);
        async move { measure(target, &args, out).await }
    })
    .await
}

/// One holding connection's patterns: wildcard first, a word of its own
/// last, so none can match the measured topic (or anything else).
fn pattern(run: u64, connection: usize, index: usize) -> String {
    let tag = format!("nomatch-{run:x}-{connection}-{index}");
    if index.is_multiple_of(2) {
        format!("/topic/#.{tag}")
    } else {
        format!("/topic/*.*.{tag}.#")
    }
}

/// Opens a connection that holds `count` patterns, confirmed by the RECEIPT
/// of the last SUBSCRIBE (a refusal arrives as an ERROR before it).
async fn hold(
    endpoint: Arc<Endpoint>,
    run: u64,
    connection: usize,
    count: usize,
    limit: Duration,
) -> Result<Conn, String> {
    let setup = async {
        let mut conn = endpoint.connect(None, None).await?;
        for index in 0..count {
            let mut subscribe = Frame::new(Command::Subscribe)
                .header(header::ID, &format!("p{index}"))
                .header(header::DESTINATION, &pattern(run, connection, index))
                .header(header::ACK, "auto");
            if index + 1 == count {
                subscribe = subscribe.header(header::RECEIPT, "held");
            }
            conn.feed(&subscribe).await?;
        }
        conn.flush().await?;
        conn.expect_receipt("held").await?;
        Ok::<Conn, String>(conn)
    };
    tokio::time::timeout(limit, setup)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "subscribing {count} patterns took longer than {} s",
                limit.as_secs()
            ))
        })
}

/// Adds holding connections until `total` patterns are held.
async fn hold_until(
    endpoint: &Arc<Endpoint>,
    args: &PatternsArgs,
    run: u64,
    held: &mut Vec<Conn>,
    total: usize,
) -> Errors {
    let mut errors = Errors::default();
    let have = held.len() * args.per_connection;
    let wanted = total.saturating_sub(have).div_ceil(args.per_connection);
    let permits = Arc::new(tokio::sync::Semaphore::new(args.connect_concurrency));
    let limit = Duration::from_secs(args.target.connect_timeout_secs.max(1) * 6);
    let mut tasks = JoinSet::new();
    for i in 0..wanted {
        let connection = held.len() + i;
        let count = args
            .per_connection
            .min(total - connection * args.per_connection);
        let endpoint = Arc::clone(endpoint);
        let permits = Arc::clone(&permits);
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            hold(endpoint, run, connection, count, limit).await
        });
    }
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(conn)) => held.push(conn),
            Ok(Err(e)) => errors.add(e),
            Err(e) => errors.add(format!("holding task failed: {e}")),
        }
    }
    errors
}

/// Sends `count` receipted SENDs one after the other; returns the time
/// they took.
async fn publish(
    publisher: &mut Conn,
    destination: &str,
    first: u64,
    count: u64,
) -> Result<Duration, String> {
    let started = Instant::now();
    for seq in first..first + count {
        let receipt = format!("r{seq}");
        let send = Frame::new(Command::Send)
            .header(header::DESTINATION, destination)
            .header(header::RECEIPT, &receipt)
            .header("seq", &seq.to_string())
            .body("x");
        publisher.send(&send).await?;
        publisher.expect_receipt(&receipt).await?;
    }
    Ok(started.elapsed())
}

/// Reads the subscriber's MESSAGE frames until `expected` have come or
/// `limit` passes; returns how many came.
async fn receive(subscriber: &mut Conn, expected: u64, limit: Duration) -> Result<u64, String> {
    let mut received = 0;
    let read = async {
        while received < expected {
            match subscriber.next_frame().await? {
                Some(frame) if frame.command == Command::Message => received += 1,
                Some(frame) => return Err(unexpected(&frame, "MESSAGE")),
                None => {
                    return Err(format!(
                        "subscriber closed by server ({})",
                        subscriber.close_reason()
                    ));
                }
            }
        }
        Ok(())
    };
    match tokio::time::timeout(limit, read).await {
        Ok(Ok(())) | Err(_) => Ok(received),
        Ok(Err(e)) => Err(e),
    }
}

/// DISCONNECT, then its RECEIPT or the server's close: RabbitMQ's
/// Web-STOMP closes without the RECEIPT, and has let go of the session too.
async fn leave(mut conn: Conn) -> Result<(), String> {
    let disconnect = Frame::new(Command::Disconnect).header(header::RECEIPT, "released");
    conn.send(&disconnect).await?;
    match conn.next_frame().await? {
        Some(frame) if frame.command == Command::Receipt => {}
        Some(frame) => return Err(unexpected(&frame, "RECEIPT")),
        None => return Ok(()),
    }
    conn.close().await;
    Ok(())
}

/// Ends every holding session (DISCONNECT, confirmed by its RECEIPT, so
/// the server has let go of the patterns) before the next round.
async fn release(held: Vec<Conn>) -> Errors {
    let mut errors = Errors::default();
    let mut tasks = JoinSet::new();
    for conn in held {
        tasks.spawn(leave(conn));
    }
    let joined = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(())) => {}
                Ok(Err(e)) => errors.add(format!("releasing patterns: {e}")),
                Err(e) => errors.add(format!("releasing task failed: {e}")),
            }
        }
    })
    .await;
    if joined.is_err() {
        errors.add("holding sessions still open 30 s after DISCONNECT");
    }
    errors
}

/// What publishing saw while every holding session closed at once.
#[derive(Debug, Default)]
struct Released {
    secs: f64,
    publishes: u64,
    slowest: Duration,
}

/// Closes every holding session at once (as when many clients leave
/// together) while the publisher goes on, one receipted SEND at a time.
/// Removing patterns must not hold up a topic they never matched.
async fn release_while_publishing(
    held: &mut Vec<Conn>,
    publisher: &mut Conn,
    subscriber: &mut Conn,
    topic: &str,
    seq: &mut u64,
) -> Result<Released, String> {
    let started = Instant::now();
    let releasing = tokio::spawn(release(std::mem::take(held)));
    let mut released = Released::default();
    // At least one publish, however fast the release.
    loop {
        let one = Instant::now();
        publish(publisher, topic, *seq, 1).await?;
        *seq += 1;
        released.publishes += 1;
        released.slowest = released.slowest.max(one.elapsed());
        if releasing.is_finished() {
            break;
        }
    }
    let errors = releasing
        .await
        .map_err(|e| format!("releasing task failed: {e}"))?;
    released.secs = started.elapsed().as_secs_f64();
    if !errors.is_empty() {
        return Err(errors.lines().collect::<Vec<_>>().join("; "));
    }
    let received = receive(subscriber, released.publishes, Duration::from_secs(10)).await?;
    if received < released.publishes {
        return Err(format!(
            "{} messages published while the patterns were released were lost",
            released.publishes - received
        ));
    }
    Ok(released)
}

/// The middle value (the upper one of an even count).
fn median(values: &[f64]) -> Option<f64> {
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    sorted.get(sorted.len() / 2).copied()
}

/// What one pattern count measured over all rounds.
#[derive(Debug, Default, Clone)]
struct Step {
    rates: Vec<f64>,
    /// Each round's rate over that round's first count's.
    ratios: Vec<f64>,
    hold_secs: f64,
    connections: usize,
    server_cpu_secs: Option<f64>,
    /// The server's resident memory with the patterns held, first round.
    server_rss_kib: Option<u64>,
    lost: u64,
}

async fn measure(target: Target, args: &PatternsArgs, out: Out) -> Outcome {
    let deadline = Instant::now() + Duration::from_secs(args.target.duration_secs);
    let most = args.patterns.iter().copied().max().unwrap_or(0);
    let holders = most.div_ceil(args.per_connection);
    say!(
        out,
        "\n== patterns on {}: receipted publishes with {:?} non-matching wildcard patterns held ({} per connection, up to {holders} connections), {} rounds",
        target.label,
        args.patterns,
        args.per_connection,
        args.rounds
    );
    let (json, _, endpoint) = match target.prepare(&args.target, holders as u64 + 2, out).await {
        Ok(prepared) => prepared,
        Err(outcome) => return outcome,
    };
    let run = random_u64();
    let topic = format!("/topic/bench-patterns.{run:x}.news");
    let limit = Duration::from_secs(args.target.connect_timeout_secs);
    let setup = async {
        let mut subscriber = endpoint.connect(None, None).await?;
        let subscribe = Frame::new(Command::Subscribe)
            .header(header::ID, "0")
            .header(header::DESTINATION, &topic)
            .header(header::RECEIPT, "sub");
        subscriber.send(&subscribe).await?;
        subscriber.expect_receipt("sub").await?;
        let publisher = endpoint.connect(None, None).await?;
        Ok::<_, String>((subscriber, publisher))
    };
    let (mut subscriber, mut publisher) = match tokio::time::timeout(limit, setup).await {
        Ok(Ok(conns)) => conns,
        Ok(Err(e)) => return failed(out, json, e),
        Err(_) => {
            return failed(
                out,
                json,
                "publisher and subscriber set-up timed out".into(),
            );
        }
    };

    // Rounds alternate the counts (0, 10k, 100k, then release and again),
    // so a neighbour's load on the machine disturbs every count alike, and
    // each round's ratios compare figures taken seconds apart.
    let mut held = Vec::new();
    let mut steps = vec![Step::default(); args.patterns.len()];
    let mut failure = Vec::new();
    let mut seq = 0u64;
    let mut releases = Vec::new();
    'rounds: for round in 1..=args.rounds {
        let mut first_rate = None;
        for (step, &count) in steps.iter_mut().zip(&args.patterns) {
            let hold_started = Instant::now();
            let errors = tokio::time::timeout_at(
                deadline,
                hold_until(&endpoint, args, run, &mut held, count),
            )
            .await
            .unwrap_or_else(|_| {
                let mut errors = Errors::default();
                errors.add("deadline passed while subscribing patterns");
                errors
            });
            let hold_secs = hold_started.elapsed().as_secs_f64();
            step.hold_secs = step.hold_secs.max(hold_secs);
            step.connections = held.len();
            if round == 1 {
                // Later rounds start from memory the allocator kept.
                step.server_rss_kib = target.pid.and_then(rss_kib);
            }
            if !errors.is_empty() {
                for line in errors.lines() {
                    say!(out, "  holder error: {line}");
                }
                failure.push(format!(
                    "{} holding connections failed, first: {}",
                    errors.total(),
                    errors.lines().next().unwrap_or_default()
                ));
                break 'rounds;
            }
            let cpu = CpuMark::now(target.pid);
            let measured = async {
                publish(&mut publisher, &topic, seq, args.warmup).await?;
                let took =
                    publish(&mut publisher, &topic, seq + args.warmup, args.messages).await?;
                let sent = args.warmup + args.messages;
                let received = receive(&mut subscriber, sent, Duration::from_secs(10)).await?;
                Ok::<_, String>((took, sent - received))
            };
            let (took, missing) = match tokio::time::timeout_at(deadline, measured).await {
                Ok(Ok(measured)) => measured,
                Ok(Err(e)) => {
                    failure.push(format!("at {count} patterns: {e}"));
                    break 'rounds;
                }
                Err(_) => {
                    failure.push(format!("at {count} patterns: deadline passed"));
                    break 'rounds;
                }
            };
            seq += args.warmup + args.messages;
            if let Some(server) = cpu.spent(target.pid).server {
                *step.server_cpu_secs.get_or_insert(0.0) += server;
            }
            step.lost += missing;
            let rate = args.messages as f64 / took.as_secs_f64().max(1e-9);
            let reference = *first_rate.get_or_insert(rate);
            step.rates.push(rate);
            step.ratios.push(rate / reference);
            say!(
                out,
                "  round {round}: {count} patterns on {} connections (added in {hold_secs:.2} s): {rate:.0} receipted publishes/s, {:.1} % of this round's first count",
                held.len(),
                100.0 * rate / reference
            );
        }
        let connections = held.len();
        match release_while_publishing(&mut held, &mut publisher, &mut subscriber, &topic, &mut seq)
            .await
        {
            Ok(released) => {
                say!(
                    out,
                    "  round {round}: {connections} holding sessions closed at once in {:.2} s; meanwhile {} receipted publishes, the slowest {:.1} ms",
                    released.secs,
                    released.publishes,
                    released.slowest.as_secs_f64() * 1e3
                );
                releases.push(released);
            }
            Err(e) => {
                failure.push(format!("while releasing the patterns: {e}"));
                break;
            }
        }
    }
    super::conn::close_all(held).await;
    publisher.close().await;
    subscriber.close().await;
    let server_rss = target.pid.and_then(rss_kib);

    let per_publish = |step: &Step| {
        let publishes = (args.warmup + args.messages) * step.rates.len() as u64;
        step.server_cpu_secs
            .filter(|_| publishes > 0)
            .map(|secs| secs * 1e6 / publishes as f64)
    };
    let first_cpu = steps.first().and_then(per_publish);
    let mut json_steps = Vec::new();
    for (step, &count) in steps.iter().zip(&args.patterns) {
        let rate = median(&step.rates);
        let ratio = median(&step.ratios);
        let cpu_us = per_publish(step);
        let cpu_ratio = cpu_us
            .zip(first_cpu)
            .map(|(us, first)| us / first.max(1e-9));
        if let (Some(rate), Some(ratio)) = (rate, ratio) {
            say!(
                out,
                "{count} patterns: {rate:.0} receipted publishes/s (median of {}), {:.1} % of the first count's (median of the rounds' ratios); server CPU per publish {}; server RSS {}",
                step.rates.len(),
                ratio * 100.0,
                cpu_us.map_or_else(
                    || "?".to_owned(),
                    |us| format!("{us:.1} µs ({:.2}×)", cpu_ratio.unwrap_or(f64::NAN))
                ),
                step.server_rss_kib.map_or_else(
                    || "?".to_owned(),
                    |kib| format!("{:.1} MiB", kib as f64 / 1024.0)
                )
            );
        }
        if step.lost > 0 {
            failure.push(format!("{} messages lost at {count} patterns", step.lost));
        }
        json_steps.push(
            Json::obj()
                .with("patterns", Json::uint(count as u64))
                .with("connections", Json::uint(step.connections as u64))
                .with("hold_secs", Json::Num(step.hold_secs))
                .with("publishes_per_sec", Json::opt_num(rate))
                .with(
                    "rounds_per_sec",
                    Json::Arr(step.rates.iter().map(|&r| Json::Num(r)).collect()),
                )
                .with("ratio", Json::opt_num(ratio))
                .with("server_cpu_us_per_publish", Json::opt_num(cpu_us))
                .with("server_cpu_ratio", Json::opt_num(cpu_ratio))
                .with("server_rss_kib", Json::opt_uint(step.server_rss_kib))
                .with("lost", Json::uint(step.lost)),
        );
    }
    let complete = steps.iter().all(|s| s.rates.len() == args.rounds as usize);
    let last_ratio = steps.last().and_then(|s| median(&s.ratios));
    if !complete && failure.is_empty() {
        failure.push("not every round was measured".into());
    }
    if let Some(ratio) = last_ratio
        && complete
        && ratio < args.min_ratio
    {
        failure.push(format!(
            "the last count's rate is {:.1} % of the first's, under --min-ratio {:.1} %",
            ratio * 100.0,
            args.min_ratio * 100.0
        ));
    }
    let slowest = releases.iter().map(|r| r.slowest).max();
    if let Some(slowest) = slowest {
        say!(
            out,
            "slowest receipted publish while holding sessions closed: {:.1} ms",
            slowest.as_secs_f64() * 1e3
        );
    }
    let release_json = Json::obj()
        .with(
            "secs",
            Json::Arr(releases.iter().map(|r| Json::Num(r.secs)).collect()),
        )
        .with(
            "publishes",
            Json::Arr(releases.iter().map(|r| Json::uint(r.publishes)).collect()),
        )
        .with(
            "slowest_publish_ms",
            Json::opt_num(slowest.map(|d| d.as_secs_f64() * 1e3)),
        );
    let (ok, json) = super::verdict(out, json, &failure);
    let json = json
        .with("steps", Json::Arr(json_steps))
        .with("release", release_json)
        .with("last_ratio", Json::opt_num(last_ratio))
        .with("server_rss_kib", Json::opt_uint(server_rss));
    Outcome { ok, json }
}
