//! RFC 6455 conformance of the server's WebSocket framing, case by case in
//! the order of the Autobahn testsuite's sections (framing, pings and
//! pongs, reserved bits and opcodes, fragmentation, UTF-8, closing,
//! limits), over a raw socket with every frame written by hand.
//!
//! The server speaks STOMP, not echo: where Autobahn checks an echo, these
//! cases send a STOMP frame in the framing under test and check the STOMP
//! reply (RECEIPT, or the MESSAGE that comes back to the socket's own
//! subscription with the body byte for byte). They pin the behaviour of
//! the WebSocket layer the server ships with, so that a replacement can be
//! held to "unchanged or better". Cases the current layer gets wrong are
//! written for the RFC's behaviour and ignored with the reason.

use crate::raw_ws::*;
use crate::support::*;
use stompbox::codec::{Command, Frame};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

/// A server whose STOMP frame limit (2 MiB) leaves room for the large
/// messages of the framing cases; after CONNECT a WebSocket message may be
/// four times that.
async fn roomy_server() -> TestServer {
    spawn_server(|config| config.frame_limits.max_frame_bytes = 2 * 1024 * 1024).await
}

/// The defaults: STOMP frames up to 64 KiB, 16 KiB before CONNECT.
const DEFAULT_FRAME_BYTES: usize = 64 * 1024;
const DEFAULT_UNAUTHENTICATED_FRAME_BYTES: usize = 16 * 1024;

/// One raw WebSocket client with its own masking keys.
struct Peer {
    stream: TcpStream,
    masks: Masks,
}

impl Peer {
    /// Just after the `101`, before CONNECT.
    async fn open(server: &TestServer, seed: u32) -> Peer {
        Peer {
            stream: handshake(server).await,
            masks: Masks::new(seed),
        }
    }

    /// After CONNECTED.
    async fn connected(server: &TestServer, seed: u32) -> Peer {
        let mut peer = Peer::open(server, seed).await;
        peer.send(
            FIN | TEXT,
            b"CONNECT\naccept-version:1.2\nhost:x\nheart-beat:0,0\n\n\0",
        )
        .await;
        peer.expect_stomp(Command::Connected).await;
        peer
    }

    /// After CONNECTED and a SUBSCRIBE to a fresh topic; returns the topic.
    async fn subscribed(server: &TestServer, seed: u32) -> (Peer, String) {
        let mut peer = Peer::connected(server, seed).await;
        let topic = unique("/topic/wsc.");
        let subscribe = format!("SUBSCRIBE\nid:0\ndestination:{topic}\nreceipt:sub\n\n\0");
        peer.send(FIN | TEXT, subscribe.as_bytes()).await;
        let receipt = peer.expect_stomp(Command::Receipt).await;
        assert_eq!(receipt.headers.get("receipt-id"), Some("sub"));
        (peer, topic)
    }

    async fn write(&mut self, bytes: &[u8]) {
        tokio::time::timeout(WAIT, self.stream.write_all(bytes))
            .await
            .expect("write timed out")
            .expect("write");
    }

    /// One frame, masked with the next key.
    async fn send(&mut self, first: u8, payload: &[u8]) {
        let frame = self.masks.frame(first, payload);
        self.write(&frame).await;
    }

    /// `payload` as a message in fragments of `size` bytes (the first with
    /// `opcode`, the rest continuations), all in one write.
    fn fragments(&mut self, opcode: u8, payload: &[u8], size: usize) -> Vec<u8> {
        let chunks: Vec<&[u8]> = if payload.is_empty() {
            vec![&[][..]]
        } else {
            payload.chunks(size).collect()
        };
        let last = chunks.len() - 1;
        let mut bytes = Vec::new();
        for (i, chunk) in chunks.into_iter().enumerate() {
            let op = if i == 0 { opcode } else { CONTINUATION };
            let fin = if i == last { FIN } else { 0 };
            bytes.extend(self.masks.frame(fin | op, chunk));
        }
        bytes
    }

    async fn expect_stomp(&mut self, command: Command) -> Frame {
        let frame = next_stomp(&mut self.stream).await;
        assert_eq!(frame.command, command, "{frame:?}");
        frame
    }

    /// The next message must be the MESSAGE carrying `body`, sent as a text
    /// message when it is valid UTF-8 and as a binary one otherwise.
    async fn expect_message(&mut self, body: &[u8], what: &str) {
        let (opcode, payload) = next_ws_message(&mut self.stream).await;
        let expected = if std::str::from_utf8(body).is_ok() {
            TEXT
        } else {
            BINARY
        };
        assert_eq!(opcode, expected, "{what}: message opcode");
        let mut decoder = stompbox::codec::Decoder::new(stompbox::codec::Limits {
            max_frame_bytes: 64 * 1024 * 1024,
            ..stompbox::codec::Limits::default()
        });
        let mut buf = bytes::BytesMut::from(&payload[..]);
        let Ok(Some(stompbox::codec::Decoded::Frame(frame))) = decoder.decode(&mut buf) else {
            panic!("{what}: not a STOMP frame");
        };
        assert_eq!(frame.command, Command::Message, "{what}: {frame:?}");
        assert!(
            frame.body[..] == body[..],
            "{what}: body of {} bytes, expected {}",
            frame.body.len(),
            body.len()
        );
    }

    /// A SEND with a receipt to a topic nobody reads: the RECEIPT proves
    /// the server is still reading and understood everything before it.
    async fn probe(&mut self, id: &str) {
        let send = format!("SEND\ndestination:/topic/wsc.void\nreceipt:{id}\n\nx\0");
        self.send(FIN | TEXT, send.as_bytes()).await;
        let receipt = self.expect_stomp(Command::Receipt).await;
        assert_eq!(receipt.headers.get("receipt-id"), Some(id));
    }

