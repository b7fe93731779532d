//! The two byte transports a session runs over: STOMP inside WebSocket
//! messages, and plain STOMP over TCP. Both hand the session bytes to decode
//! and take batches of encoded frames to write.

use crate::outbox::OutFrame;
use crate::scratch::{discard, read_appending};
use crate::websocket::{CloseCode, Received, WebSocket};
use bytes::BytesMut;
use std::collections::VecDeque;
use std::io::{self, IoSlice};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
/// Most bytes one read from a TCP stream takes. Everything read is decoded
/// and handled before the reader looks again at whether it should wait:
/// the relay's reading from a broker, which stops while its client's outbox
/// is congested, would otherwise push a whole large read into it at once.
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
    WebSocket(Box<WebSocket>),
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
    let n = read_appending(stream, buf, TCP_READ_CHUNK).await?;
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
    let mut drained = 0;
    while drained < 1024 * 1024 {
        match discard(stream).await {
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
            Transport::WebSocket(ws) => Ok(match ws.read().await? {
                Received::Message(payload) => {
                    if buf.is_empty() {
                        // Usually one message is one whole frame: decode
                        // it in place instead of copying it.
                        *buf = payload;
                    } else {
                        buf.extend_from_slice(&payload);
                    }
                    Read::Data
                }
                Received::Closed => Read::Closed,
                Received::TooLarge => Read::TooLarge,
                Received::Violation(why) => Read::Violation(why),
            }),
            Transport::Tcp(stream) => read_stream(stream, buf).await,
            Transport::Tls(stream) => read_stream(stream.as_mut(), buf).await,
            Transport::TlsServer(stream) => read_stream(stream.as_mut(), buf).await,
        }
    }

    /// Writes every frame in `frames`, leaving it empty. Many frames go out
    /// in few system calls.
    pub(crate) async fn write_batch(&mut self, frames: &mut VecDeque<OutFrame>) -> io::Result<()> {
        match self {
            Transport::WebSocket(ws) => ws.write_batch(frames).await,
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
            Transport::WebSocket(ws) => ws.close(code, reason).await,
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
            ws.set_message_limit(bytes);
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
