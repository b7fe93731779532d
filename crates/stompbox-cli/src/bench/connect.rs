//! `stompbox bench connect`: session set-up and tear-down, the cost of
//! logging in.
//!
//! Each of `--clients` loops repeats one cycle: open a WebSocket, CONNECT
//! (with its credentials), wait for CONNECTED, DISCONNECT with a receipt,
//! wait for the RECEIPT, close. A session is over before its loop starts the
//! next one, so sessions do not pile up on the server. The figures are
//! completed cycles per second ("connects/s"), the connect latency (opening
//! the socket to CONNECTED) and the login latency (CONNECT sent to
//! CONNECTED, the part authentication adds to), refusals and other failures
//! by message, and the server's CPU time per 1,000 connects. One cycle may
//! take at most --connect-timeout-secs; the run ends after --connects
//! cycles, --secs seconds, or at the latest --duration-secs (a failure).
//!
//! With `--spawn`, `--auth` says how the spawned server authenticates:
//! `anonymous` (no `[auth]`), `jwt` (HS256 tokens the bench signs, one per
//! client loop, sent as the passcode), `password` (one user; after the first
//! verification the server answers from its cache) or `password-uncached`
//! (`password_cache_ttl_ms = 0`: every CONNECT runs argon2, so it has its
//! own, smaller `--uncached-clients` and `--uncached-connects`). `all`
//! measures the four one after the other, each on a freshly started server,
//! and compares them with anonymous. A `--url` target gets `--login` and
//! `--passcode`.
//!
//! One cycle, not counted, runs before the clients start: it checks the
//! credentials (wrong ones fail at once instead of thousands of times, each
//! delayed by the server's `failure_delay_ms`) and fills the password cache,
//! so that the cached case measures the cache rather than the first
//! concurrent logins all missing it.

use super::conn::{Conn, Endpoint};
use super::report::{CpuMark, Errors, Histogram, Json, random_u64, rss_kib};
use super::server::{ConfigFile, toml_str};
use super::{Out, Outcome, Spawn, Target, TargetArgs, failed, micros};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Flags of `stompbox bench connect`.
#[derive(Debug, clap::Args)]
pub(crate) struct ConnectArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// With --spawn: how the spawned server authenticates and the clients
    /// log in. `all` measures the four methods one after the other, each on
    /// its own freshly started server, and compares them with anonymous.
    /// The bench writes the server's configuration (--config) itself.
    /// --login and --passcode are for --url targets only.
    #[arg(long, value_enum, default_value_t = AuthChoice::Anonymous)]
    auth: AuthChoice,
    /// Client loops running at once.
    #[arg(long, value_name = "N", default_value_t = 32)]
    clients: usize,
    /// Connects per server, all loops together (0: no limit, --secs ends
    /// the run).
    #[arg(long, value_name = "N", default_value_t = 10_000)]
    connects: u64,
    /// --clients for password-uncached, where every connect is an argon2
    /// run: the server runs half the CPUs' worth at once and refuses logins
    /// beyond 256 more waiting, so this stays well under that.
    #[arg(long, value_name = "N", default_value_t = 16)]
    uncached_clients: usize,
    /// --connects for password-uncached (each costs tens of milliseconds of
    /// server CPU).
    #[arg(long, value_name = "N", default_value_t = 500)]
    uncached_connects: u64,
    /// Stop starting connects after this many seconds per server (0: only
    /// --connects ends the run). Must be less than --duration-secs, the
    /// hard limit.
    #[arg(long, default_value_t = 0)]
    secs: u64,
}

/// `--auth`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum AuthChoice {
    Anonymous,
    Jwt,
    Password,
    PasswordUncached,
    All,
}

impl AuthChoice {
    /// As written on the command line.
    fn name(self) -> String {
        use clap::ValueEnum;
        self.to_possible_value()
            .map_or_else(String::new, |v| v.get_name().to_owned())
    }
}

/// How one spawned server authenticates.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Method {
    Anonymous,
    Jwt,
    Password,
    PasswordUncached,
}

impl Method {
    const ALL: [Method; 4] = [
        Method::Anonymous,
        Method::Jwt,
        Method::Password,
        Method::PasswordUncached,
    ];

