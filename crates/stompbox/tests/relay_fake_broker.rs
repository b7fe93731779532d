//! The relay against fake brokers on loopback: one that drops every
//! connection (reconnects must back off), one that answers nothing after
//! CONNECTED (receipts must not be invented).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use stompbox::broker::relay::{RelayConfig, RelayMode};
use stompbox::{Server, ServerConfig, ServerHandle};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

/// What a fake broker does after reading one frame.
enum Reply {
    Nothing,
    Send(String),
    /// Hang up on the relay.
    Close,
}

/// A fake STOMP broker on loopback; returns its address. For each accepted
/// connection `connection` is called once and gives the handler of that
/// connection's frames (each without its NUL and leading heart-beat EOLs),
/// or `None` to hang up right after CONNECTED. The CONNECT itself is read
/// and answered here.
async fn fake_broker<H>(connection: impl Fn() -> Option<H> + Send + 'static) -> String
where
    H: FnMut(&str) -> Reply + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let handler = connection();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                if stream.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                let _ = stream
                    .write_all(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0")
                    .await;
                let Some(mut on_frame) = handler else {
                    return;
                };
                let mut pending = String::new();
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                    while let Some(end) = pending.find('\0') {
                        let frame: String = pending.drain(..=end).collect();
                        let frame = frame[..end].trim_start_matches(['\n', '\r']);
                        match on_frame(frame) {
                            Reply::Nothing => {}
                            Reply::Send(reply) => {
                                let _ = stream.write_all(reply.as_bytes()).await;
                            }
                            Reply::Close => return,
                        }
                    }
                }
            });
        }
    });
    address
}

/// As [`fake_broker`], with one stateless handler for every connection.
async fn fake_broker_answering(on_frame: fn(&str) -> Reply) -> String {
    fake_broker(move || Some(on_frame)).await
}

/// The value of a fake broker's frame header `name`.
fn header(frame: &str, name: &str) -> Option<String> {
    let prefix = format!("{name}:");
    frame
        .lines()
        .find_map(|line| line.strip_prefix(prefix.as_str()))
        .map(str::to_owned)
}

/// A RECEIPT for the frame's `receipt` header, if it has one.
fn receipt_for(frame: &str) -> String {
    header(frame, "receipt")
        .map(|receipt| format!("RECEIPT\nreceipt-id:{receipt}\n\n\0"))
        .unwrap_or_default()
}

/// A server relaying to the broker at `address`, configured by `configure`.
async fn relay_to(
    address: String,
    configure: impl FnOnce(&mut ServerConfig, &mut RelayConfig),
) -> ServerHandle {
    let mut config = ServerConfig::default();
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    let mut relay = RelayConfig::default();
    relay.addresses = vec![address];
    configure(&mut config, &mut relay);
    config.relay = Some(relay);
    Server::bind(config).await.expect("bind").spawn()
}

/// As [`relay_to`], once the relay has reached the broker; with the URL
/// clients connect to.
async fn relay_server(
    address: String,
    configure: impl FnOnce(&mut ServerConfig, &mut RelayConfig),
) -> (ServerHandle, String) {
    let server = relay_to(address, configure).await;
    let mut available = server.broker_availability();
    tokio::time::timeout(Duration::from_secs(10), available.wait_for(|up| *up))
        .await
        .expect("fake broker not available")
        .expect("availability");
    let url = format!("ws://{}/ws", server.http_addr().expect("addr"));
    (server, url)
}

/// As [`relay_server`], for anonymous clients through a shared relay with one
/// pool link.
async fn shared_relay_server(
    address: String,
    configure: impl FnOnce(&mut RelayConfig),
) -> (ServerHandle, String) {
    relay_server(address, |config, relay| {
        config.auth.allow_anonymous = true;
        relay.mode = RelayMode::Shared;
        relay.connections = 1;
        configure(relay);
    })
    .await
}

/// Subscribes `client` to `/queue/fake` with client-individual acks, as
/// subscription `s`, and waits for the receipt.
async fn subscribe_client_individual(client: &mut stompbox::client::Client) {
    use stompbox::codec::{Command, Frame};
    client
        .send_with_receipt(
            Frame::new(Command::Subscribe)
                .header("id", "s")
                .header("destination", "/queue/fake")
                .header("ack", "client-individual"),
            "sub",
        )
        .await
        .expect("subscribe");
}

