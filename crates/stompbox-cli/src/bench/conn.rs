//! A lean STOMP-over-WebSocket connection for the bench.
//!
//! Not the library's `Client`: the bench must choose each socket's source
//! address (one address runs out of ephemeral ports near 28k connections),
//! must send the `host` header RabbitMQ reads as its virtual host, and
//! resolves the server once rather than per connection.

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use stompbox_codec::{Command, Decoded, Decoder, Frame, Limits, Version, encode_frame, header};
use tokio::net::{TcpSocket, TcpStream};
use tokio_websockets::{ClientBuilder, Message, WebSocketStream};

/// One server: resolved once, shared by every connection to it.
pub(crate) struct Endpoint {
    addr: SocketAddr,
    builder: ClientBuilder<'static>,
    host: String,
    login: Option<String>,
    passcode: Option<String>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("addr", &self.addr)
            .field("host", &self.host)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Resolves `url` (`ws://host[:port]/path`).
    pub(crate) async fn resolve(
        url: &str,
        host: &str,
        login: Option<&str>,
        passcode: Option<&str>,
    ) -> Result<Arc<Endpoint>, String> {
        let rest = url
            .strip_prefix("ws://")
            .ok_or_else(|| format!("{url}: the bench speaks plain ws:// only"))?;
        let authority = rest.split('/').next().unwrap_or(rest);
        let with_port = match authority.rsplit_once(':') {
            Some((_, port)) if port.parse::<u16>().is_ok() => authority.to_owned(),
            _ => format!("{authority}:80"),
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await
            .map_err(|e| format!("{url}: cannot resolve {with_port}: {e}"))?
            .next()
            .ok_or_else(|| format!("{url}: {with_port} resolves to no address"))?;
        let builder = ClientBuilder::new()
            .uri(url)
            .map_err(|e| format!("{url}: invalid URL: {e}"))?;
        Ok(Arc::new(Endpoint {
            addr,
            builder,
            host: host.to_owned(),
            login: login.map(str::to_owned),
            passcode: passcode.map(str::to_owned),
        }))
    }

    pub(crate) fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Opens the TCP connection (from `source` when given) and does the
    /// WebSocket handshake.
    pub(crate) async fn open(&self, source: Option<IpAddr>) -> Result<Conn, String> {
        let socket = match self.addr {
            SocketAddr::V4(_) => TcpSocket::new_v4(),
            SocketAddr::V6(_) => TcpSocket::new_v6(),
        }
        .map_err(|e| format!("socket: {e}"))?;
        if let Some(ip) = source {
            socket
                .bind(SocketAddr::new(ip, 0))
                .map_err(|e| format!("bind {ip}: {e}"))?;
        }
        let stream = socket
            .connect(self.addr)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        // Frames are small and latency is measured: no Nagle delay.
        stream
            .set_nodelay(true)
            .map_err(|e| format!("nodelay: {e}"))?;
        let (ws, _response) = self
            .builder
            .connect_on(stream)
            .await
            .map_err(|e| format!("WebSocket handshake: {e}"))?;
        Ok(Conn {
            ws,
            decoder: Decoder::new(Limits {
                max_frame_bytes: 16 * 1024 * 1024,
                ..Limits::default()
            }),
            buf: BytesMut::new(),
            version: Version::V1_2,
            close: None,
        })
    }

    /// Opens a connection and completes CONNECT/CONNECTED. Heart-beats are
    /// off unless `beat_every` is given, which promises the server one from
    /// us that often (see [`Conn::send_heartbeat`]); we never ask for the
    /// server's.
    pub(crate) async fn connect(
        &self,
        source: Option<IpAddr>,
        beat_every: Option<Duration>,
    ) -> Result<Conn, String> {
        let mut conn = self.open(source).await?;
        self.login(
            &mut conn,
            beat_every,
            self.login.as_deref(),
            self.passcode.as_deref(),
        )
        .await?;
        Ok(conn)
    }

    /// CONNECT on an open connection with these credentials (not
    /// necessarily the endpoint's), and wait for CONNECTED.
    pub(crate) async fn login(
        &self,
        conn: &mut Conn,
        beat_every: Option<Duration>,
        login: Option<&str>,
        passcode: Option<&str>,
    ) -> Result<(), String> {
        let heart_beat = format!("{},0", beat_every.map_or(0, |d| d.as_millis()));
        let mut connect = Frame::new(Command::Connect)
            .header(header::ACCEPT_VERSION, "1.1,1.2")
            .header(header::HOST, &self.host)
            .header(header::HEART_BEAT, &heart_beat);
        if let Some(login) = login {
            connect = connect.header(header::LOGIN, login);
        }
        if let Some(passcode) = passcode {
            connect = connect.header(header::PASSCODE, passcode);
        }
        conn.send(&connect).await?;
        let connected = conn.expect(Command::Connected).await?;
        if let Some(version) = connected
            .headers
            .get(header::VERSION)
            .and_then(Version::parse)
        {
            conn.version = version;
            conn.decoder.set_version(version);
        }
        Ok(())
    }
}

/// One open connection.
#[derive(Debug)]
pub(crate) struct Conn {
    ws: WebSocketStream<TcpStream>,
    decoder: Decoder,
    buf: BytesMut,
    version: Version,
    close: Option<String>,
}

impl Conn {
    fn message(&self, frame: &Frame) -> Message {
        let mut out = BytesMut::new();
        encode_frame(frame, self.version, &mut out);
        // Bench frames are ASCII, so a text message, as browsers send.
        Message::text(out.freeze())
    }

