//! `stompbox bench memory`: the memory attacks, each against a server with
//! small caps, and how far the server's resident memory grows against them.
//!
//! Each attack sends frames shaped to cost more memory than their size says,
//! or holds messages without acknowledging them, until the server refuses
//! (or cuts the attacker off), or until it has sent four times the cap's
//! worth, so a server without the cap is measured too. The figure is the
//! server's peak RSS (VmHWM) during the attack less its RSS before, against
//! the cap the attack aims at plus a stated allowance for everything outside
//! the caps (connections, allocator slack).

use super::conn::{Conn, Endpoint, unexpected};
use super::report::{Json, random_u64, rss_kib};
use super::{Out, Outcome, Spawn, Target, TargetArgs};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use stompbox_codec::{Command, Frame, header};
use tokio::task::JoinSet;
use tokio::time::Instant;

const MIB: u64 = 1024 * 1024;

/// The attacks, each on a freshly spawned server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Attack {
    /// Queued SENDs of 62 empty headers each (≈200 bytes on the wire, over
    /// 4 KB in memory), from every connection to a queue of its own, until
    /// broker.max_total_queue_bytes refuses them.
    Headers,
    /// Connections with 30 client-individual queue subscriptions each that
    /// read but never acknowledge, while a publisher fills their queues
    /// with 16 KiB messages.
    QueueUnacked,
    /// The same with topic subscriptions: the hogs are cut off at
    /// broker.max_session_unacked_bytes or
    /// broker.max_total_topic_unacked_bytes.
    TopicUnacked,
    /// Connections filling open transactions with SENDs of 62 empty
    /// headers until limits.transaction_bytes or
    /// limits.total_transaction_bytes refuses them.
    Transactions,
}

impl Attack {
    fn name(self) -> &'static str {
        match self {
            Attack::Headers => "headers",
            Attack::QueueUnacked => "queue-unacked",
            Attack::TopicUnacked => "topic-unacked",
            Attack::Transactions => "transactions",
        }
    }
}

/// Flags of `stompbox bench memory`.
#[derive(Debug, clap::Args)]
pub(crate) struct MemoryArgs {
    #[command(flatten)]
    target: TargetArgs,
    /// Attacks to run (repeatable); all by default. With --spawn each gets a
    /// server of its own.
    #[arg(long = "attack", value_enum)]
    attacks: Vec<Attack>,
    /// broker.max_total_queue_bytes of the spawned server, in MiB (with
    /// --url: the server's own setting, which the bench cannot read).
    #[arg(long, default_value_t = 32)]
    queue_mib: u64,
    /// broker.max_session_unacked_bytes of the spawned server, in MiB.
    #[arg(long, default_value_t = 2)]
    session_unacked_mib: u64,
    /// broker.max_total_topic_unacked_bytes of the spawned server, in MiB.
    #[arg(long, default_value_t = 16)]
    topic_unacked_mib: u64,
    /// limits.total_transaction_bytes of the spawned server, in MiB (each
    /// session keeps the default limits.transaction_bytes of 1 MiB).
    #[arg(long, default_value_t = 16)]
    transaction_mib: u64,
    /// Attacking connections per attack.
    #[arg(long, default_value_t = 32)]
    connections: usize,
    /// Memory the server may use beyond the cap under attack, in MiB: the
    /// connections' buffers and the allocator's slack. The README states
    /// what it is made of.
    #[arg(long, default_value_t = 16)]
    overhead_mib: u64,
}

