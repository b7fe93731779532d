//! `stompbox bench soak`: a long run of mixed traffic at about half of
//! saturation, watching the server's memory and counting losses.
//!
//! The mix: one producer per topic (several topics; lasting subscribers on
//! each, and wildcard subscribers over them), one producer per queue with a
//! RECEIPT for every message, queue consumers with `client-individual`
//! acknowledgements that NACK some messages once and now and then drop
//! their connection without acknowledging what they hold (so the server
//! redelivers), and churners that keep connecting, subscribing, exchanging
//! a few messages and leaving.
//!
//! First a short calibration runs the mix flat out (each producer held back
//! only by its RECEIPTs and by how far its consumers are behind, each
//! churner back to back) and measures its rates; the run then paces every
//! part at `--load-percent` of them (or at `--rate`) for `--duration`.
//! The server's RSS is read every few seconds: the figures are the RSS at
//! the end of the warm-up and at the end of the run (each the median of
//! three readings), their drift and the peak. After the run a drain phase
//! waits until every message the server confirmed has been delivered.
//! Verdict: drift within `--max-drift-percent`, no confirmed queue message
//! missing, no topic message missing at a subscriber that stayed, no error.

mod clients;
mod ledger;

use super::conn::{Endpoint, subscribed};
use super::report::{CpuMark, Errors, Json, random_u64, rss_kib};
use super::{Out, Outcome, Target, TargetArgs, failed};
use bytes::Bytes;
use clients::{
    ChurnStats, Churner, Consumer, ConsumerStats, Gate, Producer, TopicStats, TopicSubscriber,
};
use ledger::{Counts, Ledger, RssTrack, Tally, drift_percent, parse_duration};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Flags of `stompbox bench soak`.
#[derive(Debug, clap::Args)]
pub(crate) struct SoakArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// How long the soak runs at its rate, after the calibration: 90s, 10m,
    /// 1h (at most 24 h). The run stops by itself; this mode's time limit is
    /// this plus the calibration, the drain and a margin (--duration-secs
    /// does not apply).
    #[arg(long, default_value = "10m", value_parser = parse_duration)]
    duration: Duration,
    /// How long the calibration runs the mix flat out (default: a tenth of
    /// --duration, from 1 to 15 s). The rates of its last three quarters
    /// are the saturation figures.
    #[arg(long, value_parser = parse_duration)]
    calibration: Option<Duration>,
    /// Messages per second, topics and queues half each, instead of a
    /// calibration.
    #[arg(long)]
    rate: Option<u64>,
    /// With --rate: churn cycles per second (default: --rate / 100).
    #[arg(long)]
    churn_rate: Option<f64>,
    /// Percent of the calibrated rates the run goes at.
    #[arg(long, default_value_t = 50)]
    load_percent: u64,
    /// Topics, each with its own producer.
    #[arg(long, default_value_t = 4)]
    topics: usize,
    /// Subscribers of each topic that stay for the whole run.
    #[arg(long, default_value_t = 2)]
    topic_subscribers: usize,
    /// Wildcard subscribers that stay for the whole run, in turn
    /// `soak-RUN.*` (every topic), `soak-RUN.#` (every topic) and `*.tN`
    /// (one topic, through a leading wildcard).
    #[arg(long, default_value_t = 3)]
    wildcard_subscribers: usize,
    /// Queues, each with its own producer.
    #[arg(long, default_value_t = 4)]
    queues: usize,
    /// Consumers per queue (client-individual acknowledgements).
    #[arg(long, default_value_t = 2)]
    consumers: usize,
    /// Consumers NACK a message the first time it comes when its sequence
    /// number is a multiple of this (0: never).
    #[arg(long, default_value_t = 50)]
    nack_every: u64,
    /// Consumers drop their connection, unacknowledged messages and all,
    /// and reconnect this often (default: an eighth of --duration, from 1
    /// to 60 s).
    #[arg(long, value_parser = parse_duration)]
    consumer_lifetime: Option<Duration>,
    /// Clients that keep connecting, exchanging a few messages (on a topic,
    /// then on a queue, in turn) and disconnecting.
    #[arg(long, default_value_t = 8)]
    churners: usize,
    /// Body size of producer messages, in bytes.
    #[arg(long, default_value_t = 256)]
    body: usize,
    /// The warm-up: this percentage of --duration; the warm RSS is read
    /// after it.
    #[arg(long, default_value_t = 10)]
    warmup_percent: u64,
    /// Most RSS growth from the warm-up's end to the run's end, in percent.
    #[arg(long, default_value_t = 5.0)]
    max_drift_percent: f64,
    /// How often the server's RSS is read (default: --duration / 100, from
    /// 0.25 to 5 s).
    #[arg(long, value_parser = parse_duration)]
    sample_every: Option<Duration>,
    /// Longest wait after the run for confirmed messages still on their way.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    drain: Duration,
}

