//! The server side of WebSocket framing (RFC 6455) for STOMP sessions.
//!
//! Ours rather than a crate's for the memory of idle sessions: the crates
//! we tried keep a fixed read buffer (8 KiB) per connection for its whole
//! life, more than everything else a subscribed session holds. Here a
//! session keeps only what is left of an unfinished frame (see
//! [`crate::scratch`]): nothing while its client is quiet.
//!
//! Writes put each frame's 2–10 byte header beside the shared encoded
//! STOMP bytes in one vectored write, so the payload of a fanned-out
//! message is never copied per subscriber.
//!
//! No extension is negotiated (the upgrade offers none), so every RSV bit
//! is a protocol error; client frames must be masked, server frames are
//! not.

use crate::outbox::OutFrame;
use crate::scratch::poll_read_appending;
use bytes::{Buf, BufMut, BytesMut};
use std::collections::VecDeque;
use std::future::poll_fn;
use std::io::{self, IoSlice};
use std::pin::Pin;
use std::task::{Context, Poll, ready};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};

/// The byte stream under a WebSocket: a TCP socket, or TLS over one.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// A frame at least this long gets a buffer reserved for all of it as soon
/// as its header is read, instead of one grown read by read.
const LARGE_FRAME: usize = 16 * 1024;

/// Frames written by one vectored write (each is a header and up to two
/// byte slices, a delivery's own head and the message's shared tail; Linux
/// takes 1,024 slices per call).
const FRAMES_PER_WRITE: usize = 64;

/// Longest close reason we send: a control frame's payload is at most 125
/// bytes, two of which are the code.
const MAX_CLOSE_REASON: usize = 123;

/// What a peer's input that is not given to the session is drained up to,
/// while waiting for its Close after ours.
const MAX_DRAIN_BYTES: usize = 1024 * 1024;

/// A close status code (RFC 6455 §7.4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct CloseCode(u16);

impl CloseCode {
    pub(crate) const NORMAL_CLOSURE: CloseCode = CloseCode(1000);
    pub(crate) const GOING_AWAY: CloseCode = CloseCode(1001);
    pub(crate) const PROTOCOL_ERROR: CloseCode = CloseCode(1002);
    pub(crate) const INVALID_PAYLOAD: CloseCode = CloseCode(1007);
    pub(crate) const POLICY_VIOLATION: CloseCode = CloseCode(1008);
    pub(crate) const MESSAGE_TOO_BIG: CloseCode = CloseCode(1009);

    /// Codes a peer may put in a Close: the registered ones that are not
    /// reserved for reporting without being sent (1004–1006, 1015), and the
    /// ranges for libraries and applications.
    fn may_be_received(code: u16) -> bool {
        matches!(code, 1000..=1003 | 1007..=1014 | 3000..=4999)
    }
}

/// What reading produced.
#[derive(Debug)]
pub(crate) enum Received {
    /// A whole text or binary message's payload.
    Message(BytesMut),
    /// The peer sent Close (its echo is queued) or closed the socket.
    Closed,
    /// A message larger than the limit was announced; a Close 1009 is
    /// queued.
    TooLarge,
    /// The peer broke the protocol; the Close saying so (1002 or 1007) is
    /// queued.
    Violation(String),
}

/// The data message being put together from fragments.
#[derive(Debug)]
struct Fragments {
    text: bool,
    payload: BytesMut,
    /// How much of `payload` is known to be whole UTF-8 (text only): a
    /// code point may be split between fragments.
    checked: usize,
}

