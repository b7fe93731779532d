//! A WebSocket client written by hand on a raw socket, for the tests that
//! must send what a real client library would refuse to (bad bits, odd
//! fragmentation, lengths encoded any way) and see every frame the server
//! writes back.

use crate::support::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Opens a WebSocket on a raw socket; returns it just after the `101`.
pub(crate) async fn handshake(server: &TestServer) -> TcpStream {
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
pub(crate) fn frame(first: u8, masked: bool, payload: &[u8]) -> Vec<u8> {
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
pub(crate) async fn until_closed(stream: &mut TcpStream) -> Vec<u8> {
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
pub(crate) fn close_code(mut bytes: &[u8]) -> Option<u16> {
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
pub(crate) async fn next_ws_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
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
pub(crate) async fn stomp_connect(stream: &mut TcpStream) {
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
pub(crate) fn close_frame(code: u16, reason: &[u8]) -> Vec<u8> {
    let mut payload = code.to_be_bytes().to_vec();
    payload.extend_from_slice(reason);
    frame(0x88, true, &payload)
}