/// Topic producers ask for a RECEIPT every this many messages.
const TOPIC_RECEIPT_EVERY: u64 = 50;
/// Topic producers keep at most this many RECEIPTs outstanding.
const TOPIC_WINDOW: usize = 2;
/// Queue producers ask for a RECEIPT for every message, at most this many
/// outstanding.
const QUEUE_WINDOW: usize = 64;
/// Bytes of messages a lasting subscriber or consumer may have on their
/// way to it, from all producers together: a quarter of the server's
/// default outbox (`limits.outbox_bytes`, 512 KiB). The server as it is
/// cuts off a subscriber whose outbox overflows before it pauses the
/// publisher (issue 8), and the flat-out calibration must measure what the
/// whole path sustains, not provoke that.
const IN_FLIGHT_BYTES: u64 = 128 * 1024;
/// What one message costs in an outbox beyond its body: the MESSAGE
/// frame's headers.
const FRAME_OVERHEAD: u64 = 256;

/// Most messages a producer may be ahead of the slowest consumer it feeds,
/// when `sharers` producers feed one consumer.
fn max_lag(body: usize, sharers: usize) -> u64 {
    let frame = body as u64 + FRAME_OVERHEAD;
    (IN_FLIGHT_BYTES / frame / sharers.max(1) as u64).max(2)
}
/// Longest one churn cycle may take.
const CYCLE_LIMIT: Duration = Duration::from_secs(10);
/// Longest the clients may take to finish after they were told to.
const WIND_DOWN: Duration = Duration::from_secs(20);

fn clamp(d: Duration, min: Duration, max: Duration) -> Duration {
    d.clamp(min, max)
}

impl SoakArgs {
    fn calibration(&self) -> Duration {
        self.calibration.unwrap_or_else(|| {
            clamp(
                self.duration / 10,
                Duration::from_secs(1),
                Duration::from_secs(15),
            )
        })
    }

    fn consumer_lifetime(&self) -> Duration {
        self.consumer_lifetime.unwrap_or_else(|| {
            clamp(
                self.duration / 8,
                Duration::from_secs(1),
                Duration::from_secs(60),
            )
        })
    }

    fn sample_every(&self) -> Duration {
        self.sample_every.unwrap_or_else(|| {
            clamp(
                self.duration / 100,
                Duration::from_millis(250),
                Duration::from_secs(5),
            )
        })
    }

    fn warmup(&self) -> Duration {
        self.duration.mul_f64(self.warmup_percent as f64 / 100.0)
    }

    fn lasting_subscribers(&self) -> usize {
        self.topics * self.topic_subscribers + self.wildcard_subscribers
    }

    fn connections(&self) -> usize {
        self.lasting_subscribers()
            + self.topics
            + self.queues * (self.consumers + 1)
            + self.churners
    }
}

pub(crate) async fn run(args: SoakArgs) -> Result<(), String> {
    if args.topics == 0 || args.queues == 0 || args.consumers == 0 {
        return Err("bench soak: --topics, --queues and --consumers must be > 0".into());
    }
    if args.lasting_subscribers() == 0 {
        return Err(
            "bench soak: give --topic-subscribers or --wildcard-subscribers (topics need someone to deliver to)"
                .into(),
        );
    }
    if !(1..=100).contains(&args.load_percent) || args.warmup_percent >= 100 {
        return Err(
            "bench soak: --load-percent must be 1 to 100 and --warmup-percent below 100".into(),
        );
    }
    if args.rate == Some(0)
        || args
            .churn_rate
            .is_some_and(|r| !(r >= 0.0 && r.is_finite()))
    {
        return Err("bench soak: --rate must be > 0 and --churn-rate ≥ 0".into());
    }
    let params = Json::obj()
        .with("duration_secs", Json::Num(args.duration.as_secs_f64()))
        .with(
            "calibration_secs",
            Json::opt_num(
                args.rate
                    .is_none()
                    .then(|| args.calibration().as_secs_f64()),
            ),
        )
        .with("rate", Json::opt_uint(args.rate))
        .with("churn_rate", Json::opt_num(args.churn_rate))
        .with("load_percent", Json::uint(args.load_percent))
        .with("topics", Json::uint(args.topics as u64))
        .with(
            "topic_subscribers",
            Json::uint(args.topic_subscribers as u64),
        )
        .with(
            "wildcard_subscribers",
            Json::uint(args.wildcard_subscribers as u64),
        )
        .with("queues", Json::uint(args.queues as u64))
        .with("consumers", Json::uint(args.consumers as u64))
        .with("nack_every", Json::uint(args.nack_every))
        .with(
            "consumer_lifetime_secs",
            Json::Num(args.consumer_lifetime().as_secs_f64()),
        )
        .with("churners", Json::uint(args.churners as u64))
        .with("body", Json::uint(args.body as u64))
        .with("warmup_percent", Json::uint(args.warmup_percent))
        .with("max_drift_percent", Json::Num(args.max_drift_percent))
        .with(
            "sample_every_secs",
            Json::Num(args.sample_every().as_secs_f64()),
        )
        .with("drain_secs", Json::Num(args.drain.as_secs_f64()));
    let args = Arc::new(args);
    let common = args.target.clone();
    super::run_targets("soak", &["serve"], &common, params, |target, out| {
        let args = Arc::clone(&args);
        async move { measure(target, &args, out).await }
    })
    .await
}