/// A server-side WebSocket over an upgraded connection.
pub(crate) struct WebSocket {
    io: Box<dyn Io>,
    /// Bytes read and not yet taken as frames. Empty, without an
    /// allocation, whenever no frame is half-received.
    pending: BytesMut,
    /// Boxed, as `unfinished`: rare, and an idle session holds neither.
    fragments: Option<Box<Fragments>>,
    max_message: usize,
    /// A frame that went out in part: it is finished before anything else
    /// is written, so that a write given up half-way (a timeout) does not
    /// leave a torn frame in front of the ERROR or Close that follows.
    unfinished: Option<Box<(OutFrame, usize)>>,
    /// Control frames to send (a Pong, the Close, or a Pong then the
    /// Close), after `unfinished`; at most two, so a few hundred bytes.
    /// Bytes leave from the front as they are written.
    control: Vec<u8>,
    /// A Close is queued in `control` or was sent: no other frame may
    /// follow it.
    close_queued: bool,
    close_received: bool,
    /// Input is no longer read after a violation or a refused message.
    failed: bool,
}

impl std::fmt::Debug for WebSocket {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebSocket")
            .field("pending", &self.pending.len())
            .field("max_message", &self.max_message)
            .field("close_queued", &self.close_queued)
            .field("close_received", &self.close_received)
            .finish_non_exhaustive()
    }
}

/// What one parse of `pending` found.
enum Parsed {
    NeedMore,
    /// A control frame was handled; go on.
    Control,
    Done(Received),
}

impl WebSocket {
    /// `read_ahead` is what the HTTP layer read past the upgrade request
    /// (a client may send its first frame without waiting for the `101`).
    pub(crate) fn new(io: Box<dyn Io>, read_ahead: &[u8], max_message: usize) -> WebSocket {
        WebSocket {
            io,
            pending: BytesMut::from(read_ahead),
            fragments: None,
            max_message,
            unfinished: None,
            control: Vec::new(),
            close_queued: false,
            close_received: false,
            failed: false,
        }
    }

    /// The largest message read before it is refused with Close 1009.
    pub(crate) fn set_message_limit(&mut self, bytes: usize) {
        self.max_message = bytes;
    }

    /// Reads until a whole data message, a Close, the end of the stream or
    /// a violation. Pings are answered on the way. Cancel-safe: whatever
    /// was read or half-written stays in `self`.
    pub(crate) async fn read(&mut self) -> io::Result<Received> {
        // A poll rather than an async body: the session's future, which
        // every idle session holds, then keeps no room for this one's.
        poll_fn(|cx| self.poll_read(cx)).await
    }