    fn name(self) -> &'static str {
        match self {
            Method::Anonymous => "anonymous",
            Method::Jwt => "jwt",
            Method::Password => "password",
            Method::PasswordUncached => "password-uncached",
        }
    }

    /// `--auth` as the methods it measures.
    fn chosen(choice: AuthChoice) -> Vec<Method> {
        match choice {
            AuthChoice::Anonymous => vec![Method::Anonymous],
            AuthChoice::Jwt => vec![Method::Jwt],
            AuthChoice::Password => vec![Method::Password],
            AuthChoice::PasswordUncached => vec![Method::PasswordUncached],
            AuthChoice::All => Method::ALL.to_vec(),
        }
    }
}

/// The password user of the password methods.
const LOGIN: &str = "bench";

/// How the clients of one target log in.
#[derive(Debug, Clone)]
enum Credentials {
    /// The same login and passcode for every client (none: anonymous).
    Fixed {
        login: Option<String>,
        passcode: Option<String>,
    },
    /// An HS256 token per client loop, signed with this secret, sent as
    /// the passcode.
    Jwt { secret: String },
}

impl Credentials {
    /// What client `client` sends; `name` tells the token subjects apart.
    fn for_client(&self, client: &str) -> Result<(Option<String>, Option<String>), String> {
        match self {
            Credentials::Fixed { login, passcode } => Ok((login.clone(), passcode.clone())),
            Credentials::Jwt { secret } => Ok((None, Some(sign_token(secret, client)?))),
        }
    }
}

/// The claims of a bench token: the user and an expiry well past the run.
#[derive(serde::Serialize)]
struct Claims<'a> {
    sub: &'a str,
    exp: u64,
}

fn sign_token(secret: &str, sub: &str) -> Result<String, String> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_err(|e| format!("the clock is before 1970: {e}"))?;
    let claims = Claims {
        sub,
        exp: now.as_secs() + 24 * 3600,
    };
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes())
        .map_err(|e| format!("the JWT secret: {e}"))?;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &key,
    )
    .map_err(|e| format!("cannot sign a JWT: {e}"))
}

/// `u64s` random values as 16 hex digits each: a JWT secret (the server
/// wants at least 32 bytes) or a password.
fn random_hex(u64s: usize) -> String {
    (0..u64s)
        .map(|_| format!("{:016x}", random_u64()))
        .collect()
}

/// How one target is measured.
#[derive(Debug)]
struct Plan {
    /// `None` for a --url target.
    method: Option<Method>,
    credentials: Credentials,
    clients: usize,
    /// `u64::MAX`: only --secs (or the deadline) ends the run.
    connects: u64,
    secs: u64,
    /// Read by the spawned server at start-up; removed when the run ends.
    config_file: Option<ConfigFile>,
}

impl Plan {
    /// The plan for `method`, or for a --url target when `None`.
    fn new(args: &ConnectArgs, method: Option<Method>) -> Plan {
        let uncached = method == Some(Method::PasswordUncached);
        let (clients, connects) = if uncached {
            (args.uncached_clients, args.uncached_connects)
        } else {
            (args.clients, args.connects)
        };
        let credentials = match method {
            Some(_) => Credentials::Fixed {
                login: None,
                passcode: None,
            },
            None => Credentials::Fixed {
                login: args.target.login.clone(),
                passcode: args.target.passcode.clone(),
            },
        };
        Plan {
            method,
            credentials,
            clients,
            connects: if connects == 0 { u64::MAX } else { connects },
            secs: args.secs,
            config_file: None,
        }
    }

