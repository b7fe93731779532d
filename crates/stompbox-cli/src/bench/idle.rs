//! `stompbox bench idle`: many idle, subscribed connections, and what they
//! cost the server in resident memory.

use super::conn::{subscribed, unexpected};
use super::report::{CpuMark, Errors, Json, open_files_limit, own_rss_kib, random_u64, rss_kib};
use super::{Out, Outcome, Target, TargetArgs};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Flags of `stompbox bench idle`.
#[derive(Debug, clap::Args)]
pub(crate) struct IdleArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Connections to open and hold; each subscribes to its own topic.
    #[arg(long, default_value_t = 10_000)]
    connections: usize,
    /// Connections being set up at the same time. Kept under 128, a common
    /// listen backlog (stompbox's own listener has 4096, RabbitMQ's 128 or
    /// 1024): past it SYNs are dropped and each overflow costs a 1 s
    /// retransmission.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// Connections per source address before moving on to the next
    /// 127.x.y.z: one address has ~28k ephemeral ports, fewer when earlier
    /// runs left some in TIME_WAIT.
    #[arg(long, default_value_t = 20_000)]
    per_source: usize,
    /// Longest wait, in seconds, for the server's RSS to stop changing
    /// (two equal-ish readings 1 s apart) before and after connecting.
    #[arg(long, default_value_t = 20)]
    settle_secs: u64,
    /// Keep the connections open this many seconds after measuring.
    #[arg(long, default_value_t = 0)]
    hold_secs: u64,
    /// Every connection subscribes to one and the same topic, instead of
    /// a topic of its own: for a shared relay, one upstream subscription
    /// instead of one per client.
    #[arg(long)]
    same_topic: bool,
    /// RabbitMQ's `rabbitmqctl` (a path, or a name on PATH): its memory
    /// figures (`status --formatter json`: the Erlang VM's total, its RSS,
    /// queue processes) and open sockets are read before connecting and
    /// with every client connected. A failing call is reported, not fatal.
    #[arg(long, value_name = "PATH")]
    rabbitmqctl: Option<String>,
}

/// Descriptors the bench needs besides its connections (runtime, stdio,
/// /proc reads, a spawned server's pipes).
const SPARE_FDS: u64 = 100;

pub(crate) async fn run(args: IdleArgs) -> Result<(), String> {
    if args.connections == 0 || args.connect_concurrency == 0 || args.per_source == 0 {
        return Err(
            "bench idle: --connections, --connect-concurrency and --per-source must be > 0".into(),
        );
    }
    if let Some(limit) = open_files_limit()
        && args.connections as u64 + SPARE_FDS > limit
    {
        return Err(format!(
            "bench idle: {} connections need more than this process's open-file limit of {limit}; \
             use at most {} per bench process (run several processes for more)",
            args.connections,
            limit.saturating_sub(SPARE_FDS)
        ));
    }
    let params = Json::obj()
        .with("connections", Json::uint(args.connections as u64))
        .with(
            "connect_concurrency",
            Json::uint(args.connect_concurrency as u64),
        )
        .with("per_source", Json::uint(args.per_source as u64))
        .with("same_topic", Json::Bool(args.same_topic))
        .with("duration_secs", Json::uint(args.target.duration_secs));
    let args = Arc::new(args);
    let common = args.target.clone();
    super::run_targets("idle", &["serve"], &common, params, |target, out| {
        let args = Arc::clone(&args);
        async move { measure(target, &args, out).await }
    })
    .await
}

/// Source addresses for connection `index`: a fresh 127.R.x.y block per
/// run (R random) so that ports a previous run left in TIME_WAIT never get
/// in the way, moving to the next address every `per_source` connections.
fn source_for(base: u32, index: usize, per_source: usize) -> IpAddr {
    let step = u32::try_from(index / per_source).unwrap_or(u32::MAX);
    IpAddr::V4(Ipv4Addr::from(base.saturating_add(step)))
}

