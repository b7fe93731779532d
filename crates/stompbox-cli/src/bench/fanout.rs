//! `stompbox bench fanout`: one publisher, many subscribers of one topic.
//!
//! Every subscriber is confirmed (RECEIPT of its SUBSCRIBE) before the first
//! message goes out, so a message missing at a subscriber is a lost message,
//! not a late subscription. Messages carry `seq` (per-subscriber ordering and
//! loss) and `ts` (µs since the run's epoch on this process's monotonic clock,
//! so publisher and subscribers share one clock and latency needs no clock
//! sync).

use super::conn::{Conn, Delivery, Fleet, close_all, connect_all, unexpected};
use super::floor::FanoutFloorPlan;
use super::paired::{self, mean, number, rates_text, ratio, rounds_note, server_cpu, show};
use super::report::{CpuMark, Errors, Histogram, Json, random_u64, rss_kib};
use super::scrape::{self, MetricsArg};
use super::server::{ConfigFile, toml_str};
use super::{Out, Outcome, Spawn, Target, TargetArgs, failed, micros, since};
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use stompbox_codec::{Command, Frame, header};
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Flags of `stompbox bench fanout`.
#[derive(Debug, clap::Args)]
pub(crate) struct FanoutArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Subscriber connections, all on the same topic.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Messages the publisher sends.
    #[arg(long, default_value_t = 10_000)]
    messages: u64,
    /// Body size of each message, in bytes.
    #[arg(long, default_value_t = 100)]
    body: usize,
    /// The publisher asks for a RECEIPT every this many messages and keeps at
    /// most two such windows unconfirmed: flow control, so that it measures
    /// what the server takes rather than what socket buffers hold.
    #[arg(long, default_value_t = 100)]
    receipt_every: u64,
    /// Publish at most this many messages per second (0: as fast as the
    /// server confirms them).
    #[arg(long, default_value_t = 0)]
    rate: u64,
    /// Subscribers connecting at the same time.
    #[arg(long, default_value_t = 100)]
    connect_concurrency: usize,
    /// End-to-end flow control: the publisher waits while the slowest
    /// subscriber is more than this many messages behind (0: off, only the
    /// server's RECEIPTs pace it). Finds the fan-out rate the server and
    /// the subscribers can sustain when receipts alone do not hold the
    /// publisher back.
    #[arg(long, default_value_t = 0)]
    max_lag: u64,
    /// Subscribers promise the server a heart-beat this often, in ms, and
    /// keep it (0: none). Subscribers only ever receive, and some servers
    /// close a WebSocket that sent nothing for a while: RabbitMQ Web-STOMP
    /// (cowboy's idle_timeout) does so after 60 s.
    #[arg(long, default_value_t = 10_000)]
    heartbeat_ms: u64,
    /// With --spawn: measure the spawned server twice in this run, first
    /// without access rules, then freshly started with N `[auth] rules`
    /// (N − 1 that do not match the bench topic, then the one that lets
    /// anyone publish and subscribe to it, last: the worst case), and
    /// report deliveries/s of both and their ratio. 0: off. The bench
    /// writes that server's --config itself.
    #[arg(long, value_name = "N", default_value_t = 0)]
    compare_rules: usize,
    /// With --compare-rules or --metrics: measure both servers this many
    /// times, each on a freshly started server, alternating which goes
    /// first (without rules, or the first --metrics value, first in odd
    /// rounds; the other in even ones), and report the ratio of the means
    /// and each round's.
    #[arg(long, value_name = "R", default_value_t = 1)]
    compare_rounds: usize,
    /// With --spawn and a relay (--relay or --relay-mode): start this many
    /// relaying servers on the same broker for each spawned target; the
    /// publisher is on the first, subscriber i on instance i mod N, so
    /// every message crosses the broker to reach the other instances.
    #[arg(long, value_name = "N", default_value_t = 1)]
    instances: usize,
    /// With --spawn: measure one freshly started server per value, in this
    /// order (comma-separated): `on` serves /metrics (metrics.enabled =
    /// true) and the bench scrapes it every second during the measurement,
    /// as Prometheus would; `off` sets metrics.enabled = false. Reports
    /// deliveries/s of both and their ratio (--compare-rounds repeats the
    /// pair). Without it the server keeps its own setting and nobody
    /// scrapes.
    #[arg(long = "metrics", value_name = "STATE", value_delimiter = ',')]
    metrics: Vec<MetricsArg>,
    /// Subscriber i subscribes with id `i` instead of every one with `0`:
    /// no two deliveries of a message are then the same bytes, as with
    /// clients that number subscriptions across connections (stomp-load
    /// does). With `0` for all (stomp.js's `sub-0` is alike) the server
    /// may send one encoded frame to every subscriber.
    #[arg(long)]
    distinct_ids: bool,
    /// With --rate: first measure the machine's floor in the same run, the
    /// same publisher and subscribers over a bare TCP relay that writes
    /// each message (of a delivery's size) to every subscriber.
    /// `comparison.floor` then gives each target's latency and server CPU
    /// per delivery as multiples of the relay's.
    #[arg(long)]
    floor: bool,
}

/// Every run's topic is this prefix and a random suffix of hex digits.
const TOPIC_PREFIX: &str = "/topic/bench-";

/// The pattern of the one rule of `--compare-rules` that allows the bench's
/// SEND and SUBSCRIBE (`*` there matches neither `.` nor `/`).
const TOPIC_PATTERN: &str = "/topic/bench-*";

/// One access rule: who, SEND patterns, SUBSCRIBE patterns.
type RuleSpec = (String, Vec<String>, Vec<String>);