    /// Writes the server configuration for the plan's method and sets the
    /// clients' credentials to match; `password` is the bench user's
    /// password and its argon2 hash, made once per run.
    fn configure(&mut self, password: &(String, String)) -> Result<Option<&ConfigFile>, String> {
        let Some(method) = self.method else {
            return Ok(None);
        };
        let (password, hash) = password;
        let text = match method {
            Method::Anonymous => return Ok(None),
            Method::Jwt => {
                let secret = random_hex(4);
                self.credentials = Credentials::Jwt {
                    secret: secret.clone(),
                };
                format!(
                    "[auth]\njwt_secret = {}\nsessions_per_user = 0\n",
                    toml_str(&secret)
                )
            }
            Method::Password | Method::PasswordUncached => {
                self.credentials = Credentials::Fixed {
                    login: Some(LOGIN.to_owned()),
                    passcode: Some(password.clone()),
                };
                let ttl = if method == Method::PasswordUncached {
                    "password_cache_ttl_ms = 0\n"
                } else {
                    ""
                };
                format!(
                    "[auth]\nsessions_per_user = 0\n{ttl}users = [{{ name = {}, password_hash = {} }}]\n",
                    toml_str(LOGIN),
                    toml_str(hash)
                )
            }
        };
        self.config_file = Some(ConfigFile::write(method.name(), &text)?);
        Ok(self.config_file.as_ref())
    }
}

pub(crate) async fn run(args: ConnectArgs) -> Result<(), String> {
    if args.clients == 0 || args.uncached_clients == 0 {
        return Err("bench connect: --clients and --uncached-clients must be > 0".into());
    }
    if (args.connects == 0 || args.uncached_connects == 0) && args.secs == 0 {
        return Err("bench connect: --connects 0 and --uncached-connects 0 need --secs".into());
    }
    if args.secs > 0 && args.secs >= args.target.duration_secs {
        return Err(format!(
            "bench connect: --secs ({} s) must be less than --duration-secs ({} s)",
            args.secs, args.target.duration_secs
        ));
    }
    if args.auth != AuthChoice::Anonymous && !args.target.spawn {
        return Err(
            "bench connect: --auth configures the server --spawn starts; for a --url give --login/--passcode"
                .into(),
        );
    }
    let methods = Method::chosen(args.auth);
    // One hash per run: argon2id at its default cost, as `stompbox
    // hash-password` makes it.
    let needs_password = args.target.spawn
        && methods
            .iter()
            .any(|m| matches!(m, Method::Password | Method::PasswordUncached));
    let password = if needs_password {
        let password = random_hex(2);
        let hash = stompbox::auth::hash_password(&password)?;
        (password, hash)
    } else {
        (String::new(), String::new())
    };
    let mut plans = Vec::new();
    let mut spawns = Vec::new();
    if args.target.spawn {
        for &method in &methods {
            let mut plan = Plan::new(&args, Some(method));
            let config = plan.configure(&password)?;
            spawns.push(Spawn {
                variant: if args.auth == AuthChoice::Anonymous {
                    String::new()
                } else {
                    method.name().to_owned()
                },
                args: config.map(ConfigFile::args).unwrap_or_default(),
                instances: 1,
            });
            plans.push(plan);
        }
    }
    let url_plan = Plan::new(&args, None);
    let params = Json::obj()
        .with("auth", Json::str(args.auth.name()))
        .with("clients", Json::uint(args.clients as u64))
        .with("connects", Json::uint(args.connects))
        .with("uncached_clients", Json::uint(args.uncached_clients as u64))
        .with("uncached_connects", Json::uint(args.uncached_connects))
        .with("secs", Json::uint(args.secs))
        .with("duration_secs", Json::uint(args.target.duration_secs));
    let plans = Arc::new(plans);
    let url_plan = Arc::new(url_plan);
    let common = Arc::new(args.target);
    let common_ref = Arc::clone(&common);
    super::run_targets_with(
        "connect",
        &["serve"],
        &common_ref,
        params,
        &spawns,
        compare,
        |target, out| {
            let plans = Arc::clone(&plans);
            let url_plan = Arc::clone(&url_plan);
            let common = Arc::clone(&common);
            async move {
                let plan = match target.spawn.and_then(|i| plans.get(i)) {
                    Some(plan) => plan,
                    None => &url_plan,
                };
                measure(target, &common, plan, out).await
            }
        },
    )
    .await
}

/// What one client loop saw.
#[derive(Debug, Default)]
struct LoopStats {
    connects: u64,
    /// Opening the socket to CONNECTED, µs.
    connect_us: Histogram,
    /// CONNECT sent to CONNECTED, µs.
    login_us: Histogram,
    errors: Errors,
    /// The loop stopped because the deadline passed.
    deadline: bool,
}

