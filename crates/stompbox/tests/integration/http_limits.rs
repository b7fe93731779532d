//! What an HTTP socket may hold: a place in the connection budget from the
//! moment it is accepted, for no longer than the request-head and keep-alive
//! time limits; and how many publish API bodies may be read at once.

use crate::identity::raw_http;
use crate::support::*;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn http_addr(server: &TestServer) -> String {
    server
        .ws
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_owned()
}

fn upgrade_request(host: &str) -> String {
    format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: v12.stomp\r\n\r\n"
    )
}

/// Reads until the server closes the socket; panics if it stays open past
/// [`WAIT`]. Returns what was read.
async fn read_until_closed(stream: &mut (impl AsyncRead + Unpin)) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    loop {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => return seen,
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "the server kept the socket open; read so far: {:?}",
                String::from_utf8_lossy(&seen)
            ),
        }
    }
}

/// Reads until `needle` has arrived; returns everything read.
async fn read_until(stream: &mut TcpStream, needle: &[u8]) -> Vec<u8> {
    let mut seen = Vec::new();
    let mut buf = [0u8; 1024];
    while !seen.windows(needle.len()).any(|w| w == needle) {
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0) | Err(_)) => panic!(
                "closed before {:?}: {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&seen)
            ),
            Ok(Ok(n)) => seen.extend_from_slice(&buf[..n]),
            Err(_) => panic!(
                "no {:?} in time: {:?}",
                String::from_utf8_lossy(needle),
                String::from_utf8_lossy(&seen)
            ),
        }
    }
    seen
}

