//! `stompbox serve`: configuration from a TOML file, STOMPBOX_* environment
//! variables and flags, then the server.
//!
//! Every source is first turned into a [`toml::Table`] and merged (defaults,
//! then the file, then the environment, then flags), so there is exactly one
//! place that knows the types of the settings: the `serde` structs of
//! [`file`]. The merged table is deserialized once ([`layers`]) and then
//! checked into a [`ServerConfig`] ([`validate`], with a module per group of
//! keys). Each key remembers which source set it last, so an error can say
//! where the bad value came from.

mod auth;
mod check;
mod file;
mod layers;
mod listener;
mod metrics;
mod relay;
#[cfg(test)]
mod tests;
mod validate;

use auth::{AUTH_OFF, AuthSource};
use file::FileConfig;
use layers::load;
use relay::relay_notes;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::path::PathBuf;
use std::sync::Arc;
use stompbox::auth::JwtKey;
use stompbox::broker::relay::RelayBroker;
use stompbox::{HttpRouter, Server, ServerBuilder, ServerConfig, TlsReloader};
use stompbox_chat::ChatState;
use tokio::signal::unix::{Signal, SignalKind, signal};
use tracing_subscriber::EnvFilter;

/// Prefix of the environment variables that configure `serve`.
const ENV_PREFIX: &str = "STOMPBOX_";

/// The environment variable of --log-format: a flag of the process, not a
/// setting of the server, so not a key of stompbox.toml either.
const LOG_FORMAT_VAR: &str = "STOMPBOX_LOG_FORMAT";

/// Variables with the settings' prefix that are not settings.
const NOT_SETTINGS: [&str; 1] = [LOG_FORMAT_VAR];

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum LogFormat {
    Text,
    Json,
}

/// Flags of `stompbox serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// TOML configuration file (see stompbox.toml for every key).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// HTTP and WebSocket listen address (server.http).
    #[arg(long, value_name = "ADDR")]
    http: Option<String>,
    /// Also accept plain STOMP over TCP on this address, or "off" (server.tcp).
    #[arg(long, value_name = "ADDR")]
    tcp: Option<String>,
    /// Path of the WebSocket endpoint (server.ws_path).
    #[arg(long, value_name = "PATH")]
    ws_path: Option<String>,
    /// Set any key, e.g. --set limits.frame_bytes=131072; repeatable.
    #[arg(long = "set", value_name = "SECTION.KEY=VALUE")]
    set: Vec<String>,
    /// Log filter, e.g. "debug" or "info,stompbox=trace"; RUST_LOG wins over it.
    #[arg(long, value_name = "LEVEL", default_value = "info")]
    log: String,
    /// Log line format: "text" for people, "json" (one object per line,
    /// the event's fields at the top level) for log pipelines.
    #[arg(
        long,
        value_name = "FORMAT",
        env = LOG_FORMAT_VAR,
        default_value = "text"
    )]
    log_format: LogFormat,
    /// Check the configuration, print the effective settings as TOML and exit.
    #[arg(long)]
    check: bool,
}

/// Everything `serve` runs with: the library's settings and the binary's own.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) server: ServerConfig,
    /// Serve the chat demo (its handlers at /app/chat/…, its page at `/`);
    /// otherwise `/` is a plain page naming the WebSocket endpoint.
    pub(crate) demo_chat: bool,
    /// What --check prints of [auth] that `server.auth` does not keep.
    auth_source: AuthSource,
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            server: ServerConfig::default(),
            demo_chat: true,
            auth_source: AuthSource::default(),
        }
    }
}

/// Shown instead of secrets (API tokens, passcodes, the JWT secret,
/// password hashes) by --check and in logs.
const REDACTED: &str = "(set; not shown)";

/// What `stompbox serve` prints on stdout, after the listening line, when
/// the relay's system connection to the broker comes up; scripts wait for it
/// before connecting clients, as a CONNECT is refused until then.
const BROKER_AVAILABLE_LINE: &str = "stompbox broker available";
/// Printed when that connection is lost (and the available line again once
/// it is back).
const BROKER_UNAVAILABLE_LINE: &str = "stompbox broker unavailable";

