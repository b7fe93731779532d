use bytes::Bytes;
use std::fmt;

/// Header names the protocol defines, so the rest of the code never spells
/// them as loose string literals.
pub mod header {
    #![allow(missing_docs)]
    pub const ACCEPT_VERSION: &str = "accept-version";
    pub const ACK: &str = "ack";
    pub const CONTENT_LENGTH: &str = "content-length";
    pub const CONTENT_TYPE: &str = "content-type";
    pub const DESTINATION: &str = "destination";
    pub const HEART_BEAT: &str = "heart-beat";
    pub const HOST: &str = "host";
    pub const ID: &str = "id";
    pub const LOGIN: &str = "login";
    pub const MESSAGE: &str = "message";
    pub const MESSAGE_ID: &str = "message-id";
    pub const PASSCODE: &str = "passcode";
    pub const RECEIPT: &str = "receipt";
    pub const RECEIPT_ID: &str = "receipt-id";
    pub const REDELIVERED: &str = "redelivered";
    pub const SERVER: &str = "server";
    pub const SESSION: &str = "session";
    pub const SUBSCRIPTION: &str = "subscription";
    pub const TRANSACTION: &str = "transaction";
    pub const VERSION: &str = "version";
}

/// A STOMP protocol version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Version {
    /// STOMP 1.0: no header escaping, no NACK.
    V1_0,
    /// STOMP 1.1: escaping of `\n`, `:` and `\`.
    V1_1,
    /// STOMP 1.2: 1.1 plus `\r`, ACK by `id`.
    V1_2,
}

impl Version {
    /// All versions, oldest first.
    pub const ALL: [Version; 3] = [Version::V1_0, Version::V1_1, Version::V1_2];

    /// The version as written in `accept-version` and `version` headers.
    pub fn as_str(self) -> &'static str {
        match self {
            Version::V1_0 => "1.0",
            Version::V1_1 => "1.1",
            Version::V1_2 => "1.2",
        }
    }

    /// Parses `1.0`, `1.1` or `1.2`.
    pub fn parse(s: &str) -> Option<Version> {
        match s.trim() {
            "1.0" => Some(Version::V1_0),
            "1.1" => Some(Version::V1_1),
            "1.2" => Some(Version::V1_2),
            _ => None,
        }
    }
}

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Every STOMP command, client and server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[allow(missing_docs)]
pub enum Command {
    // Client frames.
    Connect,
    Stomp,
    Send,
    Subscribe,
    Unsubscribe,
    Ack,
    Nack,
    Begin,
    Commit,
    Abort,
    Disconnect,
    // Server frames.
    Connected,
    Message,
    Receipt,
    Error,
}

impl Command {
    /// The command as written on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Command::Connect => "CONNECT",
            Command::Stomp => "STOMP",
            Command::Send => "SEND",
            Command::Subscribe => "SUBSCRIBE",
            Command::Unsubscribe => "UNSUBSCRIBE",
            Command::Ack => "ACK",
            Command::Nack => "NACK",
            Command::Begin => "BEGIN",
            Command::Commit => "COMMIT",
            Command::Abort => "ABORT",
            Command::Disconnect => "DISCONNECT",
            Command::Connected => "CONNECTED",
            Command::Message => "MESSAGE",
            Command::Receipt => "RECEIPT",
            Command::Error => "ERROR",
        }
    }

    /// Parses a command line (without its line ending).
    pub fn parse(line: &[u8]) -> Option<Command> {
        Some(match line {
            b"CONNECT" => Command::Connect,
            b"STOMP" => Command::Stomp,
            b"SEND" => Command::Send,
            b"SUBSCRIBE" => Command::Subscribe,
            b"UNSUBSCRIBE" => Command::Unsubscribe,
            b"ACK" => Command::Ack,
            b"NACK" => Command::Nack,
            b"BEGIN" => Command::Begin,
            b"COMMIT" => Command::Commit,
            b"ABORT" => Command::Abort,
            b"DISCONNECT" => Command::Disconnect,
            b"CONNECTED" => Command::Connected,
            b"MESSAGE" => Command::Message,
            b"RECEIPT" => Command::Receipt,
            b"ERROR" => Command::Error,
            _ => return None,
        })
    }

    /// CONNECT, STOMP and CONNECTED never escape their headers, because
    /// they are exchanged before a version is agreed.
    pub fn escapes_headers(self, version: Version) -> bool {
        version != Version::V1_0
            && !matches!(self, Command::Connect | Command::Stomp | Command::Connected)
    }
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The headers of a frame, in wire order. Repeated names are kept, and
/// [`Headers::get`] returns the first, as the specification asks.
///
/// Names and values are UTF-8 (checked by the decoder) held as [`Bytes`], so
/// decoded headers share the frame's buffer.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Headers {
    entries: Vec<(Bytes, Bytes)>,
}

