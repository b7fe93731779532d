//! The relay against a real RabbitMQ: durability across instances and
//! restarts, the broker going away during traffic, and what a client can
//! reach through the relay's own broker login (destinations, SUBSCRIBE and
//! SEND headers). The outage tests stop and start RabbitMQ's application, so
//! every test function here holds [`BROKER`] for its whole run; each is
//! bounded in time. The tests of two instances and of RabbitMQ going away
//! run in both relay modes ([`MODES`]).

use std::collections::BTreeSet;
use std::time::Duration;
use stompbox::auth::{AuthError, Authenticator, ConnectRequest, Identity};
use stompbox::broker::relay::{RelayConfig, RelayMode};
use stompbox::client::{Client, ClientError};
use stompbox::codec::{Command, Frame};
use stompbox::{Server, ServerBuilder, ServerConfig, ServerHandle};

const WAIT: Duration = Duration::from_secs(20);

/// Held by each test function: one of them stops RabbitMQ, which the others
/// must not see.
static BROKER: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn rabbitmq_up() -> bool {
    if std::net::TcpStream::connect("127.0.0.1:61613").is_ok() {
        return true;
    }
    let reason = "RabbitMQ's STOMP plugin is not answering on 127.0.0.1:61613 (scripts/services.sh starts it)";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
    eprintln!("skipping: {reason}");
    false
}

/// Both relay modes: the tests of more than one instance, and of RabbitMQ
/// restarting, run in each.
const MODES: [RelayMode; 2] = [RelayMode::Shared, RelayMode::PerSession];

/// A server relaying to RabbitMQ in `mode` that lets clients mark messages
/// `persistent`, as one must for messages to survive a broker restart (the
/// relay drops the header by default).
async fn durable_relay_server(mode: RelayMode) -> (ServerHandle, String) {
    relay_server_with(|relay| {
        relay.mode = mode;
        relay.send_headers = vec!["persistent".into()];
    })
    .await
}

/// A server relaying to RabbitMQ with `configure` applied to its relay
/// settings, once the broker is available; returns it and its WebSocket URL.
async fn relay_server_with(configure: impl FnOnce(&mut RelayConfig)) -> (ServerHandle, String) {
    start(configure, false).await
}

/// Logs in `name` with the passcode `name-pw`; no credentials is anonymous.
#[derive(Debug, Clone, Copy)]
struct Logins;

impl Authenticator for Logins {
    fn authenticate<'a>(
        &'a self,
        request: &'a ConnectRequest,
    ) -> stompbox::broker::BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        let answer = match (request.login(), request.passcode()) {
            (Some(login), Some(passcode)) if passcode == format!("{login}-pw") => {
                Ok(Some(Identity::new(login)))
            }
            (Some(_), _) => Err(AuthError::BadCredentials),
            (None, _) => Ok(None),
        };
        Box::pin(async move { answer })
    }
}

/// As [`relay_server_with`], with users logging in through [`Logins`].
async fn start(configure: impl FnOnce(&mut RelayConfig), logins: bool) -> (ServerHandle, String) {
    let mut config = ServerConfig::default();
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    let mut relay = RelayConfig::default();
    relay.reconnect_initial = Duration::from_millis(200);
    relay.reconnect_max = Duration::from_secs(2);
    configure(&mut relay);
    config.relay = Some(relay);
    config.auth.allow_anonymous = true;
    let mut builder = Server::builder(config);
    if logins {
        builder = builder.authenticator(Logins);
    }
    serve(builder).await
}