/// The next MESSAGE `client` receives, passing over other frames.
async fn next_message(client: &mut stompbox::client::Client) -> stompbox::codec::Frame {
    loop {
        let frame = client
            .next_frame_within(Duration::from_secs(10))
            .await
            .expect("read")
            .expect("closed");
        if frame.command == stompbox::codec::Command::Message {
            return frame;
        }
    }
}

async fn connect(url: &str) -> stompbox::client::Client {
    stompbox::client::Client::connect(url, &[])
        .await
        .expect("connect")
        .0
}

#[tokio::test]
async fn a_broker_that_drops_every_connection_is_retried_with_backoff() {
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    // Answer CONNECTED, then hang up.
    let address = fake_broker(move || {
        counter.fetch_add(1, Ordering::Relaxed);
        None::<fn(&str) -> Reply>
    })
    .await;
    let server = relay_to(address, |_, relay| {
        relay.reconnect_initial = Duration::from_millis(200);
        relay.reconnect_max = Duration::from_secs(1);
        // Two reconnecting links: the system connection and one pool link of
        // the shared mode.
        relay.connections = 1;
    })
    .await;
    // The window is what is measured: how many connections in 2 s.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let count = accepted.load(Ordering::Relaxed);
    server.shutdown().await.expect("shutdown");
    // Doubling from 100–200 ms up to 1 s allows at most a handful per
    // link; a tight loop makes thousands.
    assert!((4..=30).contains(&count), "{count} connections in 2 s");
}

/// A broker that accepts every connection and never answers anything else:
/// the relay must not invent receipts on its behalf, in either mode (the
/// shared one confirms what a session sent on each link it used).
#[tokio::test]
async fn a_disconnect_receipt_waits_for_the_brokers_own() {
    for mode in [RelayMode::Shared, RelayMode::PerSession] {
        disconnect_receipt_waits_for_the_broker(mode).await;
    }
}

async fn disconnect_receipt_waits_for_the_broker(mode: RelayMode) {
    // Swallow everything, answer nothing.
    let address = fake_broker_answering(|_| Reply::Nothing).await;
    let (server, url) = relay_server(address, |_, relay| {
        relay.connect_timeout = Duration::from_millis(500);
        relay.mode = mode;
    })
    .await;
    let mut client = connect(&url).await;
    // Something for the broker to confirm: through the shared relay a
    // session that sent nothing has nothing to wait for.
    for destination in ["/topic/fake.unconfirmed", "/topic/anything"] {
        client
            .send(
                &stompbox::codec::Frame::new(stompbox::codec::Command::Send)
                    .header("destination", destination)
                    .body("x"),
            )
            .await
            .expect("send");
    }
    client
        .send(
            &stompbox::codec::Frame::new(stompbox::codec::Command::Disconnect)
                .header("receipt", "bye"),
        )
        .await
        .expect("send");
    // The connection ends without a RECEIPT: the broker never confirmed.
    while let Ok(Some(frame)) = client.next_frame_within(Duration::from_secs(10)).await {
        assert_ne!(
            frame.command,
            stompbox::codec::Command::Receipt,
            "a RECEIPT the broker never sent"
        );
    }
    server.shutdown().await.expect("shutdown");
}

