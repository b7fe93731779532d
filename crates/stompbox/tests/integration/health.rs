//! `GET /health/live` and `GET /health/ready` over real HTTP connections:
//! on a running server, during a graceful shutdown with a session still
//! draining, and through an outage of the relay's broker.

use crate::support::*;
use std::net::SocketAddr;
use std::time::Duration;
use stompbox::broker::relay::{RelayConfig, RelayMode};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::sync::watch;

async fn get(addr: SocketAddr, path: &str) -> HttpAnswer {
    http_request(addr, "GET", path, &[], None).await
}

fn assert_live(answer: &HttpAnswer) {
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["status"], "live");
}

fn assert_not_ready(answer: &HttpAnswer, reason: &str) {
    assert_eq!(answer.status, 503, "{answer:?}");
    assert_eq!(answer.json()["status"], "not_ready");
    assert_eq!(answer.json()["reason"], reason);
}

fn assert_ready(answer: &HttpAnswer) {
    assert_eq!(answer.status, 200, "{answer:?}");
    assert_eq!(answer.json()["status"], "ready");
}

#[tokio::test]
async fn live_and_ready_answer_small_uncached_json_on_a_running_server() {
    let server = default_server().await;
    let addr = server.handle.http_addr().expect("http addr");
    let live = get(addr, "/health/live").await;
    assert_live(&live);
    let ready = get(addr, "/health/ready").await;
    assert_ready(&ready);
    for answer in [&live, &ready] {
        assert!(
            answer.head.contains("cache-control: no-store"),
            "{answer:?}"
        );
        assert!(
            answer.head.contains("content-type: application/json"),
            "{answer:?}"
        );
        assert!(answer.body.len() < 100, "{answer:?}");
    }
    // Sessions go on beside the probes.
    let mut client = server.connect(Via::Ws).await;
    let topic = unique("/topic/health");
    subscribe(&mut client, "s", &topic, "auto").await;
    assert_ready(&get(addr, "/health/ready").await);
}

/// Messages published to a subscriber that does not read, so that its
/// outbox still holds most of them when the shutdown begins: the kernel's
/// socket buffers (a few MiB on loopback while the reader takes nothing)
/// hold far less.
const UNREAD_MESSAGES: usize = 500;
const UNREAD_MESSAGE_BYTES: usize = 32 * 1024;

/// A server whose sessions drain only as fast as their clients read.
fn drains_slowly(c: &mut stompbox::ServerConfig) {
    // The embedded broker: the draining session's outbox is filled by
    // this server's own publishes.
    c.relay = None;
    c.outbox_bytes = 64 * 1024 * 1024;
    c.backlog_bytes = 512 * 1024 * 1024;
    // The test, not a timer, ends the drain: by reading.
    c.send_timeout = Duration::from_secs(60);
    c.shutdown_timeout = Duration::from_secs(60);
}

/// A subscriber to `topic` with `UNREAD_MESSAGES` published to it and not
/// yet read.
async fn unread_subscriber(server: &TestServer, topic: &str) -> stompbox::client::Client {
    let mut subscriber = server.connect(Via::Ws).await;
    subscribe(&mut subscriber, "s", topic, "auto").await;
    let messaging = server.handle.messaging();
    let body = "x".repeat(UNREAD_MESSAGE_BYTES);
    for _ in 0..UNREAD_MESSAGES {
        messaging
            .publish(topic, body.as_str())
            .await
            .expect("publish");
    }
    subscriber
}

/// Starts a graceful shutdown and leaves it running while the test probes.
async fn begin_shutdown(
    handle: stompbox::ServerHandle,
) -> tokio::task::JoinHandle<std::io::Result<()>> {
    let mut shutdown = Box::pin(handle.shutdown());
    tokio::select! {
        biased;
        result = &mut shutdown => panic!("shutdown ended before the session drained: {result:?}"),
        () = std::future::ready(()) => {}
    }
    tokio::spawn(shutdown)
}

async fn finish_shutdown(shutdown: tokio::task::JoinHandle<std::io::Result<()>>) {
    tokio::time::timeout(WAIT, shutdown)
        .await
        .expect("shutdown timed out")
        .expect("shutdown task")
        .expect("shutdown");
}

