use crate::support::*;
use bytes::Bytes;
use stompbox::client::Client;
use stompbox::codec::{Command, Frame};

fn connect_frame(accept: Option<&str>) -> Frame {
    let mut frame = Frame::new(Command::Connect).header("host", "localhost");
    if let Some(accept) = accept {
        frame = frame.header("accept-version", accept);
    }
    frame
}

#[tokio::test]
async fn connected_carries_version_server_session_and_heart_beat() {
    let server = default_server().await;
    for via in BOTH {
        let (_, connected) = Client::connect(server.url(via), &[("heart-beat", "0,0")])
            .await
            .expect("connect");
        assert_eq!(connected.headers.get("version"), Some("1.2"));
        assert!(
            connected
                .headers
                .get("server")
                .is_some_and(|s| s.starts_with("stompbox/"))
        );
        assert!(
            connected
                .headers
                .get("session")
                .is_some_and(|s| !s.is_empty())
        );
        assert_eq!(connected.headers.get("heart-beat"), Some("10000,10000"));
    }
}

#[tokio::test]
async fn version_negotiation_picks_the_highest_common_version() {
    let server = default_server().await;
    for (accept, expected) in [
        (Some("1.1"), "1.1"),
        (Some("1.0,1.1"), "1.1"),
        (Some("1.2,1.0"), "1.2"),
        // No accept-version means a STOMP 1.0 client.
        (None, "1.0"),
    ] {
        let mut client = server.open(Via::Tcp).await;
        client.send(&connect_frame(accept)).await.expect("send");
        let connected = next(&mut client).await;
        assert_eq!(connected.command, Command::Connected);
        assert_eq!(
            connected.headers.get("version"),
            Some(expected),
            "accept {accept:?}"
        );
    }
}

#[tokio::test]
async fn stomp_command_connects_too() {
    let server = default_server().await;
    let mut client = server.open(Via::Ws).await;
    client
        .send(
            &Frame::new(Command::Stomp)
                .header("accept-version", "1.2")
                .header("host", "x"),
        )
        .await
        .expect("send");
    assert_eq!(next(&mut client).await.command, Command::Connected);
}

#[tokio::test]
async fn unsupported_versions_get_an_error_listing_supported_ones() {
    let server = default_server().await;
    let mut client = server.open(Via::Tcp).await;
    client
        .send(&connect_frame(Some("2.0,3.1")))
        .await
        .expect("send");
    let error = expect_error_and_close(&mut client).await;
    assert_eq!(error.headers.get("version"), Some("1.0,1.1,1.2"));
}

#[tokio::test]
async fn websocket_subprotocol_is_the_newest_offered() {
    let server = default_server().await;
    // The server prefers the newest subprotocol the client offers.
    let mut client = Client::open(&server.ws, &["v10.stomp", "v11.stomp"])
        .await
        .expect("open");
    assert_eq!(client.subprotocol(), Some("v11.stomp"));
    client
        .send(&connect_frame(Some("1.0,1.1,1.2")))
        .await
        .expect("send");
    let connected = next(&mut client).await;
    assert_eq!(connected.headers.get("version"), Some("1.1"));

    // A CONNECT sharing no version with the offered subprotocols is refused.
    let mut client = Client::open(&server.ws, &["v10.stomp"])
        .await
        .expect("open");
    assert_eq!(client.subprotocol(), Some("v10.stomp"));
    client
        .send(&connect_frame(Some("1.2")))
        .await
        .expect("send");
    let error = expect_error_and_close(&mut client).await;
    assert_eq!(error.headers.get("version"), Some("1.0"));
}

/// The `101` must name one subprotocol before CONNECT is read, so it names
/// the newest offered; CONNECT then picks among every version offered, as
/// RabbitMQ, ActiveMQ and Spring negotiate by CONNECT alone.
#[tokio::test]
async fn connect_picks_the_version_among_the_offered_subprotocols() {
    let server = default_server().await;
    let every = ["v12.stomp", "v11.stomp", "v10.stomp"];
    for (accept, expected) in [
        (Some("1.1"), "1.1"),
        (Some("1.0,1.1"), "1.1"),
        (Some("1.2,1.1"), "1.2"),
        // No accept-version: a STOMP 1.0 client.
        (None, "1.0"),
    ] {
        let mut client = Client::open(&server.ws, &every).await.expect("open");
        assert_eq!(client.subprotocol(), Some("v12.stomp"));
        client.send(&connect_frame(accept)).await.expect("send");
        let connected = next(&mut client).await;
        assert_eq!(
            connected.command,
            Command::Connected,
            "accept {accept:?}: {connected:?}"
        );
        assert_eq!(
            connected.headers.get("version"),
            Some(expected),
            "accept {accept:?}"
        );
    }
    // A version the client did not offer as a subprotocol is not chosen,
    // even when CONNECT would prefer it.
    let mut client = Client::open(&server.ws, &["v11.stomp", "v10.stomp"])
        .await
        .expect("open");
    assert_eq!(client.subprotocol(), Some("v11.stomp"));
    client
        .send(&connect_frame(Some("1.0,1.2")))
        .await
        .expect("send");
    assert_eq!(next(&mut client).await.headers.get("version"), Some("1.0"));
}

