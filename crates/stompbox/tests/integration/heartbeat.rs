use crate::support::*;
use std::time::{Duration, Instant};
use stompbox::client::Client;
use stompbox::codec::Command;

#[tokio::test]
async fn server_sends_heart_beats_when_idle_and_closes_silent_clients() {
    let server = spawn_server(|c| {
        c.heartbeat_send = Duration::from_millis(100);
        c.heartbeat_receive = Duration::from_millis(200);
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
    let server = spawn_server(|c| c.heartbeat_send = Duration::from_millis(50)).await;
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
    let server = spawn_server(|c| c.heartbeat_receive = Duration::from_millis(100)).await;
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
