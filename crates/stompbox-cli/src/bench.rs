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
mod floor;
mod flow;
mod idle;
mod memory;
mod paired;
mod patterns;
mod report;
mod roundtrip;
mod scrape;
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
    /// The server `roundtrip --floor` starts: a bare TCP echo server.
    #[command(hide = true)]
    ServeTcpEcho(floor::ServeTcpEchoArgs),
    /// The server `fanout --floor` starts: a bare TCP fan-out relay.
    #[command(hide = true)]
    ServeTcpFanout(floor::ServeTcpFanoutArgs),
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
    /// With --spawn: measure one spawned server per mode given, each freshly
    /// started, in this order (repeatable or comma-separated): `shared` and
    /// `per-session` relay with that `relay.mode` (implies --relay),
    /// `embedded` does not relay. Without it the server's own default mode.
    #[arg(long = "relay-mode", value_name = "MODE", value_delimiter = ',')]
    relay_modes: Vec<RelayModeArg>,
    /// With --relay: process id of the broker (RabbitMQ's beam.smp), so that
    /// its open-file limit guards the connections the relay will open too.
    #[arg(long, value_name = "PID")]
    broker_pid: Option<u32>,
    /// With --relay: the broker's STOMP port, for counting the spawned
    /// server's connections to it (/proc/PID/net/tcp). Before a relaying
    /// server in shared mode gets any clients, the bench checks that the
    /// mode is in force (a few probe clients cost no broker connection each);
    /// when it is not, the open-file guards count one broker connection per
    /// client, as for per-session.
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

/// A value of `--relay-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum RelayModeArg {
    /// No relay: the embedded broker.
    Embedded,
    /// `relay.mode = "shared"`: a pool of broker connections per instance.
    Shared,
    /// `relay.mode = "per-session"`: one broker connection per client.
    PerSession,
}

impl RelayModeArg {
    fn name(self) -> &'static str {
        match self {
            RelayModeArg::Embedded => "embedded",
            RelayModeArg::Shared => "shared",
            RelayModeArg::PerSession => "per-session",
        }
    }
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
    /// The other instances of a spawned group ([`Spawn::instances`]),
    /// relaying to the same broker.
    peers: Vec<Peer>,
}

/// Another instance of a spawned group: its WebSocket URL and process.
#[derive(Debug, Clone)]
pub(crate) struct Peer {
    url: String,
    pid: u32,
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
    /// Servers started alike for this one measurement (0 counts as 1): the
    /// first is the target, the others its [`Target::peers`].
    pub(crate) instances: usize,
}

/// The broker a spawned server relays to.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Upstream {
    /// The broker's process, for its open-file limit and RSS.
    pid: Option<u32>,
    /// The broker's STOMP port.
    port: u16,
    /// The server was started in shared mode (`relay.mode`, the default).
    shared: bool,
    /// Its `relay.connections`: the shared pool's size.
    pool: u64,
}

/// The last value `--set KEY=VALUE` gives `key` among `args` (quotes
/// removed).
fn setting<'a>(args: &'a [String], key: &str) -> Option<&'a str> {
    args.iter()
        .filter_map(|arg| {
            let arg = arg.strip_prefix("--set=").unwrap_or(arg);
            arg.strip_prefix(key)?.strip_prefix('=')
        })
        .next_back()
        .map(|value| value.trim().trim_matches('"'))
}

/// The relay mode and pool size a spawned server runs with: `mode` from
/// --relay-mode, else `relay.mode` and `relay.connections` among its
/// arguments, else the library's defaults (shared, 4).
fn relay_shape(mode: Option<RelayModeArg>, args: &[String]) -> (bool, u64) {
    let defaults = stompbox::broker::relay::RelayConfig::default();
    let shared = match mode {
        Some(mode) => mode == RelayModeArg::Shared,
        None => setting(args, "relay.mode").map_or(
            defaults.mode == stompbox::broker::relay::RelayMode::Shared,
            |mode| mode != "per-session",
        ),
    };
    let pool = setting(args, "relay.connections")
        .and_then(|n| n.replace('_', "").parse().ok())
        .unwrap_or(defaults.connections as u64);
    (shared, pool)
}