/// Reads RSS every second until two readings differ by less than
/// `max(64 KiB, 0.1 %)`, or `limit` passes. Returns the last reading.
async fn settled_rss(pid: u32, limit: Duration) -> Option<u64> {
    let until = Instant::now() + limit;
    let mut previous = rss_kib(pid)?;
    while Instant::now() < until {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let now = rss_kib(pid)?;
        let tolerance = (previous / 1000).max(64);
        if now.abs_diff(previous) <= tolerance {
            return Some(now);
        }
        previous = now;
    }
    Some(previous)
}

fn kib_per_conn(before: Option<u64>, after: Option<u64>, n: u64) -> Option<f64> {
    match (before, after) {
        (Some(before), Some(after)) if n > 0 => Some((after as f64 - before as f64) / n as f64),
        _ => None,
    }
}

async fn measure(target: Target, args: &IdleArgs, out: Out) -> Outcome {
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.target.duration_secs);
    let run_id = random_u64();
    say!(
        out,
        "\n== idle on {}: {} connections, each subscribed to {}",
        target.label,
        args.connections,
        if args.same_topic {
            "the same topic"
        } else {
            "its own topic"
        }
    );
    if target.pid.is_none() {
        say!(
            out,
            "no server pid (--server-pid or --spawn): connections only, no memory figures"
        );
    }
    let (mut json, broker_before, endpoint) = match target
        .prepare(&args.target, args.connections as u64, out)
        .await
    {
        Ok(prepared) => prepared,
        Err(outcome) => return outcome,
    };
    // Source rotation only makes sense towards a loopback server; anywhere
    // else the kernel's own choice of source address is the right one.
    let base = endpoint.addr().ip().is_loopback() && endpoint.addr().is_ipv4();
    let base = base.then(|| {
        let second = u8::try_from(random_u64() % 250).unwrap_or(0) + 2;
        u32::from(Ipv4Addr::new(127, second, 0, 1))
    });

    let baseline = match target.pid {
        Some(pid) => settled_rss(pid, Duration::from_secs(args.settle_secs.min(5))).await,
        None => None,
    };
    let bench_rss_before = own_rss_kib();
    if let Some(kib) = baseline {
        say!(out, "server RSS before: {:.1} MiB", kib as f64 / 1024.0);
    }
    // The broker behind a relay: its RSS, and RabbitMQ's own figures.
    let broker_pid = target.upstream.and_then(|u| u.pid);
    let broker_rss_before = match broker_pid {
        Some(pid) => settled_rss(pid, Duration::from_secs(args.settle_secs.min(5))).await,
        None => None,
    };
    let rabbit_before = match &args.rabbitmqctl {
        Some(program) => Some(rabbitmq_status_now(program.clone()).await),
        None => None,
    };

    let connect_started = Instant::now();
    let cpu = CpuMark::now(target.pid);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel::<Result<(), String>>();
    let (stop_tx, stop_rx) = watch::channel(false);
    let dropped = Arc::new(Mutex::new(Errors::default()));
    let permits = Arc::new(Semaphore::new(args.connect_concurrency));
    let mut holders = JoinSet::new();
    for i in 0..args.connections {
        let endpoint = Arc::clone(&endpoint);
        let permits = Arc::clone(&permits);
        let ready = ready_tx.clone();
        let mut stop = stop_rx.clone();
        let dropped = Arc::clone(&dropped);
        let source = base.map(|base| source_for(base, i, args.per_source));
        let limit = Duration::from_secs(args.target.connect_timeout_secs);
        let same_topic = args.same_topic;
        holders.spawn(async move {
            let setup = async {
                let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
                let destination = if same_topic {
                    format!("/topic/bench-idle-{run_id:016x}")
                } else {
                    format!("/topic/bench-idle-{run_id:016x}-{i}")
                };
                subscribed(
                    &endpoint,
                    source,
                    None,
                    &destination,
                    &format!("sub-{i}"),
                    limit,
                )
                .await
            };
            let mut conn = tokio::select! {
                setup = setup => match setup {
                    Ok(conn) => conn,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                },
                () = super::stopped(&mut stop) => return,
            };
            let _ = ready.send(Ok(()));
            drop(ready);
            // Hold, but keep reading: a server that drops idle connections
            // (heart-beat or idle timeouts) must show up in the figures.
            tokio::select! {
                next = conn.next_frame() => {
                    let why = match next {
                        Ok(Some(frame)) => unexpected(&frame, "nothing"),
                        Ok(None) => format!("closed by server ({})", conn.close_reason()),
                        Err(e) => e,
                    };
                    dropped.lock().unwrap_or_else(|e| e.into_inner()).add(why);
                }
                () = super::stopped(&mut stop) => conn.close().await,
            }
        });
    }
    drop(ready_tx);

    let mut established = 0u64;
    let mut errors = Errors::default();
    let mut last_progress = Instant::now();
    let mut timed_out = false;
    while established + errors.total() < args.connections as u64 {
        match tokio::time::timeout_at(deadline, ready_rx.recv()).await {
            Ok(Some(Ok(()))) => established += 1,
            Ok(Some(Err(e))) => errors.add(e),
            Ok(None) => break,
            Err(_) => {
                timed_out = true;
                break;
            }
        }
        if last_progress.elapsed() >= Duration::from_secs(2) {
            last_progress = Instant::now();
            say!(
                out,
                "  {established} connected, {} failed, {:.1} s",
                errors.total(),
                connect_started.elapsed().as_secs_f64()
            );
        }
    }
    let connect_secs = connect_started.elapsed().as_secs_f64();
    let (cpu_json, cpu_line) = cpu.since(target.pid);
    say!(
        out,
        "established {established}/{} in {connect_secs:.2} s ({:.0}/s)",
        args.connections,
        established as f64 / connect_secs.max(1e-9)
    );
    say!(out, "{cpu_line} (while connecting)");
    for line in errors.lines() {
        say!(out, "  connect error: {line}");
    }

    let (immediate, settled) = match target.pid {
        Some(pid) => {
            let immediate = rss_kib(pid);
            let settled = settled_rss(pid, Duration::from_secs(args.settle_secs)).await;
            (immediate, settled)
        }
        None => (None, None),
    };
    let per_conn = kib_per_conn(baseline, settled, established);
    let bench_rss_after = own_rss_kib();
    let bench_per_conn = kib_per_conn(bench_rss_before, bench_rss_after, established);
    if let (Some(kib), Some(per_conn)) = (settled, per_conn) {
        say!(
            out,
            "server RSS with {established} connections: {:.1} MiB (right after connecting {:.1} MiB) → {per_conn:.1} KiB per connection",
            kib as f64 / 1024.0,
            immediate.unwrap_or_default() as f64 / 1024.0
        );
    }
    if let Some(per_conn) = bench_per_conn {
        say!(out, "bench's own RSS grew {per_conn:.1} KiB per connection");
    }
    json = super::report_broker_connections(&target, broker_before, established, json, out);
    let broker_rss = match broker_pid {
        Some(pid) => settled_rss(pid, Duration::from_secs(args.settle_secs)).await,
        None => None,
    };
    let broker_per_conn = kib_per_conn(broker_rss_before, broker_rss, established);
    if let (Some(before), Some(after), Some(per_conn)) =
        (broker_rss_before, broker_rss, broker_per_conn)
    {
        say!(
            out,
            "broker RSS: {:.1} MiB before, {:.1} MiB with {established} connections → {per_conn:.1} KiB per connection",
            before as f64 / 1024.0,
            after as f64 / 1024.0
        );
    }
    json = json
        .with("broker_rss_before_kib", Json::opt_uint(broker_rss_before))
        .with("broker_rss_settled_kib", Json::opt_uint(broker_rss))
        .with("broker_rss_per_conn_kib", Json::opt_num(broker_per_conn));
    if let Some(before) = rabbit_before {
        let after = match &args.rabbitmqctl {
            Some(program) => Some(rabbitmq_status_now(program.clone()).await),
            None => None,
        };
        json = json.with(
            "rabbitmq",
            rabbitmq_report(&before, after.as_ref(), established, out),
        );
    }
    if args.hold_secs > 0 {
        say!(out, "holding for {} s", args.hold_secs);
        tokio::time::sleep(Duration::from_secs(args.hold_secs)).await;
    }
    let (dropped_count, dropped_json) = {
        let dropped = dropped.lock().unwrap_or_else(|e| e.into_inner());
        for line in dropped.lines() {
            say!(out, "  dropped while held: {line}");
        }
        (dropped.total(), dropped.to_json())
    };

    let _ = stop_tx.send(true);
    let closed = tokio::time::timeout(Duration::from_secs(30), async {
        while holders.join_next().await.is_some() {}
    })
    .await;
    if closed.is_err() {
        holders.abort_all();
    }
    let after_close = match target.pid {
        Some(pid) => settled_rss(pid, Duration::from_secs(args.settle_secs.min(5))).await,
        None => None,
    };
    if let Some(kib) = after_close {
        say!(
            out,
            "server RSS after disconnecting: {:.1} MiB",
            kib as f64 / 1024.0
        );
    }

    let mut failure = Vec::new();
    if established < args.connections as u64 {
        failure.push(format!(
            "{} of {} connections failed",
            args.connections as u64 - established,
            args.connections
        ));
    }
    if timed_out {
        failure.push("deadline passed while connecting".into());
    }
    if dropped_count > 0 {
        failure.push(format!("{dropped_count} connections dropped by the server"));
    }
    let (ok, verdict_json) = super::verdict(out, json, &failure);
    json = verdict_json
        .with("established", Json::uint(established))
        .with("connect_secs", Json::Num(connect_secs))
        .with("connect_errors", errors.to_json())
        .with("dropped_while_held", Json::uint(dropped_count))
        .with("drop_reasons", dropped_json)
        .with("rss_before_kib", Json::opt_uint(baseline))
        .with("rss_after_connect_kib", Json::opt_uint(immediate))
        .with("rss_settled_kib", Json::opt_uint(settled))
        .with("rss_after_close_kib", Json::opt_uint(after_close))
        .with("rss_per_conn_kib", Json::opt_num(per_conn))
        .with("bench_rss_per_conn_kib", Json::opt_num(bench_per_conn))
        .with("cpu_while_connecting", cpu_json)
        .with(
            "source_addresses",
            Json::uint(base.map_or(1, |_| (args.connections.div_ceil(args.per_source)) as u64)),
        );
    Outcome { ok, json }
}

