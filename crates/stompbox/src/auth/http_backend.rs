//! An HTTP authentication service: for each CONNECT attempt the server asks
//! an operator's HTTP service who the client is.
//!
//! # The request
//!
//! The server POSTs to the configured URL, with
//! `content-type: application/json`, one JSON object per CONNECT attempt:
//!
//! ```json
//! {
//!   "session_id": "3f9c…",
//!   "login": "alice",
//!   "passcode": "secret",
//!   "connect_headers": {"accept-version": "1.2", "host": "/", "login": "alice"},
//!   "transport": "websocket",
//!   "tls": true,
//!   "remote_addr": "203.0.113.7:52144",
//!   "path": "/ws",
//!   "query": {"room": "lobby"},
//!   "headers": {"origin": "https://app.example", "cookie": "session=abc; theme=dark"},
//!   "cookies": {"session": "abc", "theme": "dark"}
//! }
//! ```
//!
//! | field | meaning |
//! |---|---|
//! | `session_id` | the id the session will have |
//! | `login`, `passcode` | the CONNECT frame's headers, or `null` |
//! | `connect_headers` | every CONNECT header except `passcode`, names as sent; the first value of a repeated name |
//! | `transport` | `"websocket"` or `"tcp"` |
//! | `tls` | whether the client's connection is TLS |
//! | `remote_addr` | the client's `ip:port` (behind a trusted proxy, the address it forwarded) |
//! | `path` | the WebSocket handshake's path; `null` for TCP |
//! | `query` | the handshake's query parameters, percent-decoded; the first value of a repeated name; empty for TCP |
//! | `headers` | the handshake's headers, names lowercase; the values of a repeated header joined with `", "` (`"; "` for `cookie`); empty for TCP |
//! | `cookies` | the handshake's cookies; the first value of a repeated name; empty for TCP |
//!
//! # The answer
//!
//! * `200` with `{"user": "alice", "roles": ["admin"], "expires_in": 3600}`
//!   authenticates the session as `alice`. `roles` (strings) and
//!   `expires_in` (whole seconds; the session is closed when they have
//!   passed) may be left out or `null`. Other fields are ignored.
//! * `200` with `{"user": null}`, or without `user`: no user. The session
//!   is anonymous if the server lets anonymous sessions in; a CONNECT that
//!   carried credentials is refused.
//! * `401` or `403`: refused. A JSON body `{"reason": "account locked"}`
//!   gives the client that reason (control characters removed, cut to 200
//!   characters); otherwise the client is told "wrong login or passcode".
//! * Anything else (another status, a body that is not such a JSON object or
//!   is larger than 64 KiB, a user name that is empty, longer than 256 bytes
//!   or holds control characters, more than 64 roles, no connection, a
//!   failed TLS handshake, no complete answer within the timeout): the
//!   CONNECT is refused as "unavailable" and the cause is logged.
//!
//! # Load on the service
//!
//! At most [`HttpAuthConfig::max_in_flight`] requests are outstanding; a
//! CONNECT past that is refused at once rather than queued, so a flood of
//! CONNECT frames cannot pile up behind a slow service. Accepted answers are
//! remembered for [`HttpAuthConfig::cache_ttl`] (and never past the
//! identity's expiry), keyed by a salted hash of what carries credentials
//! and what the service is likely to judge them by: login, passcode, the
//! CONNECT `Authorization` headers, the handshake's `Authorization`, `Cookie`
//! and `Origin` headers, path and query, the transport, whether it is TLS,
//! and the client's IP address (not its port). Refusals and failures are
//! never remembered.

use super::{AuthError, Authenticator, ConnectRequest, Handshake, Identity, percent_decode};
use crate::broker::BoxFuture;
use http::{Method, Request, StatusCode, Uri, header};
use hyper::body::{Body, Incoming};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use serde::Serialize;
use serde_json::Value;
use sha2::{Digest, Sha256};
use std::collections::{BTreeMap, HashMap};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_rustls::rustls;

