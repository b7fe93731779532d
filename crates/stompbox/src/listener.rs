//! The accept loops: HTTP (pages, the WebSocket endpoint, the publish API)
//! and plain STOMP over TCP, each optionally over TLS. A connection is
//! counted against its address before anything is read from it, and a TLS
//! handshake or an HTTP request head that does not arrive in time closes it.

use crate::auth::Handshake;
use crate::connection;
use crate::server::ServerShared;
use crate::transport::Transport;
use crate::upgrade::ConnectionInfo;
use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

/// Binds with a listen queue long enough for a burst of connections (the
/// default 128 drops SYNs when hundreds of clients reconnect at once).
pub(crate) fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Accepts the next connection; on failure (usually out of file
/// descriptors) backs off instead of spinning.
async fn accept(listener: &TcpListener) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                // Frames are written as soon as they are ready; Nagle's
                // algorithm would hold small ones back for up to ~40 ms.
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Says why a connection is refused, within a short bound, then closes it.
async fn refuse(mut stream: TcpStream, message: Vec<u8>) {
    let _ = tokio::time::timeout(Duration::from_secs(1), stream.write_all(&message)).await;
}

fn http_refusal(status: &str, text: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{text}\n",
        text.len() + 1
    )
    .into_bytes()
}

fn stomp_refusal(text: &str) -> Vec<u8> {
    format!("ERROR\nmessage:{text}\ncontent-type:text/plain\n\n{text}\n\0").into_bytes()
}

/// The server side of a TLS handshake, bounded like the CONNECT frame: a
/// client that opens a socket and says nothing cannot hold it longer.
async fn tls_handshake(
    acceptor: &tokio_rustls::TlsAcceptor,
    stream: TcpStream,
    shared: &ServerShared,
    peer: SocketAddr,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(shared.config.connect_timeout, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => Some(tls),
        Ok(Err(e)) => {
            tracing::debug!(%peer, error = %e, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// A connection's byte stream, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// Serves HTTP on `listener` until `stop` turns true; then lets each
/// connection finish its request in progress (WebSocket sessions, by then
/// their own tasks, close on the same signal).
pub(crate) async fn serve_http(
    listener: TcpListener,
    shared: Arc<ServerShared>,
    router: Router,
    mut stop: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener) => accepted,
            () = stopped(&mut stop) => break,
        };
        // Reap finished connection tasks so the set stays small.
        while connections.try_join_next().is_some() {}
        let trusted = shared
            .config
            .trusted_proxies
            .iter()
            .any(|net| net.contains(peer.ip()));
        let address_permit = if trusted {
            None
        } else {
            match shared.addresses.admit(peer.ip()) {
                Ok(permit) => permit.map(Arc::new),
                Err(e) => {
                    tracing::warn!(%peer, limit = e.limit, "connection refused: too many connections from one address");
                    let text =
                        format!("too many connections from your address (limit {})", e.limit);
                    tokio::spawn(refuse(stream, http_refusal("429 Too Many Requests", &text)));
                    continue;
                }
            }
        };
        let shared = Arc::clone(&shared);
        let router = router.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let tls = shared.tls.as_ref().map(|t| t.http.clone());
            let io: Box<dyn Io> = match tls {
                None => Box::new(stream),
                Some(acceptor) => match tls_handshake(&acceptor, stream, &shared, peer).await {
                    Some(tls) => Box::new(tls),
                    None => return,
                },
            };
            let info = ConnectionInfo {
                tls: shared.tls.is_some(),
                address_permit,
            };
            serve_connection(io, peer, info, router, &shared, stop).await;
        });
    }
    // Requests in progress get the shutdown timeout to finish.
    let _ = tokio::time::timeout(shared.config.shutdown_timeout, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

async fn serve_connection(
    io: Box<dyn Io>,
    peer: SocketAddr,
    info: ConnectionInfo,
    router: Router,
    shared: &ServerShared,
    mut stop: watch::Receiver<bool>,
) {
    let service = TowerToHyperService::new(router);
    let service = hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
        request.extensions_mut().insert(ConnectInfo(peer));
        request.extensions_mut().insert(info.clone());
        hyper::service::Service::call(&service, request)
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        // A request head must arrive in time, so a socket that connects and
        // says nothing (or dribbles) does not hold a descriptor for ever.
        .header_read_timeout(shared.config.connect_timeout)
        // hyper holds a request head in one buffer of at most this; it
        // cannot go below its own minimum.
        .max_buf_size(shared.config.max_request_head_bytes.max(8 * 1024))
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    tokio::select! {
        result = connection.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%peer, error = %e, "HTTP connection failed");
            }
        }
        () = stopped(&mut stop) => {
            connection.as_mut().graceful_shutdown();
            let _ = connection.await;
        }
    }
}

/// Accepts plain STOMP over TCP (or TLS) until the task is aborted.
pub(crate) async fn accept_tcp(listener: TcpListener, shared: Arc<ServerShared>) {
    loop {
        let (stream, peer) = accept(&listener).await;
        let address_permit = match shared.addresses.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(e) => {
                tracing::warn!(%peer, limit = e.limit, "connection refused: too many connections from one address");
                let text = format!("too many connections from your address (limit {})", e.limit);
                tokio::spawn(refuse(stream, stomp_refusal(&text)));
                continue;
            }
        };
        let Some(permit) = shared.try_admit() else {
            tracing::warn!(%peer, "connection refused: connection limit reached");
            tokio::spawn(refuse(
                stream,
                stomp_refusal("server at its connection limit; try again later"),
            ));
            continue;
        };
        let shared = Arc::clone(&shared);
        tokio::spawn(async move {
            let transport = match shared.tls.as_ref().map(|t| t.tcp.clone()) {
                None => Transport::Tcp(stream),
                Some(acceptor) => match tls_handshake(&acceptor, stream, &shared, peer).await {
                    Some(tls) => Transport::TlsServer(Box::new(tls)),
                    None => return,
                },
            };
            let handshake = Handshake::tcp(peer, shared.tls.is_some());
            connection::run(transport, shared, None, handshake).await;
            drop(permit);
            drop(address_permit);
        });
    }
}
