//! A WebSocket client written by hand on a raw socket, for the tests that
//! must send what a real client library would refuse to (bad bits, odd
//! fragmentation, lengths encoded any way) and see every frame the server
//! writes back, pongs included.

use crate::support::*;
use stompbox::codec::{Decoded, Decoder, Frame, Limits};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

pub(crate) const CONTINUATION: u8 = 0x0;
pub(crate) const TEXT: u8 = 0x1;
pub(crate) const BINARY: u8 = 0x2;
pub(crate) const CLOSE: u8 = 0x8;
pub(crate) const PING: u8 = 0x9;
pub(crate) const PONG: u8 = 0xa;
pub(crate) const FIN: u8 = 0x80;

/// Opens a WebSocket on a raw socket; returns it just after the `101`.
pub(crate) async fn handshake(server: &TestServer) -> TcpStream {
    let addr = server
        .ws
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_owned();
    let mut stream = TcpStream::connect(&addr).await.expect("connect");
    // Small writes must leave as written, so that a frame split in pieces
    // reaches the server in pieces.
    stream.set_nodelay(true).expect("nodelay");
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
    if masked {
        masked_frame(first, [0; 4], payload)
    } else {
        let mut bytes = vec![first];
        push_length(&mut bytes, 0, payload.len());
        bytes.extend_from_slice(payload);
        bytes
    }
}

/// Appends the second byte (mask bit `mask_bit`, 0 or 0x80) and extended
/// length of a frame header, in the shortest encoding as RFC 6455 §5.2
/// requires.
fn push_length(bytes: &mut Vec<u8>, mask_bit: u8, length: usize) {
    if let Ok(short @ 0..=125) = u8::try_from(length) {
        bytes.push(mask_bit | short);
    } else if let Ok(medium) = u16::try_from(length) {
        bytes.push(mask_bit | 126);
        bytes.extend_from_slice(&medium.to_be_bytes());
    } else {
        bytes.push(mask_bit | 127);
        bytes.extend_from_slice(&(length as u64).to_be_bytes());
    }
}

/// A client frame masked with `mask`, its length in the shortest encoding.
pub(crate) fn masked_frame(first: u8, mask: [u8; 4], payload: &[u8]) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(payload.len() + 14);
    bytes.push(first);
    push_length(&mut bytes, 0x80, payload.len());
    bytes.extend_from_slice(&mask);
    bytes.extend(
        payload
            .iter()
            .enumerate()
            .map(|(i, byte)| byte ^ mask[i % 4]),
    );
    bytes
}

/// Masking keys that differ from frame to frame and are never all zero
/// (a fixed xorshift sequence, so a failure replays the same bytes).
#[derive(Debug)]
pub(crate) struct Masks(u32);

impl Masks {
    pub(crate) fn new(seed: u32) -> Masks {
        Masks(seed | 1)
    }

    pub(crate) fn next_mask(&mut self) -> [u8; 4] {
        let mut x = self.0;
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        self.0 = x;
        x.to_be_bytes()
    }

    /// A client frame masked with the next key.
    pub(crate) fn frame(&mut self, first: u8, payload: &[u8]) -> Vec<u8> {
        masked_frame(first, self.next_mask(), payload)
    }
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
        let (length, start) = match bytes[1] & 0x7f {
            126 => (usize::from(u16::from_be_bytes([bytes[2], bytes[3]])), 4),
            127 => (
                usize::try_from(u64::from_be_bytes(bytes.get(2..10)?.try_into().ok()?)).ok()?,
                10,
            ),
            short => (usize::from(short), 2),
        };
        let payload = bytes.get(start..start + length)?;
        if opcode == CLOSE {
            return Some(u16::from_be_bytes([*payload.first()?, *payload.get(1)?]));
        }
        bytes = &bytes[start + length..];
    }
    None
}

/// One frame as the server wrote it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ServerFrame {
    pub(crate) fin: bool,
    /// RSV bits and the mask bit, which a server must leave clear.
    pub(crate) reserved: u8,
    pub(crate) opcode: u8,
    pub(crate) payload: Vec<u8>,
}