/// What the loops share.
struct Shared {
    endpoint: Arc<Endpoint>,
    /// Connects handed out so far.
    started: AtomicU64,
    connects: u64,
    /// No new connect after this (--secs).
    stop_at: Option<Instant>,
    bounds: Bounds,
}

/// How long one cycle may take.
#[derive(Debug, Clone, Copy)]
struct Bounds {
    /// The target's hard limit (--duration-secs).
    deadline: Instant,
    /// One cycle's limit (--connect-timeout-secs).
    limit: Duration,
}

/// Latencies of one cycle.
struct Cycle {
    connect: Duration,
    login: Duration,
}

/// One session: open, CONNECT, CONNECTED, DISCONNECT, RECEIPT, close.
/// Errors name the step that failed.
async fn cycle(
    endpoint: &Endpoint,
    login: Option<&str>,
    passcode: Option<&str>,
) -> Result<Cycle, String> {
    let opened = Instant::now();
    let mut conn: Conn = endpoint
        .open(None)
        .await
        .map_err(|e| format!("open: {e}"))?;
    let sent = Instant::now();
    if let Err(e) = endpoint.login(&mut conn, None, login, passcode).await {
        conn.close().await;
        return Err(format!("CONNECT: {e}"));
    }
    let connected = Instant::now();
    conn.disconnect("bye")
        .await
        .map_err(|e| format!("DISCONNECT: {e}"))?;
    Ok(Cycle {
        connect: connected - opened,
        login: connected - sent,
    })
}

/// One cycle within its bounds.
async fn bounded_cycle(
    endpoint: &Endpoint,
    bounds: Bounds,
    login: Option<&str>,
    passcode: Option<&str>,
) -> Result<Cycle, String> {
    let until = bounds.deadline.min(Instant::now() + bounds.limit);
    match tokio::time::timeout_at(until, cycle(endpoint, login, passcode)).await {
        Ok(result) => result,
        Err(_) if Instant::now() >= bounds.deadline => {
            Err("the deadline passed during a connect".into())
        }
        Err(_) => Err(format!(
            "open, CONNECT and DISCONNECT took longer than {} s",
            bounds.limit.as_secs()
        )),
    }
}

async fn client_loop(
    shared: Arc<Shared>,
    login: Option<String>,
    passcode: Option<String>,
) -> LoopStats {
    let mut stats = LoopStats::default();
    loop {
        let now = Instant::now();
        if now >= shared.bounds.deadline {
            stats.deadline = true;
            break;
        }
        if shared.stop_at.is_some_and(|stop| now >= stop) {
            break;
        }
        if shared.started.fetch_add(1, Ordering::Relaxed) >= shared.connects {
            break;
        }
        let cycle = bounded_cycle(
            &shared.endpoint,
            shared.bounds,
            login.as_deref(),
            passcode.as_deref(),
        );
        match cycle.await {
            Ok(cycle) => {
                stats.connects += 1;
                stats.connect_us.record(micros(cycle.connect));
                stats.login_us.record(micros(cycle.login));
            }
            Err(e) => stats.errors.add(e),
        }
    }
    stats
}