/// A broker that hangs up on every SUBSCRIBE: a shared relay's pool link is
/// lost before the broker confirmed a subscription of its own (one with a
/// broker option), and the client waiting for that SUBSCRIBE's receipt is
/// told so, instead of waiting for a receipt that will never come.
#[tokio::test]
async fn a_subscribe_receipt_lost_with_its_pool_link_is_answered_with_an_error() {
    use stompbox::codec::{Command, Frame};
    let address = fake_broker_answering(|frame| {
        if frame.starts_with("SUBSCRIBE\n") {
            Reply::Close
        } else {
            Reply::Nothing
        }
    })
    .await;
    let (server, url) = shared_relay_server(address, |relay| {
        relay.subscribe_headers = vec!["x-option".into()];
        relay.reconnect_initial = Duration::from_secs(5);
        relay.reconnect_max = Duration::from_secs(5);
    })
    .await;
    let mut client = connect(&url).await;
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "s")
                .header("destination", "/topic/fake.option")
                .header("x-option", "1")
                .header("receipt", "sub"),
        )
        .await
        .expect("send");
    let frame = client
        .next_frame_within(Duration::from_secs(3))
        .await
        .expect("no answer to the SUBSCRIBE's receipt")
        .expect("closed without an answer");
    assert_eq!(frame.command, Command::Error, "{frame:?}");
    assert_eq!(frame.headers.get("receipt-id"), Some("sub"), "{frame:?}");
    server.shutdown().await.expect("shutdown");
}

/// A broker that confirms a SUBSCRIBE, delivers one message to it, and then
/// answers nothing: through the shared relay the client's ACK goes on an
/// acknowledging link, and its DISCONNECT's receipt must wait for the broker
/// to have taken that ACK (which it never confirms here), as it waits for
/// the session's SENDs.
#[tokio::test]
async fn a_disconnect_receipt_waits_for_the_acks_the_session_sent() {
    use stompbox::codec::{Command, Frame};
    let address = fake_broker_answering(|frame| {
        if !frame.starts_with("SUBSCRIBE\n") {
            return Reply::Nothing;
        }
        let id = header(frame, "id").unwrap_or_default();
        let receipt = header(frame, "receipt").unwrap_or_default();
        Reply::Send(format!(
            "RECEIPT\nreceipt-id:{receipt}\n\n\0MESSAGE\nsubscription:{id}\n\
             destination:/queue/fake\nmessage-id:m1\nack:a1\n\nbody\0"
        ))
    })
    .await;
    let (server, url) = relay_server(address, |config, relay| {
        config.auth.allow_anonymous = true;
        relay.mode = RelayMode::Shared;
        relay.connect_timeout = Duration::from_secs(30);
    })
    .await;
    let mut client = connect(&url).await;
    subscribe_client_individual(&mut client).await;
    let message = next_message(&mut client).await;
    let ack = message.headers.get("ack").expect("ack header").to_owned();
    client
        .send(&Frame::new(Command::Ack).header("id", &ack))
        .await
        .expect("ack");
    client
        .send(&Frame::new(Command::Disconnect).header("receipt", "bye"))
        .await
        .expect("disconnect");
    // The broker never confirms the ACK: no RECEIPT within the wait.
    if let Ok(Some(frame)) = client.next_frame_within(Duration::from_secs(2)).await {
        assert_ne!(
            frame.command,
            Command::Receipt,
            "a DISCONNECT receipt before the broker took the session's ACK"
        );
    }
    server.shutdown().await.expect("shutdown");
}