/// Rates of the mix: messages per second to topics and to queues, churn
/// cycles per second.
#[derive(Debug, Clone, Copy, Default)]
struct Rates {
    topic: f64,
    queue: f64,
    churn: f64,
}

impl Rates {
    fn scaled(self, percent: u64) -> Rates {
        let f = percent as f64 / 100.0;
        Rates {
            topic: self.topic * f,
            queue: self.queue * f,
            churn: self.churn * f,
        }
    }

    fn to_json(self) -> Json {
        Json::obj()
            .with("topic_msgs_per_sec", Json::Num(self.topic))
            .with("queue_msgs_per_sec", Json::Num(self.queue))
            .with("msgs_per_sec", Json::Num(self.topic + self.queue))
            .with("churn_cycles_per_sec", Json::Num(self.churn))
    }

    fn line(self) -> String {
        format!(
            "{:.0} msg/s ({:.0} to topics + {:.0} to queues) and {:.1} churn cycles/s",
            self.topic + self.queue,
            self.topic,
            self.queue,
            self.churn
        )
    }
}

/// Counters the conductor reads while the clients run.
struct Progress {
    topics: Vec<Arc<Counts>>,
    ledgers: Vec<Arc<Ledger>>,
    cycles: Arc<AtomicU64>,
}

/// Totals at one moment: messages written to topics, to queues, cycles.
#[derive(Debug, Clone, Copy)]
struct Mark {
    topic: u64,
    queue: u64,
    cycles: u64,
    at: Instant,
}

impl Progress {
    fn mark(&self) -> Mark {
        let sent = |c: &Counts| c.sent.load(Ordering::Relaxed);
        Mark {
            topic: self.topics.iter().map(|c| sent(c)).sum(),
            queue: self.ledgers.iter().map(|l| sent(&l.counts)).sum(),
            cycles: self.cycles.load(Ordering::Relaxed),
            at: Instant::now(),
        }
    }
}

impl Mark {
    fn rates_since(&self, earlier: &Mark) -> Rates {
        let secs = self.at.duration_since(earlier.at).as_secs_f64().max(1e-3);
        Rates {
            topic: self.topic.saturating_sub(earlier.topic) as f64 / secs,
            queue: self.queue.saturating_sub(earlier.queue) as f64 / secs,
            churn: self.cycles.saturating_sub(earlier.cycles) as f64 / secs,
        }
    }
}

/// The pacing the conductor changes between phases, per client.
struct Pace {
    topic: watch::Sender<Option<f64>>,
    queue: watch::Sender<Option<f64>>,
    churn: watch::Sender<Option<f64>>,
}

impl Pace {
    fn set(&self, rates: Rates, args: &SoakArgs) {
        let per = |rate: f64, n: usize| Some(rate / n.max(1) as f64);
        let _ = self.topic.send(per(rates.topic, args.topics));
        let _ = self.queue.send(per(rates.queue, args.queues));
        let _ = self.churn.send(per(rates.churn, args.churners));
    }
}

/// Every client task, by kind.
struct Fleet {
    subscribers: JoinSet<(usize, TopicStats)>,
    producers: JoinSet<Result<(), String>>,
    consumers: JoinSet<ConsumerStats>,
    churners: JoinSet<ChurnStats>,
}

