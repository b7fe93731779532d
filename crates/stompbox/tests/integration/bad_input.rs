//! Every kind of bad input is answered with an ERROR and a close, and other
//! connections keep working.

use crate::support::*;
use bytes::Bytes;
use stompbox::client::Client;
use stompbox::codec::{Command, Frame};

/// A subscriber that must keep receiving while others misbehave.
struct Bystander {
    sub: Client,
    publisher: Client,
    topic: String,
    n: usize,
}

impl Bystander {
    async fn new(server: &TestServer) -> Bystander {
        let topic = unique("/topic/bystander");
        let mut sub = server.connect(Via::Ws).await;
        subscribe(&mut sub, "b", &topic, "auto").await;
        let publisher = server.connect(Via::Tcp).await;
        Bystander {
            sub,
            publisher,
            topic,
            n: 0,
        }
    }

    async fn still_served(&mut self) {
        self.n += 1;
        let text = format!("alive-{}", self.n);
        send_receipted(&mut self.publisher, &self.topic, &text).await;
        assert_eq!(body(&next_message(&mut self.sub).await), text);
    }
}

async fn refused(server: &TestServer, via: Via, connected: bool, raw: &[u8]) -> Frame {
    let mut client = if connected {
        server.connect(via).await
    } else {
        server.open(via).await
    };
    client
        .send_raw(Bytes::copy_from_slice(raw))
        .await
        .expect("send");
    expect_error_and_close(&mut client).await
}

fn message(frame: &Frame) -> &str {
    frame.headers.get("message").unwrap_or_default()
}

#[tokio::test]
async fn malformed_frames_get_an_error_naming_the_problem() {
    let server = spawn_server(|c| c.frame_limits.max_frame_bytes = 4096).await;
    let mut bystander = Bystander::new(&server).await;
    let cases: [(&[u8], &str); 7] = [
        (b"HELLO\n\n\0", "unknown command"),
        (b"SEND\ndestination /topic/a\n\n\0", "malformed header"),
        (
            b"SEND\ndestination:/topic/a\nx:\\t\n\nbody\0",
            "undefined escape",
        ),
        (
            b"SEND\ndestination:/topic/a\ncontent-length:abc\n\n\0",
            "content-length",
        ),
        (
            b"SEND\ndestination:/topic/a\ncontent-length:2\n\nabc\0",
            "content-length",
        ),
        (b"SEND\ndestination:/topic/a\nx:\xff\n\n\0", "UTF-8"),
        (b"MESSAGE\ndestination:/topic/a\n\n\0", "server frame"),
    ];
    for via in BOTH {
        for (raw, expected) in cases {
            let error = refused(&server, via, true, raw).await;
            assert!(
                message(&error).contains(expected),
                "{:?}: got {:?}",
                String::from_utf8_lossy(raw),
                message(&error)
            );
        }
        bystander.still_served().await;
    }
}

#[tokio::test]
async fn oversized_frames_are_refused_over_both_transports() {
    let server = spawn_server(|c| c.frame_limits.max_frame_bytes = 4096).await;
    let mut bystander = Bystander::new(&server).await;
    let mut big = b"SEND\ndestination:/topic/a\n\n".to_vec();
    big.extend(std::iter::repeat_n(b'x', 10_000));
    big.push(0);
    let mut long_header = b"SEND\ndestination:/topic/a\nx:".to_vec();
    long_header.extend(std::iter::repeat_n(b'y', 9_000));
    long_header.extend_from_slice(b"\n\n\0");
    let mut declared = b"SEND\ndestination:/topic/a\ncontent-length:1000000\n\n".to_vec();
    declared.extend_from_slice(b"short");
    let mut huge = b"SEND\ndestination:/topic/a\n\n".to_vec();
    huge.extend(std::iter::repeat_n(b'z', 100_000));
    huge.push(0);
    for via in BOTH {
        for raw in [&big, &long_header, &declared] {
            let error = refused(&server, via, true, raw).await;
            assert!(
                message(&error).contains("too large") || message(&error).contains("too long"),
                "got {:?}",
                message(&error)
            );
        }
        bystander.still_served().await;
    }
    // Over TCP a huge frame is cut off by the decoder like any other.
    let error = refused(&server, Via::Tcp, true, &huge).await;
    assert!(message(&error).contains("too large"));
    // Over WebSocket a message past four times the frame limit is refused by
    // the WebSocket layer before it is buffered: close code 1009.
    let mut client = server.connect(Via::Ws).await;
    client.send_raw(Bytes::from(huge)).await.expect("send");
    assert!(matches!(
        client.next_frame_within(WAIT).await,
        Ok(None) | Err(_)
    ));
    assert_eq!(client.close_reason().map(|(code, _)| code), Some(1009));
    bystander.still_served().await;
    let mut many = b"SEND\ndestination:/topic/a\n".to_vec();
    for i in 0..100 {
        many.extend_from_slice(format!("h{i}:v\n").as_bytes());
    }
    many.extend_from_slice(b"\n\0");
    let error = refused(&server, Via::Tcp, true, &many).await;
    assert!(message(&error).contains("too many headers"));
}

#[tokio::test]
async fn a_frame_that_never_ends_is_refused_at_the_size_limit() {
    let server = spawn_server(|c| c.frame_limits.max_frame_bytes = 4096).await;
    let mut bystander = Bystander::new(&server).await;
    let mut client = server.connect(Via::Tcp).await;
    client
        .send_raw(Bytes::from_static(b"SEND\ndestination:/topic/a\n\n"))
        .await
        .expect("send");
    // Keep streaming body bytes without a NUL; the server must cut us off.
    let chunk = Bytes::from(vec![b'x'; 1024]);
    let mut closed_early = false;
    for _ in 0..8 {
        if client.send_raw(chunk.clone()).await.is_err() {
            closed_early = true;
            break;
        }
    }
    if !closed_early {
        let error = expect_error_and_close(&mut client).await;
        assert!(message(&error).contains("too large"));
    }
    bystander.still_served().await;
}

