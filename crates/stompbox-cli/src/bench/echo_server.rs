//! `stompbox bench serve-echo` (hidden): the server `bench roundtrip
//! --spawn` measures. It is stompbox with one application handler, at
//! `/app/bench/echo`, that sends each message back to the session that sent
//! it, at `/user/queue/echo`, with its `seq` and `ts` headers.
//!
//! Settings: `--http`, and a few `section.key` settings of `stompbox serve`
//! (the broker kind, the [relay] connection, a few limits) from `--set` or
//! `STOMPBOX_SECTION_KEY` variables, flags winning. Anything else keeps the
//! library's default. It prints the same stdout lines as `serve`: the
//! listening line, then `stompbox broker available` once a relay is up.

use bytes::Bytes;
use std::io::Write;
use stompbox::ServerConfig;
use stompbox::app::{App, Payload, SendToUser};
use stompbox::broker::relay::{RelayConfig, RelayMode};
use stompbox::codec::{Headers, header};

/// Where the handler is, below the application prefix `/app`.
pub(crate) const ECHO_PATH: &str = "/bench/echo";
/// Where the reply goes, below the user prefix `/user`.
pub(crate) const REPLY_DESTINATION: &str = "/queue/echo";
/// Headers of the request copied onto the reply.
const ECHOED_HEADERS: [&str; 2] = ["seq", "ts"];

/// Flags of `stompbox bench serve-echo`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeEchoArgs {
    /// HTTP and WebSocket listen address (the WebSocket endpoint is /ws).
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:8080")]
    http: String,
    /// A setting as for `stompbox serve --set`; repeatable. Known keys:
    /// broker.kind, relay.mode, relay.connections, relay.prefetch,
    /// relay.addresses, relay.virtual_host, relay.client_login,
    /// relay.client_passcode, relay.system_login, relay.system_passcode,
    /// relay.max_in_flight, limits.backlog_bytes, limits.outbox_bytes,
    /// server.max_connections.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// Log filter for stderr; RUST_LOG wins over it.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log: String,
}

/// The keys this server understands, as `section.key`.
const KEYS: [&str; 14] = [
    "broker.kind",
    "relay.mode",
    "relay.connections",
    "relay.prefetch",
    "relay.addresses",
    "relay.virtual_host",
    "relay.client_login",
    "relay.client_passcode",
    "relay.system_login",
    "relay.system_passcode",
    "relay.max_in_flight",
    "limits.backlog_bytes",
    "limits.outbox_bytes",
    "server.max_connections",
];

/// The handler: the payload back to the sending session only.
async fn echo(headers: Headers, body: Bytes) -> SendToUser<Payload> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .unwrap_or("application/octet-stream");
    let mut payload = Payload::bytes(body, content_type);
    for name in ECHOED_HEADERS {
        if let Some(value) = headers.get(name) {
            payload = payload.header(name, value);
        }
    }
    SendToUser::new(payload)
        .at(REPLY_DESTINATION)
        .only_this_session()
}

/// The environment variable of `section.key`, as `stompbox serve` reads it.
fn env_name(key: &str) -> String {
    format!("STOMPBOX_{}", key.replace('.', "_").to_ascii_uppercase())
}

