//! A small STOMP client over WebSocket or TCP, for tools and tests: the CLI's
//! `send`, `subscribe` and `bench` use it, and so can applications that want
//! to talk to a stompbox (or any STOMP) server.

use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use std::io;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;
use stompbox_codec::{Command, Decoded, Decoder, Frame, Limits, Version, encode_frame, header};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_websockets::{MaybeTlsStream, Message, WebSocketStream};

/// What went wrong in the client.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The connection failed.
    #[error("connection error: {0}")]
    Io(#[from] io::Error),
    /// The WebSocket layer failed.
    #[error("websocket error: {0}")]
    WebSocket(#[from] tokio_websockets::Error),
    /// The server sent bytes that are not STOMP.
    #[error("invalid frame from server: {0}")]
    Decode(#[from] stompbox_codec::DecodeError),
    /// The server answered with an ERROR frame.
    #[error("server error: {0}")]
    Server(String),
    /// The server closed the connection.
    #[error("connection closed by server")]
    Closed,
    /// The URL is not `ws[s]://host:port/path` or `tcp|tls://host:port`.
    #[error(
        "invalid URL '{0}': use ws://host:port/path, wss://host:port/path, tcp://host:port or tls://host:port"
    )]
    InvalidUrl(String),
    /// TLS could not be set up (a CA file that cannot be used).
    #[error("TLS: {0}")]
    Tls(String),
}

/// How to open a connection, beyond its URL.
#[derive(Debug, Clone, Default)]
#[non_exhaustive]
pub struct ClientOptions {
    /// WebSocket subprotocols to offer, e.g. `v12.stomp`.
    pub subprotocols: Vec<String>,
    /// Extra WebSocket handshake headers (`Origin`, `Cookie`,
    /// `Authorization`); ignored for TCP.
    pub headers: Vec<(String, String)>,
    /// PEM file of CA certificates for `wss://` and `tls://`; default: the
    /// Mozilla root store.
    pub ca_file: Option<PathBuf>,
}

impl ClientOptions {
    /// Options offering the STOMP subprotocols, 1.2 first.
    pub fn stomp() -> ClientOptions {
        ClientOptions {
            subprotocols: ["v12.stomp", "v11.stomp", "v10.stomp"]
                .into_iter()
                .map(String::from)
                .collect(),
            ..ClientOptions::default()
        }
    }

    /// Adds a handshake header.
    #[must_use]
    pub fn header(mut self, name: &str, value: &str) -> ClientOptions {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Trusts the CA certificates in `path` for TLS.
    #[must_use]
    pub fn ca_file(mut self, path: impl Into<PathBuf>) -> ClientOptions {
        self.ca_file = Some(path.into());
        self
    }
}

enum Link {
    Ws(Box<WebSocketStream<MaybeTlsStream<TcpStream>>>),
    Tcp(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

fn tls_connector(ca_file: Option<&PathBuf>) -> Result<tokio_rustls::TlsConnector, ClientError> {
    use tokio_rustls::rustls;
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| ClientError::Tls(format!("cannot read {}: {e}", path.display())))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
                roots
                    .add(cert)
                    .map_err(|e| ClientError::Tls(format!("{}: {e}", path.display())))?;
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Tls(e.to_string()))?
        .with_root_certificates(roots)
        .with_no_client_auth();
    Ok(tokio_rustls::TlsConnector::from(Arc::new(config)))
}

/// A raw STOMP connection: frames in, frames out, nothing implicit. For
/// tests, tools and services talking to a STOMP server (stompbox or
/// another) over `ws://`, `wss://`, `tcp://` or `tls://`.
///
/// ```
/// use stompbox::client::Client;
/// use stompbox::codec::{Command, Frame, header};
/// # use stompbox::{Server, ServerConfig};
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let mut config = ServerConfig::default();
/// # config.http_addr = "127.0.0.1:0".parse()?;
/// # let server = Server::bind(config).await?;
/// # let url = format!("ws://{}/ws", server.http_addr()?);
/// # let handle = server.spawn();
/// let (mut client, _connected) = Client::connect(&url, &[]).await?;
/// let subscribe = Frame::new(Command::Subscribe)
///     .header(header::ID, "0")
///     .header(header::DESTINATION, "/topic/news");
/// client.send_with_receipt(subscribe, "subscribed").await?;
/// let send = Frame::new(Command::Send)
///     .header(header::DESTINATION, "/topic/news")
///     .body("hello");
/// client.send(&send).await?;
/// let message = client.expect(Command::Message).await?;
/// assert_eq!(&message.body[..], b"hello");
/// # handle.shutdown().await?;
/// # Ok(()) }
/// ```
pub struct Client {
    link: Link,
    decoder: Decoder,
    buf: BytesMut,
    version: Version,
    subprotocol: Option<String>,
    close: Option<(u16, String)>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("version", &self.version)
            .finish_non_exhaustive()
    }
}

