//! Property tests for the codec: encode→decode round trips, independence from
//! how the byte stream is split into reads, and the limits the decoder
//! promises on hostile input.

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::sample::Index;
use stompbox_codec::{
    Command, DecodeError, Decoded, Decoder, Frame, Limits, Version, encode_frame, header,
};

const COMMANDS: [Command; 15] = [
    Command::Connect,
    Command::Stomp,
    Command::Send,
    Command::Subscribe,
    Command::Unsubscribe,
    Command::Ack,
    Command::Nack,
    Command::Begin,
    Command::Commit,
    Command::Abort,
    Command::Disconnect,
    Command::Connected,
    Command::Message,
    Command::Receipt,
    Command::Error,
];

fn version() -> impl Strategy<Value = Version> {
    prop::sample::select(Version::ALL.to_vec())
}

fn command() -> impl Strategy<Value = Command> {
    prop::sample::select(COMMANDS.to_vec())
}

/// Short UTF-8 text, heavy in the characters STOMP treats specially (and in
/// the letters that follow a backslash in an escape), with any other `char`
/// mixed in.
fn text() -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            2 => any::<char>(),
            3 => prop::sample::select(vec![':', '\n', '\r', '\\', 'c', 'n', 'r', 't', '\0', 'é']),
        ],
        0..10,
    )
    .prop_map(String::from_iter)
}

/// Body bytes with NULs common enough to matter.
fn body() -> impl Strategy<Value = Vec<u8>> {
    prop::collection::vec(prop_oneof![3 => any::<u8>(), 1 => Just(0u8)], 0..48)
}

/// Turns an arbitrary header into one the wire can carry for `version` and a
/// frame that does (`escapes`) or does not escape its headers, so that the
/// round trip can promise equality:
///
/// * Frames that escape (1.1 and 1.2, except CONNECT, STOMP and CONNECTED):
///   `\n`, `:` and `\` have escapes in both versions and 1.2 escapes `\r`
///   too, so any text survives in 1.2. 1.1 has no escape for `\r`, so a CR is
///   sent as a plain byte. That is harmless inside a name or value, but a
///   value that *ends* in `\r` goes out as `…\r\n`, which every version must
///   read as a CRLF line ending: the CR is lost, so 1.1 values may not end in
///   `\r`. (A name is always followed by the separating `:`, so a CR at its end
///   is fine.)
/// * Frames that do not escape (everything in 1.0; CONNECT, STOMP and CONNECTED
///   in every version) send bytes raw. A `\n` would end the line, so neither
///   names nor values may hold one; the first `:` on the line ends the name,
///   so names may not hold a `:` (values may); and for the CRLF reason above a
///   value may not end in `\r`. A `\` is an ordinary byte here.
/// * No version may carry a NUL in a header: the decoder refuses it, since a
///   NUL ends a frame and passing one on would let a client end another's.
///
/// The name `content-length` is dropped: it is reserved for the header the
/// test adds, because the decoder reads the first one as the body length.
fn wire_safe(
    mut name: String,
    mut value: String,
    version: Version,
    escapes: bool,
) -> Option<(String, String)> {
    name.retain(|c| c != '\0');
    value.retain(|c| c != '\0');
    if !escapes {
        name.retain(|c| c != ':' && c != '\n');
        value.retain(|c| c != '\n');
    }
    if !escapes || version == Version::V1_1 {
        while value.ends_with('\r') {
            value.pop();
        }
    }
    (name != header::CONTENT_LENGTH).then_some((name, value))
}

/// A frame the wire can carry for `version`. With `with_length` the body may
/// hold NULs and a `content-length` header goes in at position `at`; without
/// it, the body's NULs are removed, since the first NUL ends the frame.
fn frame_for(version: Version) -> impl Strategy<Value = Frame> {
    (
        command(),
        prop::collection::vec((text(), text()), 0..8),
        body(),
        any::<bool>(),
        any::<Index>(),
    )
        .prop_map(move |(command, raw_headers, mut body, with_length, at)| {
            let escapes = command.escapes_headers(version);
            let mut headers: Vec<(String, String)> = raw_headers
                .into_iter()
                .filter_map(|(n, v)| wire_safe(n, v, version, escapes))
                .collect();
            if with_length {
                let at = at.index(headers.len() + 1);
                headers.insert(
                    at,
                    (header::CONTENT_LENGTH.to_owned(), body.len().to_string()),
                );
            } else {
                body.retain(|&b| b != 0);
            }
            let mut frame = Frame::new(command).body(body);
            for (name, value) in &headers {
                frame.headers.push_str(name, value);
            }
            frame
        })
}

