//! Our own WebSocket upgrade, so that everything that can be refused before
//! the `101` is: a foreign `Origin` (cross-site WebSocket hijacking), the
//! connection limits, and the subprotocol choice. What the handshake carried
//! (headers, cookies, query, client address) is kept for the CONNECT frame's
//! authentication.

use crate::admission::{AddressPermit, IpNetwork};
use crate::auth::{Handshake, TransportKind};
use crate::connection;
use crate::session::OfferedVersions;
use crate::shared::ServerShared;
use crate::transport::Transport;
use crate::websocket::{Io, WebSocket};
use axum::extract::{ConnectInfo, Request, State};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use futures_util::FutureExt;
use futures_util::future::OptionFuture;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use hyper_util::rt::TokioIo;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use stompbox_codec::Version;

/// The WebSocket subprotocols, in the order the server prefers them.
const SUBPROTOCOLS: [(&str, Version); 3] = [
    ("v12.stomp", Version::V1_2),
    ("v11.stomp", Version::V1_1),
    ("v10.stomp", Version::V1_0),
];

/// What the accept loop knows about the HTTP connection a request came on.
#[derive(Debug, Clone)]
pub(crate) struct ConnectionInfo {
    pub(crate) tls: bool,
    /// The connection's place in its address's count, handed on to the
    /// WebSocket session so the count lasts as long as the session (the
    /// HTTP connection task ends at the upgrade). `None` for a trusted
    /// proxy, whose clients are counted by their forwarded address.
    pub(crate) address_permit: Option<Arc<AddressPermit>>,
    /// The connection's place in the server's connection budget, taken at
    /// accept and handed on to the WebSocket session like `address_permit`.
    pub(crate) permit: Option<Arc<crate::shared::Admitted>>,
}

fn header_has_token(headers: &HeaderMap, name: header::HeaderName, token: &str) -> bool {
    headers
        .get_all(name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case(token))
}

fn refuse(status: StatusCode, message: &str) -> Response {
    (status, format!("{message}\n")).into_response()
}

/// The client's address: the peer's, or, when the peer is a trusted proxy,
/// the last address in `X-Forwarded-For` that is not itself a trusted proxy.
/// An entry that is not an address (`unknown`, garbage) ends the walk at the
/// hop before it: what lies beyond was written by someone not trusted.
pub(crate) fn client_addr(
    peer: SocketAddr,
    headers: &HeaderMap,
    trusted: &[IpNetwork],
) -> SocketAddr {
    let is_trusted = |ip: IpAddr| trusted.iter().any(|net| net.contains(ip));
    if !is_trusted(peer.ip()) {
        return peer;
    }
    let forwarded: Vec<&str> = headers
        .get_all("x-forwarded-for")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .collect();
    let mut nearest = peer;
    for entry in forwarded.iter().rev() {
        let Some(ip) = forwarded_ip(entry) else {
            return nearest;
        };
        nearest = SocketAddr::new(ip, 0);
        if !is_trusted(ip) {
            return nearest;
        }
    }
    nearest
}

/// An `X-Forwarded-For` entry: an address, or an address with a port as
/// some proxies write it (`203.0.113.9:51234`, `[2001:db8::9]:51234`).
fn forwarded_ip(entry: &str) -> Option<IpAddr> {
    let entry = entry.trim();
    entry
        .parse::<IpAddr>()
        .ok()
        .or_else(|| entry.parse::<SocketAddr>().ok().map(|a| a.ip()))
        .or_else(|| {
            entry
                .strip_prefix('[')
                .and_then(|e| e.strip_suffix(']'))
                .and_then(|e| e.parse().ok())
        })
}