/// A broker that confirms every receipted frame and hangs up on a SEND whose
/// body is `die`: through the shared relay the session that sent on the lost
/// pool link (without a receipt, so nothing else would tell it) gets an
/// ERROR, while a session that only subscribed stays connected, and a
/// sender whose frames the broker confirmed before (a checkpoint) does too.
#[tokio::test]
async fn a_lost_pool_link_ends_only_the_sessions_that_may_have_lost_a_send() {
    use stompbox::codec::{Command, Frame};
    let address = fake_broker_answering(|frame| {
        if frame.starts_with("SEND\n") && frame.ends_with("\n\ndie") {
            Reply::Close
        } else {
            Reply::Send(receipt_for(frame))
        }
    })
    .await;
    let (server, url) = shared_relay_server(address, |relay| {
        relay.reconnect_initial = Duration::from_millis(100);
        relay.reconnect_max = Duration::from_millis(200);
    })
    .await;
    let mut listener_only = connect(&url).await;
    listener_only
        .send_with_receipt(
            Frame::new(Command::Subscribe)
                .header("id", "s")
                .header("destination", "/topic/fake.listen"),
            "s",
        )
        .await
        .expect("subscribe");
    // A sender whose SEND the broker has confirmed since: a checkpoint
    // (once a second) or its own receipt.
    let mut confirmed = connect(&url).await;
    confirmed
        .send_with_receipt(
            Frame::new(Command::Send)
                .header("destination", "/topic/fake.ok")
                .body("fine"),
            "c",
        )
        .await
        .expect("receipted send");
    // Its RECEIPT came: the broker has everything it sent, and a lost link
    // costs it nothing. (A sender without receipts is cleared the same way
    // by the relay's checkpoint, an empty transaction once a second.)
    let mut doomed = connect(&url).await;
    doomed
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/topic/fake.die")
                .body("die"),
        )
        .await
        .expect("send");
    let told = doomed
        .next_frame_within(Duration::from_secs(10))
        .await
        .expect("no answer")
        .expect("closed without an ERROR");
    assert_eq!(told.command, Command::Error, "{told:?}");
    assert!(
        told.headers
            .get("message")
            .is_some_and(|m| m.contains("may not have arrived")),
        "{told:?}"
    );
    // The others are still there: each can still have a SUBSCRIBE confirmed
    // once the link is back.
    for (client, id) in [(&mut listener_only, "again-1"), (&mut confirmed, "again-2")] {
        client
            .send_with_receipt(
                Frame::new(Command::Subscribe)
                    .header("id", id)
                    .header("destination", "/topic/fake.after"),
                id,
            )
            .await
            .expect("still connected after the link was lost");
    }
    server.shutdown().await.expect("shutdown");
}

/// A broker that confirms every receipted frame, delivers two messages to
/// each SUBSCRIBE and hangs up on DISCONNECT. Through the shared relay a
/// client ACKs one message on its acknowledging link and unsubscribes with
/// the other unacknowledged: the link retires and the relay closes it,
/// after the ACK. The client's DISCONNECT receipt is then owed (the broker
/// took the ACK before it closed); it was never given, as the relay asked
/// a link that no longer existed to confirm it.
#[tokio::test]
async fn a_disconnect_receipt_comes_after_the_acknowledging_link_it_used_was_closed() {
    use stompbox::codec::{Command, Frame};
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    let address = fake_broker(move || {
        let closed_tx = closed_tx.clone();
        Some(move |frame: &str| {
            if frame.starts_with("DISCONNECT\n") {
                let _ = closed_tx.send(());
                return Reply::Close;
            }
            let mut reply = receipt_for(frame);
            if frame.starts_with("SUBSCRIBE\n") {
                let id = header(frame, "id").unwrap_or_default();
                for n in 1..=2 {
                    reply.push_str(&format!(
                        "MESSAGE\nsubscription:{id}\ndestination:/queue/fake\n\
                         message-id:m{n}\nack:a{n}\n\nbody\0"
                    ));
                }
            }
            Reply::Send(reply)
        })
    })
    .await;
    let (server, url) = shared_relay_server(address, |_| {}).await;
    let mut client = connect(&url).await;
    subscribe_client_individual(&mut client).await;
    let mut acks = Vec::new();
    while acks.len() < 2 {
        let message = next_message(&mut client).await;
        acks.push(message.headers.get("ack").expect("ack header").to_owned());
    }
    client
        .send(&Frame::new(Command::Ack).header("id", &acks[0]))
        .await
        .expect("ack");
    client
        .send_with_receipt(Frame::new(Command::Unsubscribe).header("id", "s"), "unsub")
        .await
        .expect("unsubscribe");
    // The acknowledging link, retired with one message held, is closed.
    tokio::time::timeout(Duration::from_secs(10), closed_rx.recv())
        .await
        .expect("the retired acknowledging link was not closed")
        .expect("fake broker");
    client
        .send(&Frame::new(Command::Disconnect).header("receipt", "bye"))
        .await
        .expect("disconnect");
    let frame = client
        .next_frame_within(Duration::from_secs(10))
        .await
        .expect("read")
        .expect("closed without the DISCONNECT's receipt");
    assert_eq!(frame.command, Command::Receipt, "{frame:?}");
    assert_eq!(frame.headers.get("receipt-id"), Some("bye"));
    server.shutdown().await.expect("shutdown");
}