/// Encodes `frame`; with `crlf` every line ending of the head becomes `\r\n`,
/// which every version must accept. (Every `\n` up to the blank line is a line
/// ending: [`wire_safe`] keeps raw `\n` out of headers, and no header line is
/// empty, since it holds at least the `:`.)
fn encode(frame: &Frame, version: Version, crlf: bool) -> Vec<u8> {
    let mut out = BytesMut::new();
    encode_frame(frame, version, &mut out);
    if !crlf {
        return out.to_vec();
    }
    let head_end = out
        .windows(2)
        .position(|w| w == b"\n\n")
        .expect("an encoded frame has a blank line")
        + 2;
    let mut wire = Vec::with_capacity(out.len() + 16);
    for &b in &out[..head_end] {
        if b == b'\n' {
            wire.push(b'\r');
        }
        wire.push(b);
    }
    wire.extend_from_slice(&out[head_end..]);
    wire
}

fn decoder(version: Version, limits: Limits) -> Decoder {
    let mut decoder = Decoder::new(limits);
    decoder.set_version(version);
    decoder
}

/// Decodes all of `wire` from one buffer. Returns the frames (heart-beats
/// dropped), or the frames before an error and the error, and what is left
/// in the buffer.
fn decode_whole(
    wire: &[u8],
    version: Version,
    limits: Limits,
) -> (Vec<Frame>, Option<DecodeError>, BytesMut) {
    let mut decoder = decoder(version, limits);
    let mut buf = BytesMut::from(wire);
    let mut frames = Vec::new();
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(Decoded::Frame(frame))) => frames.push(frame),
            Ok(Some(Decoded::Heartbeat)) => {}
            Ok(None) => return (frames, None, buf),
            Err(e) => return (frames, Some(e), buf),
        }
    }
}

/// Feeds `wire` to one decoder in chunks of the given sizes (cycled, each at
/// least one byte), decoding everything available after each chunk, as a
/// connection does after each read.
fn decode_chunked(
    wire: &[u8],
    chunks: &[usize],
    version: Version,
    limits: Limits,
) -> (Vec<Frame>, Option<DecodeError>, BytesMut) {
    let mut decoder = decoder(version, limits);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = wire;
    let mut sizes = chunks.iter().copied().cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(1).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(Decoded::Frame(frame))) => frames.push(frame),
                Ok(Some(Decoded::Heartbeat)) => {}
                Ok(None) => break,
                Err(e) => return (frames, Some(e), buf),
            }
        }
    }
    (frames, None, buf)
}

/// Padding between frames: heart-beats (an LF or a CRLF) and the stray NUL
/// bytes some clients put after a frame's own.
fn heartbeats() -> impl Strategy<Value = Vec<&'static [u8]>> {
    prop::collection::vec(
        prop::sample::select(vec![&b"\n"[..], &b"\r\n"[..], &b"\0"[..]]),
        0..3,
    )
}

fn push_heartbeats(wire: &mut Vec<u8>, beats: &[&[u8]]) {
    for beat in beats {
        wire.extend_from_slice(beat);
    }
}

/// A version and a stream of frames for it: each frame preceded by
/// heart-beats and with LF or CRLF line endings, then trailing heart-beats.
fn stream() -> impl Strategy<Value = (Version, Vec<Frame>, Vec<u8>)> {
    version().prop_flat_map(|version| {
        (
            prop::collection::vec((heartbeats(), frame_for(version), any::<bool>()), 1..6),
            heartbeats(),
        )
            .prop_map(move |(items, trailing)| {
                let mut wire = Vec::new();
                let mut frames = Vec::with_capacity(items.len());
                for (beats, frame, crlf) in items {
                    push_heartbeats(&mut wire, &beats);
                    wire.extend_from_slice(&encode(&frame, version, crlf));
                    frames.push(frame);
                }
                push_heartbeats(&mut wire, &trailing);
                (version, frames, wire)
            })
    })
}

/// Pieces of STOMP-looking text; random sequences of them reach far deeper
/// into the decoder than uniformly random bytes do.
const TOKENS: &[&[u8]] = &[
    b"SEND",
    b"MESSAGE",
    b"CONNECT",
    b"ACK",
    b"\n",
    b"\n",
    b"\r\n",
    b"\r",
    b":",
    b"\0",
    b"\\",
    b"\\c",
    b"\\n",
    b"\\r",
    b"\\t",
    b"content-length:",
    b"0",
    b"3",
    b"12",
    b"x",
    b"yz",
    b"destination:/queue/a",
    b"\xff",
    b"\xc3\xa9",
];

/// Hostile input: uniformly random bytes, STOMP-like token soup, or a valid
/// stream with a few bytes overwritten.
fn hostile_input() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 0..300),
        prop::collection::vec(prop::sample::select(TOKENS), 0..80)
            .prop_map(|tokens| tokens.concat()),
        (
            stream(),
            prop::collection::vec((any::<Index>(), any::<u8>()), 0..4)
        )
            .prop_map(|((_, _, mut wire), edits)| {
                if !wire.is_empty() {
                    for (at, byte) in edits {
                        let i = at.index(wire.len());
                        wire[i] = byte;
                    }
                }
                wire
            }),
    ]
}

/// Small limits, so that hostile input runs into all of them.
fn small_limits() -> impl Strategy<Value = Limits> {
    (1usize..160, 1usize..48, 0usize..6).prop_map(|(frame, line, headers)| Limits {
        max_frame_bytes: frame,
        max_header_line: line,
        max_headers: headers,
    })
}