    async fn expect_close(&mut self, code: u16, what: &str) -> Vec<u8> {
        expect_close(&mut self.stream, code, what).await
    }
}

/// A SEND of `body` to `destination`, framed by `content-length`.
fn send_frame(destination: &str, body: &[u8]) -> Vec<u8> {
    let mut bytes = format!(
        "SEND\ndestination:{destination}\ncontent-length:{}\n\n",
        body.len()
    )
    .into_bytes();
    bytes.extend_from_slice(body);
    bytes.push(0);
    bytes
}

/// A body of `length` bytes: letters (valid UTF-8) or every byte value
/// (NUL and invalid UTF-8 included).
fn body(length: usize, text: bool) -> Vec<u8> {
    (0..length)
        .map(|i| {
            if text {
                b'a' + (i % 26) as u8
            } else {
                (i * 7 + 3) as u8
            }
        })
        .collect()
}

/// A SEND to `destination` exactly `total` bytes long, and its body;
/// `None` when even an empty body does not fit.
fn send_of_length(destination: &str, total: usize, text: bool) -> Option<(Vec<u8>, Vec<u8>)> {
    let fixed = "SEND\ndestination:\ncontent-length:\n\n\0".len() + destination.len();
    (1..=10).find_map(|digits| {
        let length = total.checked_sub(fixed + digits)?;
        (length.to_string().len() == digits).then(|| {
            let body = body(length, text);
            let frame = send_frame(destination, &body);
            assert_eq!(frame.len(), total);
            (frame, body)
        })
    })
}

// 1. Framing

/// Messages of every 7-bit length, text and binary: each is a SEND whose
/// body comes back in a MESSAGE; lengths too short for a SEND are that many
/// heart-beat EOLs, which must not disturb what follows.
#[tokio::test]
async fn framing_messages_of_every_seven_bit_length_are_understood() {
    let server = roomy_server().await;
    for (opcode, text) in [(TEXT, true), (BINARY, false)] {
        let (mut peer, topic) = Peer::subscribed(&server, 11).await;
        for length in 0..=125 {
            match send_of_length(&topic, length, text) {
                Some((send, body)) => {
                    peer.send(FIN | opcode, &send).await;
                    peer.expect_message(&body, &format!("{opcode:#x} length {length}"))
                        .await;
                }
                None => peer.send(FIN | opcode, &vec![b'\n'; length]).await,
            }
        }
        peer.probe("seven-bit").await;
    }
}

/// Lengths around and past the 16-bit and 64-bit encodings, text and
/// binary, up to about a megabyte (within the limit after CONNECT).
#[tokio::test]
async fn framing_sixteen_and_sixty_four_bit_lengths_are_understood() {
    let server = roomy_server().await;
    for (opcode, text) in [(TEXT, true), (BINARY, false)] {
        let (mut peer, topic) = Peer::subscribed(&server, 12).await;
        for length in [126, 127, 128, 1000, 65535, 65536, 65537, 1_000_000] {
            let (send, body) = send_of_length(&topic, length, text).expect("fits");
            let frame = peer.masks.frame(FIN | opcode, &send);
            let expected_code = match length {
                126..=65535 => 126,
                _ => 127,
            };
            assert_eq!(frame[1] & 0x7f, expected_code);
            peer.write(&frame).await;
            peer.expect_message(&body, &format!("{opcode:#x} length {length}"))
                .await;
        }
    }
}

/// RFC 6455 §5.2: the length must use the fewest bytes; a short length in
/// the 16-bit or 64-bit form is a protocol error.
#[tokio::test]
async fn framing_lengths_not_in_the_shortest_form_are_refused_with_1002() {
    let server = roomy_server().await;
    let long_in_64 = vec![b'\n'; 300];
    let cases: [(&str, Vec<u8>); 3] = [
        ("5 bytes in a 16-bit length", {
            let mut f = vec![FIN | TEXT, 0x80 | 126, 0, 5, 0, 0, 0, 0];
            f.extend_from_slice(b"\n\n\n\n\n");
            f
        }),
        ("5 bytes in a 64-bit length", {
            let mut f = vec![FIN | TEXT, 0x80 | 127, 0, 0, 0, 0, 0, 0, 0, 5, 0, 0, 0, 0];
            f.extend_from_slice(b"\n\n\n\n\n");
            f
        }),
        ("300 bytes in a 64-bit length", {
            let mut f = vec![FIN | TEXT, 0x80 | 127, 0, 0, 0, 0, 0, 0, 1, 44, 0, 0, 0, 0];
            f.extend_from_slice(&long_in_64);
            f
        }),
    ];
    for (what, bad) in cases {
        let mut peer = Peer::connected(&server, 13).await;
        peer.write(&bad).await;
        peer.expect_close(1002, what).await;
    }
}

/// The masking key is applied byte by byte from the start of each frame's
/// payload: keys with every byte different, all-ones and zero, over
/// payloads whose length is no multiple of four.
#[tokio::test]
async fn framing_every_masking_key_is_applied() {
    let server = roomy_server().await;
    let (mut peer, topic) = Peer::subscribed(&server, 14).await;
    let mut masks = vec![[0, 0, 0, 0], [0xff; 4], [0x01, 0x80, 0x7f, 0xfe]];
    masks.extend((0..20).map(|_| peer.masks.next_mask()));
    for (i, mask) in masks.into_iter().enumerate() {
        for text in [true, false] {
            let body = body(13 + i, text);
            let opcode = if text { TEXT } else { BINARY };
            peer.write(&masked_frame(
                FIN | opcode,
                mask,
                &send_frame(&topic, &body),
            ))
            .await;
            peer.expect_message(&body, &format!("mask {mask:02x?}"))
                .await;
        }
    }
}