    /// Sends one frame now.
    pub(crate) async fn send(&mut self, frame: &Frame) -> Result<(), String> {
        let message = self.message(frame);
        self.ws
            .send(message)
            .await
            .map_err(|e| format!("send: {e}"))
    }

    /// Queues one frame; it goes out at the next flush (or when the
    /// WebSocket's write buffer fills).
    pub(crate) async fn feed(&mut self, frame: &Frame) -> Result<(), String> {
        let message = self.message(frame);
        self.ws
            .feed(message)
            .await
            .map_err(|e| format!("send: {e}"))
    }

    /// Sends one heart-beat (an end of line).
    pub(crate) async fn send_heartbeat(&mut self) -> Result<(), String> {
        self.ws
            .send(Message::text(Bytes::from_static(b"\n")))
            .await
            .map_err(|e| format!("send heart-beat: {e}"))
    }

    pub(crate) async fn flush(&mut self) -> Result<(), String> {
        self.ws.flush().await.map_err(|e| format!("send: {e}"))
    }

    /// The next frame; `None` when the server closed the connection (see
    /// [`Conn::close_reason`]). Cancel-safe: partial input stays in `buf`.
    pub(crate) async fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        loop {
            while let Some(item) = self
                .decoder
                .decode(&mut self.buf)
                .map_err(|e| format!("invalid frame from server: {e}"))?
            {
                if let Decoded::Frame(frame) = item {
                    return Ok(Some(frame));
                }
            }
            match self.ws.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(format!("receive: {e}")),
                Some(Ok(message)) if message.is_text() || message.is_binary() => {
                    let payload = Bytes::from(message.into_payload());
                    if self.buf.is_empty() {
                        // One message is usually one whole frame: decode it
                        // where it lies rather than copying it.
                        self.buf = payload
                            .try_into_mut()
                            .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
                    } else {
                        self.buf.extend_from_slice(&payload);
                    }
                }
                Some(Ok(message)) if message.is_close() => {
                    self.close = Some(match message.as_close() {
                        Some((code, reason)) => {
                            format!("close code {} '{reason}'", u16::from(code))
                        }
                        None => "close without code".into(),
                    });
                    return Ok(None);
                }
                // Pings are answered inside the WebSocket layer.
                Some(Ok(_)) => {}
            }
        }
    }

    /// The next frame for a bench subscriber: a MESSAGE reduced to its
    /// `seq` and `ts` headers, or any other frame whole.
    ///
    /// The load tool shares the CPU with the server it measures, so the
    /// common case (one whole MESSAGE per WebSocket message) is read in
    /// place, without building a [`Frame`]: decoding every delivery in full
    /// made the subscribers, not the server, the bottleneck. Anything
    /// unusual goes through the real decoder.
    pub(crate) async fn next_delivery(&mut self) -> Result<Option<Delivery>, String> {
        loop {
            if !self.buf.is_empty() {
                // Decoder path: drain what is buffered before reading more.
                if let Some(item) = self
                    .decoder
                    .decode(&mut self.buf)
                    .map_err(|e| format!("invalid frame from server: {e}"))?
                {
                    if let Decoded::Frame(frame) = item {
                        return Ok(Some(Delivery::from_frame(frame)));
                    }
                    continue;
                }
            }
            match self.ws.next().await {
                None => return Ok(None),
                Some(Err(e)) => return Err(format!("receive: {e}")),
                Some(Ok(message)) if message.is_text() || message.is_binary() => {
                    let payload = message.into_payload();
                    if self.buf.is_empty()
                        && let Some(delivery) = scan_message(&payload)
                    {
                        return Ok(Some(delivery));
                    }
                    self.buf.extend_from_slice(&payload);
                    // A partial frame: the decoder needs more bytes.
                    if let Some(item) = self
                        .decoder
                        .decode(&mut self.buf)
                        .map_err(|e| format!("invalid frame from server: {e}"))?
                        && let Decoded::Frame(frame) = item
                    {
                        return Ok(Some(Delivery::from_frame(frame)));
                    }
                }
                Some(Ok(message)) if message.is_close() => {
                    self.close = Some(match message.as_close() {
                        Some((code, reason)) => {
                            format!("close code {} '{reason}'", u16::from(code))
                        }
                        None => "close without code".into(),
                    });
                    return Ok(None);
                }
                Some(Ok(_)) => {}
            }
        }
    }

    /// The STOMP version CONNECTED settled on (ACK and NACK name their
    /// message differently in 1.1 and 1.2).
    pub(crate) fn version(&self) -> Version {
        self.version
    }

    /// Why the server closed, as far as it said.
    pub(crate) fn close_reason(&self) -> &str {
        self.close.as_deref().unwrap_or("no close frame")
    }

    /// The next frame, which must be `command`; ERROR frames and closes
    /// become descriptive errors.
    pub(crate) async fn expect(&mut self, command: Command) -> Result<Frame, String> {
        match self.next_frame().await? {
            Some(frame) if frame.command == command => Ok(frame),
            Some(frame) => Err(unexpected(&frame, command.as_str())),
            None => Err(format!(
                "connection closed by server ({}) while waiting for {command}",
                self.close_reason()
            )),
        }
    }

    /// Waits for the RECEIPT of `id`, failing on anything else.
    pub(crate) async fn expect_receipt(&mut self, id: &str) -> Result<(), String> {
        let receipt = self.expect(Command::Receipt).await?;
        match receipt.headers.get(header::RECEIPT_ID) {
            Some(got) if got == id => Ok(()),
            got => Err(format!("expected RECEIPT {id}, got {got:?}")),
        }
    }

    /// Ends the session properly: DISCONNECT with a receipt, wait for the
    /// RECEIPT (the server has then let go of the session), then close.
    pub(crate) async fn disconnect(mut self, receipt: &str) -> Result<(), String> {
        let disconnect = Frame::new(Command::Disconnect).header(header::RECEIPT, receipt);
        self.send(&disconnect).await?;
        let confirmed = self.expect_receipt(receipt).await;
        self.close().await;
        confirmed
    }

    /// Sends a WebSocket close and gives the server a moment to answer;
    /// errors do not matter any more at this point.
    pub(crate) async fn close(mut self) {
        let _ = self.ws.close().await;
    }
}

