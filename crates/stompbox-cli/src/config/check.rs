//! Checking values: the problems found, and checks shared by the sections.

use std::net::SocketAddr;
use std::time::Duration;

/// Problems found, as `(section.key, what is wrong)`.
pub(super) type Problems = Vec<(&'static str, String)>;

pub(super) struct Check {
    pub(super) problems: Problems,
}

impl Check {
    pub(super) fn fail(&mut self, key: &'static str, message: String) {
        self.problems.push((key, message));
    }

    pub(super) fn at_least<T: PartialOrd + std::fmt::Display>(
        &mut self,
        key: &'static str,
        value: T,
        min: T,
    ) -> T {
        if value < min {
            self.fail(key, format!("must be at least {min} (got {value})"));
        }
        value
    }

    pub(super) fn at_most<T: PartialOrd + std::fmt::Display>(
        &mut self,
        key: &'static str,
        value: T,
        max: T,
    ) {
        if value > max {
            self.fail(key, format!("must be at most {max} (got {value})"));
        }
    }

    /// A listen address: IP:port, or host:port resolved now (the first
    /// address the name has), so `localhost:8080` works as people type it.
    pub(super) fn addr(&mut self, key: &'static str, value: &str) -> Option<SocketAddr> {
        let value = value.trim();
        if let Ok(addr) = value.parse() {
            return Some(addr);
        }
        let problem = match value.rsplit_once(':') {
            Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok() => {
                // Blocking, but this runs once at start-up, before anything
                // else needs the thread.
                match std::net::ToSocketAddrs::to_socket_addrs(value) {
                    Ok(mut addrs) => match addrs.next() {
                        Some(addr) => return Some(addr),
                        None => format!("host name \"{host}\" has no address"),
                    },
                    Err(e) => format!("cannot resolve host name \"{host}\": {e}"),
                }
            }
            _ => format!(
                "expected IP:port or host:port such as 127.0.0.1:8080, [::]:8080 or \
                 localhost:8080 (got \"{value}\")"
            ),
        };
        self.fail(key, problem);
        None
    }

    /// An application or user destination prefix: a plain path such as
    /// `example`. A trailing '/' is allowed and means the same.
    pub(super) fn path_prefix(&mut self, key: &'static str, value: &str, example: &str) {
        let trimmed = value.trim_end_matches('/');
        let plain = trimmed.len() > 1
            && trimmed.starts_with('/')
            && !trimmed.contains("//")
            && trimmed
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b));
        if !plain {
            self.fail(
                key,
                format!(
                    "must be a path like \"{example}\": starting with '/', not \"/\" alone, of letters, \
                     digits, '-', '.', '_', '~' and single '/' (got \"{value}\")"
                ),
            );
        }
    }

    /// A broker address as the relay dials it: `host:port`, the host a
    /// name, an IPv4 address or a bracketed IPv6 address. Any host will do:
    /// the broker is usually on another machine.
    pub(super) fn broker_address(&mut self, key: &'static str, value: &str) {
        let problem = match value.rsplit_once(':') {
            None => Some("no port"),
            Some((host, port)) => {
                let host_ok = match host.strip_prefix('[') {
                    Some(v6) => v6
                        .strip_suffix(']')
                        .is_some_and(|ip| ip.parse::<std::net::Ipv6Addr>().is_ok()),
                    None => {
                        !host.is_empty()
                            && host
                                .bytes()
                                .all(|b| b.is_ascii_alphanumeric() || b"-._".contains(&b))
                    }
                };
                if !port.parse::<u16>().is_ok_and(|p| p != 0) {
                    Some("the port must be a number from 1 to 65535")
                } else if host.contains(':') && !host.starts_with('[') {
                    Some("an IPv6 address must be in brackets, like [::1]:61613")
                } else if !host_ok {
                    Some("the host must be a name, an IPv4 address or a bracketed IPv6 address")
                } else {
                    None
                }
            }
        };
        if let Some(problem) = problem {
            self.fail(
                key,
                format!(
                    "expected host:port such as 127.0.0.1:61613 or rabbitmq.internal:61613; \
                     {problem} (got \"{value}\")"
                ),
            );
        }
    }

    pub(super) fn prefixes(&mut self, key: &'static str, prefixes: &[String]) {
        for p in prefixes {
            // A bare "/" would swallow every destination, and a prefix without
            // the closing '/' would match "/topicality" for "/topic".
            if p.len() < 2 || !p.starts_with('/') || !p.ends_with('/') {
                self.fail(
                    key,
                    format!("prefixes must start and end with '/', like \"/topic/\" (got \"{p}\")"),
                );
            }
        }
    }
}

/// Interval in milliseconds: zero turns the feature off, otherwise at least
/// `min` so a typo like `send_ms = 1` does not flood every client.
pub(super) fn interval(check: &mut Check, key: &'static str, value: u64, min: u64) -> Duration {
    if value != 0 && value < min {
        check.fail(
            key,
            format!("must be 0 (off) or at least {min} (got {value})"),
        );
    }
    Duration::from_millis(value)
}

/// `/app` and `/app/` are the same prefix: compared as `/app/`.
pub(super) fn as_dir(prefix: &str) -> String {
    format!("{}/", prefix.trim_end_matches('/'))
}

/// True when one prefix is the other or under it, so some destinations
/// would match both.
pub(super) fn overlap(a: &str, b: &str) -> bool {
    let (a, b) = (as_dir(a), as_dir(b));
    a.starts_with(&b) || b.starts_with(&a)
}

/// The shortest token accepted for the HTTP publish API.
pub(super) const MIN_TOKEN_CHARS: usize = 16;
