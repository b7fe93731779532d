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
mod tests {
    use super::super::TransportKind;
    use super::*;
    use hyper::service::service_fn;
    use hyper_util::rt::TokioIo;
    use serde_json::json;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use stompbox_codec::Headers;
    use tokio::net::TcpListener;

    type Reply = Box<dyn Fn(&Value) -> (u16, String) + Send + Sync>;

    /// A stand-in authentication service.
    struct Service {
        hits: AtomicUsize,
        seen: Mutex<Vec<Seen>>,
        arrived: tokio::sync::Notify,
        delay: Duration,
        reply: Reply,
    }

    /// One request the service received.
    struct Seen {
        method: Method,
        content_type: Option<String>,
        body: Value,
    }

    impl Service {
        fn hits(&self) -> usize {
            self.hits.load(Ordering::SeqCst)
        }

        fn last(&self) -> Seen {
            self.seen.lock().unwrap().pop().expect("a request")
        }
    }

    async fn serve(
        reply: impl Fn(&Value) -> (u16, String) + Send + Sync + 'static,
    ) -> (String, Arc<Service>) {
        serve_with(reply, Duration::ZERO, None).await
    }

    /// Starts a service answering with `reply` after `delay`, over TLS when
    /// given an acceptor; returns its URL.
    async fn serve_with(
        reply: impl Fn(&Value) -> (u16, String) + Send + Sync + 'static,
        delay: Duration,
        tls: Option<tokio_rustls::TlsAcceptor>,
    ) -> (String, Arc<Service>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let port = listener.local_addr().expect("addr").port();
        let url = match tls {
            Some(_) => format!("https://localhost:{port}/auth?key=k"),
            None => format!("http://127.0.0.1:{port}/auth?key=k"),
        };
        let service = Arc::new(Service {
            hits: AtomicUsize::new(0),
            seen: Mutex::new(Vec::new()),
            arrived: tokio::sync::Notify::new(),
            delay,
            reply: Box::new(reply),
        });
        let shared = service.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let service = shared.clone();
                let tls = tls.clone();
                tokio::spawn(async move {
                    match tls {
                        Some(acceptor) => {
                            if let Ok(stream) = acceptor.accept(stream).await {
                                connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => connection(TokioIo::new(stream), service).await,
                    }
                });
            }
        });
        (url, service)
    }

    async fn connection<I>(io: I, service: Arc<Service>)
    where
        I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
    {
        let handler = service_fn(move |request| handle(service.clone(), request));
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(io, handler)
            .await;
    }

    async fn handle(
        service: Arc<Service>,
        request: Request<Incoming>,
    ) -> Result<http::Response<String>, std::convert::Infallible> {
        service.hits.fetch_add(1, Ordering::SeqCst);
        let method = request.method().clone();
        let content_type = request
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().expect("content-type").to_owned());
        let body = read_limited(request.into_body(), 1 << 20)
            .await
            .expect("request body");
        let body: Value = serde_json::from_slice(&body).expect("request JSON");
        let (status, answer) = (service.reply)(&body);
        service.seen.lock().unwrap().push(Seen {
            method,
            content_type,
            body,
        });
        service.arrived.notify_one();
        tokio::time::sleep(service.delay).await;
        Ok(http::Response::builder()
            .status(status)
            .header(header::CONTENT_TYPE, "application/json")
            .body(answer)
            .expect("response"))
    }

    /// Accepts alice/secret, refuses everyone else without a body.
    fn alice(body: &Value) -> (u16, String) {
        if body["login"] == "alice" && body["passcode"] == "secret" {
            let answer = json!({"user": "alice", "roles": ["admin", "ops"], "expires_in": 3600});
            (200, answer.to_string())
        } else {
            (401, String::new())
        }
    }

    fn authenticator(config: HttpAuthConfig) -> HttpAuthenticator {
        HttpAuthenticator::new(config).expect("authenticator")
    }

    fn tcp_request(login: &str, passcode: &str) -> ConnectRequest {
        let mut headers = Headers::new();
        headers.push_str("login", login);
        headers.push_str("passcode", passcode);
        ConnectRequest::new(
            "s1",
            headers,
            Handshake::tcp("192.0.2.7:5555".parse().expect("addr"), false),
        )
    }

    fn ws_request(
        connect: &[(&str, &str)],
        handshake: &[(&str, &str)],
        uri: &str,
        remote: &str,
    ) -> ConnectRequest {
        let mut headers = Headers::new();
        for (name, value) in connect {
            headers.push_str(name, value);
        }
        let mut map = http::HeaderMap::new();
        for (name, value) in handshake {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                http::HeaderValue::from_str(value).expect("value"),
            );
        }
        ConnectRequest::new(
            "s1",
            headers,
            Handshake {
                transport: TransportKind::WebSocket,
                tls: false,
                remote_addr: remote.parse().expect("addr"),
                headers: map,
                uri: Some(uri.parse().expect("uri")),
            },
        )
    }

    /// A WebSocket CONNECT as alice, with cookies, headers and a query.
    fn alice_over_websocket(passcode: &str, remote: &str, cookie: &str) -> ConnectRequest {
        ws_request(
            &[
                ("accept-version", "1.2"),
                ("host", "/"),
                ("login", "alice"),
                ("passcode", passcode),
                ("x-app", "first"),
                ("x-app", "second"),
            ],
            &[
                ("cookie", cookie),
                ("cookie", "extra=1"),
                ("authorization", "Bearer hs"),
                ("origin", "https://app.example"),
                ("x-multi", "a"),
                ("x-multi", "b"),
            ],
            "/ws?room=a%20b&token=t&room=second",
            remote,
        )
    }

    fn unavailable_detail(result: Result<Option<Identity>, AuthError>) -> String {
        match result {
            Err(AuthError::Unavailable(detail)) => detail,
            other => panic!("expected Unavailable, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn an_accepted_login_gives_the_user_and_roles() {
        let (url, service) = serve(alice).await;
        let auth = authenticator(HttpAuthConfig::new(url));
        let request = alice_over_websocket("secret", "192.0.2.7:5555", "session=abc; theme=dark");
        let identity = auth
            .authenticate(&request)
            .await
            .expect("accepted")
            .expect("a user");
        assert_eq!(identity.name, "alice");
        assert_eq!(identity.roles, ["admin", "ops"]);
        let expires_at = identity.expires_at.expect("an expiry");
        let now = SystemTime::now();
        assert!(expires_at > now + Duration::from_secs(3500));
        assert!(expires_at <= now + Duration::from_secs(3600));

        let seen = service.last();
        assert_eq!(seen.method, Method::POST);
        assert_eq!(seen.content_type.as_deref(), Some("application/json"));
        assert_eq!(
            seen.body,
            json!({
                "session_id": "s1",
                "login": "alice",
                "passcode": "secret",
                "connect_headers": {
                    "accept-version": "1.2",
                    "host": "/",
                    "login": "alice",
                    "x-app": "first",
                },
                "transport": "websocket",
                "tls": false,
                "remote_addr": "192.0.2.7:5555",
                "path": "/ws",
                "query": {"room": "a b", "token": "t"},
                "headers": {
                    "authorization": "Bearer hs",
                    "cookie": "session=abc; theme=dark; extra=1",
                    "origin": "https://app.example",
                    "x-multi": "a, b",
                },
                "cookies": {"session": "abc", "theme": "dark", "extra": "1"},
            })
        );

        // Over TCP there is no handshake to pass on.
        let tcp = tcp_request("alice", "secret");
        assert!(auth.authenticate(&tcp).await.expect("accepted").is_some());
        let seen = service.last();
        assert_eq!(seen.body["transport"], "tcp");
        assert_eq!(seen.body["path"], Value::Null);
        assert_eq!(seen.body["headers"], json!({}));
        assert_eq!(seen.body["query"], json!({}));
        assert_eq!(seen.body["cookies"], json!({}));
    }

    #[tokio::test]
    async fn a_refusal_passes_on_its_reason() {
        let long = "x".repeat(300);
        let (url, _service) = serve(move |body| {
            let reason = if body["login"] == "long" {
                long.clone()
            } else {
                "account\u{7}\n locked ".to_owned()
            };
            (403, json!({ "reason": reason }).to_string())
        })
        .await;
        let auth = authenticator(HttpAuthConfig::new(url));
        assert_eq!(
            auth.authenticate(&tcp_request("bob", "pw")).await,
            Err(AuthError::Refused("account locked".into()))
        );
        assert_eq!(
            auth.authenticate(&tcp_request("long", "pw")).await,
            Err(AuthError::Refused("x".repeat(200)))
        );
    }

    #[tokio::test]
    async fn a_refusal_without_a_reason_is_bad_credentials() {
        let (url, service) = serve(|body| {
            let answer = match body["login"].as_str() {
                Some("empty") => json!({"reason": " \u{1} "}).to_string(),
                Some("number") => json!({"reason": 5}).to_string(),
                _ => String::new(),
            };
            (401, answer)
        })
        .await;
        let auth = authenticator(HttpAuthConfig::new(url));
        for login in ["bob", "empty", "number"] {
            assert_eq!(
                auth.authenticate(&tcp_request(login, "pw")).await,
                Err(AuthError::BadCredentials),
                "{login}"
            );
        }
        // Refusals are not remembered.
        assert_eq!(
            auth.authenticate(&tcp_request("bob", "pw")).await,
            Err(AuthError::BadCredentials)
        );
        assert_eq!(service.hits(), 4);
    }

    #[tokio::test]
    async fn a_server_error_is_unavailable() {
        let (url, _service) = serve(|_| (500, "{\"user\": \"alice\"}".into())).await;
        let auth = authenticator(HttpAuthConfig::new(url));
        let error = auth
            .authenticate(&tcp_request("alice", "secret"))
            .await
            .expect_err("refused");
        assert_eq!(error.reason(), "service_unavailable");
        // The client is not told the details.
        assert!(!error.to_string().contains("500"), "{error}");
        let AuthError::Unavailable(detail) = error else {
            panic!("not unavailable")
        };
        assert!(detail.contains("500"), "{detail}");
    }

    #[tokio::test]
    async fn invalid_answers_are_unavailable() {
        let (url, _service) = serve(|body| {
            let answer = match body["login"].as_str().expect("login") {
                "text" => "not json".to_owned(),
                "array" => "[\"alice\"]".to_owned(),
                "number" => json!({"user": 5}).to_string(),
                "empty" => json!({"user": ""}).to_string(),
                "long" => json!({"user": "a".repeat(257)}).to_string(),
                "control" => json!({"user": "ali\nce"}).to_string(),
                "roles" => json!({"user": "alice", "roles": vec!["r"; 65]}).to_string(),
                "role" => json!({"user": "alice", "roles": [1]}).to_string(),
                "expiry" => json!({"user": "alice", "expires_in": -1}).to_string(),
                _ => json!({"user": "a".repeat(256), "roles": vec!["r"; 64]}).to_string(),
            };
            (200, answer)
        })
        .await;
        let auth = authenticator(HttpAuthConfig::new(url));
        for login in [
            "text", "array", "number", "empty", "long", "control", "roles", "role", "expiry",
        ] {
            let result = auth.authenticate(&tcp_request(login, "pw")).await;
            assert!(
                matches!(result, Err(AuthError::Unavailable(_))),
                "{login}: {result:?}"
            );
        }
        // Right at the limits is fine.
        let identity = auth
            .authenticate(&tcp_request("limits", "pw"))
            .await
            .expect("accepted")
            .expect("a user");
        assert_eq!(identity.roles.len(), 64);
    }

    #[tokio::test]
    async fn no_user_is_anonymous() {
        let (url, service) = serve(|body| {
            let answer = match body["login"].as_str() {
                Some("null") => json!({"user": null}),
                _ => json!({"note": "no user"}),
            };
            (200, answer.to_string())
        })
        .await;
        let auth = authenticator(HttpAuthConfig::new(url));
        assert_eq!(auth.authenticate(&tcp_request("null", "")).await, Ok(None));
        assert_eq!(auth.authenticate(&tcp_request("none", "")).await, Ok(None));
        // Not remembered: only users are.
        assert_eq!(auth.authenticate(&tcp_request("none", "")).await, Ok(None));
        assert_eq!(service.hits(), 3);
    }

    #[tokio::test]
    async fn a_slow_service_times_out() {
        let (url, _service) = serve_with(alice, Duration::from_secs(10), None).await;
        let mut config = HttpAuthConfig::new(url);
        config.timeout = Duration::from_millis(200);
        let auth = authenticator(config);
        let started = std::time::Instant::now();
        let detail = unavailable_detail(auth.authenticate(&tcp_request("alice", "secret")).await);
        assert!(started.elapsed() < Duration::from_secs(2), "took too long");
        assert!(detail.contains("within"), "{detail}");
    }

    #[tokio::test]
    async fn a_service_that_is_down_is_unavailable() {
        let port = {
            let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
            listener.local_addr().expect("addr").port()
        };
        let auth = authenticator(HttpAuthConfig::new(format!("http://127.0.0.1:{port}/")));
        let detail = unavailable_detail(auth.authenticate(&tcp_request("alice", "secret")).await);
        assert!(detail.contains("request failed"), "{detail}");
    }

    #[tokio::test]
    async fn an_oversized_answer_is_unavailable() {
        let (url, _service) = serve(|_| {
            let padding = "x".repeat(100 * 1024);
            (
                200,
                json!({"user": "alice", "padding": padding}).to_string(),
            )
        })
        .await;
        let auth = authenticator(HttpAuthConfig::new(url));
        let detail = unavailable_detail(auth.authenticate(&tcp_request("alice", "secret")).await);
        assert!(detail.contains("larger than"), "{detail}");
    }

    #[tokio::test]
    async fn accepted_logins_are_remembered_by_their_credentials() {
        let (url, service) = serve(alice).await;
        let auth = authenticator(HttpAuthConfig::new(url));
        let cookie = "session=abc";
        let request = alice_over_websocket("secret", "192.0.2.7:5555", cookie);
        let first = auth.authenticate(&request).await.expect("accepted");
        assert_eq!(auth.authenticate(&request).await.expect("accepted"), first);
        assert_eq!(service.hits(), 1);
        // A reconnection from another port of the same address.
        let reconnect = alice_over_websocket("secret", "192.0.2.7:6000", cookie);
        assert_eq!(
            auth.authenticate(&reconnect).await.expect("accepted"),
            first
        );
        assert_eq!(service.hits(), 1);

        let wrong = alice_over_websocket("wrong", "192.0.2.7:5555", cookie);
        assert_eq!(
            auth.authenticate(&wrong).await,
            Err(AuthError::BadCredentials)
        );
        assert_eq!(service.hits(), 2);
        let other_address = alice_over_websocket("secret", "192.0.2.8:5555", cookie);
        assert!(auth.authenticate(&other_address).await.is_ok());
        assert_eq!(service.hits(), 3);
        let other_cookie = alice_over_websocket("secret", "192.0.2.7:5555", "session=xyz");
        assert!(auth.authenticate(&other_cookie).await.is_ok());
        assert_eq!(service.hits(), 4);
    }

    #[tokio::test]
    async fn every_field_the_service_sees_is_part_of_the_cache_key() {
        // A service that knows its users by a CONNECT header of its own:
        // a client without that header must not get alice's cached answer.
        let (url, service) = serve(
            |body| match body["connect_headers"]["x-auth-token"].as_str() {
                Some("alice-token") => (200, json!({"user": "alice"}).to_string()),
                _ => (200, json!({"user": null}).to_string()),
            },
        )
        .await;
        let auth = authenticator(HttpAuthConfig::new(url));
        let alice = ws_request(
            &[("x-auth-token", "alice-token")],
            &[("user-agent", "x")],
            "/ws",
            "192.0.2.7:5555",
        );
        let nobody = ws_request(&[], &[("user-agent", "x")], "/ws", "192.0.2.7:5555");
        let other_header = ws_request(
            &[("x-auth-token", "alice-token")],
            &[("user-agent", "x"), ("x-forwarded-user", "bob")],
            "/ws",
            "192.0.2.7:5555",
        );
        assert!(auth.authenticate(&alice).await.expect("ok").is_some());
        assert_eq!(auth.authenticate(&nobody).await.expect("ok"), None);
        assert_eq!(service.hits(), 2);
        assert!(
            auth.authenticate(&other_header)
                .await
                .expect("ok")
                .is_some()
        );
        assert_eq!(service.hits(), 3);
        // Alice again, on new handshakes (fresh WebSocket keys and ports):
        // answered from the cache.
        let again = ws_request(
            &[("x-auth-token", "alice-token")],
            &[("user-agent", "x"), ("sec-websocket-key", "fresh")],
            "/ws",
            "192.0.2.7:6000",
        );
        let again_too = ws_request(
            &[("x-auth-token", "alice-token")],
            &[("user-agent", "x"), ("sec-websocket-key", "other")],
            "/ws",
            "192.0.2.7:6001",
        );
        assert!(auth.authenticate(&again).await.expect("ok").is_some());
        assert!(auth.authenticate(&again_too).await.expect("ok").is_some());
        assert_eq!(service.hits(), 3);
    }

    #[tokio::test]
    async fn a_zero_ttl_turns_the_cache_off() {
        let (url, service) = serve(alice).await;
        let mut config = HttpAuthConfig::new(url);
        config.cache_ttl = Duration::ZERO;
        let auth = authenticator(config);
        let request = tcp_request("alice", "secret");
        for _ in 0..2 {
            assert!(auth.authenticate(&request).await.expect("ok").is_some());
        }
        assert_eq!(service.hits(), 2);
    }

    #[tokio::test]
    async fn remembered_logins_expire_with_the_ttl_or_the_identity() {
        let (url, service) = serve(|body| {
            let answer = match body["login"].as_str() {
                Some("alice") => json!({"user": "alice", "expires_in": 1}),
                _ => json!({"user": "bob"}),
            };
            (200, answer.to_string())
        })
        .await;
        let mut config = HttpAuthConfig::new(url);
        config.cache_ttl = Duration::from_secs(5);
        let auth = authenticator(config);
        let alice = tcp_request("alice", "a");
        let bob = tcp_request("bob", "b");
        for _ in 0..2 {
            auth.authenticate(&alice).await.expect("alice");
            auth.authenticate(&bob).await.expect("bob");
        }
        assert_eq!(service.hits(), 2);

        // The clock is moved only between exchanges, so that no timeout
        // fires while the service is being asked.
        async fn wait(by: Duration) {
            tokio::time::pause();
            tokio::time::advance(by).await;
            tokio::time::resume();
        }
        wait(Duration::from_millis(1500)).await;
        auth.authenticate(&alice).await.expect("alice");
        assert_eq!(service.hits(), 3, "alice's identity expired");
        auth.authenticate(&bob).await.expect("bob");
        assert_eq!(service.hits(), 3, "bob is still remembered");
        wait(Duration::from_secs(4)).await;
        auth.authenticate(&bob).await.expect("bob");
        assert_eq!(service.hits(), 4, "the TTL passed");
    }

    #[test]
    fn a_full_cache_drops_expired_entries_then_the_oldest() {
        let t0 = Instant::now();
        let entry = |inserted: Instant, expires: Instant| Cached {
            identity: Identity::new("u"),
            inserted,
            expires,
        };
        let long = Duration::from_secs(60);
        let mut entries = CacheEntries::new(2);
        entries.insert([1; 32], entry(t0, t0 + long), t0);
        entries.insert([2; 32], entry(t0 + Duration::from_secs(1), t0 + long), t0);
        entries.insert([3; 32], entry(t0 + Duration::from_secs(2), t0 + long), t0);
        assert!(!entries.map.contains_key(&[1; 32]), "the oldest goes");
        assert_eq!(entries.map.len(), 2);

        let mut entries = CacheEntries::new(2);
        entries.insert([1; 32], entry(t0, t0 + long), t0);
        let soon = t0 + Duration::from_secs(3);
        entries.insert([2; 32], entry(t0 + Duration::from_secs(1), soon), t0);
        let later = t0 + Duration::from_secs(5);
        entries.insert([3; 32], entry(later, later + long), later);
        assert!(entries.map.contains_key(&[1; 32]), "the older entry stays");
        assert!(!entries.map.contains_key(&[2; 32]), "the expired one goes");
        assert!(entries.map.contains_key(&[3; 32]));
    }

    #[tokio::test]
    async fn past_max_in_flight_a_login_is_refused_at_once() {
        let (url, service) = serve_with(alice, Duration::from_secs(30), None).await;
        let mut config = HttpAuthConfig::new(url);
        config.max_in_flight = 1;
        config.timeout = Duration::from_secs(30);
        let auth = Arc::new(authenticator(config));
        let first = tokio::spawn({
            let auth = auth.clone();
            async move { auth.authenticate(&tcp_request("alice", "secret")).await }
        });
        service.arrived.notified().await;

        let started = std::time::Instant::now();
        let detail = unavailable_detail(auth.authenticate(&tcp_request("bob", "pw")).await);
        assert!(started.elapsed() < Duration::from_secs(2), "it waited");
        assert_eq!(detail, TOO_MANY_REQUESTS);
        assert_eq!(service.hits(), 1);

        // The permit comes back when the first request ends.
        first.abort();
        let _ = first.await;
        assert_eq!(auth.in_flight.available_permits(), 1);
    }

    #[test]
    fn new_refuses_unusable_settings() {
        let error = |config: HttpAuthConfig| HttpAuthenticator::new(config).expect_err("refused");
        let message = error(HttpAuthConfig::new("ftp://x/auth"));
        assert!(message.contains("http:// or https://"), "{message}");
        let message = error(HttpAuthConfig::new("/auth"));
        assert!(message.contains("http:// or https://"), "{message}");
        for url in ["http:///auth", "http://:80/auth", "https://"] {
            let message = error(HttpAuthConfig::new(url));
            assert!(message.contains(url), "{message}");
            assert!(message.contains("no host"), "{message}");
        }
        let message = error(HttpAuthConfig::new("http://user:pw@auth.example/"));
        assert!(message.contains("user info"), "{message}");

        let dir = std::env::temp_dir();
        let missing = dir.join(format!(
            "stompbox-httpauth-missing-{}.pem",
            std::process::id()
        ));
        let mut config = HttpAuthConfig::new("https://auth.example/");
        config.ca_file = Some(missing.clone());
        let message = error(config);
        assert!(
            message.contains(&missing.display().to_string()),
            "{message}"
        );

        let empty = dir.join(format!(
            "stompbox-httpauth-empty-{}.pem",
            std::process::id()
        ));
        std::fs::write(&empty, "").expect("write");
        let mut config = HttpAuthConfig::new("https://auth.example/");
        config.ca_file = Some(empty.clone());
        let message = error(config);
        let _ = std::fs::remove_file(&empty);
        assert!(message.contains("no certificates"), "{message}");

        // Building needs no runtime (the server may build its chain before
        // starting one).
        HttpAuthenticator::new(HttpAuthConfig::new("https://auth.example/check"))
            .expect("usable settings");

        let mut config = HttpAuthConfig::new("http://auth.example/");
        config.max_in_flight = 0;
        assert!(error(config).contains("max_in_flight"));
        let mut config = HttpAuthConfig::new("http://auth.example/");
        config.timeout = Duration::ZERO;
        assert!(error(config).contains("timeout"));
    }

    /// A throw-away CA and a certificate for `localhost` it signed; returns
    /// the CA's PEM and an acceptor presenting the certificate.
    fn pki() -> (String, tokio_rustls::TlsAcceptor) {
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        let ca = rcgen::CertifiedIssuer::self_signed(
            ca_params,
            rcgen::KeyPair::generate().expect("key"),
        )
        .expect("ca");
        let leaf_key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
            .expect("params")
            .signed_by(&leaf_key, &ca)
            .expect("leaf");
        let key =
            rustls_pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).expect("key der");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(vec![leaf.der().clone()], key)
            .expect("server config");
        (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
    }

    #[tokio::test]
    async fn https_with_a_trusted_ca() {
        let (ca_pem, acceptor) = pki();
        let (url, service) = serve_with(alice, Duration::ZERO, Some(acceptor)).await;
        let ca_file =
            std::env::temp_dir().join(format!("stompbox-httpauth-ca-{}.pem", std::process::id()));
        std::fs::write(&ca_file, ca_pem).expect("write CA");
        let mut config = HttpAuthConfig::new(url.clone());
        config.ca_file = Some(ca_file.clone());
        let built = HttpAuthenticator::new(config);
        let _ = std::fs::remove_file(&ca_file);
        let auth = built.expect("authenticator");
        let identity = auth
            .authenticate(&tcp_request("alice", "secret"))
            .await
            .expect("accepted")
            .expect("a user");
        assert_eq!(identity.name, "alice");
        assert_eq!(service.hits(), 1);

        // With only the public roots, the service is not trusted.
        let untrusting = authenticator(HttpAuthConfig::new(url));
        let detail = unavailable_detail(
            untrusting
                .authenticate(&tcp_request("alice", "secret"))
                .await,
        );
        assert!(detail.contains("certificate"), "{detail}");
        assert_eq!(service.hits(), 1);
    }
}
