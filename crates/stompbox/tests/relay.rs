//! The relay against a real RabbitMQ: durability across instances and
//! restarts, and the broker going away during traffic. These tests stop and
//! start RabbitMQ's application, so they run one at a time (one test
//! function) and are bounded in time.

use std::collections::BTreeSet;
use std::time::Duration;
use stompbox::broker::relay::RelayConfig;
use stompbox::client::Client;
use stompbox::codec::{Command, Frame};
use stompbox::{Server, ServerConfig, ServerHandle};

const WAIT: Duration = Duration::from_secs(20);

fn rabbitmq_up() -> bool {
    if std::net::TcpStream::connect("127.0.0.1:61613").is_ok() {
        return true;
    }
    let reason = "RabbitMQ's STOMP plugin is not answering on 127.0.0.1:61613 (scripts/services.sh starts it)";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
    eprintln!("skipping: {reason}");
    false
}

async fn relay_server() -> (ServerHandle, String) {
    relay_server_with(|_| {}).await
}

/// A server relaying to RabbitMQ with `configure` applied to its relay
/// settings, once the broker is available; returns it and its WebSocket URL.
async fn relay_server_with(configure: impl FnOnce(&mut RelayConfig)) -> (ServerHandle, String) {
    let mut config = ServerConfig::default();
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    let mut relay = RelayConfig::default();
    relay.reconnect_initial = Duration::from_millis(200);
    relay.reconnect_max = Duration::from_secs(2);
    configure(&mut relay);
    config.relay = Some(relay);
    let handle = Server::bind(config).await.expect("bind").spawn();
    let mut available = handle.broker_availability();
    tokio::time::timeout(WAIT, available.wait_for(|up| *up))
        .await
        .expect("broker not available")
        .expect("availability");
    let ws = format!("ws://{}/ws", handle.http_addr().expect("addr"));
    (handle, ws)
}

fn unique(prefix: &str) -> String {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{prefix}{nanos:x}")
}

fn persistent(destination: &str, body: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", destination)
        .header("persistent", "true")
        .body(body.to_owned())
}

async fn connect(url: &str) -> Client {
    tokio::time::timeout(WAIT, Client::connect(url, &[]))
        .await
        .expect("connect timed out")
        .expect("connect")
        .0
}

/// Receives from `queue` (client-individual, acking each) until `expected`
/// are all seen; returns what was seen.
async fn drain(url: &str, queue: &str, expected: &BTreeSet<String>) -> BTreeSet<String> {
    let mut seen = BTreeSet::new();
    let mut client = connect(url).await;
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "d")
                .header("destination", queue)
                .header("ack", "client-individual"),
        )
        .await
        .expect("subscribe");
    while !expected.is_subset(&seen) {
        let frame = client
            .next_frame_within(WAIT)
            .await
            .expect("read")
            .expect("closed while draining");
        assert_eq!(frame.command, Command::Message, "{frame:?}");
        seen.insert(String::from_utf8_lossy(&frame.body).into_owned());
        let ack = frame.headers.get("ack").expect("ack header").to_owned();
        client
            .send(&Frame::new(Command::Ack).header("id", &ack))
            .await
            .expect("ack");
    }
    client
        .send_with_receipt(Frame::new(Command::Disconnect), "bye")
        .await
        .expect("disconnect");
    seen
}

