//! Identity and access: who a session is, and what it may do.
//!
//! An [`Authenticator`] turns one CONNECT attempt (the CONNECT frame's
//! headers plus what the server saw before it: the WebSocket handshake's
//! headers, cookies and query, the client's address) into a verified
//! [`Identity`], or refuses it. Only an identity an authenticator returned
//! ever names a user: a client-sent `login` alone never does, so without an
//! authenticator every session is anonymous.
//!
//! The built-in methods are authenticators too: password users
//! ([`PasswordAuthenticator`], argon2id hashes), JSON Web Tokens
//! ([`JwtAuthenticator`]) and an HTTP service ([`HttpAuthenticator`]). An
//! application may write its own and give it to
//! [`ServerBuilder::authenticator`](crate::ServerBuilder::authenticator).
//!
//! [`access`] decides, per destination, who may SEND and SUBSCRIBE.

pub mod access;
mod http_backend;
mod jwt;
mod password;
pub(crate) mod user;

pub use http_backend::{HttpAuthConfig, HttpAuthenticator};
pub use jwt::{JwtAuthenticator, JwtConfig, JwtKey};
pub use password::{
    PasswordAuthenticator, PasswordConfig, PasswordUser, hash_password, verify_password_hash,
};
pub use user::User;

use crate::broker::BoxFuture;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use stompbox_codec::{Headers, header};

/// A verified identity: what an [`Authenticator`] vouches for.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Identity {
    /// The user name. It names the user's `/user/…` destinations.
    pub name: String,
    /// Roles, for the access rules (`role:admin`) and the application.
    pub roles: Vec<String>,
    /// When the credential stops being valid (a token's `exp`): the session
    /// is then sent an ERROR and closed. `None`: valid for the session.
    pub expires_at: Option<SystemTime>,
}

impl Identity {
    /// An identity named `name`, without roles, that does not expire.
    pub fn new(name: impl Into<String>) -> Identity {
        Identity {
            name: name.into(),
            roles: Vec::new(),
            expires_at: None,
        }
    }

    /// The same identity with `roles`.
    #[must_use]
    pub fn with_roles<I, R>(mut self, roles: I) -> Identity
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }

    /// The same identity, valid until `at`.
    #[must_use]
    pub fn expiring_at(mut self, at: SystemTime) -> Identity {
        self.expires_at = Some(at);
        self
    }
}

/// How a connection reached the server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum TransportKind {
    /// STOMP over WebSocket.
    WebSocket,
    /// Plain STOMP over TCP.
    Tcp,
}

impl TransportKind {
    /// `websocket` or `tcp`.
    pub fn as_str(self) -> &'static str {
        match self {
            TransportKind::WebSocket => "websocket",
            TransportKind::Tcp => "tcp",
        }
    }
}

/// What the server knows about a connection before its CONNECT frame.
///
/// Held only until the CONNECT frame has been handled: an idle session does
/// not keep its handshake's headers in memory.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Handshake {
    /// WebSocket or TCP.
    pub transport: TransportKind,
    /// Whether the connection is TLS (`wss://`, or STOMP over TLS).
    pub tls: bool,
    /// The client's address. Behind a trusted proxy
    /// (`ServerConfig::trusted_proxies`), the address it forwarded.
    pub remote_addr: SocketAddr,
    /// The WebSocket upgrade request's headers; empty for TCP.
    pub headers: http::HeaderMap,
    /// The WebSocket upgrade request's path and query; `None` for TCP.
    pub uri: Option<http::Uri>,
}

impl Handshake {
    /// A handshake of a plain TCP connection from `remote_addr`.
    pub fn tcp(remote_addr: SocketAddr, tls: bool) -> Handshake {
        Handshake {
            transport: TransportKind::Tcp,
            tls,
            remote_addr,
            headers: http::HeaderMap::new(),
            uri: None,
        }
    }

    /// The first value of the handshake header `name`, if it is text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `Origin` header of a WebSocket handshake.
    pub fn origin(&self) -> Option<&str> {
        self.header(http::header::ORIGIN.as_str())
    }

