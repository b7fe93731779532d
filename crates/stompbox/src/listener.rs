//! The accept loops: HTTP (pages, the WebSocket endpoint, the publish API)
//! and plain STOMP over TCP, each optionally over TLS. A connection is
//! counted against its address and the server's connection budget before
//! anything is read from it, and a TLS handshake or an HTTP request head
//! that does not arrive in time, or a kept-alive HTTP connection left idle,
//! closes it.

use crate::admission::AddressPermit;
use crate::auth::Handshake;
use crate::connection;
use crate::shared::ServerShared;
use crate::transport::Transport;
use crate::upgrade::ConnectionInfo;
use crate::websocket::Io;
use axum::Router;
use axum::extract::ConnectInfo;
use futures_util::FutureExt;
use futures_util::future::OptionFuture;
use hyper::body::Incoming;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use std::collections::VecDeque;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

/// Which listener a bind is for, so an error can say which of up to three
/// addresses failed and which setting moves it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ListenerName {
    /// "HTTP", "TCP", "metrics".
    pub(crate) what: &'static str,
    /// The `ServerConfig` field that sets its address.
    pub(crate) setting: &'static str,
}

/// Binds with a listen queue long enough for a burst of connections (the
/// default 128 drops SYNs when hundreds of clients reconnect at once). An
/// error keeps its kind and names the listener and address: a bare "Address
/// already in use" does not say which of the listeners collided.
pub(crate) fn listen(name: ListenerName, addr: SocketAddr) -> io::Result<TcpListener> {
    let bind = || {
        let socket = if addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        socket.set_reuseaddr(true)?;
        socket.bind(addr)?;
        socket.listen(4096)
    };
    bind().map_err(|e| {
        let ListenerName { what, setting } = name;
        let message = match e.kind() {
            io::ErrorKind::AddrInUse => format!(
                "{what} listener {addr}: address already in use; is another stompbox (or \
                 another server) running there? Choose another address with `{setting}`"
            ),
            io::ErrorKind::AddrNotAvailable => format!(
                "{what} listener {addr}: address not available on this machine; \
                 choose one of its own addresses with `{setting}`"
            ),
            io::ErrorKind::PermissionDenied => format!(
                "{what} listener {addr}: permission denied (ports below 1024 need \
                 privileges); choose another address with `{setting}`"
            ),
            _ => format!("{what} listener {addr}: {e}"),
        };
        io::Error::new(e.kind(), message)
    })
}

/// Events of one kind (failed accepts, refusals of one reason) are logged
/// at most once per this, with how many there were: a flood at a limit
/// must not become a flood of log lines.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Events of one kind since the last log line about them.
#[derive(Debug, Default)]
struct SparseLog {
    unlogged: u64,
    last_logged: Option<Instant>,
}

impl SparseLog {
    /// Counts an event; `Some(n)` when a line is due now, for the `n`
    /// events since the last one.
    fn count(&mut self) -> Option<u64> {
        self.unlogged += 1;
        let now = Instant::now();
        if self
            .last_logged
            .is_some_and(|at| now.duration_since(at) < LOG_EVERY)
        {
            return None;
        }
        self.last_logged = Some(now);
        Some(std::mem::take(&mut self.unlogged))
    }
}

/// The state of an accept loop that keeps failing.
#[derive(Debug, Default)]
struct AcceptBackoff {
    /// The wait before the next attempt; zero after a success.
    delay: Duration,
    log: SparseLog,
}

/// First and longest wait after a failed accept.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(10), Duration::from_secs(1));

impl AcceptBackoff {
    /// Waits after a failure, longer after each one in a row, and logs it
    /// unless a line was written recently (which then counts it).
    async fn failed(&mut self, error: &io::Error) {
        if let Some(failures) = self.log.count() {
            tracing::warn!(
                %error,
                failures,
                "accept failed (out of file descriptors?); new connections wait until some close"
            );
        }
        self.delay = (self.delay * 2).clamp(ACCEPT_BACKOFF.0, ACCEPT_BACKOFF.1);
        tokio::time::sleep(self.delay).await;
    }
}

/// Accepts the next connection. When accepting fails (usually out of file
/// descriptors, `EMFILE`/`ENFILE`, when something other than clients holds
/// them) it backs off with a growing delay instead of spinning, and logs
/// the failures at a bounded rate.
async fn accept(listener: &TcpListener, backoff: &mut AcceptBackoff) -> (TcpStream, SocketAddr) {
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                backoff.delay = Duration::ZERO;
                // Frames are written as soon as they are ready; Nagle's
                // algorithm would hold small ones back for up to ~40 ms.
                let _ = stream.set_nodelay(true);
                return (stream, peer);
            }
            Err(e) => backoff.failed(&e).await,
        }
    }
}