/// A broker that floods each SUBSCRIBE with messages and counts the ACKs it
/// gets for a subscription after its UNSUBSCRIBE (RabbitMQ refuses those
/// with an ERROR, and the message stays unacknowledged on that connection).
/// Through the shared relay, queue consumers in `ack:auto` mode unsubscribe
/// while their acknowledging link still delivers: the relay acknowledged
/// deliveries it had begun before the UNSUBSCRIBE after it, stranding them
/// on a link that had no reason to close.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_ack_follows_the_unsubscribe_of_its_subscription() {
    use stompbox::codec::{Command, Frame};
    let late_acks = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&late_acks);
    let address = fake_broker(move || {
        let late_acks = Arc::clone(&counted);
        let mut gone: Vec<String> = Vec::new();
        Some(move |frame: &str| {
            if frame.starts_with("DISCONNECT\n") {
                return Reply::Close;
            }
            let id = header(frame, "id").unwrap_or_default();
            if frame.starts_with("UNSUBSCRIBE\n") {
                gone.push(id.clone());
            }
            if frame.starts_with("ACK\n") && gone.iter().any(|g| id.starts_with(&format!("{g}-"))) {
                late_acks.fetch_add(1, Ordering::Relaxed);
            }
            let mut reply = receipt_for(frame);
            if frame.starts_with("SUBSCRIBE\n") {
                for n in 0..2000 {
                    reply.push_str(&format!(
                        "MESSAGE\nsubscription:{id}\ndestination:/queue/fake\n\
                         message-id:{id}-{n}\nack:{id}-{n}\n\nbody\0"
                    ));
                }
            }
            Reply::Send(reply)
        })
    })
    .await;
    let (server, url) = shared_relay_server(address, |_| {}).await;
    for round in 0..200 {
        let mut client = connect(&url).await;
        client
            .send(
                &Frame::new(Command::Subscribe)
                    .header("id", "s")
                    .header("destination", "/queue/fake"),
            )
            .await
            .expect("subscribe");
        next_message(&mut client).await;
        client
            .send(
                &Frame::new(Command::Unsubscribe)
                    .header("id", "s")
                    .header("receipt", "unsub"),
            )
            .await
            .expect("unsubscribe");
        // Messages delivered before the UNSUBSCRIBE come first.
        loop {
            let frame = client
                .next_frame_within(Duration::from_secs(10))
                .await
                .expect("read")
                .unwrap_or_else(|| panic!("closed before the receipt in round {round}"));
            match frame.command {
                Command::Message => {}
                Command::Receipt => break,
                other => panic!("{other} in round {round}: {frame:?}"),
            }
        }
    }
    // The broker answered each UNSUBSCRIBE after reading what came before
    // it on that link; ACKs of a subscription after its UNSUBSCRIBE from
    // earlier rounds were counted when it read them.
    assert_eq!(
        late_acks.load(Ordering::Relaxed),
        0,
        "ACKs after their subscription's UNSUBSCRIBE"
    );
    server.shutdown().await.expect("shutdown");
}

