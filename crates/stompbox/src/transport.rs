//! The two byte transports a session runs over: STOMP inside WebSocket
//! messages, and plain STOMP over TCP. Both hand the session bytes to decode
//! and take batches of encoded frames to write.

use crate::outbox::OutFrame;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use hyper::upgrade::Upgraded;
use hyper_util::rt::TokioIo;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_websockets::{CloseCode, Message, WebSocketStream};

/// The WebSocket stream of an upgraded HTTP connection.
pub(crate) type WsStream = WebSocketStream<TokioIo<Upgraded>>;

/// Reading more than this from a TCP socket at once gains nothing; reading
/// less keeps the buffer of an idle connection small.
const TCP_READ_CHUNK: usize = 4096;

/// What a read produced.
#[derive(Debug)]
pub(crate) enum Read {
    /// Bytes were appended to the buffer.
    Data,
    /// The peer closed the connection.
    Closed,
    /// A WebSocket message was larger than allowed.
    TooLarge,
    /// The peer broke the WebSocket protocol (bad UTF-8 in a text message,
    /// RSV bits, an unmasked frame, an unknown opcode, a bad close code).
    /// The WebSocket layer has queued the Close frame that says so (1002 or
    /// 1007); [`Transport::close`] sends it.
    Violation(String),
}

#[derive(Debug)]
pub(crate) enum Transport {
    WebSocket(Box<WsStream>),
    Tcp(TcpStream),
    /// TLS to an upstream broker (the relay's client side).
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    /// STOMP over TLS from a client (the server's TCP listener with TLS).
    TlsServer(Box<tokio_rustls::server::TlsStream<TcpStream>>),
}

async fn read_stream(
    stream: &mut (impl AsyncRead + Unpin),
    buf: &mut BytesMut,
) -> io::Result<Read> {
    if buf.capacity() - buf.len() < TCP_READ_CHUNK {
        buf.reserve(TCP_READ_CHUNK);
    }
    let n = stream.read_buf(buf).await?;
    Ok(if n == 0 { Read::Closed } else { Read::Data })
}

/// Frames gathered into one vectored write: two slices each (a delivery's
/// own head, then the tail it shares), well under any system's IOV_MAX.
const FRAMES_PER_WRITE: usize = 64;

async fn write_stream(
    stream: &mut (impl AsyncWrite + Unpin),
    frames: &mut VecDeque<OutFrame>,
) -> io::Result<()> {
    loop {
        // A frame with nothing (left) to write would make an empty write,
        // which reads as the peer taking nothing.
        while frames.front().is_some_and(|f| f.len() == 0) {
            frames.pop_front();
        }
        if frames.is_empty() {
            break;
        }
        // Few frames (each delivery on its own, at low rates) need few
        // slices, and filling a large array of them would cost more than
        // the frames themselves.
        let mut written = if frames.len() <= 4 {
            write_some::<8>(stream, frames).await?
        } else {
            write_some::<{ 2 * FRAMES_PER_WRITE }>(stream, frames).await?
        };
        if written == 0 {
            return Err(io::ErrorKind::WriteZero.into());
        }
        while written > 0 {
            let Some(front) = frames.front_mut() else {
                break;
            };
            let len = front.len();
            if written >= len {
                written -= len;
                frames.pop_front();
            } else {
                front.advance(written);
                written = 0;
            }
        }
    }
    stream.flush().await
}

/// One vectored write of the first `N / 2` frames' chunks. The slices are
/// built on the stack inside each poll, so a write allocates nothing and
/// they are no part of the connection task's state across awaits (which
/// every connection, idle or not, holds in memory).
async fn write_some<const N: usize>(
    stream: &mut (impl AsyncWrite + Unpin),
    frames: &VecDeque<OutFrame>,
) -> io::Result<usize> {
    std::future::poll_fn(|cx| {
        let mut slices = [IoSlice::new(&[]); N];
        let mut count = 0;
        for chunk in frames
            .iter()
            .take(N / 2)
            .flat_map(OutFrame::chunks)
            .filter(|chunk| !chunk.is_empty())
        {
            slices[count] = IoSlice::new(chunk);
            count += 1;
        }
        std::pin::Pin::new(&mut *stream).poll_write_vectored(cx, &slices[..count])
    })
    .await
}