/// The refusal logs of one accept loop, one per reason.
#[derive(Debug, Default)]
struct Refusals {
    per_address: SparseLog,
    connection_limit: SparseLog,
}

async fn stopped(stop: &mut watch::Receiver<bool>) {
    let _ = stop.wait_for(|s| *s).await;
}

/// Says why a connection is refused, within a short bound, then closes it.
/// What the client sends meanwhile (its request, its CONNECT) is read and
/// dropped for a moment first: closing a socket with unread input makes the
/// kernel send a reset, which can destroy the answer before the client
/// reads it. The moment is short because a refused socket holds a
/// descriptor, and refusals come when descriptors are scarce.
async fn refuse(mut stream: TcpStream, message: Vec<u8>) {
    let written = tokio::time::timeout(Duration::from_secs(1), async {
        stream.write_all(&message).await?;
        stream.shutdown().await
    })
    .await;
    if !matches!(written, Ok(Ok(()))) {
        return;
    }
    let _ = tokio::time::timeout(Duration::from_millis(250), async {
        let mut sink = [0u8; 4096];
        let mut drained = 0;
        while drained < 64 * 1024 {
            match stream.read(&mut sink).await {
                Ok(0) | Err(_) => break,
                Ok(n) => drained += n,
            }
        }
    })
    .await;
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

/// Most connections served at once outside the connection budget: on the
/// operators' listener, and on the main one while the server drains
/// (health probes and scrapes, a handful each). The drain is waiting to
/// get the budget back whole, and an operator's scrape must not take a
/// client's place or be refused for one.
const UNCOUNTED_CONNECTIONS: usize = 64;

/// How long connections still open when the listener closes (after the
/// drain) may take to finish their answer before they are cut.
const CLOSE_GRACE: Duration = Duration::from_secs(1);

/// How long a connection that found every uncounted place taken waits for
/// the one it made room for.
const ROOM_WAIT: Duration = Duration::from_secs(1);

/// The places for connections served outside the budget, and which of
/// their holders have not sent a request yet.
///
/// When every place is taken, the holder that has been silent longest is
/// closed for the newcomer. A probe or a scrape sends its request as soon
/// as it connects, so sockets opened to say nothing (or a request head
/// dribbled a byte at a time) cannot keep them out: otherwise 64 of them,
/// opened again each `connect_timeout`, would fail every liveness probe
/// during a drain.
#[derive(Debug)]
struct Uncounted {
    places: Arc<Semaphore>,
    /// Oldest first; an entry whose connection ended or has sent a request
    /// is dropped on the next pass.
    silent: Mutex<VecDeque<Weak<Silent>>>,
}

/// A connection served outside the budget, until its first request.
#[derive(Debug, Default)]
struct Silent {
    /// Set by the connection when its first request head has arrived.
    requested: Arc<AtomicBool>,
    evicted: Notify,
}

impl Silent {
    fn waiting(&self) -> bool {
        !self.requested.load(Ordering::Relaxed)
    }
}

impl Uncounted {
    fn new() -> Uncounted {
        Uncounted {
            places: Arc::new(Semaphore::new(UNCOUNTED_CONNECTIONS)),
            silent: Mutex::new(VecDeque::new()),
        }
    }

    fn silent(&self) -> std::sync::MutexGuard<'_, VecDeque<Weak<Silent>>> {
        // A push or a pop: nothing is left half done by a panic.
        self.silent.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Counts a connection as silent until its first request.
    fn track(&self) -> Arc<Silent> {
        let connection = Arc::new(Silent::default());
        let mut silent = self.silent();
        silent.retain(|s| s.upgrade().is_some_and(|s| s.waiting()));
        silent.push_back(Arc::downgrade(&connection));
        connection
    }

    /// Closes the connection silent longest; false when none is.
    fn evict_oldest(&self) -> bool {
        let mut silent = self.silent();
        while let Some(oldest) = silent.pop_front() {
            if let Some(oldest) = oldest.upgrade().filter(|s| s.waiting()) {
                oldest.evicted.notify_one();
                return true;
            }
        }
        false
    }
}

/// Which HTTP listener, and what it serves.
pub(crate) enum HttpListener {
    /// The clients' listener: `serving` while the server runs, each
    /// connection counted against `max_connections`; from the moment a
    /// graceful shutdown begins, `draining` (the operators' endpoints, 503
    /// for the rest), one request per connection, outside the budget.
    Main { serving: Router, draining: Router },
    /// The operators' listener (`metrics.addr`): the same router until it
    /// closes, one request per connection, outside the budget.
    Operators(Router),
}

/// Serves HTTP on `listener` until `closed` turns true (after the drain).
/// On the main listener, once `stop` turns true (the graceful shutdown
/// began) new connections get the draining router: a load balancer's
/// readiness probe then reads "shutting down" instead of meeting a closed
/// port, and liveness holds until the drain is over. Connections accepted
/// before close after their request in progress (WebSocket sessions, by
/// then their own tasks, close on the same signal).
pub(crate) async fn serve_http(
    listener: TcpListener,
    shared: Arc<ServerShared>,
    kind: HttpListener,
    stop: watch::Receiver<bool>,
    mut closed: watch::Receiver<bool>,
) {
    let mut connections = JoinSet::new();
    let mut backoff = AcceptBackoff::default();
    let mut refusals = Refusals::default();
    let uncounted = Arc::new(Uncounted::new());
    loop {
        let (stream, peer) = tokio::select! {
            accepted = accept(&listener, &mut backoff) => accepted,
            () = stopped(&mut closed) => break,
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
                    if let Some(refused) = refusals.per_address.count() {
                        tracing::warn!(%peer, limit = e.limit, refused, "connection refused: too many connections from one address");
                    }
                    let text =
                        format!("too many connections from your address (limit {})", e.limit);
                    tokio::spawn(refuse(stream, http_refusal("429 Too Many Requests", &text)));
                    continue;
                }
            }
        };
        let serving = match &kind {
            HttpListener::Main { serving, .. } if !*stop.borrow() => serving,
            HttpListener::Main { draining, .. } => {
                let (router, busy) = (draining.clone(), "server shutting down");
                spawn_uncounted(
                    &mut connections,
                    &uncounted,
                    &shared,
                    stream,
                    peer,
                    address_permit,
                    (router, Mode::OneRequest, busy),
                );
                continue;
            }
            HttpListener::Operators(router) => {
                let busy = "too many connections to the operators' listener";
                // One request per connection, as while draining: a
                // connection kept alive between scrapes would hold its
                // place with nobody able to tell it from an idle one.
                let mode = Mode::OneRequest;
                spawn_uncounted(
                    &mut connections,
                    &uncounted,
                    &shared,
                    stream,
                    peer,
                    address_permit,
                    (router.clone(), mode, busy),
                );
                continue;
            }
        };
        // Counted from here, not from the upgrade: an HTTP socket costs a
        // descriptor whether or not it ever becomes a session. The place is
        // handed on to the WebSocket session, so it is counted once.
        let Some(permit) = shared.try_admit() else {
            if let Some(refused) = refusals.connection_limit.count() {
                tracing::warn!(%peer, refused, "connection refused: connection limit reached");
            }
            tokio::spawn(refuse(
                stream,
                http_refusal(
                    "503 Service Unavailable",
                    "server at its connection limit; try again later",
                ),
            ));
            continue;
        };
        let shared = Arc::clone(&shared);
        let router = serving.clone();
        let stop = stop.clone();
        connections.spawn(async move {
            let Some(io) = accept_io(stream, peer, &shared).await else {
                return;
            };
            let info = ConnectionInfo {
                tls: shared.tls.is_some(),
                address_permit,
                permit: Some(Arc::new(permit)),
            };
            let first_request = Arc::new(AtomicBool::new(false));
            let mode = Mode::Serving(stop);
            serve_connection(io, peer, info, router, &shared, mode, first_request).await;
        });
    }
    // Connections accepted before the shutdown were waited for by the
    // drain (they hold places in the budget); what is left are probes
    // being answered, and whatever outlived the shutdown timeout.
    let _ = tokio::time::timeout(CLOSE_GRACE, async {
        while connections.join_next().await.is_some() {}
    })
    .await;
    connections.abort_all();
}