/// The relay's figures (`broker_stats`), once `ready` holds of them; the
/// figures move on the relay's own tasks, with no frame to wait for.
async fn relay_stats_once(
    server: &ServerHandle,
    ready: impl Fn(&stompbox::broker::RelayStats) -> bool,
) -> stompbox::broker::RelayStats {
    let found = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let relay = server.broker_stats().relay.expect("relay figures");
            if ready(&relay) {
                return relay;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await;
    found.unwrap_or_else(|_| panic!("relay figures never ready: {:?}", server.broker_stats()))
}

/// A broker that confirms everything and hangs up on a SEND to
/// `/topic/fake.hangup`: the shared relay's figures count its open links,
/// the shared topic subscription and its local subscribers, and the pool
/// link lost and connected again as one reconnect.
#[tokio::test]
async fn relay_figures_count_open_links_subscriptions_and_a_reconnect() {
    use stompbox::codec::{Command, Frame};
    let address = fake_broker_answering(|frame| {
        if frame.starts_with("SEND\n")
            && header(frame, "destination").as_deref() == Some("/topic/fake.hangup")
        {
            Reply::Close
        } else {
            Reply::Send(receipt_for(frame))
        }
    })
    .await;
    let (server, url) = shared_relay_server(address, |relay| {
        relay.reconnect_initial = Duration::from_millis(50);
        relay.reconnect_max = Duration::from_millis(200);
    })
    .await;
    let relay = relay_stats_once(&server, |r| r.links_up == 1).await;
    assert_eq!(relay.mode, "shared");
    assert!(relay.available);
    assert_eq!((relay.links_up, relay.links_total), (1, 1));
    // The system link and the pool link.
    assert_eq!(relay.broker_connections, 2);
    assert_eq!((relay.reconnects, relay.connection_failures), (0, 0));

    let mut subscribers = Vec::new();
    for _ in 0..2 {
        let mut client = connect(&url).await;
        client
            .send_with_receipt(
                Frame::new(Command::Subscribe)
                    .header("id", "s")
                    .header("destination", "/topic/fake.news")
                    .header("ack", "auto"),
                "sub",
            )
            .await
            .expect("subscribe");
        subscribers.push(client);
    }
    let stats = server.broker_stats();
    assert_eq!((stats.subscriptions, stats.destinations), (2, 1));
    let relay = stats.relay.expect("relay figures");
    assert_eq!(relay.upstream_subscriptions, 1);
    assert_eq!(relay.relayed_topic_subscribers, 2);
    let listed = server.broker_destinations(10);
    assert_eq!(listed.len(), 1, "{listed:?}");
    assert_eq!(
        (listed[0].name.as_str(), listed[0].subscribers),
        ("/topic/fake.news", 2)
    );

    let mut sender = connect(&url).await;
    sender
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/topic/fake.hangup")
                .body("bye"),
        )
        .await
        .expect("send");
    let relay = relay_stats_once(&server, |r| {
        r.reconnects == 1 && r.links_up == 1 && r.broker_connections == 2
    })
    .await;
    assert_eq!(relay.connection_failures, 0);
    // The topic subscription is subscribed again on the new link, and its
    // local subscribers stayed.
    let relay = relay_stats_once(&server, |r| r.upstream_subscriptions == 1).await;
    assert_eq!(relay.relayed_topic_subscribers, 2);

    for mut client in subscribers {
        client
            .send_with_receipt(Frame::new(Command::Unsubscribe).header("id", "s"), "u")
            .await
            .expect("unsubscribe");
    }
    let stats = server.broker_stats();
    assert_eq!((stats.subscriptions, stats.destinations), (0, 0));
    let relay = stats.relay.expect("relay figures");
    assert_eq!(
        (
            relay.upstream_subscriptions,
            relay.relayed_topic_subscribers
        ),
        (0, 0)
    );
    assert!(server.broker_destinations(10).is_empty());
    assert!(matches!(
        server.purge_queue("/queue/fake").await,
        Err(stompbox::broker::BrokerError::NotAllowed(why)) if why.contains("console")
    ));
    server.shutdown().await.expect("shutdown");
}

/// Nothing listens at the broker's address: every link's attempts fail and
/// are counted, and no connection is open.
#[tokio::test]
async fn failed_connects_to_an_absent_broker_are_counted() {
    let address = {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        listener.local_addr().expect("addr").to_string()
    };
    let server = relay_to(address, |_, relay| {
        relay.connections = 1;
        relay.reconnect_initial = Duration::from_millis(50);
        relay.reconnect_max = Duration::from_millis(200);
    })
    .await;
    // The system link and the pool link each failed at least once.
    let relay = relay_stats_once(&server, |r| r.connection_failures >= 2).await;
    assert!(!relay.available);
    assert_eq!(
        (relay.broker_connections, relay.links_up, relay.reconnects),
        (0, 0, 0)
    );
    server.shutdown().await.expect("shutdown");
}