/// Spawns the server `builder` makes, once it reaches the broker; returns
/// it and its WebSocket URL.
async fn serve(builder: ServerBuilder) -> (ServerHandle, String) {
    let handle = builder.bind().await.expect("bind").spawn();
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

/// Starts RabbitMQ's application again however the test that stopped it
/// ends, so that a failure cannot leave the broker down for every later test.
struct StartAppOnDrop;

impl Drop for StartAppOnDrop {
    fn drop(&mut self) {
        let _ = std::process::Command::new("rabbitmqctl")
            .arg("start_app")
            .status();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_durability_and_broker_outage() {
    if !rabbitmq_up() {
        return;
    }
    let _broker = BROKER.lock().await;
    tokio::time::timeout(Duration::from_secs(400), async {
        the_first_reachable_address_wins().await;
        an_idle_client_keeps_its_broker_link_alive().await;
        for mode in MODES {
            println!("relay mode {mode:?}");
            durable_messages_cross_instances_and_survive_a_restart(mode).await;
            nothing_receipted_is_lost_when_the_broker_goes_away(mode).await;
        }
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
async fn durable_messages_cross_instances_and_survive_a_restart(mode: RelayMode) {
    let queue = unique("/queue/durable-");
    let (one, one_url) = durable_relay_server(mode).await;
    let (two, two_url) = durable_relay_server(mode).await;
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
    let (one_again, one_again_url) = durable_relay_server(mode).await;
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
async fn nothing_receipted_is_lost_when_the_broker_goes_away(mode: RelayMode) {
    let queue = unique("/queue/outage-");
    let (server, url) = durable_relay_server(mode).await;
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

    // A topic subscriber: through the shared relay it stays connected
    // across the outage and is subscribed again when the broker is back.
    let topic = unique("/topic/outage-");
    let mut watcher = connect(&url).await;
    watcher
        .send_with_receipt(
            Frame::new(Command::Subscribe)
                .header("id", "w")
                .header("destination", &topic),
            "w",
        )
        .await
        .expect("subscribe");

    let mut availability = server.broker_availability();
    let _restart = StartAppOnDrop;
    rabbitmqctl(&["stop_app"]).await;
    tokio::time::timeout(WAIT, availability.wait_for(|up| !*up))
        .await
        .expect("availability never went down")
        .expect("availability");
    // Clients that held what only the lost connection knew (its own link,
    // or unacknowledged messages) are told and disconnected.
    let mut told_clients = vec![&mut consumer];
    if mode == RelayMode::PerSession {
        told_clients.push(&mut producer);
        told_clients.push(&mut watcher);
    }
    for client in told_clients {
        assert!(told_an_error(client).await, "client was not sent an ERROR");
    }
    if mode == RelayMode::Shared {
        // A producer on the shared pool learns of the outage when it sends.
        let error = producer
            .send_with_receipt(persistent(&queue, "during"), "d")
            .await
            .expect_err("a SEND during the outage");
        // Unavailable; or, had it sent within the last second before the
        // outage, told at once that what it sent may not have arrived.
        let error = error.to_string();
        assert!(
            error.contains("unavailable") || error.contains("may not have arrived"),
            "{error}"
        );
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
    if mode == RelayMode::Shared {
        // The watcher's topic is subscribed again once its pool link is
        // back (availability needs only one): what is published from then
        // on reaches it, on the connection it never left.
        let seen = tokio::time::timeout(WAIT, async {
            let mut n = 0;
            loop {
                n += 1;
                server
                    .messaging()
                    .publish(&topic, format!("back-{n}"))
                    .await
                    .expect("publish after the outage");
                match watcher.next_frame_within(Duration::from_millis(200)).await {
                    Ok(Some(frame)) => break frame,
                    Ok(None) => panic!("the watcher was disconnected"),
                    Err(_) => {}
                }
            }
        })
        .await
        .expect("the watcher's topic was not subscribed again");
        assert_eq!(seen.command, Command::Message, "{seen:?}");
    }
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
        "outage ({mode:?}): {} receipted, {} acknowledged before the outage, {} received after, {} lost",
        receipted.len(),
        acked.len(),
        seen.len(),
        lost.len()
    );
    assert!(lost.is_empty(), "lost: {lost:?}");
    server.shutdown().await.expect("shutdown");
}

/// The next MESSAGE on `client`; anything else (an ERROR, a close, nothing
/// within [`WAIT`]) fails the test.
async fn next_message(client: &mut Client) -> Frame {
    loop {
        let frame = client
            .next_frame_within(WAIT)
            .await
            .expect("read")
            .expect("closed while waiting for a MESSAGE");
        match frame.command {
            Command::Message => return frame,
            Command::Receipt => {}
            other => panic!("expected MESSAGE, got {other}: {frame:?}"),
        }
    }
}

/// Whether an ERROR comes on `client` before its connection ends or it
/// stays quiet for [`WAIT`], passing over other frames.
async fn told_an_error(client: &mut Client) -> bool {
    loop {
        match client.next_frame_within(WAIT).await {
            Ok(Some(f)) if f.command == Command::Error => return true,
            Ok(Some(_)) => {}
            Ok(None) | Err(_) => return false,
        }
    }
}

/// The next MESSAGE on `client` whose body is `body`, skipping others (for
/// RabbitMQ's built-in exchanges, which other users of the broker share).
async fn message_with_body(client: &mut Client, body: &str) -> Frame {
    loop {
        let frame = next_message(client).await;
        if frame.body.as_ref() == body.as_bytes() {
            return frame;
        }
    }
}

async fn login(url: &str, name: &str) -> Client {
    let passcode = format!("{name}-pw");
    tokio::time::timeout(
        WAIT,
        Client::connect(url, &[("login", name), ("passcode", &passcode)]),
    )
    .await
    .expect("connect timed out")
    .unwrap_or_else(|e| panic!("{name} cannot connect: {e}"))
    .0
}

/// The names of RabbitMQ's queues in the default virtual host, as
/// `rabbitmqctl` lists them: the broker's own view, which no STOMP frame can
/// give without itself declaring a queue.
async fn queue_names() -> BTreeSet<String> {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args(["--quiet", "list_queues", "--no-table-headers", "name"])
        .output()
        .await
        .expect("rabbitmqctl");
    assert!(
        output.status.success(),
        "rabbitmqctl list_queues failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .map(|line| line.trim().to_owned())
        .filter(|line| !line.is_empty())
        .collect()
}

/// Deletes a RabbitMQ queue when dropped, so that a test leaves nothing on
/// the shared broker whether it passes or fails.
struct DeleteQueue(String);

impl Drop for DeleteQueue {
    fn drop(&mut self) {
        // A blocking call in a test's cleanup; the queue may not exist,
        // which is no error here.
        let _ = std::process::Command::new("rabbitmqctl")
            .args(["--quiet", "delete_queue", &self.0])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .status();
    }
}

/// Expects `frame` to be refused with an ERROR naming `destination`, and
/// the connection to be closed after it.
async fn expect_refused(client: &mut Client, frame: Frame, destination: &str) {
    let command = frame.command;
    match client.send_with_receipt(frame, "refused").await {
        Err(ClientError::Server(message)) => assert!(
            message.contains(destination),
            "{command} {destination}: the ERROR does not name it: {message}"
        ),
        other => panic!("{command} {destination} was not refused: {other:?}"),
    }
    match client.next_frame_within(WAIT).await {
        Ok(None) | Err(ClientError::Closed) => {}
        Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => {
            panic!("{command} {destination}: the connection stayed open after the ERROR")
        }
        Err(_) => {}
        Ok(Some(frame)) => panic!("{command} {destination}: a frame after the ERROR: {frame:?}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_limits_what_clients_reach_with_its_broker_login() {
    if !rabbitmq_up() {
        return;
    }
    let _broker = BROKER.lock().await;
    tokio::time::timeout(Duration::from_secs(180), async {
        subscribe_options_cannot_leave_a_durable_queue_behind().await;
        rabbitmq_namespaces_are_relayed_only_when_configured().await;
        broker_headers_on_send_are_dropped_unless_allowed().await;
        user_destinations_work_and_keep_the_system_connection_up().await;
    })
    .await
    .expect("relay isolation tests took too long");
}

/// With `durable:true`, `auto-delete:false` and `x-queue-name`, RabbitMQ
/// gives a `/topic/` subscription a named durable queue that outlives the
/// client and keeps collecting the topic's messages. The relay drops those
/// headers unless `subscribe_headers` lists them. (A `/queue/` SUBSCRIBE
/// would not show it: RabbitMQ names that queue after the destination and
/// ignores `x-queue-name` there.)
async fn subscribe_options_cannot_leave_a_durable_queue_behind() {
    for allowed in [false, true] {
        let name = unique("stompbox-test-dsub-");
        let _cleanup = DeleteQueue(name.clone());
        let topic = unique("/topic/dsub.");
        let (server, url) = relay_server_with(|relay| {
            if allowed {
                relay.subscribe_headers = vec![
                    "x-queue-name".into(),
                    "durable".into(),
                    "auto-delete".into(),
                ];
            }
        })
        .await;
        let mut client = connect(&url).await;
        client
            .send_with_receipt(
                Frame::new(Command::Subscribe)
                    .header("id", "s")
                    .header("destination", &topic)
                    .header("durable", "true")
                    .header("auto-delete", "false")
                    .header("x-queue-name", &name),
                "s",
            )
            .await
            .expect("subscribe");
        // The subscription works either way.
        client
            .send(
                &Frame::new(Command::Send)
                    .header("destination", &topic)
                    .body("here"),
            )
            .await
            .expect("send");
        message_with_body(&mut client, "here").await;
        client
            .send_with_receipt(Frame::new(Command::Disconnect), "bye")
            .await
            .expect("disconnect");
        server.shutdown().await.expect("shutdown");
        // The SUBSCRIBE's RECEIPT came after RabbitMQ declared the queue,
        // so the list is already final.
        let left = queue_names().await.contains(&name);
        if allowed {
            assert!(left, "allowed, yet no queue '{name}' was created");
        } else {
            assert!(!left, "queue '{name}' was left behind in RabbitMQ");
        }
    }
}

/// `/exchange/…`, `/amq/queue/…` and `/temp-queue/…` reach any exchange or
/// queue the relay's own login may (RabbitMQ's trace firehose, amq.fanout,
/// other applications' queues), so by default they are refused with an
/// ERROR naming the destination, for SUBSCRIBE and SEND alike. Listed in
/// `prefixes` they are relayed; the user-destination namespace stays
/// refused even then.
async fn rabbitmq_namespaces_are_relayed_only_when_configured() {
    let queue = unique("stompbox-test-amq-");
    let _cleanup = DeleteQueue(queue.clone());
    let amq_queue = format!("/amq/queue/{queue}");
    let user_namespace = "/exchange/amq.direct/stompbox-user.someone";
    let (server, url) = relay_server_with(|_| {}).await;
    for destination in [
        "/exchange/amq.rabbitmq.trace/#",
        "/exchange/amq.fanout",
        amq_queue.as_str(),
        "/temp-queue/t",
        user_namespace,
    ] {
        let mut client = connect(&url).await;
        let subscribe = Frame::new(Command::Subscribe)
            .header("id", "s")
            .header("destination", destination);
        expect_refused(&mut client, subscribe, destination).await;
        let mut client = connect(&url).await;
        let send = Frame::new(Command::Send)
            .header("destination", destination)
            .body("x");
        expect_refused(&mut client, send, destination).await;
    }
    server.shutdown().await.expect("shutdown");

    let (server, url) = relay_server_with(|relay| {
        relay.prefixes.push("/exchange/".into());
        relay.prefixes.push("/amq/queue/".into());
    })
    .await;
    let mut client = connect(&url).await;
    client
        .send_with_receipt(
            Frame::new(Command::Subscribe)
                .header("id", "trace")
                .header("destination", "/exchange/amq.rabbitmq.trace/#"),
            "trace",
        )
        .await
        .expect("SUBSCRIBE to the trace exchange, relayed");
    client
        .send_with_receipt(
            Frame::new(Command::Subscribe)
                .header("id", "fanout")
                .header("destination", "/exchange/amq.fanout"),
            "fanout",
        )
        .await
        .expect("SUBSCRIBE to amq.fanout, relayed");
    let body = unique("fanout-");
    let mut publisher = connect(&url).await;
    publisher
        .send_with_receipt(
            Frame::new(Command::Send)
                .header("destination", "/exchange/amq.fanout")
                .body(body.clone()),
            "p",
        )
        .await
        .expect("SEND to amq.fanout, relayed");
    message_with_body(&mut client, &body).await;
    // /amq/queue/ names an existing queue: made here through /queue/.
    publisher
        .send_with_receipt(
            Frame::new(Command::Send)
                .header("destination", &format!("/queue/{queue}"))
                .body("queued"),
            "q",
        )
        .await
        .expect("SEND to the queue");
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "amq")
                .header("destination", &amq_queue),
        )
        .await
        .expect("subscribe");
    message_with_body(&mut client, "queued").await;
    let mut other = connect(&url).await;
    let subscribe = Frame::new(Command::Subscribe)
        .header("id", "s")
        .header("destination", user_namespace);
    expect_refused(&mut other, subscribe, user_namespace).await;
    server.shutdown().await.expect("shutdown");
}

/// SEND headers that RabbitMQ acts on (`persistent`, its `x-` queue
/// arguments) are dropped unless `send_headers` lists them; application
/// headers (whatever their name) and the server's own `stompbox-sender` pass.
async fn broker_headers_on_send_are_dropped_unless_allowed() {
    for allowed in [false, true] {
        let (server, url) = relay_server_with(|relay| {
            if allowed {
                relay.send_headers = vec!["persistent".into()];
            }
        })
        .await;
        let topic = unique("/topic/headers.");
        let mut subscriber = connect(&url).await;
        subscriber
            .send_with_receipt(
                Frame::new(Command::Subscribe)
                    .header("id", "s")
                    .header("destination", &topic),
                "s",
            )
            .await
            .expect("subscribe");
        let mut publisher = connect(&url).await;
        publisher
            .send_with_receipt(
                Frame::new(Command::Send)
                    .header("destination", &topic)
                    .header("persistent", "true")
                    .header("x-message-ttl", "1000")
                    .header("x-custom", "1")
                    .header("my-app-header", "2")
                    .body("h"),
                "p",
            )
            .await
            .expect("send");
        let m = next_message(&mut subscriber).await;
        assert_eq!(m.headers.get("my-app-header"), Some("2"), "{m:?}");
        assert_eq!(m.headers.get("x-message-ttl"), None, "{m:?}");
        assert_eq!(m.headers.get("x-custom"), Some("1"), "{m:?}");
        assert_eq!(m.headers.get(stompbox::SENDER_HEADER), Some(""), "{m:?}");
        // RabbitMQ marks a persistent message `persistent:true` on MESSAGE.
        let persistent = allowed.then_some("true");
        assert_eq!(m.headers.get("persistent"), persistent, "{m:?}");
        server.shutdown().await.expect("shutdown");
    }
}

/// User destinations live under `/exchange/amq.direct/`, which is not a
/// client prefix, and still work. A client's SEND to another user goes out
/// on the shared system connection with the client's headers: one that
/// makes RabbitMQ close the connection (an unparseable `timestamp`, a
/// foreign `user-id`, a text `CC`) must not get there, or every
/// server-originated message would fail until it reconnects.
async fn user_destinations_work_and_keep_the_system_connection_up() {
    let (server, url) = start(|_| {}, true).await;
    let mut ann = login(&url, "ann").await;
    let mut ben = login(&url, "ben").await;
    ann.send_with_receipt(
        Frame::new(Command::Subscribe)
            .header("id", "n")
            .header("destination", "/user/queue/inbox"),
        "n",
    )
    .await
    .expect("subscribe");
    let mut availability = server.broker_availability();
    availability.borrow_and_update();
    ben.send_with_receipt(
        Frame::new(Command::Send)
            .header("destination", "/user/ann/queue/inbox")
            .header("my-app-header", "2")
            .header("timestamp", "not-a-number")
            .header("user-id", "mallory")
            .header("CC", "elsewhere")
            .header("reply-to", "/temp-queue/replies")
            .body("from ben"),
        "b",
    )
    .await
    .expect("send to another user");
    let m = next_message(&mut ann).await;
    assert_eq!(m.body.as_ref(), b"from ben");
    assert_eq!(m.headers.get("destination"), Some("/user/queue/inbox"));
    assert_eq!(m.headers.get("my-app-header"), Some("2"));
    assert_eq!(m.headers.get(stompbox::SENDER_HEADER), Some("ben"));
    for dropped in ["timestamp", "user-id", "CC", "reply-to"] {
        assert_eq!(m.headers.get(dropped), None, "{dropped}: {m:?}");
    }
    server
        .messaging()
        .send_to_user("ann", "/queue/inbox", "from the server")
        .await
        .expect("send_to_user");
    assert_eq!(
        next_message(&mut ann).await.body.as_ref(),
        b"from the server"
    );
    assert!(
        !availability.has_changed().expect("availability"),
        "the system connection went down"
    );
    server.shutdown().await.expect("shutdown");
}

/// The queues RabbitMQ has bound to `amq.topic` with `routing_key`: the
/// queues behind `/topic/{routing_key}` subscriptions, as the broker itself
/// lists them (a durable subscription's queue name is RabbitMQ's own hash).
async fn queues_bound_to(routing_key: &str) -> BTreeSet<String> {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args(BINDINGS)
        .output()
        .await
        .expect("rabbitmqctl");
    assert!(
        output.status.success(),
        "rabbitmqctl list_bindings failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    bound_to(&String::from_utf8_lossy(&output.stdout), routing_key)
}

const BINDINGS: [&str; 6] = [
    "--quiet",
    "list_bindings",
    "--no-table-headers",
    "source_name",
    "routing_key",
    "destination_name",
];

fn bound_to(listing: &str, routing_key: &str) -> BTreeSet<String> {
    listing
        .lines()
        .filter_map(|line| {
            let mut fields = line.trim().split('\t');
            let (source, key, queue) = (fields.next()?, fields.next()?, fields.next()?);
            (source == "amq.topic" && key == routing_key).then(|| queue.to_owned())
        })
        .collect()
}

/// Deletes every queue bound to `amq.topic` with this routing key when
/// dropped: the durable subscription queues a test made, whether it passes
/// or fails.
struct DeleteBoundQueues(String);

impl Drop for DeleteBoundQueues {
    fn drop(&mut self) {
        // Blocking calls in a test's cleanup; nothing to delete is no error.
        let Ok(output) = std::process::Command::new("rabbitmqctl")
            .args(BINDINGS)
            .output()
        else {
            return;
        };
        for queue in bound_to(&String::from_utf8_lossy(&output.stdout), &self.0) {
            drop(DeleteQueue(queue));
        }
    }
}

/// A relay that lets clients make durable subscriptions, with users
/// logging in through [`Logins`].
async fn durable_subscriptions_server(mode: RelayMode) -> (ServerHandle, String) {
    start(
        |relay| {
            relay.mode = mode;
            relay.subscribe_headers = vec!["durable".into(), "auto-delete".into()];
        },
        true,
    )
    .await
}

fn durable_subscribe(id: &str, topic: &str) -> Frame {
    Frame::new(Command::Subscribe)
        .header("id", id)
        .header("destination", topic)
        .header("durable", "true")
        .header("auto-delete", "false")
}

fn text(destination: &str, body: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", destination)
        .body(body.to_owned())
}

/// Runs `test` once in each relay mode, as [`with_broker`] runs one test.
async fn in_each_mode<F, Fut>(test: F)
where
    F: Fn(RelayMode) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    with_broker(async {
        for mode in MODES {
            println!("relay mode {mode:?}");
            test(mode).await;
        }
    })
    .await;
}

/// Runs `test` as [`in_each_mode`] does, each time with a routing key of
/// its own (`prefix` and a unique suffix), its topic, and a server from
/// [`durable_subscriptions_server`]; the key's queues are deleted after.
async fn in_each_durable_case<F, Fut>(prefix: &str, test: F)
where
    F: Fn(String, String, ServerHandle, String) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let test = &test;
    in_each_mode(|mode| async move {
        let key = unique(prefix);
        let _cleanup = DeleteBoundQueues(key.clone());
        let topic = format!("/topic/{key}");
        let (server, url) = durable_subscriptions_server(mode).await;
        test(key, topic, server, url).await;
    })
    .await;
}

/// Runs one durable-subscription test holding [`BROKER`], bounded in time.
async fn with_broker(test: impl std::future::Future<Output = ()>) {
    if !rabbitmq_up() {
        return;
    }
    let _broker = BROKER.lock().await;
    tokio::time::timeout(Duration::from_secs(120), test)
        .await
        .expect("durable subscription test took too long");
}

/// A user's durable subscription outlives its connection and a plain
/// UNSUBSCRIBE: messages published meanwhile arrive when the same user
/// subscribes again with the same id, even when its other subscriptions
/// on the new connection come in another order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_durable_subscription_resumes_on_the_next_connection() {
    in_each_durable_case("dsub.resume.", |key, topic, server, url| async move {
        let mut publisher = connect(&url).await;

        let mut ann = login(&url, "ann").await;
        ann.send_with_receipt(durable_subscribe("news", &topic), "s")
            .await
            .expect("durable subscribe");
        publisher
            .send_with_receipt(text(&topic, "before"), "p0")
            .await
            .expect("publish");
        assert_eq!(next_message(&mut ann).await.body.as_ref(), b"before");
        // A plain UNSUBSCRIBE keeps a durable subscription (RabbitMQ's rule).
        ann.send_with_receipt(Frame::new(Command::Unsubscribe).header("id", "news"), "u")
            .await
            .expect("unsubscribe");
        ann.send_with_receipt(Frame::new(Command::Disconnect), "bye")
            .await
            .expect("disconnect");

        for (i, body) in ["away-1", "away-2"].into_iter().enumerate() {
            publisher
                .send_with_receipt(text(&topic, body), &format!("p{}", i + 1))
                .await
                .expect("publish while away");
        }

        let mut ann = login(&url, "ann").await;
        ann.send_with_receipt(
            Frame::new(Command::Subscribe)
                .header("id", "other")
                .header("destination", &format!("/topic/{}", unique("dsub.other."))),
            "o",
        )
        .await
        .expect("another subscription first");
        // No receipt: the waiting messages may come before it would.
        ann.send(&durable_subscribe("news", &topic))
            .await
            .expect("subscribe again");
        for body in ["away-1", "away-2"] {
            let m = next_message(&mut ann).await;
            assert_eq!(m.body.as_ref(), body.as_bytes(), "{m:?}");
            assert_eq!(m.headers.get("subscription"), Some("news"), "{m:?}");
        }
        assert_eq!(queues_bound_to(&key).await.len(), 1);
        server.shutdown().await.expect("shutdown");
    })
    .await;
}

/// Two users subscribing durably with the same id to the same topic get a
/// queue each, and each gets every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_durable_subscriptions_of_two_users_never_share_a_queue() {
    in_each_durable_case("dsub.users.", |key, topic, server, url| async move {
        let mut ann = login(&url, "ann").await;
        let mut ben = login(&url, "ben").await;
        for client in [&mut ann, &mut ben] {
            client
                .send_with_receipt(durable_subscribe("feed", &topic), "s")
                .await
                .expect("durable subscribe");
        }
        assert_eq!(
            queues_bound_to(&key).await.len(),
            2,
            "ann and ben must not share one durable queue"
        );
        let mut publisher = connect(&url).await;
        for i in 0..4 {
            publisher
                .send_with_receipt(text(&topic, &format!("m{i}")), &format!("p{i}"))
                .await
                .expect("publish");
        }
        for client in [&mut ann, &mut ben] {
            for i in 0..4 {
                let m = next_message(client).await;
                assert_eq!(m.body.as_ref(), format!("m{i}").as_bytes(), "{m:?}");
            }
        }
        server.shutdown().await.expect("shutdown");
    })
    .await;
}

/// UNSUBSCRIBE with `durable:true` deletes the durable subscription's queue
/// on the broker; a new durable subscription then starts empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_unsubscribe_with_durable_deletes_the_subscription() {
    in_each_durable_case("dsub.delete.", |key, topic, server, url| async move {
        let mut ann = login(&url, "ann").await;
        ann.send_with_receipt(durable_subscribe("news", &topic), "s")
            .await
            .expect("durable subscribe");
        assert_eq!(queues_bound_to(&key).await.len(), 1);
        ann.send_with_receipt(
            Frame::new(Command::Unsubscribe)
                .header("id", "news")
                .header("durable", "true"),
            "u",
        )
        .await
        .expect("unsubscribe durable:true");
        // The RECEIPT came after RabbitMQ deleted the queue.
        let left = queues_bound_to(&key).await;
        assert!(left.is_empty(), "durable queue left behind: {left:?}");
        // Published with no subscription: nobody keeps it, so a new durable
        // subscription does not get it.
        let mut publisher = connect(&url).await;
        publisher
            .send_with_receipt(text(&topic, "old"), "p0")
            .await
            .expect("publish");
        ann.send_with_receipt(durable_subscribe("news", &topic), "s2")
            .await
            .expect("subscribe again");
        publisher
            .send_with_receipt(text(&topic, "new"), "p1")
            .await
            .expect("publish");
        assert_eq!(next_message(&mut ann).await.body.as_ref(), b"new");
        ann.send_with_receipt(
            Frame::new(Command::Unsubscribe)
                .header("id", "news")
                .header("durable", "true"),
            "u2",
        )
        .await
        .expect("unsubscribe durable:true");
        server.shutdown().await.expect("shutdown");
    })
    .await;
}

/// An anonymous session has nothing that names it on its next connection,
/// so its durable SUBSCRIBE is refused with an ERROR saying why, as is a
/// durable user-destination subscription; with `durable` not allowed the
/// header is dropped and the subscription is an ordinary one, as before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_durable_subscriptions_need_a_user() {
    in_each_durable_case("dsub.anon.", |key, topic, server, url| async move {
        let mut anonymous = connect(&url).await;
        expect_refused(
            &mut anonymous,
            durable_subscribe("s", &topic),
            "logged-in user",
        )
        .await;
        let mut ann = login(&url, "ann").await;
        let user_destination = Frame::new(Command::Subscribe)
            .header("id", "u")
            .header("destination", "/user/queue/inbox")
            .header("durable", "true");
        expect_refused(&mut ann, user_destination, "/user/queue/inbox").await;
        assert!(queues_bound_to(&key).await.is_empty());
        server.shutdown().await.expect("shutdown");

        let (server, url) = relay_server_with(|_| {}).await;
        let mut anonymous = connect(&url).await;
        anonymous
            .send_with_receipt(durable_subscribe("s", &topic), "s")
            .await
            .expect("durable not allowed: an ordinary subscription");
        server.shutdown().await.expect("shutdown");
    })
    .await;
}

/// NACK passes RabbitMQ's `requeue` header (listed in `ack_headers` by
/// default): `requeue:false` discards the message, a plain NACK has it
/// redelivered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_nack_with_requeue_false_is_not_redelivered() {
    in_each_mode(|mode| async move {
        let name = unique("stompbox-test-nack-");
        let _cleanup = DeleteQueue(name.clone());
        let queue = format!("/queue/{name}");
        let (server, url) = relay_server_with(|relay| relay.mode = mode).await;
        let mut client = connect(&url).await;
        send_each(&mut client, &queue, ["again", "drop"]).await;
        client
            .send(
                &Frame::new(Command::Subscribe)
                    .header("id", "q")
                    .header("destination", &queue)
                    .header("ack", "client-individual"),
            )
            .await
            .expect("subscribe");
        let again = next_message(&mut client).await;
        assert_eq!(again.body.as_ref(), b"again");
        let drop_it = next_message(&mut client).await;
        assert_eq!(drop_it.body.as_ref(), b"drop");
        let ack_id = |m: &Frame| m.headers.get("ack").expect("ack header").to_owned();
        client
            .send(&Frame::new(Command::Nack).header("id", &ack_id(&again)))
            .await
            .expect("nack");
        let redelivered = next_message(&mut client).await;
        assert_eq!(redelivered.body.as_ref(), b"again", "{redelivered:?}");
        client
            .send(&Frame::new(Command::Ack).header("id", &ack_id(&redelivered)))
            .await
            .expect("ack");
        client
            .send(
                &Frame::new(Command::Nack)
                    .header("id", &ack_id(&drop_it))
                    .header("requeue", "false"),
            )
            .await
            .expect("nack requeue:false");
        // Sent on the same broker link after the NACK, so RabbitMQ has
        // handled the NACK first: the next delivery is this one, not "drop".
        client
            .send(&text(&queue, "marker"))
            .await
            .expect("send marker");
        let next = next_message(&mut client).await;
        assert_eq!(next.body.as_ref(), b"marker", "{next:?}");
        server.shutdown().await.expect("shutdown");
    })
    .await;
}

/// A server relaying to RabbitMQ through the shared pool, with `configure`
/// applied to the rest of its settings.
async fn shared_relay_server(
    configure: impl FnOnce(&mut ServerConfig),
    relay: impl FnOnce(&mut RelayConfig),
) -> (ServerHandle, String) {
    let mut config = ServerConfig::default();
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    config.auth.allow_anonymous = true;
    let mut relay_config = RelayConfig::default();
    relay_config.mode = RelayMode::Shared;
    relay(&mut relay_config);
    config.relay = Some(relay_config);
    configure(&mut config);
    serve(Server::builder(config)).await
}

fn subscribe_frame(id: &str, destination: &str, ack: &str) -> Frame {
    Frame::new(Command::Subscribe)
        .header("id", id)
        .header("destination", destination)
        .header("ack", ack)
}

/// Subscribes `client` to `destination` as subscription `id`, with `id`
/// as the receipt it waits for.
async fn subscribe(client: &mut Client, id: &str, destination: &str, ack: &str) {
    client
        .send_with_receipt(subscribe_frame(id, destination, ack), id)
        .await
        .expect("subscribe");
}

/// A new client of `url`, subscribed as [`subscribe`] does.
async fn connect_subscribed(url: &str, id: &str, destination: &str, ack: &str) -> Client {
    let mut client = connect(url).await;
    subscribe(&mut client, id, destination, ack).await;
    client
}

/// Sends each of `bodies` to `destination` from `client`, each with its
/// body as the receipt it waits for.
async fn send_each(
    client: &mut Client,
    destination: &str,
    bodies: impl IntoIterator<Item = impl AsRef<str>>,
) {
    for body in bodies {
        let body = body.as_ref();
        client
            .send_with_receipt(text(destination, body), body)
            .await
            .expect("send");
    }
}

/// The issue's point: 1,000 local subscribers of one topic cost RabbitMQ
/// one subscription (one queue bound to the topic), every one of them gets
/// each message, and the last to leave takes the upstream subscription
/// with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shared_relay_serves_a_thousand_local_subscribers_with_one_upstream_subscription() {
    with_broker(async {
        let key = unique("fanout.thousand.");
        let _cleanup = DeleteBoundQueues(key.clone());
        let topic = format!("/topic/{key}");
        // Every client of the test comes from one address.
        let (server, url) = shared_relay_server(
            |c| {
                c.connects_per_address_per_sec = 0;
                c.max_connections_per_address = 0;
            },
            |_| {},
        )
        .await;
        let mut subscribers = Vec::with_capacity(1000);
        for i in 0..1000 {
            let mut client = connect(&url).await;
            client
                .send_with_receipt(subscribe_frame("s", &topic, "auto"), &format!("s{i}"))
                .await
                .expect("subscribe");
            subscribers.push(client);
        }
        assert_eq!(
            queues_bound_to(&key).await.len(),
            1,
            "RabbitMQ should see one subscription for 1,000 local subscribers"
        );
        for n in 0..3 {
            server
                .messaging()
                .publish(&topic, format!("m{n}"))
                .await
                .expect("publish");
        }
        for client in &mut subscribers {
            for n in 0..3 {
                assert_eq!(
                    next_message(client).await.body.as_ref(),
                    format!("m{n}").as_bytes()
                );
            }
        }
        let mut last = subscribers.pop().expect("a subscriber");
        for client in &mut subscribers {
            client
                .send_with_receipt(Frame::new(Command::Unsubscribe).header("id", "s"), "u")
                .await
                .expect("unsubscribe");
        }
        assert_eq!(
            queues_bound_to(&key).await.len(),
            1,
            "one subscriber is left"
        );
        // Its receipt comes once the broker cancelled the subscription.
        last.send_with_receipt(Frame::new(Command::Unsubscribe).header("id", "s"), "u")
            .await
            .expect("unsubscribe");
        assert!(
            queues_bound_to(&key).await.is_empty(),
            "the last local subscriber left, the upstream subscription stayed"
        );
        server.shutdown().await.expect("shutdown");
    })
    .await;
}

/// A local subscriber that stops reading is cut off by its own outbox
/// limit; the shared link never waits for it, so the other subscriber of
/// the same topic gets every message.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_local_subscriber_does_not_delay_others_on_the_shared_link() {
    with_broker(async {
        let key = unique("fanout.stalled.");
        let topic = format!("/topic/{key}");
        let (server, url) = shared_relay_server(
            |c| c.outbox_bytes = 1024 * 1024,
            |relay| {
                relay.connections = 1;
            },
        )
        .await;
        let mut stalled = connect_subscribed(&url, "s", &topic, "auto").await;
        let mut reader = connect_subscribed(&url, "r", &topic, "auto").await;
        // 64 MiB: more than the stalled client's socket buffers and outbox
        // can hold, so it must be cut off long before the end.
        const COUNT: usize = 4000;
        let body = "x".repeat(16 * 1024);
        // In batches the reader takes before the next: nothing in the shared
        // relay paces a publisher for its subscribers, and the reader must
        // not be the slow one. The stalled client falls further behind with
        // every batch.
        const BATCH: usize = 20;
        let messaging = server.messaging();
        for batch in 0..COUNT / BATCH {
            for n in batch * BATCH..(batch + 1) * BATCH {
                messaging
                    .publish(&topic, format!("{n}:{body}"))
                    .await
                    .expect("publish");
            }
            for n in batch * BATCH..(batch + 1) * BATCH {
                let m = next_message(&mut reader).await;
                assert!(
                    m.body.starts_with(format!("{n}:").as_bytes()),
                    "out of order or missing at {n}"
                );
            }
        }
        // The stalled client's connection ends (its outbox overflowed, or its
        // write stalled past the send time limit): reading now, it finds
        // what had reached it, then an ERROR or the close.
        let ended = loop {
            match stalled.next_frame_within(WAIT).await {
                Ok(Some(f)) if f.command == Command::Error => break true,
                Ok(Some(_)) => {}
                Ok(None) => break true,
                Err(ClientError::Io(e)) if e.kind() == std::io::ErrorKind::TimedOut => break false,
                Err(_) => break true,
            }
        };
        assert!(ended, "the stalled subscriber is still connected");
        assert!(
            server.stats().slow_consumers >= 1,
            "the stalled subscriber was not counted as a slow consumer"
        );
        server.shutdown().await.expect("shutdown");
    })
    .await;
}