/// Serves a connection outside the connection budget, within
/// [`UNCOUNTED_CONNECTIONS`]; past it, in the place of the connection that
/// has been silent longest, or with a 503 saying `busy` when none is.
fn spawn_uncounted(
    connections: &mut JoinSet<()>,
    uncounted: &Arc<Uncounted>,
    shared: &Arc<ServerShared>,
    stream: TcpStream,
    peer: SocketAddr,
    address_permit: Option<Arc<AddressPermit>>,
    (router, mode, busy): (Router, Mode, &'static str),
) {
    let place = Arc::clone(&uncounted.places).try_acquire_owned().ok();
    if place.is_none() && !uncounted.evict_oldest() {
        tokio::spawn(refuse(
            stream,
            http_refusal("503 Service Unavailable", busy),
        ));
        return;
    }
    let shared = Arc::clone(shared);
    let uncounted = Arc::clone(uncounted);
    connections.spawn(async move {
        let place = match place {
            Some(place) => place,
            // The evicted connection gives its place back as it closes.
            None => {
                match tokio::time::timeout(ROOM_WAIT, Arc::clone(&uncounted.places).acquire_owned())
                    .await
                {
                    Ok(Ok(place)) => place,
                    _ => {
                        refuse(stream, http_refusal("503 Service Unavailable", busy)).await;
                        return;
                    }
                }
            }
        };
        let silent = uncounted.track();
        let info = ConnectionInfo {
            tls: shared.tls.is_some(),
            address_permit,
            permit: None,
        };
        let served = async {
            if let Some(io) = accept_io(stream, peer, &shared).await {
                let first_request = Arc::clone(&silent.requested);
                serve_connection(io, peer, info, router, &shared, mode, first_request).await;
            }
        };
        tokio::select! {
            () = served => {}
            () = silent.evicted.notified() => {
                tracing::debug!(%peer, "HTTP connection closed: silent while its place was wanted");
            }
        }
        drop(place);
    });
}

/// The connection's byte stream, after the TLS handshake when there is TLS.
async fn accept_io(
    stream: TcpStream,
    peer: SocketAddr,
    shared: &ServerShared,
) -> Option<Box<dyn Io>> {
    match shared.tls.as_ref().map(|t| t.http.clone()) {
        None => Some(Box::new(stream)),
        Some(acceptor) => {
            let tls = tls_handshake(&acceptor, stream, shared, peer).await?;
            Some(Box::new(tls))
        }
    }
}

/// In every request's extensions. A handler whose answer is a stream with
/// no end of its own (the admin event stream) marks it: at shutdown such a
/// stream ends, but a client that stopped reading would never take its
/// last bytes, and a graceful close would wait for them until the shutdown
/// timeout, holding the drain. A marked connection gets [`CLOSE_GRACE`].
#[derive(Debug, Clone, Default)]
pub(crate) struct EndlessAnswer(Arc<AtomicBool>);

impl EndlessAnswer {
    pub(crate) fn mark(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn marked(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// How one HTTP connection is served.
enum Mode {
    /// Kept alive between requests until the shutdown signal, then closed
    /// after the request in progress.
    Serving(watch::Receiver<bool>),
    /// One request, then the connection closes: outside the budget (the
    /// operators' listener, the main one while it drains).
    OneRequest,
}

async fn serve_connection(
    io: Box<dyn Io>,
    peer: SocketAddr,
    info: ConnectionInfo,
    router: Router,
    shared: &ServerShared,
    mode: Mode,
    first_request: Arc<AtomicBool>,
) {
    let service = TowerToHyperService::new(router);
    let endless = EndlessAnswer::default();
    let service = {
        let first_request = Arc::clone(&first_request);
        let endless = endless.clone();
        hyper::service::service_fn(move |mut request: hyper::Request<Incoming>| {
            first_request.store(true, Ordering::Relaxed);
            request.extensions_mut().insert(ConnectInfo(peer));
            request.extensions_mut().insert(info.clone());
            request.extensions_mut().insert(endless.clone());
            hyper::service::Service::call(&service, request)
        })
    };
    let (mut stop, keep_alive) = match mode {
        Mode::Serving(stop) => (Some(stop), true),
        Mode::OneRequest => (None, false),
    };
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(keep_alive)
        // hyper starts this limit each time it waits for a request head: on
        // a new connection, and after each response on a kept-alive one. So
        // it is the keep-alive idle limit, and a client that says nothing,
        // or dribbles, is closed at it.
        .header_read_timeout(shared.config.http_idle_timeout)
        // hyper holds a request head in one buffer of at most this; it
        // cannot go below its own minimum.
        .max_buf_size(shared.config.max_request_head_bytes.max(8 * 1024))
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades();
    let mut connection = std::pin::pin!(connection);
    // The first request head has the (usually shorter) time a STOMP client
    // has for its CONNECT, so a socket that connects and says nothing does
    // not hold its place for the whole idle limit.
    let first_head = tokio::time::sleep(shared.config.connect_timeout);
    let mut first_head = std::pin::pin!(first_head);
    let mut awaiting_first = true;
    loop {
        tokio::select! {
            result = connection.as_mut() => {
                if let Err(e) = result {
                    tracing::debug!(%peer, error = %e, "HTTP connection failed");
                }
                return;
            }
            () = first_head.as_mut(), if awaiting_first => {
                if !first_request.load(Ordering::Relaxed) {
                    tracing::debug!(%peer, "HTTP connection closed: no request head in time");
                    return;
                }
                awaiting_first = false;
            }
            () = stopped_if(stop.as_mut()) => {
                connection.as_mut().graceful_shutdown();
                if endless.marked() {
                    if tokio::time::timeout(CLOSE_GRACE, connection).await.is_err() {
                        tracing::debug!(%peer, "HTTP connection closed: its endless answer was not read at shutdown");
                    }
                } else {
                    let _ = connection.await;
                }
                return;
            }
        }
    }
}

/// As [`stopped`], or never without a signal.
async fn stopped_if(stop: Option<&mut watch::Receiver<bool>>) {
    match stop {
        Some(stop) => stopped(stop).await,
        None => std::future::pending().await,
    }
}

/// Accepts plain STOMP over TCP (or TLS) until the task is aborted.
pub(crate) async fn accept_tcp(listener: TcpListener, shared: Arc<ServerShared>) {
    let mut backoff = AcceptBackoff::default();
    let mut refusals = Refusals::default();
    loop {
        let (stream, peer) = accept(&listener, &mut backoff).await;
        // The drain holds the whole connection budget; say why plainly
        // rather than "at its connection limit".
        if *shared.shutdown.borrow() {
            tokio::spawn(refuse(stream, stomp_refusal("server shutting down")));
            continue;
        }
        let address_permit = match shared.addresses.admit(peer.ip()) {
            Ok(permit) => permit,
            Err(e) => {
                if let Some(refused) = refusals.per_address.count() {
                    tracing::warn!(%peer, limit = e.limit, refused, "connection refused: too many connections from one address");
                }
                let text = format!("too many connections from your address (limit {})", e.limit);
                tokio::spawn(refuse(stream, stomp_refusal(&text)));
                continue;
            }
        };
        let Some(permit) = shared.try_admit() else {
            if let Some(refused) = refusals.connection_limit.count() {
                tracing::warn!(%peer, refused, "connection refused: connection limit reached");
            }
            tokio::spawn(refuse(
                stream,
                stomp_refusal("server at its connection limit; try again later"),
            ));
            continue;
        };
        // As for WebSockets (see `upgrade`): the TLS handshake's state is
        // dropped when the session begins, not kept beside it. The places
        // are boxed together: 56 bytes inline would take the session's task
        // past a 128-byte step of its size.
        let places = Box::new((permit, address_permit));
        let shared = Arc::clone(&shared);
        let session = tcp_transport(stream, Arc::clone(&shared), peer).map(move |transport| {
            let handshake = Arc::new(Handshake::tcp(peer, shared.tls.is_some()));
            Some(connection::run(transport?, shared, None, handshake, places))
        });
        tokio::spawn(session.then(OptionFuture::from));
    }
}

/// A TCP connection's transport, after the TLS handshake when there is TLS.
async fn tcp_transport(
    stream: TcpStream,
    shared: Arc<ServerShared>,
    peer: SocketAddr,
) -> Option<Transport> {
    match shared.tls.as_ref().map(|t| t.tcp.clone()) {
        None => Some(Transport::Tcp(stream)),
        Some(acceptor) => {
            // Boxed: the handshake's state is large, and inline it would
            // size the task every session holds, TLS or not.
            let tls = Box::pin(tls_handshake(&acceptor, stream, &shared, peer)).await?;
            Some(Transport::TlsServer(Box::new(tls)))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn failed_accepts_back_off_up_to_a_second_and_are_logged_sparingly() {
        let mut backoff = AcceptBackoff::default();
        let error = io::Error::from_raw_os_error(24);
        let mut delays = Vec::new();
        for _ in 0..10 {
            let start = Instant::now();
            backoff.failed(&error).await;
            delays.push(start.elapsed().as_millis());
        }
        assert_eq!(delays, [10, 20, 40, 80, 160, 320, 640, 1000, 1000, 1000]);
        // The first failure was logged; the nine after it, within 10 s,
        // are counted for the next line.
        assert_eq!(backoff.log.unlogged, 9);
    }

    #[tokio::test(start_paused = true)]
    async fn events_are_logged_once_per_ten_seconds_with_their_count() {
        let mut log = SparseLog::default();
        assert_eq!(log.count(), Some(1));
        assert_eq!((0..99).filter_map(|_| log.count()).count(), 0);
        tokio::time::advance(LOG_EVERY).await;
        assert_eq!(log.count(), Some(100));
    }
}