#[tokio::test]
async fn readiness_fails_at_once_when_a_graceful_shutdown_begins_and_liveness_holds_while_sessions_drain()
 {
    let server = spawn_server(|c| {
        drains_slowly(c);
        c.metrics.addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let addr = server.handle.http_addr().expect("http addr");
    let operators = server.handle.metrics_addr().expect("operators' listener");
    let topic = unique("/topic/draining");
    let mut subscriber = unread_subscriber(&server, &topic).await;
    assert!(
        server.handle.stats().backlog_bytes > 0,
        "the subscriber's outbox should hold unwritten messages"
    );
    assert_ready(&get(addr, "/health/ready").await);

    // Polled once, the shutdown has begun (the signal is sent before its
    // first wait); then it runs on while the test probes.
    let shutdown = begin_shutdown(server.handle).await;

    // On both listeners: the main one answers probes (and scrapes) during
    // the drain, the operators' one as always.
    for listener in [addr, operators] {
        assert_not_ready(&get(listener, "/health/ready").await, "shutting down");
        assert_live(&get(listener, "/health/live").await);
        let scrape = get(listener, "/metrics").await;
        assert_eq!(scrape.status, 200, "{scrape:?}");
        // The draining session is still there.
        assert!(
            scrape
                .body
                .contains("stompbox_sessions{transport=\"websocket\",version=\"1.2\"} 1"),
            "{}",
            scrape.body
        );
    }
    // No new sessions on a draining node.
    let upgrade = http_request(
        addr,
        "GET",
        "/ws",
        &[
            ("Upgrade", "websocket"),
            ("Connection", "Upgrade"),
            ("Sec-WebSocket-Version", "13"),
            ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="),
            ("Sec-WebSocket-Protocol", "v12.stomp"),
        ],
        None,
    )
    .await;
    assert_eq!(upgrade.status, 503, "{upgrade:?}");
    assert!(
        !shutdown.is_finished(),
        "the shutdown should wait for the session's outbox"
    );

    // Reading lets the outbox flush: every message, then the close.
    let drained = drain(&mut subscriber).await;
    assert_eq!(drained.messages, UNREAD_MESSAGES);
    assert!(!drained.open);
    assert_eq!(subscriber.close_reason().map(|(code, _)| code), Some(1001));
    finish_shutdown(shutdown).await;
    assert!(tokio::net::TcpStream::connect(addr).await.is_err());
}

/// The places the main listener has for connections outside the budget
/// while it drains (`UNCOUNTED_CONNECTIONS` in listener.rs).
const DRAINING_PLACES: usize = 64;

#[tokio::test]
async fn sockets_that_say_nothing_during_a_drain_do_not_keep_probes_out() {
    let server = spawn_server(drains_slowly).await;
    let addr = server.handle.http_addr().expect("http addr");
    let topic = unique("/topic/draining-silent");
    let mut subscriber = unread_subscriber(&server, &topic).await;
    let shutdown = begin_shutdown(server.handle).await;

    // One client takes every place and says nothing: its sockets stay
    // open until connect_timeout, and it could open them again at once.
    let mut silent = Vec::new();
    for _ in 0..DRAINING_PLACES {
        silent.push(tokio::net::TcpStream::connect(addr).await.expect("connect"));
    }
    // Accepted in order: each probe comes after all of them.
    assert_live(&get(addr, "/health/live").await);
    assert_not_ready(&get(addr, "/health/ready").await, "shutting down");
    // The two probes took the places of the two oldest silent sockets.
    for socket in &mut silent[..2] {
        let mut byte = [0u8; 1];
        let read = tokio::time::timeout(WAIT, socket.read(&mut byte))
            .await
            .expect("the oldest silent socket should be closed");
        assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");
    }

    let drained = drain(&mut subscriber).await;
    assert_eq!(drained.messages, UNREAD_MESSAGES);
    finish_shutdown(shutdown).await;
}

#[tokio::test]
async fn clients_keeping_connections_to_the_operators_listener_do_not_keep_probes_out() {
    let server =
        spawn_server(|c| c.metrics.addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)))).await;
    let operators = server.handle.metrics_addr().expect("operators' listener");
    // As many clients as there are places ask once each and keep their
    // connection (HTTP/1.1 keeps it alive unless told otherwise).
    let mut kept = Vec::new();
    for _ in 0..DRAINING_PLACES {
        let mut stream = tokio::net::TcpStream::connect(operators)
            .await
            .expect("connect");
        stream
            .write_all(b"GET /health/live HTTP/1.1\r\nHost: localhost\r\n\r\n")
            .await
            .expect("write");
        let mut head = [0u8; 12];
        tokio::time::timeout(WAIT, stream.read_exact(&mut head))
            .await
            .expect("answer timed out")
            .expect("read");
        assert_eq!(&head, b"HTTP/1.1 200");
        kept.push(stream);
    }
    assert_live(&get(operators, "/health/live").await);
    assert_ready(&get(operators, "/health/ready").await);
}