/// A client-acknowledging consumer that leaves (UNSUBSCRIBE, or its
/// connection closing) with messages it never acknowledged: RabbitMQ
/// keeps those on the broker connection that received them until it
/// closes, so the shared relay's acknowledging link retires and closes,
/// and another consumer gets them all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_return_to_the_queue_when_a_consumer_leaves() {
    with_broker(async {
        let (server, url) = shared_relay_server(|_| {}, |_| {}).await;
        for by_disconnect in [false, true] {
            let queue = unique("/queue/shared-unacked-");
            let mut producer = connect(&url).await;
            let sent: BTreeSet<String> = (0..5).map(|n| format!("m{n}")).collect();
            send_each(&mut producer, &queue, &sent).await;
            let mut leaving = connect_subscribed(&url, "q", &queue, "client-individual").await;
            for _ in 0..sent.len() {
                next_message(&mut leaving).await;
            }
            if by_disconnect {
                drop(leaving);
            } else {
                leaving
                    .send_with_receipt(Frame::new(Command::Unsubscribe).header("id", "q"), "u")
                    .await
                    .expect("unsubscribe");
            }
            let mut other = connect_subscribed(&url, "q", &queue, "client-individual").await;
            let mut seen = BTreeSet::new();
            while seen.len() < sent.len() {
                let m = next_message(&mut other).await;
                assert_eq!(m.headers.get("redelivered"), Some("true"), "{m:?}");
                let ack = m.headers.get("ack").expect("ack").to_owned();
                other
                    .send(&Frame::new(Command::Ack).header("id", &ack))
                    .await
                    .expect("ack");
                seen.insert(String::from_utf8_lossy(&m.body).into_owned());
            }
            assert_eq!(seen, sent, "by disconnect: {by_disconnect}");
        }
        server.shutdown().await.expect("shutdown");
    })
    .await;
}