/// The server configuration from `(key, value, source)` settings, in rising
/// precedence.
fn settings(http: &str, settings: &[(String, String, String)]) -> Result<ServerConfig, String> {
    let mut config = ServerConfig::default();
    // The load comes from one address (127.0.0.1): the per-address limits
    // would refuse or slow most of it and the figures would measure them.
    config.max_connections_per_address = 0;
    config.connects_per_address_per_sec = 0;
    config.http_addr = http
        .parse()
        .map_err(|e| format!("--http '{http}': {e} (expected IP:PORT)"))?;
    let mut relay_kind = false;
    let mut relay = RelayConfig::default();
    let mut relay_keys = Vec::new();
    for (key, value, source) in settings {
        let bad = |what: &str| format!("{key} = '{value}' ({source}): {what}");
        let number = || {
            value
                .trim()
                .replace('_', "")
                .parse::<usize>()
                .map_err(|_| bad("expected a whole number"))
        };
        if key.starts_with("relay.") {
            relay_keys.push(key.clone());
        }
        match key.as_str() {
            "broker.kind" => {
                relay_kind = match value.trim().trim_matches('"') {
                    "relay" => true,
                    "embedded" => false,
                    _ => return Err(bad("expected \"embedded\" or \"relay\"")),
                };
            }
            "relay.addresses" => {
                relay.addresses = list(value);
                if relay.addresses.is_empty() {
                    return Err(bad("expected at least one host:port"));
                }
            }
            "relay.mode" => {
                relay.mode = match text(value).as_str() {
                    "shared" => RelayMode::Shared,
                    "per-session" => RelayMode::PerSession,
                    _ => return Err(bad("expected \"shared\" or \"per-session\"")),
                };
            }
            "relay.connections" => relay.connections = number()?.max(1),
            "relay.prefetch" => relay.prefetch = number()?.max(1),
            "relay.virtual_host" => relay.virtual_host = text(value),
            "relay.client_login" => {
                relay.client_login = Some(text(value)).filter(|s| !s.is_empty());
            }
            "relay.client_passcode" => {
                relay.client_passcode = Some(text(value)).filter(|s| !s.is_empty());
            }
            "relay.system_login" => relay.system_login = text(value),
            "relay.system_passcode" => relay.system_passcode = text(value),
            "relay.max_in_flight" => relay.max_in_flight = number()?.max(1),
            "limits.backlog_bytes" => config.backlog_bytes = number()?,
            "limits.outbox_bytes" => config.outbox_bytes = number()?,
            "server.max_connections" => config.max_connections = number()?.max(1),
            _ => {
                return Err(format!(
                    "{key} ({source}): not a setting of bench serve-echo; it knows {}",
                    KEYS.join(", ")
                ));
            }
        }
    }
    if relay_kind {
        config.relay = Some(relay);
    } else if let Some(key) = relay_keys.first() {
        return Err(format!("{key} is set but broker.kind is not \"relay\""));
    }
    Ok(config)
}

/// A TOML string or a bare one.
fn text(value: &str) -> String {
    let trimmed = value.trim();
    trimmed
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(trimmed)
        .to_owned()
}

/// A TOML array of strings or a comma-separated list.
fn list(value: &str) -> Vec<String> {
    let trimmed = value.trim();
    let inner = trimmed
        .strip_prefix('[')
        .and_then(|v| v.strip_suffix(']'))
        .unwrap_or(trimmed);
    inner
        .split(',')
        .map(text)
        .filter(|item| !item.is_empty())
        .collect()
}

/// Environment first, then --set, as `(key, value, source)`.
fn gather(
    env: impl IntoIterator<Item = (String, String)>,
    sets: &[String],
) -> Result<Vec<(String, String, String)>, String> {
    let env: Vec<(String, String)> = env.into_iter().collect();
    let mut out = Vec::new();
    for key in KEYS {
        let name = env_name(key);
        if let Some((_, value)) = env.iter().find(|(n, _)| *n == name) {
            out.push((key.to_owned(), value.clone(), format!("from {name}")));
        }
    }
    for set in sets {
        let Some((key, value)) = set.split_once('=') else {
            return Err(format!(
                "--set '{set}': expected SECTION.KEY=VALUE, e.g. broker.kind=relay"
            ));
        };
        out.push((
            key.trim().to_owned(),
            value.to_owned(),
            format!("from --set {}", key.trim()),
        ));
    }
    Ok(out)
}

fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}").and_then(|()| out.flush());
}