/// `n` access rules for `--compare-rules`: `n − 1` that allow the bench's
/// anonymous sessions nothing it does, of every kind (for anyone and for
/// anonymous sessions, whose patterns are tried on each SEND; for roles,
/// users and authenticated sessions, which are passed over), then the one
/// that allows the bench topic. Every SEND is checked against all of them.
fn access_rules(n: usize) -> Vec<RuleSpec> {
    let mut rules: Vec<RuleSpec> = (1..n)
        .map(|i| match i % 6 {
            1 => (
                "anyone".to_owned(),
                vec![format!("/app/x/{i}/**")],
                vec![format!("/topic/other-{i}.*")],
            ),
            2 => (
                format!("role:ops-{i}"),
                vec![format!("/topic/ops-{i}/**")],
                vec![format!("/topic/ops-{i}/**"), format!("/queue/ops-{i}")],
            ),
            3 => (
                "anonymous".to_owned(),
                vec![format!("/topic/other-{i}/*/in")],
                vec![format!("/topic/news-{i}.**"), format!("/topic/other-{i}/*")],
            ),
            4 => (
                format!("user:user-{i}"),
                vec![format!("/queue/user-{i}.*")],
                vec!["/user/{user}/queue/**".to_owned()],
            ),
            5 => (
                "anyone".to_owned(),
                vec![
                    format!("/topic/chat.room-{i}"),
                    format!("/app/chat/room-{i}"),
                ],
                vec![format!("/topic/chat.room-{i}.*")],
            ),
            _ => (
                "authenticated".to_owned(),
                vec![format!("/app/orders/{i}/*")],
                vec![format!("/topic/orders-{i}.**")],
            ),
        })
        .collect();
    if n > 0 {
        rules.push((
            "anyone".to_owned(),
            vec![TOPIC_PATTERN.to_owned()],
            vec![TOPIC_PATTERN.to_owned()],
        ));
    }
    rules
}

/// `rules` as `[[auth.rules]]` tables.
fn rules_toml(rules: &[RuleSpec]) -> String {
    let list = |patterns: &[String]| {
        let quoted: Vec<String> = patterns.iter().map(|p| toml_str(p)).collect();
        format!("[{}]", quoted.join(", "))
    };
    let mut text = String::new();
    for (who, send, subscribe) in rules {
        text.push_str(&format!(
            "[[auth.rules]]\nwho = {}\nsend = {}\nsubscribe = {}\n\n",
            toml_str(who),
            list(send),
            list(subscribe)
        ));
    }
    text
}

/// One subscriber's progress, on its own cache line: subscribers on
/// different threads update theirs on every message.
#[derive(Debug, Default)]
#[repr(align(64))]
struct Progress(AtomicU64);

/// What `--max-lag` compares: messages received by each live subscriber.
#[derive(Debug)]
struct Lag {
    progress: Vec<Progress>,
}

impl Lag {
    /// Messages the slowest live subscriber has (finished or failed
    /// subscribers count as caught up: waiting for them would stall).
    fn slowest(&self) -> u64 {
        self.progress
            .iter()
            .map(|p| p.0.load(Ordering::Relaxed))
            .min()
            .unwrap_or(u64::MAX)
    }
}