/// `relay.prefetch` bounds what the broker hands one client-acknowledging
/// subscription: a consumer that acknowledges nothing holds that many, and
/// the rest go to another consumer of the queue. ACKs through the relay's
/// own ack ids reach the broker (acknowledged messages never come back).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetch_bounds_what_a_slow_consumer_holds() {
    with_broker(async {
        let (server, url) = shared_relay_server(|_| {}, |relay| relay.prefetch = 3).await;
        let queue = unique("/queue/shared-prefetch-");
        let mut holder = connect_subscribed(&url, "h", &queue, "client").await;
        let mut producer = connect(&url).await;
        send_each(&mut producer, &queue, (0..10).map(|n| format!("m{n}"))).await;
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(next_message(&mut holder).await);
        }
        let mut other = connect_subscribed(&url, "o", &queue, "auto").await;
        for _ in 0..7 {
            let m = next_message(&mut other).await;
            assert!(
                !held.iter().any(|h| h.body == m.body),
                "a held message went to another consumer: {m:?}"
            );
        }
        // `client` mode: one ACK of the last acknowledges all three; the
        // broker forgets them, so nobody gets them again.
        let ack = held[2].headers.get("ack").expect("ack").to_owned();
        holder
            .send_with_receipt(Frame::new(Command::Ack).header("id", &ack), "a")
            .await
            .expect("ack");
        drop(holder);
        send_each(&mut producer, &queue, ["marker"]).await;
        assert_eq!(next_message(&mut other).await.body.as_ref(), b"marker");
        server.shutdown().await.expect("shutdown");
    })
    .await;
}