/// Largest answer read; a bigger one is a broken service, not a login.
const MAX_ANSWER_BYTES: usize = 64 * 1024;
/// Longest user name and role accepted from the service.
const MAX_NAME_BYTES: usize = 256;
/// Most roles accepted from the service.
const MAX_ROLES: usize = 64;
/// Longest refusal reason passed on to the client.
const MAX_REASON_CHARS: usize = 200;
/// How long an idle pooled connection to the service is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);
/// The detail of a refusal past `max_in_flight`.
const TOO_MANY_REQUESTS: &str = "too many requests to the authentication service";

/// Settings of the HTTP authentication service.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct HttpAuthConfig {
    /// The URL POSTed to (`http://` or `https://`).
    pub url: String,
    /// Time the service has to answer. Default 2 s.
    pub timeout: Duration,
    /// How long an accepted answer is remembered. Zero turns the cache off.
    /// Default 60 s.
    pub cache_ttl: Duration,
    /// Most remembered answers. Default 10,000.
    pub cache_entries: usize,
    /// Most requests to the service at once; past it a login is refused as
    /// "unavailable". Default 256.
    pub max_in_flight: usize,
    /// PEM file of CA certificates to trust for `https://`. Default: the
    /// Mozilla root store.
    pub ca_file: Option<std::path::PathBuf>,
}

impl HttpAuthConfig {
    /// Settings for `url`, every other field at its default.
    pub fn new(url: impl Into<String>) -> HttpAuthConfig {
        HttpAuthConfig {
            url: url.into(),
            timeout: Duration::from_secs(2),
            cache_ttl: Duration::from_secs(60),
            cache_entries: 10_000,
            max_in_flight: 256,
            ca_file: None,
        }
    }
}

/// Authenticates by asking an HTTP service: each CONNECT attempt is POSTed
/// as JSON, and the service answers with the user, no user, or a refusal.
pub struct HttpAuthenticator {
    uri: Uri,
    /// The URL without its query, which may hold a secret: for logs.
    endpoint: String,
    timeout: Duration,
    client: Client<HttpsConnector<HttpConnector>, String>,
    in_flight: Semaphore,
    cache: Option<AnswerCache>,
}

impl std::fmt::Debug for HttpAuthenticator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpAuthenticator")
            .field("endpoint", &self.endpoint)
            .field("timeout", &self.timeout)
            .field("cache", &self.cache.is_some())
            .finish_non_exhaustive()
    }
}

impl HttpAuthenticator {
    /// Checks the URL and builds the authenticator.
    ///
    /// # Errors
    ///
    /// When the URL or the CA file cannot be used.
    pub fn new(config: HttpAuthConfig) -> Result<HttpAuthenticator, String> {
        let uri = check_url(&config.url)?;
        if config.timeout.is_zero() {
            return Err("the HTTP authentication timeout must be more than zero".into());
        }
        if config.max_in_flight == 0 {
            return Err("the HTTP authentication max_in_flight must be at least 1".into());
        }
        let tls = tls_config(config.ca_file.as_deref())?;
        let mut http = HttpConnector::new();
        // The HTTPS connector picks TLS by the scheme; the TCP connector under
        // it must let `https://` through.
        http.enforce_http(false);
        http.set_nodelay(true);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        // One client for every CONNECT, so connections to the service are
        // reused; the timer lets idle ones be closed before a load balancer
        // silently drops them.
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(POOL_IDLE_TIMEOUT)
            .build(connector);
        let cache = if config.cache_ttl.is_zero() || config.cache_entries == 0 {
            None
        } else {
            Some(AnswerCache::new(config.cache_ttl, config.cache_entries)?)
        };
        let endpoint = format!(
            "{}://{}{}",
            uri.scheme_str().unwrap_or("http"),
            uri.authority().map_or("", |a| a.as_str()),
            uri.path()
        );
        Ok(HttpAuthenticator {
            uri,
            endpoint,
            timeout: config.timeout,
            client,
            // Semaphore::new panics past MAX_PERMITS; no service takes that
            // many requests at once anyway.
            in_flight: Semaphore::new(config.max_in_flight.min(Semaphore::MAX_PERMITS)),
            cache,
        })
    }