    /// The token of an `Authorization: Bearer <token>` handshake header.
    pub fn bearer_token(&self) -> Option<&str> {
        self.headers
            .get_all(http::header::AUTHORIZATION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .find_map(bearer)
    }

    /// The value of cookie `name` (from every `Cookie` header).
    pub fn cookie(&self, name: &str) -> Option<&str> {
        self.headers
            .get_all(http::header::COOKIE)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(';'))
            .find_map(|pair| {
                let (n, v) = pair.split_once('=')?;
                (n.trim() == name).then(|| v.trim().trim_matches('"'))
            })
    }

    /// The percent-decoded value of query parameter `name`.
    pub fn query(&self, name: &str) -> Option<String> {
        let query = self.uri.as_ref()?.query()?;
        query.split('&').find_map(|pair| {
            let (n, v) = pair.split_once('=').unwrap_or((pair, ""));
            (percent_decode(n)? == name).then(|| percent_decode(v))?
        })
    }
}

/// The token of an `Authorization` value `Bearer <token>` (scheme in any case).
pub(crate) fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

/// Decodes `%XX` escapes and `+` (a space, in a query); `None` when the
/// result is not UTF-8 or an escape is broken.
fn percent_decode(text: &str) -> Option<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hex = text.get(i + 1..i + 3)?;
                out.push(u8::from_str_radix(hex, 16).ok()?);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            b => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8(out).ok()
}

/// One CONNECT attempt: the CONNECT frame's headers and the handshake.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectRequest {
    /// The id the session will have.
    pub session_id: Arc<str>,
    /// Every header of the CONNECT (or STOMP) frame.
    pub headers: Headers,
    /// What the server saw before the CONNECT frame.
    pub handshake: Arc<Handshake>,
}

impl ConnectRequest {
    /// A request with `headers` over `handshake` (for tests and custom
    /// transports; the server builds its own).
    pub fn new(session_id: &str, headers: Headers, handshake: Handshake) -> ConnectRequest {
        ConnectRequest {
            session_id: session_id.into(),
            headers,
            handshake: Arc::new(handshake),
        }
    }

    /// The CONNECT `login` header.
    pub fn login(&self) -> Option<&str> {
        self.headers.get(header::LOGIN)
    }

    /// The CONNECT `passcode` header.
    pub fn passcode(&self) -> Option<&str> {
        self.headers.get(header::PASSCODE)
    }

    /// The token of a CONNECT header `Authorization: Bearer <token>` (as
    /// @stomp/stompjs sends with `connectHeaders`).
    pub fn connect_bearer_token(&self) -> Option<&str> {
        self.headers
            .iter()
            .filter(|(name, _)| name.eq_ignore_ascii_case("authorization"))
            .find_map(|(_, value)| bearer(value))
    }
}

/// Why a CONNECT was refused. The client gets an ERROR whose `message` is
/// `access refused: ` and this error's text.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum AuthError {
    /// Wrong login or passcode. An unknown user gets the same answer, so a
    /// client cannot learn which user names exist.
    #[error("wrong login or passcode")]
    BadCredentials,
    /// The token is not valid: malformed, wrongly signed, or for another
    /// issuer or audience.
    #[error("invalid token: {0}")]
    InvalidToken(String),
    /// The token's `exp` has passed.
    #[error("the token has expired")]
    TokenExpired,
    /// The token's `nbf` is still to come.
    #[error("the token is not valid yet")]
    TokenNotYetValid,
    /// The CONNECT carried no credentials and anonymous sessions are off.
    #[error("authentication required: send a login and passcode or a token")]
    Required,
    /// The authentication service could not be asked.
    #[error("the authentication service is unavailable; try again later")]
    Unavailable(String),
    /// Refused for a reason of the application or service.
    #[error("{0}")]
    Refused(String),
}

impl AuthError {
    /// A short stable label, for logs and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            AuthError::BadCredentials => "bad_credentials",
            AuthError::InvalidToken(_) => "invalid_token",
            AuthError::TokenExpired => "token_expired",
            AuthError::TokenNotYetValid => "token_not_yet_valid",
            AuthError::Required => "credentials_required",
            AuthError::Unavailable(_) => "service_unavailable",
            AuthError::Refused(_) => "refused",
        }
    }
}

