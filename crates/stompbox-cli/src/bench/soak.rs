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
mod setup;
mod summary;

use super::report::{CpuMark, Errors, Json, random_u64, rss_kib};
use super::{Out, Outcome, Target, TargetArgs, failed};
use ledger::{RssTrack, parse_duration};
use setup::{Fleet, Setup, join_all, set_up};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use summary::{Ended, cores, load_average, mib};
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

    summary::conclude(
        out,
        json,
        args,
        Ended {
            server_pid: target.pid,
            saturation,
            planned,
            achieved,
            run_cpu,
            load_before,
            load_after,
            rss_before,
            rss_start,
            rss_after_drain,
            track,
            progress,
            matched,
            lasting,
            consumed,
            churned,
            errors,
            drained,
            drain_secs,
        },
    )
}