    fn poll_read(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Received>> {
        loop {
            if self.failed {
                return Poll::Ready(Ok(Received::Closed));
            }
            if !self.control.is_empty() && !self.close_queued {
                // A Pong: sent before reading on, so that a client that
                // pings without reading is held back by its own socket.
                ready!(self.poll_write_queued(cx))?;
            }
            match self.parse() {
                Parsed::Done(received) => {
                    if !matches!(received, Received::Message(_)) {
                        self.failed = true;
                    }
                    return Poll::Ready(Ok(received));
                }
                Parsed::Control => {}
                Parsed::NeedMore => {
                    if ready!(poll_read_appending(&mut self.io, cx, &mut self.pending))? == 0 {
                        self.failed = true;
                        return Poll::Ready(Ok(Received::Closed));
                    }
                }
            }
        }
    }

    fn violation(&mut self, code: CloseCode, why: &str) -> Parsed {
        self.queue_close(code, why);
        Parsed::Done(Received::Violation(why.to_owned()))
    }

    /// Takes the next frame from `pending`, if it is all there.
    fn parse(&mut self) -> Parsed {
        let buf = &self.pending[..];
        if buf.len() < 2 {
            return Parsed::NeedMore;
        }
        let fin = buf[0] & 0x80 != 0;
        let opcode = buf[0] & 0x0f;
        let masked = buf[1] & 0x80 != 0;
        if buf[0] & 0x70 != 0 {
            return self.violation(
                CloseCode::PROTOCOL_ERROR,
                "reserved bits set with no extension agreed",
            );
        }
        if !matches!(opcode, 0x0..=0x2 | 0x8..=0xa) {
            return self.violation(CloseCode::PROTOCOL_ERROR, "unknown opcode");
        }
        if !masked {
            return self.violation(CloseCode::PROTOCOL_ERROR, "client frame not masked");
        }
        let control = opcode >= 0x8;
        let short = usize::from(buf[1] & 0x7f);
        if control && (!fin || short > 125) {
            return self.violation(
                CloseCode::PROTOCOL_ERROR,
                "control frame fragmented or longer than 125 bytes",
            );
        }
        let (length, length_bytes) = match short {
            126 => match buf.get(2..4) {
                Some(b) => (u64::from(u16::from_be_bytes([b[0], b[1]])), 2),
                None => return Parsed::NeedMore,
            },
            127 => match buf.get(2..10) {
                Some(b) => {
                    let mut be = [0u8; 8];
                    be.copy_from_slice(b);
                    let length = u64::from_be_bytes(be);
                    if length >> 63 != 0 {
                        return self.violation(
                            CloseCode::PROTOCOL_ERROR,
                            "payload length with its top bit set",
                        );
                    }
                    (length, 8)
                }
                None => return Parsed::NeedMore,
            },
            n => (n as u64, 0),
        };
        // RFC 6455 §5.2: "the minimal number of bytes MUST be used".
        let minimal = match length_bytes {
            2 => length > 125,
            8 => length > 0xffff,
            _ => true,
        };
        if !minimal {
            return self.violation(
                CloseCode::PROTOCOL_ERROR,
                "payload length not in its shortest encoding",
            );
        }
        if !control {
            match (&self.fragments, opcode) {
                (None, 0x0) => {
                    return self.violation(
                        CloseCode::PROTOCOL_ERROR,
                        "continuation frame with no message to continue",
                    );
                }
                (Some(_), 0x1 | 0x2) => {
                    return self.violation(
                        CloseCode::PROTOCOL_ERROR,
                        "new message before the fragmented one ended",
                    );
                }
                _ => {}
            }
            let so_far = self.fragments.as_ref().map_or(0, |f| f.payload.len()) as u64;
            if so_far.saturating_add(length) > self.max_message as u64 {
                self.queue_close(CloseCode::MESSAGE_TOO_BIG, "message too big");
                return Parsed::Done(Received::TooLarge);
            }
        }
        // Bounded by the message limit just checked, or 125.
        let length = length as usize;
        let header = 2 + length_bytes + 4;
        let have = buf.len();
        if have < header + length {
            if length >= LARGE_FRAME {
                // A large frame: read it into one buffer of its size.
                self.pending.reserve(header + length - have);
            }
            return Parsed::NeedMore;
        }
        let mut mask = [0u8; 4];
        mask.copy_from_slice(&buf[header - 4..header]);
        self.pending.advance(header);
        let mut payload = self.pending.split_to(length);
        if self.pending.is_empty() {
            // Let the read's allocation go with the payload.
            self.pending = BytesMut::new();
        }
        unmask(&mut payload, mask);
        match opcode {
            0x8 => self.closed_by_peer(&payload),
            0x9 => {
                if !self.close_queued {
                    self.control.clear();
                    encode_header(&mut self.control, 0xa, payload.len());
                    self.control.extend_from_slice(&payload);
                }
                Parsed::Control
            }
            0xa => Parsed::Control,
            _ => self.data(opcode, fin, payload),
        }
    }

    fn data(&mut self, opcode: u8, fin: bool, payload: BytesMut) -> Parsed {
        let mut fragments = match self.fragments.take() {
            Some(mut f) => {
                f.payload.extend_from_slice(&payload);
                f
            }
            None if fin => {
                if opcode == 0x1 && std::str::from_utf8(&payload).is_err() {
                    return self.violation(CloseCode::INVALID_PAYLOAD, "text message not UTF-8");
                }
                return Parsed::Done(Received::Message(payload));
            }
            None => Box::new(Fragments {
                text: opcode == 0x1,
                payload,
                checked: 0,
            }),
        };
        if fragments.text {
            match std::str::from_utf8(&fragments.payload[fragments.checked..]) {
                Ok(_) => fragments.checked = fragments.payload.len(),
                // Only an unfinished code point at the end may wait for the
                // next fragment.
                Err(e) if e.error_len().is_none() && !fin => {
                    fragments.checked += e.valid_up_to();
                }
                Err(_) => {
                    return self.violation(CloseCode::INVALID_PAYLOAD, "text message not UTF-8");
                }
            }
        }
        if fin {
            Parsed::Done(Received::Message(fragments.payload))
        } else {
            self.fragments = Some(fragments);
            Parsed::Control
        }
    }

    fn closed_by_peer(&mut self, payload: &[u8]) -> Parsed {
        self.close_received = true;
        match payload {
            [] => {
                // Answered with an empty Close, as it came.
                if !self.close_queued {
                    encode_header(&mut self.control, 0x8, 0);
                    self.close_queued = true;
                }
                Parsed::Done(Received::Closed)
            }
            [_] => self.violation(CloseCode::PROTOCOL_ERROR, "close frame of one byte"),
            [high, low, reason @ ..] => {
                let code = u16::from_be_bytes([*high, *low]);
                if !CloseCode::may_be_received(code) {
                    return self.violation(CloseCode::PROTOCOL_ERROR, "invalid close code");
                }
                if std::str::from_utf8(reason).is_err() {
                    return self.violation(CloseCode::INVALID_PAYLOAD, "close reason not UTF-8");
                }
                self.queue_close(CloseCode(code), "");
                Parsed::Done(Received::Closed)
            }
        }
    }

    /// Queues our Close, unless one is queued or sent already (the echo of
    /// the peer's, or the one naming a violation): the first one stands.
    fn queue_close(&mut self, code: CloseCode, reason: &str) {
        if self.close_queued {
            return;
        }
        let mut end = reason.len().min(MAX_CLOSE_REASON);
        while !reason.is_char_boundary(end) {
            end -= 1;
        }
        let reason = &reason.as_bytes()[..end];
        // After a Pong still queued: it may be half-written already, and
        // cutting it off would tear the stream. Nothing comes after this.
        encode_header(&mut self.control, 0x8, 2 + reason.len());
        self.control.extend_from_slice(&code.0.to_be_bytes());
        self.control.extend_from_slice(reason);
        self.close_queued = true;
    }

    /// Writes the unfinished frame, then a queued control frame.
    fn poll_write_queued(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        while let Some(unfinished) = &mut self.unfinished {
            let (frame, written) = &mut **unfinished;
            let mut head = [0u8; 10];
            let head_len = frame_header(&mut head, frame);
            let mut slices = [IoSlice::new(&[]); 3];
            let [first, rest] = frame.chunks();
            let count = skip(&mut slices, [&head[..head_len], first, rest], *written);
            let n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            *written += n;
            if *written >= head_len + frame.len() {
                self.unfinished = None;
            }
        }
        while !self.control.is_empty() {
            let n = ready!(Pin::new(&mut self.io).poll_write(cx, &self.control))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            self.control.drain(..n);
        }
        Poll::Ready(Ok(()))
    }

    /// Writes every frame in `frames`, leaving it empty; many frames go in
    /// one system call. Cancel-safe: a frame half-written is kept and
    /// finished first by the next write or the close.
    pub(crate) async fn write_batch(&mut self, frames: &mut VecDeque<OutFrame>) -> io::Result<()> {
        if self.close_queued {
            // Nothing may follow a Close; the session is ending anyway.
            frames.clear();
            return Ok(());
        }
        poll_fn(|cx| self.poll_write_frames(cx, frames)).await?;
        self.io.flush().await
    }

    fn poll_write_frames(
        &mut self,
        cx: &mut Context<'_>,
        frames: &mut VecDeque<OutFrame>,
    ) -> Poll<io::Result<()>> {
        ready!(self.poll_write_queued(cx))?;
        while !frames.is_empty() {
            let mut heads = [[0u8; 10]; FRAMES_PER_WRITE];
            let mut head_lens = [0usize; FRAMES_PER_WRITE];
            let batch = frames.len().min(FRAMES_PER_WRITE);
            for (i, frame) in frames.iter().take(batch).enumerate() {
                head_lens[i] = frame_header(&mut heads[i], frame);
            }
            let mut slices = [IoSlice::new(&[]); 3 * FRAMES_PER_WRITE];
            let mut count = 0;
            for (i, frame) in frames.iter().take(batch).enumerate() {
                slices[count] = IoSlice::new(&heads[i][..head_lens[i]]);
                count += 1;
                for chunk in frame.chunks() {
                    if !chunk.is_empty() {
                        slices[count] = IoSlice::new(chunk);
                        count += 1;
                    }
                }
            }
            let mut n = ready!(Pin::new(&mut self.io).poll_write_vectored(cx, &slices[..count]))?;
            if n == 0 {
                return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
            }
            for head_len in head_lens.iter().take(batch) {
                let Some(frame) = frames.pop_front() else {
                    break;
                };
                let whole = head_len + frame.len();
                if n >= whole {
                    n -= whole;
                } else {
                    self.unfinished = Some(Box::new((frame, n)));
                    ready!(self.poll_write_queued(cx))?;
                    break;
                }
            }
        }
        Poll::Ready(Ok(()))
    }

    /// Sends our Close (`code`, unless a Close is queued already) and
    /// closes the connection. The caller bounds the time.
    pub(crate) async fn close(&mut self, code: CloseCode, reason: &str) {
        self.queue_close(code, reason);
        if poll_fn(|cx| self.poll_write_queued(cx)).await.is_err() {
            return;
        }
        // Our side ends with the Close: the server closes the TCP
        // connection first (RFC 6455 §7.1.1), without waiting on a client
        // that may never answer.
        let _ = self.io.shutdown().await;
        if self.close_received {
            return;
        }
        // Then the peer's Close (or its end of the stream) is awaited, and
        // what comes before it dropped: a socket closed with unread input
        // is reset, which can destroy our Close before the peer reads it.
        self.failed = false;
        self.max_message = MAX_DRAIN_BYTES;
        let mut drained = 0;
        while drained < MAX_DRAIN_BYTES {
            match self.read().await {
                Ok(Received::Message(m)) => drained += m.len(),
                _ => break,
            }
        }
    }
}

/// Puts the slices of `parts` past the first `skip` bytes into `out`;
/// returns how many.
fn skip<'a>(out: &mut [IoSlice<'a>; 3], parts: [&'a [u8]; 3], mut skip: usize) -> usize {
    let mut count = 0;
    for part in parts {
        if skip >= part.len() {
            skip -= part.len();
            continue;
        }
        out[count] = IoSlice::new(&part[skip..]);
        skip = 0;
        count += 1;
    }
    count
}