/// The next frame the server writes, whole; `None` once the socket closes.
pub(crate) async fn next_server_frame(stream: &mut TcpStream) -> Option<ServerFrame> {
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
        Some(ServerFrame {
            fin: head[0] & 0x80 != 0,
            reserved: (head[0] & 0x70) | (head[1] & 0x80),
            opcode: head[0] & 0x0f,
            payload,
        })
    })
    .await
    .expect("the server neither wrote nor closed")
}

/// The next frame the server writes: opcode and payload (unmasked, as a
/// server writes them); `None` once the socket closes.
pub(crate) async fn next_ws_frame(stream: &mut TcpStream) -> Option<(u8, Vec<u8>)> {
    next_server_frame(stream)
        .await
        .map(|frame| (frame.opcode, frame.payload))
}

/// The next whole message (continuation frames joined): its opcode and
/// payload. Panics on a control frame, the socket closing or a server frame
/// with the mask or RSV bits set.
pub(crate) async fn next_ws_message(stream: &mut TcpStream) -> (u8, Vec<u8>) {
    let mut opcode = None;
    let mut payload = Vec::new();
    loop {
        let frame = next_server_frame(stream)
            .await
            .expect("closed instead of sending a message");
        assert_eq!(frame.reserved, 0, "server frame with RSV or mask bits");
        match (opcode, frame.opcode) {
            (None, TEXT | BINARY) => opcode = Some(frame.opcode),
            (Some(_), CONTINUATION) => {}
            (_, other) => panic!(
                "expected a data frame, got opcode {other:#x} {:02x?}",
                &frame.payload[..frame.payload.len().min(64)]
            ),
        }
        payload.extend_from_slice(&frame.payload);
        if frame.fin {
            return (opcode.unwrap_or(TEXT), payload);
        }
    }
}

/// The next STOMP frame, which must fill one whole message.
pub(crate) async fn next_stomp(stream: &mut TcpStream) -> Frame {
    let (_, payload) = next_ws_message(stream).await;
    let mut decoder = Decoder::new(Limits {
        max_frame_bytes: 64 * 1024 * 1024,
        ..Limits::default()
    });
    let mut buf = bytes::BytesMut::from(&payload[..]);
    match decoder.decode(&mut buf) {
        Ok(Some(Decoded::Frame(frame))) => {
            assert!(
                buf.iter().all(|b| *b == b'\n' || *b == b'\r'),
                "more than one frame in a message"
            );
            frame
        }
        other => panic!(
            "not one STOMP frame ({other:?}): {}",
            String::from_utf8_lossy(&payload[..payload.len().min(200)])
        ),
    }
}

/// The connection must end now: a Close frame with `code`, then the end
/// of the TCP stream (not a reset). Returns the Close frame's reason.
pub(crate) async fn expect_close(stream: &mut TcpStream, code: u16, what: &str) -> Vec<u8> {
    let Some(frame) = next_server_frame(stream).await else {
        panic!("{what}: the socket closed without a Close frame");
    };
    assert_eq!(
        frame.opcode,
        CLOSE,
        "{what}: expected Close {code}, got opcode {:#x} {}",
        frame.opcode,
        String::from_utf8_lossy(&frame.payload[..frame.payload.len().min(200)])
    );
    assert!(frame.fin && frame.reserved == 0, "{what}: {frame:?}");
    let got = frame
        .payload
        .get(..2)
        .map(|b| u16::from_be_bytes([b[0], b[1]]));
    assert_eq!(
        got,
        Some(code),
        "{what}: Close payload {:02x?}",
        frame.payload
    );
    expect_eof(stream, what).await;
    frame.payload[2..].to_vec()
}

/// The server must close the TCP connection (after its Close frame):
/// end of stream within [`WAIT`], no more bytes and no reset.
pub(crate) async fn expect_eof(stream: &mut TcpStream, what: &str) {
    let mut buf = [0u8; 256];
    let read = tokio::time::timeout(WAIT, stream.read(&mut buf))
        .await
        .unwrap_or_else(|_| panic!("{what}: the server kept the TCP connection open"));
    match read {
        Ok(0) => {}
        Ok(n) => panic!("{what}: bytes after the Close frame: {:02x?}", &buf[..n]),
        Err(e) => panic!("{what}: the connection ended in an error: {e}"),
    }
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
