//! The soak's figures, summary lines and verdict.

use super::clients::{ChurnStats, ConsumerStats, TopicStats};
use super::ledger::{RssTrack, Tally, drift_percent};
use super::setup::Progress;
use super::{Rates, SoakArgs};
use crate::bench::report::{CpuSpent, Errors, Json};
use crate::bench::{Out, Outcome};
use std::sync::atomic::Ordering;

/// Everything a finished soak measured, for [`conclude`].
pub(super) struct Ended {
    pub(super) server_pid: Option<u32>,
    pub(super) saturation: Option<(Rates, CpuSpent)>,
    pub(super) planned: Rates,
    pub(super) achieved: Rates,
    pub(super) run_cpu: CpuSpent,
    pub(super) load_before: Option<f64>,
    pub(super) load_after: Option<f64>,
    pub(super) rss_before: Option<u64>,
    pub(super) rss_start: Option<u64>,
    pub(super) rss_after_drain: Option<u64>,
    pub(super) track: RssTrack,
    pub(super) progress: Progress,
    pub(super) matched: Vec<Vec<usize>>,
    pub(super) lasting: Vec<(usize, TopicStats)>,
    pub(super) consumed: Vec<ConsumerStats>,
    pub(super) churned: Vec<ChurnStats>,
    pub(super) errors: Errors,
    pub(super) drained: bool,
    pub(super) drain_secs: f64,
}

/// Adds up what the clients saw, prints the summary and the verdict.
pub(super) fn conclude(out: Out, json: Json, args: &SoakArgs, ended: Ended) -> Outcome {
    let Ended {
        server_pid,
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
        mut errors,
        drained,
        drain_secs,
    } = ended;
    let (cpu_json, cpu_line) = run_cpu.report();
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
    if server_pid.is_some() {
        say!(
            out,
            "server RSS: {} MiB before the clients, {} at the run's start, {} after the warm-up ({:.1} s), {} at the end, peak {}, {} after the drain ({} readings); drift {} (target ≤ {} %)",
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
        "queues: sent {} (each confirmed by its RECEIPT{}), received {}, lost {}, duplicates {}; {} NACKed, {} redelivered, {} consumer sessions dropped unacknowledged; churners acked {} and left {} unacknowledged",
        queue.confirmed,
        if queue.unconfirmed > 0 {
            format!("; {} more written but never confirmed", queue.unconfirmed)
        } else {
            String::new()
        },
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
    if server_pid.is_some() && drift.is_none() {
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
    let (ok, json) = crate::bench::verdict(out, json, &failure);
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
                .with("known", Json::Bool(server_pid.is_some()))
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

/// The machine's 1-minute load average: on a shared machine, the other
/// work that ran alongside explains a slower calibration.
pub(super) fn load_average() -> Option<f64> {
    std::fs::read_to_string("/proc/loadavg")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

/// CPU seconds per wall second, for the human-readable lines.
pub(super) fn cores(cpu_secs: Option<f64>, wall_secs: f64) -> String {
    cpu_secs
        .filter(|_| wall_secs > 0.0)
        .map_or_else(|| "?".to_owned(), |cpu| format!("{:.2}", cpu / wall_secs))
}

pub(super) fn mib(kib: Option<u64>) -> String {
    kib.map_or_else(
        || "?".to_owned(),
        |kib| format!("{:.1}", kib as f64 / 1024.0),
    )
}
