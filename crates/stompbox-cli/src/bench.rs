//! `stompbox bench`: the load tool. It measures any STOMP-over-WebSocket
//! server given by URL (so stompbox and a reference broker such as RabbitMQ
//! Web-STOMP can be measured by the same code in the same run), or a
//! `stompbox serve` it starts itself with `--spawn` (for `roundtrip`, the
//! hidden `stompbox bench serve-echo`: a server with an echo handler).
//!
//! Every mode prints human-readable lines and, last, one `RESULT {json}` line
//! with all figures, so scripts need not scrape the prose.

/// Prints a human-readable line unless `--json-only` asked for silence.
macro_rules! say {
    ($out:expr, $($arg:tt)*) => {
        if !$out.quiet {
            println!($($arg)*);
        }
    };
}

mod conn;
mod connect;
mod echo_server;
mod fanout;
mod flow;
mod idle;
mod memory;
mod patterns;
mod report;
mod roundtrip;
mod server;
mod soak;

use report::Json;
use server::SpawnedServer;
use std::future::Future;
use std::path::PathBuf;

/// Flags of `stompbox bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {
    #[command(subcommand)]
    mode: Mode,
}

#[derive(Debug, clap::Subcommand)]
enum Mode {
    /// One publisher, many subscribers of one topic: deliveries per second,
    /// end-to-end latency, loss and ordering.
    Fanout(fanout::FanoutArgs),
    /// Many idle, subscribed connections: the server's memory per connection.
    Idle(idle::IdleArgs),
    /// The memory attacks (many-header queue floods, unacknowledged queue
    /// and topic hogs, transaction floods), each against a server with
    /// small caps: its RSS growth against the cap the attack aims at.
    Memory(memory::MemoryArgs),
    /// One publisher writes a whole burst at once (10,000 × 1 KiB, then
    /// 300 × 60 KiB) to a few subscribers reading as fast as they can:
    /// subscribers cut off (target 0), burst duration, and how long the
    /// publisher's writes were held back.
    Burst(flow::BurstArgs),
    /// Subscribers of one topic that never read, fed at a steady rate,
    /// while a canary uses another topic: the canary's latency before and
    /// during (target: p99 under 50 ms).
    Stalled(flow::StalledArgs),
    /// Session set-up and tear-down: clients loop over open, CONNECT,
    /// CONNECTED, DISCONNECT (with its RECEIPT) and close. Connects per
    /// second and connect latency, anonymous or with credentials
    /// (--auth for a spawned server, --login/--passcode for a --url).
    Connect(connect::ConnectArgs),
    /// Publishing with receipts to a topic while other connections hold
    /// many wildcard patterns that cannot match it (0 / 10k / 100k by
    /// default): publishes per second at each count, as a ratio of the
    /// first count's.
    Patterns(patterns::PatternsArgs),
    /// Request and reply through an application handler: each client SENDs
    /// to /app/bench/echo and waits for the reply at /user/queue/echo.
    Roundtrip(roundtrip::RoundtripArgs),
    /// Minutes of mixed traffic at about half of saturation (topics with
    /// wildcard subscribers, queues with client-individual ACK/NACK and
    /// redelivery, clients connecting and leaving): the server's RSS drift
    /// and peak, and losses on acknowledged queues and lasting topic
    /// subscriptions.
    Soak(soak::SoakArgs),
    /// The server `roundtrip --spawn` starts: stompbox with a handler at
    /// /app/bench/echo that replies to the sending session only.
    #[command(hide = true)]
    ServeEcho(echo_server::ServeEchoArgs),
}