/// Turns a CONNECT attempt into an identity.
///
/// `Ok(Some(identity))` authenticates the session. `Ok(None)` means the
/// request carries no credentials this method deals with: the next method
/// of an [`AuthChain`] decides, and after the last one the session is
/// anonymous if the server allows that. `Err` refuses the CONNECT.
///
/// Calls run on the connection's task: an implementation that does heavy
/// work (hashing) moves it off the async workers, and one that asks a
/// service bounds the time it waits.
pub trait Authenticator: Send + Sync + 'static {
    /// Authenticates one CONNECT attempt.
    fn authenticate<'a>(
        &'a self,
        request: &'a ConnectRequest,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>>;
}

impl<A: Authenticator + ?Sized> Authenticator for Arc<A> {
    fn authenticate<'a>(
        &'a self,
        request: &'a ConnectRequest,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        (**self).authenticate(request)
    }
}

/// Several authenticators, asked in order: the first that returns an
/// identity or a refusal decides.
#[derive(Clone, Default)]
pub struct AuthChain {
    methods: Vec<Arc<dyn Authenticator>>,
}

impl std::fmt::Debug for AuthChain {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuthChain")
            .field("methods", &self.methods.len())
            .finish()
    }
}

impl AuthChain {
    /// An empty chain: every request is without credentials.
    pub fn new() -> AuthChain {
        AuthChain::default()
    }

    /// Adds `method` after the others.
    #[must_use]
    pub fn with(mut self, method: impl Authenticator) -> AuthChain {
        self.methods.push(Arc::new(method));
        self
    }

    /// True when no method was added.
    pub fn is_empty(&self) -> bool {
        self.methods.is_empty()
    }
}

impl Authenticator for AuthChain {
    fn authenticate<'a>(
        &'a self,
        request: &'a ConnectRequest,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        Box::pin(async move {
            for method in &self.methods {
                if let Some(identity) = method.authenticate(request).await? {
                    return Ok(Some(identity));
                }
            }
            Ok(None)
        })
    }
}

/// Authentication and access settings of a server. With no method set
/// (the default) every session is anonymous and a client's `login` is
/// ignored.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct AuthConfig {
    /// Users with argon2id password hashes. Default none.
    pub passwords: Option<PasswordConfig>,
    /// JSON Web Tokens. Default off.
    pub jwt: Option<JwtConfig>,
    /// An HTTP authentication service. Default off.
    pub http: Option<HttpAuthConfig>,
    /// Whether a CONNECT without credentials is let in as an anonymous
    /// session when some method is configured. Default `false`. (Without
    /// any method every session is anonymous.)
    pub allow_anonymous: bool,
    /// Who may SEND and SUBSCRIBE where. Default: open (see
    /// [`access::AccessRules::open`]).
    pub rules: access::AccessRules,
    /// Time a refused CONNECT waits before its ERROR, which slows down
    /// password guessing. Default 1 s.
    pub failure_delay: Duration,
    /// Most sessions of one user at once on this server; 0 is no limit.
    /// Default 100.
    pub max_sessions_per_user: usize,
    /// Most failed logins per client address per minute (as many at once);
    /// past it, CONNECTs with credentials from that address are refused
    /// without being checked, so password guessing cannot keep the server
    /// hashing. 0 is no limit. Default 30.
    pub failures_per_address_per_min: u32,
}

impl Default for AuthConfig {
    fn default() -> AuthConfig {
        AuthConfig {
            passwords: None,
            jwt: None,
            http: None,
            allow_anonymous: false,
            rules: access::AccessRules::open(),
            failure_delay: Duration::from_secs(1),
            max_sessions_per_user: 100,
            failures_per_address_per_min: 30,
        }
    }
}

impl AuthConfig {
    /// True when some built-in method is configured.
    pub fn has_methods(&self) -> bool {
        self.passwords.is_some() || self.jwt.is_some() || self.http.is_some()
    }

