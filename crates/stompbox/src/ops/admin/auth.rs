//! Who may use the admin page and API: whoever sends the admin token, or a
//! user the server's authenticator verifies who holds the admin role.
//!
//! Credentials travel in the `Authorization` header of every request, never
//! in a cookie: a page of another origin cannot make the browser send them,
//! so the actions need no CSRF token.

use crate::auth::{AuthError, ConnectRequest, Handshake, Identity, TransportKind};
use crate::http_api::same;
use crate::shared::ServerShared;
use crate::upgrade::client_addr;
use base64::Engine;
use http::{HeaderMap, header};
use std::net::SocketAddr;
use std::time::SystemTime;
use stompbox_codec::Headers;

/// The name an operator who logged in with the admin token goes by, in
/// the logs and in "disconnected by".
pub(super) const TOKEN_OPERATOR: &str = "(admin token)";

/// An operator let in.
#[derive(Debug, Clone)]
pub(super) struct Operator {
    /// The verified user name, or [`TOKEN_OPERATOR`].
    pub(super) name: String,
    /// The client's address (behind trusted proxies, the forwarded one).
    pub(super) address: SocketAddr,
    /// When the credential stops being valid (a token's `exp`): an event
    /// stream opened with it ends then.
    pub(super) expires_at: Option<SystemTime>,
}

/// Why a request was not let in.
#[derive(Debug)]
pub(super) enum Refusal {
    /// No credentials, or wrong ones: 401.
    Unauthorized(&'static str),
    /// A verified user without the admin role: 403.
    Forbidden(String),
    /// The address used up its failed logins: 429.
    TooManyFailures,
    /// The authenticator could not be asked: 503.
    Unavailable(String),
}

/// The credentials an `Authorization` header carries.
enum Offered {
    Bearer(String),
    Basic { login: String, password: String },
}

/// The `Authorization` header's credentials; `None` when there is none or
/// it is in no form the admin API reads.
fn offered(headers: &HeaderMap) -> Option<Offered> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    if let Some(token) = crate::auth::bearer(value) {
        return Some(Offered::Bearer(token.to_owned()));
    }
    let (scheme, encoded) = value.trim().split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (login, password) = text.split_once(':')?;
    Some(Offered::Basic {
        login: login.to_owned(),
        password: password.to_owned(),
    })
}

/// Lets an operator in, or says why not. Wrong credentials count against
/// the address's failed logins, as a refused CONNECT does, and cost the
/// `auth.failure_delay` before the answer.
pub(super) async fn authorize(
    shared: &ServerShared,
    headers: &HeaderMap,
    peer: SocketAddr,
) -> Result<Operator, Refusal> {
    let address = client_addr(peer, headers, &shared.config.trusted_proxies);
    let Some(offered) = offered(headers) else {
        return Err(Refusal::Unauthorized(
            "admin credentials required: Authorization: Bearer <token>, or Basic for a user with the admin role",
        ));
    };
    // The configured token is checked before the failed-login limit: an
    // attacker sharing the operator's address (a NAT, an unlisted proxy)
    // must not lock the operator out by failing on purpose, and a token of
    // 16 characters or more cannot be guessed at any rate the limit would
    // have slowed.
    if let Some(operator) = by_token(shared, &offered, address) {
        return Ok(operator);
    }
    if !shared.addresses.login_begins(address.ip()) {
        tracing::info!(%address, "admin request refused: too many failed logins from this address");
        return Err(Refusal::TooManyFailures);
    }
    let login = match &offered {
        Offered::Basic { login, .. } => Some(login.clone()),
        Offered::Bearer(_) => None,
    };
    let outcome = verify(shared, offered, address).await;
    match &outcome {
        Err(Refusal::Unauthorized(_)) => {
            tracing::info!(%address, login = ?login, "admin login failed");
            // Each wrong guess costs the guesser this long.
            tokio::time::sleep(shared.config.auth.failure_delay).await;
        }
        // Not a wrong guess: a verified user, or an outage.
        _ => shared.addresses.login_done(address.ip()),
    }
    outcome
}

