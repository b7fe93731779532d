use crate::{Command, DecodeError, Frame, Headers, Version, escape::unescape, header};
use bytes::{Buf, BytesMut};
use std::ops::Range;

/// Limits the decoder enforces before buffering the bytes they guard.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest whole frame (command, headers, body), in bytes. Default 64 KiB.
    pub max_frame_bytes: usize,
    /// Longest single header line (or command line), in bytes. Default 8 KiB.
    pub max_header_line: usize,
    /// Most header lines in one frame. Default 64.
    pub max_headers: usize,
}

impl Default for Limits {
    fn default() -> Limits {
        Limits {
            max_frame_bytes: 64 * 1024,
            max_header_line: 8 * 1024,
            max_headers: 64,
        }
    }
}

/// One item taken off the byte stream.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded {
    /// A complete frame.
    Frame(Frame),
    /// One or more end-of-line bytes between frames: a heart-beat. (NUL
    /// bytes between frames are skipped as padding and are no heart-beat.)
    Heartbeat,
}

/// Where the decoder is inside the frame it is assembling. Offsets are
/// relative to the start of the caller's buffer, which only ever grows at the
/// end between calls, so scanning resumes where it stopped instead of
/// rescanning (a frame trickling in byte by byte stays linear).
///
/// No line or header positions are stored: once the head is complete it is
/// split again (it is small, and was just scanned, so it is in cache), which
/// costs less than the allocations a list of them would take per frame.
#[derive(Debug, Default)]
enum State {
    #[default]
    Idle,
    Head {
        scanned: usize,
        line_start: usize,
        /// Complete lines so far, the command line included.
        lines: usize,
    },
    Body {
        head: Head,
        scanned: usize,
    },
}

#[derive(Debug)]
struct Head {
    command: Command,
    /// Header lines.
    headers: usize,
    body_start: usize,
    content_length: Option<usize>,
}

/// Incremental STOMP frame decoder.
///
/// Feed it a buffer that you append socket reads to; each call to
/// [`Decoder::decode`] removes at most one item from its front. `Ok(None)`
/// means more bytes are needed. After an error the stream is unusable: the
/// peer is to be sent an ERROR and disconnected.
#[derive(Debug)]
pub struct Decoder {
    version: Version,
    limits: Limits,
    state: State,
}

impl Decoder {
    /// A decoder for a connection whose version is not agreed yet (headers
    /// are unescaped as in 1.2, which only matters for non-CONNECT frames).
    pub fn new(limits: Limits) -> Decoder {
        Decoder {
            version: Version::V1_2,
            limits,
            state: State::Idle,
        }
    }

