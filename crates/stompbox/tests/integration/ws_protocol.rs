//! WebSocket protocol violations get the Close frame RFC 6455 asks for
//! (1002 protocol error, 1007 invalid payload data) before the socket
//! closes, not a bare TCP close. Frames are written by hand on a raw socket.

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