#[tokio::test]
async fn connect_sharing_no_version_with_the_offered_subprotocols_is_refused() {
    let server = default_server().await;
    let mut client = Client::open(&server.ws, &["v12.stomp", "v11.stomp"])
        .await
        .expect("open");
    // No accept-version: STOMP 1.0, which the client did not offer.
    client.send(&connect_frame(None)).await.expect("send");
    let error = expect_error_and_close(&mut client).await;
    assert_eq!(error.headers.get("version"), Some("1.1,1.2"));
    assert!(
        error
            .headers
            .get("message")
            .is_some_and(|m| m.contains("subprotocols offered")),
        "{error:?}"
    );
}

#[tokio::test]
async fn websocket_without_subprotocol_is_accepted_and_negotiates_by_connect() {
    let server = default_server().await;
    let mut client = Client::open(&server.ws, &[]).await.expect("open");
    assert_eq!(client.subprotocol(), None);
    client
        .send(&connect_frame(Some("1.1,1.2")))
        .await
        .expect("send");
    assert_eq!(next(&mut client).await.headers.get("version"), Some("1.2"));
}

#[tokio::test]
async fn frames_before_connect_are_refused_with_receipt_id_echoed() {
    let server = default_server().await;
    for via in BOTH {
        let mut client = server.open(via).await;
        client
            .send(
                &Frame::new(Command::Send)
                    .header("destination", "/topic/a")
                    .header("receipt", "77"),
            )
            .await
            .expect("send");
        let error = expect_error_and_close(&mut client).await;
        assert_eq!(error.headers.get("receipt-id"), Some("77"));
        assert!(
            error
                .headers
                .get("message")
                .is_some_and(|m| m.contains("CONNECT"))
        );
    }
}

#[tokio::test]
async fn a_second_connect_is_an_error() {
    let server = default_server().await;
    let mut client = server.connect(Via::Tcp).await;
    client
        .send(&connect_frame(Some("1.2")))
        .await
        .expect("send");
    expect_error_and_close(&mut client).await;
}

#[tokio::test]
async fn disconnect_gets_its_receipt_then_the_connection_closes() {
    let server = default_server().await;
    for via in BOTH {
        let mut client = server.connect(via).await;
        client
            .send(&Frame::new(Command::Disconnect).header("receipt", "bye"))
            .await
            .expect("send");
        let receipt = next(&mut client).await;
        assert_eq!(receipt.command, Command::Receipt);
        assert_eq!(receipt.headers.get("receipt-id"), Some("bye"));
        assert!(matches!(
            client.next_frame_within(WAIT).await,
            Ok(None) | Err(_)
        ));
    }
}

#[tokio::test]
async fn silence_before_connect_is_closed_after_the_first_frame_time_limit() {
    let server = spawn_server(|c| c.connect_timeout = std::time::Duration::from_millis(300)).await;
    let mut client = server.open(Via::Tcp).await;
    let error = expect_error_and_close(&mut client).await;
    assert!(
        error
            .headers
            .get("message")
            .is_some_and(|m| m.contains("CONNECT"))
    );
    // A connection that did CONNECT is not affected by that limit.
    let mut ok = server.connect(Via::Tcp).await;
    let topic = unique("/topic/after-timeout");
    subscribe(&mut ok, "s", &topic, "auto").await;
}

#[tokio::test]
async fn stomp_1_0_headers_are_not_escaped_and_1_1_ones_are() {
    let server = default_server().await;
    let topic = unique("/topic/esc");
    let mut v10 = subscribe_1_0(&server, &topic).await;
    let mut v12 = server.connect(Via::Tcp).await;
    v12.send(
        &Frame::new(Command::Send)
            .header("destination", &topic)
            .header("x-colon", "a:b")
            .body("x"),
    )
    .await
    .expect("send");
    let m = next_message(&mut v10).await;
    // 1.0 has no escaping: the raw colon arrives as is, and without an
    // `id` the subscription is named by its destination.
    // RabbitMQ escapes header values for 1.0 clients too; a documented
    // difference of the relay.
    if test_broker() == TestBroker::Embedded {
        assert_eq!(m.headers.get("x-colon"), Some("a:b"));
    }
    assert_eq!(m.headers.get("subscription"), Some(topic.as_str()));
    // An escaped header sent by a 1.2 client is unescaped on the way in and
    // escaped again for a 1.2 subscriber (1.0 cannot carry a newline).
    let mut v12_sub = server.connect(Via::Tcp).await;
    subscribe(&mut v12_sub, "s12", &topic, "auto").await;
    let mut raw = server.connect(Via::Tcp).await;
    raw.send_raw(Bytes::from(format!(
        "SEND\ndestination:{topic}\nx-esc:line\\nbreak\\c\\\\\n\nbody\0"
    )))
    .await
    .expect("send");
    let m = next_message(&mut v12_sub).await;
    assert_eq!(m.headers.get("x-esc"), Some("line\nbreak:\\"));
}