async fn measure(target: Target, common: &TargetArgs, plan: &Plan, out: Out) -> Outcome {
    let epoch = Instant::now();
    let deadline = epoch + Duration::from_secs(common.duration_secs);
    let auth = plan.method.map(Method::name);
    let what = match auth {
        Some(name) => format!("auth {name}"),
        None if common.login.is_some() || common.passcode.is_some() => {
            "--login/--passcode".to_owned()
        }
        None => "no credentials".to_owned(),
    };
    let count = if plan.connects == u64::MAX {
        "no count limit".to_owned()
    } else {
        format!("{} connects", plan.connects)
    };
    let window = if plan.secs > 0 {
        format!(", at most {} s", plan.secs)
    } else {
        String::new()
    };
    say!(
        out,
        "\n== connect on {} ({what}): {} clients, {count}{window}",
        target.label,
        plan.clients
    );
    // Sessions end before the next starts: each loop holds one socket.
    let (json, _, endpoint) = match target.prepare(common, plan.clients as u64, out).await {
        Ok(prepared) => prepared,
        Err(outcome) => return outcome,
    };
    let json = json
        .with("auth", Json::opt_str(auth))
        .with(
            "credentials",
            Json::str(match &plan.credentials {
                Credentials::Fixed {
                    login: None,
                    passcode: None,
                } => "none",
                Credentials::Fixed { .. } => "login/passcode",
                Credentials::Jwt { .. } => "jwt",
            }),
        )
        .with("clients", Json::uint(plan.clients as u64))
        .with(
            "connects_planned",
            Json::opt_uint((plan.connects != u64::MAX).then_some(plan.connects)),
        );

    // Each loop's credentials, and the warm-up's.
    let mut logins = Vec::with_capacity(plan.clients);
    for i in 0..plan.clients {
        match plan.credentials.for_client(&format!("bench-{i}")) {
            Ok(credentials) => logins.push(credentials),
            Err(e) => return failed(out, json, e),
        }
    }
    let bounds = Bounds {
        deadline,
        limit: Duration::from_secs(common.connect_timeout_secs),
    };
    let warmup_started = Instant::now();
    let (login, passcode) = &logins[0];
    let warmup = bounded_cycle(&endpoint, bounds, login.as_deref(), passcode.as_deref()).await;
    let warmup_ms = warmup_started.elapsed().as_secs_f64() * 1000.0;
    let json = json.with("warmup_ms", Json::Num(warmup_ms));
    if let Err(e) = warmup {
        return failed(out, json, format!("the warm-up connect failed: {e}"));
    }
    say!(out, "warm-up connect: {warmup_ms:.1} ms");

    let shared = Arc::new(Shared {
        endpoint,
        started: AtomicU64::new(0),
        connects: plan.connects,
        stop_at: (plan.secs > 0).then(|| Instant::now() + Duration::from_secs(plan.secs)),
        bounds,
    });
    let cpu = CpuMark::now(target.pid);
    let mut loops = JoinSet::new();
    for (login, passcode) in logins {
        loops.spawn(client_loop(Arc::clone(&shared), login, passcode));
    }
    let mut connect_us = Histogram::default();
    let mut login_us = Histogram::default();
    let mut errors = Errors::default();
    let (mut connects, mut deadline_passed) = (0u64, false);
    // Every loop ends by the deadline (each cycle is bounded by it); the
    // grace only guards against a bug leaving the run hanging.
    let joined = tokio::time::timeout_at(deadline + Duration::from_secs(5), async {
        while let Some(joined) = loops.join_next().await {
            match joined {
                Ok(stats) => {
                    connects += stats.connects;
                    connect_us.merge(&stats.connect_us);
                    login_us.merge(&stats.login_us);
                    errors.merge(&stats.errors);
                    deadline_passed |= stats.deadline;
                }
                Err(e) => errors.add(format!("client task failed: {e}")),
            }
        }
    })
    .await;
    if joined.is_err() {
        deadline_passed = true;
        errors.add(format!("{} client loops did not stop", loops.len()));
    }
    let spent = cpu.spent(target.pid);
    let (cpu_json, cpu_line) = spent.report();
    let server_rss = target.pid.and_then(rss_kib);

    let failures = errors.total();
    let rate = (spent.wall > 0.0).then(|| connects as f64 / spent.wall);
    let per_1000 = |secs: Option<f64>| {
        secs.filter(|_| connects > 0)
            .map(|secs| secs * 1000.0 / connects as f64)
    };
    let server_per_1000 = per_1000(spent.server);
    let bench_per_1000 = per_1000(spent.bench);
    let show = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
    };
    say!(
        out,
        "connects: {connects} in {:.2} s → {} connects/s; {failures} failed",
        spent.wall,
        show(rate, 0)
    );
    say!(
        out,
        "connect latency (socket open → CONNECTED): {}",
        connect_us.summary_ms()
    );
    say!(
        out,
        "login latency (CONNECT → CONNECTED): {}",
        login_us.summary_ms()
    );
    say!(out, "{cpu_line}");
    say!(
        out,
        "CPU per 1,000 connects: server {} s, bench {} s",
        show(server_per_1000, 3),
        show(bench_per_1000, 3)
    );
    if let Some(rss) = server_rss {
        say!(out, "server RSS now: {} MiB", rss / 1024);
    }
    for line in errors.lines() {
        say!(out, "  failure: {line}");
    }

    let mut failure = Vec::new();
    if failures > 0 {
        failure.push(format!(
            "{failures} of {} connects failed",
            connects + failures
        ));
    }
    if deadline_passed {
        failure.push("deadline passed".into());
    }
    if connects == 0 && failure.is_empty() {
        failure.push("no connect completed".into());
    }
    let (ok, json) = super::verdict(out, json, &failure);
    let json = json
        .with("attempts", Json::uint(connects + failures))
        .with("connects", Json::uint(connects))
        .with("failures", Json::uint(failures))
        .with("errors", errors.to_json())
        .with("deadline_passed", Json::Bool(deadline_passed))
        .with("connects_per_sec", Json::opt_num(rate))
        .with("connect_latency", connect_us.to_json_ms())
        .with("login_latency", login_us.to_json_ms())
        .with("cpu", cpu_json)
        .with("server_cpu_secs_per_1000", Json::opt_num(server_per_1000))
        .with("bench_cpu_secs_per_1000", Json::opt_num(bench_per_1000))
        .with("server_rss_kib", Json::opt_uint(server_rss));
    Outcome { ok, json }
}