    /// Sets the negotiated version, which decides header unescaping.
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
    }

    /// The version frames are decoded as.
    pub fn version(&self) -> Version {
        self.version
    }

    /// Changes the limits for the frames still to come (a server accepts
    /// only a small frame before CONNECT has succeeded, then its full limit).
    pub fn set_limits(&mut self, limits: Limits) {
        self.limits = limits;
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Takes the next frame or heart-beat off the front of `buf`.
    ///
    /// # Errors
    ///
    /// A [`DecodeError`] when the bytes are not a valid frame or break a limit.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, DecodeError> {
        let result = self.decode_inner(buf);
        if result.is_err() {
            self.state = State::Idle;
        }
        result
    }

    fn decode_inner(&mut self, buf: &mut BytesMut) -> Result<Option<Decoded>, DecodeError> {
        loop {
            match &mut self.state {
                State::Idle => {
                    let (padding, eol) = leading_padding(buf);
                    if padding > 0 {
                        buf.advance(padding);
                        if eol {
                            return Ok(Some(Decoded::Heartbeat));
                        }
                    }
                    // A lone '\r' may be the start of a CRLF heart-beat.
                    if buf.is_empty() || buf[..] == b"\r"[..] {
                        return Ok(None);
                    }
                    self.state = State::Head {
                        scanned: 0,
                        line_start: 0,
                        lines: 0,
                    };
                }
                State::Head {
                    scanned,
                    line_start,
                    lines,
                } => {
                    let Some(body_start) =
                        scan_head(buf, scanned, line_start, lines, &self.limits)?
                    else {
                        return Ok(None);
                    };
                    let head = parse_head(buf, body_start, &self.limits)?;
                    self.state = State::Body { head, scanned: 0 };
                }
                State::Body { head, scanned } => {
                    let Some(body_end) = find_body_end(buf, head, scanned, &self.limits)? else {
                        return Ok(None);
                    };
                    let State::Body { head, .. } = std::mem::take(&mut self.state) else {
                        unreachable!("state checked by the match arm");
                    };
                    return self.finish(buf, head, body_end).map(Some);
                }
            }
        }
    }

    fn finish(
        &self,
        buf: &mut BytesMut,
        head: Head,
        body_end: usize,
    ) -> Result<Decoded, DecodeError> {
        let bytes = buf.split_to(body_end + 1).freeze();
        let escapes = head.command.escapes_headers(self.version);
        let mut headers = Headers::with_capacity(head.headers);
        let head_bytes = &bytes[..head.body_start];
        // The usual head has no escape, no NUL and is UTF-8 as a whole, so
        // each of its names and values is (they are split at ASCII bytes):
        // checked once instead of twice per header. Any other head takes
        // the header-by-header checks, which also decide which error a
        // head with several problems gets.
        let plain = memchr::memchr2(b'\\', 0, head_bytes).is_none()
            && std::str::from_utf8(head_bytes).is_ok();
        for line in head_lines(head_bytes).skip(1) {
            let (name, value) = split_header(head_bytes, line)?;
            let mut name = bytes.slice(name);
            let mut value = bytes.slice(value);
            if plain {
                headers.push(name, value);
                continue;
            }
            if escapes {
                name = unescape(name, self.version)?;
                value = unescape(value, self.version)?;
            }
            if std::str::from_utf8(&name).is_err() || std::str::from_utf8(&value).is_err() {
                return Err(DecodeError::InvalidUtf8);
            }
            // A NUL ends a frame on the wire; passed on inside a header it
            // would let one client end another's frame early.
            if name.contains(&0) || value.contains(&0) {
                return Err(DecodeError::MalformedHeader);
            }
            headers.push(name, value);
        }
        Ok(Decoded::Frame(Frame {
            command: head.command,
            headers,
            body: bytes.slice(head.body_start..body_end),
        }))
    }
}

/// The length of the padding before the next frame, and whether it holds
/// an end of line (a heart-beat). Besides EOLs it skips NUL bytes: some
/// clients end a frame with an extra NUL (`\0\n`), and RabbitMQ and
/// ActiveMQ ignore it, so a client written against them must not be
/// refused for it.
fn leading_padding(buf: &[u8]) -> (usize, bool) {
    let mut i = 0;
    let mut eol = false;
    loop {
        match buf.get(i..) {
            Some([b'\n', ..]) => {
                i += 1;
                eol = true;
            }
            Some([b'\r', b'\n', ..]) => {
                i += 2;
                eol = true;
            }
            Some([0, ..]) => i += 1,
            _ => return (i, eol),
        }
    }
}

