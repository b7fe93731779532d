//! `--floor` of `bench roundtrip` and `bench fanout`: what the same traffic
//! costs this machine over bare TCP, measured in the same run.
//!
//! Round trips: the same number of clients, each with the same requests in
//! flight, send messages of the request's size to an echo server (this
//! executable's hidden `bench serve-tcp-echo`: a tokio runtime like
//! stompbox's, one task per connection writing back what it reads). Its CPU
//! per round trip is what one `recv` and one `send` per request cost here
//! (on loopback the send also runs the client's TCP receive), with no
//! WebSocket, STOMP, routing or handler.
//!
//! Fan-out at a fixed rate: one publisher and the same subscribers, over a
//! relay that writes each message to every subscriber (`bench
//! serve-tcp-fanout`: a task per subscriber fed by a broadcast channel, the
//! shape of stompbox's fan-out without any STOMP work). Its latency is what
//! a message's trip through one tokio server costs here, wake-ups and one
//! write per subscriber included.

use super::report::{CpuMark, Histogram, Json};
use super::server::SpawnedServer;
use super::{Out, micros, since};
use bytes::Bytes;
use std::time::Duration;
use stompbox_codec::{Frame, Version, encode_frame};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{broadcast, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Flags of `stompbox bench serve-tcp-echo`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeTcpEchoArgs {
    /// Listen address (the flag is named like `serve`'s, which the bench's
    /// spawner passes).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    http: String,
}

/// Listens on `address` and prints the listening line the bench's spawner
/// waits for.
async fn listen(what: &str, address: &str) -> Result<TcpListener, String> {
    let listener = TcpListener::bind(address)
        .await
        .map_err(|e| format!("bench {what}: cannot listen on {address}: {e}"))?;
    let bound = listener
        .local_addr()
        .map_err(|e| format!("bench {what}: {e}"))?;
    println!("stompbox listening http={bound}");
    Ok(listener)
}

/// The next connection, with Nagle off. Accept errors (out of file
/// descriptors, a reset before accept) are skipped: the bench's clients
/// report what they miss.
async fn accept(listener: &TcpListener) -> TcpStream {
    loop {
        if let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            return stream;
        }
    }
}

/// Runs the echo server until killed.
pub(crate) async fn serve(args: ServeTcpEchoArgs) -> Result<(), String> {
    let listener = listen("serve-tcp-echo", &args.http).await?;
    loop {
        let mut stream = accept(&listener).await;
        tokio::spawn(async move {
            let mut buf = vec![0u8; 4096];
            loop {
                let n = match stream.read(&mut buf).await {
                    Ok(0) | Err(_) => break,
                    Ok(n) => n,
                };
                if stream.write_all(&buf[..n]).await.is_err() {
                    break;
                }
            }
        });
    }
}

/// Flags of `stompbox bench serve-tcp-fanout`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeTcpFanoutArgs {
    /// Listen address.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:0")]
    http: String,
}

/// Messages a subscriber may fall behind before the relay drops it.
const FANOUT_QUEUE: usize = 1024;

/// The largest message the relay takes: with [`FANOUT_QUEUE`] of them held,
/// at most 64 MiB.
const MAX_FANOUT_MESSAGE: usize = 64 * 1024;

/// Runs the fan-out relay until killed. A connection's first byte says what
/// it is: `S`, a subscriber (answered with `K` once it receives), or `P`, a
/// publisher (then a little-endian `u32` message size, at most 64 KiB, then messages of
/// that size, each written to every subscriber).
pub(crate) async fn serve_fanout(args: ServeTcpFanoutArgs) -> Result<(), String> {
    let listener = listen("serve-tcp-fanout", &args.http).await?;
    let (messages, _) = broadcast::channel::<Bytes>(FANOUT_QUEUE);
    loop {
        let mut stream = accept(&listener).await;
        let messages = messages.clone();
        tokio::spawn(async move {
            let mut role = [0u8; 1];
            if stream.read_exact(&mut role).await.is_err() {
                return;
            }
            match role[0] {
                b'S' => {
                    let mut receiver = messages.subscribe();
                    if stream.write_all(b"K").await.is_err() {
                        return;
                    }
                    // Lagging behind or the relay ending closes the
                    // connection: the bench counts what is missing.
                    while let Ok(message) = receiver.recv().await {
                        if stream.write_all(&message).await.is_err() {
                            return;
                        }
                    }
                }
                b'P' => {
                    let mut size = [0u8; 4];
                    if stream.read_exact(&mut size).await.is_err() {
                        return;
                    }
                    let size = u32::from_le_bytes(size) as usize;
                    if size > MAX_FANOUT_MESSAGE {
                        return;
                    }
                    loop {
                        let mut message = vec![0u8; size];
                        if stream.read_exact(&mut message).await.is_err() {
                            return;
                        }
                        let _ = messages.send(Bytes::from(message));
                    }
                }
                _ => {}
            }
        });
    }
}

