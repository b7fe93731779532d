//! An HTTP authentication service. (Skeleton: the implementation lands with
//! its tests.)

use super::{AuthError, Authenticator, ConnectRequest, Identity};
use crate::broker::BoxFuture;
use std::time::Duration;

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

/// Authenticates by asking an HTTP service.
#[derive(Debug)]
pub struct HttpAuthenticator {
    config: HttpAuthConfig,
}

impl HttpAuthenticator {
    /// Checks the URL and builds the authenticator.
    ///
    /// # Errors
    ///
    /// When the URL or the CA file cannot be used.
    pub fn new(config: HttpAuthConfig) -> Result<HttpAuthenticator, String> {
        Ok(HttpAuthenticator { config })
    }
}

impl Authenticator for HttpAuthenticator {
    fn authenticate<'a>(
        &'a self,
        _request: &'a ConnectRequest,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        let _ = &self.config;
        Box::pin(async {
            Err(AuthError::Unavailable(
                "HTTP auth not implemented yet".into(),
            ))
        })
    }
}