/// A frame written one byte per write, for 7-bit and 16-bit lengths.
#[tokio::test]
async fn framing_a_frame_written_byte_by_byte_is_understood() {
    let server = roomy_server().await;
    let (mut peer, topic) = Peer::subscribed(&server, 15).await;
    for length in [3, 200] {
        let body = body(length, false);
        let frame = peer.masks.frame(FIN | BINARY, &send_frame(&topic, &body));
        for byte in frame {
            peer.write(&[byte]).await;
        }
        peer.expect_message(&body, &format!("byte by byte, body {length}"))
            .await;
    }
    let ping = peer.masks.frame(FIN | PING, b"one byte at a time");
    for byte in ping {
        peer.write(&[byte]).await;
    }
    let pong = next_ws_frame(&mut peer.stream).await;
    assert_eq!(pong, Some((PONG, b"one byte at a time".to_vec())));
}

/// A frame (16-bit length) split in two writes at every offset: inside
/// the header, the extended length, the mask and the payload.
#[tokio::test]
async fn framing_a_frame_split_at_every_offset_is_understood() {
    let server = roomy_server().await;
    let (mut peer, topic) = Peer::subscribed(&server, 16).await;
    let body = body(120, true);
    let send = send_frame(&topic, &body);
    let first = peer.masks.frame(FIN | TEXT, &send);
    assert_eq!(first[1] & 0x7f, 126);
    for split in 1..first.len() {
        let frame = peer.masks.frame(FIN | TEXT, &send);
        peer.write(&frame[..split]).await;
        peer.write(&frame[split..]).await;
        peer.expect_message(&body, &format!("split at {split}"))
            .await;
    }
}

/// Many frames in one write, each a message, answered in order; then
/// CONNECT, SUBSCRIBE and SEND together in one write.
#[tokio::test]
async fn framing_many_frames_in_one_write_are_all_understood() {
    let server = roomy_server().await;
    let (mut peer, topic) = Peer::subscribed(&server, 17).await;
    let bodies: Vec<Vec<u8>> = (0..200).map(|i| body(i * 3, i % 2 == 0)).collect();
    let mut bytes = Vec::new();
    for (i, body) in bodies.iter().enumerate() {
        let opcode = if i % 2 == 0 { TEXT } else { BINARY };
        bytes.extend(peer.masks.frame(FIN | opcode, &send_frame(&topic, body)));
    }
    peer.write(&bytes).await;
    for (i, body) in bodies.iter().enumerate() {
        peer.expect_message(body, &format!("message {i}")).await;
    }

    let mut fresh = Peer::open(&server, 18).await;
    let topic = unique("/topic/wsc.");
    let mut bytes = fresh.masks.frame(
        FIN | TEXT,
        b"CONNECT\naccept-version:1.2\nhost:x\nheart-beat:0,0\n\n\0",
    );
    bytes.extend(fresh.masks.frame(
        FIN | TEXT,
        format!("SUBSCRIBE\nid:0\ndestination:{topic}\n\n\0").as_bytes(),
    ));
    bytes.extend(
        fresh
            .masks
            .frame(FIN | BINARY, &send_frame(&topic, b"\0\xff")),
    );
    fresh.write(&bytes).await;
    fresh.expect_stomp(Command::Connected).await;
    fresh
        .expect_message(b"\0\xff", "after CONNECT in the same write")
        .await;
}

// 2. Pings and pongs

/// A ping with 0 to 125 bytes is answered by a pong with the same bytes,
/// before CONNECT and after it.
#[tokio::test]
async fn pings_of_every_length_are_answered_with_their_payload() {
    let server = roomy_server().await;
    for connected in [false, true] {
        let mut peer = if connected {
            Peer::connected(&server, 21).await
        } else {
            Peer::open(&server, 22).await
        };
        for length in 0..=125 {
            let payload = body(length, length % 2 == 0);
            peer.send(FIN | PING, &payload).await;
            let pong = next_server_frame(&mut peer.stream)
                .await
                .expect("closed instead of answering a ping");
            let expected = ServerFrame {
                fin: true,
                reserved: 0,
                opcode: PONG,
                payload,
            };
            assert_eq!(pong, expected, "length {length}, connected {connected}");
        }
        if connected {
            peer.probe("pings").await;
        }
    }
}

/// Control frames may carry at most 125 bytes (RFC 6455 §5.5).
#[tokio::test]
async fn control_frames_longer_than_125_bytes_are_refused_with_1002() {
    let server = roomy_server().await;
    for (what, opcode) in [("ping", PING), ("pong", PONG), ("close", CLOSE)] {
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.resize(126, b'x');
        let mut peer = Peer::connected(&server, 23).await;
        peer.send(FIN | opcode, &payload).await;
        peer.expect_close(1002, &format!("{what} of 126 bytes"))
            .await;
    }
}

/// A pong nobody asked for is ignored: no answer, and the session goes on.
#[tokio::test]
async fn unsolicited_pongs_are_ignored() {
    let server = roomy_server().await;
    let (mut peer, topic) = Peer::subscribed(&server, 24).await;
    peer.send(FIN | PONG, b"").await;
    peer.send(FIN | PONG, b"unsolicited").await;
    peer.send(FIN | TEXT, &send_frame(&topic, b"after pongs"))
        .await;
    peer.expect_message(b"after pongs", "after pongs").await;
}

