//! The process's open-file limit, and how many connections fit under it.
//!
//! Every client connection costs a file descriptor (two with the relay's
//! per-session mode: the client's socket and its own link to the broker). A server allowed more
//! connections than descriptors does not refuse the surplus cleanly: its
//! `accept` fails and the clients wait unanswered. So `max_connections` is
//! lowered to what the limit allows, and a connection past it gets HTTP 503
//! or a STOMP ERROR.

use crate::broker::relay::RelayMode;
use crate::config::ServerConfig;
use std::io;

/// Descriptors kept for what is not a client: the listeners, the runtime's
/// own (epoll, event and signal descriptors), standard streams and log
/// files, the relay's system link, certificate files being reloaded,
/// refusals being written. Requests to an HTTP authentication service are
/// reserved for on top, see [`reserved`].
const RESERVED_DESCRIPTORS: u64 = 64;

/// The open-file limit before and after [`raise_open_file_limit`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct OpenFileLimit {
    /// The soft limit found; `None` is unlimited.
    pub before: Option<u64>,
    /// The soft limit now; `None` is unlimited.
    pub now: Option<u64>,
}

/// Raises the process's soft open-file limit (`RLIMIT_NOFILE`) to its hard
/// limit. A service manager often starts a process with a soft limit of
/// 1,024 and a much higher hard one, which would cap the connections a
/// server can take. It is a decision for the whole process, so the library
/// never does it by itself: the `stompbox` binary calls it at start, an
/// application embedding the server may.
///
/// # Errors
///
/// When the limit cannot be read or set; it is then unchanged. Always on
/// platforms without `setrlimit`.
pub fn raise_open_file_limit() -> io::Result<OpenFileLimit> {
    #[cfg(unix)]
    {
        use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
        let limit = getrlimit(Resource::Nofile);
        let raised = match (limit.current, limit.maximum) {
            (Some(current), Some(maximum)) if current < maximum => Some(maximum),
            // An unlimited hard limit is not a value the kernel takes for the
            // soft one everywhere (macOS refuses it): keep what there is.
            _ => None,
        };
        if let Some(maximum) = raised {
            setrlimit(
                Resource::Nofile,
                Rlimit {
                    current: Some(maximum),
                    maximum: limit.maximum,
                },
            )?;
        }
        Ok(OpenFileLimit {
            before: limit.current,
            now: raised.or(limit.current),
        })
    }
    #[cfg(not(unix))]
    {
        Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "no open-file limit to raise on this platform",
        ))
    }
}

/// The process's soft open-file limit; `None` when it is unlimited or
/// cannot be known.
fn open_file_limit() -> Option<u64> {
    #[cfg(unix)]
    {
        rustix::process::getrlimit(rustix::process::Resource::Nofile).current
    }
    #[cfg(not(unix))]
    {
        None
    }
}

/// What one client connection costs in descriptors: its socket, and in
/// the relay's per-session mode its own link to the broker.
fn descriptors_per_client(config: &ServerConfig) -> u64 {
    match &config.relay {
        Some(relay) if relay.mode == RelayMode::PerSession => 2,
        _ => 1,
    }
}

/// Descriptors kept for what is not a client: the fixed reserve, and each
/// request an HTTP authentication service may have outstanding.
fn reserved(config: &ServerConfig) -> u64 {
    let auth_requests = config
        .auth
        .http
        .as_ref()
        .map_or(0, |http| http.max_in_flight);
    // The shared relay's pool, and twice as many acknowledging links (in
    // use and retiring).
    let relay_links = match &config.relay {
        Some(relay) if relay.mode == RelayMode::Shared => relay.connections.max(1) * 3,
        _ => 0,
    };
    RESERVED_DESCRIPTORS
        .saturating_add(u64::try_from(auth_requests).unwrap_or(u64::MAX))
        .saturating_add(u64::try_from(relay_links).unwrap_or(u64::MAX))
}

/// The most connections that fit in `limit` descriptors at `per_client`
/// each, after `reserved`; at least 1.
fn capacity(limit: u64, reserved: u64, per_client: u64) -> usize {
    let fit = limit.saturating_sub(reserved) / per_client.max(1);
    usize::try_from(fit).unwrap_or(usize::MAX).max(1)
}

impl ServerConfig {
    /// `max_connections` as it applies: lowered to what the process's
    /// open-file limit allows (one descriptor per client, two with the
    /// relay's per-session mode, and a reserve of 64 for the rest, plus
    /// `max_in_flight` with an HTTP authentication service and three times
    /// `relay.connections` with the shared relay).
    /// [`Server`](crate::Server) applies it when binding.
    pub fn effective_max_connections(&self) -> usize {
        match open_file_limit() {
            Some(limit) => self.max_connections.min(capacity(
                limit,
                reserved(self),
                descriptors_per_client(self),
            )),
            None => self.max_connections,
        }
    }

    /// Lowers `max_connections` to [`ServerConfig::effective_max_connections`],
    /// saying so in the log once.
    pub(crate) fn clamp_max_connections(&mut self) {
        let effective = self.effective_max_connections();
        let limit = open_file_limit();
        if effective < self.max_connections {
            tracing::warn!(
                configured = self.max_connections,
                effective,
                open_file_limit = limit,
                descriptors_per_client = descriptors_per_client(self),
                "max_connections lowered to what the open-file limit allows"
            );
            self.max_connections = effective;
        }
        tracing::info!(
            max_connections = self.max_connections,
            open_file_limit = limit,
            "connection limit"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn capacity_keeps_the_reserve_and_counts_descriptors_per_client() {
        assert_eq!(capacity(1024, 64, 1), 960);
        assert_eq!(capacity(1024, 64, 2), 480);
        assert_eq!(capacity(100, 64, 1), 36);
        // Nothing left after the reserve: one connection rather than none,
        // so the server still answers (and the log says why it is so few).
        assert_eq!(capacity(10, 64, 1), 1);
        assert_eq!(reserved(&ServerConfig::default()), 64);
    }

    #[test]
    fn the_shared_relay_costs_its_links_not_a_link_per_client() {
        use crate::broker::relay::{RelayConfig, RelayMode};
        let mut config = ServerConfig::default();
        assert_eq!(descriptors_per_client(&config), 1);
        let mut relay = RelayConfig {
            connections: 4,
            ..RelayConfig::default()
        };
        config.relay = Some(relay.clone());
        assert_eq!(descriptors_per_client(&config), 1);
        assert_eq!(reserved(&config), 64 + 12);
        relay.mode = RelayMode::PerSession;
        config.relay = Some(relay);
        assert_eq!(descriptors_per_client(&config), 2);
        assert_eq!(reserved(&config), 64);
    }

    #[test]
    fn raising_leaves_the_soft_limit_at_the_hard_one() {
        let limit = raise_open_file_limit().expect("raise");
        let again = raise_open_file_limit().expect("raise again");
        assert_eq!(again.before, limit.now);
        assert_eq!(again.now, limit.now);
    }
}
