//! `[metrics]`: the Prometheus endpoint, `GET /metrics`.

use super::check::{Check, MIN_TOKEN_CHARS};
use super::file::MetricsSection;
use std::net::SocketAddr;
use stompbox::MetricsConfig;

/// Most destinations with series of their own. Each brings a few series
/// (subscribers, queue depth), and every series costs the Prometheus server
/// memory for as long as it keeps the data; tens of thousands of series from
/// one target is where a single server starts to dominate a Prometheus
/// instance, and where rendering the scrape (a sort per family) stops being
/// cheap. An operator who wants more destinations watched wants a sum, not
/// more series.
pub(super) const MAX_DESTINATION_SERIES: usize = 10_000;

/// The settings of `[metrics]`; `listeners` are the addresses already taken
/// by server.http and server.tcp, and `api_token` is server.api_token.
pub(super) fn metrics(
    check: &mut Check,
    section: MetricsSection,
    listeners: &[(&'static str, SocketAddr)],
    api_token: Option<&str>,
) -> MetricsConfig {
    let mut m = MetricsConfig::default();
    if let Some(enabled) = section.enabled {
        m.enabled = enabled;
    }
    if let Some(addr) = section.addr {
        let off = addr.trim().is_empty() || addr.trim().eq_ignore_ascii_case("off");
        m.addr = if off {
            None
        } else {
            check.addr("metrics.addr", &addr)
        };
    }
    if let Some(addr) = m.addr
        && addr.port() != 0
        && let Some((key, _)) = listeners.iter().find(|(_, other)| *other == addr)
    {
        check.fail(
            "metrics.addr",
            format!(
                "must differ from {key} (both are {addr}); leave metrics.addr empty to serve \
                 /metrics on server.http"
            ),
        );
    }
    // As for server.api_token, the token is never quoted back.
    match section.token {
        None => {}
        Some(token) if token.is_empty() => m.token = None,
        Some(token) => {
            let chars = token.chars().count();
            if chars < MIN_TOKEN_CHARS {
                check.fail(
                    "metrics.token",
                    format!(
                        "must be at least {MIN_TOKEN_CHARS} characters (got {chars}); e.g. \
                         `openssl rand -hex 32`, or \"\" for none"
                    ),
                );
            } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
                check.fail(
                    "metrics.token",
                    "must be printable ASCII without spaces, as Prometheus sends it in an \
                     Authorization header"
                        .to_owned(),
                );
            } else if api_token == Some(token.as_str()) {
                // Prometheus' configuration would then hold a secret that
                // may publish to every destination.
                check.fail(
                    "metrics.token",
                    "must differ from server.api_token, which may publish everywhere".to_owned(),
                );
            }
            m.token = Some(token);
        }
    }
    if let Some(on) = section.per_destination {
        m.per_destination = on;
    }
    if let Some(n) = section.max_destination_series {
        m.max_destination_series = check.at_least("metrics.max_destination_series", n, 1);
        check.at_most("metrics.max_destination_series", n, MAX_DESTINATION_SERIES);
    }
    m
}

impl MetricsSection {
    /// Every key, from the effective settings (for --check).
    pub(super) fn from_config(m: &MetricsConfig) -> MetricsSection {
        MetricsSection {
            enabled: Some(m.enabled),
            addr: Some(m.addr.map(|a| a.to_string()).unwrap_or_default()),
            token: Some(m.token.clone().unwrap_or_default()),
            per_destination: Some(m.per_destination),
            max_destination_series: Some(m.max_destination_series),
        }
    }
}