pub(crate) async fn run(args: ServeEchoArgs) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => directives,
        _ => args.log.clone(),
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&filter)
        .map_err(|e| format!("invalid log filter '{filter}': {e}"))?;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(false)
        .try_init();
    // As `serve` does, so that both take as many connections.
    if let Err(e) = stompbox::raise_open_file_limit() {
        tracing::warn!(error = %e, "cannot raise the open-file limit");
    }
    let env = std::env::vars_os()
        .filter_map(|(k, v)| Some((k.into_string().ok()?, v.into_string().ok()?)));
    let config = settings(&args.http, &gather(env, &args.set)?)?;
    let relayed = config.relay.is_some();
    let ws_path = config.ws_path.clone();
    let server = stompbox::Server::builder(config)
        .app(App::new().message(ECHO_PATH, echo))
        .bind()
        .await
        .map_err(|e| format!("cannot listen on {}: {e}", args.http))?;
    let http = server
        .http_addr()
        .map_err(|e| format!("cannot read the bound address: {e}"))?;
    print_line(&format!(
        "stompbox listening http={http} ws=ws://{http}{ws_path} tcp=off"
    ));
    if relayed {
        let mut availability = server.broker_availability();
        tokio::spawn(async move {
            let mut shown = false;
            loop {
                let up = *availability.borrow_and_update();
                if up != shown {
                    print_line(if up {
                        "stompbox broker available"
                    } else {
                        "stompbox broker unavailable"
                    });
                    shown = up;
                }
                if availability.changed().await.is_err() {
                    return;
                }
            }
        });
    }
    let shutdown = {
        use tokio::signal::unix::{SignalKind, signal};
        let mut term = signal(SignalKind::terminate())
            .map_err(|e| format!("cannot install the SIGTERM handler: {e}"))?;
        let mut int = signal(SignalKind::interrupt())
            .map_err(|e| format!("cannot install the SIGINT handler: {e}"))?;
        async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
    };
    server
        .run_until(shutdown)
        .await
        .map_err(|e| format!("server failed: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(pairs: &[&str]) -> Result<ServerConfig, String> {
        let sets: Vec<String> = pairs.iter().map(|s| (*s).to_owned()).collect();
        settings("127.0.0.1:0", &gather(Vec::new(), &sets)?)
    }

    #[test]
    fn embedded_by_default() {
        let config = set(&[]).expect("defaults");
        assert!(config.relay.is_none());
        assert_eq!(config.max_connections_per_address, 0);
        assert_eq!(config.connects_per_address_per_sec, 0);
        assert_eq!(config.http_addr.to_string(), "127.0.0.1:0");
        let config = set(&["limits.backlog_bytes=1_048_576"]).expect("backlog");
        assert_eq!(config.backlog_bytes, 1 << 20);
    }

    #[test]
    fn relay_settings() {
        let config = set(&[
            "broker.kind=\"relay\"",
            "relay.addresses=[\"10.0.0.1:61613\", \"10.0.0.2:61613\"]",
            "relay.system_passcode=s3cret",
            "relay.client_login=",
        ])
        .expect("relay");
        let relay = config.relay.expect("relay on");
        assert_eq!(relay.addresses, ["10.0.0.1:61613", "10.0.0.2:61613"]);
        assert_eq!(relay.system_passcode, "s3cret");
        assert_eq!(relay.client_login, None);
        let relay = set(&["broker.kind=relay", "relay.addresses=a:1,b:2"])
            .expect("list")
            .relay
            .expect("relay on");
        assert_eq!(relay.addresses, ["a:1", "b:2"]);
        assert_eq!(relay.mode, RelayMode::Shared);
        let relay = set(&[
            "broker.kind=relay",
            "relay.mode=\"per-session\"",
            "relay.connections=2",
            "relay.prefetch=16",
        ])
        .expect("mode")
        .relay
        .expect("relay on");
        assert_eq!(relay.mode, RelayMode::PerSession);
        assert_eq!((relay.connections, relay.prefetch), (2, 16));
    }

    #[test]
    fn env_then_flags() {
        let env = vec![
            ("STOMPBOX_BROKER_KIND".to_owned(), "relay".to_owned()),
            ("STOMPBOX_RELAY_SYSTEM_LOGIN".to_owned(), "env".to_owned()),
            ("OTHER".to_owned(), "x".to_owned()),
        ];
        let sets = vec!["relay.system_login=flag".to_owned()];
        let config = settings("127.0.0.1:0", &gather(env, &sets).expect("gather")).expect("ok");
        assert_eq!(config.relay.expect("relay").system_login, "flag");
    }

    #[test]
    fn refusals_name_the_key() {
        for (pairs, needle) in [
            (&["broker.kind=rabbit"][..], "broker.kind"),
            (&["relay.addresses=x:1"][..], "broker.kind is not"),
            (&["server.tcp=127.0.0.1:1"][..], "not a setting"),
            (&["limits.outbox_bytes=lots"][..], "whole number"),
            (
                &["broker.kind=relay", "relay.mode=pooled"][..],
                "per-session",
            ),
            (&["broker.kind"][..], "SECTION.KEY=VALUE"),
        ] {
            let e = set(pairs).expect_err("refused");
            assert!(e.contains(needle), "{pairs:?}: {e}");
        }
        assert!(settings("nowhere", &[]).is_err());
    }
}