/// Which servers to measure and how to log in; shared by every mode.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct TargetArgs {
    /// WebSocket URL of a server to measure (ws://host:port/path). Repeat to
    /// measure several servers one after the other in the same run.
    #[arg(long = "url", value_name = "URL")]
    urls: Vec<String>,
    /// Start `stompbox serve --http 127.0.0.1:0` (for roundtrip: the hidden
    /// `stompbox bench serve-echo --http 127.0.0.1:0`) as a child process,
    /// measure it before any --url, and stop it afterwards.
    #[arg(long)]
    spawn: bool,
    /// Program --spawn starts instead of this executable; it gets the same
    /// arguments and must print the `stompbox listening ... ws=URL` line.
    #[arg(long, value_name = "PATH")]
    server_bin: Option<PathBuf>,
    /// Extra argument for the spawned server (repeatable).
    #[arg(long = "server-arg", value_name = "ARG", allow_hyphen_values = true)]
    server_args: Vec<String>,
    /// With --spawn: the spawned server relays to an external broker
    /// (`--set broker.kind=relay`; other [relay] settings through
    /// --server-arg, RabbitMQ's STOMP plugin at 127.0.0.1:61613 with
    /// guest/guest by default; serve-echo knows only the connection's keys),
    /// and the bench waits for its `stompbox broker available` line.
    /// Every client session of a relaying server is also a broker connection.
    #[arg(long)]
    relay: bool,
    /// With --relay: process id of the broker (RabbitMQ's beam.smp), so that
    /// its open-file limit guards the connections the relay will open too.
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,
    /// With --relay: the broker's STOMP port, for counting the spawned
    /// server's connections to it (/proc/PID/net/tcp).
    #[arg(long, value_name = "PORT", default_value_t = 61613)]
    broker_port: u16,
    /// Process id of the server behind each --url, in the same order, for its
    /// RSS (/proc/PID/status) and CPU time. Repeatable.
    #[arg(long = "server-pid", value_name = "PID")]
    server_pids: Vec<u32>,
    /// `login` header of CONNECT.
    #[arg(long)]
    login: Option<String>,
    /// `passcode` header of CONNECT.
    #[arg(long)]
    passcode: Option<String>,
    /// `host` header of CONNECT; RabbitMQ takes it as the virtual host.
    #[arg(long, default_value = "/")]
    vhost: String,
    /// Time limit per server, in seconds: when it passes the bench reports
    /// what it measured so far and exits non-zero.
    #[arg(long, default_value_t = 120)]
    duration_secs: u64,
    /// Longest one connection may take to connect, log in and have its
    /// SUBSCRIBE confirmed, in seconds. A server at its connection limit
    /// often just stops accepting; this turns that into an error.
    #[arg(long, default_value_t = 10)]
    connect_timeout_secs: u64,
    /// Connect even when the server's open-file limit looks too low for the
    /// connections asked for.
    #[arg(long)]
    ignore_server_fd_limit: bool,
    /// Print only the final `RESULT {json}` line.
    #[arg(long)]
    json_only: bool,
}

/// Where human-readable output goes.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Out {
    quiet: bool,
}

/// One server to measure.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// Short name for the report: `spawned` or the URL.
    label: String,
    url: String,
    /// The server process, when known: for RSS and CPU time.
    pid: Option<u32>,
    /// For a spawned relaying server: the broker behind it.
    upstream: Option<Upstream>,
    /// For a spawned server: which of the mode's [`Spawn`]s it is (an
    /// index into the list given to [`run_targets_with`]).
    spawn: Option<usize>,
}

/// One server `--spawn` starts. A mode that compares configurations (auth
/// methods, access rules) starts several, one after the other.
#[derive(Debug, Clone, Default)]
pub(crate) struct Spawn {
    /// Its name in the report after `spawned-` (`spawned-jwt`); empty for
    /// plain `spawned`.
    pub(crate) variant: String,
    /// Arguments for it before the --server-arg ones (`--config FILE`).
    pub(crate) args: Vec<String>,
}

/// The broker a spawned server relays to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upstream {
    /// The broker's process, for its open-file limit.
    pid: Option<u32>,
    /// The broker's STOMP port.
    port: u16,
}

impl Target {
    /// Refuses `connections` more client connections when the server, or
    /// the broker a relaying server opens one connection per client to,
    /// could run out of file descriptors.
    /// What every mode does before it connects: the target's part of the
    /// RESULT, the open-file guard for `connections`, the server's broker
    /// connections before any client (for a relay), and the resolved
    /// endpoint. `Err` is the finished, failed outcome.
    async fn prepare(
        &self,
        common: &TargetArgs,
        connections: u64,
        out: Out,
    ) -> Result<(report::Json, Option<u64>, std::sync::Arc<conn::Endpoint>), Outcome> {
        let json = report::Json::obj()
            .with("target", report::Json::str(self.label.as_str()))
            .with("url", report::Json::str(self.url.as_str()))
            .with(
                "server_pid",
                report::Json::opt_uint(self.pid.map(u64::from)),
            );
        if let Err(e) = self.check_fds(common, connections) {
            return Err(failed(out, json, e));
        }
        let broker_before = self.broker_connections();
        match conn::Endpoint::resolve(
            &self.url,
            &common.vhost,
            common.login.as_deref(),
            common.passcode.as_deref(),
        )
        .await
        {
            Ok(endpoint) => Ok((json, broker_before, endpoint)),
            Err(e) => Err(failed(out, json, e)),
        }
    }