/// A ping between the fragments of a message is answered at once, and the
/// message is still assembled.
#[tokio::test]
async fn pings_between_fragments_are_answered() {
    let server = roomy_server().await;
    for opcode in [TEXT, BINARY] {
        let (mut peer, topic) = Peer::subscribed(&server, 25).await;
        let send = send_frame(&topic, b"fragmented around pings");
        let pieces: Vec<&[u8]> = send.chunks(10).collect();
        let last = pieces.len() - 1;
        for (i, piece) in pieces.iter().enumerate() {
            let op = if i == 0 { opcode } else { CONTINUATION };
            let fin = if i == last { FIN } else { 0 };
            peer.send(fin | op, piece).await;
            if i != last {
                let ping = format!("ping {i}");
                peer.send(FIN | PING, ping.as_bytes()).await;
                let pong = next_ws_frame(&mut peer.stream).await;
                assert_eq!(pong, Some((PONG, ping.into_bytes())));
            }
        }
        peer.expect_message(b"fragmented around pings", "around pings")
            .await;
    }
}

/// 1000 pings written while the client reads: every one is answered, in
/// order, with its own payload.
#[tokio::test]
async fn a_burst_of_pings_is_answered_in_full_and_in_order() {
    let server = roomy_server().await;
    let mut peer = Peer::connected(&server, 26).await;
    const PINGS: usize = 1000;
    let mut bytes = Vec::new();
    for i in 0..PINGS {
        bytes.extend(peer.masks.frame(FIN | PING, i.to_string().as_bytes()));
    }
    let (mut reader, mut writer) = peer.stream.split();
    let write = async {
        // In pieces, so that pongs flow back while pings still arrive.
        for chunk in bytes.chunks(997) {
            tokio::time::timeout(WAIT, writer.write_all(chunk))
                .await
                .expect("write timed out")
                .expect("write");
        }
    };
    let read = async {
        let mut pongs = Vec::new();
        while pongs.len() < PINGS {
            let frame = tokio::time::timeout(WAIT, next_frame_from(&mut reader))
                .await
                .expect("pongs stopped")
                .expect("closed while answering pings");
            assert_eq!(frame.0, PONG);
            pongs.push(String::from_utf8(frame.1).expect("pong payload"));
        }
        pongs
    };
    let ((), pongs) = tokio::join!(write, read);
    let expected: Vec<String> = (0..PINGS).map(|i| i.to_string()).collect();
    assert_eq!(pongs, expected);
    peer.probe("burst").await;
}

/// Reads one server frame from a read half: opcode and payload.
async fn next_frame_from(
    reader: &mut (impl tokio::io::AsyncRead + Unpin),
) -> Option<(u8, Vec<u8>)> {
    use tokio::io::AsyncReadExt;
    let mut head = [0u8; 2];
    reader.read_exact(&mut head).await.ok()?;
    let length = match head[1] & 0x7f {
        126 => usize::from(reader.read_u16().await.ok()?),
        127 => usize::try_from(reader.read_u64().await.ok()?).ok()?,
        short => usize::from(short),
    };
    let mut payload = vec![0u8; length];
    reader.read_exact(&mut payload).await.ok()?;
    Some((head[0] & 0x0f, payload))
}

/// A ping after the client's Close is not answered: the server echoes the
/// Close and ends the connection.
#[tokio::test]
async fn a_ping_after_close_is_not_answered() {
    let server = roomy_server().await;
    let mut peer = Peer::connected(&server, 27).await;
    let mut bytes = peer.masks.frame(FIN | CLOSE, &1000u16.to_be_bytes());
    bytes.extend(peer.masks.frame(FIN | PING, b"too late"));
    peer.write(&bytes).await;
    peer.expect_close(1000, "ping after close").await;
}

// 3. Reserved bits, reserved opcodes, masking

/// Any RSV bit, with no extension negotiated, on data and control frames,
/// before CONNECT and after: 1002.
#[tokio::test]
async fn reserved_bits_are_refused_with_1002() {
    let server = roomy_server().await;
    for rsv in 1..=7u8 {
        for (opcode, payload) in [
            (TEXT, &b"\n"[..]),
            (BINARY, &b"\n"[..]),
            (PING, &b"p"[..]),
            (CLOSE, &[0x03, 0xe8][..]),
        ] {
            for connected in [false, true] {
                let mut peer = if connected {
                    Peer::connected(&server, 31).await
                } else {
                    Peer::open(&server, 32).await
                };
                peer.send(FIN | (rsv << 4) | opcode, payload).await;
                peer.expect_close(
                    1002,
                    &format!("rsv {rsv:03b}, opcode {opcode:#x}, connected {connected}"),
                )
                .await;
            }
        }
    }
}

/// Opcodes 3-7 and 11-15 are reserved: 1002, with or without payload,
/// with or without FIN.
#[tokio::test]
async fn reserved_opcodes_are_refused_with_1002() {
    let server = roomy_server().await;
    for opcode in (3..=7).chain(11..=15) {
        for (fin, payload) in [(FIN, &b""[..]), (FIN, &b"payload"[..]), (0, &b"x"[..])] {
            let mut peer = Peer::connected(&server, 33).await;
            peer.send(fin | opcode, payload).await;
            peer.expect_close(1002, &format!("opcode {opcode}, fin {fin:#x}"))
                .await;
        }
    }
}