impl Settings {
    /// A copy safe to print: API tokens, the metrics token, passcodes, the
    /// JWT secret and password hashes are secrets. (A hash lets whoever sees it try
    /// passwords offline.)
    fn redacted(&self) -> Settings {
        let mut copy = self.clone();
        if copy.server.api_token.is_some() {
            copy.server.api_token = Some(REDACTED.to_owned());
        }
        for token in &mut copy.server.api_tokens {
            token.token = REDACTED.to_owned();
        }
        if copy.server.admin.token.is_some() {
            copy.server.admin.token = Some(REDACTED.to_owned());
        }
        if let Some(jwt) = &mut copy.server.auth.jwt
            && matches!(jwt.key, JwtKey::Secret(_))
        {
            jwt.key = JwtKey::Secret(REDACTED.as_bytes().to_vec());
        }
        // A query string may carry a key for the service (`?key=…`).
        if let Some(http) = &mut copy.server.auth.http
            && let Some((base, _)) = http.url.split_once('?')
        {
            http.url = format!("{base}?{REDACTED}");
        }
        if let Some(passwords) = &mut copy.server.auth.passwords {
            for user in &mut passwords.users {
                user.password_hash = REDACTED.to_owned();
            }
        }
        if copy.server.metrics.token.is_some() {
            copy.server.metrics.token = Some(REDACTED.to_owned());
        }
        if let Some(relay) = &mut copy.server.relay {
            if relay.client_passcode.is_some() {
                relay.client_passcode = Some(REDACTED.to_owned());
            }
            if !relay.system_passcode.is_empty() {
                relay.system_passcode = REDACTED.to_owned();
            }
        }
        copy
    }
}