/// A name RabbitMQ refuses with an ERROR that closes the connection it came
/// on (a queue under its reserved `amq.` prefix, an empty name) is refused by
/// the relay itself: through the shared relay that connection carries other
/// clients' frames and subscriptions. With one pool link that reconnects
/// slowly, a bystander's SEND right after must still be confirmed and reach
/// the topic's subscriber.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_name_rabbitmq_refuses_does_not_take_a_shared_link_down() {
    with_broker(async {
        let (server, url) = shared_relay_server(
            |_| {},
            |relay| {
                relay.connections = 1;
                relay.reconnect_initial = Duration::from_secs(10);
                relay.reconnect_max = Duration::from_secs(10);
            },
        )
        .await;
        let topic = unique("/topic/shared-bystander-");
        let mut subscriber = connect_subscribed(&url, "t", &topic, "auto").await;
        let reserved = unique("/queue/amq.relay-");
        let mut attacker = connect(&url).await;
        expect_refused(
            &mut attacker,
            Frame::new(Command::Send)
                .header("destination", &reserved)
                .body("x"),
            &reserved,
        )
        .await;
        let mut attacker = connect(&url).await;
        expect_refused(
            &mut attacker,
            subscribe_frame("q", &reserved, "client-individual"),
            &reserved,
        )
        .await;
        let mut attacker = connect(&url).await;
        expect_refused(
            &mut attacker,
            Frame::new(Command::Send)
                .header("destination", "/queue/")
                .body("x"),
            "/queue/",
        )
        .await;
        // RabbitMQ refuses a SEND with a `message-id`: the relay drops it.
        let mut sender = connect(&url).await;
        sender
            .send_with_receipt(text(&topic, "with an id").header("message-id", "mine"), "m")
            .await
            .expect("a SEND with a message-id");
        assert_eq!(
            message_with_body(&mut subscriber, "with an id")
                .await
                .body
                .as_ref(),
            b"with an id"
        );
        let mut bystander = connect(&url).await;
        bystander
            .send_with_receipt(text(&topic, "still here"), "s")
            .await
            .expect("a bystander's SEND after the refused frames");
        assert_eq!(
            message_with_body(&mut subscriber, "still here")
                .await
                .body
                .as_ref(),
            b"still here"
        );
        server.shutdown().await.expect("shutdown");
    })
    .await;
}