/// A client frame without a mask (RFC 6455 §5.1): 1002, whatever the
/// frame.
#[tokio::test]
async fn unmasked_client_frames_are_refused_with_1002() {
    let server = roomy_server().await;
    for (what, first, payload) in [
        ("text", FIN | TEXT, &b"\n"[..]),
        ("binary", FIN | BINARY, &b"\n"[..]),
        ("empty text", FIN | TEXT, &b""[..]),
        ("ping", FIN | PING, &b"p"[..]),
        ("pong", FIN | PONG, &b"p"[..]),
        ("close", FIN | CLOSE, &[0x03, 0xe8][..]),
    ] {
        for connected in [false, true] {
            let mut peer = if connected {
                Peer::connected(&server, 34).await
            } else {
                Peer::open(&server, 35).await
            };
            peer.write(&frame(first, false, payload)).await;
            peer.expect_close(1002, &format!("unmasked {what}, connected {connected}"))
                .await;
        }
    }
}

// 4. Fragmentation

/// A SEND in 2 to 20 fragments and in fragments of one byte, text and
/// binary, all in one write.
#[tokio::test]
async fn fragmented_messages_are_assembled() {
    let server = roomy_server().await;
    for (opcode, text) in [(TEXT, true), (BINARY, false)] {
        let (mut peer, topic) = Peer::subscribed(&server, 41).await;
        let body = body(300, text);
        let send = send_frame(&topic, &body);
        let sizes = (2..=20)
            .map(|pieces| send.len().div_ceil(pieces))
            .chain([1, 7, 125, 126, 200]);
        for size in sizes {
            let bytes = peer.fragments(opcode, &send, size);
            peer.write(&bytes).await;
            peer.expect_message(&body, &format!("{opcode:#x} in fragments of {size}"))
                .await;
        }
    }
}

/// Empty fragments (first, middle and last) are fragments like any other.
#[tokio::test]
async fn empty_fragments_are_accepted() {
    let server = roomy_server().await;
    let (mut peer, topic) = Peer::subscribed(&server, 42).await;
    let send = send_frame(&topic, b"empty fragments");
    let (head, tail) = send.split_at(20);
    let mut bytes = peer.masks.frame(TEXT, b"");
    bytes.extend(peer.masks.frame(CONTINUATION, head));
    bytes.extend(peer.masks.frame(CONTINUATION, b""));
    bytes.extend(peer.masks.frame(CONTINUATION, tail));
    bytes.extend(peer.masks.frame(FIN | CONTINUATION, b""));
    peer.write(&bytes).await;
    peer.expect_message(b"empty fragments", "empty fragments")
        .await;
}

/// A continuation frame with no message open: 1002, with FIN or without,
/// before and after a complete message.
#[tokio::test]
async fn a_continuation_without_a_start_is_refused_with_1002() {
    let server = roomy_server().await;
    for fin in [FIN, 0] {
        for after_a_message in [false, true] {
            let (mut peer, topic) = Peer::subscribed(&server, 43).await;
            if after_a_message {
                let bytes = peer.fragments(TEXT, &send_frame(&topic, b"done"), 8);
                peer.write(&bytes).await;
                peer.expect_message(b"done", "the message before").await;
            }
            peer.send(fin | CONTINUATION, b"\n").await;
            peer.expect_close(
                1002,
                &format!("continuation fin {fin:#x}, after a message {after_a_message}"),
            )
            .await;
        }
    }
}

/// A new text or binary frame while a fragmented message is open: 1002.
#[tokio::test]
async fn a_data_frame_inside_a_fragmented_message_is_refused_with_1002() {
    let server = roomy_server().await;
    for open in [TEXT, BINARY] {
        for (next, fin) in [(TEXT, FIN), (BINARY, FIN), (TEXT, 0), (BINARY, 0)] {
            let mut peer = Peer::connected(&server, 44).await;
            peer.send(open, b"\n").await;
            peer.send(fin | next, b"\n").await;
            peer.expect_close(
                1002,
                &format!("{next:#x} (fin {fin:#x}) inside an open {open:#x}"),
            )
            .await;
        }
    }
}

/// Control frames cannot be fragmented (RFC 6455 §5.5): a ping, pong or
/// close without FIN is 1002, also in the middle of a message.
#[tokio::test]
async fn fragmented_control_frames_are_refused_with_1002() {
    let server = roomy_server().await;
    for (what, opcode, payload) in [
        ("ping", PING, &b"ping"[..]),
        ("pong", PONG, &b"pong"[..]),
        ("close", CLOSE, &[0x03, 0xe8][..]),
    ] {
        for inside_a_message in [false, true] {
            let mut peer = Peer::connected(&server, 45).await;
            if inside_a_message {
                peer.send(TEXT, b"\n").await;
            }
            peer.send(opcode, payload).await;
            if inside_a_message {
                peer.send(FIN | CONTINUATION, b"\n").await;
            }
            peer.expect_close(
                1002,
                &format!("{what} without FIN, inside a message {inside_a_message}"),
            )
            .await;
        }
    }
}

// 5. UTF-8

/// Text with two-, three- and four-byte code points.
const MULTIBYTE: &str = "\u{e9}t\u{e9} \u{3ba}\u{1f79}\u{3c3}\u{3bc}\u{3b5} \u{20ac}\u{fffd} \u{1d11e}\u{1f600}\u{10ffff}";