    fn check_fds(&self, common: &TargetArgs, connections: u64) -> Result<(), String> {
        if common.ignore_server_fd_limit {
            return Ok(());
        }
        if let Some(pid) = self.pid {
            report::check_server_fds(pid, connections)?;
        }
        if let Some(pid) = self.upstream.and_then(|u| u.pid) {
            report::check_server_fds(pid, connections).map_err(|e| format!("broker: {e}"))?;
        }
        Ok(())
    }

    /// CPU time the broker behind a relaying server has used so far.
    fn broker_cpu(&self) -> Option<std::time::Duration> {
        report::cpu_time(Some(self.upstream?.pid?))
    }

    /// A relaying server's established connections to its broker.
    fn broker_connections(&self) -> Option<u64> {
        let upstream = self.upstream?;
        report::connections_to_port(self.pid?, upstream.port)
    }
}

/// CPU seconds the broker used since `before` (from [`Target::broker_cpu`]).
fn broker_cpu_since(target: &Target, before: Option<std::time::Duration>) -> Option<f64> {
    Some(target.broker_cpu()?.saturating_sub(before?).as_secs_f64())
}

/// True when the spawned server relays: --relay, or a `broker.kind=relay`
/// among its arguments.
fn relayed(common: &TargetArgs) -> bool {
    common.relay
        || common
            .server_args
            .iter()
            .any(|arg| arg.contains("broker.kind=relay"))
}

/// What measuring one target produced.
#[derive(Debug)]
pub(crate) struct Outcome {
    /// False when anything went wrong: errors, loss, deadline, disorder.
    ok: bool,
    /// The target's figures (an object).
    json: Json,
}

pub(crate) async fn run(args: BenchArgs) -> Result<(), String> {
    match args.mode {
        Mode::Fanout(args) => fanout::run(args).await,
        Mode::Idle(args) => idle::run(args).await,
        Mode::Memory(args) => memory::run(args).await,
        Mode::Burst(args) => flow::run_burst(args).await,
        Mode::Stalled(args) => flow::run_stalled(args).await,
        Mode::Connect(args) => connect::run(args).await,
        Mode::Patterns(args) => patterns::run(args).await,
        Mode::Roundtrip(args) => roundtrip::run(args).await,
        Mode::Soak(args) => soak::run(args).await,
        Mode::ServeEcho(args) => echo_server::run(args).await,
    }
}

/// Resolves once `stop` is raised (or its sender is gone). The value is
/// not returned: holding the watch's read guard across an await would make
/// the caller's future not `Send`.
async fn stopped(stop: &mut tokio::sync::watch::Receiver<bool>) {
    let _ = stop.wait_for(|stop| *stop).await;
}

/// Measures every target in turn with `measure`, then prints the RESULT line.
/// A spawned server lives exactly as long as its own measurement, so it
/// neither competes with the next target for the CPU nor outlives the bench.
/// `--spawn` runs `spawn_command` (e.g. `["serve"]`) of the server program.
async fn run_targets<F, Fut>(
    mode: &str,
    spawn_command: &[&str],
    common: &TargetArgs,
    params: Json,
    measure: F,
) -> Result<(), String>
where
    F: FnMut(Target, Out) -> Fut,
    Fut: Future<Output = Outcome>,
{
    run_targets_with(
        mode,
        spawn_command,
        common,
        params,
        &[Spawn::default()],
        |_, _| None,
        measure,
    )
    .await
}