/// Waits (bounded) until the server counts no open connection.
async fn until_no_connections(server: &TestServer) {
    tokio::time::timeout(WAIT, async {
        while server.handle.stats().connections > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .expect("connection places were not given back");
}

#[tokio::test]
async fn idle_http_sockets_hold_connection_places_until_the_head_limit_closes_them() {
    let server = spawn_server(|c| {
        c.max_connections = 3;
        c.connect_timeout = Duration::from_secs(1);
    })
    .await;
    let addr = http_addr(&server);
    let mut idle = Vec::new();
    for _ in 0..3 {
        idle.push(TcpStream::connect(&addr).await.expect("connect"));
    }
    // Accepted in order after the idle ones: the budget is spent, so a
    // WebSocket client is told so at once instead of hanging…
    let response = tokio::time::timeout(WAIT, raw_http(&addr, &upgrade_request(&addr)))
        .await
        .expect("a refused client must get its answer at once");
    assert!(response.starts_with("HTTP/1.1 503"), "{response}");
    assert!(
        response.contains("server at its connection limit"),
        "{response}"
    );
    // …and a STOMP client gets an ERROR.
    let mut stomp = server.open(Via::Tcp).await;
    let error = expect_error_and_close(&mut stomp).await;
    assert!(
        error
            .headers
            .get("message")
            .is_some_and(|m| m.contains("connection limit")),
        "{error:?}"
    );
    // The request-head limit closes the silent sockets, which gives their
    // places back: then a WebSocket client gets in.
    for stream in &mut idle {
        read_until_closed(stream).await;
    }
    until_no_connections(&server).await;
    let mut client = server.connect(Via::Ws).await;
    let topic = unique("/topic/after-idle");
    subscribe(&mut client, "s", &topic, "auto").await;
    assert_eq!(server.handle.stats().connections, 1);
}

#[tokio::test]
async fn a_request_head_dribbled_a_byte_at_a_time_is_cut_at_the_head_limit() {
    let server = spawn_server(|c| c.connect_timeout = Duration::from_millis(500)).await;
    let addr = http_addr(&server);
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    // A byte every 100 ms never completes the head; each byte arriving must
    // not restart the limit. Bounded: 100 bytes would be 10 s.
    let mut closed = false;
    for byte in b"GET / HTTP/1.1\r\nX-Slow: ".iter().cycle().take(100) {
        if stream.write_all(&[*byte]).await.is_err() {
            closed = true;
            break;
        }
        let mut buf = [0u8; 256];
        // hyper may answer 408 before closing; a timeout is the pace.
        if let Ok(Ok(0) | Err(_)) =
            tokio::time::timeout(Duration::from_millis(100), stream.read(&mut buf)).await
        {
            closed = true;
            break;
        }
    }
    assert!(closed, "a dribbled request head kept its socket for 10 s");
}

#[tokio::test]
async fn a_keep_alive_http_connection_idle_past_its_limit_is_closed() {
    // The request-head limit is long here: only the idle limit can close.
    let server = spawn_server(|c| {
        c.connect_timeout = Duration::from_secs(30);
        c.http_idle_timeout = Duration::from_millis(500);
    })
    .await;
    let addr = http_addr(&server);
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    stream
        .write_all(format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .await
        .expect("write");
    let response = read_until(&mut stream, b"send a WebSocket upgrade request").await;
    assert!(response.starts_with(b"HTTP/1.1 400"));
    let rest = read_until_closed(&mut stream).await;
    assert!(rest.is_empty(), "{:?}", String::from_utf8_lossy(&rest));
    until_no_connections(&server).await;
}

fn publish_head(content_length: usize, expect_continue: bool) -> String {
    let expect = if expect_continue {
        "Expect: 100-continue\r\n"
    } else {
        ""
    };
    format!(
        "POST /api/publish HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Authorization: Bearer api-token-for-tests\r\n{expect}Content-Length: {content_length}\r\n\
         Connection: close\r\n\r\n"
    )
}

async fn publish_whole(addr: &str, json: &str) -> String {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    let request = format!("{}{json}", publish_head(json.len(), false));
    stream.write_all(request.as_bytes()).await.expect("write");
    String::from_utf8_lossy(&read_until_closed(&mut stream).await).into_owned()
}

#[tokio::test]
async fn publish_requests_past_the_concurrency_cap_get_503() {
    let server = spawn_server(|c| {
        c.api_token = Some("api-token-for-tests".into());
        c.max_concurrent_api_requests = 2;
    })
    .await;
    let addr = http_addr(&server);
    let topic = unique("/topic/api-cap");
    let json = format!(r#"{{"destination":"{topic}","body":"x"}}"#);
    // Two requests whose bodies have not come yet: `100 Continue` says the
    // server has started reading each one.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        stream
            .write_all(publish_head(json.len(), true).as_bytes())
            .await
            .expect("write");
        read_until(&mut stream, b"100 Continue\r\n\r\n").await;
        held.push(stream);
    }
    let refused = publish_whole(&addr, &json).await;
    assert!(refused.starts_with("HTTP/1.1 503"), "{refused}");
    assert!(refused.contains("at most 2 publish requests"), "{refused}");
    // The held ones finish normally and give their places back.
    for mut stream in held {
        stream.write_all(json.as_bytes()).await.expect("write");
        let response = String::from_utf8_lossy(&read_until_closed(&mut stream).await).into_owned();
        assert!(response.contains("HTTP/1.1 202"), "{response}");
    }
    let after = publish_whole(&addr, &json).await;
    assert!(after.starts_with("HTTP/1.1 202"), "{after}");
}

#[tokio::test]
async fn limits_that_would_refuse_everything_are_refused_at_bind() {
    let zero_api: fn(&mut stompbox::ServerConfig) = |c| c.max_concurrent_api_requests = 0;
    let zero_idle: fn(&mut stompbox::ServerConfig) = |c| c.http_idle_timeout = Duration::ZERO;
    for (configure, field) in [
        (zero_api, "max_concurrent_api_requests"),
        (zero_idle, "http_idle_timeout"),
    ] {
        let mut config = stompbox::ServerConfig::default();
        config.http_addr = "127.0.0.1:0".parse().expect("addr");
        configure(&mut config);
        let error = stompbox::Server::bind(config)
            .await
            .expect_err("a limit of zero is refused");
        assert_eq!(error.kind(), std::io::ErrorKind::InvalidInput);
        assert!(error.to_string().contains(field), "{error}");
    }
}