/// Valid multibyte UTF-8 in one frame and in fragments that cut through
/// code points at every byte.
#[tokio::test]
async fn valid_utf8_is_accepted_whole_and_split_inside_code_points() {
    let server = roomy_server().await;
    let (mut peer, topic) = Peer::subscribed(&server, 51).await;
    let body = MULTIBYTE.as_bytes();
    let send = send_frame(&topic, body);
    peer.send(FIN | TEXT, &send).await;
    peer.expect_message(body, "whole").await;
    for size in [1, 2, 3, 5] {
        let bytes = peer.fragments(TEXT, &send, size);
        peer.write(&bytes).await;
        peer.expect_message(body, &format!("fragments of {size}"))
            .await;
    }
    // Every single cut point in two fragments.
    let start = send.len() - body.len() - 1;
    for cut in start..send.len() {
        let mut bytes = peer.masks.frame(TEXT, &send[..cut]);
        bytes.extend(peer.masks.frame(FIN | CONTINUATION, &send[cut..]));
        peer.write(&bytes).await;
        peer.expect_message(body, &format!("cut at {cut}")).await;
    }
}

/// Byte sequences that are not UTF-8.
fn invalid_utf8() -> Vec<(&'static str, &'static [u8])> {
    vec![
        ("overlong '/' in two bytes", b"\xc0\xaf"),
        ("overlong in two bytes, C1", b"\xc1\xbf"),
        ("overlong '/' in three bytes", b"\xe0\x80\xaf"),
        ("overlong U+07FF in three bytes", b"\xe0\x9f\xbf"),
        ("overlong '/' in four bytes", b"\xf0\x80\x80\xaf"),
        ("overlong U+FFFF in four bytes", b"\xf0\x8f\xbf\xbf"),
        ("surrogate U+D800", b"\xed\xa0\x80"),
        ("surrogate U+DFFF", b"\xed\xbf\xbf"),
        ("surrogate pair", b"\xed\xa0\x80\xed\xb0\x80"),
        ("U+110000", b"\xf4\x90\x80\x80"),
        ("lead byte F5", b"\xf5\x80\x80\x80"),
        ("lead byte F7", b"\xf7\xbf\xbf\xbf"),
        ("byte FE", b"\xfe"),
        ("byte FF", b"\xff"),
        ("FE FE FF FF", b"\xfe\xfe\xff\xff"),
        ("lone continuation byte", b"\x80"),
        ("continuation byte BF", b"\xbf"),
        ("two-byte lead then ASCII", b"\xc3\x28"),
        ("three-byte sequence cut by ASCII", b"\xe2\x82\x28"),
    ]
}

/// Sequences cut short by the end of the message.
const TRUNCATED: [(&str, &[u8]); 4] = [
    ("two-byte sequence cut short", b"\xc3"),
    ("three-byte sequence cut short", b"\xe2\x82"),
    ("four-byte sequence cut short", b"\xf0\x9f\x98"),
    ("four-byte lead alone", b"\xf0"),
];

/// A text message with `bad` inside the body of an otherwise valid SEND.
fn send_with(bad: &[u8], at_end: bool) -> Vec<u8> {
    let mut payload = b"SEND\ndestination:/topic/wsc.utf8\n\nok ".to_vec();
    payload.extend_from_slice(bad);
    if !at_end {
        payload.extend_from_slice(b" ok\0");
    }
    payload
}

/// Invalid UTF-8 in a single-frame text message: 1007, before CONNECT and
/// after; also when the message ends inside a code point.
#[tokio::test]
async fn invalid_utf8_in_a_text_frame_is_refused_with_1007() {
    let server = roomy_server().await;
    let mut cases: Vec<(&str, Vec<u8>)> = invalid_utf8()
        .into_iter()
        .map(|(what, bad)| (what, send_with(bad, false)))
        .collect();
    cases.extend(TRUNCATED.map(|(what, bad)| (what, send_with(bad, true))));
    for (what, payload) in cases {
        for connected in [false, true] {
            let mut peer = if connected {
                Peer::connected(&server, 52).await
            } else {
                Peer::open(&server, 53).await
            };
            peer.send(FIN | TEXT, &payload).await;
            peer.expect_close(1007, &format!("{what}, connected {connected}"))
                .await;
        }
    }
}

/// The same in fragmented messages: in fragments of one byte and of
/// three, and cut short at the end of the last fragment.
#[tokio::test]
async fn invalid_utf8_in_a_fragmented_message_is_refused_with_1007() {
    let server = roomy_server().await;
    let mut cases: Vec<(&str, Vec<u8>)> = invalid_utf8()
        .into_iter()
        .map(|(what, bad)| (what, send_with(bad, false)))
        .collect();
    cases.extend(TRUNCATED.map(|(what, bad)| (what, send_with(bad, true))));
    for (what, payload) in cases {
        for size in [1, 3] {
            let mut peer = Peer::connected(&server, 54).await;
            let bytes = peer.fragments(TEXT, &payload, size);
            peer.write(&bytes).await;
            peer.expect_close(1007, &format!("{what}, fragments of {size}"))
                .await;
        }
    }
}

/// Invalid UTF-8 is refused as soon as the fragment holding it arrives,
/// without waiting for the rest of the message (which never comes).
#[tokio::test]
async fn invalid_utf8_fails_fast_within_an_unfinished_message() {
    let server = roomy_server().await;
    for (what, bad) in invalid_utf8() {
        let mut peer = Peer::connected(&server, 55).await;
        peer.send(TEXT, b"SEND\ndestination:/topic/wsc.utf8\n\n")
            .await;
        let mut middle = bad.to_vec();
        middle.extend_from_slice(b"more");
        peer.send(CONTINUATION, &middle).await;
        peer.expect_close(1007, &format!("{what}, message unfinished"))
            .await;
    }
}