impl Target {
    /// What every mode does before it connects: the target's part of the
    /// RESULT, the server's broker connections before any client (for a
    /// relay), whether a shared relay's mode is in force, the open-file
    /// guard for `connections`, and the resolved endpoint. `Err` is the
    /// finished, failed outcome.
    async fn prepare(
        &self,
        common: &TargetArgs,
        connections: u64,
        out: Out,
    ) -> Result<(report::Json, Option<u64>, std::sync::Arc<conn::Endpoint>), Outcome> {
        let mut json = report::Json::obj()
            .with("target", report::Json::str(self.label.as_str()))
            .with("url", report::Json::str(self.url.as_str()))
            .with(
                "server_pid",
                report::Json::opt_uint(self.pid.map(u64::from)),
            );
        if !self.peers.is_empty() {
            json = json.with("instances", report::Json::uint(self.instances()));
        }
        let endpoint = match conn::Endpoint::resolve(
            &self.url,
            &common.vhost,
            common.login.as_deref(),
            common.passcode.as_deref(),
        )
        .await
        {
            Ok(endpoint) => endpoint,
            Err(e) => return Err(failed(out, json, e)),
        };
        let broker_before = self.broker_connections();
        // Until the probe below says otherwise, every relayed client may
        // cost a broker connection.
        let mut per_client = self.upstream.is_some();
        if let Some(upstream) = self.upstream {
            json = json
                .with(
                    "relay_mode",
                    report::Json::str(if upstream.shared {
                        "shared"
                    } else {
                        "per-session"
                    }),
                )
                .with("relay_connections", report::Json::uint(upstream.pool));
            if upstream.shared {
                match self.shared_in_force(&endpoint, common, broker_before).await {
                    Ok(None) => json = json.with("shared_in_force", report::Json::Null),
                    Ok(Some(in_force)) => {
                        if !in_force {
                            say!(
                                out,
                                "shared relay mode NOT in force: {} probe clients opened a broker connection each; counted as per-session",
                                upstream.pool + 2
                            );
                        }
                        per_client = !in_force;
                        json = json.with("shared_in_force", report::Json::Bool(in_force));
                    }
                    Err(e) => return Err(failed(out, json, format!("shared-mode probe: {e}"))),
                }
            }
        }
        if let Err(e) = self.check_fds(common, connections, per_client) {
            return Err(failed(out, json, e));
        }
        Ok((json, broker_before, endpoint))
    }

    /// Spawned instances measured together: this one and its peers.
    fn instances(&self) -> u64 {
        self.peers.len() as u64 + 1
    }

    /// Refuses `connections` more client connections when the server, or
    /// the broker a relaying server opens broker connections to (one per
    /// client when `per_client`), could run out of file descriptors.
    fn check_fds(
        &self,
        common: &TargetArgs,
        connections: u64,
        per_client: bool,
    ) -> Result<(), String> {
        if common.ignore_server_fd_limit {
            return Ok(());
        }
        if let Some(pid) = self.pid {
            report::check_server_fds(pid, connections)?;
        }
        if let Some(upstream) = self.upstream
            && let Some(pid) = upstream.pid
        {
            let to_broker = if per_client {
                connections
            } else {
                self.instances() * (upstream.pool + 1)
            };
            report::check_server_fds(pid, to_broker).map_err(|e| format!("broker: {e}"))?;
        }
        Ok(())
    }

