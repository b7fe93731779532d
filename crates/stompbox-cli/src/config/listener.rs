//! The `[server]` keys about who may reach the listeners and how: TLS,
//! allowed WebSocket origins, trusted proxies and the HTTP publish API's
//! tokens.

use super::check::{Check, MIN_TOKEN_CHARS};
use super::file::ApiTokenEntry;
use std::path::PathBuf;
use stompbox::auth::access::{AccessRules, Rule, Who};
use stompbox::{ApiToken, IpNetwork, TlsConfig};

/// `server.allowed_origins`: each `*`, `null` or `scheme://host[:port]`,
/// the host possibly `*.domain`. The library parses the same syntax when
/// the server binds (its parser is private), so this follows its rules,
/// and is stricter where the library would accept an entry that can never
/// match (a path, a `*` inside a host name).
pub(super) fn allowed_origins(check: &mut Check, origins: Vec<String>) -> Vec<String> {
    for entry in &origins {
        if let Some(problem) = origin_problem(entry.trim()) {
            check.fail(
                "server.allowed_origins",
                format!(
                    "\"{entry}\" is not an origin like https://chat.example.com, \
                     https://*.example.com:8443, null or *: {problem}"
                ),
            );
        }
    }
    origins.into_iter().map(|o| o.trim().to_owned()).collect()
}

/// What is wrong with one `allowed_origins` entry, if anything.
fn origin_problem(entry: &str) -> Option<&'static str> {
    if entry == "*" || entry == "null" {
        return None;
    }
    let Some((scheme, rest)) = entry.split_once("://") else {
        return Some("no scheme:// (browsers send the scheme, e.g. https://)");
    };
    let scheme_ok = scheme.starts_with(|c: char| c.is_ascii_alphabetic())
        && scheme
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    if !scheme_ok {
        return Some("the scheme must be a word like https");
    }
    // A trailing '/' is accepted, as the library ignores it; anything after
    // it is a path, which an Origin header never has.
    let authority = rest.trim_end_matches('/');
    if authority.contains(['/', '?', '#']) {
        return Some("an origin has no path, query or fragment");
    }
    if authority.contains('@') {
        return Some("an origin has no user name");
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let Some((ip, after)) = v6.split_once(']') else {
            return Some("an IPv6 address needs its closing ']'");
        };
        if ip.parse::<std::net::Ipv6Addr>().is_err() {
            return Some("not an IPv6 address in brackets");
        }
        match after {
            "" => ("[v6]", None),
            p => match p.strip_prefix(':') {
                Some(port) => ("[v6]", Some(port)),
                None => return Some("only :port may follow the ']'"),
            },
        }
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return Some("there is no host");
    }
    if port.is_some_and(|p| p.parse::<u16>().is_err()) {
        return Some("the port must be a number from 0 to 65535");
    }
    // "*." may only start a host; elsewhere the library would compare the
    // '*' literally and the entry would never match.
    if host.strip_prefix("*.").unwrap_or(host).contains('*') {
        return Some("'*' may only start a host, as in https://*.example.com");
    }
    None
}

/// `server.trusted_proxies`: IP addresses or CIDR networks.
pub(super) fn trusted_proxies(check: &mut Check, proxies: &[String]) -> Vec<IpNetwork> {
    proxies
        .iter()
        .filter_map(|p| match p.parse::<IpNetwork>() {
            Ok(net) => Some(net),
            Err(e) => {
                check.fail("server.trusted_proxies", e);
                None
            }
        })
        .collect()
}

/// `server.tls_cert_file` and `server.tls_key_file`: both or neither, and
/// read now, so a wrong path stops start-up instead of every handshake.
pub(super) fn tls(
    check: &mut Check,
    cert_file: Option<String>,
    key_file: Option<String>,
) -> Option<TlsConfig> {
    let path = |f: Option<String>| {
        f.map(|f| f.trim().to_owned())
            .filter(|f| !f.is_empty())
            .map(PathBuf::from)
    };
    match (path(cert_file), path(key_file)) {
        (None, None) => None,
        (Some(_), None) => {
            check.fail(
                "server.tls_key_file",
                "must be set too: server.tls_cert_file is set, and TLS needs the certificate's \
                 private key"
                    .to_owned(),
            );
            None
        }
        (None, Some(_)) => {
            check.fail(
                "server.tls_cert_file",
                "must be set too: server.tls_key_file is set, and TLS needs the certificate"
                    .to_owned(),
            );
            None
        }
        (Some(cert), Some(key)) => {
            let tls = TlsConfig::new(cert, key);
            if let Err(message) = tls.check() {
                // The message starts with the file it is about; the key file's
                // problems belong to its key (unless both are one file).
                let key_text = tls.key_file.display().to_string();
                let about_key =
                    tls.key_file != tls.cert_file && message.starts_with(key_text.as_str());
                check.fail(
                    if about_key {
                        "server.tls_key_file"
                    } else {
                        "server.tls_cert_file"
                    },
                    message,
                );
            }
            Some(tls)
        }
    }
}