/// What [`ordering_broker`] reports, and how the test steers it.
struct OrderingBroker {
    address: String,
    /// A SEND's pool connection (0 the first to connect, 1 the second),
    /// destination and number, as it arrives.
    arrived: tokio::sync::mpsc::UnboundedReceiver<(usize, String, u32)>,
    /// A SEND's destination and number as the broker takes it (into a
    /// queue, in the order a queue would hold it).
    taken: tokio::sync::mpsc::UnboundedReceiver<(String, u32)>,
    /// Set: the second pool connection gets its CONNECTED.
    connect_second: tokio::sync::watch::Sender<bool>,
    /// Set: the first pool connection takes (and confirms) what it was
    /// sent; until then it holds every frame, answering no receipt.
    release_first: tokio::sync::watch::Sender<bool>,
}

/// A fake broker that orders SENDs per connection only, as RabbitMQ does:
/// the first pool connection (login `pool`) is slow, holding what it reads
/// until released; the second is not answered CONNECTED until released;
/// every other connection (the system link) and a released pool connection
/// take frames as they come and answer their receipts.
async fn ordering_broker() -> OrderingBroker {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let (arrived_tx, arrived) = tokio::sync::mpsc::unbounded_channel();
    let (taken_tx, taken) = tokio::sync::mpsc::unbounded_channel();
    let (connect_second, connect_rx) = tokio::sync::watch::channel(false);
    let (release_first, release_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        let pool_connections = Arc::new(AtomicUsize::new(0));
        while let Ok((mut stream, _)) = listener.accept().await {
            let pool_connections = Arc::clone(&pool_connections);
            let arrived = arrived_tx.clone();
            let taken = taken_tx.clone();
            let mut connect_rx = connect_rx.clone();
            let mut release_rx = release_rx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                let mut pending = String::new();
                while !pending.contains('\0') {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                }
                let end = pending.find('\0').unwrap_or_default();
                let connect: String = pending.drain(..=end).collect();
                let pool = (header(&connect, "login").as_deref() == Some("pool"))
                    .then(|| pool_connections.fetch_add(1, Ordering::Relaxed));
                if pool == Some(1) && connect_rx.wait_for(|go| *go).await.is_err() {
                    return;
                }
                if stream
                    .write_all(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0")
                    .await
                    .is_err()
                {
                    return;
                }
                let take = |frame: &str| {
                    if frame.starts_with("SEND\n") {
                        let destination = header(frame, "destination").unwrap_or_default();
                        let number = frame.rsplit("\n\n").next().unwrap_or_default();
                        let _ = taken.send((destination, number.parse().unwrap_or(0)));
                    }
                    receipt_for(frame)
                };
                let mut held = pool == Some(0) && !*release_rx.borrow();
                let mut holding: Vec<String> = Vec::new();
                loop {
                    let mut reply = String::new();
                    while let Some(end) = pending.find('\0') {
                        let frame: String = pending.drain(..=end).collect();
                        let frame = frame[..end].trim_start_matches(['\n', '\r']).to_owned();
                        if let Some(connection) = pool
                            && frame.starts_with("SEND\n")
                        {
                            let destination = header(&frame, "destination").unwrap_or_default();
                            let number = frame.rsplit("\n\n").next().unwrap_or_default();
                            let _ = arrived.send((
                                connection,
                                destination,
                                number.parse().unwrap_or(0),
                            ));
                        }
                        if held {
                            holding.push(frame);
                        } else {
                            reply.push_str(&take(&frame));
                        }
                    }
                    if !reply.is_empty() && stream.write_all(reply.as_bytes()).await.is_err() {
                        return;
                    }
                    tokio::select! {
                        n = stream.read(&mut buf) => {
                            let n = n.unwrap_or(0);
                            if n == 0 {
                                return;
                            }
                            pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                        }
                        released = async { release_rx.wait_for(|go| *go).await.is_ok() }, if held => {
                            if !released {
                                return;
                            }
                            held = false;
                            let reply: String = holding.drain(..).map(|f| take(&f)).collect();
                            if stream.write_all(reply.as_bytes()).await.is_err() {
                                return;
                            }
                        }
                    }
                }
            });
        }
    });
    OrderingBroker {
        address,
        arrived,
        taken,
        connect_second,
        release_first,
    }
}