/// What a bench subscriber needs of a frame.
#[derive(Debug)]
pub(crate) enum Delivery {
    /// A MESSAGE with its `seq` and `ts` headers, when present and numeric.
    Message { seq: Option<u64>, ts: Option<u64> },
    /// Any other frame.
    Other(Frame),
}

impl Delivery {
    fn from_frame(frame: Frame) -> Delivery {
        if frame.command == Command::Message {
            let number = |name: &str| frame.headers.get(name).and_then(|v| v.parse().ok());
            Delivery::Message {
                seq: number("seq"),
                ts: number("ts"),
            }
        } else {
            Delivery::Other(frame)
        }
    }
}

/// Reads `seq` and `ts` off `payload` when it is exactly one complete
/// MESSAGE frame with `\n` line endings; `None` sends it to the decoder.
fn scan_message(payload: &[u8]) -> Option<Delivery> {
    let mut rest = payload.strip_prefix(b"MESSAGE\n")?;
    let (mut seq, mut ts, mut content_length) = (None, None, None);
    loop {
        let eol = rest.iter().position(|&b| b == b'\n')?;
        let line = &rest[..eol];
        rest = &rest[eol + 1..];
        if line.is_empty() {
            break;
        }
        if line.ends_with(b"\r") {
            return None;
        }
        // The first of repeated headers counts, as in the decoder.
        if let Some(value) = line.strip_prefix(b"seq:") {
            seq = seq.or(Some(parse_decimal(value)));
        } else if let Some(value) = line.strip_prefix(b"ts:") {
            ts = ts.or(Some(parse_decimal(value)));
        } else if let Some(value) = line.strip_prefix(b"content-length:") {
            content_length = content_length.or(Some(parse_decimal(value)?));
        }
    }
    let body_len = match content_length {
        Some(n) => usize::try_from(n).ok()?,
        None => rest.iter().position(|&b| b == 0)?,
    };
    // Exactly the body and its NUL: no second frame, no heart-beat after it.
    if rest.len() != body_len.checked_add(1)? || rest[body_len] != 0 {
        return None;
    }
    Some(Delivery::Message {
        seq: seq.flatten(),
        ts: ts.flatten(),
    })
}