pub(crate) async fn run(args: FanoutArgs) -> Result<(), String> {
    if args.subscribers == 0
        || args.messages == 0
        || args.receipt_every == 0
        || args.connect_concurrency == 0
    {
        return Err("bench fanout: --subscribers, --messages, --receipt-every and --connect-concurrency must be > 0".into());
    }
    let params = Json::obj()
        .with("subscribers", Json::uint(args.subscribers as u64))
        .with("messages", Json::uint(args.messages))
        .with("body", Json::uint(args.body as u64))
        .with("receipt_every", Json::uint(args.receipt_every))
        .with("rate", Json::uint(args.rate))
        .with("max_lag", Json::uint(args.max_lag))
        .with("heartbeat_ms", Json::uint(args.heartbeat_ms))
        .with("compare_rules", Json::uint(args.compare_rules as u64))
        .with("compare_rounds", Json::uint(args.compare_rounds as u64))
        .with("instances", Json::uint(args.instances as u64))
        .with(
            "metrics",
            Json::Arr(args.metrics.iter().map(|m| Json::str(m.name())).collect()),
        )
        .with("duration_secs", Json::uint(args.target.duration_secs));
    let rules = args.compare_rules;
    let rounds = args.compare_rounds;
    let mut floor = None;
    if args.floor {
        if args.rate == 0 {
            return Err(
                "bench fanout: --floor compares latency at an equal load; give --rate too".into(),
            );
        }
        if rules > 0 || !args.metrics.is_empty() {
            return Err(
                "bench fanout: --floor cannot be combined with --compare-rules or --metrics".into(),
            );
        }
        let plan = FanoutFloorPlan {
            subscribers: args.subscribers,
            messages: args.messages,
            rate: args.rate,
            size: delivery_size(&args),
        };
        let out = Out {
            quiet: args.target.json_only,
        };
        floor = Some(super::floor::measure_fanout(&plan, out).await?);
    }
    if rules > 0 && !args.target.spawn {
        return Err(
            "bench fanout: --compare-rules is about the servers --spawn starts; give --spawn too"
                .into(),
        );
    }
    if rounds == 0 {
        return Err("bench fanout: --compare-rounds must be > 0".into());
    }
    if args.instances == 0 {
        return Err("bench fanout: --instances must be > 0".into());
    }
    // Embedded instances would each be a message space of their own.
    let all_relay = super::relayed(&args.target)
        || (!args.target.relay_modes.is_empty()
            && !args
                .target
                .relay_modes
                .contains(&super::RelayModeArg::Embedded));
    if args.instances > 1 && !(args.target.spawn && all_relay) {
        return Err(
            "bench fanout: --instances is about relaying servers --spawn starts; give --spawn and \
             --relay (or --relay-mode shared/per-session only)"
                .into(),
        );
    }
    if args.instances > 1 && rules > 0 {
        return Err("bench fanout: --instances and --compare-rules do not go together".into());
    }
    let metrics = args.metrics.clone();
    if !metrics.is_empty() {
        if !args.target.spawn {
            return Err(
                "bench fanout: --metrics is about the servers --spawn starts; give --spawn too"
                    .into(),
            );
        }
        if rules > 0 {
            return Err("bench fanout: --metrics and --compare-rules do not go together".into());
        }
        // The comparison pairs one server with metrics and one without.
        if args.target.relay_modes.len() > 1 {
            return Err("bench fanout: --metrics takes one --relay-mode at most".into());
        }
        if metrics
            .iter()
            .enumerate()
            .any(|(i, m)| metrics[..i].contains(m))
        {
            return Err("bench fanout: --metrics lists each of on and off at most once".into());
        }
    }
    // Kept until the run ends: the rules servers read it at start-up.
    let rules_file = if rules > 0 {
        Some(ConfigFile::write(
            "rules",
            &rules_toml(&access_rules(rules)),
        )?)
    } else {
        None
    };
    // The servers to start, with their rule counts and rounds.
    let mut spawns = Vec::new();
    let mut kinds: Vec<(u64, usize)> = Vec::new();
    // With --metrics: each spawned server's state and round.
    let mut metric_kinds: Vec<(MetricsArg, usize)> = Vec::new();
    match &rules_file {
        None if !metrics.is_empty() => {
            for round in 1..=rounds {
                // As for the rules: a machine getting slower or faster
                // favours neither.
                let mut order = metrics.clone();
                if round % 2 == 0 {
                    order.reverse();
                }
                for state in order {
                    let variant = if rounds > 1 {
                        format!("metrics-{}-round-{round}", state.name())
                    } else {
                        format!("metrics-{}", state.name())
                    };
                    spawns.push(Spawn {
                        variant,
                        args: state.server_args(),
                        instances: args.instances,
                    });
                    metric_kinds.push((state, round));
                }
            }
        }
        None => spawns.push(Spawn {
            instances: args.instances,
            ..Spawn::default()
        }),
        Some(file) => {
            for round in 1..=rounds {
                let (plain, with_rules) = if rounds > 1 {
                    (
                        format!("round-{round}"),
                        format!("rules-{rules}-round-{round}"),
                    )
                } else {
                    (String::new(), format!("rules-{rules}"))
                };
                let none = Spawn {
                    variant: plain,
                    args: Vec::new(),
                    instances: 1,
                };
                let with = Spawn {
                    variant: with_rules,
                    args: file.args(),
                    instances: 1,
                };
                // Odd rounds without rules first, even rounds with: a
                // machine getting slower or faster favours neither.
                let pair = if round % 2 == 1 {
                    [(none, 0), (with, rules as u64)]
                } else {
                    [(with, rules as u64), (none, 0)]
                };
                for (spawn, n) in pair {
                    spawns.push(spawn);
                    kinds.push((n, round));
                }
            }
        }
    }
    let args = Arc::new(args);
    let common = args.target.clone();
    let urls = common.urls.clone();
    super::run_targets_with(
        "fanout",
        &["serve"],
        &common,
        params,
        &spawns,
        |results, out| {
            if rules > 0 {
                compare_rules(results, out)
            } else if !metrics.is_empty() {
                scrape::compare(results, out)
            } else {
                let reference = super::compare_with_reference(
                    results,
                    "deliveries_per_sec",
                    &urls,
                    "fanout",
                    out,
                );
                super::floor::add_to(reference, floor.take(), |floor| {
                    against_floor(results, floor, out)
                })
            }
        },
        |target, out| {
            let args = Arc::clone(&args);
            // Which spawned server it is, when rules are compared.
            let kind = target.spawn.and_then(|i| kinds.get(i)).copied();
            let metric_kind = target.spawn.and_then(|i| metric_kinds.get(i)).copied();
            let metrics_state = metric_kind.map(|(state, _)| state);
            async move {
                // A comparison with rules that are not in force would
                // compare the plain server with itself.
                if let Some((n, round)) = kind
                    && n > 0
                {
                    if let Err(e) = rules_in_force(&target, &args.target).await {
                        let json = Json::obj()
                            .with("target", Json::str(target.label.as_str()))
                            .with("access_rules", Json::uint(n))
                            .with("round", Json::uint(round as u64));
                        return failed(out, json, e);
                    }
                    say!(
                        out,
                        "access rules in force: a SUBSCRIBE that no rule allows was refused"
                    );
                }
                if metrics_state == Some(MetricsArg::Off) {
                    if let Err(e) = scrape::check_off(&target.url).await {
                        let json = Json::obj()
                            .with("target", Json::str(target.label.as_str()))
                            .with("metrics", Json::str("off"));
                        return failed(out, json, e);
                    }
                    say!(out, "metrics off: GET /metrics answered 404");
                }
                let mut outcome = match metrics_state {
                    Some(MetricsArg::On) => measure_scraped(target, &args, out).await,
                    _ => measure(target, &args, out).await,
                };
                if let Some((state, round)) = metric_kind {
                    outcome.json = outcome
                        .json
                        .with("metrics", Json::str(state.name()))
                        .with("round", Json::uint(round as u64));
                }
                if let Some((n, round)) = kind {
                    outcome.json = outcome
                        .json
                        .with("access_rules", Json::uint(n))
                        .with("round", Json::uint(round as u64));
                }
                outcome
            }
        },
    )
    .await
}