fn chunk_sizes() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(prop_oneof![1 => Just(1usize), 3 => 1usize..40], 1..12)
}

// About a second in a debug build; set PROPTEST_CASES to run more.
proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Every frame the wire can carry (see [`wire_safe`]) decodes to itself,
    /// in every version, with LF or CRLF line endings.
    #[test]
    fn encode_then_decode_is_identity(
        (version, frame) in version().prop_flat_map(|v| (Just(v), frame_for(v))),
        crlf in any::<bool>(),
    ) {
        let wire = encode(&frame, version, crlf);
        let (frames, error, rest) = decode_whole(&wire, version, Limits::default());
        prop_assert_eq!(error, None);
        prop_assert!(rest.is_empty(), "left over: {:?}", rest);
        prop_assert_eq!(frames, vec![frame]);
    }

    /// However a stream of frames and heart-beats is split into reads, the
    /// same frames come out, and they are the frames that went in.
    #[test]
    fn chunking_does_not_change_the_frames(
        (version, sent, wire) in stream(),
        chunks in chunk_sizes(),
    ) {
        let (whole, error, rest) = decode_whole(&wire, version, Limits::default());
        prop_assert_eq!(error, None);
        prop_assert!(rest.is_empty(), "left over: {:?}", rest);
        prop_assert_eq!(&whole, &sent);
        let (chunked, error, rest) = decode_chunked(&wire, &chunks, version, Limits::default());
        prop_assert_eq!(error, None);
        prop_assert!(rest.is_empty(), "left over: {:?}", rest);
        prop_assert_eq!(chunked, whole);
    }

    /// On hostile input, split into reads, the decoder never panics, never
    /// returns a frame that breaks a limit, and never asks for more bytes
    /// while holding more than `max_frame_bytes` of an unfinished frame (so
    /// a connection never buffers more than that plus one read).
    #[test]
    fn hostile_input_respects_limits(
        input in hostile_input(),
        version in version(),
        limits in small_limits(),
        chunks in chunk_sizes(),
    ) {
        let mut decoder = decoder(version, limits);
        let mut buf = BytesMut::new();
        let mut rest = &input[..];
        let mut sizes = chunks.iter().copied().cycle();
        'feed: while !rest.is_empty() {
            let n = sizes.next().unwrap_or(1).clamp(1, rest.len());
            buf.extend_from_slice(&rest[..n]);
            rest = &rest[n..];
            loop {
                let before = buf.len();
                match decoder.decode(&mut buf) {
                    // The stream is dead after an error; the peer is dropped.
                    Err(_) => break 'feed,
                    Ok(None) => {
                        prop_assert!(
                            buf.len() <= limits.max_frame_bytes,
                            "waiting for more with {} bytes buffered, limit {}",
                            buf.len(),
                            limits.max_frame_bytes
                        );
                        break;
                    }
                    Ok(Some(Decoded::Heartbeat)) => prop_assert!(buf.len() < before),
                    Ok(Some(Decoded::Frame(frame))) => {
                        let used = before - buf.len();
                        prop_assert!(
                            used <= limits.max_frame_bytes,
                            "returned a {}-byte frame, limit {}",
                            used,
                            limits.max_frame_bytes
                        );
                        prop_assert!(frame.headers.len() <= limits.max_headers);
                        // Unescaping only shortens, so the decoded line is no
                        // longer than the wire line.
                        for (name, value) in frame.headers.iter_bytes() {
                            prop_assert!(name.len() + 1 + value.len() <= limits.max_header_line);
                        }
                        prop_assert!(frame.command.as_str().len() <= limits.max_header_line);
                        prop_assert!(frame.body.len() < used);
                    }
                }
            }
        }
    }

    /// On hostile input, reads split anywhere give the same frames and the
    /// same verdict (error or not) as one read of everything.
    #[test]
    fn hostile_input_is_chunking_invariant(
        input in hostile_input(),
        version in version(),
        limits in small_limits(),
        chunks in chunk_sizes(),
    ) {
        let (whole, whole_error, _) = decode_whole(&input, version, limits);
        let (chunked, chunked_error, _) = decode_chunked(&input, &chunks, version, limits);
        prop_assert_eq!(
            whole_error.is_some(),
            chunked_error.is_some(),
            "whole: {:?}, chunked: {:?}",
            whole_error,
            chunked_error
        );
        prop_assert_eq!(whole, chunked);
    }

    /// Arbitrary bytes with the default limits, in one read: no panic, and a
    /// successful decode consumes something.
    #[test]
    fn arbitrary_bytes_never_panic(
        input in prop::collection::vec(any::<u8>(), 0..2048),
        version in version(),
    ) {
        let mut decoder = decoder(version, Limits::default());
        let mut buf = BytesMut::from(&input[..]);
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(Some(_)) => prop_assert!(buf.len() < before),
                Ok(None) | Err(_) => break,
            }
        }
    }
}