/// What `rabbitmqctl status` says about RabbitMQ's memory and sockets.
#[derive(Debug, Default, PartialEq)]
struct RabbitStatus {
    /// Memory the Erlang VM has allocated, in bytes.
    erlang_bytes: Option<u64>,
    /// The VM's resident set as RabbitMQ reads it, in bytes.
    rss_bytes: Option<u64>,
    /// Memory of queue processes (one per queue: a relayed topic
    /// subscription is a queue), in bytes.
    queue_procs_bytes: Option<u64>,
    /// Open sockets (client connections of every protocol).
    sockets_used: Option<u64>,
}

/// Runs `rabbitmqctl status --formatter json` (blocking this task's thread
/// for the half second it takes).
async fn rabbitmq_status_now(program: String) -> Result<RabbitStatus, String> {
    let run = move || {
        let output = std::process::Command::new(&program)
            .args(["status", "--formatter", "json"])
            .stdin(std::process::Stdio::null())
            .output()
            .map_err(|e| format!("cannot run {program}: {e}"))?;
        if !output.status.success() {
            return Err(format!(
                "{program} status: {}: {}",
                output.status,
                String::from_utf8_lossy(&output.stderr).trim()
            ));
        }
        parse_rabbitmq_status(&String::from_utf8_lossy(&output.stdout))
    };
    tokio::task::spawn_blocking(run)
        .await
        .map_err(|e| format!("rabbitmqctl task: {e}"))?
}