/// With several spawned methods, one of them anonymous: each method's
/// connects/s and server CPU per connect as ratios to anonymous.
fn compare(results: &[Json], out: Out) -> Option<Json> {
    let spawned: Vec<&Json> = results
        .iter()
        .filter(|r| r.get("auth").and_then(Json::as_str).is_some())
        .collect();
    if spawned.len() < 2 {
        return None;
    }
    let figure = |r: &Json, key: &str| r.get(key).and_then(Json::as_f64);
    let base = spawned
        .iter()
        .find(|r| r.get("auth").and_then(Json::as_str) == Some("anonymous"))?;
    let base_rate = figure(base, "connects_per_sec");
    let base_cpu = figure(base, "server_cpu_secs_per_1000");
    let ratio = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let show = |v: Option<f64>, digits: usize| {
        v.map_or_else(|| "-".to_owned(), |v| format!("{v:.digits$}"))
    };
    say!(
        out,
        "\n== connect: methods compared with anonymous (same run)"
    );
    let mut rows = Vec::new();
    for r in spawned {
        let auth = r.get("auth").and_then(Json::as_str).unwrap_or_default();
        let rate = figure(r, "connects_per_sec");
        let cpu = figure(r, "server_cpu_secs_per_1000");
        let p50 = r
            .get("connect_latency")
            .and_then(|l| l.get("p50_ms"))
            .and_then(Json::as_f64);
        let p99 = r
            .get("connect_latency")
            .and_then(|l| l.get("p99_ms"))
            .and_then(Json::as_f64);
        let rate_ratio = ratio(rate, base_rate);
        let cpu_ratio = ratio(cpu, base_cpu);
        say!(
            out,
            "{auth:>18}: {:>7} connects/s ({}× anonymous), p50/p99 {}/{} ms, server CPU {} s per 1,000 connects ({}×){}",
            show(rate, 0),
            show(rate_ratio, 3),
            show(p50, 2),
            show(p99, 2),
            show(cpu, 3),
            show(cpu_ratio, 2),
            match figure(r, "failures") {
                Some(n) if n > 0.0 => format!(", {n} failures"),
                _ => String::new(),
            }
        );
        rows.push(
            Json::obj()
                .with("auth", Json::str(auth))
                .with("connects_per_sec", Json::opt_num(rate))
                .with("connects_per_sec_vs_anonymous", Json::opt_num(rate_ratio))
                .with("connect_p50_ms", Json::opt_num(p50))
                .with("connect_p99_ms", Json::opt_num(p99))
                .with("server_cpu_secs_per_1000", Json::opt_num(cpu))
                .with("server_cpu_vs_anonymous", Json::opt_num(cpu_ratio))
                .with("ok", r.get("ok").cloned().unwrap_or(Json::Null)),
        );
    }
    Some(Json::obj().with("methods", Json::Arr(rows)))
}