pub(crate) async fn serve(args: ServeArgs) -> Result<(), String> {
    init_logging(&args.log, args.log_format)?;
    // Before anything is opened, and for --check too, which then shows the
    // max_connections the raised limit allows.
    match stompbox::raise_open_file_limit() {
        Ok(limit) if limit.now != limit.before => {
            tracing::info!(
                from = limit.before,
                to = limit.now,
                "open-file limit raised"
            );
        }
        Ok(_) => {}
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let flags = flag_settings(&args)?;
    let settings = load(args.config.as_deref(), std::env::vars_os(), &flags)?;
    if let Some(relay) = &settings.server.relay {
        for note in relay_notes(relay) {
            tracing::warn!("{note}");
        }
    }
    if args.check {
        let mut shown = settings.redacted();
        shown.server.max_connections = shown.server.effective_max_connections();
        let text = toml::to_string(&FileConfig::from_config(&shown))
            .map_err(|e| format!("cannot print the configuration: {e}"))?;
        println!("{}", text.trim_end());
        return Ok(());
    }
    tracing::debug!(settings = ?settings.redacted(), "configuration");
    // At the default log level, so nobody runs without authentication
    // believing a CONNECT login identifies anyone.
    match auth::summary(&settings.server.auth, &settings.auth_source) {
        Some(line) => tracing::info!("{line}"),
        None => tracing::warn!("{AUTH_OFF}"),
    }

    // Installed before binding so that a signal sent as soon as the
    // listening line is seen is already ours, not the default action
    // (which, for SIGHUP too, is to terminate).
    let shutdown = shutdown_signal()?;
    let hangup = signal(SignalKind::hangup())
        .map_err(|e| format!("cannot install the SIGHUP handler: {e}"))?;
    let Settings {
        server: config,
        demo_chat,
        auth_source: _,
    } = settings;
    let ws_path = config.ws_path.clone();
    // The relay is started here, not by the library's bind, so that its
    // availability can be watched (a bound Server does not expose it).
    // config.relay stays set: the router reads it too.
    let relay = config
        .relay
        .clone()
        .map(|relay| Arc::new(RelayBroker::start(relay)));
    let availability = relay.as_ref().map(|relay| relay.availability());
    let bound = if demo_chat {
        let chat = ChatState::new();
        let builder = Server::builder(config.clone())
            .app(stompbox_chat::app(&chat))
            .routes(stompbox_chat::routes_with(
                &ws_path,
                stompbox_chat::PageSettings {
                    accounts: config.auth.has_methods(),
                },
            ));
        let server = with_relay(builder, relay).bind().await;
        // The chat's hooks publish join/leave notices with the server's
        // messaging handle, which exists only once the server is bound.
        if let Ok(server) = &server {
            chat.attach(server.messaging());
        }
        server
    } else {
        let builder = Server::builder(config.clone()).routes(plain_page(&ws_path));
        with_relay(builder, relay).bind().await
    };
    let server = bound.map_err(|e| format!("cannot start: {}", in_cli_terms(&e.to_string())))?;
    let http = server
        .http_addr()
        .map_err(|e| format!("cannot read the bound HTTP address: {e}"))?;
    let tcp = server
        .tcp_addr()
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    let mut line = listening_line(&http.to_string(), &ws_path, &tcp, config.tls.is_some());
    // Only with a listener of its own, so the line is unchanged otherwise;
    // with port 0 this is the one place the bound port shows.
    let metrics_addr = server.metrics_addr();
    if let Some(addr) = metrics_addr {
        line.push_str(&format!(" metrics={addr}"));
    }
    print_line(&line);
    if let Some(availability) = availability {
        tokio::spawn(announce_availability(availability));
    }
    tokio::spawn(reload_on_hangup(hangup, server.tls_reloader()));
    let (web, ws) = if config.tls.is_some() {
        ("https", "wss")
    } else {
        ("http", "ws")
    };
    tracing::info!(%http, ws = %format_args!("{ws}://{http}{ws_path}"), %tcp, tls = config.tls.is_some(), "stompbox listening");
    if demo_chat {
        tracing::info!("chat demo at {web}://{http}/ (demo.chat = false turns it off)");
    }
    if config.api_token.is_some() || !config.api_tokens.is_empty() {
        tracing::info!("HTTP publish API at {web}://{http}/api/publish");
    }
    if config.metrics.enabled {
        let at = metrics_addr.map_or_else(
            || format!("{web}://{http}/metrics"),
            |addr| format!("{web}://{addr}/metrics"),
        );
        let token = if config.metrics.token.is_some() {
            "Bearer token required"
        } else {
            "no token (metrics.token)"
        };
        tracing::info!("Prometheus metrics at {at}, {token}");
    }
    if config.admin.enabled() {
        tracing::info!("admin page at {web}://{http}/admin");
    }
    server
        .run_until(shutdown)
        .await
        .map_err(|e| format!("server failed: {e}"))?;
    tracing::info!("stopped");
    Ok(())
}

/// The library names the `ServerConfig` field that moves a listener; here
/// the flag and the key of stompbox.toml say the same.
fn in_cli_terms(message: &str) -> String {
    message
        .replace("`http_addr`", "--http (server.http)")
        .replace("`tcp_addr`", "--tcp (server.tcp)")
}

/// The line scripts parse: `stompbox listening http=ADDR ws=ws://ADDR/PATH
/// tcp=ADDR|off`. With TLS an `https=ADDR` field is added and the WebSocket
/// URL is `wss://`; `http=ADDR` stays, so parsers that take the address
/// from it keep working.
fn listening_line(http: &str, ws_path: &str, tcp: &str, tls: bool) -> String {
    if tls {
        format!("stompbox listening http={http} https={http} ws=wss://{http}{ws_path} tcp={tcp}")
    } else {
        format!("stompbox listening http={http} ws=ws://{http}{ws_path} tcp={tcp}")
    }
}

/// On each SIGHUP, reads the TLS certificate and key again (after a renewal)
/// for new connections; open sessions keep theirs. A certificate that
/// cannot be used is logged and the one in use stays.
async fn reload_on_hangup(mut hangup: Signal, reloader: Option<TlsReloader>) {
    while hangup.recv().await.is_some() {
        let Some(reloader) = reloader.clone() else {
            tracing::info!("SIGHUP: TLS is off (server.tls_cert_file), nothing to reload");
            continue;
        };
        // Reading files is blocking work, kept off the async workers.
        match tokio::task::spawn_blocking(move || reloader.reload()).await {
            Ok(Ok(())) => tracing::info!("SIGHUP: TLS certificate reloaded"),
            Ok(Err(e)) => tracing::error!(
                "SIGHUP: cannot reload the TLS certificate, the one in use stays: {e}"
            ),
            Err(e) => tracing::error!("SIGHUP: the TLS reload failed: {e}"),
        }
    }
}

/// One line on stdout, for scripts. A closed stdout (daemonised, piped into
/// a finished process) must not stop a server that is otherwise fine; the
/// log lines still say the same.
fn print_line(line: &str) {
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{line}").and_then(|()| out.flush()) {
        tracing::warn!(error = %e, line, "cannot write to stdout");
    }
}