async fn rabbitmqctl(args: &[&str]) {
    let status = tokio::process::Command::new("rabbitmqctl")
        .args(args)
        .stdout(std::process::Stdio::null())
        .status()
        .await
        .expect("rabbitmqctl");
    assert!(status.success(), "rabbitmqctl {args:?} failed");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_durability_and_broker_outage() {
    if !rabbitmq_up() {
        return;
    }
    tokio::time::timeout(Duration::from_secs(240), async {
        the_first_reachable_address_wins().await;
        an_idle_client_keeps_its_broker_link_alive().await;
        durable_messages_cross_instances_and_survive_a_restart().await;
        nothing_receipted_is_lost_when_the_broker_goes_away().await;
    })
    .await
    .expect("relay tests took too long");
}

/// An address nobody listens on is skipped for the next one, for the system
/// connection and for client sessions.
async fn the_first_reachable_address_wins() {
    let closed = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let dead = closed.local_addr().expect("addr").to_string();
    drop(closed);
    // Availability means the system connection got past the dead address.
    let (handle, url) =
        relay_server_with(|relay| relay.addresses = vec![dead, "127.0.0.1:61613".into()]).await;
    let mut client = connect(&url).await;
    let topic = unique("/topic/failover.");
    client
        .send_with_receipt(
            Frame::new(Command::Subscribe)
                .header("id", "s")
                .header("destination", &topic),
            "s",
        )
        .await
        .expect("subscribe through the second address");
    handle.shutdown().await.expect("shutdown");
}

/// The broker link keeps its own heart-beats: a client that sends nothing
/// (and asked for no heart-beats) for several broker heart-beat intervals
/// still has a working session.
async fn an_idle_client_keeps_its_broker_link_alive() {
    let (handle, url) = relay_server_with(|relay| {
        relay.heartbeat_send = Duration::from_millis(1000);
        relay.heartbeat_receive = Duration::from_millis(1000);
    })
    .await;
    let mut client = connect(&url).await;
    // Idle for four of the broker's heart-beat intervals: the point of the
    // test is the silence, so it is a sleep.
    tokio::time::sleep(Duration::from_secs(4)).await;
    let topic = unique("/topic/idle.");
    client
        .send_with_receipt(
            Frame::new(Command::Subscribe)
                .header("id", "s")
                .header("destination", &topic),
            "s",
        )
        .await
        .expect("the broker link died while the client was idle");
    handle.shutdown().await.expect("shutdown");
}

/// A persistent message sent through instance 1 while nobody consumes is
/// delivered through instance 2; restarting instance 1 loses nothing.
async fn durable_messages_cross_instances_and_survive_a_restart() {
    let queue = unique("/queue/durable-");
    let (one, one_url) = relay_server().await;
    let (two, two_url) = relay_server().await;
    let mut producer = connect(&one_url).await;
    let mut sent = BTreeSet::new();
    for i in 0..20 {
        let body = format!("m{i}");
        producer
            .send_with_receipt(persistent(&queue, &body), &format!("r{i}"))
            .await
            .expect("receipted");
        sent.insert(body);
    }
    drop(producer);
    // Instance 1 restarts: a new server process would see the same broker.
    one.shutdown().await.expect("shutdown");
    let (one_again, one_again_url) = relay_server().await;
    let seen = drain(&two_url, &queue, &sent).await;
    assert!(sent.is_subset(&seen));
    // And the other way round, through the restarted instance.
    let mut producer = connect(&two_url).await;
    producer
        .send_with_receipt(persistent(&queue, "back"), "r")
        .await
        .expect("receipted");
    let back = BTreeSet::from(["back".to_owned()]);
    assert!(back.is_subset(&drain(&one_again_url, &queue, &back).await));
    two.shutdown().await.expect("shutdown");
    one_again.shutdown().await.expect("shutdown");
}

/// RabbitMQ stops mid-traffic: clients are told and disconnected, the
/// server stays up and refuses new sessions, the system connection comes
/// back by itself, clients reconnect, and every receipted message arrives.
async fn nothing_receipted_is_lost_when_the_broker_goes_away() {
    let queue = unique("/queue/outage-");
    let (server, url) = relay_server().await;
    let mut receipted = BTreeSet::new();
    let mut producer = connect(&url).await;
    for i in 0..50 {
        let body = format!("before-{i}");
        producer
            .send_with_receipt(persistent(&queue, &body), &format!("b{i}"))
            .await
            .expect("receipted");
        receipted.insert(body);
    }
    // A consumer takes some and acknowledges only some of those.
    let mut consumer = connect(&url).await;
    consumer
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "c")
                .header("destination", &queue)
                .header("ack", "client-individual"),
        )
        .await
        .expect("subscribe");
    // Acknowledge every other one of the first ten; an ACK counts once its
    // RECEIPT says the broker has it. Deliveries keep coming meanwhile.
    let mut acked = BTreeSet::new();
    let mut awaiting: std::collections::BTreeMap<String, String> = Default::default();
    let mut delivered = 0;
    while delivered < 10 || !awaiting.is_empty() {
        let frame = consumer
            .next_frame_within(WAIT)
            .await
            .expect("read")
            .expect("open");
        match frame.command {
            Command::Message if delivered < 10 => {
                if delivered % 2 == 0 {
                    let ack = frame.headers.get("ack").expect("ack").to_owned();
                    let receipt = format!("a{delivered}");
                    consumer
                        .send(
                            &Frame::new(Command::Ack)
                                .header("id", &ack)
                                .header("receipt", &receipt),
                        )
                        .await
                        .expect("ack");
                    awaiting.insert(receipt, String::from_utf8_lossy(&frame.body).into_owned());
                }
                delivered += 1;
            }
            Command::Message => {}
            Command::Receipt => {
                let id = frame.headers.get("receipt-id").unwrap_or_default();
                acked.extend(awaiting.remove(id));
            }
            other => panic!("unexpected {other}"),
        }
    }

    let mut availability = server.broker_availability();
    rabbitmqctl(&["stop_app"]).await;
    tokio::time::timeout(WAIT, availability.wait_for(|up| !*up))
        .await
        .expect("availability never went down")
        .expect("availability");
    // Connected clients are told and disconnected.
    for client in [&mut producer, &mut consumer] {
        let told = loop {
            match client.next_frame_within(WAIT).await {
                Ok(Some(f)) if f.command == Command::Error => break true,
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break false,
            }
        };
        assert!(told, "client was not sent an ERROR");
    }
    // The server is up, refuses new sessions clearly, and the messaging
    // handle returns the error instead of dropping the message.
    match Client::connect(&url, &[]).await {
        Err(stompbox::client::ClientError::Server(message)) => {
            assert!(message.contains("unavailable"), "{message}");
        }
        other => panic!("CONNECT during the outage: {other:?}"),
    }
    assert!(server.messaging().publish(&queue, "during").await.is_err());

    rabbitmqctl(&["start_app"]).await;
    tokio::time::timeout(Duration::from_secs(60), availability.wait_for(|up| *up))
        .await
        .expect("system connection did not recover")
        .expect("availability");
    // Clients reconnect and traffic resumes.
    let mut producer = connect(&url).await;
    for i in 0..50 {
        let body = format!("after-{i}");
        producer
            .send_with_receipt(persistent(&queue, &body), &format!("c{i}"))
            .await
            .expect("receipted");
        receipted.insert(body);
    }
    let expected: BTreeSet<String> = receipted.difference(&acked).cloned().collect();
    let seen = drain(&url, &queue, &expected).await;
    let lost: Vec<_> = expected.difference(&seen).collect();
    println!(
        "outage: {} receipted, {} acknowledged before the outage, {} received after, {} lost",
        receipted.len(),
        acked.len(),
        seen.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    server.shutdown().await.expect("shutdown");
}
