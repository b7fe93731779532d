//! The HTTP publish API's tokens (`api_token`, `api_tokens`), read from the
//! configuration into the server state; the API itself is in `http_api`.

use crate::auth::access::DestinationPattern;
use crate::config::ServerConfig;

/// One configured token and what it may publish to.
pub(crate) struct ScopedToken {
    pub(crate) token: String,
    /// `None`: every destination (`server.api_token`).
    destinations: Option<Vec<DestinationPattern>>,
}

impl std::fmt::Debug for ScopedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ScopedToken")
            .field("destinations", &self.destinations)
            .finish_non_exhaustive()
    }
}

impl ScopedToken {
    pub(crate) fn allows(&self, destination: &str) -> bool {
        self.destinations
            .as_ref()
            .is_none_or(|patterns| patterns.iter().any(|p| p.matches(destination)))
    }
}

/// The tokens of `api_token` and `api_tokens`.
///
/// # Errors
///
/// A message naming the token (by position, never by its value) whose
/// pattern is not valid.
pub(crate) fn tokens(config: &ServerConfig) -> Result<Vec<ScopedToken>, String> {
    let mut tokens: Vec<ScopedToken> = config
        .api_token
        .iter()
        .map(|token| ScopedToken {
            token: token.clone(),
            destinations: None,
        })
        .collect();
    for (i, scoped) in config.api_tokens.iter().enumerate() {
        if scoped.destinations.is_empty() {
            return Err(format!("api_tokens[{}]: lists no destinations", i + 1));
        }
        let destinations = scoped
            .destinations
            .iter()
            .map(|p| DestinationPattern::parse(p))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("api_tokens[{}]: {e}", i + 1))?;
        tokens.push(ScopedToken {
            token: scoped.token.clone(),
            destinations: Some(destinations),
        });
    }
    Ok(tokens)
}
