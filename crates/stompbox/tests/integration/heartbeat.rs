use crate::support::*;
use std::time::{Duration, Instant};
use stompbox::client::Client;
use stompbox::codec::Command;

#[tokio::test]
async fn server_sends_heart_beats_when_idle_and_closes_silent_clients() {
    let server = spawn_server(|c| {
        c.heartbeat_send = Duration::from_millis(100);
        c.heartbeat_receive = Duration::from_millis(200);
        c.heartbeat_min = Duration::from_millis(100);
    })
    .await;
    // The client promises to send every 200 ms and wants one every 100 ms.
    let (mut client, connected) = Client::connect(&server.tcp, &[("heart-beat", "200,100")])
        .await
        .expect("connect");
    assert_eq!(connected.headers.get("heart-beat"), Some("100,200"));
    // We never send anything: the server must give up on us after
    // max(200,200) ms times the grace factor, having sent heart-beats
    // (which the client skips) meanwhile.
    let started = Instant::now();
    let error = expect_error_and_close(&mut client).await;
    assert!(
        error
            .headers
            .get("message")
            .is_some_and(|m| m.contains("heart-beat"))
    );
    assert!(
        started.elapsed() >= Duration::from_millis(250),
        "closed too early"
    );
}

#[tokio::test]
async fn heart_beats_arrive_as_eols_between_frames() {
    use stompbox::codec::{Decoded, Decoder, Limits};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = spawn_server(|c| {
        c.heartbeat_send = Duration::from_millis(50);
        c.heartbeat_min = Duration::from_millis(50);
    })
    .await;
    let addr = server.tcp.trim_start_matches("tcp://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(b"CONNECT\naccept-version:1.2\nhost:x\nheart-beat:0,50\n\n\0")
        .await
        .expect("write");
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = bytes::BytesMut::new();
    let mut heartbeats = 0;
    let mut connected = false;
    let deadline = tokio::time::Instant::now() + WAIT;
    while heartbeats < 3 {
        let n = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf))
            .await
            .expect("no heart-beats")
            .expect("read");
        assert!(n > 0, "closed");
        while let Some(item) = decoder.decode(&mut buf).expect("decode") {
            match item {
                Decoded::Frame(f) => {
                    assert_eq!(f.command, Command::Connected);
                    connected = true;
                }
                Decoded::Heartbeat => heartbeats += 1,
            }
        }
    }
    assert!(connected);
}

#[tokio::test]
async fn client_heart_beats_keep_the_connection_open() {
    let server = spawn_server(|c| {
        c.heartbeat_receive = Duration::from_millis(100);
        c.heartbeat_min = Duration::from_millis(100);
    })
    .await;
    let (mut client, _) = Client::connect(&server.ws, &[("heart-beat", "100,0")])
        .await
        .expect("connect");
    // Send heart-beats for well past the limit, then use the connection.
    for _ in 0..8 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        client
            .send_raw(bytes::Bytes::from_static(b"\n"))
            .await
            .expect("heart-beat");
    }
    let topic = unique("/topic/hb");
    subscribe(&mut client, "s", &topic, "auto").await;
}

/// A client asking for 1 s heart-beats gets them (the default floor is
/// 1 s), and once silent is dropped after the 1.5× grace, not after the
/// server's own 10 s setting.
#[tokio::test]
async fn one_second_heart_beats_are_honoured_and_a_silent_peer_dropped_after_the_grace() {
    use stompbox::codec::{Decoded, Decoder, Limits};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = default_server().await;
    let addr = server.tcp.trim_start_matches("tcp://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    // The server counts silence from the last bytes it read: the CONNECT,
    // which cannot arrive before it is written.
    let silent_since = Instant::now();
    stream
        .write_all(b"CONNECT\naccept-version:1.2\nhost:x\nheart-beat:1000,1000\n\n\0")
        .await
        .expect("write");
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = bytes::BytesMut::new();
    let mut connected = false;
    let mut heartbeats = 0;
    let error = 'read: loop {
        let n = tokio::time::timeout(WAIT, stream.read_buf(&mut buf))
            .await
            .expect("neither a heart-beat nor an ERROR")
            .expect("read");
        assert!(n > 0, "closed without an ERROR");
        while let Some(item) = decoder.decode(&mut buf).expect("decode") {
            match item {
                Decoded::Frame(f) if f.command == Command::Connected => {
                    assert_eq!(f.headers.get("heart-beat"), Some("1000,1000"));
                    connected = true;
                }
                Decoded::Frame(f) => break 'read f,
                Decoded::Heartbeat => heartbeats += 1,
            }
        }
    };
    let silent_for = silent_since.elapsed();
    assert!(connected, "no CONNECTED");
    assert_eq!(error.command, Command::Error, "{error:?}");
    assert!(
        error
            .headers
            .get("message")
            .is_some_and(|m| m.contains("heart-beat")),
        "{error:?}"
    );
    // The server kept its side: a heart-beat every second while waiting.
    assert!(heartbeats >= 1, "no heart-beat from the server");
    assert!(
        silent_for >= Duration::from_millis(1500),
        "dropped after {silent_for:?}, before the grace"
    );
    // Far below the 15 s a 10 s interval would give, with room for a busy
    // machine.
    assert!(
        silent_for < Duration::from_secs(4),
        "dropped only after {silent_for:?}"
    );
}

#[tokio::test]
async fn heart_beats_asked_for_below_the_floor_get_the_floor() {
    let server = default_server().await;
    for via in BOTH {
        // Wants one every 5 s, offers one every 100 ms: the server sends at
        // 5 s and holds the client to the 1 s floor.
        let (_, connected) = Client::connect(server.url(via), &[("heart-beat", "100,5000")])
            .await
            .expect("connect");
        assert_eq!(connected.headers.get("heart-beat"), Some("5000,1000"));
    }
    let server = spawn_server(|c| c.heartbeat_min = Duration::from_millis(300)).await;
    let (_, connected) = Client::connect(&server.tcp, &[("heart-beat", "100,100")])
        .await
        .expect("connect");
    assert_eq!(connected.headers.get("heart-beat"), Some("300,300"));
    // A side the client turns off states the server's own setting.
    let (_, connected) = Client::connect(&server.tcp, &[("heart-beat", "0,2000")])
        .await
        .expect("connect");
    assert_eq!(connected.headers.get("heart-beat"), Some("2000,10000"));
}