impl Headers {
    /// No headers.
    pub fn new() -> Headers {
        Headers::default()
    }

    /// No headers, with room for `n`.
    pub fn with_capacity(n: usize) -> Headers {
        Headers {
            entries: Vec::with_capacity(n),
        }
    }

    /// Appends a header; an earlier header of the same name still wins.
    pub fn push(&mut self, name: impl Into<Bytes>, value: impl Into<Bytes>) {
        self.entries.push((name.into(), value.into()));
    }

    /// Appends a header from string slices (copied).
    pub fn push_str(&mut self, name: &str, value: &str) {
        self.entries.push((
            Bytes::copy_from_slice(name.as_bytes()),
            Bytes::copy_from_slice(value.as_bytes()),
        ));
    }

    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.get_bytes(name)
            .and_then(|value| std::str::from_utf8(value).ok())
    }

    /// The first value of `name`, as the shared bytes.
    pub fn get_bytes(&self, name: &str) -> Option<&Bytes> {
        self.entries
            .iter()
            .find(|(n, _)| n.as_ref() == name.as_bytes())
            .map(|(_, v)| v)
    }

    /// Removes every header called `name`.
    pub fn remove(&mut self, name: &str) {
        self.entries.retain(|(n, _)| n.as_ref() != name.as_bytes());
    }

    /// Keeps only the headers for which `keep(name, value)` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&[u8], &[u8]) -> bool) {
        self.entries.retain(|(n, v)| keep(n, v));
    }

    /// Number of header lines, repeats included.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// True when there are no headers.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// All headers in wire order, repeats included, as text.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.entries
            .iter()
            .filter_map(|(n, v)| Some((std::str::from_utf8(n).ok()?, std::str::from_utf8(v).ok()?)))
    }

    /// All headers in wire order, as the shared bytes.
    pub fn iter_bytes(&self) -> impl Iterator<Item = (&Bytes, &Bytes)> {
        self.entries.iter().map(|(n, v)| (n, v))
    }
}

impl fmt::Debug for Headers {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_map().entries(self.iter()).finish()
    }
}

/// What one heap allocation costs beyond its bytes: the allocator's header
/// and rounding, and for a shared `Bytes` buffer its reference-count block.
/// An estimate on the generous side of what glibc and jemalloc take.
pub const ALLOCATION_OVERHEAD: usize = 48;

/// One STOMP frame: a command, headers and a body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    /// The command.
    pub command: Command,
    /// The headers, in wire order.
    pub headers: Headers,
    /// The body; may contain NUL bytes when framed by `content-length`.
    pub body: Bytes,
}

impl Frame {
    /// A frame with no headers and no body.
    pub fn new(command: Command) -> Frame {
        Frame {
            command,
            headers: Headers::new(),
            body: Bytes::new(),
        }
    }

    /// Adds a header (builder style).
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> Frame {
        self.headers.push_str(name, value);
        self
    }