fn parse_decimal(digits: &[u8]) -> Option<u64> {
    if digits.is_empty() {
        return None;
    }
    digits.iter().try_fold(0u64, |n, &d| {
        if d.is_ascii_digit() {
            n.checked_mul(10)?.checked_add(u64::from(d - b'0'))
        } else {
            None
        }
    })
}

/// Describes a frame that should not have come; ERROR frames by their
/// `message` header, which is what servers put the reason in.
pub(crate) fn unexpected(frame: &Frame, wanted: &str) -> String {
    if frame.command == Command::Error {
        let message = frame
            .headers
            .get(header::MESSAGE)
            .unwrap_or("(no message header)");
        let body = String::from_utf8_lossy(&frame.body);
        let body = body.trim();
        if body.is_empty() || body == message {
            format!("server ERROR: {message}")
        } else {
            format!(
                "server ERROR: {message}: {}",
                body.chars().take(200).collect::<String>()
            )
        }
    } else {
        format!("expected {wanted}, got {}", frame.command)
    }
}

/// Connects (from `source`, when given), CONNECTs and SUBSCRIBEs to
/// `destination` with subscription id `0`, waiting for the SUBSCRIBE's
/// RECEIPT, all within `limit`.
pub(crate) async fn subscribed(
    endpoint: &Endpoint,
    source: Option<IpAddr>,
    heartbeat: Option<Duration>,
    destination: &str,
    receipt: &str,
    limit: Duration,
) -> Result<Conn, String> {
    subscribed_as(
        endpoint,
        source,
        heartbeat,
        destination,
        "0",
        receipt,
        limit,
    )
    .await
}

/// [`subscribed`] with subscription id `id`.
async fn subscribed_as(
    endpoint: &Endpoint,
    source: Option<IpAddr>,
    heartbeat: Option<Duration>,
    destination: &str,
    id: &str,
    receipt: &str,
    limit: Duration,
) -> Result<Conn, String> {
    let setup = async {
        let mut conn = endpoint.connect(source, heartbeat).await?;
        let subscribe = Frame::new(Command::Subscribe)
            .header(header::ID, id)
            .header(header::DESTINATION, destination)
            .header(header::ACK, "auto")
            .header(header::RECEIPT, receipt);
        conn.send(&subscribe).await?;
        conn.expect_receipt(receipt).await?;
        Ok::<Conn, String>(conn)
    };
    tokio::time::timeout(limit, setup)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "connect, CONNECT and SUBSCRIBE took longer than {} s",
                limit.as_secs()
            ))
        })
}