/// A Close frame's reason must be UTF-8 too: 1007.
#[tokio::test]
async fn invalid_utf8_in_a_close_reason_is_refused_with_1007() {
    let server = roomy_server().await;
    let mut cases = invalid_utf8();
    cases.extend(TRUNCATED);
    for (what, bad) in cases {
        let mut peer = Peer::connected(&server, 56).await;
        let mut payload = 1000u16.to_be_bytes().to_vec();
        payload.extend_from_slice(b"bye ");
        payload.extend_from_slice(bad);
        peer.send(FIN | CLOSE, &payload).await;
        peer.expect_close(1007, &format!("close reason: {what}"))
            .await;
    }
}

// 6. Closing

/// Every code an endpoint may send is echoed in the server's Close, and
/// then the TCP connection ends (no reset); with and without a reason,
/// before CONNECT and after.
#[tokio::test]
async fn close_codes_that_may_be_sent_are_echoed() {
    let server = roomy_server().await;
    let codes = [
        1000u16, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 3000, 3999, 4000, 4999,
    ];
    for code in codes {
        for (reason, connected) in [
            (&b""[..], true),
            (&b"see you"[..], true),
            (&b"x"[..], false),
        ] {
            let mut peer = if connected {
                Peer::connected(&server, 61).await
            } else {
                Peer::open(&server, 62).await
            };
            let close = peer
                .masks
                .frame(FIN | CLOSE, &[&code.to_be_bytes()[..], reason].concat());
            peer.write(&close).await;
            peer.expect_close(
                code,
                &format!("code {code}, reason {reason:?}, connected {connected}"),
            )
            .await;
        }
    }
}

/// Codes outside what may be sent (RFC 6455 §7.4): below 1000, the
/// ones that only report a state (1004-1006, 1015), those reserved for
/// future versions of the protocol (1016-2999) and those past 4999: 1002.
#[tokio::test]
async fn close_codes_that_may_not_be_sent_are_refused_with_1002() {
    let server = roomy_server().await;
    let codes = [
        0u16, 1, 999, 1004, 1005, 1006, 1015, 1016, 1100, 2000, 2999, 5000, 65535,
    ];
    for code in codes {
        let mut peer = Peer::connected(&server, 63).await;
        peer.send(FIN | CLOSE, &code.to_be_bytes()).await;
        peer.expect_close(1002, &format!("code {code}")).await;
    }
}

/// 1012-1014, registered with IANA after RFC 6455 (service restart, try
/// again later, bad gateway), are accepted and echoed like 1011.
#[tokio::test]
async fn close_codes_registered_after_the_rfc_are_echoed() {
    let server = roomy_server().await;
    for code in [1012u16, 1013, 1014] {
        let mut peer = Peer::connected(&server, 64).await;
        peer.send(FIN | CLOSE, &code.to_be_bytes()).await;
        peer.expect_close(code, &format!("code {code}")).await;
    }
}

/// A reason in multibyte UTF-8, four-byte code points included, is valid.
#[tokio::test]
async fn a_close_reason_in_multibyte_utf8_is_accepted() {
    let server = roomy_server().await;
    let mut peer = Peer::connected(&server, 60).await;
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend_from_slice(MULTIBYTE.as_bytes());
    peer.send(FIN | CLOSE, &payload).await;
    peer.expect_close(1000, "multibyte reason").await;
}

/// A one-byte Close payload cannot hold a code: 1002.
#[tokio::test]
async fn a_close_with_a_one_byte_payload_is_refused_with_1002() {
    let server = roomy_server().await;
    let mut peer = Peer::connected(&server, 65).await;
    peer.send(FIN | CLOSE, &[0x03]).await;
    peer.expect_close(1002, "one-byte close").await;
}

/// The longest Close a client may send (code and a 123-byte reason), and
/// the shortest (empty): both answered.
#[tokio::test]
async fn closes_of_the_largest_and_smallest_size_are_answered() {
    let server = roomy_server().await;
    let mut peer = Peer::connected(&server, 66).await;
    let mut payload = 1000u16.to_be_bytes().to_vec();
    payload.extend(body(123, true));
    assert_eq!(peer.masks.frame(FIN | CLOSE, &payload)[1] & 0x7f, 125);
    peer.send(FIN | CLOSE, &payload).await;
    peer.expect_close(1000, "close of 125 bytes").await;

    let mut peer = Peer::connected(&server, 67).await;
    peer.send(FIN | CLOSE, b"").await;
    let frame = next_server_frame(&mut peer.stream).await;
    assert_eq!(
        frame,
        Some(ServerFrame {
            fin: true,
            reserved: 0,
            opcode: CLOSE,
            payload: Vec::new(),
        })
    );
    expect_eof(&mut peer.stream, "empty close").await;
}

/// Whatever follows the client's Close is ignored: no RECEIPT, no
/// MESSAGE, no pong; the Close is echoed and the connection ends.
#[tokio::test]
async fn data_after_close_is_ignored() {
    let server = roomy_server().await;
    let (mut peer, topic) = Peer::subscribed(&server, 68).await;
    let mut bytes = peer.masks.frame(FIN | CLOSE, &1001u16.to_be_bytes());
    let mut send = b"SEND\ndestination:".to_vec();
    send.extend_from_slice(topic.as_bytes());
    send.extend_from_slice(b"\nreceipt:late\n\nlate\0");
    bytes.extend(peer.masks.frame(FIN | TEXT, &send));
    bytes.extend(peer.masks.frame(FIN | PING, b"late"));
    bytes.extend(peer.masks.frame(FIN | CLOSE, &1000u16.to_be_bytes()));
    peer.write(&bytes).await;
    peer.expect_close(1001, "data after close").await;
}