/// A consumer that leaves with unacknowledged messages while another
/// client's subscription shares its acknowledging link: RabbitMQ hands the
/// messages back only when that link closes, so the retiring link closes
/// after `relay.retire_timeout` even though the other subscription lives;
/// its client is told with an ERROR.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unacknowledged_messages_return_while_another_subscription_keeps_the_link() {
    with_broker(async {
        let (server, url) = shared_relay_server(
            |_| {},
            |relay| relay.retire_timeout = Duration::from_secs(1),
        )
        .await;
        let mut keeper = connect(&url).await;
        let kept = unique("/queue/shared-keeper-");
        subscribe(&mut keeper, "k", &kept, "client-individual").await;
        let queue = unique("/queue/shared-held-");
        let mut producer = connect(&url).await;
        send_each(&mut producer, &queue, (0..3).map(|n| format!("m{n}"))).await;
        let mut leaving = connect_subscribed(&url, "q", &queue, "client-individual").await;
        for _ in 0..3 {
            next_message(&mut leaving).await;
        }
        drop(leaving);
        let mut other = connect_subscribed(&url, "q", &queue, "client-individual").await;
        for _ in 0..3 {
            let m = next_message(&mut other).await;
            assert_eq!(m.headers.get("redelivered"), Some("true"), "{m:?}");
        }
        // The keeper's subscription was on the link that closed.
        assert!(
            told_an_error(&mut keeper).await,
            "the keeper was not told its link closed"
        );
        server.shutdown().await.expect("shutdown");
    })
    .await;
}

