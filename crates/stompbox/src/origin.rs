//! Which browser origins may open a WebSocket session (`allowed_origins`).
//!
//! Apart from the upgrade that applies it, so that the server state holding
//! the policy does not import the upgrade (which drives connections above it).

/// Which origins may open WebSocket sessions, from `allowed_origins`:
/// same-origin requests always, plus the listed origins (`scheme://host[:port]`,
/// a host may start with `*.` for any subdomain), or any origin with `*`.
#[derive(Debug, Clone)]
pub(crate) struct OriginPolicy {
    any: bool,
    listed: Vec<Origin>,
}

/// An origin reduced to what is compared: scheme, host and effective port.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Origin {
    scheme: String,
    host: String,
    port: Option<u16>,
}

fn default_port(scheme: &str) -> Option<u16> {
    match scheme {
        "http" | "ws" => Some(80),
        "https" | "wss" => Some(443),
        _ => None,
    }
}

/// Splits `host[:port]` (IPv6 in brackets); the host lower-cased.
fn split_host_port(text: &str) -> Option<(String, Option<u16>)> {
    let (host, port) = if let Some(rest) = text.strip_prefix('[') {
        let (v6, after) = rest.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (format!("[{v6}]"), port)
    } else {
        match text.rsplit_once(':') {
            Some((h, p)) => (h.to_owned(), Some(p)),
            None => (text.to_owned(), None),
        }
    };
    if host.is_empty() {
        return None;
    }
    let port = match port {
        None => None,
        Some(p) => Some(p.parse::<u16>().ok()?),
    };
    Some((host.to_ascii_lowercase(), port))
}

impl Origin {
    fn parse(text: &str) -> Option<Origin> {
        let (scheme, rest) = text.trim().split_once("://")?;
        let scheme = scheme.to_ascii_lowercase();
        let authority = rest.trim_end_matches('/');
        if authority.contains(['/', '?', '#', '@']) {
            return None;
        }
        let (host, port) = split_host_port(authority)?;
        let port = port.or_else(|| default_port(&scheme));
        Some(Origin { scheme, host, port })
    }

    fn matches(&self, other: &Origin) -> bool {
        if self.scheme != other.scheme || self.port != other.port {
            return false;
        }
        match self.host.strip_prefix("*.") {
            Some(domain) => other
                .host
                .strip_suffix(domain)
                .is_some_and(|sub| sub.len() > 1 && sub.ends_with('.')),
            None => self.host == other.host,
        }
    }
}

impl OriginPolicy {
    /// Parses `allowed_origins`.
    ///
    /// # Errors
    ///
    /// The entry that is not `*`, `null` or `scheme://host[:port]`.
    pub(crate) fn new(allowed: &[String]) -> Result<OriginPolicy, String> {
        let mut policy = OriginPolicy {
            any: false,
            listed: Vec::new(),
        };
        for entry in allowed {
            match entry.trim() {
                "*" => policy.any = true,
                // Sandboxed iframes and file:// pages send "Origin: null".
                "null" => policy.listed.push(Origin {
                    scheme: "null".into(),
                    host: String::new(),
                    port: None,
                }),
                text => policy.listed.push(Origin::parse(text).ok_or_else(|| {
                    format!(
                        "\"{entry}\" is not an origin like https://chat.example.com, \
                         https://*.example.com:8443, null or *"
                    )
                })?),
            }
        }
        Ok(policy)
    }

    /// Whether a handshake with `origin` for `host` may proceed. No Origin
    /// header means a client that is not a browser page (browsers always
    /// send one on WebSocket handshakes), which cross-site hijacking needs.
    pub(crate) fn allows(&self, origin: Option<&str>, host: Option<&str>) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        if self.any {
            return true;
        }
        if origin.trim() == "null" {
            return self.listed.iter().any(|o| o.scheme == "null");
        }
        let Some(origin) = Origin::parse(origin) else {
            return false;
        };
        if self.listed.iter().any(|allowed| allowed.matches(&origin)) {
            return true;
        }
        // Same origin as the request: the page came from this server. A Host
        // without a port is compared by name only, as a proxy in front may
        // have changed the scheme and port.
        host.and_then(split_host_port).is_some_and(|(host, port)| {
            host == origin.host && port.is_none_or(|p| origin.port == Some(p))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(allowed: &[&str]) -> OriginPolicy {
        OriginPolicy::new(&allowed.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>())
            .expect("policy")
    }

    #[test]
    fn same_origin_is_allowed_by_default_and_others_are_not() {
        let p = policy(&[]);
        assert!(p.allows(None, Some("chat.example.com")));
        assert!(p.allows(Some("https://chat.example.com"), Some("chat.example.com")));
        assert!(p.allows(Some("http://127.0.0.1:8080"), Some("127.0.0.1:8080")));
        assert!(p.allows(Some("http://[::1]:8080"), Some("[::1]:8080")));
        assert!(!p.allows(Some("http://127.0.0.1:9090"), Some("127.0.0.1:8080")));
        assert!(!p.allows(Some("https://evil.example"), Some("chat.example.com")));
        assert!(!p.allows(Some("null"), Some("chat.example.com")));
        assert!(!p.allows(
            Some("https://chat.example.com.evil.example"),
            Some("chat.example.com")
        ));
        assert!(!p.allows(Some("garbage"), Some("chat.example.com")));
        assert!(!p.allows(Some("https://chat.example.com"), None));
    }

    #[test]
    fn listed_origins_and_wildcards() {
        let p = policy(&[
            "https://app.example.com",
            "https://*.example.org:8443",
            "null",
        ]);
        assert!(p.allows(Some("https://APP.example.com"), Some("ws.example.com")));
        assert!(p.allows(Some("https://app.example.com:443"), Some("ws.example.com")));
        assert!(!p.allows(Some("http://app.example.com"), Some("ws.example.com")));
        assert!(p.allows(Some("https://a.b.example.org:8443"), Some("x")));
        assert!(!p.allows(Some("https://example.org:8443"), Some("x")));
        assert!(!p.allows(Some("https://badexample.org:8443"), Some("x")));
        assert!(p.allows(Some("null"), Some("x")));
        assert!(policy(&["*"]).allows(Some("https://evil.example"), Some("x")));
        assert!(OriginPolicy::new(&["example.com".to_owned()]).is_err());
        assert!(OriginPolicy::new(&["https://a.com/path".to_owned()]).is_err());
    }
}