/// Closing a socket with unread input makes the kernel send a reset, which
/// can destroy the ERROR frame just written before the peer reads it. So
/// read until the peer closes (the caller bounds the time; this bounds the
/// bytes).
async fn linger(stream: &mut (impl AsyncRead + AsyncWrite + Unpin)) {
    let _ = stream.shutdown().await;
    let mut sink = [0u8; 4096];
    let mut drained = 0;
    while drained < 1024 * 1024 {
        match stream.read(&mut sink).await {
            Ok(0) | Err(_) => break,
            Ok(n) => drained += n,
        }
    }
}

impl Transport {
    /// Reads the next chunk of STOMP bytes into `buf`. Cancel-safe: nothing
    /// is held in locals across the await.
    pub(crate) async fn read(&mut self, buf: &mut BytesMut) -> io::Result<Read> {
        match self {
            Transport::WebSocket(ws) => loop {
                match ws.next().await {
                    None => return Ok(Read::Closed),
                    Some(Err(tokio_websockets::Error::PayloadTooLong { .. })) => {
                        return Ok(Read::TooLarge);
                    }
                    Some(Err(tokio_websockets::Error::Protocol(e))) => {
                        return Ok(Read::Violation(e.to_string()));
                    }
                    Some(Err(e)) => return Err(io::Error::other(e)),
                    Some(Ok(message)) if message.is_text() || message.is_binary() => {
                        let payload = Bytes::from(message.into_payload());
                        if buf.is_empty() {
                            // Usually one message is one whole frame: decode
                            // it in place instead of copying it.
                            *buf = payload
                                .try_into_mut()
                                .unwrap_or_else(|shared| BytesMut::from(&shared[..]));
                        } else {
                            buf.extend_from_slice(&payload);
                        }
                        return Ok(Read::Data);
                    }
                    // The WebSocket layer has queued the echo of this
                    // Close with the client's code; `close` sends it.
                    Some(Ok(message)) if message.is_close() => return Ok(Read::Closed),
                    // Pings are answered by the WebSocket layer itself.
                    Some(Ok(_)) => {}
                }
            },
            Transport::Tcp(stream) => read_stream(stream, buf).await,
            Transport::Tls(stream) => read_stream(stream.as_mut(), buf).await,
            Transport::TlsServer(stream) => read_stream(stream.as_mut(), buf).await,
        }
    }

    /// Writes every frame in `frames`, leaving it empty. Many frames go out
    /// in few system calls.
    pub(crate) async fn write_batch(&mut self, frames: &mut VecDeque<OutFrame>) -> io::Result<()> {
        match self {
            Transport::WebSocket(ws) => {
                while let Some(frame) = frames.pop_front() {
                    // One buffer per message for this WebSocket layer: a
                    // delivery's head and shared tail are joined (a copy).
                    let bytes = frame.to_bytes();
                    let message = if frame.text {
                        Message::text(bytes)
                    } else {
                        Message::binary(bytes)
                    };
                    ws.feed(message).await.map_err(io::Error::other)?;
                }
                ws.flush().await.map_err(io::Error::other)
            }
            Transport::Tcp(stream) => write_stream(stream, frames).await,
            Transport::Tls(stream) => write_stream(stream.as_mut(), frames).await,
            Transport::TlsServer(stream) => write_stream(stream.as_mut(), frames).await,
        }
    }

    /// Closes the connection; for WebSocket with a close frame of `code`,
    /// unless the WebSocket layer has queued its own (the echo of the
    /// client's Close, or after a protocol violation or a message too
    /// large), which is then the one sent.
    pub(crate) async fn close(&mut self, code: CloseCode, reason: &str) {
        match self {
            Transport::WebSocket(ws) => {
                // Refused (AlreadyClosed) when a close frame is queued.
                let _ = ws.send(Message::close(Some(code), reason)).await;
                let _ = ws.close().await;
            }
            Transport::Tcp(stream) => linger(stream).await,
            Transport::Tls(stream) => linger(stream.as_mut()).await,
            Transport::TlsServer(stream) => linger(stream.as_mut()).await,
        }
    }

    /// Sets the largest WebSocket message the WebSocket layer reads before
    /// refusing it (close code 1009); nothing for the other transports,
    /// whose frames the decoder bounds as they arrive.
    pub(crate) fn set_message_limit(&mut self, bytes: usize) {
        if let Transport::WebSocket(ws) = self {
            ws.limits_mut().set_max_payload_len(Some(bytes));
        }
    }

    pub(crate) fn kind(&self) -> &'static str {
        match self {
            Transport::WebSocket(_) => "websocket",
            Transport::Tcp(_) => "tcp",
            Transport::Tls(_) | Transport::TlsServer(_) => "tls",
        }
    }
}