/// A lasting subscriber: what it subscribes to and the topics it matches.
fn lasting_subscribers(args: &SoakArgs, run: &str) -> Vec<(String, Vec<usize>)> {
    let all: Vec<usize> = (0..args.topics).collect();
    let mut specs = Vec::new();
    for topic in 0..args.topics {
        for _ in 0..args.topic_subscribers {
            specs.push((format!("/topic/soak-{run}.t{topic}"), vec![topic]));
        }
    }
    for w in 0..args.wildcard_subscribers {
        specs.push(match w % 3 {
            0 => (format!("/topic/soak-{run}.*"), all.clone()),
            1 => (format!("/topic/soak-{run}.#"), all.clone()),
            _ => {
                let topic = (w / 3) % args.topics;
                (format!("/topic/*.t{topic}"), vec![topic])
            }
        });
    }
    specs
}

/// Everything the conductor set up: the clients, their counters and pace.
struct Setup {
    fleet: Fleet,
    progress: Progress,
    /// Per topic: the progress of each lasting subscriber matching it.
    gates: Vec<Vec<Arc<AtomicU64>>>,
    /// Per lasting subscriber: the topics it matches.
    matched: Vec<Vec<usize>>,
    pace: Pace,
    stop: watch::Sender<bool>,
    finish: watch::Sender<bool>,
}

/// Connects the lasting subscribers and the producers, and starts every
/// client (producers and churners at `initial` pace).
async fn set_up(
    args: &SoakArgs,
    endpoint: &Arc<Endpoint>,
    run: &str,
    initial: Option<Rates>,
) -> Result<Setup, String> {
    let limit = Duration::from_secs(args.target.connect_timeout_secs);
    let (stop, stop_rx) = watch::channel(false);
    let (finish, finish_rx) = watch::channel(false);
    let per = |rate: f64, n: usize| rate / n.max(1) as f64;
    let (topic_pace, topic_rx) = watch::channel(initial.map(|r| per(r.topic, args.topics)));
    let (queue_pace, queue_rx) = watch::channel(initial.map(|r| per(r.queue, args.queues)));
    let (churn_pace, churn_rx) = watch::channel(initial.map(|r| per(r.churn, args.churners)));
    let mut fleet = Fleet {
        subscribers: JoinSet::new(),
        producers: JoinSet::new(),
        consumers: JoinSet::new(),
        churners: JoinSet::new(),
    };
    let topic_prefix = format!("/topic/soak-{run}.t");
    let topics: Vec<String> = (0..args.topics)
        .map(|i| format!("{topic_prefix}{i}"))
        .collect();

    let mut gates: Vec<Vec<Arc<AtomicU64>>> = vec![Vec::new(); args.topics];
    let mut matched = Vec::new();
    for (index, (destination, topics_matched)) in
        lasting_subscribers(args, run).into_iter().enumerate()
    {
        let progress: Vec<Option<Arc<AtomicU64>>> = (0..args.topics)
            .map(|t| topics_matched.contains(&t).then(Arc::default))
            .collect();
        for (topic, p) in progress.iter().enumerate() {
            if let Some(p) = p {
                gates[topic].push(Arc::clone(p));
            }
        }
        let conn = subscribed(endpoint, None, None, &destination, "sub", limit)
            .await
            .map_err(|e| format!("subscriber {destination}: {e}"))?;
        let subscriber = TopicSubscriber {
            destination,
            progress,
            topic_prefix: topic_prefix.clone(),
        };
        let finish = finish_rx.clone();
        fleet
            .subscribers
            .spawn(async move { (index, clients::subscribe(conn, subscriber, finish).await) });
        matched.push(topics_matched);
    }

    let body = Bytes::from(vec![b'x'; args.body]);
    let connect = |what: String| async move {
        tokio::time::timeout(limit, endpoint.connect(None, None))
            .await
            .unwrap_or_else(|_| Err("took too long".into()))
            .map_err(|e| format!("{what}: {e}"))
    };
    let mut topic_counts = Vec::new();
    for (topic, destination) in topics.iter().enumerate() {
        let counts = Arc::new(Counts::default());
        topic_counts.push(Arc::clone(&counts));
        let producer = Producer {
            destination: destination.clone(),
            receipt_every: TOPIC_RECEIPT_EVERY,
            window: TOPIC_WINDOW,
            // A wildcard subscriber gets every topic's messages.
            max_lag: max_lag(args.body, args.topics),
            gate: Gate::Topic(gates[topic].clone()),
            body: body.clone(),
            counts,
        };
        let conn = connect(format!("producer {destination}")).await?;
        let (rate, stop) = (topic_rx.clone(), stop_rx.clone());
        fleet
            .producers
            .spawn(clients::produce(conn, producer, rate, stop));
    }
    let mut ledgers = Vec::new();
    let lifetime = args.consumer_lifetime();
    for q in 0..args.queues {
        let destination = format!("/queue/soak-{run}.q{q}");
        let ledger = Arc::new(Ledger::new(Arc::default()));
        ledgers.push(Arc::clone(&ledger));
        let producer = Producer {
            destination: destination.clone(),
            receipt_every: 1,
            window: QUEUE_WINDOW,
            max_lag: max_lag(args.body, 1),
            gate: Gate::Queue(Arc::clone(&ledger)),
            body: body.clone(),
            counts: Arc::clone(&ledger.counts),
        };
        let conn = connect(format!("producer {destination}")).await?;
        let (rate, stop) = (queue_rx.clone(), stop_rx.clone());
        fleet
            .producers
            .spawn(clients::produce(conn, producer, rate, stop));
        for c in 0..args.consumers {
            // Staggered, so that the consumers of a queue never all leave
            // at once.
            let share =
                (q * args.consumers + c + 1) as f64 / (args.queues * args.consumers + 1) as f64;
            let consumer = Consumer {
                endpoint: Arc::clone(endpoint),
                destination: destination.clone(),
                ledger: Arc::clone(&ledger),
                lifetime,
                first_lifetime: lifetime.mul_f64(share),
                nack_every: args.nack_every,
                connect_limit: limit,
            };
            fleet
                .consumers
                .spawn(clients::consume(consumer, finish_rx.clone()));
        }
    }
    let cycles = Arc::new(AtomicU64::new(0));
    let queues: Vec<(String, Arc<Ledger>)> = ledgers
        .iter()
        .enumerate()
        .map(|(q, l)| (format!("/queue/soak-{run}.q{q}"), Arc::clone(l)))
        .collect();
    for index in 0..args.churners {
        let churner = Churner {
            endpoint: Arc::clone(endpoint),
            index,
            topics: topics.clone(),
            queues: queues.clone(),
            own_topic: format!("/topic/soakchurn-{run}.c{index}"),
            cycle_limit: CYCLE_LIMIT,
            cycles_done: Arc::clone(&cycles),
        };
        fleet
            .churners
            .spawn(clients::churn(churner, churn_rx.clone(), stop_rx.clone()));
    }
    Ok(Setup {
        fleet,
        progress: Progress {
            topics: topic_counts,
            ledgers,
            cycles,
        },
        gates,
        matched,
        pace: Pace {
            topic: topic_pace,
            queue: queue_pace,
            churn: churn_pace,
        },
        stop,
        finish,
    })
}