/// The next `count` SENDs to arrive at the broker.
async fn arrivals(broker: &mut OrderingBroker, count: usize) -> Vec<(usize, String, u32)> {
    let mut out = Vec::with_capacity(count);
    while out.len() < count {
        let next = tokio::time::timeout(Duration::from_secs(10), broker.arrived.recv())
            .await
            .unwrap_or_else(|_| panic!("only {} of {count} SENDs arrived: {out:?}", out.len()))
            .expect("fake broker");
        out.push(next);
    }
    out
}

/// Through the shared relay with two pool links, a producer starts while
/// one link is still connecting: its SENDs to destinations of that link go
/// on the other. When the link comes up, SENDs the broker has not yet
/// confirmed on the other link would be overtaken by later ones on their
/// own link (a broker orders per connection only). They stay on the link
/// they used until the broker confirmed it all, then move; every queue
/// gets its messages in order.
#[tokio::test]
async fn sends_stay_on_their_fallback_link_until_the_broker_confirmed_them() {
    use stompbox::codec::{Command, Frame};
    const DESTINATIONS: usize = 8;
    let mut broker = ordering_broker().await;
    let (server, url) = relay_server(broker.address.clone(), |config, relay| {
        config.auth.allow_anonymous = true;
        relay.mode = RelayMode::Shared;
        relay.connections = 2;
        relay.system_login = "system".into();
        relay.client_login = Some("pool".into());
        relay.connect_timeout = Duration::from_secs(30);
    })
    .await;
    // Several destinations, so that some hash to the link still connecting.
    let destinations: Vec<String> = (0..DESTINATIONS)
        .map(|i| format!("/queue/order.{i}"))
        .collect();
    let mut client = connect(&url).await;
    let send = |destination: &str, number: u32| {
        Frame::new(Command::Send)
            .header("destination", destination)
            .body(number.to_string())
    };
    // While only the first pool link is up: everything goes there.
    for number in 1..=5 {
        for destination in &destinations {
            client.send(&send(destination, number)).await.expect("send");
        }
    }
    let early = arrivals(&mut broker, 5 * DESTINATIONS).await;
    assert!(early.iter().all(|(link, ..)| *link == 0), "{early:?}");
    // The second link comes up; the first has confirmed nothing yet.
    broker.connect_second.send_replace(true);
    relay_stats_once(&server, |r| r.links_up == 2).await;
    for number in 6..=10 {
        for destination in &destinations {
            client.send(&send(destination, number)).await.expect("send");
        }
    }
    let unconfirmed = arrivals(&mut broker, 5 * DESTINATIONS).await;
    // The first link confirms what it holds; after a receipt the producer
    // has nothing unconfirmed, and its SENDs go on their own links.
    broker.release_first.send_replace(true);
    for destination in &destinations {
        client
            .send_with_receipt(send(destination, 11), &format!("r-{destination}"))
            .await
            .expect("receipted send");
    }
    arrivals(&mut broker, DESTINATIONS).await;
    for destination in &destinations {
        client.send(&send(destination, 12)).await.expect("send");
    }
    let settled = arrivals(&mut broker, DESTINATIONS).await;

    let mut queues: std::collections::HashMap<String, Vec<u32>> = std::collections::HashMap::new();
    while queues.values().map(Vec::len).sum::<usize>() < 12 * DESTINATIONS {
        let (destination, number) =
            tokio::time::timeout(Duration::from_secs(10), broker.taken.recv())
                .await
                .unwrap_or_else(|_| panic!("not every SEND was taken: {queues:?}"))
                .expect("fake broker");
        queues.entry(destination).or_default().push(number);
    }
    let expected: Vec<u32> = (1..=12).collect();
    for (destination, queue) in &queues {
        assert_eq!(queue, &expected, "{destination} out of order");
    }
    assert!(
        unconfirmed.iter().all(|(link, ..)| *link == 0),
        "a SEND moved to its own link before the broker confirmed those sent before it \
         on another: {unconfirmed:?}"
    );
    // Some destinations are the second link's (else this test proves
    // nothing), and their SENDs went there once nothing was unconfirmed.
    assert!(
        settled.iter().any(|(link, ..)| *link == 1),
        "no SEND on the second link once confirmed: {settled:?}"
    );
    server.shutdown().await.expect("shutdown");
}