/// [`measure`] while the target's `/metrics` is scraped every second; a
/// failed scrape fails the measurement, as the figures would then not be
/// those of a scraped server.
async fn measure_scraped(target: Target, args: &FanoutArgs, out: Out) -> Outcome {
    let addr = match scrape::http_addr(&target.url) {
        Ok(addr) => addr,
        Err(e) => {
            let json = Json::obj().with("target", Json::str(target.label.as_str()));
            return failed(out, json, e);
        }
    };
    let (stop, stopped) = watch::channel(false);
    let scraper = scrape::start(addr, stopped);
    let mut outcome = measure(target, args, out).await;
    let _ = stop.send(true);
    let scrapes = match scraper.await {
        Ok(scrapes) => scrapes,
        Err(e) => {
            let mut scrapes = scrape::Scrapes::default();
            scrapes.errors.add(format!("the scraper failed: {e}"));
            scrapes
        }
    };
    say!(out, "{}", scrapes.line());
    for line in scrapes.errors.lines() {
        say!(out, "  scrape error: {line}");
    }
    if !scrapes.errors.is_empty() || scrapes.ok == 0 {
        let reason = format!(
            "{} of {} scrapes of /metrics failed",
            scrapes.errors.total(),
            scrapes.ok + scrapes.errors.total()
        );
        say!(out, "FAILED: {reason}");
        let failure = match outcome.json.get("failure").and_then(Json::as_str) {
            Some(earlier) => format!("{earlier}; {reason}"),
            None => reason,
        };
        outcome.ok = false;
        outcome.json = outcome
            .json
            .set("ok", Json::Bool(false))
            .set("failure", Json::Str(failure));
    }
    outcome.json = outcome.json.with("scrapes", scrapes.to_json());
    outcome
}

/// Checks that the server refuses a SUBSCRIBE no rule allows: the rules of
/// `--compare-rules` are in force.
async fn rules_in_force(target: &Target, common: &TargetArgs) -> Result<(), String> {
    let probe = async {
        let endpoint = super::conn::Endpoint::resolve(
            &target.url,
            &common.vhost,
            common.login.as_deref(),
            common.passcode.as_deref(),
        )
        .await?;
        let mut conn = endpoint.connect(None, None).await?;
        let subscribe = Frame::new(Command::Subscribe)
            .header(header::ID, "0")
            .header(header::DESTINATION, "/topic/no-rule-allows-this")
            .header(header::RECEIPT, "probe");
        conn.send(&subscribe).await?;
        let answer = conn.next_frame().await?;
        let close_reason = conn.close_reason().to_owned();
        conn.close().await;
        match answer {
            Some(frame)
                if frame.command == Command::Error
                    && frame
                        .headers
                        .get(header::MESSAGE)
                        .is_some_and(|m| m.contains("access refused")) =>
            {
                Ok(())
            }
            Some(frame) if frame.command == Command::Receipt => Err(
                "the server allowed a SUBSCRIBE no access rule allows: the rules are not in force"
                    .to_owned(),
            ),
            Some(frame) => Err(unexpected(&frame, "ERROR (access refused)")),
            None => Err(format!(
                "connection closed by server ({close_reason}) before it answered a SUBSCRIBE"
            )),
        }
    };
    let limit = Duration::from_secs(common.connect_timeout_secs);
    tokio::time::timeout(limit, probe)
        .await
        .unwrap_or_else(|_| Err("the access-rule check took too long".into()))
        .map_err(|e| format!("checking the access rules: {e}"))
}

/// With `--compare-rules`: deliveries/s with the rules against without,
/// as the ratio of the means over the rounds and per round.
fn compare_rules(results: &[Json], out: Out) -> Option<Json> {
    let rules_of = |r: &Json| number(r, "access_rules");
    let none: Vec<&Json> = results
        .iter()
        .filter(|r| rules_of(r) == Some(0.0))
        .collect();
    let with: Vec<&Json> = results
        .iter()
        .filter(|r| rules_of(r).is_some_and(|n| n > 0.0))
        .collect();
    if none.is_empty() {
        return None;
    }
    let n = rules_of(with.first()?).unwrap_or_default();
    let rate = paired::deliveries_per_sec;
    let publish = |r: &Json| number(r, "publish_rate");
    let latency = |key: &'static str| {
        move |r: &Json| {
            r.get("latency")
                .and_then(|l| l.get(key))
                .and_then(Json::as_f64)
        }
    };
    let (none_rate, with_rate) = (mean(&none, &rate), mean(&with, &rate));
    let rate_ratio = ratio(with_rate, none_rate);
    let publish_ratio = ratio(mean(&with, &publish), mean(&none, &publish));
    // The same deliveries in every target: CPU per run compares directly.
    let cpu_ratio = ratio(mean(&with, &server_cpu), mean(&none, &server_cpu));
    let round_ratios = paired::round_ratios(&with, &none);
    let rounds = with.len();
    say!(
        out,
        "\n== fanout: {n} access rules against none (same run{}): {}; publish rate ratio {}; server CPU ratio {}; p50 {} vs {} ms, p99 {} vs {} ms",
        rounds_note(rounds),
        rates_text(with_rate, none_rate, rate_ratio, &round_ratios),
        show(publish_ratio, 3),
        show(cpu_ratio, 3),
        show(mean(&with, &latency("p50_ms")), 1),
        show(mean(&none, &latency("p50_ms")), 1),
        show(mean(&with, &latency("p99_ms")), 1),
        show(mean(&none, &latency("p99_ms")), 1),
    );
    let all_ok = none
        .iter()
        .chain(&with)
        .all(|r| matches!(r.get("ok"), Some(Json::Bool(true))));
    Some(
        Json::obj()
            .with("access_rules", Json::uint(n as u64))
            .with("deliveries_per_sec_without_rules", Json::opt_num(none_rate))
            .with("deliveries_per_sec_with_rules", Json::opt_num(with_rate))
            .with("deliveries_per_sec_ratio", Json::opt_num(rate_ratio))
            .with("publish_rate_ratio", Json::opt_num(publish_ratio))
            .with("server_cpu_ratio", Json::opt_num(cpu_ratio))
            .with("rounds", Json::uint(rounds as u64))
            .with(
                "round_ratios",
                Json::Arr(round_ratios.into_iter().map(Json::opt_num).collect()),
            )
            .with("all_ok", Json::Bool(all_ok)),
    )
}