pub(crate) async fn run(mut args: MemoryArgs) -> Result<(), String> {
    if args.attacks.is_empty() {
        args.attacks = vec![
            Attack::Headers,
            Attack::QueueUnacked,
            Attack::TopicUnacked,
            Attack::Transactions,
        ];
    }
    if args.connections == 0 {
        return Err("bench memory: --connections must be > 0".into());
    }
    let params = Json::obj()
        .with("queue_mib", Json::uint(args.queue_mib))
        .with("session_unacked_mib", Json::uint(args.session_unacked_mib))
        .with("topic_unacked_mib", Json::uint(args.topic_unacked_mib))
        .with("transaction_mib", Json::uint(args.transaction_mib))
        .with("connections", Json::uint(args.connections as u64))
        .with("overhead_mib", Json::uint(args.overhead_mib));
    let caps = [
        format!("broker.max_total_queue_bytes={}", args.queue_mib * MIB),
        format!(
            "broker.max_session_unacked_bytes={}",
            args.session_unacked_mib * MIB
        ),
        format!(
            "broker.max_total_topic_unacked_bytes={}",
            args.topic_unacked_mib * MIB
        ),
        format!(
            "limits.total_transaction_bytes={}",
            args.transaction_mib * MIB
        ),
        // Every attacker's queue may fill up to the server-wide cap.
        "broker.queue_max_messages=10000000".to_owned(),
        format!("broker.queue_max_bytes={}", args.queue_mib * MIB),
    ];
    let spawns: Vec<Spawn> = args
        .attacks
        .iter()
        .map(|attack| Spawn {
            variant: attack.name().to_owned(),
            args: caps
                .iter()
                .flat_map(|cap| ["--set".to_owned(), cap.clone()])
                .collect(),
            instances: 1,
        })
        .collect();
    let args = Arc::new(args);
    let common = args.target.clone();
    super::run_targets_with(
        "memory",
        &["serve"],
        &common,
        params,
        &spawns,
        |_, _| None,
        |target, out| {
            let args = Arc::clone(&args);
            async move {
                // A spawned server runs its own attack; a --url server runs
                // them all, one after the other.
                let attacks = match target.spawn {
                    Some(index) => vec![args.attacks[index]],
                    None => args.attacks.clone(),
                };
                measure(target, &args, &attacks, out).await
            }
        },
    )
    .await
}

/// Peak resident set size of `pid` in KiB (VmHWM of /proc/PID/status).
fn peak_rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|line| line.starts_with("VmHWM:"))?;
    line["VmHWM:".len()..]
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

async fn measure(target: Target, args: &MemoryArgs, attacks: &[Attack], out: Out) -> Outcome {
    let mut json = Json::obj()
        .with("target", Json::str(target.label.as_str()))
        .with("url", Json::str(target.url.as_str()))
        .with("server_pid", Json::opt_uint(target.pid.map(u64::from)));
    let endpoint = match Endpoint::resolve(
        &target.url,
        &args.target.vhost,
        args.target.login.as_deref(),
        args.target.passcode.as_deref(),
    )
    .await
    {
        Ok(endpoint) => endpoint,
        Err(e) => return super::failed(out, json, e),
    };
    let deadline = Instant::now() + Duration::from_secs(args.target.duration_secs);
    let mut failures = Vec::new();
    let mut results = Vec::new();
    for &attack in attacks {
        let (figures, failure) = match tokio::time::timeout_at(
            deadline,
            run_attack(attack, &endpoint, &target, args, out),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => (
                Json::obj().with("attack", Json::str(attack.name())),
                vec![format!(
                    "{}: not done within --duration-secs",
                    attack.name()
                )],
            ),
        };
        failures.extend(failure);
        results.push(figures);
    }
    json = json.with("attacks", Json::Arr(results));
    let (ok, json) = super::verdict(out, json, &failures);
    Outcome { ok, json }
}

/// What one attack did, as the attackers saw it.
#[derive(Debug, Default)]
struct Tally {
    /// Frames the server accepted (RECEIPTs) or messages it delivered.
    accepted: AtomicU64,
    /// Connections refused with an ERROR or cut off.
    refused: AtomicU64,
    /// The first refusal's message.
    refusal: std::sync::Mutex<Option<String>>,
    /// Errors that are not a refusal.
    errors: std::sync::Mutex<Vec<String>>,
}

impl Tally {
    fn refuse(&self, message: String) {
        self.refused.fetch_add(1, Ordering::Relaxed);
        let mut refusal = self.refusal.lock().unwrap_or_else(|e| e.into_inner());
        refusal.get_or_insert(message);
    }

    fn error(&self, e: String) {
        self.errors
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(e);
    }
}