/// The header of an unmasked server frame carrying `frame`; its length.
fn frame_header(out: &mut [u8; 10], frame: &OutFrame) -> usize {
    let opcode = if frame.is_text() { 0x1 } else { 0x2 };
    let mut rest = &mut out[..];
    encode_header(&mut rest, opcode, frame.len());
    let left = rest.len();
    10 - left
}

/// Appends a final frame's header for `length` payload bytes.
fn encode_header(out: &mut impl BufMut, opcode: u8, length: usize) {
    out.put_u8(0x80 | opcode);
    match length {
        0..=125 => out.put_u8(length as u8),
        126..=0xffff => {
            out.put_u8(126);
            out.put_u16(length as u16);
        }
        _ => {
            out.put_u8(127);
            out.put_u64(length as u64);
        }
    }
}

/// XORs the client's masking key over the payload, eight bytes at a time.
fn unmask(payload: &mut [u8], mask: [u8; 4]) {
    let wide = u64::from_ne_bytes([
        mask[0], mask[1], mask[2], mask[3], mask[0], mask[1], mask[2], mask[3],
    ]);
    let mut chunks = payload.chunks_exact_mut(8);
    for chunk in &mut chunks {
        let mut word = [0u8; 8];
        word.copy_from_slice(chunk);
        chunk.copy_from_slice(&(u64::from_ne_bytes(word) ^ wide).to_ne_bytes());
    }
    for (i, byte) in chunks.into_remainder().iter_mut().enumerate() {
        *byte ^= mask[i % 4];
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unmasking_matches_the_byte_by_byte_definition() {
        let mask = [0x37, 0xfa, 0x21, 0x3d];
        for len in 0..40 {
            let plain: Vec<u8> = (0..len).map(|i| (i * 7 + 3) as u8).collect();
            let mut masked: Vec<u8> = plain
                .iter()
                .enumerate()
                .map(|(i, b)| b ^ mask[i % 4])
                .collect();
            unmask(&mut masked, mask);
            assert_eq!(masked, plain, "length {len}");
        }
    }

    #[test]
    fn headers_use_the_shortest_length_encoding() {
        let mut out = Vec::new();
        encode_header(&mut out, 0x1, 125);
        assert_eq!(out, [0x81, 125]);
        out.clear();
        encode_header(&mut out, 0x2, 126);
        assert_eq!(out, [0x82, 126, 0, 126]);
        out.clear();
        encode_header(&mut out, 0x2, 65536);
        assert_eq!(out, [0x82, 127, 0, 0, 0, 0, 0, 1, 0, 0]);
    }

    /// Reads one unmasked server frame: (first byte, payload).
    async fn server_frame(peer: &mut (impl AsyncRead + Unpin)) -> (u8, Vec<u8>) {
        use tokio::io::AsyncReadExt;
        let first = peer.read_u8().await.expect("first byte");
        let length = match peer.read_u8().await.expect("length") {
            126 => usize::from(peer.read_u16().await.expect("16-bit length")),
            127 => usize::try_from(peer.read_u64().await.expect("64-bit length")).expect("fits"),
            n => usize::from(n),
        };
        let mut payload = vec![0; length];
        peer.read_exact(&mut payload).await.expect("payload");
        (first, payload)
    }

    #[tokio::test]
    async fn a_frame_cut_off_by_a_timeout_is_finished_before_the_close() {
        // A pipe with room for part of one frame: the write stalls half-way
        // until the peer reads.
        let (ours, mut peer) = tokio::io::duplex(1000);
        let mut ws = WebSocket::new(Box::new(ours), &[], 1 << 20);
        let body = bytes::Bytes::from(vec![b'x'; 5000]);
        let mut frames: VecDeque<OutFrame> =
            [OutFrame::new(body.clone()), OutFrame::new(body.clone())].into();
        let cut = tokio::time::timeout(
            std::time::Duration::from_millis(50),
            ws.write_batch(&mut frames),
        )
        .await;
        assert!(cut.is_err(), "the write should have stalled");
        let closing = tokio::spawn(async move {
            ws.close(CloseCode::POLICY_VIOLATION, "slow consumer").await;
        });
        let (first, payload) = server_frame(&mut peer).await;
        assert_eq!(first, 0x81);
        assert_eq!(payload, body);
        // The second frame never started: the Close comes next, whole.
        let (first, payload) = server_frame(&mut peer).await;
        assert_eq!(first, 0x88);
        assert_eq!(&payload[..2], &1008u16.to_be_bytes());
        assert_eq!(&payload[2..], b"slow consumer");
        answer_close(&mut peer, closing).await;
    }

    /// The client answers our Close; the server then ends the connection
    /// with nothing after its Close.
    async fn answer_close(
        peer: &mut tokio::io::DuplexStream,
        closing: tokio::task::JoinHandle<()>,
    ) {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        peer.write_all(&[0x88, 0x82, 0, 0, 0, 0, 0x03, 0xe8])
            .await
            .expect("client close");
        closing.await.expect("close finished");
        let mut rest = Vec::new();
        peer.read_to_end(&mut rest).await.expect("eof");
        assert!(rest.is_empty(), "{rest:?}");
    }

    #[tokio::test]
    async fn a_pong_cut_off_by_a_full_socket_is_finished_before_the_close() {
        use futures_util::FutureExt;
        // A Ping of 120 bytes already read; a pipe with room for half its
        // Pong, so that the Pong stops part-way.
        let mask = [0x0f, 0xf0, 0x55, 0xaa];
        let payload: Vec<u8> = (0..120u8).collect();
        let mut ping = vec![0x89, 0x80 | 120];
        ping.extend_from_slice(&mask);
        ping.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
        let (ours, mut peer) = tokio::io::duplex(60);
        let mut ws = WebSocket::new(Box::new(ours), &ping, 1 << 20);
        assert!(
            ws.read().now_or_never().is_none(),
            "the Pong should not fit"
        );
        let closing = tokio::spawn(async move {
            ws.close(CloseCode::POLICY_VIOLATION, "going").await;
        });
        // The Pong whole, then the Close: not a Close inside a torn Pong.
        let (first, pong) = server_frame(&mut peer).await;
        assert_eq!((first, &pong[..]), (0x8a, &payload[..]));
        let (first, close) = server_frame(&mut peer).await;
        assert_eq!(first, 0x88);
        assert_eq!(&close[..2], &1008u16.to_be_bytes());
        answer_close(&mut peer, closing).await;
    }

    #[tokio::test]
    async fn a_message_split_anywhere_is_read_whole_and_pings_are_answered() {
        use tokio::io::AsyncWriteExt;
        let mask = [0x11, 0x22, 0x33, 0x44];
        let masked = |first: u8, payload: &[u8]| {
            let mut out = vec![first, 0x80 | u8::try_from(payload.len()).expect("short")];
            out.extend_from_slice(&mask);
            out.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
            out
        };
        // The first fragment ends inside the 'ö'.
        let text = "héllo wörld".as_bytes();
        let mut wire = masked(0x01, &text[..9]);
        wire.extend(masked(0x89, b"ping!"));
        wire.extend(masked(0x80, &text[9..]));
        for cut in 1..wire.len() {
            let (ours, mut peer) = tokio::io::duplex(4096);
            let mut ws = WebSocket::new(Box::new(ours), &[], 1 << 20);
            peer.write_all(&wire[..cut]).await.expect("first part");
            let reading = tokio::spawn(async move {
                let received = ws.read().await.expect("read");
                (ws, received)
            });
            peer.write_all(&wire[cut..]).await.expect("second part");
            let (ws, received) = reading.await.expect("reader");
            match received {
                Received::Message(m) => assert_eq!(&m[..], "héllo wörld".as_bytes(), "cut {cut}"),
                other => panic!("cut {cut}: {other:?}"),
            }
            let (first, payload) = server_frame(&mut peer).await;
            assert_eq!((first, &payload[..]), (0x8a, &b"ping!"[..]), "cut {cut}");
            drop(ws);
        }
    }

    #[test]
    fn close_codes_a_peer_may_send() {
        for ok in [1000, 1001, 1003, 1007, 1011, 1014, 3000, 4999] {
            assert!(CloseCode::may_be_received(ok), "{ok}");
        }
        for bad in [0, 999, 1004, 1005, 1006, 1015, 1016, 2999, 5000] {
            assert!(!CloseCode::may_be_received(bad), "{bad}");
        }
    }
}