/// What to measure: `clients` connections with `in_flight` messages of
/// `size` bytes each outstanding, `secs` counted after `warmup_secs`.
pub(crate) struct FloorPlan {
    pub(crate) clients: usize,
    pub(crate) in_flight: usize,
    pub(crate) size: usize,
    pub(crate) warmup_secs: u64,
    pub(crate) secs: u64,
}

/// Spawns the echo server, measures, stops it. The figures, or why not.
pub(crate) async fn measure(plan: &FloorPlan, out: Out) -> Result<Json, String> {
    say!(
        out,
        "\n== floor: bare TCP echo, {} clients × {} in flight, {} bytes",
        plan.clients,
        plan.in_flight,
        plan.size
    );
    let server = SpawnedServer::start(None, &["bench", "serve-tcp-echo"], &[], false).await?;
    let address = address_of(&server)?;
    let pid = server.pid();
    let mut streams = Vec::with_capacity(plan.clients);
    for _ in 0..plan.clients {
        streams.push(connect(&address).await?);
    }
    let start = Instant::now();
    let window_start = start + Duration::from_secs(plan.warmup_secs);
    let window_end = window_start + Duration::from_secs(plan.secs);
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for stream in streams {
        tasks.spawn(client(
            stream,
            plan.size,
            plan.in_flight,
            (window_start, window_end),
            stop_rx.clone(),
        ));
    }
    tokio::time::sleep_until(window_start).await;
    let cpu = CpuMark::now(Some(pid));
    tokio::time::sleep_until(window_end).await;
    let spent = cpu.spent(Some(pid));
    let _ = stop_tx.send(true);
    let mut counted = 0u64;
    let mut errors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(n)) => counted += n,
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("client task panicked".to_owned()),
        }
    }
    server.stop();
    if let Some(first) = errors.first() {
        return Err(format!(
            "floor: {} client errors, first: {first}",
            errors.len()
        ));
    }
    if counted == 0 {
        return Err("floor: no round trip completed".into());
    }
    let wall = spent.wall;
    let per_sec = counted as f64 / wall;
    let per_round_trip = |secs: Option<f64>| secs.map(|s| s * 1e6 / counted as f64);
    let server_us = per_round_trip(spent.server);
    let bench_us = per_round_trip(spent.bench);
    let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    say!(
        out,
        "floor: {per_sec:.0} round trips/s; echo server {} µs, bench {} µs of CPU per round trip",
        show(server_us),
        show(bench_us)
    );
    Ok(Json::obj()
        .with("size", Json::uint(plan.size as u64))
        .with("round_trips", Json::uint(counted))
        .with("wall_secs", Json::Num(wall))
        .with("round_trips_per_sec", Json::Num(per_sec))
        .with("server_cpu_us_per_round_trip", Json::opt_num(server_us))
        .with("bench_cpu_us_per_round_trip", Json::opt_num(bench_us)))
}

/// One client: keeps `in_flight` messages outstanding and counts the echoes
/// that complete inside the window, until told to stop.
async fn client(
    mut stream: TcpStream,
    size: usize,
    in_flight: usize,
    (window_start, window_end): (Instant, Instant),
    mut stop: watch::Receiver<bool>,
) -> Result<u64, String> {
    let message = vec![b'x'; size];
    let mut reply = vec![0u8; size];
    for _ in 0..in_flight {
        stream
            .write_all(&message)
            .await
            .map_err(|e| format!("write: {e}"))?;
    }
    let mut counted = 0u64;
    loop {
        tokio::select! {
            biased;
            _ = stop.changed() => return Ok(counted),
            read = stream.read_exact(&mut reply) => {
                read.map_err(|e| format!("read: {e}"))?;
            }
        }
        let now = Instant::now();
        if now >= window_start && now < window_end {
            counted += 1;
        }
        stream
            .write_all(&message)
            .await
            .map_err(|e| format!("write: {e}"))?;
    }
}

/// A fan-out floor: `subscribers` connections, `messages` of `size` bytes
/// published at `rate` per second.
pub(crate) struct FanoutFloorPlan {
    pub(crate) subscribers: usize,
    pub(crate) messages: u64,
    pub(crate) rate: u64,
    pub(crate) size: usize,
}