/// A STOMP broker on loopback that the test takes down and brings back:
/// while `up` is false it drops every connection, new ones at once.
struct FakeBroker {
    address: String,
    up: watch::Sender<bool>,
}

async fn fake_broker() -> FakeBroker {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let (up, _) = watch::channel(true);
    let up_for_connections = up.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let up = up_for_connections.subscribe();
            if *up.borrow() {
                tokio::spawn(serve_fake_connection(stream, up));
            }
        }
    });
    FakeBroker { address, up }
}

/// CONNECTED for the CONNECT, then a RECEIPT for every frame asking for
/// one, until the broker goes down.
async fn serve_fake_connection(mut stream: tokio::net::TcpStream, mut up: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 65536];
    let mut pending = String::new();
    let mut connected = false;
    loop {
        let n = tokio::select! {
            read = stream.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            _ = up.wait_for(|up| !*up) => return,
        };
        pending.push_str(&String::from_utf8_lossy(&buf[..n]));
        while let Some(end) = pending.find('\0') {
            let frame: String = pending.drain(..=end).collect();
            let frame = frame[..end].trim_start_matches(['\n', '\r']);
            let reply = if connected {
                frame
                    .lines()
                    .find_map(|line| line.strip_prefix("receipt:"))
                    .map(|id| format!("RECEIPT\nreceipt-id:{id}\n\n\0"))
            } else {
                connected = true;
                Some("CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0".to_owned())
            };
            if let Some(reply) = reply
                && stream.write_all(reply.as_bytes()).await.is_err()
            {
                return;
            }
        }
    }
}

#[tokio::test]
async fn readiness_follows_the_relays_broker_through_an_outage_and_liveness_does_not() {
    let broker = fake_broker().await;
    let server = spawn_server(|c| {
        let mut relay = RelayConfig::default();
        relay.addresses = vec![broker.address.clone()];
        relay.mode = RelayMode::Shared;
        relay.connections = 1;
        relay.reconnect_initial = Duration::from_millis(50);
        relay.reconnect_max = Duration::from_millis(200);
        c.relay = Some(relay);
    })
    .await;
    let addr = server.handle.http_addr().expect("http addr");
    let mut available = server.handle.broker_availability();
    assert_ready(&get(addr, "/health/ready").await);
    let before = get(addr, "/metrics").await.body;
    assert_eq!(series(&before, "stompbox_broker_up"), 1.0);
    assert_eq!(series(&before, "stompbox_relay_links_up"), 1.0);

    broker.up.send_replace(false);
    tokio::time::timeout(WAIT, available.wait_for(|up| !*up))
        .await
        .expect("the relay did not notice the broker going")
        .expect("availability");
    assert_not_ready(
        &get(addr, "/health/ready").await,
        "message broker unavailable",
    );
    assert_live(&get(addr, "/health/live").await);
    let during = get(addr, "/metrics").await.body;
    assert_eq!(series(&during, "stompbox_broker_up"), 0.0);
    assert_eq!(series(&during, "stompbox_ready"), 0.0);

    broker.up.send_replace(true);
    tokio::time::timeout(WAIT, available.wait_for(|up| *up))
        .await
        .expect("the relay did not reconnect")
        .expect("availability");
    assert_ready(&get(addr, "/health/ready").await);
    let after = get(addr, "/metrics").await.body;
    assert_eq!(series(&after, "stompbox_broker_up"), 1.0);
    assert_eq!(series(&after, "stompbox_ready"), 1.0);
    // The system link and the pool link were both lost and found again.
    assert!(
        series(&after, "stompbox_relay_reconnects_total")
            >= series(&before, "stompbox_relay_reconnects_total") + 1.0,
        "{after}"
    );
    server.handle.shutdown().await.expect("shutdown");
}

/// The value of an unlabelled series in a scrape.
fn series(exposition: &str, name: &str) -> f64 {
    exposition
        .lines()
        .find_map(|line| {
            let (series, value) = line.rsplit_once(' ')?;
            (series == name).then(|| value.parse().ok())?
        })
        .unwrap_or_else(|| panic!("no {name} in:\n{exposition}"))
}