#[tokio::test]
async fn a_frame_that_stops_midway_is_closed_by_the_heart_beat_check() {
    let server = spawn_server(|c| {
        c.heartbeat_receive = std::time::Duration::from_millis(100);
        c.heartbeat_min = std::time::Duration::from_millis(100);
    })
    .await;
    let mut bystander = Bystander::new(&server).await;
    let (mut client, _) = Client::connect(&server.tcp, &[("heart-beat", "100,0")])
        .await
        .expect("connect");
    client
        .send_raw(Bytes::from_static(
            b"SEND\ndestination:/topic/a\n\nhalf a bo",
        ))
        .await
        .expect("send");
    let error = expect_error_and_close(&mut client).await;
    assert!(message(&error).contains("heart-beat"));
    bystander.still_served().await;
}

#[tokio::test]
async fn protocol_misuse_gets_clear_errors() {
    let server = default_server().await;
    let mut bystander = Bystander::new(&server).await;
    let cases: Vec<(Frame, &str)> = vec![
        (
            Frame::new(Command::Send).body("no destination"),
            "destination",
        ),
        (
            Frame::new(Command::Send).header("destination", "/nowhere/x"),
            "/nowhere/x",
        ),
        (
            Frame::new(Command::Subscribe).header("destination", "/topic/a"),
            "'id'",
        ),
        (
            Frame::new(Command::Subscribe)
                .header("destination", "/bogus/a")
                .header("id", "1"),
            "/bogus/a",
        ),
        (
            Frame::new(Command::Subscribe)
                .header("destination", "/topic/a")
                .header("id", "1")
                .header("ack", "sometimes"),
            "ack mode",
        ),
        (
            Frame::new(Command::Unsubscribe).header("id", "never-subscribed"),
            "never-subscribed",
        ),
        (Frame::new(Command::Ack), "'id'"),
    ];
    for (frame, expected) in cases {
        let mut client = server.connect(Via::Ws).await;
        client
            .send(&frame.header("receipt", "rid"))
            .await
            .expect("send");
        let error = expect_error_and_close(&mut client).await;
        assert!(
            message(&error).contains(expected),
            "expected {expected:?} in {:?}",
            message(&error)
        );
        assert_eq!(error.headers.get("receipt-id"), Some("rid"));
    }
    // A duplicate subscription id.
    let mut client = server.connect(Via::Ws).await;
    subscribe(&mut client, "dup", "/topic/a", "auto").await;
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "dup")
                .header("destination", "/topic/b"),
        )
        .await
        .expect("send");
    let error = expect_error_and_close(&mut client).await;
    assert!(message(&error).contains("already in use"));
    bystander.still_served().await;
}

#[tokio::test]
async fn subscriptions_per_session_are_bounded() {
    let server = spawn_server(|c| c.max_subscriptions = 3).await;
    let mut client = server.connect(Via::Tcp).await;
    for i in 0..3 {
        subscribe(&mut client, &i.to_string(), &format!("/topic/s{i}"), "auto").await;
    }
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "x")
                .header("destination", "/topic/x"),
        )
        .await
        .expect("send");
    let error = expect_error_and_close(&mut client).await;
    assert!(message(&error).contains("too many subscriptions"));
}

#[tokio::test]
async fn connections_past_the_limit_are_refused() {
    let server = spawn_server(|c| c.max_connections = 2).await;
    let _a = server.connect(Via::Tcp).await;
    let _b = server.connect(Via::Ws).await;
    let mut c = server.open(Via::Tcp).await;
    let error = expect_error_and_close(&mut c).await;
    assert!(message(&error).contains("connection limit"));
    let refused_ws = Client::open(&server.ws, &["v12.stomp"]).await;
    assert!(
        refused_ws.is_err(),
        "WebSocket upgrade past the limit must fail"
    );
}

/// Some clients end a frame with an extra NUL (`…\0\n\0SUBSCRIBE…`);
/// RabbitMQ and ActiveMQ skip it, so it is padding between frames here too,
/// not a command that fails to parse.
#[tokio::test]
async fn a_stray_nul_between_frames_is_skipped_as_padding() {
    let server = default_server().await;
    for via in BOTH {
        let topic = unique("/topic/nul");
        let mut client = server.connect(via).await;
        // The SEND waits for the SUBSCRIBE's receipt, as a client of an
        // external broker must: through the shared relay a subscription
        // whose link is still connecting is made when the link is up, and
        // a SEND meanwhile goes on another link, ahead of it.
        let subscribe = format!("\n\0SUBSCRIBE\nid:s\ndestination:{topic}\nreceipt:r1\n\n\0\0\0");
        client
            .send_raw(Bytes::from(subscribe.into_bytes()))
            .await
            .expect("send");
        let receipt = next(&mut client).await;
        assert_eq!(receipt.command, Command::Receipt, "{via:?}: {receipt:?}");
        assert_eq!(receipt.headers.get("receipt-id"), Some("r1"));
        let send = format!("SEND\ndestination:{topic}\n\nafter padding\0\0");
        client
            .send_raw(Bytes::from(send.into_bytes()))
            .await
            .expect("send");
        assert_eq!(body(&next_message(&mut client).await), "after padding");
    }
}