/// `server.api_tokens`: tokens for `POST /api/publish` each limited to some
/// destinations. Tokens are never quoted back; an entry is named by its
/// position instead.
pub(super) fn api_tokens(
    check: &mut Check,
    entries: Vec<ApiTokenEntry>,
    api_token: Option<&str>,
) -> Vec<ApiToken> {
    const KEY: &str = "server.api_tokens";
    for (i, entry) in entries.iter().enumerate() {
        let n = i + 1;
        let chars = entry.token.chars().count();
        if chars < MIN_TOKEN_CHARS {
            check.fail(
                KEY,
                format!(
                    "entry {n}: the token must be at least {MIN_TOKEN_CHARS} characters (got \
                     {chars}); e.g. `openssl rand -hex 32`"
                ),
            );
        } else if !entry.token.bytes().all(|b| b.is_ascii_graphic()) {
            check.fail(
                KEY,
                format!(
                    "entry {n}: the token must be printable ASCII without spaces, as clients \
                     send it in an Authorization header"
                ),
            );
        }
        // One token with two sets of destinations would be ambiguous.
        if let Some(m) = entries[..i].iter().position(|e| e.token == entry.token) {
            check.fail(KEY, format!("entry {n}: the same token as entry {}", m + 1));
        } else if api_token == Some(entry.token.as_str()) {
            check.fail(
                KEY,
                format!(
                    "entry {n}: the same token as server.api_token, which may already publish \
                     everywhere"
                ),
            );
        }
        if entry.destinations.is_empty() {
            check.fail(
                KEY,
                format!(
                    "entry {n}: destinations is empty, so the token could publish nowhere; list \
                     patterns like \"/user/**\""
                ),
            );
        }
        for pattern in &entry.destinations {
            if let Some(problem) = destination_problem(pattern) {
                check.fail(
                    KEY,
                    format!("entry {n}: destination \"{pattern}\": {problem}"),
                );
            }
        }
    }
    entries
        .into_iter()
        .map(|e| ApiToken::new(e.token, e.destinations))
        .collect()
}

/// What is wrong with a destination pattern of an API token, if anything.
/// The library's access rules parse patterns; one rule with this pattern
/// alone puts it through the same parser. `{user}` has no meaning here, as
/// a token is no user.
fn destination_problem(pattern: &str) -> Option<String> {
    if !pattern.starts_with('/') {
        return Some("must start with '/'".to_owned());
    }
    if pattern.contains("{user}") {
        return Some("{user} is only known in auth.rules; a token is no user".to_owned());
    }
    let rule = Rule::new(Who::Anyone).send([pattern]);
    AccessRules::new(vec![rule]).err().map(|message| {
        // The message names "rule 1", which is this pattern alone.
        message
            .strip_prefix("rule 1: ")
            .unwrap_or(&message)
            .to_owned()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origins_follow_the_library_syntax() {
        for ok in [
            "*",
            "null",
            "https://chat.example.com",
            "https://chat.example.com/",
            "http://localhost:8080",
            "https://*.example.com:8443",
            "http://[::1]:8080",
            "chrome-extension://abcdef",
        ] {
            assert_eq!(origin_problem(ok), None, "{ok}");
        }
        for bad in [
            "chat.example.com",
            "https://",
            "https://example.com/app",
            "https://example.com?x",
            "https://user@example.com",
            "https://example.com:99999",
            "https://ex*ample.com",
            "https://*",
            "http://[::1",
            "http://[nope]:80",
            "://example.com",
        ] {
            assert!(origin_problem(bad).is_some(), "{bad}");
        }
    }
}