/// The figures of [`RabbitStatus`] from `status --formatter json`.
fn parse_rabbitmq_status(text: &str) -> Result<RabbitStatus, String> {
    let value: serde_json::Value = serde_json::from_str(text.trim())
        .map_err(|e| format!("rabbitmqctl status is not JSON: {e}"))?;
    let memory = &value["memory"];
    Ok(RabbitStatus {
        erlang_bytes: memory["total"]["erlang"].as_u64(),
        rss_bytes: memory["total"]["rss"].as_u64(),
        queue_procs_bytes: memory["queue_procs"].as_u64(),
        sockets_used: value["file_descriptors"]["sockets_used"].as_u64(),
    })
}

/// The RESULT's `rabbitmq` object: before, with the clients, and the
/// growth per client; says it too.
fn rabbitmq_report(
    before: &Result<RabbitStatus, String>,
    after: Option<&Result<RabbitStatus, String>>,
    clients: u64,
    out: Out,
) -> Json {
    let (before, after) = match (before, after) {
        (Ok(before), Some(Ok(after))) => (before, after),
        (Err(e), _) | (_, Some(Err(e))) => {
            say!(out, "rabbitmqctl: {e}");
            return Json::obj().with("error", Json::str(e.as_str()));
        }
        (_, None) => return Json::Null,
    };
    let mib = |bytes: Option<u64>| bytes.map(|b| b as f64 / (1024.0 * 1024.0));
    let growth_kib = |a: Option<u64>, b: Option<u64>| match (a, b) {
        (Some(a), Some(b)) if clients > 0 => Some((b as f64 - a as f64) / 1024.0 / clients as f64),
        _ => None,
    };
    let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.1}"));
    say!(
        out,
        "RabbitMQ (rabbitmqctl status): Erlang memory {} → {} MiB ({} KiB per client), RSS {} → {} MiB, queue processes {} → {} MiB, sockets {} → {}",
        show(mib(before.erlang_bytes)),
        show(mib(after.erlang_bytes)),
        show(growth_kib(before.erlang_bytes, after.erlang_bytes)),
        show(mib(before.rss_bytes)),
        show(mib(after.rss_bytes)),
        show(mib(before.queue_procs_bytes)),
        show(mib(after.queue_procs_bytes)),
        before
            .sockets_used
            .map_or_else(|| "-".to_owned(), |n| n.to_string()),
        after
            .sockets_used
            .map_or_else(|| "-".to_owned(), |n| n.to_string()),
    );
    let figures = |s: &RabbitStatus| {
        Json::obj()
            .with("erlang_bytes", Json::opt_uint(s.erlang_bytes))
            .with("rss_bytes", Json::opt_uint(s.rss_bytes))
            .with("queue_procs_bytes", Json::opt_uint(s.queue_procs_bytes))
            .with("sockets_used", Json::opt_uint(s.sockets_used))
    };
    Json::obj()
        .with("before", figures(before))
        .with("with_clients", figures(after))
        .with(
            "erlang_kib_per_client",
            Json::opt_num(growth_kib(before.erlang_bytes, after.erlang_bytes)),
        )
        .with(
            "rss_kib_per_client",
            Json::opt_num(growth_kib(before.rss_bytes, after.rss_bytes)),
        )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_rabbitmq_status() {
        let text = r#"{"memory":{"queue_procs":4096,"total":{"erlang":71807760,"rss":136900608,"allocated":48361472}},
            "file_descriptors":{"sockets_limit":832,"sockets_used":5}}"#;
        assert_eq!(
            parse_rabbitmq_status(text),
            Ok(RabbitStatus {
                erlang_bytes: Some(71_807_760),
                rss_bytes: Some(136_900_608),
                queue_procs_bytes: Some(4096),
                sockets_used: Some(5),
            })
        );
        assert_eq!(parse_rabbitmq_status("{}"), Ok(RabbitStatus::default()));
        assert!(parse_rabbitmq_status("Error: unable to connect").is_err());
    }

    #[test]
    fn rotates_source_addresses() {
        let base = u32::from(Ipv4Addr::new(127, 9, 0, 1));
        assert_eq!(
            source_for(base, 0, 20_000),
            IpAddr::V4(Ipv4Addr::new(127, 9, 0, 1))
        );
        assert_eq!(
            source_for(base, 19_999, 20_000),
            IpAddr::V4(Ipv4Addr::new(127, 9, 0, 1))
        );
        assert_eq!(
            source_for(base, 20_000, 20_000),
            IpAddr::V4(Ipv4Addr::new(127, 9, 0, 2))
        );
        assert_eq!(
            source_for(base, 45_000, 20_000),
            IpAddr::V4(Ipv4Addr::new(127, 9, 0, 3))
        );
    }
}