    /// The built-in methods as one chain, in the order JWT, passwords, HTTP:
    /// a token is recognised by its shape, a password user by the login.
    ///
    /// # Errors
    ///
    /// When a key or users file cannot be used.
    pub fn chain(&self) -> Result<AuthChain, String> {
        let mut chain = AuthChain::new();
        if let Some(jwt) = &self.jwt {
            chain = chain.with(JwtAuthenticator::new(jwt.clone())?);
        }
        if let Some(passwords) = &self.passwords {
            chain = chain.with(PasswordAuthenticator::new(passwords.clone())?);
        }
        if let Some(http) = &self.http {
            chain = chain.with(HttpAuthenticator::new(http.clone())?);
        }
        Ok(chain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handshake(headers: &[(&str, &str)], uri: &str) -> Handshake {
        let mut map = http::HeaderMap::new();
        for (name, value) in headers {
            map.append(
                http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
                http::HeaderValue::from_str(value).expect("value"),
            );
        }
        Handshake {
            transport: TransportKind::WebSocket,
            tls: false,
            remote_addr: "127.0.0.1:1".parse().expect("addr"),
            headers: map,
            uri: Some(uri.parse().expect("uri")),
        }
    }

    #[test]
    fn handshake_reads_cookies_query_and_bearer_tokens() {
        let h = handshake(
            &[
                ("cookie", "a=1; session=abc.def; b=\"q\""),
                ("cookie", "c=3"),
                ("authorization", "bearer tok123"),
            ],
            "/ws?x=1&access_token=a%2Bb%20c&y",
        );
        assert_eq!(h.cookie("session"), Some("abc.def"));
        assert_eq!(h.cookie("b"), Some("q"));
        assert_eq!(h.cookie("c"), Some("3"));
        assert_eq!(h.cookie("sess"), None);
        assert_eq!(h.query("access_token").as_deref(), Some("a+b c"));
        assert_eq!(h.query("y").as_deref(), Some(""));
        assert_eq!(h.query("z"), None);
        assert_eq!(h.bearer_token(), Some("tok123"));
        let broken = handshake(&[("authorization", "Basic xyz")], "/ws?access_token=%zz");
        assert_eq!(broken.bearer_token(), None);
        assert_eq!(broken.query("access_token"), None);
    }

    #[test]
    fn connect_request_reads_its_headers() {
        let mut headers = Headers::new();
        headers.push_str("login", "alice");
        headers.push_str("passcode", "pw");
        headers.push_str("Authorization", "Bearer t.o.k");
        let request = ConnectRequest::new(
            "s1",
            headers,
            Handshake::tcp("127.0.0.1:1".parse().expect("addr"), false),
        );
        assert_eq!(request.login(), Some("alice"));
        assert_eq!(request.passcode(), Some("pw"));
        assert_eq!(request.connect_bearer_token(), Some("t.o.k"));
    }

    struct Fixed(Result<Option<Identity>, AuthError>);

    impl Authenticator for Fixed {
        fn authenticate<'a>(
            &'a self,
            _: &'a ConnectRequest,
        ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
            let answer = self.0.clone();
            Box::pin(async move { answer })
        }
    }

    #[tokio::test]
    async fn the_first_method_with_an_answer_decides() {
        let request = ConnectRequest::new(
            "s1",
            Headers::new(),
            Handshake::tcp("127.0.0.1:1".parse().expect("addr"), false),
        );
        let chain = AuthChain::new()
            .with(Fixed(Ok(None)))
            .with(Fixed(Ok(Some(Identity::new("bob")))))
            .with(Fixed(Err(AuthError::BadCredentials)));
        assert_eq!(
            chain.authenticate(&request).await,
            Ok(Some(Identity::new("bob")))
        );
        let refusing = AuthChain::new()
            .with(Fixed(Err(AuthError::BadCredentials)))
            .with(Fixed(Ok(Some(Identity::new("bob")))));
        assert_eq!(
            refusing.authenticate(&request).await,
            Err(AuthError::BadCredentials)
        );
        assert_eq!(AuthChain::new().authenticate(&request).await, Ok(None));
    }
}
