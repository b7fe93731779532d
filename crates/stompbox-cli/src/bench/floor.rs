//! `stompbox bench roundtrip --floor`: the machine's floor for a round trip.
//!
//! The same number of clients, each with the same requests in flight, send
//! messages of the request's size over bare TCP to an echo server: this
//! executable's hidden `bench serve-tcp-echo`, a tokio runtime like
//! stompbox's with one task per connection that writes back what it reads.
//! Its CPU per round trip is what one `recv` and one `send` per request cost
//! on this machine (on loopback the send also runs the client's TCP
//! receive), with no WebSocket, STOMP, routing or handler: whatever a
//! server does, it pays at least that.

use super::Out;
use super::report::{CpuMark, Json};
use super::server::SpawnedServer;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
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

/// Runs the echo server until killed. Prints the listening line the bench's
/// spawner waits for.
pub(crate) async fn serve(args: ServeTcpEchoArgs) -> Result<(), String> {
    let listener = TcpListener::bind(&args.http)
        .await
        .map_err(|e| format!("bench serve-tcp-echo: cannot listen on {}: {e}", args.http))?;
    let address = listener
        .local_addr()
        .map_err(|e| format!("bench serve-tcp-echo: {e}"))?;
    println!("stompbox listening http={address}");
    loop {
        let Ok((mut stream, _)) = listener.accept().await else {
            // Out of file descriptors or a reset before accept: the
            // bench's clients report what they miss.
            continue;
        };
        let _ = stream.set_nodelay(true);
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
    let address = server
        .ws_url()
        .strip_prefix("ws://")
        .and_then(|rest| rest.strip_suffix("/ws"))
        .ok_or_else(|| format!("floor: unexpected listening address {}", server.ws_url()))?
        .to_owned();
    let pid = server.pid();
    let mut streams = Vec::with_capacity(plan.clients);
    for _ in 0..plan.clients {
        let stream = TcpStream::connect(&address)
            .await
            .map_err(|e| format!("floor: cannot connect to {address}: {e}"))?;
        stream
            .set_nodelay(true)
            .map_err(|e| format!("floor: {e}"))?;
        streams.push(stream);
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