/// The operator, when `offered` is the configured admin token.
fn by_token(shared: &ServerShared, offered: &Offered, address: SocketAddr) -> Option<Operator> {
    match (offered, &shared.config.admin.token) {
        (Offered::Bearer(token), Some(expected)) if same(token.as_bytes(), expected.as_bytes()) => {
            Some(Operator {
                name: TOKEN_OPERATOR.to_owned(),
                address,
                expires_at: None,
            })
        }
        _ => None,
    }
}

async fn verify(
    shared: &ServerShared,
    offered: Offered,
    address: SocketAddr,
) -> Result<Operator, Refusal> {
    const WRONG: &str = "wrong admin credentials";
    let admin = &shared.config.admin;
    let (Some(role), Some(authenticator)) = (&admin.role, &shared.authenticator) else {
        return Err(Refusal::Unauthorized(WRONG));
    };
    // The credentials as a CONNECT frame would carry them, so every
    // authenticator (passwords, JWT, the HTTP service, an application's
    // own) reads them where it already looks.
    let mut connect = Headers::new();
    match &offered {
        Offered::Basic { login, password } => {
            connect.push_str("login", login);
            connect.push_str("passcode", password);
        }
        Offered::Bearer(token) => connect.push_str("Authorization", &format!("Bearer {token}")),
    }
    let handshake = Handshake {
        transport: TransportKind::WebSocket,
        tls: shared.tls.is_some(),
        remote_addr: address,
        headers: HeaderMap::new(),
        uri: None,
    };
    let request = ConnectRequest::new(
        &format!("admin-{}", shared.next_session_id()),
        connect,
        handshake,
    );
    // Application code: a panic or a hang refuses this request only.
    let answer = tokio::time::timeout(
        shared.config.connect_timeout,
        crate::router::guarded(authenticator.authenticate(&request)),
    )
    .await;
    let identity: Identity = match answer {
        Ok(Ok(Ok(Some(identity)))) => identity,
        Ok(Ok(Err(AuthError::Unavailable(why)))) => return Err(Refusal::Unavailable(why)),
        Ok(Ok(Ok(None) | Err(_))) => return Err(Refusal::Unauthorized(WRONG)),
        Ok(Err(())) => return Err(Refusal::Unavailable("the authenticator panicked".into())),
        Err(_) => {
            return Err(Refusal::Unavailable(
                "the authenticator took too long".into(),
            ));
        }
    };
    if identity.name.is_empty()
        || identity
            .expires_at
            .is_some_and(|at| at <= SystemTime::now())
    {
        return Err(Refusal::Unauthorized(WRONG));
    }
    if !identity.roles.iter().any(|r| r == role) {
        return Err(Refusal::Forbidden(format!(
            "user '{}' does not have the role '{role}'",
            identity.name
        )));
    }
    Ok(Operator {
        name: identity.name,
        address,
        expires_at: identity.expires_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with(value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(header::AUTHORIZATION, value.parse().expect("header value"));
        headers
    }

    #[test]
    fn authorization_headers_are_read_as_bearer_or_basic() {
        assert!(matches!(offered(&with("Bearer abc")), Some(Offered::Bearer(t)) if t == "abc"));
        // "admin-a:pw:with:colons"
        let basic = base64::engine::general_purpose::STANDARD.encode("admin-a:pw:x");
        match offered(&with(&format!("basic {basic}"))) {
            Some(Offered::Basic { login, password }) => {
                assert_eq!(login, "admin-a");
                assert_eq!(password, "pw:x");
            }
            _ => panic!("not read as Basic"),
        }
        assert!(offered(&with("Basic !!notbase64")).is_none());
        assert!(offered(&with("Digest x")).is_none());
        assert!(offered(&HeaderMap::new()).is_none());
    }
}
