//! Setting up the soak's clients, and the counters and pacing the
//! conductor drives them by.

use super::clients::{
    self, ChurnStats, Churner, Consumer, ConsumerStats, Gate, Producer, TopicStats, TopicSubscriber,
};
use super::ledger::{Counts, Ledger};
use super::{Rates, SoakArgs};
use crate::bench::conn::{Endpoint, subscribed};
use crate::bench::report::Errors;
use bytes::Bytes;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::sync::watch;
use tokio::task::JoinSet;
use tokio::time::Instant;

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

/// Counters the conductor reads while the clients run.
pub(super) struct Progress {
    pub(super) topics: Vec<Arc<Counts>>,
    pub(super) ledgers: Vec<Arc<Ledger>>,
    cycles: Arc<AtomicU64>,
}

/// Totals at one moment: messages written to topics, to queues, cycles.
#[derive(Debug, Clone, Copy)]
pub(super) struct Mark {
    topic: u64,
    queue: u64,
    cycles: u64,
    at: Instant,
}

impl Progress {
    pub(super) fn mark(&self) -> Mark {
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
    pub(super) fn rates_since(&self, earlier: &Mark) -> Rates {
        let secs = self.at.duration_since(earlier.at).as_secs_f64().max(1e-3);
        Rates {
            topic: self.topic.saturating_sub(earlier.topic) as f64 / secs,
            queue: self.queue.saturating_sub(earlier.queue) as f64 / secs,
            churn: self.cycles.saturating_sub(earlier.cycles) as f64 / secs,
        }
    }
}

/// The pacing the conductor changes between phases, per client.
pub(super) struct Pace {
    topic: watch::Sender<Option<f64>>,
    queue: watch::Sender<Option<f64>>,
    churn: watch::Sender<Option<f64>>,
}

impl Pace {
    pub(super) fn set(&self, rates: Rates, args: &SoakArgs) {
        let per = |rate: f64, n: usize| Some(rate / n.max(1) as f64);
        let _ = self.topic.send(per(rates.topic, args.topics));
        let _ = self.queue.send(per(rates.queue, args.queues));
        let _ = self.churn.send(per(rates.churn, args.churners));
    }
}

/// Every client task, by kind.
pub(super) struct Fleet {
    pub(super) subscribers: JoinSet<(usize, TopicStats)>,
    pub(super) producers: JoinSet<Result<(), String>>,
    pub(super) consumers: JoinSet<ConsumerStats>,
    pub(super) churners: JoinSet<ChurnStats>,
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
pub(super) struct Setup {
    pub(super) fleet: Fleet,
    pub(super) progress: Progress,
    /// Per topic: the progress of each lasting subscriber matching it.
    pub(super) gates: Vec<Vec<Arc<AtomicU64>>>,
    /// Per lasting subscriber: the topics it matches.
    pub(super) matched: Vec<Vec<usize>>,
    pub(super) pace: Pace,
    pub(super) stop: watch::Sender<bool>,
    pub(super) finish: watch::Sender<bool>,
}

/// Connects the lasting subscribers and the producers, and starts every
/// client (producers and churners at `initial` pace).
pub(super) async fn set_up(
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
pub(super) async fn join_all<T: 'static>(
    mut set: JoinSet<T>,
    limit: Instant,
    errors: &mut Errors,
) -> Vec<T> {
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
