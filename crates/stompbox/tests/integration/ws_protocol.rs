//! The WebSocket closing handshake (RFC 6455 §5.5.1, §7.4): a client's
//! Close frame is answered with one carrying its code, and protocol
//! violations get the Close frame that names them (1002 protocol error,
//! 1007 invalid payload data) before the socket closes, not a bare TCP
//! close; before CONNECT and after it. Frames are written by hand on a raw
//! socket.

use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a WebSocket on a raw socket; returns it just after the `101`.
async fn handshake(server: &TestServer) -> TcpStream {
    let addr = server
        .ws
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_owned();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    let request = format!(
        "GET /ws HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: v12.stomp\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    // Byte by byte up to the end of the head, so nothing after it is lost.
    let mut head = Vec::new();
    while !head.ends_with(b"\r\n\r\n") {
        let byte = tokio::time::timeout(WAIT, stream.read_u8())
            .await
            .expect("handshake timed out")
            .expect("handshake read");
        head.push(byte);
    }
    let head = String::from_utf8_lossy(&head);
    assert!(head.starts_with("HTTP/1.1 101"), "{head}");
    stream
}

/// A frame as a client writes it: masked (with a zero key, so the payload
/// reads as written) unless `masked` is false; `first` is FIN, RSV and
/// opcode.
fn frame(first: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
    assert!(payload.len() < 126);
    let length = u8::try_from(payload.len()).expect("short payload");
    let mut bytes = vec![first];
    if masked {
        bytes.push(0x80 | length);
        bytes.extend_from_slice(&[0, 0, 0, 0]);
    } else {
        bytes.push(length);
    }
    bytes.extend_from_slice(payload);
    bytes
}

/// Everything the server writes until it closes the socket.
async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut seen = Vec::new();
    tokio::time::timeout(WAIT, async {
        let mut buf = [0u8; 512];
        loop {
            match stream.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => seen.extend_from_slice(&buf[..n]),
            }
        }
    })
    .await
    .expect("the server kept the socket open");
    seen
}

/// The status code of the Close frame among `bytes` (the server's frames,
/// unmasked); `None` when there is none.
fn close_code(mut bytes: &[u8]) -> Option<u16> {
    while bytes.len() >= 2 {
        let opcode = bytes[0] & 0x0f;
        let length = usize::from(bytes[1] & 0x7f);
        assert!(length < 126, "unexpected long frame from the server");
        let payload = bytes.get(2..2 + length)?;
        if opcode == 0x8 {
            return Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]));
        }
        bytes = &bytes[2 + length..];
    }
    None
}

/// The next frame the server writes: opcode and payload (unmasked, as a
/// server writes them); `None` once the socket closes.
async fn next_ws_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    tokio::time::timeout(WAIT, async {
        let mut head = [0u8; 2];
        stream.read_exact(&mut head).await.ok()?;
        let length = match head[1] & 0x7f {
            126 => usize::from(stream.read_u16().await.ok()?),
            127 => usize::try_from(stream.read_u64().await.ok()?).ok()?,
            short => usize::from(short),
        };
        let mut payload = vec![0u8; length];
        stream.read_exact(&mut payload).await.ok()?;
        Some((head[0] & 0x0f, payload))
    })
    .await
    .expect("the server neither wrote nor closed")
}

/// Sends CONNECT in a text message and reads up to the CONNECTED frame.
async fn stomp_connect(stream: &mut TcpStream) {
    let connect = b"CONNECT\naccept-version:1.2\nhost:x\nheart-beat:0,0\n\n\0";
    stream
        .write_all(&frame(0x81, true, connect))
        .await
        .expect("write");
    let (opcode, payload) = next_ws_frame(stream)
        .await
        .expect("closed before CONNECTED");
    assert_eq!(opcode, 0x1, "expected a text message");
    assert!(
        payload.starts_with(b"CONNECTED\n"),
        "{}",
        String::from_utf8_lossy(&payload)
    );
}

/// A client's Close frame with `code`, as the client writes it.
fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    frame(0x88, true, &payload)
}

#[tokio::test]
async fn a_close_frame_is_answered_with_the_clients_code_before_and_after_connect() {
    let server = default_server().await;
    for connected in [false, true] {
        for code in [1000u16, 1001, 4000] {
            let mut stream = handshake(&server).await;
            if connected {
                stomp_connect(&mut stream).await;
            }
            stream
                .write_all(&close_frame(code, b"bye"))
                .await
                .expect("write");
            let echoed = next_ws_frame(&mut stream).await;
            let Some((opcode, payload)) = echoed else {
                panic!("code {code}, connected {connected}: closed without a Close frame");
            };
            assert_eq!(opcode, 0x8, "code {code}, connected {connected}");
            assert_eq!(
                payload.get(..2),
                Some(&code.to_be_bytes()[..]),
                "code {code}, connected {connected}: answered {payload:02x?}"
            );
            // Then the server closes the TCP connection: nothing after the
            // Close frame.
            assert_eq!(next_ws_frame(&mut stream).await, None);
        }
    }
}

#[tokio::test]
async fn a_close_frame_without_a_code_is_answered_with_an_empty_one() {
    let server = default_server().await;
    let mut stream = handshake(&server).await;
    stomp_connect(&mut stream).await;
    stream
        .write_all(&frame(0x88, true, b""))
        .await
        .expect("write");
    assert_eq!(next_ws_frame(&mut stream).await, Some((0x8, Vec::new())));
    assert_eq!(next_ws_frame(&mut stream).await, None);
}

#[tokio::test]
async fn protocol_violations_after_connect_get_a_close_frame_too() {
    let server = default_server().await;
    let cases: [(&str, Vec<u8>, u16); 3] = [
        (
            "invalid UTF-8 in a text message",
            frame(0x81, true, &[0xc3, 0x28]),
            1007,
        ),
        ("an RSV bit set", frame(0x81 | 0x20, true, b"hi"), 1002),
        (
            "a close code that may not be sent",
            frame(0x88, true, &1005u16.to_be_bytes()),
            1002,
        ),
    ];
    for (what, bad, expected) in cases {
        let mut stream = handshake(&server).await;
        stomp_connect(&mut stream).await;
        stream.write_all(&bad).await.expect("write");
        let answer = until_closed(&mut stream).await;
        assert_eq!(
            close_code(&answer),
            Some(expected),
            "{what}: the server wrote {answer:02x?} before closing"
        );
    }
}

#[tokio::test]
async fn protocol_violations_get_a_close_frame_with_1002_or_1007() {
    let server = default_server().await;
    let cases: [(&str, Vec<u8>, u16); 6] = [
        (
            "invalid UTF-8 in a text message",
            frame(0x81, true, &[0xc3, 0x28]),
            1007,
        ),
        ("an RSV bit set", frame(0x81 | 0x40, true, b"hi"), 1002),
        ("an unmasked client frame", frame(0x81, false, b"hi"), 1002),
        ("a reserved opcode", frame(0x83, true, b"hi"), 1002),
        (
            "a close code that may not be sent",
            frame(0x88, true, &999u16.to_be_bytes()),
            1002,
        ),
        (
            "a fragmented control frame",
            frame(0x09, true, b"ping"),
            1002,
        ),
    ];
    for (what, bad, expected) in cases {
        let mut stream = handshake(&server).await;
        stream.write_all(&bad).await.expect("write");
        let answer = until_closed(&mut stream).await;
        assert_eq!(
            close_code(&answer),
            Some(expected),
            "{what}: the server wrote {answer:02x?} before closing"
        );
    }
}