/// [`run_targets`] with several spawned servers: with `--spawn`, each of
/// `spawns` in turn, each freshly started and stopped before the next, then
/// every `--url`. `compare` sees every target's figures and may add a
/// `comparison` member to the RESULT (ratios between the targets of one run).
async fn run_targets_with<F, Fut, C>(
    mode: &str,
    spawn_command: &[&str],
    common: &TargetArgs,
    params: Json,
    spawns: &[Spawn],
    compare: C,
    mut measure: F,
) -> Result<(), String>
where
    F: FnMut(Target, Out) -> Fut,
    Fut: Future<Output = Outcome>,
    C: FnOnce(&[Json], Out) -> Option<Json>,
{
    let out = Out {
        quiet: common.json_only,
    };
    if !common.spawn && common.urls.is_empty() {
        return Err("bench: give --url URL (repeatable) and/or --spawn".into());
    }
    if common.server_pids.len() > common.urls.len() {
        return Err("bench: more --server-pid than --url".into());
    }
    let relayed = relayed(common);
    if relayed && !common.spawn {
        return Err("bench: --relay is about the server --spawn starts; give --spawn too".into());
    }
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    say!(
        out,
        "bench {mode}: {cores} CPU cores shared by this load tool and the server(s) it measures"
    );
    let mut results = Vec::new();
    let mut all_ok = true;
    let spawns = if common.spawn { spawns } else { &[] };
    for (index, spawn) in spawns.iter().enumerate() {
        let mut server_args = Vec::new();
        if common.relay {
            server_args.extend(["--set".to_owned(), "broker.kind=relay".to_owned()]);
        }
        server_args.extend(spawn.args.iter().cloned());
        server_args.extend(common.server_args.iter().cloned());
        let mut label = if relayed { "spawned-relay" } else { "spawned" }.to_owned();
        if !spawn.variant.is_empty() {
            label = format!("{label}-{}", spawn.variant);
        }
        let spawned = match SpawnedServer::start(
            common.server_bin.as_deref(),
            spawn_command,
            &server_args,
            relayed,
        )
        .await
        {
            Ok(spawned) => spawned,
            // The other servers of the run are still worth measuring.
            Err(e) => {
                let json = Json::obj().with("target", Json::str(label.as_str()));
                all_ok = false;
                results.push(failed(out, json, e).json);
                continue;
            }
        };
        say!(
            out,
            "{label} server pid {} at {}{}",
            spawned.pid(),
            spawned.ws_url(),
            if relayed {
                ", relaying (broker available)"
            } else {
                ""
            }
        );
        let target = Target {
            label,
            url: spawned.ws_url().to_owned(),
            pid: Some(spawned.pid()),
            upstream: relayed.then_some(Upstream {
                pid: common.broker_pid,
                port: common.broker_port,
            }),
            spawn: Some(index),
        };
        let outcome = measure(target, out).await;
        let log = spawned.log();
        spawned.stop();
        all_ok &= outcome.ok;
        results.push(outcome.json.with("server_log", log.to_json()));
        if !out.quiet {
            log.print_tail();
        }
    }
    for (i, url) in common.urls.iter().enumerate() {
        let target = Target {
            label: url.clone(),
            url: url.clone(),
            pid: common.server_pids.get(i).copied(),
            upstream: None,
            spawn: None,
        };
        let outcome = measure(target, out).await;
        all_ok &= outcome.ok;
        results.push(outcome.json);
    }
    let comparison = compare(&results, out);
    let mut result = Json::obj()
        .with("mode", Json::str(mode))
        .with("cores", Json::uint(cores as u64))
        .with("params", params)
        .with("targets", Json::Arr(results));
    if let Some(comparison) = comparison {
        result = result.with("comparison", comparison);
    }
    let result = result.with("ok", Json::Bool(all_ok));
    println!("RESULT {result}");
    if all_ok {
        Ok(())
    } else {
        Err(format!(
            "bench {mode}: at least one measurement failed (see above)"
        ))
    }
}

/// Time since `epoch`.
fn since(epoch: tokio::time::Instant) -> std::time::Duration {
    tokio::time::Instant::now().saturating_duration_since(epoch)
}

/// Whole microseconds, saturating.
fn micros(d: std::time::Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}

/// A failed measurement: says why and marks the RESULT.
/// The verdict of a measurement: `failure` lists what went wrong (empty:
/// it passed). Says FAILED when it did not, and adds `ok` and `failure` to
/// the target's figures.
fn verdict(out: Out, json: report::Json, failure: &[String]) -> (bool, report::Json) {
    let ok = failure.is_empty();
    let reason = (!ok).then(|| failure.join("; "));
    if let Some(reason) = &reason {
        say!(out, "FAILED: {reason}");
    }
    let json = json
        .with("ok", report::Json::Bool(ok))
        .with("failure", report::Json::opt_str(reason.as_deref()));
    (ok, json)
}

fn failed(out: Out, json: report::Json, reason: String) -> Outcome {
    say!(out, "FAILED: {reason}");
    Outcome {
        ok: false,
        json: json
            .with("ok", report::Json::Bool(false))
            .with("failure", report::Json::Str(reason)),
    }
}