    /// One exchange with the service, without the time bound.
    async fn ask(&self, request: &ConnectRequest) -> Result<Answer, String> {
        let body = serde_json::to_string(&RequestBody::of(request))
            .map_err(|e| format!("cannot encode the request: {e}"))?;
        let http_request = Request::builder()
            .method(Method::POST)
            .uri(self.uri.clone())
            .header(header::CONTENT_TYPE, "application/json")
            .header(header::ACCEPT, "application/json")
            .header(
                header::USER_AGENT,
                concat!("stompbox/", env!("CARGO_PKG_VERSION")),
            )
            .body(body)
            .map_err(|e| format!("cannot build the request: {e}"))?;
        let response = self
            .client
            .request(http_request)
            .await
            .map_err(|e| format!("request failed: {}", error_chain(&e)))?;
        match response.status() {
            StatusCode::OK => {
                let body = read_limited(response.into_body(), MAX_ANSWER_BYTES).await?;
                parse_answer(&body)
            }
            StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN => {
                // The status alone is a refusal: a body that cannot be read
                // only loses the reason.
                let reason = read_limited(response.into_body(), MAX_ANSWER_BYTES)
                    .await
                    .ok()
                    .and_then(|body| refusal_reason(&body));
                Ok(Answer::Refused(
                    reason.map_or(AuthError::BadCredentials, AuthError::Refused),
                ))
            }
            status => Err(format!("answered HTTP {status}")),
        }
    }

    /// Logs why the service could not be asked and builds the refusal.
    fn unavailable(&self, request: &ConnectRequest, detail: String) -> AuthError {
        tracing::warn!(
            session = %request.session_id,
            service = %self.endpoint,
            "HTTP authentication service unavailable: {detail}"
        );
        AuthError::Unavailable(detail)
    }
}

impl Authenticator for HttpAuthenticator {
    fn authenticate<'a>(
        &'a self,
        request: &'a ConnectRequest,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        Box::pin(async move {
            let key = self.cache.as_ref().map(|cache| cache.key(request));
            if let (Some(cache), Some(key)) = (&self.cache, &key)
                && let Some(identity) = cache.get(key)
            {
                return Ok(Some(identity));
            }
            // Refuse rather than wait: waiting would queue a CONNECT flood
            // in memory behind a slow service.
            let Ok(_permit) = self.in_flight.try_acquire() else {
                return Err(self.unavailable(request, TOO_MANY_REQUESTS.into()));
            };
            match tokio::time::timeout(self.timeout, self.ask(request)).await {
                Err(_) => Err(self.unavailable(
                    request,
                    format!("no complete answer within {:?}", self.timeout),
                )),
                Ok(Err(detail)) => Err(self.unavailable(request, detail)),
                Ok(Ok(Answer::Anonymous)) => Ok(None),
                Ok(Ok(Answer::Refused(error))) => {
                    tracing::debug!(
                        session = %request.session_id,
                        reason = error.reason(),
                        "HTTP authentication service refused the CONNECT"
                    );
                    Err(error)
                }
                Ok(Ok(Answer::User(identity, lifetime))) => {
                    if let (Some(cache), Some(key)) = (&self.cache, key) {
                        cache.put(key, identity.clone(), lifetime);
                    }
                    Ok(Some(identity))
                }
            }
        })
    }
}

/// Parses and checks the URL: `http://` or `https://`, with a host, and
/// without user info (which would be silently dropped, not sent).
fn check_url(url: &str) -> Result<Uri, String> {
    let uri: Uri = url.parse().map_err(|e| {
        // `http:///auth` does not parse at all; say what is wrong with it.
        let rest = url.split_once("://").map(|(_, rest)| rest);
        if rest.is_some_and(|rest| rest.is_empty() || rest.starts_with(['/', '?', '#'])) {
            format!("the HTTP authentication URL {url:?} has no host")
        } else {
            format!("invalid HTTP authentication URL {url:?}: {e}")
        }
    })?;
    if !matches!(uri.scheme_str(), Some("http" | "https")) {
        return Err(format!(
            "the HTTP authentication URL {url:?} must start with http:// or https://"
        ));
    }
    let Some(authority) = uri.authority().filter(|a| !a.host().is_empty()) else {
        return Err(format!("the HTTP authentication URL {url:?} has no host"));
    };
    if authority.as_str().contains('@') {
        return Err(format!(
            "the HTTP authentication URL {url:?} holds user info, which is not supported"
        ));
    }
    Ok(uri)
}