/// Waits for every task of `set` until `limit`; returns their outputs and
/// how many did not finish (aborted when the set is dropped).
async fn join_all<T: 'static>(mut set: JoinSet<T>, limit: Instant, errors: &mut Errors) -> Vec<T> {
    let mut outputs = Vec::new();
    let _ = tokio::time::timeout_at(limit, async {
        while let Some(joined) = set.join_next().await {
            match joined {
                Ok(output) => outputs.push(output),
                Err(e) => errors.add(format!("client task failed: {e}")),
            }
        }
    })
    .await;
    for _ in 0..set.len() {
        errors.add("a client did not finish in time");
    }
    outputs
}

/// The machine's 1-minute load average: on a shared machine, the other
/// work that ran alongside explains a slower calibration.
fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU seconds per wall second, for the human-readable lines.
fn cores(cpu_secs: Option<f64>, wall_secs: f64) -> String {
    cpu_secs
        .filter(|_| wall_secs > 0.0)
        .map_or_else(|| "?".to_owned(), |cpu| format!("{:.2}", cpu / wall_secs))
}

fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "?".to_owned(),
        |kib| format!("{:.1}", kib as f64 / 1024.0),
    )
}

async fn measure(target: Target, args: &SoakArgs, out: Out) -> Outcome {
    let run = format!("{:016x}", random_u64());
    say!(
        out,
        "\n== soak on {}: {} s at {} % of saturation; {} topics ({} lasting subscribers, {} of them wildcards), {} queues × {} consumers (client-individual, NACK 1 in {}, reconnect every {:.0} s), {} churners; run id {run}",
        target.label,
        args.duration.as_secs_f64(),
        args.load_percent,
        args.topics,
        args.lasting_subscribers(),
        args.wildcard_subscribers,
        args.queues,
        args.consumers,
        args.nack_every,
        args.consumer_lifetime().as_secs_f64(),
        args.churners
    );
    let (json, _, endpoint) = match target
        .prepare(&args.target, args.connections() as u64, out)
        .await
    {
        Ok(prepared) => prepared,
        Err(outcome) => return outcome,
    };
    let rss = || target.pid.and_then(rss_kib);
    if target.pid.is_none() {
        say!(
            out,
            "server RSS unknown: the server was not spawned and no --server-pid was given"
        );
    }
    let given = args.rate.map(|rate| Rates {
        topic: rate as f64 / 2.0,
        queue: rate as f64 / 2.0,
        churn: args.churn_rate.unwrap_or(rate as f64 / 100.0),
    });
    let rss_before = rss();
    let load_before = load_average();
    let setup = match set_up(args, &endpoint, &run, given).await {
        Ok(setup) => setup,
        Err(e) => return failed(out, json, format!("setting up: {e}")),
    };
    let Setup {
        fleet,
        progress,
        gates,
        matched,
        pace,
        stop,
        finish,
    } = setup;

    // Calibration: the mix flat out.
    let saturation = if given.is_none() {
        let calibration = args.calibration();
        say!(
            out,
            "calibrating for {:.1} s: everything flat out",
            calibration.as_secs_f64()
        );
        tokio::time::sleep(calibration / 4).await;
        let from = progress.mark();
        let cpu = CpuMark::now(target.pid);
        tokio::time::sleep(calibration - calibration / 4).await;
        let saturation = progress.mark().rates_since(&from);
        let spent = cpu.spent(target.pid);
        say!(
            out,
            "saturation: {}; CPU cores used: server {}, bench {}",
            saturation.line(),
            cores(spent.server, spent.wall),
            cores(spent.bench, spent.wall)
        );
        Some((saturation, spent))
    } else {
        None
    };
    let planned = match (given, saturation) {
        (Some(given), _) => given,
        (None, Some((saturation, _))) => saturation.scaled(args.load_percent),
        (None, None) => Rates::default(),
    };
    pace.set(planned, args);
    say!(
        out,
        "running {:.0} s at {}",
        args.duration.as_secs_f64(),
        planned.line()
    );

    // The run: RSS readings, a progress line every tenth.
    let started = Instant::now();
    let end = started + args.duration;
    let sample_every = args.sample_every();
    let report_every = (args.duration / 10).max(Duration::from_secs(1));
    let cpu = CpuMark::now(target.pid);
    let run_from = progress.mark();
    let rss_start = rss();
    let mut track = RssTrack::default();
    let mut next_sample = started;
    let mut next_report = started + report_every;
    let mut last_report = run_from;
    loop {
        let now = Instant::now();
        if now >= next_sample {
            if let Some(kib) = rss() {
                track.push(now.duration_since(started).as_secs_f64(), kib);
            }
            next_sample += sample_every;
        }
        if now >= end {
            break;
        }
        if now >= next_report {
            let mark = progress.mark();
            say!(
                out,
                "  {:>6.0} s: {}{}",
                now.duration_since(started).as_secs_f64(),
                mark.rates_since(&last_report).line(),
                rss().map_or_else(String::new, |kib| format!(
                    "; server RSS {} MiB",
                    mib(Some(kib))
                ))
            );
            last_report = mark;
            next_report += report_every;
        }
        tokio::time::sleep_until(next_sample.min(next_report).min(end)).await;
    }
    let achieved = progress.mark().rates_since(&run_from);
    let run_cpu = cpu.spent(target.pid);
    let (cpu_json, cpu_line) = run_cpu.report();
    let load_after = load_average();
    let _ = stop.send(true);

    let mut errors = Errors::default();
    let Fleet {
        subscribers,
        producers,
        consumers,
        churners,
    } = fleet;
    let wind_down = Instant::now() + WIND_DOWN;
    for result in join_all(producers, wind_down, &mut errors).await {
        if let Err(e) = result {
            errors.add(format!("producer: {e}"));
        }
    }
    let churned = join_all(churners, wind_down, &mut errors).await;

    // Drain: every confirmed message delivered, or the time is up.
    let drain_started = Instant::now();
    let drained = loop {
        let queues_done = progress.ledgers.iter().all(|l| l.drained());
        let topics_done = gates.iter().zip(&progress.topics).all(|(gate, counts)| {
            let confirmed = counts.confirmed.load(Ordering::Acquire);
            gate.iter().all(|p| p.load(Ordering::Relaxed) >= confirmed)
        });
        if queues_done && topics_done {
            break true;
        }
        if drain_started.elapsed() >= args.drain {
            break false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let drain_secs = drain_started.elapsed().as_secs_f64();
    let _ = finish.send(true);
    let wind_down = Instant::now() + WIND_DOWN;
    let lasting = join_all(subscribers, wind_down, &mut errors).await;
    let consumed = join_all(consumers, wind_down, &mut errors).await;
    let rss_after_drain = rss();

    // Queues.
    let mut queue = Tally::default();
    for ledger in &progress.ledgers {
        let t = ledger.tally();
        queue.confirmed += t.confirmed;
        queue.received += t.received;
        queue.lost += t.lost;
        queue.duplicates += t.duplicates;
        queue.unconfirmed += t.unconfirmed;
    }
    let mut consumer = ConsumerStats::default();
    for c in &consumed {
        consumer.acked += c.acked;
        consumer.nacked += c.nacked;
        consumer.redelivered += c.redelivered;
        consumer.dropped_sessions += c.dropped_sessions;
        consumer.unknown += c.unknown;
        errors.merge(&c.errors);
    }
    // Topics, at the subscribers that stayed connected.
    let topic_sent: u64 = progress
        .topics
        .iter()
        .map(|c| c.confirmed.load(Ordering::Acquire))
        .sum();
    let (mut expected, mut received, mut duplicates, mut foreign, mut stayed) = (0, 0, 0, 0, 0);
    for (index, stats) in &lasting {
        duplicates += stats.duplicates;
        foreign += stats.foreign;
        if let Some(e) = &stats.error {
            errors.add(e.as_str());
            continue;
        }
        stayed += 1;
        for &topic in matched.get(*index).map_or(&[][..], Vec::as_slice) {
            expected += progress.topics[topic].confirmed.load(Ordering::Acquire);
            received += stats.received.get(topic).copied().unwrap_or(0);
        }
    }
    let topic_lost = expected.saturating_sub(received);
    // Churn.
    let mut churn = ChurnStats::default();
    for c in &churned {
        churn.topic_cycles += c.topic_cycles;
        churn.queue_cycles += c.queue_cycles;
        churn.own_sent += c.own_sent;
        churn.own_lost += c.own_lost;
        churn.topic_messages += c.topic_messages;
        churn.acked += c.acked;
        churn.left_unacked += c.left_unacked;
        errors.merge(&c.errors);
    }
    // Memory.
    let warm_at = args.warmup().as_secs_f64();
    let (rss_warm, rss_end, rss_peak) = (track.warm(warm_at), track.end(), track.peak());
    let drift = drift_percent(rss_warm, rss_end);

    say!(out, "achieved over the run: {}", achieved.line());
    let show = |v: Option<f64>| v.map_or_else(|| "?".to_owned(), |v| format!("{v:.2}"));
    say!(
        out,
        "{cpu_line} (server {} cores, bench {}); machine load average {} before, {} at the end",
        cores(run_cpu.server, run_cpu.wall),
        cores(run_cpu.bench, run_cpu.wall),
        show(load_before),
        show(load_after)
    );
    if target.pid.is_some() {
        say!(
            out,
            "server RSS: {} MiB before the clients, {} at the run's start, {} after the warm-up ({:.0} s), {} at the end, peak {}, {} after the drain ({} readings); drift {} (target ≤ {} %)",
            mib(rss_before),
            mib(rss_start),
            mib(rss_warm),
            warm_at,
            mib(rss_end),
            mib(rss_peak),
            mib(rss_after_drain),
            track.len(),
            drift.map_or_else(|| "?".to_owned(), |d| format!("{d:+.2} %")),
            args.max_drift_percent
        );
    } else {
        say!(out, "server RSS: unknown (not checked)");
    }
    say!(
        out,
        "queues: sent {} (each confirmed by its RECEIPT), received {}, lost {}, duplicates {}; {} NACKed, {} redelivered, {} consumer sessions dropped unacknowledged; churners acked {} and left {} unacknowledged",
        queue.confirmed,
        queue.received,
        queue.lost,
        queue.duplicates,
        consumer.nacked,
        consumer.redelivered,
        consumer.dropped_sessions,
        churn.acked,
        churn.left_unacked
    );
    say!(
        out,
        "topics: sent {topic_sent}; at the {stayed} of {} lasting subscribers that stayed: expected {expected}, received {received}, lost {topic_lost}, duplicates {duplicates}{}",
        lasting.len().max(args.lasting_subscribers()),
        if foreign > 0 {
            format!(" ({foreign} messages of other runs' topics matched `*.tN`)")
        } else {
            String::new()
        }
    );
    say!(
        out,
        "churn: {} cycles ({} topic, {} queue); own messages sent {}, lost {}; {} topic messages seen in passing",
        churn.topic_cycles + churn.queue_cycles,
        churn.topic_cycles,
        churn.queue_cycles,
        churn.own_sent,
        churn.own_lost,
        churn.topic_messages
    );
    say!(
        out,
        "drain: {drain_secs:.2} s{}",
        if drained { "" } else { " (time up)" }
    );
    for line in errors.lines() {
        say!(out, "  error: {line}");
    }

    let mut failure = Vec::new();
    if let Some(drift) = drift
        && drift > args.max_drift_percent
    {
        failure.push(format!(
            "RSS drift {drift:+.2} % over the target of {} %",
            args.max_drift_percent
        ));
    }
    if target.pid.is_some() && drift.is_none() {
        failure.push("too few RSS readings for a drift".into());
    }
    if queue.lost > 0 {
        failure.push(format!("{} confirmed queue messages lost", queue.lost));
    }
    if topic_lost > 0 {
        failure.push(format!(
            "{topic_lost} topic messages lost at subscribers that stayed"
        ));
    }
    if churn.own_lost > 0 {
        failure.push(format!("{} churn messages lost", churn.own_lost));
    }
    if consumer.unknown > 0 {
        failure.push(format!(
            "{} queue messages the bench never sent",
            consumer.unknown
        ));
    }
    if !drained {
        failure.push(format!(
            "messages still missing after the {} s drain",
            args.drain.as_secs()
        ));
    }
    if !errors.is_empty() {
        failure.push(format!("{} client errors", errors.total()));
    }
    if queue.confirmed == 0 || topic_sent == 0 {
        failure.push("no traffic".into());
    }
    if failure.is_empty() {
        say!(
            out,
            "verdict: PASS ({}, 0 lost)",
            drift.map_or_else(
                || "RSS unknown, drift not checked".to_owned(),
                |d| format!("drift {d:+.2} % within {} %", args.max_drift_percent)
            )
        );
    }
    let (ok, json) = super::verdict(out, json, &failure);
    let json = json
        .with(
            "saturation",
            saturation.map_or(Json::Null, |(rates, _)| rates.to_json()),
        )
        .with(
            "calibration_cpu",
            saturation.map_or(Json::Null, |(_, spent)| spent.report().0),
        )
        .with("planned", planned.to_json())
        .with("achieved", achieved.to_json())
        .with(
            "rss",
            Json::obj()
                .with("known", Json::Bool(target.pid.is_some()))
                .with("before_kib", Json::opt_uint(rss_before))
                .with("start_kib", Json::opt_uint(rss_start))
                .with("warm_kib", Json::opt_uint(rss_warm))
                .with("warm_at_secs", Json::Num(warm_at))
                .with("end_kib", Json::opt_uint(rss_end))
                .with("peak_kib", Json::opt_uint(rss_peak))
                .with("after_drain_kib", Json::opt_uint(rss_after_drain))
                .with("drift_percent", Json::opt_num(drift))
                .with("readings", Json::uint(track.len() as u64)),
        )
        .with(
            "queue",
            Json::obj()
                .with("sent", Json::uint(queue.confirmed))
                .with("received", Json::uint(queue.received))
                .with("lost", Json::uint(queue.lost))
                .with("duplicates", Json::uint(queue.duplicates))
                .with("unconfirmed", Json::uint(queue.unconfirmed))
                .with("acked", Json::uint(consumer.acked + churn.acked))
                .with("nacked", Json::uint(consumer.nacked))
                .with("redelivered", Json::uint(consumer.redelivered))
                .with(
                    "consumer_sessions_dropped",
                    Json::uint(consumer.dropped_sessions),
                )
                .with("churn_left_unacked", Json::uint(churn.left_unacked)),
        )
        .with(
            "topic",
            Json::obj()
                .with("sent", Json::uint(topic_sent))
                .with("lasting_subscribers", Json::uint(lasting.len() as u64))
                .with("stayed", Json::uint(stayed))
                .with("expected", Json::uint(expected))
                .with("received", Json::uint(received))
                .with("lost", Json::uint(topic_lost))
                .with("duplicates", Json::uint(duplicates)),
        )
        .with(
            "churn",
            Json::obj()
                .with(
                    "cycles",
                    Json::uint(churn.topic_cycles + churn.queue_cycles),
                )
                .with("topic_cycles", Json::uint(churn.topic_cycles))
                .with("queue_cycles", Json::uint(churn.queue_cycles))
                .with("own_sent", Json::uint(churn.own_sent))
                .with("own_lost", Json::uint(churn.own_lost)),
        )
        .with("unknown_queue_messages", Json::uint(consumer.unknown))
        .with("other_topic_messages", Json::uint(foreign))
        .with("drained", Json::Bool(drained))
        .with("drain_secs", Json::Num(drain_secs))
        .with("errors", errors.to_json())
        .with("cpu", cpu_json)
        .with("load_average_before", Json::opt_num(load_before))
        .with("load_average_after", Json::opt_num(load_after));
    Outcome { ok, json }
}
