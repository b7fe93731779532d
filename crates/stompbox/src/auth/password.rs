//! Password users with argon2id hashes. (Skeleton: the implementation lands
//! with its tests.)

use super::{AuthError, Authenticator, ConnectRequest, Identity};
use crate::broker::BoxFuture;
use std::time::Duration;

/// One user who logs in with a password.
#[derive(Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PasswordUser {
    /// The login, which becomes the user name.
    pub name: String,
    /// An argon2id PHC string, as `stompbox hash-password` prints.
    pub password_hash: String,
    /// Roles.
    pub roles: Vec<String>,
}

impl PasswordUser {
    /// A user `name` with the argon2id PHC string `password_hash`.
    pub fn new(name: impl Into<String>, password_hash: impl Into<String>) -> PasswordUser {
        PasswordUser {
            name: name.into(),
            password_hash: password_hash.into(),
            roles: Vec::new(),
        }
    }

    /// The same user with `roles`.
    #[must_use]
    pub fn with_roles<I, R>(mut self, roles: I) -> PasswordUser
    where
        I: IntoIterator<Item = R>,
        R: Into<String>,
    {
        self.roles = roles.into_iter().map(Into::into).collect();
        self
    }
}

impl std::fmt::Debug for PasswordUser {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PasswordUser")
            .field("name", &self.name)
            .field("roles", &self.roles)
            .finish_non_exhaustive()
    }
}

/// Settings of password authentication.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct PasswordConfig {
    /// The users.
    pub users: Vec<PasswordUser>,
    /// How long a successful verification is remembered, so a reconnect
    /// costs no argon2 run. Zero turns the cache off. Default 5 min.
    pub cache_ttl: Duration,
    /// Most remembered verifications. Default 10,000.
    pub cache_entries: usize,
    /// Most argon2 runs at once. Default: the number of CPUs.
    pub max_concurrent_hashes: usize,
    /// Most logins waiting for an argon2 run; past it a login is refused
    /// as "unavailable". Default 256.
    pub max_waiting: usize,
}

impl PasswordConfig {
    /// Settings for `users`, every other field at its default.
    pub fn new(users: Vec<PasswordUser>) -> PasswordConfig {
        PasswordConfig {
            users,
            cache_ttl: Duration::from_secs(300),
            cache_entries: 10_000,
            max_concurrent_hashes: std::thread::available_parallelism()
                .map(std::num::NonZero::get)
                .unwrap_or(2),
            max_waiting: 256,
        }
    }
}

/// Authenticates password users.
#[derive(Debug)]
pub struct PasswordAuthenticator {
    config: PasswordConfig,
}

impl PasswordAuthenticator {
    /// Checks every hash and builds the authenticator.
    ///
    /// # Errors
    ///
    /// When a hash is not an argon2id PHC string, or a name is repeated.
    pub fn new(config: PasswordConfig) -> Result<PasswordAuthenticator, String> {
        Ok(PasswordAuthenticator { config })
    }
}

impl Authenticator for PasswordAuthenticator {
    fn authenticate<'a>(
        &'a self,
        _request: &'a ConnectRequest,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        let _ = &self.config;
        Box::pin(async {
            Err(AuthError::Unavailable(
                "passwords not implemented yet".into(),
            ))
        })
    }
}

/// Hashes `password` as an argon2id PHC string with a random salt.
///
/// # Errors
///
/// When hashing fails.
pub fn hash_password(password: &str) -> Result<String, String> {
    let _ = password;
    Err("not implemented yet".into())
}

/// Checks that `hash` is an argon2id PHC string this server can verify.
///
/// # Errors
///
/// A message saying what is wrong with it.
pub fn verify_password_hash(hash: &str) -> Result<(), String> {
    let _ = hash;
    Err("not implemented yet".into())
}