/// Uses the relay started by `serve`, if any, instead of the embedded broker.
fn with_relay<S: Clone + Send + Sync + 'static>(
    builder: ServerBuilder<S>,
    relay: Option<Arc<RelayBroker>>,
) -> ServerBuilder<S> {
    match relay {
        Some(relay) => builder.broker(relay),
        None => builder,
    }
}

/// Prints [`BROKER_AVAILABLE_LINE`] each time the relay's system connection
/// comes up and [`BROKER_UNAVAILABLE_LINE`] each time it is lost (nothing
/// before it is first up: the listening line already means "not yet").
async fn announce_availability(mut availability: tokio::sync::watch::Receiver<bool>) {
    let mut shown = false;
    loop {
        let up = *availability.borrow_and_update();
        if up != shown {
            print_line(if up {
                BROKER_AVAILABLE_LINE
            } else {
                BROKER_UNAVAILABLE_LINE
            });
            shown = up;
        }
        if availability.changed().await.is_err() {
            return;
        }
    }
}

/// What `/` shows without the chat demo: where the STOMP endpoint is.
fn plain_page(ws_path: &str) -> HttpRouter {
    let path = ws_path
        .replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;");
    let page = format!(
        "<!doctype html>\n<html lang=\"en\">\n<head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>stompbox</title></head>\n<body style=\"font: 16px/1.5 system-ui, sans-serif; \
         max-width: 40rem; margin: 2rem auto; padding: 0 1rem\">\n<h1>stompbox</h1>\n\
         <p>This is a STOMP over WebSocket server. Connect a STOMP client to the WebSocket \
         endpoint <code>{path}</code> on this host, e.g. <code>ws://HOST:PORT{path}</code>.</p>\n\
         </body>\n</html>\n"
    );
    HttpRouter::new().route(
        "/",
        axum::routing::get(move || {
            let page = page.clone();
            async move { axum::response::Html(page) }
        }),
    )
}

fn init_logging(level: &str, format: LogFormat) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .map_err(|e| format!("invalid RUST_LOG '{directives}': {e}"))?,
        _ => EnvFilter::try_new(level).map_err(|e| format!("invalid --log '{level}': {e}"))?,
    };
    // Logs go to stderr: stdout carries only the listening line (and
    // --check's output), which scripts and tests parse.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    let _ = match format {
        LogFormat::Text => builder
            .with_ansi(std::io::stderr().is_terminal())
            .try_init(),
        // Fields at the top level, next to timestamp, level and target,
        // where log pipelines look for them.
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
    };
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT. A second one during the graceful
/// shutdown exits at once, for an operator who does not want to wait.
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, String> {
    let mut term = signal(SignalKind::terminate())
        .map_err(|e| format!("cannot install the SIGTERM handler: {e}"))?;
    let mut int = signal(SignalKind::interrupt())
        .map_err(|e| format!("cannot install the SIGINT handler: {e}"))?;
    Ok(async move {
        let name = tokio::select! {
            _ = term.recv() => "SIGTERM",
            _ = int.recv() => "SIGINT",
        };
        tracing::info!(
            signal = name,
            "shutting down gracefully; a second signal stops at once"
        );
        tokio::spawn(async move {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
            tracing::warn!("second signal: exiting without waiting for connections");
            std::process::exit(130);
        });
    })
}

/// The dedicated flags, as `(section.key, value, flag)`, then every --set.
fn flag_settings(args: &ServeArgs) -> Result<Vec<(String, String, String)>, String> {
    let mut out = Vec::new();
    for (key, value, flag) in [
        ("server.http", &args.http, "--http"),
        ("server.tcp", &args.tcp, "--tcp"),
        ("server.ws_path", &args.ws_path, "--ws-path"),
    ] {
        if let Some(value) = value {
            out.push((key.to_owned(), value.clone(), flag.to_owned()));
        }
    }
    for set in &args.set {
        let Some((key, value)) = set.split_once('=') else {
            return Err(format!(
                "--set '{set}': expected SECTION.KEY=VALUE, e.g. limits.frame_bytes=131072"
            ));
        };
        out.push((
            key.trim().to_owned(),
            value.to_owned(),
            format!("--set {}", key.trim()),
        ));
    }
    Ok(out)
}
