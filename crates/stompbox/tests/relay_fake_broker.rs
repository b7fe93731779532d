//! The relay against fake brokers on loopback: one that drops every
//! connection (reconnects must back off), one that answers nothing after
//! CONNECTED (receipts must not be invented).

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use stompbox::broker::relay::{RelayConfig, RelayMode};
use stompbox::{Server, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

#[tokio::test]
async fn a_broker_that_drops_every_connection_is_retried_with_backoff() {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let accepted = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&accepted);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::Relaxed);
            tokio::spawn(async move {
                let mut buf = [0u8; 1024];
                // Read the CONNECT, answer CONNECTED, then hang up.
                let _ = stream.read(&mut buf).await;
                let _ = stream
                    .write_all(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0")
                    .await;
            });
        }
    });
    let mut config = ServerConfig::default();
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    let mut relay = RelayConfig::default();
    relay.addresses = vec![address];
    relay.reconnect_initial = Duration::from_millis(200);
    relay.reconnect_max = Duration::from_secs(1);
    // Two reconnecting links: the system connection and one pool link of
    // the shared mode.
    relay.connections = 1;
    config.relay = Some(relay);
    let server = Server::bind(config).await.expect("bind").spawn();
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
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if stream.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                let _ = stream
                    .write_all(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0")
                    .await;
                // Swallow everything else, answer nothing.
                while stream.read(&mut buf).await.unwrap_or(0) > 0 {}
            });
        }
    });
    let mut config = ServerConfig::default();
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    let mut relay = RelayConfig::default();
    relay.addresses = vec![address];
    relay.connect_timeout = Duration::from_millis(500);
    relay.mode = mode;
    config.relay = Some(relay);
    let server = Server::bind(config).await.expect("bind").spawn();
    let mut available = server.broker_availability();
    tokio::time::timeout(Duration::from_secs(10), available.wait_for(|up| *up))
        .await
        .expect("fake broker not available")
        .expect("availability");
    let url = format!("ws://{}/ws", server.http_addr().expect("addr"));
    let (mut client, _) = stompbox::client::Client::connect(&url, &[])
        .await
        .expect("connect");
    // Something for the broker to confirm: through the shared relay a
    // session that sent nothing has nothing to wait for.
    client
        .send(
            &stompbox::codec::Frame::new(stompbox::codec::Command::Send)
                .header("destination", "/topic/fake.unconfirmed")
                .body("x"),
        )
        .await
        .expect("send");
    client
        .send(
            &stompbox::codec::Frame::new(stompbox::codec::Command::Send)
                .header("destination", "/topic/anything")
                .body("x"),
        )
        .await
        .expect("send");
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
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                if stream.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                let _ = stream
                    .write_all(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0")
                    .await;
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 || buf[..n].windows(10).any(|w| w == b"SUBSCRIBE\n") {
                        return;
                    }
                }
            });
        }
    });
    let mut config = ServerConfig::default();
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    config.auth.allow_anonymous = true;
    let mut relay = RelayConfig::default();
    relay.addresses = vec![address];
    relay.mode = stompbox::broker::relay::RelayMode::Shared;
    relay.connections = 1;
    relay.subscribe_headers = vec!["x-option".into()];
    relay.reconnect_initial = Duration::from_secs(5);
    relay.reconnect_max = Duration::from_secs(5);
    config.relay = Some(relay);
    let server = Server::bind(config).await.expect("bind").spawn();
    let mut available = server.broker_availability();
    tokio::time::timeout(Duration::from_secs(10), available.wait_for(|up| *up))
        .await
        .expect("fake broker not available")
        .expect("availability");
    let url = format!("ws://{}/ws", server.http_addr().expect("addr"));
    let (mut client, _) = stompbox::client::Client::connect(&url, &[])
        .await
        .expect("connect");
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
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                if stream.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                let _ = stream
                    .write_all(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0")
                    .await;
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    let text = String::from_utf8_lossy(&buf[..n]).into_owned();
                    for frame in text.split('\0') {
                        let frame = frame.trim_start_matches(['\n', '\r']);
                        if !frame.starts_with("SUBSCRIBE\n") {
                            continue;
                        }
                        let header = |name: &str| {
                            frame
                                .lines()
                                .find_map(|l| l.strip_prefix(name))
                                .unwrap_or_default()
                                .to_owned()
                        };
                        let (id, receipt) = (header("id:"), header("receipt:"));
                        let reply = format!(
                            "RECEIPT\nreceipt-id:{receipt}\n\n\0MESSAGE\nsubscription:{id}\n\
                             destination:/queue/fake\nmessage-id:m1\nack:a1\n\nbody\0"
                        );
                        let _ = stream.write_all(reply.as_bytes()).await;
                    }
                }
            });
        }
    });
    let mut config = ServerConfig::default();
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    config.auth.allow_anonymous = true;
    let mut relay = RelayConfig::default();
    relay.addresses = vec![address];
    relay.mode = stompbox::broker::relay::RelayMode::Shared;
    relay.connect_timeout = Duration::from_secs(30);
    config.relay = Some(relay);
    let server = Server::bind(config).await.expect("bind").spawn();
    let mut available = server.broker_availability();
    tokio::time::timeout(Duration::from_secs(10), available.wait_for(|up| *up))
        .await
        .expect("fake broker not available")
        .expect("availability");
    let url = format!("ws://{}/ws", server.http_addr().expect("addr"));
    let (mut client, _) = stompbox::client::Client::connect(&url, &[])
        .await
        .expect("connect");
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
    let message = loop {
        let frame = client
            .next_frame_within(Duration::from_secs(10))
            .await
            .expect("read")
            .expect("closed");
        if frame.command == Command::Message {
            break frame;
        }
    };
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
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                if stream.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                let _ = stream
                    .write_all(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0")
                    .await;
                let mut pending = String::new();
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                    while let Some(end) = pending.find('\0') {
                        let frame: String = pending.drain(..=end).collect();
                        let frame = frame.trim_start_matches(['\n', '\r']);
                        if frame.starts_with("SEND\n") && frame.ends_with("\n\ndie\0") {
                            return;
                        }
                        if let Some(receipt) =
                            frame.lines().find_map(|l| l.strip_prefix("receipt:"))
                        {
                            let reply = format!("RECEIPT\nreceipt-id:{receipt}\n\n\0");
                            let _ = stream.write_all(reply.as_bytes()).await;
                        }
                    }
                }
            });
        }
    });
    let mut config = ServerConfig::default();
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    config.auth.allow_anonymous = true;
    let mut relay = RelayConfig::default();
    relay.addresses = vec![address];
    relay.mode = RelayMode::Shared;
    relay.connections = 1;
    relay.reconnect_initial = Duration::from_millis(100);
    relay.reconnect_max = Duration::from_millis(200);
    config.relay = Some(relay);
    let server = Server::bind(config).await.expect("bind").spawn();
    let mut available = server.broker_availability();
    tokio::time::timeout(Duration::from_secs(10), available.wait_for(|up| *up))
        .await
        .expect("fake broker not available")
        .expect("availability");
    let url = format!("ws://{}/ws", server.http_addr().expect("addr"));
    let connect = || async {
        stompbox::client::Client::connect(&url, &[])
            .await
            .expect("connect")
            .0
    };
    let mut listener_only = connect().await;
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
    let mut confirmed = connect().await;
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
    let mut doomed = connect().await;
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
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let (closed_tx, mut closed_rx) = tokio::sync::mpsc::unbounded_channel::<()>();
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let closed_tx = closed_tx.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                if stream.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                let _ = stream
                    .write_all(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0")
                    .await;
                let mut pending = String::new();
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                    while let Some(end) = pending.find('\0') {
                        let frame: String = pending.drain(..=end).collect();
                        let frame = frame.trim_start_matches(['\n', '\r']);
                        let header = |name: &str| {
                            frame
                                .lines()
                                .find_map(|l| l.strip_prefix(name))
                                .map(str::to_owned)
                        };
                        if frame.starts_with("DISCONNECT\n") {
                            drop(stream);
                            let _ = closed_tx.send(());
                            return;
                        }
                        let mut reply = String::new();
                        if let Some(receipt) = header("receipt:") {
                            reply.push_str(&format!("RECEIPT\nreceipt-id:{receipt}\n\n\0"));
                        }
                        if frame.starts_with("SUBSCRIBE\n") {
                            let id = header("id:").unwrap_or_default();
                            for n in 1..=2 {
                                reply.push_str(&format!(
                                    "MESSAGE\nsubscription:{id}\ndestination:/queue/fake\n\
                                     message-id:m{n}\nack:a{n}\n\nbody\0"
                                ));
                            }
                        }
                        let _ = stream.write_all(reply.as_bytes()).await;
                    }
                }
            });
        }
    });
    let mut config = ServerConfig::default();
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    config.auth.allow_anonymous = true;
    let mut relay = RelayConfig::default();
    relay.addresses = vec![address];
    relay.mode = RelayMode::Shared;
    relay.connections = 1;
    config.relay = Some(relay);
    let server = Server::bind(config).await.expect("bind").spawn();
    let mut available = server.broker_availability();
    tokio::time::timeout(Duration::from_secs(10), available.wait_for(|up| *up))
        .await
        .expect("fake broker not available")
        .expect("availability");
    let url = format!("ws://{}/ws", server.http_addr().expect("addr"));
    let (mut client, _) = stompbox::client::Client::connect(&url, &[])
        .await
        .expect("connect");
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
    let mut acks = Vec::new();
    while acks.len() < 2 {
        let frame = client
            .next_frame_within(Duration::from_secs(10))
            .await
            .expect("read")
            .expect("closed");
        if frame.command == Command::Message {
            acks.push(frame.headers.get("ack").expect("ack header").to_owned());
        }
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
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let address = listener.local_addr().expect("addr").to_string();
    let late_acks = Arc::new(AtomicUsize::new(0));
    let counted = Arc::clone(&late_acks);
    tokio::spawn(async move {
        while let Ok((mut stream, _)) = listener.accept().await {
            let late_acks = Arc::clone(&counted);
            tokio::spawn(async move {
                let mut buf = vec![0u8; 65536];
                if stream.read(&mut buf).await.unwrap_or(0) == 0 {
                    return;
                }
                let _ = stream
                    .write_all(b"CONNECTED\nversion:1.2\nheart-beat:0,0\n\n\0")
                    .await;
                let mut pending = String::new();
                let mut gone: Vec<String> = Vec::new();
                loop {
                    let n = stream.read(&mut buf).await.unwrap_or(0);
                    if n == 0 {
                        return;
                    }
                    pending.push_str(&String::from_utf8_lossy(&buf[..n]));
                    while let Some(end) = pending.find('\0') {
                        let frame: String = pending.drain(..=end).collect();
                        let frame = frame.trim_start_matches(['\n', '\r']);
                        let header = |name: &str| {
                            frame
                                .lines()
                                .find_map(|l| l.strip_prefix(name))
                                .map(str::to_owned)
                        };
                        if frame.starts_with("DISCONNECT\n") {
                            return;
                        }
                        let id = header("id:").unwrap_or_default();
                        if frame.starts_with("UNSUBSCRIBE\n") {
                            gone.push(id.clone());
                        }
                        if frame.starts_with("ACK\n")
                            && gone.iter().any(|g| id.starts_with(&format!("{g}-")))
                        {
                            late_acks.fetch_add(1, Ordering::Relaxed);
                        }
                        let mut reply = String::new();
                        if let Some(receipt) = header("receipt:") {
                            reply.push_str(&format!("RECEIPT\nreceipt-id:{receipt}\n\n\0"));
                        }
                        if frame.starts_with("SUBSCRIBE\n") {
                            for n in 0..2000 {
                                reply.push_str(&format!(
                                    "MESSAGE\nsubscription:{id}\ndestination:/queue/fake\n\
                                     message-id:{id}-{n}\nack:{id}-{n}\n\nbody\0"
                                ));
                            }
                        }
                        let _ = stream.write_all(reply.as_bytes()).await;
                    }
                }
            });
        }
    });
    let mut config = ServerConfig::default();
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    config.auth.allow_anonymous = true;
    let mut relay = RelayConfig::default();
    relay.addresses = vec![address];
    relay.mode = RelayMode::Shared;
    relay.connections = 1;
    config.relay = Some(relay);
    let server = Server::bind(config).await.expect("bind").spawn();
    let mut available = server.broker_availability();
    tokio::time::timeout(Duration::from_secs(10), available.wait_for(|up| *up))
        .await
        .expect("fake broker not available")
        .expect("availability");
    let url = format!("ws://{}/ws", server.http_addr().expect("addr"));
    for round in 0..200 {
        let (mut client, _) = stompbox::client::Client::connect(&url, &[])
            .await
            .expect("connect");
        client
            .send(
                &Frame::new(Command::Subscribe)
                    .header("id", "s")
                    .header("destination", "/queue/fake"),
            )
            .await
            .expect("subscribe");
        loop {
            let frame = client
                .next_frame_within(Duration::from_secs(10))
                .await
                .expect("read")
                .expect("closed");
            if frame.command == Command::Message {
                break;
            }
        }
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