/// What one subscriber saw.
#[derive(Debug, Default)]
struct SubStats {
    received: u64,
    /// A `seq` lower than or equal to the previous one.
    out_of_order: u64,
    /// Forward jumps in `seq`: messages skipped (lost or reordered).
    gaps: u64,
    /// MESSAGE frames without a usable `seq` or `ts`.
    malformed: u64,
    /// Time of the last MESSAGE, since the epoch.
    last_at: Option<Duration>,
    latency_us: Histogram,
    error: Option<String>,
}

/// What the publisher did.
#[derive(Debug, Default)]
struct PubStats {
    sent: u64,
    first_at: Option<Duration>,
    /// When the RECEIPT of the last message came back.
    confirmed_at: Option<Duration>,
    error: Option<String>,
}

struct Plan {
    topic: String,
    /// With `--max-lag`: the lag and everyone's progress.
    lag: Option<(u64, Arc<Lag>)>,
    messages: u64,
    body: Bytes,
    receipt_every: u64,
    rate: u64,
    epoch: Instant,
    deadline: Instant,
}

async fn measure(target: Target, args: &FanoutArgs, out: Out) -> Outcome {
    let epoch = Instant::now();
    let deadline = epoch + Duration::from_secs(args.target.duration_secs);
    let topic = format!("{TOPIC_PREFIX}{:016x}", random_u64());
    say!(
        out,
        "\n== fanout on {}: {} subscribers, {} messages of {} bytes, topic {topic}",
        target.label,
        args.subscribers,
        args.messages,
        args.body
    );
    // A relaying server's broker connections before any client (its
    // system connection alone) are compared below with every client connected.
    let (json, broker_before, endpoint) = match target
        .prepare(&args.target, args.subscribers as u64 + 1, out)
        .await
    {
        Ok(prepared) => prepared,
        Err(outcome) => return outcome,
    };

    // The instances subscribers are spread over: this one and its peers.
    let mut endpoints = vec![Arc::clone(&endpoint)];
    for peer in &target.peers {
        match super::conn::Endpoint::resolve(
            &peer.url,
            &args.target.vhost,
            args.target.login.as_deref(),
            args.target.passcode.as_deref(),
        )
        .await
        {
            Ok(peer) => endpoints.push(peer),
            Err(e) => return failed(out, json, format!("instance {}: {e}", peer.url)),
        }
    }

    // Subscribers, each confirmed by a RECEIPT; with several instances,
    // as even a share on each as the count allows (subscriber i on
    // instance i mod N).
    let setup_started = Instant::now();
    let mut subscribers = Vec::with_capacity(args.subscribers);
    let mut setup_errors = Errors::default();
    let mut per_instance = Vec::with_capacity(endpoints.len());
    for (k, endpoint) in endpoints.iter().enumerate() {
        let count = (args.subscribers + endpoints.len() - 1 - k) / endpoints.len();
        let fleet = Fleet {
            count,
            concurrency: args.connect_concurrency,
            heartbeat: heartbeat_period(args),
            limit: Duration::from_secs(args.target.connect_timeout_secs),
            deadline,
            what: "subscribers",
            distinct_ids: args.distinct_ids,
        };
        let (conns, errors) = connect_all(endpoint, fleet, |_| topic.clone()).await;
        per_instance.push(Json::uint(conns.len() as u64));
        subscribers.extend(conns);
        setup_errors.merge(&errors);
    }
    let setup_secs = setup_started.elapsed().as_secs_f64();
    let ready = subscribers.len();
    let mut json = json;
    if endpoints.len() > 1 {
        json = json.with("subscribers_per_instance", Json::Arr(per_instance));
    }
    let json = json
        .with("subscribers_ready", Json::uint(subscribers.len() as u64))
        .with("setup_secs", Json::Num(setup_secs))
        .with("setup_errors", setup_errors.to_json());
    say!(
        out,
        "subscribers ready: {}/{} in {setup_secs:.2} s",
        subscribers.len(),
        args.subscribers
    );
    if !setup_errors.is_empty() {
        for line in setup_errors.lines() {
            say!(out, "  setup error: {line}");
        }
        close_all(subscribers).await;
        let missing = args.subscribers - ready;
        return failed(
            out,
            json,
            format!(
                "{missing} of {} subscribers failed to set up",
                args.subscribers
            ),
        );
    }
    let publisher_limit =
        deadline.min(Instant::now() + Duration::from_secs(args.target.connect_timeout_secs));
    let publisher =
        match tokio::time::timeout_at(publisher_limit, endpoint.connect(None, None)).await {
            Ok(Ok(conn)) => conn,
            Ok(Err(e)) => {
                close_all(subscribers).await;
                return failed(out, json, format!("publisher: {e}"));
            }
            Err(_) => {
                close_all(subscribers).await;
                return failed(out, json, "the publisher could not connect in time".into());
            }
        };

    let json =
        super::report_broker_connections(&target, broker_before, ready as u64 + 1, json, out);

    // Readers first, so that every subscriber is draining its socket
    // before the first message is published.
    let (stop_tx, stop_rx) = watch::channel(false);
    let lag = Arc::new(Lag {
        progress: (0..subscribers.len())
            .map(|_| Progress::default())
            .collect(),
    });
    let mut readers = JoinSet::new();
    for (i, conn) in subscribers.into_iter().enumerate() {
        let progress = (args.max_lag > 0).then(|| (Arc::clone(&lag), i));
        readers.spawn(subscribe_loop(
            conn,
            args.messages,
            epoch,
            stop_rx.clone(),
            progress,
            heartbeat_period(args),
        ));
    }
    let plan = Plan {
        topic: topic.clone(),
        lag: (args.max_lag > 0).then(|| (args.max_lag, Arc::clone(&lag))),
        messages: args.messages,
        body: Bytes::from(vec![b'x'; args.body]),
        receipt_every: args.receipt_every,
        rate: args.rate,
        epoch,
        deadline,
    };
    let cpu = CpuMark::now(target.pid);
    let peers_cpu = target.peers_cpu();
    let broker_cpu = target.broker_cpu();
    let mut pub_stats = PubStats::default();
    let mut publisher = publisher;
    let published =
        tokio::time::timeout_at(deadline, publish(&mut publisher, &plan, &mut pub_stats)).await;
    match published {
        Ok(Ok(())) => {}
        Ok(Err(e)) => pub_stats.error = Some(e),
        Err(_) => pub_stats.error = Some("deadline passed while publishing".into()),
    }
    let publish_done = Instant::now();
    let publish_ended_at = since(epoch);
    say!(
        out,
        "published {} messages{}",
        pub_stats.sent,
        pub_stats
            .error
            .as_deref()
            .map(|e| format!(" (then: {e})"))
            .unwrap_or_default()
    );

    // Subscribers finish on their own once they have every message. If the
    // publisher stopped early they never will, so give them a short grace
    // to drain what was sent, then stop them.
    let wait_until = if pub_stats.error.is_none() {
        deadline
    } else {
        deadline.min(publish_done + Duration::from_secs(5))
    };
    let mut stats = Vec::with_capacity(args.subscribers);
    let mut panics = 0u64;
    let _ = tokio::time::timeout_at(wait_until, async {
        while let Some(joined) = readers.join_next().await {
            match joined {
                Ok(s) => stats.push(s),
                Err(_) => panics += 1,
            }
        }
    })
    .await;
    // Subscribers still waiting: either the deadline passed, or they were
    // given up on a grace period after the publisher failed.
    let waiting = readers.len();
    let timed_out = waiting > 0 && Instant::now() >= deadline;
    let _ = stop_tx.send(true);
    while let Some(joined) = readers.join_next().await {
        match joined {
            Ok(s) => stats.push(s),
            Err(_) => panics += 1,
        }
    }
    let (cpu_json, cpu_line) = cpu.since(target.pid);
    let broker_cpu = super::broker_cpu_since(&target, broker_cpu);
    let peers_cpu = target.peers_cpu_since(peers_cpu);
    let server_rss = target.pid.and_then(rss_kib);
    publisher.close().await;

    // Figures.
    let mut latency = Histogram::default();
    let mut errors = Errors::default();
    let (mut delivered, mut out_of_order, mut gaps, mut malformed) = (0u64, 0u64, 0u64, 0u64);
    let mut last_at: Option<Duration> = None;
    let mut min_received = u64::MAX;
    for s in &stats {
        delivered += s.received;
        out_of_order += s.out_of_order;
        gaps += s.gaps;
        malformed += s.malformed;
        min_received = min_received.min(s.received);
        last_at = last_at.max(s.last_at);
        latency.merge(&s.latency_us);
        if let Some(e) = &s.error {
            errors.add(e.as_str());
        }
    }
    for _ in 0..panics {
        errors.add("subscriber task panicked");
    }
    let expected = pub_stats.sent * args.subscribers as u64;
    let lost = expected.saturating_sub(delivered);
    let delivery_secs = match (pub_stats.first_at, last_at) {
        (Some(first), Some(last)) if last > first => Some((last - first).as_secs_f64()),
        _ => None,
    };
    let deliveries_per_sec = delivery_secs.map(|secs| delivered as f64 / secs);
    // Normally up to the last RECEIPT; when the publisher was cut short,
    // up to when it stopped (its last messages then are unconfirmed).
    let publish_end = pub_stats.confirmed_at.unwrap_or(publish_ended_at);
    let publish_secs = match pub_stats.first_at {
        Some(first) if publish_end > first => Some((publish_end - first).as_secs_f64()),
        _ => None,
    };
    let publish_rate = publish_secs.map(|secs| pub_stats.sent as f64 / secs);

    let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.0}"));
    say!(
        out,
        "deliveries: {delivered}/{expected} ({lost} missing, {out_of_order} out of order, {gaps} gaps, {malformed} malformed) → {} deliveries/s over {} s",
        show(deliveries_per_sec),
        delivery_secs.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}"))
    );
    say!(
        out,
        "publish rate: {} msg/s (first SEND to {} {} s)",
        show(publish_rate),
        if pub_stats.confirmed_at.is_some() {
            "last RECEIPT"
        } else {
            "publisher stop"
        },
        publish_secs.map_or_else(|| "-".to_owned(), |s| format!("{s:.2}"))
    );
    say!(out, "latency (publish → receive): {}", latency.summary_ms());
    say!(out, "{cpu_line}");
    if let Some(secs) = peers_cpu {
        say!(out, "CPU of the other instances: {secs:.2} s");
    }
    if let Some(secs) = broker_cpu {
        say!(out, "CPU of the broker behind the relay: {secs:.2} s");
    }
    if let Some(rss) = server_rss {
        say!(out, "server RSS now: {} MiB", rss / 1024);
    }
    for line in errors.lines() {
        say!(out, "  subscriber error: {line}");
    }
    if waiting > 0 {
        say!(
            out,
            "  {waiting} subscribers were still waiting for messages when {}",
            if timed_out {
                "the deadline passed"
            } else {
                "they were stopped"
            }
        );
    }

    let mut failure = Vec::new();
    if let Some(e) = &pub_stats.error {
        failure.push(format!("publisher: {e}"));
    }
    if lost > 0 {
        // Messages still on their way when the deadline passed are not
        // proven lost; the report says which it was.
        failure.push(if timed_out {
            format!("{lost} deliveries missing when the deadline passed")
        } else {
            format!("{lost} deliveries lost")
        });
    }
    if out_of_order > 0 || gaps > 0 || malformed > 0 {
        failure.push("ordering broken or malformed messages".into());
    }
    if !errors.is_empty() {
        failure.push(format!("{} subscriber errors", errors.total()));
    }
    if timed_out && pub_stats.error.is_none() {
        failure.push("deadline passed".into());
    }
    let (ok, json) = super::verdict(out, json, &failure);
    let json = json
        .with("published", Json::uint(pub_stats.sent))
        .with("publish_secs", Json::opt_num(publish_secs))
        .with("publish_rate", Json::opt_num(publish_rate))
        .with("publisher_error", Json::opt_str(pub_stats.error.as_deref()))
        .with("expected_deliveries", Json::uint(expected))
        .with("delivered", Json::uint(delivered))
        .with("lost", Json::uint(lost))
        .with("deadline_passed", Json::Bool(timed_out))
        .with("out_of_order", Json::uint(out_of_order))
        .with("gaps", Json::uint(gaps))
        .with("malformed", Json::uint(malformed))
        .with(
            "min_received_per_subscriber",
            Json::uint(if stats.is_empty() { 0 } else { min_received }),
        )
        .with("delivery_secs", Json::opt_num(delivery_secs))
        .with("deliveries_per_sec", Json::opt_num(deliveries_per_sec))
        .with("latency", latency.to_json_ms())
        .with("subscriber_errors", errors.to_json())
        .with("cpu", cpu_json)
        .with("peers_cpu_secs", Json::opt_num(peers_cpu))
        .with("broker_cpu_secs", Json::opt_num(broker_cpu))
        .with("server_rss_kib", Json::opt_uint(server_rss));
    Outcome { ok, json }
}