async fn run_attack(
    attack: Attack,
    endpoint: &Arc<Endpoint>,
    target: &Target,
    args: &MemoryArgs,
    out: Out,
) -> (Json, Vec<String>) {
    let (cap_name, cap_mib) = match attack {
        Attack::Headers | Attack::QueueUnacked => ("broker.max_total_queue_bytes", args.queue_mib),
        Attack::TopicUnacked => (
            "broker.max_total_topic_unacked_bytes",
            args.topic_unacked_mib,
        ),
        Attack::Transactions => ("limits.total_transaction_bytes", args.transaction_mib),
    };
    say!(
        out,
        "\n== memory attack {} on {}: {} connections against {cap_name} = {cap_mib} MiB",
        attack.name(),
        target.label,
        args.connections
    );
    let before = target.pid.and_then(rss_kib);
    let started = Instant::now();
    let tally = Arc::new(Tally::default());
    // Each attack sends at most four times the cap's worth, so a server
    // without the cap is measured rather than run out of memory.
    let budget = cap_mib * MIB * 4;
    match attack {
        Attack::Headers => headers(endpoint, args, budget, &tally).await,
        Attack::QueueUnacked => queue_unacked(endpoint, args, budget, &tally).await,
        Attack::TopicUnacked => topic_unacked(endpoint, args, budget, &tally).await,
        Attack::Transactions => transactions(endpoint, args, budget, &tally).await,
    }
    let peak = target.pid.and_then(peak_rss_kib);
    let growth_mib = match (before, peak) {
        (Some(before), Some(peak)) => Some(peak.saturating_sub(before) as f64 / 1024.0),
        _ => None,
    };
    let bound_mib = cap_mib + args.overhead_mib;
    let accepted = tally.accepted.load(Ordering::Relaxed);
    let refused = tally.refused.load(Ordering::Relaxed);
    let refusal = tally
        .refusal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let errors = std::mem::take(&mut *tally.errors.lock().unwrap_or_else(|e| e.into_inner()));
    say!(
        out,
        "  {accepted} accepted, {refused} connections refused or cut off, {:.1} s",
        started.elapsed().as_secs_f64()
    );
    if let Some(refusal) = &refusal {
        say!(out, "  refusal: {refusal}");
    }
    if let Some(growth) = growth_mib {
        say!(
            out,
            "  server RSS growth (peak less before): {growth:.1} MiB against {cap_mib} MiB cap + \
             {} MiB overhead = {bound_mib} MiB ({:.0} % of the bound)",
            args.overhead_mib,
            growth / bound_mib as f64 * 100.0
        );
    }
    let mut failure = Vec::new();
    if let Some(growth) = growth_mib
        && growth > bound_mib as f64
    {
        failure.push(format!(
            "{}: RSS grew {growth:.1} MiB, more than {cap_name} ({cap_mib} MiB) + {} MiB",
            attack.name(),
            args.overhead_mib
        ));
    }
    if refused == 0 {
        failure.push(format!(
            "{}: no attacker was refused or cut off within {} MiB sent",
            attack.name(),
            budget / MIB
        ));
    }
    for e in errors.iter().take(3) {
        failure.push(format!("{}: {e}", attack.name()));
    }
    let figures = Json::obj()
        .with("attack", Json::str(attack.name()))
        .with("cap", Json::str(cap_name))
        .with("cap_mib", Json::uint(cap_mib))
        .with("overhead_mib", Json::uint(args.overhead_mib))
        .with("rss_before_kib", Json::opt_uint(before))
        .with("rss_peak_kib", Json::opt_uint(peak))
        .with("rss_growth_mib", Json::opt_num(growth_mib))
        .with("accepted", Json::uint(accepted))
        .with("refused", Json::uint(refused))
        .with("refusal", Json::opt_str(refusal.as_deref()))
        .with("errors", Json::uint(errors.len() as u64))
        .with("secs", Json::opt_num(Some(started.elapsed().as_secs_f64())));
    (figures, failure)
}

/// A SEND of `n` empty headers: about 200 bytes on the wire for 62, over
/// 4 KB held. With `receipt` (and `transaction`) it must stay within the
/// 64 headers a frame may have.
fn many_headers(destination: &str, n: usize) -> Frame {
    let mut frame = Frame::new(Command::Send).header(header::DESTINATION, destination);
    for _ in 0..n {
        frame = frame.header("a", "");
    }
    frame
}

/// What a held message of `frame` costs at least: its header entries.
fn header_entries(frame: &Frame) -> u64 {
    frame.headers.len() as u64 * 64
}