impl Client {
    /// Opens a transport without sending CONNECT. `url` is `ws://…`,
    /// `wss://…`, `tcp://host:port` or `tls://host:port`; WebSocket
    /// connections offer `subprotocols`.
    ///
    /// # Errors
    ///
    /// When the connection or the WebSocket handshake fails.
    pub async fn open(url: &str, subprotocols: &[&str]) -> Result<Client, ClientError> {
        let options = ClientOptions {
            subprotocols: subprotocols.iter().map(|s| (*s).to_owned()).collect(),
            ..ClientOptions::default()
        };
        Client::open_with(url, &options).await
    }

    /// Opens a transport with `options` (handshake headers, a CA file),
    /// without sending CONNECT.
    ///
    /// # Errors
    ///
    /// When the connection, the TLS or the WebSocket handshake fails.
    pub async fn open_with(url: &str, options: &ClientOptions) -> Result<Client, ClientError> {
        let invalid = || ClientError::InvalidUrl(url.into());
        let (link, subprotocol) = if let Some(addr) = url.strip_prefix("tcp://") {
            let stream = TcpStream::connect(addr.trim_end_matches('/')).await?;
            stream.set_nodelay(true)?;
            (Link::Tcp(stream), None)
        } else if let Some(addr) = url.strip_prefix("tls://") {
            let addr = addr.trim_end_matches('/');
            let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
            let name =
                rustls_pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
                    .map_err(|_| invalid())?;
            let stream = TcpStream::connect(addr).await?;
            stream.set_nodelay(true)?;
            let tls = tls_connector(options.ca_file.as_ref())?
                .connect(name, stream)
                .await?;
            (Link::Tls(Box::new(tls)), None)
        } else if url.starts_with("ws://") || url.starts_with("wss://") {
            let uri: http::Uri = url.parse().map_err(|_| invalid())?;
            let connector = if url.starts_with("wss://") {
                tokio_websockets::Connector::Rustls(tls_connector(options.ca_file.as_ref())?)
            } else {
                tokio_websockets::Connector::Plain
            };
            let mut builder = tokio_websockets::ClientBuilder::from_uri(uri).connector(&connector);
            if !options.subprotocols.is_empty() {
                let offered = http::HeaderValue::from_str(&options.subprotocols.join(", "))
                    .map_err(|_| invalid())?;
                builder = builder.add_header(http::header::SEC_WEBSOCKET_PROTOCOL, offered)?;
            }
            for (name, value) in &options.headers {
                let name = http::HeaderName::from_bytes(name.as_bytes()).map_err(|_| invalid())?;
                let value = http::HeaderValue::from_str(value).map_err(|_| invalid())?;
                builder = builder.add_header(name, value)?;
            }
            let (ws, response) = builder.connect().await?;
            let subprotocol = response
                .headers()
                .get(http::header::SEC_WEBSOCKET_PROTOCOL)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned);
            (Link::Ws(Box::new(ws)), subprotocol)
        } else {
            return Err(invalid());
        };
        Ok(Client {
            link,
            decoder: Decoder::new(client_limits()),
            buf: BytesMut::new(),
            version: Version::V1_2,
            subprotocol,
            close: None,
        })
    }

    /// Opens `url` and completes CONNECT/CONNECTED (STOMP 1.2 preferred,
    /// heart-beats off and `host:localhost` unless `extra` sets them).
    ///
    /// # Errors
    ///
    /// When the connection fails or the server answers with ERROR.
    pub async fn connect(
        url: &str,
        extra: &[(&str, &str)],
    ) -> Result<(Client, Frame), ClientError> {
        Client::connect_with(url, &ClientOptions::stomp(), extra).await
    }

    /// As [`Client::connect`], opening the connection with `options`.
    ///
    /// # Errors
    ///
    /// When the connection fails or the server answers with ERROR.
    pub async fn connect_with(
        url: &str,
        options: &ClientOptions,
        extra: &[(&str, &str)],
    ) -> Result<(Client, Frame), ClientError> {
        let mut client = Client::open_with(url, options).await?;
        let mut connect =
            Frame::new(Command::Connect).header(header::ACCEPT_VERSION, "1.0,1.1,1.2");
        // The first of repeated headers wins, so a default must not precede
        // the caller's (RabbitMQ reads `host` as the virtual host).
        if !extra.iter().any(|(name, _)| *name == header::HOST) {
            connect = connect.header(header::HOST, "localhost");
        }
        if !extra.iter().any(|(name, _)| *name == header::HEART_BEAT) {
            connect = connect.header(header::HEART_BEAT, "0,0");
        }
        for (name, value) in extra {
            connect = connect.header(name, value);
        }
        client.send(&connect).await?;
        let connected = client.expect(Command::Connected).await?;
        if let Some(version) = connected
            .headers
            .get(header::VERSION)
            .and_then(Version::parse)
        {
            client.set_version(version);
        }
        Ok((client, connected))
    }

    /// The subprotocol the server chose, for WebSocket links.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The WebSocket close code and reason the server sent, once closed.
    pub fn close_reason(&self) -> Option<(u16, &str)> {
        self.close
            .as_ref()
            .map(|(code, reason)| (*code, reason.as_str()))
    }

    /// Sets the version frames are encoded and decoded as.
    pub fn set_version(&mut self, version: Version) {
        self.version = version;
        self.decoder.set_version(version);
    }

    /// Sends one frame.
    ///
    /// # Errors
    ///
    /// When the write fails.
    pub async fn send(&mut self, frame: &Frame) -> Result<(), ClientError> {
        let mut out = BytesMut::new();
        encode_frame(frame, self.version, &mut out);
        self.send_raw(out.freeze()).await
    }

    /// Sends raw bytes (one WebSocket message), for testing bad input.
    ///
    /// # Errors
    ///
    /// When the write fails.
    pub async fn send_raw(&mut self, bytes: Bytes) -> Result<(), ClientError> {
        match &mut self.link {
            Link::Ws(ws) => {
                let message = match std::str::from_utf8(&bytes) {
                    Ok(_) => Message::text(bytes),
                    Err(_) => Message::binary(bytes),
                };
                ws.send(message).await?;
            }
            Link::Tcp(stream) => stream.write_all(&bytes).await?,
            Link::Tls(stream) => {
                stream.write_all(&bytes).await?;
                stream.flush().await?;
            }
        }
        Ok(())
    }

    /// The next frame, skipping heart-beats; `None` when the server closed.
    ///
    /// # Errors
    ///
    /// When the read fails or the bytes are not STOMP.
    pub async fn next_frame(&mut self) -> Result<Option<Frame>, ClientError> {
        loop {
            while let Some(item) = self.decoder.decode(&mut self.buf)? {
                if let Decoded::Frame(frame) = item {
                    return Ok(Some(frame));
                }
            }
            match &mut self.link {
                Link::Ws(ws) => match ws.next().await {
                    None => return Ok(None),
                    Some(Err(e)) => return Err(e.into()),
                    Some(Ok(m)) if m.is_close() => {
                        self.close = m
                            .as_close()
                            .map(|(code, reason)| (u16::from(code), reason.to_owned()));
                        return Ok(None);
                    }
                    Some(Ok(m)) if m.is_text() || m.is_binary() => {
                        self.buf.extend_from_slice(&Bytes::from(m.into_payload()));
                    }
                    Some(Ok(_)) => {}
                },
                Link::Tcp(stream) => {
                    self.buf.reserve(16 * 1024);
                    if stream.read_buf(&mut self.buf).await? == 0 {
                        return Ok(None);
                    }
                }
                Link::Tls(stream) => {
                    self.buf.reserve(16 * 1024);
                    match stream.read_buf(&mut self.buf).await {
                        Ok(0) => return Ok(None),
                        Ok(_) => {}
                        // A peer that closes without close_notify has still
                        // closed; what it sent before is what counts.
                        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
                        Err(e) => return Err(e.into()),
                    }
                }
            }
        }
    }

    /// The next frame, which must have `command`; an ERROR becomes
    /// [`ClientError::Server`].
    ///
    /// # Errors
    ///
    /// When the connection closes, or another frame arrives.
    pub async fn expect(&mut self, command: Command) -> Result<Frame, ClientError> {
        match self.next_frame().await? {
            Some(frame) if frame.command == command => Ok(frame),
            Some(frame) if frame.command == Command::Error => Err(ClientError::Server(
                frame
                    .headers
                    .get(header::MESSAGE)
                    .unwrap_or_default()
                    .to_owned(),
            )),
            Some(frame) => Err(ClientError::Server(format!(
                "expected {command}, got {}",
                frame.command
            ))),
            None => Err(ClientError::Closed),
        }
    }

    /// Like [`Client::next_frame`] with a time limit; `Ok(None)` on close.
    ///
    /// # Errors
    ///
    /// As [`Client::next_frame`], and `TimedOut` when nothing came.
    pub async fn next_frame_within(
        &mut self,
        limit: Duration,
    ) -> Result<Option<Frame>, ClientError> {
        match tokio::time::timeout(limit, self.next_frame()).await {
            Ok(result) => result,
            Err(_) => Err(ClientError::Io(io::ErrorKind::TimedOut.into())),
        }
    }

    /// Sends a frame with a `receipt` header and waits for its RECEIPT.
    ///
    /// # Errors
    ///
    /// When the server answers with anything else.
    pub async fn send_with_receipt(
        &mut self,
        frame: Frame,
        receipt: &str,
    ) -> Result<(), ClientError> {
        self.send(&frame.header(header::RECEIPT, receipt)).await?;
        let reply = self.expect(Command::Receipt).await?;
        if reply.headers.get(header::RECEIPT_ID) == Some(receipt) {
            Ok(())
        } else {
            Err(ClientError::Server(format!(
                "expected RECEIPT for {receipt}, got {:?}",
                reply.headers.get(header::RECEIPT_ID)
            )))
        }
    }
}

/// Servers may send larger frames than we accept from clients; the client
/// side is generous but still bounded.
fn client_limits() -> Limits {
    Limits {
        max_frame_bytes: 16 * 1024 * 1024,
        ..Limits::default()
    }
}