/// Spawns the fan-out relay, publishes through it at the plan's rate, stops
/// it. Latency from publish to receipt, and the relay's CPU per delivery.
pub(crate) async fn measure_fanout(plan: &FanoutFloorPlan, out: Out) -> Result<Json, String> {
    // A message carries its publishing time.
    let size = plan.size.max(8);
    if size > MAX_FANOUT_MESSAGE {
        return Err(format!(
            "floor: messages of {size} bytes; the relay takes at most {MAX_FANOUT_MESSAGE}"
        ));
    }
    say!(
        out,
        "\n== floor: bare TCP fan-out, 1 publisher at {} msg/s → {} subscribers, {} messages of {size} bytes",
        plan.rate,
        plan.subscribers,
        plan.messages
    );
    let server = SpawnedServer::start(None, &["bench", "serve-tcp-fanout"], &[], false).await?;
    let address = address_of(&server)?;
    let pid = server.pid();
    let epoch = Instant::now();
    // The slowest a message may be before the floor is called failed.
    let deadline = epoch
        + Duration::from_secs_f64(plan.messages as f64 / plan.rate as f64)
        + Duration::from_secs(30);
    let mut tasks = JoinSet::new();
    for _ in 0..plan.subscribers {
        let mut stream = connect(&address).await?;
        stream
            .write_all(b"S")
            .await
            .map_err(|e| format!("floor: subscribe: {e}"))?;
        let mut ok = [0u8; 1];
        stream
            .read_exact(&mut ok)
            .await
            .map_err(|e| format!("floor: subscribe: {e}"))?;
        let messages = plan.messages;
        tasks.spawn(async move {
            let mut latency = Histogram::default();
            let mut message = vec![0u8; size];
            for _ in 0..messages {
                match tokio::time::timeout_at(deadline, stream.read_exact(&mut message)).await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => return Err(format!("read: {e}")),
                    Err(_) => return Err("messages missing at the deadline".to_owned()),
                }
                let mut ts = [0u8; 8];
                ts.copy_from_slice(&message[..8]);
                latency.record(micros(since(epoch)).saturating_sub(u64::from_le_bytes(ts)));
            }
            Ok(latency)
        });
    }
    let mut publisher = connect(&address).await?;
    let mut hello = vec![b'P'];
    hello.extend_from_slice(&u32::try_from(size).unwrap_or(u32::MAX).to_le_bytes());
    publisher
        .write_all(&hello)
        .await
        .map_err(|e| format!("floor: publish: {e}"))?;
    let cpu = CpuMark::now(Some(pid));
    let start = Instant::now();
    let mut message = vec![b'x'; size];
    for seq in 0..plan.messages {
        let at = start + Duration::from_secs_f64(seq as f64 / plan.rate as f64);
        tokio::time::sleep_until(at).await;
        message[..8].copy_from_slice(&micros(since(epoch)).to_le_bytes());
        publisher
            .write_all(&message)
            .await
            .map_err(|e| format!("floor: publish: {e}"))?;
    }
    let mut latency = Histogram::default();
    let mut errors = Vec::new();
    while let Some(joined) = tasks.join_next().await {
        match joined {
            Ok(Ok(h)) => latency.merge(&h),
            Ok(Err(e)) => errors.push(e),
            Err(_) => errors.push("subscriber task panicked".to_owned()),
        }
    }
    let spent = cpu.spent(Some(pid));
    server.stop();
    if let Some(first) = errors.first() {
        return Err(format!(
            "floor: {} subscribers failed, first: {first}",
            errors.len()
        ));
    }
    let deliveries = plan.messages * plan.subscribers as u64;
    let server_us = spent
        .server
        .filter(|_| deliveries > 0)
        .map(|secs| secs * 1e6 / deliveries as f64);
    let show = |v: Option<f64>| v.map_or_else(|| "-".to_owned(), |v| format!("{v:.2}"));
    say!(
        out,
        "floor: latency (publish → receive) {}; relay {} µs of CPU per delivery",
        latency.summary_ms(),
        show(server_us)
    );
    Ok(Json::obj()
        .with("size", Json::uint(size as u64))
        .with("deliveries", Json::uint(deliveries))
        .with("latency", latency.to_json_ms())
        .with("server_cpu_us_per_delivery", Json::opt_num(server_us)))
}

/// Bytes `frame` occupies on the wire as STOMP 1.2 in a WebSocket frame,
/// `masked` as a client's are: the floor's messages are that size.
pub(crate) fn on_the_wire(frame: &Frame, masked: bool) -> usize {
    let mut encoded = bytes::BytesMut::new();
    encode_frame(frame, Version::V1_2, &mut encoded);
    let payload = encoded.len();
    let length_field = match payload {
        0..=125 => 0,
        126..=65_535 => 2,
        _ => 8,
    };
    let mask = if masked { 4 } else { 0 };
    payload + 2 + length_field + mask
}

/// A run's `comparison` with the floor, when one was measured, under
/// `floor` as `against` presents it beside the targets' figures.
pub(crate) fn add_to(
    comparison: Option<Json>,
    floor: Option<Json>,
    against: impl FnOnce(Json) -> Json,
) -> Option<Json> {
    match floor {
        None => comparison,
        Some(floor) => Some(
            comparison
                .unwrap_or_else(Json::obj)
                .with("floor", against(floor)),
        ),
    }
}

/// A client connection to a floor server, with Nagle off as the server's.
async fn connect(address: &str) -> Result<TcpStream, String> {
    let stream = TcpStream::connect(address)
        .await
        .map_err(|e| format!("floor: cannot connect to {address}: {e}"))?;
    stream
        .set_nodelay(true)
        .map_err(|e| format!("floor: {e}"))?;
    Ok(stream)
}

/// The `host:port` a spawned floor server listens on.
fn address_of(server: &SpawnedServer) -> Result<String, String> {
    server
        .ws_url()
        .strip_prefix("ws://")
        .and_then(|rest| rest.strip_suffix("/ws"))
        .map(str::to_owned)
        .ok_or_else(|| format!("floor: unexpected listening address {}", server.ws_url()))
}