/// Sends `frame` in batches of 100, each closed by a receipt, until the
/// server refuses one (an ERROR) or `most` frames went out. Counts accepted
/// frames in `tally`.
async fn flood(conn: &mut Conn, frame: &Frame, most: u64, tally: &Tally) -> Result<(), String> {
    let mut sent = 0;
    while sent < most {
        let batch = (most - sent).min(100);
        for i in 0..batch {
            if i + 1 == batch {
                conn.feed(&frame.clone().header(header::RECEIPT, "batch"))
                    .await?;
            } else {
                conn.feed(frame).await?;
            }
        }
        conn.flush().await?;
        sent += batch;
        match conn.next_frame().await? {
            Some(reply) if reply.command == Command::Receipt => {
                tally.accepted.fetch_add(batch, Ordering::Relaxed);
            }
            Some(reply) if reply.command == Command::Error => {
                tally.refuse(reply.headers.get(header::MESSAGE).unwrap_or("").to_owned());
                return Ok(());
            }
            Some(reply) => return Err(unexpected(&reply, "RECEIPT")),
            None => {
                tally.refuse(format!("closed ({})", conn.close_reason()));
                return Ok(());
            }
        }
    }
    Ok(())
}

async fn headers(endpoint: &Arc<Endpoint>, args: &MemoryArgs, budget: u64, tally: &Arc<Tally>) {
    let run = random_u64();
    let per_connection = budget / args.connections as u64;
    let mut attackers = JoinSet::new();
    for i in 0..args.connections {
        let endpoint = Arc::clone(endpoint);
        let tally = Arc::clone(tally);
        attackers.spawn(async move {
            let frame = many_headers(&format!("/queue/bench-memory-{run:016x}-{i}"), 62);
            let most = per_connection / header_entries(&frame);
            let result = async {
                let mut conn = endpoint.connect(None, None).await?;
                flood(&mut conn, &frame, most, &tally).await
            }
            .await;
            if let Err(e) = result {
                tally.error(e);
            }
        });
    }
    while attackers.join_next().await.is_some() {}
}

/// Subscribes `conn` 30 times with `destination(i)`, client-individual,
/// waiting for the last SUBSCRIBE's receipt.
async fn subscribe_30(
    conn: &mut Conn,
    destination: impl Fn(usize) -> String,
) -> Result<(), String> {
    for i in 0..30 {
        let mut subscribe = Frame::new(Command::Subscribe)
            .header(header::ID, &i.to_string())
            .header(header::DESTINATION, &destination(i))
            .header(header::ACK, "client-individual");
        if i == 29 {
            subscribe = subscribe.header(header::RECEIPT, "subscribed");
        }
        conn.feed(&subscribe).await?;
    }
    conn.flush().await?;
    conn.expect_receipt("subscribed").await
}

/// Reads everything `conn` is sent and never acknowledges it; ends when the
/// server cuts it off (counted as refused) or `stop` is raised.
async fn hog(mut conn: Conn, tally: Arc<Tally>, mut stop: tokio::sync::watch::Receiver<bool>) {
    loop {
        tokio::select! {
            frame = conn.next_frame() => match frame {
                Ok(Some(frame)) if frame.command == Command::Message => {
                    tally.accepted.fetch_add(1, Ordering::Relaxed);
                }
                Ok(Some(frame)) if frame.command == Command::Error => {
                    tally.refuse(frame.headers.get(header::MESSAGE).unwrap_or("").to_owned());
                    return;
                }
                Ok(Some(frame)) => {
                    tally.error(unexpected(&frame, "MESSAGE"));
                    return;
                }
                Ok(None) | Err(_) => {
                    tally.refuse(format!("cut off ({})", conn.close_reason()));
                    return;
                }
            },
            () = super::stopped(&mut stop) => {
                conn.close().await;
                return;
            }
        }
    }
}