    /// The frame's size: command, header lines and body, in bytes.
    pub fn len_bytes(&self) -> usize {
        self.command.as_str().len()
            + self
                .headers
                .iter_bytes()
                .map(|(n, v)| n.len() + v.len() + 2)
                .sum::<usize>()
            + self.body.len()
            + 3
    }

    /// What the frame occupies in memory once [detached](Frame::detached):
    /// the struct, one `(Bytes, Bytes)` entry per header slot (by capacity,
    /// so 64 bytes for a 3-byte `a:`), its one buffer (command and
    /// separators included, as [`Frame::len_bytes`]), and the allocator's
    /// bookkeeping for the header list and the buffer.
    ///
    /// Limits on frames held beyond a read (queues, transactions) count
    /// this, not [`Frame::len_bytes`]: a frame of many short headers costs
    /// far more than its wire size. For a frame still slicing a larger read
    /// buffer this undercounts; such a frame must not be held.
    pub fn memory_bytes(&self) -> usize {
        std::mem::size_of::<Frame>()
            + self.headers.entries.capacity() * std::mem::size_of::<(Bytes, Bytes)>()
            + self.len_bytes()
            + 2 * ALLOCATION_OVERHEAD
    }

    /// The same frame in one buffer of its own.
    ///
    /// A decoded frame is a set of slices of the read buffer it came from,
    /// which may be much larger (a WebSocket message carrying many frames).
    /// Anything kept beyond the read (a queued message, a transaction) should
    /// be detached, or a small frame pins a large buffer.
    #[must_use]
    pub fn detached(&self) -> Frame {
        let mut buf = bytes::BytesMut::with_capacity(self.len_bytes());
        let mut spans = Vec::with_capacity(self.headers.len());
        for (name, value) in self.headers.iter_bytes() {
            let start = buf.len();
            buf.extend_from_slice(name);
            let middle = buf.len();
            buf.extend_from_slice(value);
            spans.push((start, middle, buf.len()));
        }
        let body_start = buf.len();
        buf.extend_from_slice(&self.body);
        let all = buf.freeze();
        let mut headers = Headers::with_capacity(spans.len());
        for (start, middle, end) in spans {
            headers.push(all.slice(start..middle), all.slice(middle..end));
        }
        Frame {
            command: self.command,
            headers,
            body: all.slice(body_start..),
        }
    }

    /// Sets the body (builder style).
    #[must_use]
    pub fn body(mut self, body: impl Into<Bytes>) -> Frame {
        self.body = body.into();
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_counts_every_header_entry_not_only_its_bytes() {
        let mut frame = Frame::new(Command::Send).header("destination", "/queue/a");
        for _ in 0..62 {
            frame = frame.header("a", "");
        }
        let detached = frame.detached();
        let entries = 63 * std::mem::size_of::<(Bytes, Bytes)>();
        assert!(detached.memory_bytes() >= entries + detached.len_bytes());
        assert!(
            detached.len_bytes() < 300,
            "wire size {}",
            detached.len_bytes()
        );
        assert!(detached.memory_bytes() > 4_000);
    }

    #[test]
    fn a_detached_frame_does_not_share_the_buffer_it_came_from() {
        let big = Bytes::from(vec![b'x'; 4096]);
        let frame = Frame {
            command: Command::Send,
            headers: {
                let mut h = Headers::new();
                h.push(big.slice(0..4), big.slice(4..8));
                h
            },
            body: big.slice(8..10),
        };
        let detached = frame.detached();
        assert_eq!(detached, frame);
        let range = big.as_ptr() as usize..big.as_ptr() as usize + big.len();
        assert!(!range.contains(&(detached.body.as_ptr() as usize)));
        for (name, value) in detached.headers.iter_bytes() {
            assert!(!range.contains(&(name.as_ptr() as usize)));
            assert!(!range.contains(&(value.as_ptr() as usize)));
        }
    }
}