/// Messages unacknowledged on RabbitMQ's side of `queue` (its name without
/// `/queue/`).
async fn unacknowledged_in(queue: &str) -> usize {
    let output = tokio::process::Command::new("rabbitmqctl")
        .args([
            "--quiet",
            "list_queues",
            "--no-table-headers",
            "name",
            "messages_unacknowledged",
        ])
        .output()
        .await
        .expect("rabbitmqctl");
    assert!(output.status.success(), "rabbitmqctl list_queues failed");
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some(queue)).then(|| words.next()?.parse().ok())?
        })
        .next()
        .unwrap_or_default()
}

/// An `ack:auto` queue consumer cut off as a slow consumer while the
/// broker still delivers to it: what its outbox could not take is never
/// acknowledged upstream, so the acknowledging link must close once the
/// consumer is gone, handing those messages back. Before, the link stayed
/// (nothing marked it retiring) and they stayed unacknowledged for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_off_auto_ack_consumer_leaves_no_message_stranded() {
    with_broker(async {
        let (server, url) = shared_relay_server(|c| c.outbox_bytes = 256 * 1024, |_| {}).await;
        let name = unique("shared-stranded-");
        let _cleanup = DeleteQueue(name.clone());
        let queue = format!("/queue/{name}");
        let body = "x".repeat(512 * 1024);
        for n in 0..40 {
            server
                .messaging()
                .publish(&queue, format!("{n}:{body}"))
                .await
                .expect("publish");
        }
        let mut stalled = connect_subscribed(&url, "q", &queue, "auto").await;
        // It reads nothing until it is cut off; then what reached it, to
        // the end of its connection.
        tokio::time::timeout(WAIT, async {
            while server.stats().slow_consumers == 0 {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        })
        .await
        .expect("the stalled consumer was not cut off");
        while let Ok(Some(_)) = stalled.next_frame_within(WAIT).await {}
        drop(stalled);
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let unacked = unacknowledged_in(&name).await;
            if unacked == 0 {
                break;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{unacked} messages stay unacknowledged after their consumer is gone"
            );
        }
        server.shutdown().await.expect("shutdown");
    })
    .await;
}