/// 16 KiB messages from one publisher to `destinations` in turn, until the
/// server refuses one or `budget` bytes went out.
async fn publish_16k(
    endpoint: &Endpoint,
    destinations: &[String],
    budget: u64,
    tally: &Tally,
) -> Result<(), String> {
    let mut conn = endpoint.connect(None, None).await?;
    let body = bytes::Bytes::from(vec![b'x'; 16 * 1024]);
    let most = budget / body.len() as u64;
    let mut sent = 0u64;
    while sent < most {
        for _ in 0..50 {
            let destination = &destinations[(sent % destinations.len() as u64) as usize];
            let frame = Frame::new(Command::Send)
                .header(header::DESTINATION, destination)
                .body(body.clone());
            conn.feed(&frame).await?;
            sent += 1;
        }
        let marker = Frame::new(Command::Send)
            .header(header::DESTINATION, &destinations[0])
            .header(header::RECEIPT, "batch");
        conn.feed(&marker).await?;
        conn.flush().await?;
        match conn.next_frame().await? {
            Some(reply) if reply.command == Command::Receipt => {}
            Some(reply) if reply.command == Command::Error => {
                tally.refuse(format!(
                    "publisher: {}",
                    reply.headers.get(header::MESSAGE).unwrap_or("")
                ));
                return Ok(());
            }
            Some(reply) => return Err(unexpected(&reply, "RECEIPT")),
            None => return Err(format!("publisher closed ({})", conn.close_reason())),
        }
    }
    Ok(())
}

async fn unacked(
    endpoint: &Arc<Endpoint>,
    args: &MemoryArgs,
    budget: u64,
    tally: &Arc<Tally>,
    kind: &str,
) {
    let run = random_u64();
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let mut hogs = JoinSet::new();
    let mut destinations = Vec::new();
    for c in 0..args.connections {
        let destination = move |i: usize| format!("/{kind}/bench-memory-{run:016x}-{c}-{i}");
        destinations.extend((0..30).map(destination));
        let conn = async {
            let mut conn = endpoint.connect(None, None).await?;
            subscribe_30(&mut conn, destination).await?;
            Ok::<Conn, String>(conn)
        }
        .await;
        match conn {
            Ok(conn) => {
                hogs.spawn(hog(conn, Arc::clone(tally), stop_rx.clone()));
            }
            Err(e) => tally.error(e),
        }
    }
    if let Err(e) = publish_16k(endpoint, &destinations, budget, tally).await {
        tally.error(e);
    }
    let _ = stop_tx.send(true);
    while hogs.join_next().await.is_some() {}
}

async fn queue_unacked(
    endpoint: &Arc<Endpoint>,
    args: &MemoryArgs,
    budget: u64,
    tally: &Arc<Tally>,
) {
    unacked(endpoint, args, budget, tally, "queue").await;
}

async fn topic_unacked(
    endpoint: &Arc<Endpoint>,
    args: &MemoryArgs,
    budget: u64,
    tally: &Arc<Tally>,
) {
    unacked(endpoint, args, budget, tally, "topic").await;
}

async fn transactions(
    endpoint: &Arc<Endpoint>,
    args: &MemoryArgs,
    budget: u64,
    tally: &Arc<Tally>,
) {
    let run = random_u64();
    // Each connection stays under the default per-session cap
    // (limits.transaction_bytes, 1 MiB, which would refuse and close it):
    // together they press on the server-wide one.
    let per_connection = (budget / args.connections as u64).min(3 * MIB / 4);
    let mut attackers = JoinSet::new();
    for i in 0..args.connections {
        let endpoint = Arc::clone(endpoint);
        let tally = Arc::clone(tally);
        attackers.spawn(async move {
            let frame = many_headers(&format!("/topic/bench-memory-{run:016x}-{i}"), 61)
                .header(header::TRANSACTION, "t");
            let most = per_connection / header_entries(&frame);
            let result = async {
                let mut conn = endpoint.connect(None, None).await?;
                conn.send(
                    &Frame::new(Command::Begin)
                        .header(header::TRANSACTION, "t")
                        .header(header::RECEIPT, "begun"),
                )
                .await?;
                conn.expect_receipt("begun").await?;
                flood(&mut conn, &frame, most, &tally).await?;
                // Held open, with what it buffered, until every attacker
                // is done: the peak is all of them at once.
                Ok::<Conn, String>(conn)
            }
            .await;
            match result {
                Ok(conn) => Some(conn),
                Err(e) => {
                    tally.error(e);
                    None
                }
            }
        });
    }
    let mut held = Vec::new();
    while let Some(done) = attackers.join_next().await {
        if let Ok(Some(conn)) = done {
            held.push(conn);
        }
    }
    for conn in held {
        conn.close().await;
    }
}