    /// True when `pool + 2` clients, each subscribed to a topic of its own,
    /// left a shared relay's broker connections within `before + pool`:
    /// the pool, not one connection per client. Per-session (or a shared
    /// mode not yet implemented) opens one each; then this waits for them
    /// to close again, so later counts start where they did.
    async fn shared_in_force(
        &self,
        endpoint: &std::sync::Arc<conn::Endpoint>,
        common: &TargetArgs,
        before: Option<u64>,
    ) -> Result<Option<bool>, String> {
        // Without /proc there is nothing to compare; the guards then count
        // one broker connection per client, to be safe.
        let (Some(upstream), Some(before)) = (self.upstream, before) else {
            return Ok(None);
        };
        let limit = std::time::Duration::from_secs(common.connect_timeout_secs);
        let probes = upstream.pool + 2;
        let run = report::random_u64();
        let mut conns = Vec::new();
        for i in 0..probes {
            let destination = format!("/topic/bench-probe-{run:016x}-{i}");
            match conn::subscribed(endpoint, None, None, &destination, "probe", limit).await {
                Ok(conn) => conns.push(conn),
                Err(e) => {
                    conn::close_all(conns).await;
                    return Err(e);
                }
            }
        }
        let during = self.broker_connections().unwrap_or(before);
        conn::close_all(conns).await;
        let in_force = during <= before + upstream.pool;
        if !in_force {
            // Polling /proc: the server closes its broker connections
            // in its own time and tells nobody.
            let until = tokio::time::Instant::now() + limit;
            while self.broker_connections().is_some_and(|now| now > before)
                && tokio::time::Instant::now() < until
            {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            }
        }
        Ok(Some(in_force))
    }

    /// CPU time the broker behind a relaying server has used so far.
    fn broker_cpu(&self) -> Option<std::time::Duration> {
        report::cpu_time(Some(self.upstream?.pid?))
    }

    /// A relaying server's established connections to its broker, summed
    /// over its instances.
    fn broker_connections(&self) -> Option<u64> {
        let upstream = self.upstream?;
        let mut total = report::connections_to_port(self.pid?, upstream.port)?;
        for peer in &self.peers {
            total += report::connections_to_port(peer.pid, upstream.port)?;
        }
        Some(total)
    }

    /// The broker connections a relaying server should hold with `clients`
    /// connected: at most its instances' pools and system connections in
    /// shared mode, one per client plus the system connections otherwise.
    fn broker_connections_expected(&self, clients: u64) -> Option<(u64, &'static str)> {
        let upstream = self.upstream?;
        Some(if upstream.shared {
            (self.instances() * (upstream.pool + 1), "at most")
        } else {
            (clients + self.instances(), "expected")
        })
    }
}

impl Target {
    /// CPU time the other instances of a spawned group have used so far
    /// (`None` without peers).
    fn peers_cpu(&self) -> Option<std::time::Duration> {
        if self.peers.is_empty() {
            return None;
        }
        self.peers
            .iter()
            .map(|peer| report::cpu_time(Some(peer.pid)))
            .sum()
    }

    /// CPU seconds the other instances used since `before` (from
    /// [`Target::peers_cpu`]).
    fn peers_cpu_since(&self, before: Option<std::time::Duration>) -> Option<f64> {
        Some(self.peers_cpu()?.saturating_sub(before?).as_secs_f64())
    }
}

/// Counts a relaying server's broker connections now that `clients` are
/// connected, says how that compares with what its mode allows, and adds
/// `broker_connections_before`, `_during` and `_expected` to `json`.
fn report_broker_connections(
    target: &Target,
    before: Option<u64>,
    clients: u64,
    json: Json,
    out: Out,
) -> Json {
    let during = target.broker_connections();
    let expected = target.broker_connections_expected(clients);
    if let (Some(before), Some(during), Some((expected, how))) = (before, during, expected) {
        say!(
            out,
            "server's broker connections: {before} before the clients, {during} with {clients} clients connected ({how} {expected})"
        );
    }
    json.with("broker_connections_before", Json::opt_uint(before))
        .with("broker_connections_during", Json::opt_uint(during))
        .with(
            "broker_connections_expected",
            Json::opt_uint(expected.map(|(n, _)| n)),
        )
}

