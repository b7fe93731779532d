//! JSON Web Tokens. (Skeleton: the implementation lands with its tests.)

use super::{AuthError, Authenticator, ConnectRequest, Identity};
use crate::broker::BoxFuture;
use std::time::Duration;

/// The key tokens are verified with; it also fixes the algorithms accepted.
#[derive(Clone)]
#[non_exhaustive]
pub enum JwtKey {
    /// A shared secret: HS256.
    Secret(Vec<u8>),
    /// A PEM public key: RS256 (RSA), ES256 (P-256) or EdDSA (Ed25519).
    PublicKeyPem(Vec<u8>),
    /// A JWK set (JSON); the token's `kid` picks the key.
    Jwks(String),
}

impl std::fmt::Debug for JwtKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            JwtKey::Secret(_) => "Secret(..)",
            JwtKey::PublicKeyPem(_) => "PublicKeyPem(..)",
            JwtKey::Jwks(_) => "Jwks(..)",
        })
    }
}

/// Settings of JWT authentication.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct JwtConfig {
    /// The verification key.
    pub key: JwtKey,
    /// Required `iss`, if set. Default `None`.
    pub issuer: Option<String>,
    /// Required `aud` (one of the token's), if set. Default `None`.
    pub audience: Option<String>,
    /// Claim holding the user name. Default `sub`.
    pub user_claim: String,
    /// Claim holding the roles (an array of strings, or one string of
    /// space-separated roles); a dotted path reaches into objects
    /// (`realm_access.roles`). Default `roles`.
    pub roles_claim: String,
    /// Cookie carrying the token, if any. Default `None`.
    pub cookie: Option<String>,
    /// Clock skew allowed on `exp` and `nbf`. Default 30 s.
    pub leeway: Duration,
}

impl JwtConfig {
    /// Settings with `key` and every other field at its default.
    pub fn new(key: JwtKey) -> JwtConfig {
        JwtConfig {
            key,
            issuer: None,
            audience: None,
            user_claim: "sub".into(),
            roles_claim: "roles".into(),
            cookie: None,
            leeway: Duration::from_secs(30),
        }
    }
}

/// Authenticates with JSON Web Tokens.
#[derive(Debug)]
pub struct JwtAuthenticator {
    config: JwtConfig,
}

impl JwtAuthenticator {
    /// Checks the key and builds the authenticator.
    ///
    /// # Errors
    ///
    /// When the key cannot be used.
    pub fn new(config: JwtConfig) -> Result<JwtAuthenticator, String> {
        Ok(JwtAuthenticator { config })
    }
}

impl Authenticator for JwtAuthenticator {
    fn authenticate<'a>(
        &'a self,
        _request: &'a ConnectRequest,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        let _ = &self.config;
        Box::pin(async { Err(AuthError::Unavailable("JWT not implemented yet".into())) })
    }
}