/// Scans for the blank line that ends the head. Returns the offset of the
/// body once found; records complete lines (without their EOL) in `lines`.
fn scan_head(
    buf: &[u8],
    scanned: &mut usize,
    line_start: &mut usize,
    lines: &mut usize,
    limits: &Limits,
) -> Result<Option<usize>, DecodeError> {
    while let Some(offset) = memchr::memchr(b'\n', &buf[*scanned..]) {
        let newline = *scanned + offset;
        let mut end = newline;
        if end > *line_start && buf[end - 1] == b'\r' {
            end -= 1;
        }
        *scanned = newline + 1;
        let line = *line_start..end;
        *line_start = newline + 1;
        if line.len() > limits.max_header_line {
            return Err(DecodeError::HeaderLineTooLong {
                max: limits.max_header_line,
            });
        }
        if *lines == 0 {
            // Reject garbage at the first line instead of after a whole head.
            let command = &buf[line.clone()];
            if Command::parse(command).is_none() {
                return Err(DecodeError::UnknownCommand(
                    String::from_utf8_lossy(&command[..command.len().min(64)]).into_owned(),
                ));
            }
        } else if line.is_empty() {
            return Ok(Some(newline + 1));
        }
        if *lines > limits.max_headers {
            return Err(DecodeError::TooManyHeaders {
                max: limits.max_headers,
            });
        }
        *lines += 1;
    }
    *scanned = buf.len();
    // A trailing '\r' may be the first half of a CRLF line ending, which a
    // complete line does not count, so the verdict must not depend on where
    // a read ended.
    let pending = buf.len() - *line_start - usize::from(buf.ends_with(b"\r"));
    if pending > limits.max_header_line {
        return Err(DecodeError::HeaderLineTooLong {
            max: limits.max_header_line,
        });
    }
    if buf.len() > limits.max_frame_bytes {
        return Err(DecodeError::FrameTooLarge {
            max: limits.max_frame_bytes,
        });
    }
    Ok(None)
}

/// The lines of a complete head (`buf` up to the body), without their
/// EOLs, as [`scan_head`] found them: the command line, then each header
/// line, up to the blank line that ends the head.
fn head_lines(head: &[u8]) -> impl Iterator<Item = Range<usize>> + '_ {
    let mut start = 0;
    std::iter::from_fn(move || {
        let newline = start + memchr::memchr(b'\n', head.get(start..)?)?;
        let mut end = newline;
        if end > start && head[end - 1] == b'\r' {
            end -= 1;
        }
        let line = start..end;
        // Only the blank line ending the head is empty: an empty first line
        // is no command, and scanning stops at the first empty one after it.
        if line.is_empty() {
            return None;
        }
        start = newline + 1;
        Some(line)
    })
}

/// A header line's name and value.
fn split_header(
    buf: &[u8],
    line: Range<usize>,
) -> Result<(Range<usize>, Range<usize>), DecodeError> {
    let colon = memchr::memchr(b':', &buf[line.clone()]).ok_or(DecodeError::MalformedHeader)?;
    Ok((
        line.start..line.start + colon,
        line.start + colon + 1..line.end,
    ))
}

fn parse_head(buf: &[u8], body_start: usize, limits: &Limits) -> Result<Head, DecodeError> {
    let mut lines = head_lines(&buf[..body_start]);
    let command_line = lines
        .next()
        .ok_or_else(|| DecodeError::UnknownCommand(String::new()))?;
    let command = Command::parse(&buf[command_line])
        .ok_or_else(|| DecodeError::UnknownCommand(String::new()))?;
    let mut headers = 0;
    let mut content_length = None;
    for line in lines {
        let (name, value) = split_header(buf, line)?;
        if content_length.is_none() && &buf[name.clone()] == header::CONTENT_LENGTH.as_bytes() {
            let text = &buf[value.clone()];
            let parsed = std::str::from_utf8(text)
                .ok()
                .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|t| t.parse::<usize>().ok());
            let Some(length) = parsed else {
                return Err(DecodeError::InvalidContentLength(
                    String::from_utf8_lossy(&text[..text.len().min(32)]).into_owned(),
                ));
            };
            if body_start.saturating_add(length).saturating_add(1) > limits.max_frame_bytes {
                return Err(DecodeError::FrameTooLarge {
                    max: limits.max_frame_bytes,
                });
            }
            content_length = Some(length);
        }
        headers += 1;
    }
    Ok(Head {
        command,
        headers,
        body_start,
        content_length,
    })
}