/// The WebSocket endpoint.
pub(crate) async fn ws_upgrade(
    State(shared): State<Arc<ServerShared>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
) -> Response {
    let headers = request.headers();
    if !header_has_token(headers, header::UPGRADE, "websocket")
        || !header_has_token(headers, header::CONNECTION, "upgrade")
    {
        return refuse(
            StatusCode::BAD_REQUEST,
            "this endpoint speaks STOMP over WebSocket; send a WebSocket upgrade request",
        );
    }
    if headers
        .get(header::SEC_WEBSOCKET_VERSION)
        .map(HeaderValue::as_bytes)
        != Some(b"13")
    {
        let mut response = refuse(
            StatusCode::BAD_REQUEST,
            "unsupported WebSocket version; use 13",
        );
        response.headers_mut().insert(
            header::SEC_WEBSOCKET_VERSION,
            HeaderValue::from_static("13"),
        );
        return response;
    }
    let Some(key) = headers.get(header::SEC_WEBSOCKET_KEY) else {
        return refuse(StatusCode::BAD_REQUEST, "missing Sec-WebSocket-Key header");
    };
    let remote = client_addr(peer, headers, &shared.config.trusted_proxies);
    let origin = headers
        .get(header::ORIGIN)
        .map(|v| v.to_str().unwrap_or("(not text)"));
    let host = headers.get(header::HOST).and_then(|v| v.to_str().ok());
    if !shared.origins.allows(origin, host) {
        tracing::info!(%remote, origin = origin.unwrap_or_default(), "WebSocket refused: origin not allowed");
        return refuse(
            StatusCode::FORBIDDEN,
            "origin not allowed: this server accepts WebSocket sessions from its own pages \
             and from server.allowed_origins",
        );
    }
    let accept = {
        let mut sha = sha1_smol::Sha1::new();
        sha.update(key.as_bytes());
        sha.update(b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11");
        base64::engine::general_purpose::STANDARD.encode(sha.digest().bytes())
    };
    let offered: Vec<&str> = headers
        .get_all(header::SEC_WEBSOCKET_PROTOCOL)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(str::trim)
        .collect();
    // The `101` must name one subprotocol before CONNECT can be read: the
    // newest offered. The others offered stay agreed, and CONNECT's
    // accept-version picks among them.
    let ours: Vec<&(&str, Version)> = SUBPROTOCOLS
        .iter()
        .filter(|(name, _)| offered.iter().any(|o| o.eq_ignore_ascii_case(name)))
        .collect();
    let chosen = ours.first().copied();
    let mut offered_versions = OfferedVersions::default();
    for (_, version) in &ours {
        offered_versions.insert(*version);
    }
    let subprotocol_versions = (!offered_versions.is_empty()).then_some(offered_versions);
    let info = request.extensions().get::<ConnectionInfo>().cloned();
    let tls = info.as_ref().is_some_and(|i| i.tls);
    let (address_permit, permit) = info
        .map(|i| (i.address_permit, i.permit))
        .unwrap_or_default();
    // Behind a trusted proxy the address is known only now.
    let address_permit = match address_permit {
        Some(permit) => Some(permit),
        None => match shared.addresses.admit(remote.ip()) {
            Ok(permit) => permit.map(Arc::new),
            Err(e) => {
                tracing::warn!(%remote, limit = e.limit, "WebSocket refused: too many connections from one address");
                return refuse(
                    StatusCode::TOO_MANY_REQUESTS,
                    &format!("too many connections from your address (limit {})", e.limit),
                );
            }
        },
    };
    // The accept loop has counted the connection already; a request that
    // did not come through it is counted now.
    let Some(permit) = permit.or_else(|| shared.try_admit().map(Arc::new)) else {
        tracing::warn!(%remote, "connection refused: connection limit reached");
        return refuse(
            StatusCode::SERVICE_UNAVAILABLE,
            "server at its connection limit; try again later",
        );
    };
    let handshake = Arc::new(Handshake {
        transport: TransportKind::WebSocket,
        tls,
        remote_addr: remote,
        headers: request.headers().clone(),
        uri: Some(request.uri().clone()),
    });
    let on_upgrade = hyper::upgrade::on(&mut request);
    // Until CONNECT succeeds, a message may be only twice the frame an
    // unauthenticated client may send (the driver raises it after): a frame
    // a little too large still reaches the decoder and gets a STOMP ERROR,
    // a larger message is refused by the WebSocket layer (close code 1009)
    // before it is held.
    let message_limit = shared
        .config
        .frame_limits
        .max_frame_bytes
        .min(shared.config.unauthenticated_frame_bytes)
        .saturating_mul(2);
    // Not one async block: the variables an async block captures stay in
    // its future for its whole life, beside the session's own future, in
    // the task every open session holds. The upgrade's state is dropped
    // when the session begins.
    let places = (permit, address_permit);
    let session = on_upgrade.map(move |upgraded| {
        let upgraded = match upgraded {
            Ok(upgraded) => upgraded,
            Err(e) => {
                let remote = handshake.remote_addr;
                tracing::debug!(%remote, error = %e, "WebSocket upgrade failed");
                return None;
            }
        };
        // Back to the listener's own stream, without hyper's wrapper; what
        // hyper read past the request is handed on.
        let ws = match upgraded.downcast::<TokioIo<Box<dyn Io>>>() {
            Ok(parts) => WebSocket::new(parts.io.into_inner(), &parts.read_buf, message_limit),
            Err(upgraded) => WebSocket::new(Box::new(TokioIo::new(upgraded)), &[], message_limit),
        };
        Some(connection::run(
            Transport::WebSocket(Box::new(ws)),
            shared,
            subprotocol_versions,
            handshake,
            places,
        ))
    });
    tokio::spawn(session.then(OptionFuture::from));
    let mut response = Response::new(axum::body::Body::empty());
    *response.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = response.headers_mut();
    h.insert(header::UPGRADE, HeaderValue::from_static("websocket"));
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    if let Ok(value) = HeaderValue::from_str(&accept) {
        h.insert(header::SEC_WEBSOCKET_ACCEPT, value);
    }
    if let Some((name, _)) = chosen {
        h.insert(
            header::SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(name),
        );
    }
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forwarded_addresses_count_only_behind_trusted_proxies() {
        let trusted: Vec<IpNetwork> = vec!["10.0.0.0/8".parse().expect("net")];
        let mut headers = HeaderMap::new();
        headers.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9, 10.1.1.1"),
        );
        let proxy: SocketAddr = "10.0.0.2:5000".parse().expect("addr");
        assert_eq!(
            client_addr(proxy, &headers, &trusted).ip(),
            "203.0.113.9".parse::<IpAddr>().expect("ip")
        );
        let mut with_ports = HeaderMap::new();
        with_ports.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, 203.0.113.9:51234, [2001:db8::9]:443"),
        );
        assert_eq!(
            client_addr(proxy, &with_ports, &trusted).ip(),
            "2001:db8::9".parse::<IpAddr>().expect("ip")
        );
        let mut garbled = HeaderMap::new();
        garbled.insert(
            "x-forwarded-for",
            HeaderValue::from_static("6.6.6.6, unknown, 10.2.2.2"),
        );
        // Nothing past the garbage is believed: the nearest trusted hop.
        assert_eq!(
            client_addr(proxy, &garbled, &trusted).ip(),
            "10.2.2.2".parse::<IpAddr>().expect("ip")
        );
        let direct: SocketAddr = "198.51.100.1:5000".parse().expect("addr");
        assert_eq!(client_addr(direct, &headers, &trusted), direct);
        assert_eq!(client_addr(proxy, &HeaderMap::new(), &trusted), proxy);
    }
}