fn heartbeat_period(args: &FanoutArgs) -> Option<Duration> {
    (args.heartbeat_ms > 0).then(|| Duration::from_millis(args.heartbeat_ms))
}

/// Reads MESSAGEs until all `expected` came, the connection ends, or
/// `stop` is raised.
async fn subscribe_loop(
    mut conn: Conn,
    expected: u64,
    epoch: Instant,
    mut stop: watch::Receiver<bool>,
    progress: Option<(Arc<Lag>, usize)>,
    beat_every: Option<Duration>,
) -> SubStats {
    let progress = progress.as_ref().and_then(|(lag, i)| lag.progress.get(*i));
    let mut stats = SubStats::default();
    let mut next_seq = 0u64;
    let stopped = super::stopped(&mut stop);
    tokio::pin!(stopped);
    // Beats go out at half the promised interval, so that neither the time
    // spent setting up the other subscribers nor scheduling delays make one
    // late. One timer for the whole loop, reset after each beat: a fresh
    // sleep per received message would register and cancel a timer each time.
    let beat_every = beat_every.map(|every| every / 2);
    let beat = tokio::time::sleep(beat_every.unwrap_or_default());
    tokio::pin!(beat);
    while stats.received < expected {
        let next = tokio::select! {
            // Frames already buffered are worth taking before stopping.
            biased;
            next = conn.next_delivery() => next,
            () = &mut stopped => break,
            () = &mut beat, if beat_every.is_some() => {
                if let Err(e) = conn.send_heartbeat().await {
                    stats.error = Some(e);
                    break;
                }
                beat.as_mut().reset(Instant::now() + beat_every.unwrap_or_default());
                continue;
            }
        };
        let delivery = match next {
            Ok(Some(delivery)) => delivery,
            Ok(None) => {
                stats.error = Some(format!(
                    "connection closed by server ({}) after {} messages",
                    conn.close_reason(),
                    bucket(stats.received)
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
        let now = since(epoch);
        stats.received += 1;
        stats.last_at = Some(now);
        if let Some(progress) = progress {
            progress.0.store(stats.received, Ordering::Relaxed);
        }
        let (Some(seq), Some(ts)) = (seq, ts) else {
            stats.malformed += 1;
            continue;
        };
        stats.latency_us.record(micros(now).saturating_sub(ts));
        if seq < next_seq {
            stats.out_of_order += 1;
        } else {
            if seq > next_seq {
                stats.gaps += 1;
            }
            next_seq = seq + 1;
        }
    }
    if let Some(progress) = progress {
        progress.0.store(u64::MAX, Ordering::Relaxed);
    }
    conn.close().await;
    stats
}

/// Rounds a count down to a power of ten, so errors that differ only in
/// exactly how many messages came first still group together.
fn bucket(n: u64) -> String {
    if n < 10 {
        return n.to_string();
    }
    let mut p = 1u64;
    while p <= n / 10 {
        p *= 10;
    }
    format!("≥{p}")
}

/// Publishes the plan's messages; `stats` stays meaningful if this future
/// is dropped at the deadline.
async fn publish(conn: &mut Conn, plan: &Plan, stats: &mut PubStats) -> Result<(), String> {
    let content_length = plan.body.len().to_string();
    let started = Instant::now();
    let mut pending: Option<String> = None;
    let mut slowest = 0;
    for seq in 0..plan.messages {
        if let Some((max_lag, lag)) = &plan.lag
            && seq.saturating_sub(slowest) > *max_lag
        {
            conn.flush().await?;
            loop {
                slowest = lag.slowest();
                if seq.saturating_sub(slowest) <= *max_lag {
                    break;
                }
                // Polling: subscribers waking the publisher on every
                // message would cost more than a 1 ms timer.
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        }
        if plan.rate > 0 {
            let due = started + Duration::from_secs_f64(seq as f64 / plan.rate as f64);
            if due > Instant::now() {
                conn.flush().await?;
                tokio::time::sleep_until(due).await;
            }
        }
        let now = since(plan.epoch);
        stats.first_at.get_or_insert(now);
        let mut frame = Frame::new(Command::Send)
            .header(header::DESTINATION, &plan.topic)
            .header("seq", &seq.to_string())
            .header("ts", &micros(now).to_string())
            .header(header::CONTENT_LENGTH, &content_length)
            .body(plan.body.clone());
        let last = seq + 1 == plan.messages;
        if (seq + 1) % plan.receipt_every == 0 || last {
            let receipt = format!("pub-{seq}");
            frame = frame.header(header::RECEIPT, &receipt);
            conn.feed(&frame).await?;
            conn.flush().await?;
            stats.sent = seq + 1;
            // Two windows in flight: the server works on this one while we
            // wait for the confirmation of the previous one.
            if let Some(previous) = pending.replace(receipt) {
                conn.expect_receipt(&previous).await?;
            }
        } else {
            conn.feed(&frame).await?;
            stats.sent = seq + 1;
        }
        if Instant::now() >= plan.deadline {
            return Err("deadline passed while publishing".into());
        }
    }
    if let Some(previous) = pending {
        conn.expect_receipt(&previous).await?;
    }
    stats.confirmed_at = Some(since(plan.epoch));
    Ok(())
}

/// What one delivery occupies on the wire: a MESSAGE with the publisher's
/// headers (seven-digit `seq` and `ts`), a message id and a subscription,
/// in an unmasked WebSocket frame.
fn delivery_size(args: &FanoutArgs) -> usize {
    let topic = format!("{TOPIC_PREFIX}{:016x}", 0);
    let frame = Frame::new(Command::Message)
        .header(header::DESTINATION, &topic)
        .header(header::MESSAGE_ID, "1-1000000")
        .header(header::SUBSCRIPTION, "sub-0")
        .header("seq", "1000000")
        .header("ts", "1000000")
        .header(header::CONTENT_LENGTH, &args.body.to_string())
        .body(Bytes::from(vec![b'x'; args.body]));
    super::floor::on_the_wire(&frame, false)
}

/// The floor's figures, and each target's latency and server CPU per
/// delivery as multiples of the bare relay's.
fn against_floor(results: &[Json], floor: Json, out: Out) -> Json {
    let quantile = |r: &Json, key: &str| {
        r.get("latency")
            .and_then(|l| l.get(key))
            .and_then(Json::as_f64)
    };
    let floor_cpu = floor
        .get("server_cpu_us_per_delivery")
        .and_then(Json::as_f64);
    let (floor_p50, floor_p99) = (quantile(&floor, "p50_ms"), quantile(&floor, "p99_ms"));
    let divide = |a: Option<f64>, b: Option<f64>| match (a, b) {
        (Some(a), Some(b)) if b > 0.0 => Some(a / b),
        _ => None,
    };
    let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    let mut rows = Vec::new();
    for r in results {
        let label = r.get("target").and_then(Json::as_str).unwrap_or("?");
        let delivered = r.get("delivered").and_then(Json::as_f64);
        let server = r
            .get("cpu")
            .and_then(|cpu| cpu.get("server_cpu_secs"))
            .and_then(Json::as_f64);
        let cpu_us = divide(server.map(|s| s * 1e6), delivered);
        let (p50, p99) = (quantile(r, "p50_ms"), quantile(r, "p99_ms"));
        let row = Json::obj()
            .with("target", Json::str(label))
            .with("server_cpu_us_per_delivery", Json::opt_num(cpu_us))
            .with("cpu_ratio", Json::opt_num(divide(cpu_us, floor_cpu)))
            .with("p50_ratio", Json::opt_num(divide(p50, floor_p50)))
            .with("p99_ratio", Json::opt_num(divide(p99, floor_p99)));
        say!(
            out,
            "  {label}: p50 {}×, p99 {}× the floor's {} / {} ms; server {} µs of CPU per delivery, {}× the floor's {} µs",
            show(divide(p50, floor_p50)),
            show(divide(p99, floor_p99)),
            show(floor_p50),
            show(floor_p99),
            show(cpu_us),
            show(divide(cpu_us, floor_cpu)),
            show(floor_cpu)
        );
        rows.push(row);
    }
    floor.with("targets", Json::Arr(rows))
}

#[cfg(test)]
mod tests {
    use super::*;
    use stompbox::auth::access::DestinationPattern;

    #[test]
    fn only_the_last_rule_allows_the_bench_topic() {
        let topic = format!("{TOPIC_PREFIX}{:016x}", random_u64());
        let rules = access_rules(20);
        assert_eq!(rules.len(), 20);
        let matches = |patterns: &[String]| {
            patterns.iter().any(|p| {
                // `{user}` patterns are for authenticated users only; the
                // bench's sessions are anonymous.
                !p.contains("{user}")
                    && DestinationPattern::parse(p)
                        .unwrap_or_else(|e| panic!("{p}: {e}"))
                        .matches(&topic)
            })
        };
        let (last, others) = rules.split_last().expect("rules");
        for (who, send, subscribe) in others {
            assert!(
                !matches(send) && !matches(subscribe),
                "{who}: {send:?} {subscribe:?}"
            );
        }
        assert_eq!(last.0, "anyone");
        assert!(matches(&last.1) && matches(&last.2));
        // Varied: rules for anonymous sessions too, not only ones passed over.
        for who in ["anyone", "anonymous", "authenticated"] {
            assert!(others.iter().any(|r| r.0 == who), "{who}");
        }
        assert!(others.iter().any(|r| r.0.starts_with("role:")));
        assert!(others.iter().any(|r| r.0.starts_with("user:")));
        assert_eq!(access_rules(1).len(), 1);
        assert!(access_rules(0).is_empty());
    }

    #[test]
    fn rules_render_as_auth_rules_tables() {
        let text = rules_toml(&access_rules(3));
        let value: toml::Table = text.parse().expect("valid TOML");
        let rules = value["auth"]["rules"].as_array().expect("an array");
        assert_eq!(rules.len(), 3);
        assert_eq!(rules[2]["who"].as_str(), Some("anyone"));
        assert_eq!(rules[2]["send"][0].as_str(), Some(TOPIC_PATTERN));
    }
}