/// TLS settings trusting `ca_file`, or else the Mozilla roots.
fn tls_config(ca_file: Option<&std::path::Path>) -> Result<rustls::ClientConfig, String> {
    let mut roots = rustls::RootCertStore::empty();
    match ca_file {
        Some(path) => {
            use rustls_pki_types::pem::PemObject;
            let certs = rustls_pki_types::CertificateDer::pem_file_iter(path)
                .map_err(|e| format!("cannot read CA file {}: {e}", path.display()))?;
            for cert in certs {
                let cert =
                    cert.map_err(|e| format!("invalid certificate in {}: {e}", path.display()))?;
                roots
                    .add(cert)
                    .map_err(|e| format!("unusable certificate in {}: {e}", path.display()))?;
            }
            // An empty file would make every https:// request fail later,
            // far from the mistake.
            if roots.is_empty() {
                return Err(format!("no certificates in CA file {}", path.display()));
            }
        }
        None => roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned()),
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    Ok(rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS setup failed: {e}"))?
        .with_root_certificates(roots)
        .with_no_client_auth())
}

/// The JSON object POSTed to the service.
#[derive(Serialize)]
struct RequestBody<'a> {
    session_id: &'a str,
    login: Option<&'a str>,
    passcode: Option<&'a str>,
    connect_headers: BTreeMap<&'a str, &'a str>,
    transport: &'static str,
    tls: bool,
    remote_addr: String,
    path: Option<&'a str>,
    query: BTreeMap<String, String>,
    headers: BTreeMap<&'a str, String>,
    cookies: BTreeMap<&'a str, &'a str>,
}

impl<'a> RequestBody<'a> {
    fn of(request: &'a ConnectRequest) -> RequestBody<'a> {
        let handshake: &Handshake = &request.handshake;
        let mut connect_headers = BTreeMap::new();
        for (name, value) in request.headers.iter() {
            // The passcode has its own field; sending it twice gains nothing.
            if name != stompbox_codec::header::PASSCODE {
                connect_headers.entry(name).or_insert(value);
            }
        }
        RequestBody {
            session_id: &request.session_id,
            login: request.login(),
            passcode: request.passcode(),
            connect_headers,
            transport: handshake.transport.as_str(),
            tls: handshake.tls,
            remote_addr: handshake.remote_addr.to_string(),
            path: handshake.uri.as_ref().map(Uri::path),
            query: query_params(handshake),
            headers: handshake_headers(handshake),
            cookies: cookies(handshake),
        }
    }
}

/// The handshake's query parameters, percent-decoded; the first value of a
/// name wins, and a pair that does not decode is left out.
fn query_params(handshake: &Handshake) -> BTreeMap<String, String> {
    let mut params = BTreeMap::new();
    let Some(query) = handshake.uri.as_ref().and_then(Uri::query) else {
        return params;
    };
    for pair in query.split('&').filter(|pair| !pair.is_empty()) {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        if let (Some(name), Some(value)) = (percent_decode(name), percent_decode(value)) {
            params.entry(name).or_insert(value);
        }
    }
    params
}

/// The handshake's headers, one entry per name. Values that are not UTF-8
/// are passed on lossily rather than dropped.
fn handshake_headers(handshake: &Handshake) -> BTreeMap<&str, String> {
    handshake
        .headers
        .keys()
        .map(|name| {
            // Cookie lists are joined with "; " (RFC 9113 §8.2.3): a comma
            // may be part of a cookie value.
            let separator = if name == header::COOKIE { "; " } else { ", " };
            let values: Vec<_> = handshake
                .headers
                .get_all(name)
                .iter()
                .map(|value| String::from_utf8_lossy(value.as_bytes()))
                .collect();
            (name.as_str(), values.join(separator))
        })
        .collect()
}

/// The cookies of every `Cookie` header, read as [`Handshake::cookie`] does;
/// the first value of a name wins.
fn cookies(handshake: &Handshake) -> BTreeMap<&str, &str> {
    let mut cookies = BTreeMap::new();
    let pairs = handshake
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'));
    for pair in pairs {
        if let Some((name, value)) = pair.split_once('=') {
            let name = name.trim();
            if !name.is_empty() {
                cookies
                    .entry(name)
                    .or_insert_with(|| value.trim().trim_matches('"'));
            }
        }
    }
    cookies
}

/// Reads a body of at most `limit` bytes.
async fn read_limited(mut body: Incoming, limit: usize) -> Result<Vec<u8>, String> {
    let mut data = Vec::new();
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut body).poll_frame(cx)).await {
        let frame = frame.map_err(|e| format!("reading the answer failed: {e}"))?;
        if let Ok(chunk) = frame.into_data() {
            if chunk.len() > limit - data.len() {
                return Err(format!("the answer is larger than {limit} bytes"));
            }
            data.extend_from_slice(&chunk);
        }
    }
    Ok(data)
}

