//! Feeds arbitrary bytes to the decoder, split into reads at points the
//! fuzzer chooses, and checks everything that comes out.
//!
//! Input layout:
//! * byte 0: the version (`% 3`: 1.0, 1.1, 1.2) and the limits (`/ 3 % 2`:
//!   the defaults, or small ones that short inputs run into, set by the
//!   next three bytes: see [`small_limits`]);
//! * byte 1: how many read sizes follow (`% 8`); then that many bytes, each
//!   a read size minus one, used in turn and cycled (none: one read);
//! * the rest: the byte stream.
//!
//! Checks:
//! * nothing panics;
//! * no frame returned breaks a limit, and the decoder never waits for more
//!   bytes while holding more than `max_frame_bytes`;
//! * every frame the version can carry (see [`representable`]) re-encodes to
//!   bytes that decode to the same frame;
//! * the reads give the same frames, and the same verdict (error or not), as
//!   one read of the whole stream.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use stompbox_codec::{DecodeError, Decoded, Decoder, Frame, Limits, Version, encode_frame};

/// Limits small enough for short inputs to run into each of them.
fn small_limits(frame: u8, line: u8, headers: u8) -> Limits {
    Limits {
        max_frame_bytes: usize::from(frame % 128) + 1,
        max_header_line: usize::from(line % 64) + 1,
        max_headers: usize::from(headers % 8),
    }
}

/// For re-decoding: escaping may make a frame longer than the one decoded.
const HUGE: Limits = Limits {
    max_frame_bytes: 1 << 30,
    max_header_line: 1 << 30,
    max_headers: 1 << 20,
};

struct Input<'a> {
    version: Version,
    limits: Limits,
    reads: Vec<usize>,
    stream: &'a [u8],
}

fn parse(data: &[u8]) -> Option<Input<'_>> {
    let (&first, rest) = data.split_first()?;
    let version = Version::ALL[usize::from(first % 3)];
    let (limits, rest) = if (first / 3) % 2 == 1 {
        let ([frame, line, headers], rest) = rest.split_first_chunk()?;
        (small_limits(*frame, *line, *headers), rest)
    } else {
        (Limits::default(), rest)
    };
    let (&count, rest) = rest.split_first()?;
    let (sizes, stream) = rest.split_at(usize::from(count % 8).min(rest.len()));
    let mut reads: Vec<usize> = sizes.iter().map(|&s| usize::from(s) + 1).collect();
    if reads.is_empty() {
        reads.push(stream.len().max(1));
    }
    Some(Input {
        version,
        limits,
        reads,
        stream,
    })
}

/// Whether `frame`, decoded on a `version` connection, can be written back
/// exactly. The decoder takes a CR before the LF as half of a CRLF line
/// ending, so a value that ends in a CR survives only where CR is escaped:
/// in 1.2 frames that escape their headers. Everything else the decoder
/// returns can be written back: it split lines at every raw LF and, in frames
/// that do not escape, names at the first ':', so neither shows up where the
/// encoder would write it raw; and a body holds a NUL only when a
/// `content-length` header, written back too, gave its length.
fn representable(frame: &Frame, version: Version) -> bool {
    let cr_escaped = version == Version::V1_2 && frame.command.escapes_headers(version);
    cr_escaped || frame.headers.iter_bytes().all(|(_, v)| !v.ends_with(b"\r"))
}

fn check_round_trip(frame: &Frame, version: Version) {
    let mut wire = BytesMut::new();
    encode_frame(frame, version, &mut wire);
    let mut decoder = Decoder::new(HUGE);
    decoder.set_version(version);
    match decoder.decode(&mut wire) {
        Ok(Some(Decoded::Frame(again))) => assert_eq!(&again, frame, "round trip in {version}"),
        other => panic!("re-encoded {frame:?} in {version} decoded as {other:?}"),
    }
    assert!(wire.is_empty(), "re-encoded frame left {wire:?}");
}

fn check_frame(frame: &Frame, wire_len: usize, limits: &Limits) {
    assert!(
        wire_len <= limits.max_frame_bytes,
        "returned a {wire_len}-byte frame, limit {}",
        limits.max_frame_bytes
    );
    assert!(frame.headers.len() <= limits.max_headers);
    // Unescaping only shortens, so a decoded line is no longer than its wire line.
    for (name, value) in frame.headers.iter_bytes() {
        assert!(name.len() + 1 + value.len() <= limits.max_header_line);
    }
    assert!(frame.body.len() < wire_len);
}

fn decoder(input: &Input<'_>) -> Decoder {
    let mut decoder = Decoder::new(input.limits);
    decoder.set_version(input.version);
    decoder
}

/// Decodes the stream read by read, checking every item.
fn decode_in_reads(input: &Input<'_>) -> (Vec<Frame>, Option<DecodeError>) {
    let mut decoder = decoder(input);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut rest = input.stream;
    let mut sizes = input.reads.iter().copied().cycle();
    while !rest.is_empty() {
        let n = sizes.next().unwrap_or(1).clamp(1, rest.len());
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            let before = buf.len();
            match decoder.decode(&mut buf) {
                Ok(None) => {
                    assert!(
                        buf.len() <= input.limits.max_frame_bytes,
                        "waiting for more with {} bytes buffered",
                        buf.len()
                    );
                    break;
                }
                Ok(Some(Decoded::Heartbeat)) => assert!(buf.len() < before),
                Ok(Some(Decoded::Frame(frame))) => {
                    check_frame(&frame, before - buf.len(), &input.limits);
                    if representable(&frame, input.version) {
                        check_round_trip(&frame, input.version);
                    }
                    frames.push(frame);
                }
                Err(e) => return (frames, Some(e)),
            }
        }
    }
    (frames, None)
}

fn decode_at_once(input: &Input<'_>) -> (Vec<Frame>, Option<DecodeError>) {
    let mut decoder = decoder(input);
    let mut buf = BytesMut::from(input.stream);
    let mut frames = Vec::new();
    loop {
        match decoder.decode(&mut buf) {
            Ok(Some(Decoded::Frame(frame))) => frames.push(frame),
            Ok(Some(Decoded::Heartbeat)) => {}
            Ok(None) => return (frames, None),
            Err(e) => return (frames, Some(e)),
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some(input) = parse(data) else { return };
    let (frames, error) = decode_in_reads(&input);
    let (whole_frames, whole_error) = decode_at_once(&input);
    assert_eq!(
        error.is_some(),
        whole_error.is_some(),
        "in reads: {error:?}, at once: {whole_error:?}"
    );
    assert_eq!(frames, whole_frames);
});