/// Much more after the Close than one read takes in: the server need not
/// read it, but its Close must still arrive and the stream end cleanly,
/// not be cut off by a reset for the unread bytes. Repeated, as a reset
/// that races the Close only shows now and then.
#[tokio::test]
async fn unread_data_after_close_does_not_cut_off_the_close() {
    let server = roomy_server().await;
    for round in 0..10 {
        let mut peer = Peer::connected(&server, 70).await;
        let mut bytes = peer.masks.frame(FIN | CLOSE, &1001u16.to_be_bytes());
        bytes.extend(peer.masks.frame(FIN | BINARY, &vec![b'\n'; 200_000]));
        peer.write(&bytes).await;
        peer.expect_close(1001, &format!("200 kB after close, round {round}"))
            .await;
    }
}

/// A Close in the middle of a fragmented message ends it: echoed, and the
/// unfinished message is dropped.
#[tokio::test]
async fn a_close_between_fragments_is_echoed() {
    let server = roomy_server().await;
    let (mut peer, topic) = Peer::subscribed(&server, 69).await;
    let send = send_frame(&topic, b"never finished");
    peer.send(TEXT, &send[..10]).await;
    peer.send(FIN | CLOSE, &1000u16.to_be_bytes()).await;
    peer.expect_close(1000, "close between fragments").await;
}

// 7. Limits

/// Before CONNECT a message may be at most twice the unauthenticated frame
/// limit: one byte more is refused by the WebSocket layer with 1009, from
/// the header alone (the payload is never sent).
#[tokio::test]
async fn before_connect_a_message_over_the_limit_is_refused_with_1009() {
    let server = default_server().await;
    let limit = 2 * DEFAULT_UNAUTHENTICATED_FRAME_BYTES;
    for length in [limit + 1, 65535, 1 << 20] {
        let mut peer = Peer::open(&server, 71).await;
        let frame = peer.masks.frame(FIN | TEXT, &vec![b'\n'; length]);
        // The header and mask only.
        let header = if length < 65536 { 8 } else { 14 };
        peer.write(&frame[..header]).await;
        peer.expect_close(1009, &format!("{length} bytes announced"))
            .await;
    }
    // At the limit the message is read, and the STOMP layer judges it.
    let mut peer = Peer::open(&server, 72).await;
    peer.send(FIN | TEXT, &vec![b'\n'; limit]).await;
    peer.send(
        FIN | TEXT,
        b"CONNECT\naccept-version:1.2\nhost:x\nheart-beat:0,0\n\n\0",
    )
    .await;
    peer.expect_stomp(Command::Connected).await;
}

/// After CONNECT the limit is four STOMP frames' worth: one byte more is
/// refused with 1009 from the header alone; at the limit it is read (and
/// the STOMP layer refuses a frame that large with an ERROR).
#[tokio::test]
async fn after_connect_a_message_over_the_limit_is_refused_with_1009() {
    let server = default_server().await;
    let limit = 4 * DEFAULT_FRAME_BYTES;
    for (opcode, length) in [(TEXT, limit + 1), (BINARY, limit + 1), (BINARY, 1 << 30)] {
        let mut peer = Peer::connected(&server, 73).await;
        let mut frame = peer.masks.frame(FIN | opcode, &[]);
        // Rewrite the length: the payload is never sent.
        frame.truncate(1);
        frame.push(0x80 | 127);
        frame.extend_from_slice(&(length as u64).to_be_bytes());
        frame.extend_from_slice(&[1, 2, 3, 4]);
        peer.write(&frame).await;
        peer.expect_close(1009, &format!("{length} bytes announced"))
            .await;
    }
    // At the limit: heart-beat EOLs are no frame, so nothing is refused.
    let mut peer = Peer::connected(&server, 74).await;
    peer.send(FIN | BINARY, &vec![b'\n'; limit]).await;
    peer.probe("at the limit").await;
}

/// A fragmented message whose fragments each fit but whose total does
/// not: 1009, as for a single frame that large.
#[tokio::test]
async fn a_fragmented_message_over_the_limit_is_refused_with_1009() {
    let server = default_server().await;
    let limit = 4 * DEFAULT_FRAME_BYTES;
    let mut peer = Peer::connected(&server, 75).await;
    let fragment = vec![b'\n'; DEFAULT_FRAME_BYTES];
    peer.send(BINARY, &fragment).await;
    for _ in 1..limit / fragment.len() {
        peer.send(CONTINUATION, &fragment).await;
    }
    peer.send(FIN | CONTINUATION, b"\n").await;
    peer.expect_close(1009, "fragmented message one byte over")
        .await;
}

/// The most significant bit of a 64-bit length must be 0 (RFC 6455
/// §5.2): a protocol error, 1002, not a size the server merely declines.
#[tokio::test]
async fn a_64_bit_length_with_the_top_bit_set_is_refused_with_1002() {
    let server = roomy_server().await;
    for low in [0u64, 5, 1 << 20] {
        let mut peer = Peer::connected(&server, 76).await;
        let mut frame = vec![FIN | BINARY, 0x80 | 127];
        frame.extend_from_slice(&((1u64 << 63) | low).to_be_bytes());
        frame.extend_from_slice(&[9, 8, 7, 6]);
        peer.write(&frame).await;
        peer.expect_close(1002, &format!("length 2^63 + {low}"))
            .await;
    }
}