/// What the service said.
#[derive(Debug)]
enum Answer {
    /// Authenticated, valid for the given time if the service said so.
    User(Identity, Option<Duration>),
    /// No user: anonymous, if the server allows it.
    Anonymous,
    /// Refused.
    Refused(AuthError),
}

/// Reads a `200` answer.
fn parse_answer(body: &[u8]) -> Result<Answer, String> {
    let value: Value =
        serde_json::from_slice(body).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let Value::Object(answer) = value else {
        return Err("the answer is not a JSON object".into());
    };
    let user = match answer.get("user") {
        None | Some(Value::Null) => return Ok(Answer::Anonymous),
        Some(Value::String(user)) => user,
        Some(_) => return Err("\"user\" is not a string".into()),
    };
    check_name("the user", user)?;
    let roles = match answer.get("roles") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(roles)) => {
            if roles.len() > MAX_ROLES {
                return Err(format!("more than {MAX_ROLES} roles"));
            }
            roles
                .iter()
                .map(|role| match role {
                    Value::String(role) => check_name("a role", role).map(|()| role.clone()),
                    _ => Err("a role is not a string".into()),
                })
                .collect::<Result<Vec<_>, _>>()?
        }
        Some(_) => return Err("\"roles\" is not an array".into()),
    };
    let mut identity = Identity::new(user.clone()).with_roles(roles);
    let lifetime = match answer.get("expires_in") {
        None | Some(Value::Null) => None,
        Some(seconds) => {
            let seconds = seconds
                .as_u64()
                .ok_or("\"expires_in\" is not a whole number of seconds")?;
            Some(Duration::from_secs(seconds))
        }
    };
    // A lifetime too long for the clock is no expiry at all.
    if let Some(at) = lifetime.and_then(|life| SystemTime::now().checked_add(life)) {
        identity = identity.expiring_at(at);
    }
    Ok(Answer::User(identity, lifetime))
}

/// Refuses names that would be awkward or unsafe in destinations and logs.
fn check_name(what: &str, name: &str) -> Result<(), String> {
    if name.is_empty() {
        Err(format!("{what} is empty"))
    } else if name.len() > MAX_NAME_BYTES {
        Err(format!("{what} is longer than {MAX_NAME_BYTES} bytes"))
    } else if name.chars().any(char::is_control) {
        Err(format!("{what} holds control characters"))
    } else {
        Ok(())
    }
}

/// The `reason` of a refusal's JSON body, made fit to show the client.
fn refusal_reason(body: &[u8]) -> Option<String> {
    let value: Value = serde_json::from_slice(body).ok()?;
    let reason = value.get("reason")?.as_str()?;
    let printable: String = reason.chars().filter(|c| !c.is_control()).collect();
    let cut: String = printable.trim().chars().take(MAX_REASON_CHARS).collect();
    let cut = cut.trim_end();
    (!cut.is_empty()).then(|| cut.to_owned())
}

/// An error and its sources, which hold the useful part (hyper's own text
/// is only "client error (Connect)").
fn error_chain(error: &dyn std::error::Error) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// A cache key: a salted SHA-256.
type Key = [u8; 32];

/// Accepted answers, so that a reconnecting client does not cost a request.
struct AnswerCache {
    /// Random per process, so keys (hashes of passcodes among others)
    /// cannot be precomputed.
    salt: [u8; 32],
    ttl: Duration,
    entries: Mutex<CacheEntries>,
}

impl AnswerCache {
    fn new(ttl: Duration, capacity: usize) -> Result<AnswerCache, String> {
        let mut salt = [0; 32];
        getrandom::fill(&mut salt).map_err(|e| format!("no random numbers for the cache: {e}"))?;
        Ok(AnswerCache {
            salt,
            ttl,
            entries: Mutex::new(CacheEntries::new(capacity)),
        })
    }