/// Finds the NUL that ends the frame; returns its offset.
fn find_body_end(
    buf: &[u8],
    head: &Head,
    scanned: &mut usize,
    limits: &Limits,
) -> Result<Option<usize>, DecodeError> {
    if let Some(length) = head.content_length {
        let end = head.body_start + length;
        return match buf.get(end) {
            None => Ok(None),
            Some(0) => Ok(Some(end)),
            Some(_) => Err(DecodeError::MissingNul),
        };
    }
    let from = head.body_start + *scanned;
    if let Some(offset) = buf[from..].iter().position(|&b| b == 0) {
        // A frame that arrived whole in one read passed none of the checks
        // made while waiting for more bytes.
        let end = from + offset;
        if end + 1 > limits.max_frame_bytes {
            return Err(DecodeError::FrameTooLarge {
                max: limits.max_frame_bytes,
            });
        }
        return Ok(Some(end));
    }
    *scanned = buf.len() - head.body_start;
    if buf.len() >= limits.max_frame_bytes {
        return Err(DecodeError::FrameTooLarge {
            max: limits.max_frame_bytes,
        });
    }
    Ok(None)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decode_all(input: &[u8], version: Version) -> Result<Vec<Decoded>, DecodeError> {
        let mut decoder = Decoder::new(Limits::default());
        decoder.set_version(version);
        let mut buf = BytesMut::from(input);
        let mut out = Vec::new();
        while let Some(item) = decoder.decode(&mut buf)? {
            out.push(item);
        }
        assert!(buf.is_empty(), "left over: {buf:?}");
        Ok(out)
    }

    fn frame(item: &Decoded) -> &Frame {
        match item {
            Decoded::Frame(f) => f,
            Decoded::Heartbeat => panic!("expected a frame"),
        }
    }

    #[test]
    fn a_head_with_several_faults_gets_the_first_header_fault() {
        // The whole-head fast path must not change which error a frame
        // with more than one problem is refused with.
        let first = |input: &[u8]| decode_all(input, Version::V1_2).unwrap_err();
        assert_eq!(
            first(b"SEND\na:\\t\nb:\xff\n\n\0"),
            DecodeError::UndefinedEscape('t')
        );
        assert_eq!(
            first(b"SEND\nb:\xff\na:\\t\n\n\0"),
            DecodeError::InvalidUtf8
        );
        assert_eq!(
            first(b"SEND\nb:x\0y\na:\xff\n\n\0"),
            DecodeError::MalformedHeader
        );
        assert_eq!(
            first(b"SEND\nnocolon\nb:\xff\n\n\0"),
            DecodeError::MalformedHeader
        );
        // CONNECT does not unescape: a backslash is kept, and checked as text.
        let items = decode_all(
            b"CONNECT\nlogin:a\\tb\r\nhost:\xc3\xa9\n\n\0",
            Version::V1_2,
        )
        .unwrap();
        let connect = frame(&items[0]);
        assert_eq!(connect.headers.get("login"), Some("a\\tb"));
        assert_eq!(connect.headers.get("host"), Some("\u{e9}"));
    }

    #[test]
    fn decodes_frames_and_heartbeats_in_one_read() {
        let items = decode_all(
            b"\n\r\nSEND\r\ndestination:/a\r\n\r\nhi\0\nACK\nid:1\n\n\0",
            Version::V1_2,
        )
        .unwrap();
        assert_eq!(items.len(), 4);
        assert_eq!(items[0], Decoded::Heartbeat);
        assert_eq!(frame(&items[1]).headers.get("destination"), Some("/a"));
        assert_eq!(&frame(&items[1]).body[..], b"hi");
        assert_eq!(items[2], Decoded::Heartbeat);
        assert_eq!(frame(&items[3]).command, Command::Ack);
    }

    #[test]
    fn nul_bytes_between_frames_are_skipped() {
        let items = decode_all(
            b"SEND\ndestination:/a\n\nhi\0\0\n\0SUBSCRIBE\nid:1\ndestination:/b\n\n\0\0",
            Version::V1_2,
        )
        .unwrap();
        assert_eq!(items.len(), 3);
        assert_eq!(&frame(&items[0]).body[..], b"hi");
        // The padding held an EOL, so the peer is alive: a heart-beat.
        assert_eq!(items[1], Decoded::Heartbeat);
        assert_eq!(frame(&items[2]).command, Command::Subscribe);
        // NULs alone are padding too, and no heart-beat.
        let items = decode_all(b"\0\0ACK\nid:1\n\n\0", Version::V1_2).unwrap();
        assert_eq!(items.len(), 1);
        assert_eq!(frame(&items[0]).command, Command::Ack);
        // A NUL inside a command is still refused.
        assert!(decode_all(b"SUB\0SCRIBE\n\n\0", Version::V1_2).is_err());
    }

    #[test]
    fn content_length_allows_nul_in_body() {
        let items = decode_all(b"SEND\ncontent-length:3\n\na\0b\0", Version::V1_2).unwrap();
        assert_eq!(&frame(&items[0]).body[..], b"a\0b");
        assert_eq!(
            decode_all(b"SEND\ncontent-length:1\n\nab\0", Version::V1_2),
            Err(DecodeError::MissingNul)
        );
        assert!(matches!(
            decode_all(b"SEND\ncontent-length:x\n\na\0", Version::V1_2),
            Err(DecodeError::InvalidContentLength(_))
        ));
    }

    #[test]
    fn first_repeated_header_wins_and_connect_is_not_unescaped() {
        let items = decode_all(b"SEND\nfoo:a\\cb\nfoo:c\n\n\0", Version::V1_2).unwrap();
        assert_eq!(frame(&items[0]).headers.get("foo"), Some("a:b"));
        let items = decode_all(b"CONNECT\nlogin:a\\cb\n\n\0", Version::V1_2).unwrap();
        assert_eq!(frame(&items[0]).headers.get("login"), Some("a\\cb"));
    }

    #[test]
    fn rejects_bad_input() {
        assert!(matches!(
            decode_all(b"HELLO\n\n\0", Version::V1_2),
            Err(DecodeError::UnknownCommand(c)) if c == "HELLO"
        ));
        assert_eq!(
            decode_all(b"SEND\nnocolon\n\n\0", Version::V1_2),
            Err(DecodeError::MalformedHeader)
        );
        assert_eq!(
            decode_all(b"SEND\na:\\t\n\n\0", Version::V1_2),
            Err(DecodeError::UndefinedEscape('t'))
        );
        assert_eq!(
            decode_all(b"SEND\na:\xff\n\n\0", Version::V1_2),
            Err(DecodeError::InvalidUtf8)
        );
        assert_eq!(
            decode_all(b"SEND\ncontent-length:0\na:x\0y\n\n\0", Version::V1_2),
            Err(DecodeError::MalformedHeader)
        );
    }

    /// The relay re-encodes its broker's MESSAGE frames for the client
    /// without checking them again; its link decodes in the client's own
    /// version, and these are what make that safe.
    #[test]
    fn a_decoded_header_never_holds_a_nul_nor_for_1_0_a_colon_in_its_name() {
        for version in [Version::V1_0, Version::V1_1, Version::V1_2] {
            assert_eq!(
                decode_all(b"MESSAGE\nx:a\0b\ncontent-length:0\n\n\0", version),
                Err(DecodeError::MalformedHeader),
                "{version:?}"
            );
        }
        let items = decode_all(
            b"MESSAGE\ncontent-length\\c3:x\ncontent-length:2\n\nab\0",
            Version::V1_0,
        )
        .unwrap();
        let headers: Vec<_> = frame(&items[0]).headers.iter().collect();
        assert_eq!(
            headers,
            [("content-length\\c3", "x"), ("content-length", "2")]
        );
    }

    #[test]
    fn limits_are_checked_before_buffering_the_whole_frame() {
        let limits = Limits {
            max_frame_bytes: 100,
            max_header_line: 20,
            max_headers: 2,
        };
        let mut d = Decoder::new(limits);
        // A body that never ends is refused once it passes the frame limit.
        let mut buf = BytesMut::from(&b"SEND\n\n"[..]);
        buf.extend_from_slice(&[b'x'; 200]);
        assert_eq!(
            d.decode(&mut buf),
            Err(DecodeError::FrameTooLarge { max: 100 })
        );
        // A content-length past the limit is refused before the body arrives.
        let mut buf = BytesMut::from(&b"SEND\ncontent-length:1000\n\n"[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(DecodeError::FrameTooLarge { max: 100 })
        );
        // A header line that never ends is refused at the line limit.
        let mut buf = BytesMut::from(&b"SEND\na:"[..]);
        buf.extend_from_slice(&[b'y'; 30]);
        assert_eq!(
            d.decode(&mut buf),
            Err(DecodeError::HeaderLineTooLong { max: 20 })
        );
        let mut buf = BytesMut::from(&b"SEND\na:1\nb:2\nc:3\n\n\0"[..]);
        assert_eq!(
            d.decode(&mut buf),
            Err(DecodeError::TooManyHeaders { max: 2 })
        );
    }

    #[test]
    fn frame_larger_than_the_limit_is_refused_even_in_one_read() {
        let limits = Limits {
            max_frame_bytes: 100,
            ..Limits::default()
        };
        // Exactly at the limit (the NUL counts) is fine.
        let mut at_limit = b"SEND\n\n".to_vec();
        at_limit.extend_from_slice(&[b'x'; 93]);
        at_limit.push(0);
        assert_eq!(at_limit.len(), 100);
        let mut buf = BytesMut::from(&at_limit[..]);
        assert!(matches!(
            Decoder::new(limits).decode(&mut buf),
            Ok(Some(Decoded::Frame(_)))
        ));
        // One byte more, complete in the buffer, is refused.
        let mut over = b"SEND\n\n".to_vec();
        over.extend_from_slice(&[b'x'; 94]);
        over.push(0);
        let mut buf = BytesMut::from(&over[..]);
        assert_eq!(
            Decoder::new(limits).decode(&mut buf),
            Err(DecodeError::FrameTooLarge { max: 100 })
        );
        // So is a head over the limit with an empty body.
        let mut big_head = b"SEND\n".to_vec();
        for _ in 0..10 {
            big_head.extend_from_slice(b"header:0123456789\n");
        }
        big_head.extend_from_slice(b"\n\0");
        let mut buf = BytesMut::from(&big_head[..]);
        assert_eq!(
            Decoder::new(limits).decode(&mut buf),
            Err(DecodeError::FrameTooLarge { max: 100 })
        );
    }

    #[test]
    fn line_limit_does_not_count_the_cr_of_a_split_crlf() {
        let limits = Limits {
            max_header_line: 4,
            ..Limits::default()
        };
        let mut d = Decoder::new(limits);
        // "SEND" is exactly at the limit; the read ends between CR and LF.
        let mut buf = BytesMut::from(&b"SEND\r"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"\na:bc\r");
        assert_eq!(d.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"\n\r\n\0");
        let Ok(Some(Decoded::Frame(f))) = d.decode(&mut buf) else {
            panic!("no frame")
        };
        assert_eq!(f.headers.get("a"), Some("bc"));
        // A fifth byte that is not a CR is still refused at once.
        let mut buf = BytesMut::from(&b"SENDX"[..]);
        assert_eq!(
            Decoder::new(limits).decode(&mut buf),
            Err(DecodeError::HeaderLineTooLong { max: 4 })
        );
    }

    #[test]
    fn byte_by_byte_input_yields_the_same_frame() {
        let input = b"MESSAGE\ndestination:/topic/a\nmessage-id:1\n\nbody\0";
        let mut d = Decoder::new(Limits::default());
        let mut buf = BytesMut::new();
        let mut got = None;
        for &b in input {
            buf.extend_from_slice(&[b]);
            if let Some(item) = d.decode(&mut buf).unwrap() {
                got = Some(item);
            }
        }
        let Some(Decoded::Frame(f)) = got else {
            panic!("no frame")
        };
        assert_eq!(f.headers.get("message-id"), Some("1"));
        assert_eq!(&f.body[..], b"body");
    }
}