/// Ratios of `figure` between the targets of one run: every target against
/// the reference, the first --url (RabbitMQ directly in the README's
/// commands) or, without one, the first target. `None` for a single target.
fn compare_with_reference(
    results: &[Json],
    figure: &'static str,
    urls: &[String],
    mode: &str,
    out: Out,
) -> Option<Json> {
    if results.len() < 2 {
        return None;
    }
    fn label(r: &Json) -> &str {
        r.get("target").and_then(Json::as_str).unwrap_or("?")
    }
    let value = |r: &Json| r.get(figure).and_then(Json::as_f64);
    let reference = urls
        .first()
        .and_then(|url| results.iter().find(|r| label(r) == url.as_str()))
        .or(results.first())?;
    let base = value(reference);
    let show = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
    };
    say!(
        out,
        "\n== {mode}: {figure} against {} ({}), same run:",
        label(reference),
        show(base, 0)
    );
    let mut rows = Vec::new();
    for r in results {
        if std::ptr::eq(r, reference) {
            continue;
        }
        let ratio = match (value(r), base) {
            (Some(v), Some(b)) if b > 0.0 => Some(v / b),
            _ => None,
        };
        say!(
            out,
            "  {}: {} → {}×",
            label(r),
            show(value(r), 0),
            show(ratio, 2)
        );
        rows.push(
            Json::obj()
                .with("target", Json::str(label(r)))
                .with(figure, Json::opt_num(value(r)))
                .with("ratio", Json::opt_num(ratio)),
        );
    }
    Some(
        Json::obj()
            .with("figure", Json::str(figure))
            .with("reference", Json::str(label(reference)))
            .with(figure, Json::opt_num(base))
            .with("ratios", Json::Arr(rows)),
    )
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
        Mode::ServeTcpEcho(args) => floor::serve(args).await,
        Mode::ServeTcpFanout(args) => floor::serve_fanout(args).await,
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
    if !common.spawn && (relayed(common) || !common.relay_modes.is_empty()) {
        return Err(
            "bench: --relay and --relay-mode are about the server --spawn starts; give --spawn too"
                .into(),
        );
    }
    if common.relay_modes.contains(&RelayModeArg::Embedded) && relayed(common) {
        return Err("bench: --relay-mode embedded contradicts --relay".into());
    }
    let cores = std::thread::available_parallelism().map_or(0, usize::from);
    say!(
        out,
        "bench {mode}: {cores} CPU cores shared by this load tool and the server(s) it measures"
    );
    let mut results = Vec::new();
    let mut all_ok = true;
    let spawns = if common.spawn { spawns } else { &[] };
    // Each spawn once per --relay-mode; without it, as the flags say.
    let modes: Vec<Option<RelayModeArg>> = if common.relay_modes.is_empty() {
        vec![None]
    } else {
        common.relay_modes.iter().copied().map(Some).collect()
    };
    for (index, spawn) in spawns.iter().enumerate() {
        for &relay_mode in &modes {
            let relayed = match relay_mode {
                Some(mode) => mode != RelayModeArg::Embedded,
                None => relayed(common),
            };
            let mut server_args = Vec::new();
            if common.relay || relay_mode.is_some_and(|mode| mode != RelayModeArg::Embedded) {
                server_args.extend(["--set".to_owned(), "broker.kind=relay".to_owned()]);
            }
            server_args.extend(spawn.args.iter().cloned());
            server_args.extend(common.server_args.iter().cloned());
            // Last, so that it wins over a relay.mode among the --server-arg
            // ones, as it does in relay_shape.
            if let Some(mode) = relay_mode.filter(|&mode| mode != RelayModeArg::Embedded) {
                server_args.extend(["--set".to_owned(), format!("relay.mode={}", mode.name())]);
            }
            let mut label = match relay_mode {
                Some(mode) if relayed => format!("spawned-relay-{}", mode.name()),
                Some(mode) => format!("spawned-{}", mode.name()),
                None if relayed => "spawned-relay".to_owned(),
                None => "spawned".to_owned(),
            };
            if !spawn.variant.is_empty() {
                label = format!("{label}-{}", spawn.variant);
            }
            let instances = spawn.instances.max(1);
            if instances > 1 {
                label = format!("{label}-{instances}-instances");
            }
            let mut servers = Vec::with_capacity(instances);
            let mut start_error = None;
            for _ in 0..instances {
                match SpawnedServer::start(
                    common.server_bin.as_deref(),
                    spawn_command,
                    &server_args,
                    relayed,
                )
                .await
                {
                    Ok(spawned) => servers.push(spawned),
                    Err(e) => {
                        start_error = Some(e);
                        break;
                    }
                }
            }
            // The other servers of the run are still worth measuring.
            if let Some(e) = start_error {
                let json = Json::obj().with("target", Json::str(label.as_str()));
                all_ok = false;
                results.push(failed(out, json, e).json);
                continue;
            }
            let mut servers = servers.into_iter();
            let Some(spawned) = servers.next() else {
                continue;
            };
            let peers: Vec<SpawnedServer> = servers.collect();
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
            for peer in &peers {
                say!(
                    out,
                    "  and instance pid {} at {}, relaying to the same broker",
                    peer.pid(),
                    peer.ws_url()
                );
            }
            let (shared, pool) = relay_shape(relay_mode, &server_args);
            let target = Target {
                label,
                url: spawned.ws_url().to_owned(),
                pid: Some(spawned.pid()),
                upstream: relayed.then_some(Upstream {
                    pid: common.broker_pid,
                    port: common.broker_port,
                    shared,
                    pool,
                }),
                spawn: Some(index),
                peers: peers
                    .iter()
                    .map(|peer| Peer {
                        url: peer.ws_url().to_owned(),
                        pid: peer.pid(),
                    })
                    .collect(),
            };
            let outcome = measure(target, out).await;
            let log = spawned.log();
            spawned.stop();
            drop(peers);
            all_ok &= outcome.ok;
            results.push(outcome.json.with("server_log", log.to_json()));
            if !out.quiet {
                log.print_tail();
            }
        }
    }
    for (i, url) in common.urls.iter().enumerate() {
        let target = Target {
            label: url.clone(),
            url: url.clone(),
            pid: common.server_pids.get(i).copied(),
            upstream: None,
            spawn: None,
            peers: Vec::new(),
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&str]) -> Vec<String> {
        list.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn settings_are_found_among_server_arguments() {
        let list = args(&[
            "--set",
            "relay.mode=per-session",
            "--config",
            "x.toml",
            "--set=relay.connections=\"2\"",
            "--set",
            "relay.mode=shared",
            "--set",
            "relay.modes=no",
        ]);
        // The last one wins, as for `serve`; a longer key is another key.
        assert_eq!(setting(&list, "relay.mode"), Some("shared"));
        assert_eq!(setting(&list, "relay.connections"), Some("2"));
        assert_eq!(setting(&list, "relay.prefetch"), None);
    }

    #[test]
    fn relay_shape_from_the_flag_the_arguments_or_the_defaults() {
        assert_eq!(relay_shape(None, &[]), (true, 4));
        let per_session = args(&[
            "--set",
            "relay.mode=per-session",
            "--set",
            "relay.connections=8",
        ]);
        assert_eq!(relay_shape(None, &per_session), (false, 8));
        // --relay-mode is passed after the --server-arg ones, so it decides.
        assert_eq!(
            relay_shape(Some(RelayModeArg::Shared), &per_session),
            (true, 8)
        );
        assert_eq!(relay_shape(Some(RelayModeArg::PerSession), &[]), (false, 4));
    }
}