/// How [`connect_all`] opens its connections.
pub(crate) struct Fleet<'a> {
    pub(crate) count: usize,
    pub(crate) concurrency: usize,
    pub(crate) heartbeat: Option<Duration>,
    pub(crate) limit: Duration,
    pub(crate) deadline: tokio::time::Instant,
    /// What the connections are, for the error message ("subscribers").
    pub(crate) what: &'a str,
    /// Connection `i` subscribes with id `i` instead of `0`: the server
    /// then encodes each delivery's subscription header on its own, as
    /// with clients that number subscriptions across connections (stomp.js
    /// calls every connection's first one `sub-0`).
    pub(crate) distinct_ids: bool,
}

/// Opens `fleet.count` subscribed connections, a bounded number at a time;
/// connection `i` subscribes to `destination(i)`.
pub(crate) async fn connect_all(
    endpoint: &Arc<Endpoint>,
    fleet: Fleet<'_>,
    destination: impl Fn(usize) -> String,
) -> (Vec<Conn>, super::report::Errors) {
    let permits = Arc::new(tokio::sync::Semaphore::new(fleet.concurrency));
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..fleet.count {
        let endpoint = Arc::clone(endpoint);
        let permits = Arc::clone(&permits);
        let destination = destination(i);
        let (heartbeat, limit) = (fleet.heartbeat, fleet.limit);
        let id = if fleet.distinct_ids {
            i.to_string()
        } else {
            "0".to_owned()
        };
        tasks.spawn(async move {
            let _permit = permits.acquire_owned().await.map_err(|e| e.to_string())?;
            subscribed_as(
                &endpoint,
                None,
                heartbeat,
                &destination,
                &id,
                &format!("sub-{i}"),
                limit,
            )
            .await
        });
    }
    let mut conns = Vec::with_capacity(fleet.count);
    let mut errors = super::report::Errors::default();
    let collected = tokio::time::timeout_at(fleet.deadline, async {
        while let Some(joined) = tasks.join_next().await {
            match joined {
                Ok(Ok(conn)) => conns.push(conn),
                Ok(Err(e)) => errors.add(e),
                Err(e) => errors.add(format!("setup task failed: {e}")),
            }
        }
    })
    .await;
    if collected.is_err() {
        errors.add(format!(
            "deadline passed with {} {} still connecting",
            tasks.len(),
            fleet.what
        ));
    }
    (conns, errors)
}

/// Closes every connection, in parallel, within a bound.
pub(crate) async fn close_all(conns: Vec<Conn>) {
    let mut closing = tokio::task::JoinSet::new();
    for conn in conns {
        closing.spawn(conn.close());
    }
    let _ = tokio::time::timeout(Duration::from_secs(5), closing.join_all()).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scan(bytes: &[u8]) -> Option<(Option<u64>, Option<u64>)> {
        match scan_message(bytes)? {
            Delivery::Message { seq, ts } => Some((seq, ts)),
            Delivery::Other(_) => None,
        }
    }

    #[test]
    fn scans_one_whole_message() {
        let frame =
            b"MESSAGE\ndestination:/topic/a\nseq:7\nts:123\nseq:9\ncontent-length:3\n\nx\0y\0";
        assert_eq!(scan(frame), Some((Some(7), Some(123))));
        assert_eq!(scan(b"MESSAGE\nseq:1\n\nabc\0"), Some((Some(1), None)));
        assert_eq!(scan(b"MESSAGE\nseq:x1\nts:5\n\n\0"), Some((None, Some(5))));
    }

    #[test]
    fn leaves_the_rest_to_the_decoder() {
        // Partial, two frames, trailing heart-beat, CRLF, other commands.
        assert!(scan(b"MESSAGE\nseq:1\n\nab").is_none());
        assert!(scan(b"MESSAGE\nseq:1\n\na\0MESSAGE\nseq:2\n\nb\0").is_none());
        assert!(scan(b"MESSAGE\nseq:1\n\na\0\n").is_none());
        assert!(scan(b"MESSAGE\r\nseq:1\r\n\r\na\0").is_none());
        assert!(scan(b"MESSAGE\ncontent-length:5\n\na\0").is_none());
        assert!(scan(b"RECEIPT\nreceipt-id:1\n\n\0").is_none());
    }
}