/// The relay's figures, once `ready` holds of them: they move on the
/// relay's own tasks (a link connecting, an acknowledging link opening),
/// with no frame to the client to wait for.
async fn relay_figures_once(
    server: &ServerHandle,
    ready: impl Fn(&stompbox::broker::BrokerStats, &stompbox::broker::RelayStats) -> bool,
) -> stompbox::broker::RelayStats {
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let stats = server.broker_stats();
            let relay = stats.relay.clone().expect("relay figures");
            if ready(&stats, &relay) {
                return relay;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("relay figures never ready: {:?}", server.broker_stats()))
}

/// Against RabbitMQ, in each mode: the relay counts its open connections to
/// the broker, its pool links, and the subscriptions it holds there, as
/// clients subscribe and leave; it lists its shared topics, and refuses to
/// purge (STOMP has no purge).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relay_figures_follow_links_and_subscriptions() {
    in_each_mode(|mode| async move {
        let name = unique("stompbox-test-figures-");
        let _cleanup = DeleteQueue(name.clone());
        let _bound = DeleteBoundQueues(name.clone());
        let queue = format!("/queue/{name}");
        let topic = format!("/topic/{name}");
        let (server, url) = relay_server_with(|relay| {
            relay.mode = mode;
            relay.connections = 2;
        })
        .await;
        let shared = mode == RelayMode::Shared;
        // Available needs one pool link; the other may still be connecting.
        let relay = relay_figures_once(&server, |_, r| r.links_up == r.links_total).await;
        assert!(relay.available);
        assert_eq!(relay.mode, if shared { "shared" } else { "per-session" });
        let links = if shared { 2 } else { 0 };
        assert_eq!((relay.links_up, relay.links_total), (links, links));
        // The system link, and the pool links.
        assert_eq!(relay.broker_connections, 1 + links);
        assert_eq!((relay.reconnects, relay.connection_failures), (0, 0));

        let mut client = connect(&url).await;
        subscribe(&mut client, "t", &topic, "auto").await;
        subscribe(&mut client, "q", &queue, "client-individual").await;
        // Shared: an acknowledging link opened for the client-ack queue
        // subscription; per-session: the client's own link.
        let relay = relay_figures_once(&server, |s, r| {
            s.subscriptions == 2 && r.upstream_subscriptions == 2
        })
        .await;
        assert_eq!(relay.broker_connections, 1 + links + 1);
        if shared {
            assert_eq!(relay.relayed_topic_subscribers, 1);
            let listed = server.broker_destinations(100);
            assert_eq!(
                listed
                    .iter()
                    .map(|d| (d.name.as_str(), d.subscribers))
                    .collect::<Vec<_>>(),
                [(topic.as_str(), 1)]
            );
        } else {
            assert!(server.broker_destinations(100).is_empty());
        }

        client
            .send_with_receipt(Frame::new(Command::Unsubscribe).header("id", "t"), "u")
            .await
            .expect("unsubscribe");
        let stats = server.broker_stats();
        assert_eq!(stats.subscriptions, 1);
        let relay = stats.relay.expect("relay figures");
        assert_eq!(relay.upstream_subscriptions, 1);
        assert_eq!(relay.relayed_topic_subscribers, 0);
        assert!(matches!(
            server.purge_queue(&queue).await,
            Err(stompbox::broker::BrokerError::NotAllowed(why)) if why.contains("console")
        ));

        client
            .send_with_receipt(Frame::new(Command::Disconnect), "bye")
            .await
            .expect("disconnect");
        // Shared: the acknowledging link stays for the next client;
        // per-session: the client's link closes.
        let open = 1 + links + usize::from(shared);
        let relay = relay_figures_once(&server, |s, r| {
            s.subscriptions == 0 && r.upstream_subscriptions == 0 && r.broker_connections == open
        })
        .await;
        assert_eq!((relay.reconnects, relay.connection_failures), (0, 0));
        server.shutdown().await.expect("shutdown");
    })
    .await;
}