    /// The key of what in `request` the answer depends on.
    fn key(&self, request: &ConnectRequest) -> Key {
        let handshake = &request.handshake;
        let mut hash = Sha256::new();
        hash.update(self.salt);
        // Everything the service is sent that can tell one client from
        // another is in the key: the service may decide on any of it (a
        // CONNECT header of its own, a header its proxy adds), and a key
        // without it would hand one client's identity to another.
        for (name, value) in request.headers.iter_bytes() {
            hash_field(&mut hash, Some(name));
            hash_field(&mut hash, Some(value));
        }
        hash_field(&mut hash, None);
        for (name, value) in &handshake.headers {
            // Random per handshake: in the key, nothing would ever hit.
            if name == header::SEC_WEBSOCKET_KEY {
                continue;
            }
            hash_field(&mut hash, Some(name.as_str().as_bytes()));
            hash_field(&mut hash, Some(value.as_bytes()));
        }
        hash_field(&mut hash, None);
        let uri = handshake.uri.as_ref();
        hash_field(&mut hash, uri.map(|uri| uri.path().as_bytes()));
        hash_field(&mut hash, uri.and_then(Uri::query).map(str::as_bytes));
        hash_field(&mut hash, Some(handshake.transport.as_str().as_bytes()));
        hash_field(&mut hash, Some(&[u8::from(handshake.tls)]));
        // The IP, not the port: a reconnecting client gets a new port.
        hash_field(
            &mut hash,
            Some(handshake.remote_addr.ip().to_string().as_bytes()),
        );
        hash.finalize().into()
    }

    /// The remembered identity for `key`, if still valid.
    fn get(&self, key: &Key) -> Option<Identity> {
        let now = Instant::now();
        let mut entries = self.entries.lock().unwrap_or_else(PoisonError::into_inner);
        let cached = entries.map.get(key)?;
        let valid = cached.expires > now
            && cached
                .identity
                .expires_at
                .is_none_or(|at| at > SystemTime::now());
        if valid {
            Some(cached.identity.clone())
        } else {
            entries.map.remove(key);
            None
        }
    }

    /// Remembers `identity` for the TTL, or for `lifetime` if shorter.
    fn put(&self, key: Key, identity: Identity, lifetime: Option<Duration>) {
        let life = lifetime.map_or(self.ttl, |life| life.min(self.ttl));
        let now = Instant::now();
        let Some(expires) = now.checked_add(life).filter(|_| !life.is_zero()) else {
            return;
        };
        let cached = Cached {
            identity,
            inserted: now,
            expires,
        };
        self.entries
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key, cached, now);
    }
}

/// Feeds one optional field to `hash`, length-prefixed so that fields
/// cannot run into each other.
fn hash_field(hash: &mut Sha256, value: Option<&[u8]>) {
    match value {
        None => hash.update([0]),
        Some(value) => {
            hash.update([1]);
            hash.update((value.len() as u64).to_le_bytes());
            hash.update(value);
        }
    }
}

/// The cache's entries, bounded.
struct CacheEntries {
    capacity: usize,
    map: HashMap<Key, Cached>,
}

struct Cached {
    identity: Identity,
    inserted: Instant,
    expires: Instant,
}

impl CacheEntries {
    fn new(capacity: usize) -> CacheEntries {
        CacheEntries {
            capacity,
            map: HashMap::new(),
        }
    }

    /// Adds an entry; when full, expired entries go first, then the oldest.
    /// (The scans are linear, but only accepted logins insert, and only
    /// into a full cache.)
    fn insert(&mut self, key: Key, cached: Cached, now: Instant) {
        if !self.map.contains_key(&key) && self.map.len() >= self.capacity {
            self.map.retain(|_, entry| entry.expires > now);
            if self.map.len() >= self.capacity
                && let Some(oldest) = self
                    .map
                    .iter()
                    .min_by_key(|(_, entry)| entry.inserted)
                    .map(|(key, _)| *key)
            {
                self.map.remove(&oldest);
            }
        }
        self.map.insert(key, cached);
    }
}

#[cfg(test)]
mod tests;
