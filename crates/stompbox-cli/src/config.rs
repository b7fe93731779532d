//! `stompbox serve`: configuration from a TOML file, STOMPBOX_* environment
//! variables and flags, then the server.
//!
//! Every source is first turned into a [`toml::Table`] and merged (defaults,
//! then the file, then the environment, then flags), so there is exactly one
//! place that knows the types of the settings: the `serde` structs below. The
//! merged table is deserialized once and then checked into a
//! [`ServerConfig`]. Each key remembers which source set it last, so an error
//! can say where the bad value came from.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;
use std::ffi::OsString;
use std::future::Future;
use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use stompbox::broker::embedded::EmbeddedConfig;
use stompbox::broker::relay::{RelayBroker, RelayConfig, RelayTls};
use stompbox::{HttpRouter, Server, ServerBuilder, ServerConfig};
use stompbox_chat::ChatState;
use toml::{Table, Value};
use tracing_subscriber::EnvFilter;

/// Prefix of the environment variables that configure `serve`.
const ENV_PREFIX: &str = "STOMPBOX_";

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
}

impl Default for Settings {
    fn default() -> Settings {
        Settings {
            server: ServerConfig::default(),
            demo_chat: true,
        }
    }
}

/// Shown instead of the API token and the relay's passcodes by --check
/// and in logs.
const REDACTED: &str = "(set; not shown)";

/// What `stompbox serve` prints on stdout, after the listening line, when
/// the relay's system connection to the broker comes up; scripts wait for it
/// before connecting clients, as a CONNECT is refused until then.
const BROKER_AVAILABLE_LINE: &str = "stompbox broker available";
/// Printed when that connection is lost (and the available line again once
/// it is back).
const BROKER_UNAVAILABLE_LINE: &str = "stompbox broker unavailable";

impl Settings {
    /// A copy safe to print: the API token and the passcodes are secrets.
    fn redacted(&self) -> Settings {
        let mut copy = self.clone();
        if copy.server.api_token.is_some() {
            copy.server.api_token = Some(REDACTED.to_owned());
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
    init_logging(&args.log)?;
    let flags = flag_settings(&args)?;
    let settings = load(args.config.as_deref(), std::env::vars_os(), &flags)?;
    if let Some(relay) = &settings.server.relay {
        for note in relay_notes(relay) {
            tracing::warn!("{note}");
        }
    }
    if args.check {
        let text = toml::to_string(&FileConfig::from_config(&settings.redacted()))
            .map_err(|e| format!("cannot print the configuration: {e}"))?;
        println!("{}", text.trim_end());
        return Ok(());
    }
    tracing::debug!(settings = ?settings.redacted(), "configuration");

    // Installed before binding so that a signal sent as soon as the
    // listening line is seen is already ours, not the default "terminate".
    let shutdown = shutdown_signal()?;
    let Settings {
        server: config,
        demo_chat,
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
            .routes(stompbox_chat::routes_for(&ws_path));
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
    let server = bound.map_err(|e| {
        let tcp = config
            .tcp_addr
            .map_or_else(|| "off".to_owned(), |a| a.to_string());
        format!("cannot listen on http={} tcp={tcp}: {e}", config.http_addr)
    })?;
    let http = server
        .http_addr()
        .map_err(|e| format!("cannot read the bound HTTP address: {e}"))?;
    let tcp = server
        .tcp_addr()
        .map_or_else(|| "off".to_owned(), |a| a.to_string());
    print_line(&format!(
        "stompbox listening http={http} ws=ws://{http}{ws_path} tcp={tcp}"
    ));
    if let Some(availability) = availability {
        tokio::spawn(announce_availability(availability));
    }
    tracing::info!(%http, ws = %format_args!("ws://{http}{ws_path}"), %tcp, "stompbox listening");
    if demo_chat {
        tracing::info!("chat demo at http://{http}/ (demo.chat = false turns it off)");
    }
    if config.api_token.is_some() {
        tracing::info!("HTTP publish API at http://{http}/api/publish");
    }
    server
        .run_until(shutdown)
        .await
        .map_err(|e| format!("server failed: {e}"))?;
    tracing::info!("stopped");
    Ok(())
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

/// Warnings about relay settings that are valid but probably not meant:
/// well-known ports of other protocols, TLS and ports that disagree, and
/// passcodes sent unencrypted to another host.
fn relay_notes(relay: &RelayConfig) -> Vec<String> {
    let tls = relay.tls.is_some();
    let mut notes = Vec::new();
    for address in &relay.addresses {
        let Some((host, port)) = address.rsplit_once(':') else {
            continue;
        };
        let host = host.trim_matches(['[', ']']);
        match port {
            "5672" | "5671" => notes.push(format!(
                "relay address {address}: {port} is RabbitMQ's AMQP port; its STOMP plugin \
                 listens on 61613 (61614 with TLS)"
            )),
            "15674" | "15673" => notes.push(format!(
                "relay address {address}: {port} is RabbitMQ's Web-STOMP (WebSocket) port; \
                 the relay speaks STOMP over TCP, usually port 61613 (61614 with TLS)"
            )),
            "61614" if !tls => notes.push(format!(
                "relay address {address}: 61614 is the usual STOMP-over-TLS port but relay.tls \
                 is false"
            )),
            "61613" if tls => notes.push(format!(
                "relay address {address}: 61613 is the usual plain STOMP port but relay.tls is \
                 true"
            )),
            _ => {}
        }
        let local = host.eq_ignore_ascii_case("localhost")
            || host
                .parse::<std::net::IpAddr>()
                .is_ok_and(|ip| ip.is_loopback());
        if !tls && !local {
            notes.push(format!(
                "relay address {address} is not on this host and relay.tls is false: broker \
                 logins, passcodes and messages cross the network unencrypted"
            ));
        }
    }
    notes
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

fn init_logging(level: &str) -> Result<(), String> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(directives) if !directives.trim().is_empty() => EnvFilter::try_new(&directives)
            .map_err(|e| format!("invalid RUST_LOG '{directives}': {e}"))?,
        _ => EnvFilter::try_new(level).map_err(|e| format!("invalid --log '{level}': {e}"))?,
    };
    // Logs go to stderr: stdout carries only the listening line (and
    // --check's output), which scripts and tests parse.
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .try_init();
    Ok(())
}

/// Resolves on the first SIGTERM or SIGINT. A second one during the graceful
/// shutdown exits at once, for an operator who does not want to wait.
fn shutdown_signal() -> Result<impl Future<Output = ()> + Send + 'static, String> {
    use tokio::signal::unix::{SignalKind, signal};
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

// ---------------------------------------------------------------------------
// The file format. Every key is optional: an absent key keeps the library's
// default, so ServerConfig::default() stays the one place defaults live.

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of sections ([server], [app], [limits], [heartbeat], [broker], [relay], [demo])"
)]
struct FileConfig {
    #[serde(default)]
    server: ServerSection,
    #[serde(default)]
    app: AppSection,
    #[serde(default)]
    limits: LimitsSection,
    #[serde(default)]
    heartbeat: HeartbeatSection,
    #[serde(default)]
    broker: BrokerSection,
    /// Read only with `broker.kind = "relay"`; absent from --check otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    relay: Option<RelaySection>,
    #[serde(default)]
    demo: DemoSection,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of [server] settings")]
struct ServerSection {
    http: Option<String>,
    ws_path: Option<String>,
    tcp: Option<String>,
    max_connections: Option<usize>,
    shutdown_timeout_ms: Option<u64>,
    /// Empty means off: an absent value could not be listed as a key.
    api_token: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of [app] settings")]
struct AppSection {
    prefixes: Option<Vec<String>>,
    user_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of [demo] settings")]
struct DemoSection {
    chat: Option<bool>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of [limits] settings")]
struct LimitsSection {
    frame_bytes: Option<usize>,
    header_line_bytes: Option<usize>,
    headers: Option<usize>,
    subscriptions_per_session: Option<usize>,
    transactions_per_session: Option<usize>,
    transaction_frames: Option<usize>,
    transaction_bytes: Option<usize>,
    outbox_bytes: Option<usize>,
    backlog_bytes: Option<usize>,
    send_timeout_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of [heartbeat] settings")]
struct HeartbeatSection {
    send_ms: Option<u64>,
    receive_ms: Option<u64>,
    grace: Option<f64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of [broker] settings")]
struct BrokerSection {
    kind: Option<String>,
    topic_prefixes: Option<Vec<String>>,
    queue_prefixes: Option<Vec<String>>,
    queue_max_messages: Option<usize>,
    queue_max_bytes: Option<usize>,
    max_queues: Option<usize>,
    max_total_queue_bytes: Option<usize>,
    max_unacked: Option<usize>,
}

/// `[relay]`: the settings of [`RelayConfig`]. Optional values are empty
/// strings when off, as an absent value could not be listed as a key; TLS
/// is flat (`tls`, `tls_server_name`, `tls_ca_file`) so every key has an
/// environment variable.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of [relay] settings")]
struct RelaySection {
    addresses: Option<Vec<String>>,
    virtual_host: Option<String>,
    /// Empty: pass the client's own login.
    client_login: Option<String>,
    /// Empty: pass the client's own passcode.
    client_passcode: Option<String>,
    system_login: Option<String>,
    system_passcode: Option<String>,
    heartbeat_send_ms: Option<u64>,
    heartbeat_receive_ms: Option<u64>,
    prefixes: Option<Vec<String>>,
    user_destination_prefix: Option<String>,
    reconnect_initial_ms: Option<u64>,
    reconnect_max_ms: Option<u64>,
    connect_timeout_ms: Option<u64>,
    publish_timeout_ms: Option<u64>,
    max_frame_bytes: Option<usize>,
    upstream_buffer_bytes: Option<usize>,
    max_in_flight: Option<usize>,
    encode_slashes: Option<bool>,
    tls: Option<bool>,
    /// Empty: the host part of the address.
    tls_server_name: Option<String>,
    /// Empty: the Mozilla root store.
    tls_ca_file: Option<String>,
}

impl RelaySection {
    fn from_config(r: &RelayConfig) -> RelaySection {
        let tls = r.tls.as_ref();
        RelaySection {
            addresses: Some(r.addresses.clone()),
            virtual_host: Some(r.virtual_host.clone()),
            client_login: Some(r.client_login.clone().unwrap_or_default()),
            client_passcode: Some(r.client_passcode.clone().unwrap_or_default()),
            system_login: Some(r.system_login.clone()),
            system_passcode: Some(r.system_passcode.clone()),
            heartbeat_send_ms: Some(millis(r.heartbeat_send)),
            heartbeat_receive_ms: Some(millis(r.heartbeat_receive)),
            prefixes: Some(r.prefixes.clone()),
            user_destination_prefix: Some(r.user_destination_prefix.clone()),
            reconnect_initial_ms: Some(millis(r.reconnect_initial)),
            reconnect_max_ms: Some(millis(r.reconnect_max)),
            connect_timeout_ms: Some(millis(r.connect_timeout)),
            publish_timeout_ms: Some(millis(r.publish_timeout)),
            max_frame_bytes: Some(r.max_frame_bytes),
            upstream_buffer_bytes: Some(r.upstream_buffer_bytes),
            max_in_flight: Some(r.max_in_flight),
            encode_slashes: Some(r.encode_slashes),
            tls: Some(tls.is_some()),
            tls_server_name: Some(tls.and_then(|t| t.server_name.clone()).unwrap_or_default()),
            tls_ca_file: Some(
                tls.and_then(|t| t.ca_file.as_ref())
                    .map(|p| p.display().to_string())
                    .unwrap_or_default(),
            ),
        }
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl FileConfig {
    /// Every key that applies, from `settings`: the effective settings for
    /// --check. Only the keys of the broker in use are listed, so the output
    /// can be loaded again.
    fn from_config(settings: &Settings) -> FileConfig {
        let c = &settings.server;
        let relay = c.relay.as_ref();
        // With the relay, the embedded broker's keys are refused (see validate).
        let embedded = relay.is_none();
        FileConfig {
            server: ServerSection {
                http: Some(c.http_addr.to_string()),
                ws_path: Some(c.ws_path.clone()),
                tcp: Some(
                    c.tcp_addr
                        .map_or_else(|| "off".to_owned(), |a| a.to_string()),
                ),
                max_connections: Some(c.max_connections),
                shutdown_timeout_ms: Some(millis(c.shutdown_timeout)),
                api_token: Some(c.api_token.clone().unwrap_or_default()),
            },
            app: AppSection {
                prefixes: Some(c.app_prefixes.clone()),
                user_prefix: Some(c.user_prefix.clone()),
            },
            limits: LimitsSection {
                frame_bytes: Some(c.frame_limits.max_frame_bytes),
                header_line_bytes: Some(c.frame_limits.max_header_line),
                headers: Some(c.frame_limits.max_headers),
                subscriptions_per_session: Some(c.max_subscriptions),
                transactions_per_session: Some(c.max_transactions),
                transaction_frames: Some(c.max_transaction_frames),
                transaction_bytes: Some(c.max_transaction_bytes),
                outbox_bytes: Some(c.outbox_bytes),
                backlog_bytes: Some(c.backlog_bytes),
                send_timeout_ms: Some(millis(c.send_timeout)),
                connect_timeout_ms: Some(millis(c.connect_timeout)),
            },
            heartbeat: HeartbeatSection {
                send_ms: Some(millis(c.heartbeat_send)),
                receive_ms: Some(millis(c.heartbeat_receive)),
                grace: Some(c.heartbeat_grace),
            },
            broker: BrokerSection {
                kind: Some(if relay.is_some() { "relay" } else { "embedded" }.to_owned()),
                topic_prefixes: embedded.then(|| c.embedded.topic_prefixes.clone()),
                queue_prefixes: embedded.then(|| c.embedded.queue_prefixes.clone()),
                queue_max_messages: embedded.then_some(c.embedded.max_queue_messages),
                queue_max_bytes: embedded.then_some(c.embedded.max_queue_bytes),
                max_queues: embedded.then_some(c.embedded.max_queues),
                max_total_queue_bytes: embedded.then_some(c.embedded.max_total_queue_bytes),
                max_unacked: embedded.then_some(c.embedded.max_unacked),
            },
            relay: relay.map(RelaySection::from_config),
            demo: DemoSection {
                chat: Some(settings.demo_chat),
            },
        }
    }

    /// Every key there is, with its default: the keys the environment and
    /// --set may name (both brokers' keys, whichever is in use).
    fn every_key() -> FileConfig {
        let mut all = FileConfig::from_config(&Settings::default());
        all.relay = Some(RelaySection::from_config(&RelayConfig::default()));
        all
    }
}

/// [`FileConfig::every_key`] as a table of sections.
fn known_keys() -> Result<Table, String> {
    Table::try_from(FileConfig::every_key())
        .map_err(|e| format!("internal error listing the configuration keys: {e}"))
}

// ---------------------------------------------------------------------------
// Merging the sources.

/// Where a key's value came from, for error messages.
#[derive(Debug, Clone)]
enum Origin {
    File(PathBuf),
    Env(String),
    Flag(String),
}

impl std::fmt::Display for Origin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Origin::File(path) => write!(f, "set in {}", path.display()),
            Origin::Env(name) => write!(f, "set by environment variable {name}"),
            Origin::Flag(flag) => write!(f, "set by {flag}"),
        }
    }
}

#[derive(Debug, Default)]
struct Layers {
    table: Table,
    origins: HashMap<String, Origin>,
}

impl Layers {
    /// Sets `section.key`, creating the section; a non-table section (say
    /// `limits = 5` in the file) is reported rather than silently replaced.
    fn set(
        &mut self,
        section: &str,
        key: &str,
        value: Value,
        origin: Origin,
    ) -> Result<(), String> {
        let entry = self
            .table
            .entry(section.to_owned())
            .or_insert_with(|| Value::Table(Table::new()));
        let Value::Table(table) = entry else {
            let from = self
                .origins
                .get(section)
                .map(|o| format!("; {o}"))
                .unwrap_or_default();
            return Err(format!(
                "invalid configuration: {section}: must be a table ([{section}]), got a value of type {}{from}",
                entry.type_str()
            ));
        };
        table.insert(key.to_owned(), value);
        self.origins.insert(format!("{section}.{key}"), origin);
        Ok(())
    }

    fn add_file(&mut self, path: &Path) -> Result<(), String> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read configuration file {}: {e}", path.display()))?;
        let file: Table = toml::from_str(&text).map_err(|e| {
            format!(
                "invalid configuration file {}: {}",
                path.display(),
                e.to_string().trim_end()
            )
        })?;
        let origin = Origin::File(path.to_owned());
        for (section, value) in file {
            if let Value::Table(keys) = &value {
                for key in keys.keys() {
                    self.origins
                        .insert(format!("{section}.{key}"), origin.clone());
                }
            }
            self.origins.insert(section.clone(), origin.clone());
            self.table.insert(section, value);
        }
        Ok(())
    }

    /// Applies every STOMPBOX_* variable of `vars`. Taken as an argument so
    /// tests need not touch the process environment.
    fn add_env(
        &mut self,
        vars: impl IntoIterator<Item = (OsString, OsString)>,
        known: &Table,
    ) -> Result<(), String> {
        let mut vars: Vec<_> = vars
            .into_iter()
            .filter(|(name, _)| name.as_encoded_bytes().starts_with(ENV_PREFIX.as_bytes()))
            .collect();
        // Deterministic: the first bad variable reported is the same every run.
        vars.sort();
        for (name, value) in vars {
            let name = name.to_string_lossy().into_owned();
            let Some(value) = value.to_str() else {
                return Err(format!("environment variable {name} is not valid UTF-8"));
            };
            let (section, key, default) = env_key(&name, known).ok_or_else(|| {
                format!(
                    "environment variable {name} does not name a setting: use {ENV_PREFIX}<SECTION>_<KEY> \
                     with a key of stompbox.toml, e.g. {ENV_PREFIX}LIMITS_FRAME_BYTES"
                )
            })?;
            let value = parse_value(value, default);
            self.set(&section, &key, value, Origin::Env(name.clone()))?;
        }
        Ok(())
    }

    fn add_flag(
        &mut self,
        path: &str,
        value: &str,
        flag: &str,
        known: &Table,
    ) -> Result<(), String> {
        let default = path
            .split_once('.')
            .and_then(|(s, k)| known.get(s)?.as_table()?.get(k).map(|d| (s, k, d)));
        let Some((section, key, default)) = default else {
            return Err(format!(
                "{flag}: '{path}' is not a setting: use SECTION.KEY with a key of stompbox.toml, \
                 e.g. limits.frame_bytes"
            ));
        };
        self.set(
            section,
            key,
            parse_value(value, default),
            Origin::Flag(flag.to_owned()),
        )
    }
}

/// Maps `STOMPBOX_LIMITS_FRAME_BYTES` to `("limits", "frame_bytes")` and the
/// key's default. Sections have no underscore, so the first one splits.
fn env_key<'k>(name: &str, known: &'k Table) -> Option<(String, String, &'k Value)> {
    let rest = name.strip_prefix(ENV_PREFIX)?;
    let (section, key) = rest.split_once('_')?;
    let (section, key) = (section.to_ascii_lowercase(), key.to_ascii_lowercase());
    let default = known.get(&section)?.as_table()?.get(&key)?;
    Some((section, key, default))
}

/// A value from the environment or a flag: TOML when it is one TOML value
/// (numbers, booleans, arrays, quoted strings), otherwise the raw text, so
/// `127.0.0.1:9000` needs no quotes. A list key also takes `a,b,c`. A text
/// key takes the raw text unless it is a quoted string, so a token of digits
/// stays text instead of becoming a number.
fn parse_value(raw: &str, default: &Value) -> Value {
    let parsed = toml::from_str::<Table>(&format!("v = {raw}"))
        .ok()
        // Exactly one key: "1\nother = 2" must not smuggle in a second one.
        .filter(|t| t.len() == 1)
        .and_then(|mut t| t.remove("v"));
    match parsed {
        Some(value) if default.is_str() && !value.is_str() => Value::String(raw.to_owned()),
        Some(value) => value,
        None if default.is_array() => Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_owned()))
                .collect(),
        ),
        None => Value::String(raw.to_owned()),
    }
}

/// Builds the server configuration from the file (if any), the environment
/// and flags (`(section.key, value, flag name)`), in rising precedence.
fn load(
    file: Option<&Path>,
    env: impl IntoIterator<Item = (OsString, OsString)>,
    flags: &[(String, String, String)],
) -> Result<Settings, String> {
    let known = known_keys()?;
    let mut layers = Layers::default();
    if let Some(path) = file {
        layers.add_file(path)?;
    }
    layers.add_env(env, &known)?;
    for (path, value, flag) in flags {
        layers.add_flag(path, value, flag, &known)?;
    }
    let Layers { table, origins } = layers;
    let parsed: FileConfig = serde_path_to_error::deserialize(table).map_err(|e| {
        let path = e.path().to_string();
        let from = origin_of(&origins, &path)
            .map(|o| format!("; {o}"))
            .unwrap_or_default();
        format!(
            "invalid configuration: {path}: {}{from}",
            e.inner().message().trim_end()
        )
    })?;
    validate(parsed).map_err(|problems| {
        let describe = |(key, message): &(&str, String)| match origin_of(&origins, key) {
            Some(origin) => format!("{key}: {message}; {origin}"),
            None => format!("{key}: {message}"),
        };
        match problems.as_slice() {
            [one] => format!("invalid configuration: {}", describe(one)),
            many => {
                let lines: Vec<String> =
                    many.iter().map(|p| format!("  {}", describe(p))).collect();
                format!(
                    "invalid configuration ({} problems):\n{}",
                    many.len(),
                    lines.join("\n")
                )
            }
        }
    })
}

/// The source of `path` or, for an unknown key inside a section, of the
/// section (`limits.fram_bytes` came from wherever `limits` was written).
fn origin_of<'o>(origins: &'o HashMap<String, Origin>, path: &str) -> Option<&'o Origin> {
    origins
        .get(path)
        .or_else(|| origins.get(path.split_once('.').map_or(path, |(s, _)| s)))
}

// ---------------------------------------------------------------------------
// Checking values.

/// Problems found, as `(section.key, what is wrong)`.
type Problems = Vec<(&'static str, String)>;

struct Check {
    problems: Problems,
}

impl Check {
    fn fail(&mut self, key: &'static str, message: String) {
        self.problems.push((key, message));
    }

    fn at_least<T: PartialOrd + std::fmt::Display>(
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

    fn at_most<T: PartialOrd + std::fmt::Display>(&mut self, key: &'static str, value: T, max: T) {
        if value > max {
            self.fail(key, format!("must be at most {max} (got {value})"));
        }
    }

    fn addr(&mut self, key: &'static str, value: &str) -> Option<SocketAddr> {
        match value.trim().parse() {
            Ok(addr) => Some(addr),
            Err(_) => {
                self.fail(
                    key,
                    format!(
                        "expected IP:port such as 127.0.0.1:8080 or [::]:8080 (got \"{value}\")"
                    ),
                );
                None
            }
        }
    }

    /// An application or user destination prefix: a plain path such as
    /// `example`. A trailing '/' is allowed and means the same.
    fn path_prefix(&mut self, key: &'static str, value: &str, example: &str) {
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
    fn broker_address(&mut self, key: &'static str, value: &str) {
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

    fn prefixes(&mut self, key: &'static str, prefixes: &[String]) {
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
fn interval(check: &mut Check, key: &'static str, value: u64, min: u64) -> Duration {
    if value != 0 && value < min {
        check.fail(
            key,
            format!("must be 0 (off) or at least {min} (got {value})"),
        );
    }
    Duration::from_millis(value)
}

/// `/app` and `/app/` are the same prefix: compared as `/app/`.
fn as_dir(prefix: &str) -> String {
    format!("{}/", prefix.trim_end_matches('/'))
}

/// True when one prefix is the other or under it, so some destinations
/// would match both.
fn overlap(a: &str, b: &str) -> bool {
    let (a, b) = (as_dir(a), as_dir(b));
    a.starts_with(&b) || b.starts_with(&a)
}

/// The shortest token accepted for the HTTP publish API.
const MIN_TOKEN_CHARS: usize = 16;

fn validate(file: FileConfig) -> Result<Settings, Problems> {
    let d = ServerConfig::default();
    let mut c = ServerConfig::default();
    let mut check = Check {
        problems: Vec::new(),
    };
    let FileConfig {
        server,
        app,
        limits,
        heartbeat,
        broker,
        relay: relay_section,
        demo,
    } = file;

    // [server]
    if let Some(http) = server.http
        && let Some(addr) = check.addr("server.http", &http)
    {
        c.http_addr = addr;
    }
    if let Some(tcp) = server.tcp {
        let off = tcp.trim().is_empty() || tcp.trim().eq_ignore_ascii_case("off");
        c.tcp_addr = if off {
            None
        } else {
            check.addr("server.tcp", &tcp)
        };
    }
    if let Some(tcp) = c.tcp_addr
        && tcp == c.http_addr
        && tcp.port() != 0
    {
        check.fail(
            "server.tcp",
            format!("must differ from server.http (both are {tcp})"),
        );
    }
    if let Some(path) = server.ws_path {
        // The HTTP router panics on paths with its own syntax ({param}, *rest)
        // and "/" is the demo page, so only plain paths are allowed.
        let plain = path.len() > 1
            && path.starts_with('/')
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"/-._~".contains(&b))
            && !path.contains("//");
        if !plain {
            check.fail(
                "server.ws_path",
                format!(
                    "must be a path like \"/ws\": starting with '/', not \"/\" alone, of letters, digits, \
                     '-', '.', '_', '~' and single '/' (got \"{path}\")"
                ),
            );
        }
        c.ws_path = path;
    }
    if let Some(n) = server.max_connections {
        c.max_connections = check.at_least("server.max_connections", n, 1);
        // The shutdown drain counts connections as u32 permits.
        check.at_most("server.max_connections", n, u32::MAX as usize);
    }
    if let Some(ms) = server.shutdown_timeout_ms {
        c.shutdown_timeout = Duration::from_millis(ms);
    }
    // The token is never quoted back: errors and logs may be seen by others.
    match server.api_token {
        None => {}
        Some(token) if token.is_empty() => c.api_token = None,
        Some(token) => {
            let chars = token.chars().count();
            if chars < MIN_TOKEN_CHARS {
                check.fail(
                    "server.api_token",
                    format!(
                        "must be at least {MIN_TOKEN_CHARS} characters, as it guards publishing to \
                         every destination (got {chars}); e.g. `openssl rand -hex 32`, or \"\" for off"
                    ),
                );
            } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
                check.fail(
                    "server.api_token",
                    "must be printable ASCII without spaces, as clients send it in an \
                     Authorization header"
                        .to_owned(),
                );
            }
            c.api_token = Some(token);
        }
    }

    // [app]
    if let Some(prefixes) = app.prefixes {
        for p in &prefixes {
            check.path_prefix("app.prefixes", p, "/app");
        }
        c.app_prefixes = prefixes;
    }
    if let Some(prefix) = app.user_prefix {
        check.path_prefix("app.user_prefix", &prefix, "/user");
        c.user_prefix = prefix;
    }

    // [limits]
    let frame = limits.frame_bytes.unwrap_or(d.frame_limits.max_frame_bytes);
    c.frame_limits.max_frame_bytes = check.at_least("limits.frame_bytes", frame, 1024);
    if let Some(n) = limits.header_line_bytes {
        // CONNECT with a login, passcode and host must fit.
        c.frame_limits.max_header_line = check.at_least("limits.header_line_bytes", n, 256);
        if n > frame {
            check.fail(
                "limits.header_line_bytes",
                format!("must not exceed limits.frame_bytes ({frame}) (got {n})"),
            );
        }
    }
    if let Some(n) = limits.headers {
        // CONNECT alone may carry accept-version, host, login, passcode and heart-beat.
        c.frame_limits.max_headers = check.at_least("limits.headers", n, 8);
    }
    if let Some(n) = limits.subscriptions_per_session {
        c.max_subscriptions = check.at_least("limits.subscriptions_per_session", n, 1);
    }
    if let Some(n) = limits.transactions_per_session {
        // Zero is allowed: it turns transactions off.
        c.max_transactions = n;
    }
    if let Some(n) = limits.transaction_bytes {
        c.max_transaction_bytes = check.at_least("limits.transaction_bytes", n, 1024);
    }
    if let Some(n) = limits.transaction_frames {
        c.max_transaction_frames = check.at_least("limits.transaction_frames", n, 1);
    }
    let outbox = limits.outbox_bytes.unwrap_or(d.outbox_bytes);
    c.outbox_bytes = outbox;
    if outbox < frame.saturating_mul(2) {
        // Otherwise one largest message, plus the headers the server adds to
        // it, would mark any subscriber as a slow consumer.
        check.fail(
            "limits.outbox_bytes",
            format!(
                "must be at least twice limits.frame_bytes, {} (got {outbox})",
                frame.saturating_mul(2)
            ),
        );
    }
    let backlog = limits.backlog_bytes.unwrap_or(d.backlog_bytes);
    c.backlog_bytes = backlog;
    if backlog < outbox.saturating_mul(2) {
        // Below that, one client's full outbox alone would pause everyone.
        check.fail(
            "limits.backlog_bytes",
            format!(
                "must be at least twice limits.outbox_bytes, {} (got {backlog})",
                outbox.saturating_mul(2)
            ),
        );
    }
    if let Some(ms) = limits.send_timeout_ms {
        c.send_timeout = Duration::from_millis(check.at_least("limits.send_timeout_ms", ms, 100));
    }
    if let Some(ms) = limits.connect_timeout_ms {
        c.connect_timeout =
            Duration::from_millis(check.at_least("limits.connect_timeout_ms", ms, 100));
    }

    // [heartbeat]
    if let Some(ms) = heartbeat.send_ms {
        c.heartbeat_send = interval(&mut check, "heartbeat.send_ms", ms, 100);
    }
    if let Some(ms) = heartbeat.receive_ms {
        c.heartbeat_receive = interval(&mut check, "heartbeat.receive_ms", ms, 100);
    }
    if let Some(grace) = heartbeat.grace {
        // Below 1.0 a client sending exactly on time would be cut off; NaN
        // and infinity would never (or always) cut anyone off.
        if !grace.is_finite() || !(1.0..=100.0).contains(&grace) {
            check.fail(
                "heartbeat.grace",
                format!("must be between 1.0 and 100.0 (got {grace})"),
            );
        }
        c.heartbeat_grace = grace;
    }

    // [broker], and [relay] when it is the relay
    let relayed = match broker.kind.as_deref().map(str::trim) {
        None | Some("embedded") => false,
        Some("relay") => true,
        Some(other) => {
            check.fail(
                "broker.kind",
                format!("unknown broker \"{other}\"; use \"embedded\" or \"relay\""),
            );
            false
        }
    };
    if relayed {
        refuse_embedded_keys(&mut check, &broker);
        c.relay = Some(relay(&mut check, relay_section.unwrap_or_default(), frame));
    } else {
        // [relay] is ignored, so a file can keep it ready for broker.kind = "relay".
        c.embedded = embedded(&mut check, broker, &d.embedded, frame);
    }

    // Each destination must have one meaning: handler, user or broker.
    let broker_prefixes: Vec<&String> = match &c.relay {
        Some(relay) => relay.prefixes.iter().collect(),
        None => c
            .embedded
            .topic_prefixes
            .iter()
            .chain(&c.embedded.queue_prefixes)
            .collect(),
    };
    for p in &c.app_prefixes {
        if let Some(b) = broker_prefixes.iter().find(|b| overlap(p, b)) {
            check.fail(
                "app.prefixes",
                format!(
                    "\"{p}\" overlaps broker prefix \"{b}\"; a destination must go to the \
                     application or to the broker, not both"
                ),
            );
        }
    }
    if let Some(b) = broker_prefixes.iter().find(|b| overlap(&c.user_prefix, b)) {
        check.fail(
            "app.user_prefix",
            format!("\"{}\" overlaps broker prefix \"{b}\"", c.user_prefix),
        );
    }
    if let Some(p) = c.app_prefixes.iter().find(|p| overlap(&c.user_prefix, p)) {
        check.fail(
            "app.user_prefix",
            format!("\"{}\" overlaps application prefix \"{p}\"", c.user_prefix),
        );
    }
    if let Some(relay) = &c.relay {
        // The broker-side user namespace must not be reachable as an
        // application or client-side user destination.
        let namespace = &relay.user_destination_prefix;
        if let Some(p) = c
            .app_prefixes
            .iter()
            .chain(std::iter::once(&c.user_prefix))
            .find(|p| namespace.starts_with(&as_dir(p)))
        {
            check.fail(
                "relay.user_destination_prefix",
                format!("\"{namespace}\" is under \"{p}\", which clients' frames go to instead"),
            );
        }
    }

    // [demo]
    let demo_chat = demo.chat.unwrap_or(true);
    if demo_chat {
        // The page speaks the default destinations.
        let mut needs = Vec::new();
        if !c.app_prefixes.iter().any(|p| as_dir(p) == "/app/") {
            needs.push("\"/app\" in app.prefixes");
        }
        match &c.relay {
            Some(relay) => {
                // Replies go to /topic/…, errors to /user/queue/errors.
                if !relay.prefixes.iter().any(|p| p == "/topic/")
                    || !relay.prefixes.iter().any(|p| p == "/queue/")
                {
                    needs.push("\"/topic/\" and \"/queue/\" in relay.prefixes");
                }
            }
            None => {
                if c.embedded.topic_prefixes.first().map(String::as_str) != Some("/topic/") {
                    needs.push("\"/topic/\" first in broker.topic_prefixes");
                }
            }
        }
        if as_dir(&c.user_prefix) != "/user/" {
            needs.push("app.user_prefix = \"/user\"");
        }
        if !needs.is_empty() {
            check.fail(
                "demo.chat",
                format!(
                    "the chat demo uses the default destinations and needs {}; \
                     set demo.chat = false to use other prefixes",
                    needs.join(" and ")
                ),
            );
        }
    }

    if check.problems.is_empty() {
        Ok(Settings {
            server: c,
            demo_chat,
        })
    } else {
        Err(check.problems)
    }
}

/// With the relay the embedded broker's keys would have no effect: its queue
/// bounds would silently stop applying and its prefixes would not be the ones
/// relayed. So they are refused rather than ignored.
fn refuse_embedded_keys(check: &mut Check, broker: &BrokerSection) {
    for (key, set, instead) in [
        (
            "broker.topic_prefixes",
            broker.topic_prefixes.is_some(),
            "relay.prefixes lists the destinations relayed",
        ),
        (
            "broker.queue_prefixes",
            broker.queue_prefixes.is_some(),
            "relay.prefixes lists the destinations relayed",
        ),
        (
            "broker.queue_max_messages",
            broker.queue_max_messages.is_some(),
            "the broker's own queue policies bound queues",
        ),
        (
            "broker.queue_max_bytes",
            broker.queue_max_bytes.is_some(),
            "the broker's own queue policies bound queues",
        ),
        (
            "broker.max_queues",
            broker.max_queues.is_some(),
            "the broker's own limits bound queues",
        ),
        (
            "broker.max_total_queue_bytes",
            broker.max_total_queue_bytes.is_some(),
            "the broker's own limits bound queues",
        ),
        (
            "broker.max_unacked",
            broker.max_unacked.is_some(),
            "clients set a prefetch-count header on SUBSCRIBE",
        ),
    ] {
        if set {
            check.fail(
                key,
                format!(
                    "belongs to the embedded broker and has no effect with broker.kind = \"relay\"; \
                     remove it (with the relay, {instead})"
                ),
            );
        }
    }
}

/// The relay's settings: every key of `[relay]` not set keeps the
/// library's default. `frame` is limits.frame_bytes.
fn relay(check: &mut Check, r: RelaySection, frame: usize) -> RelayConfig {
    let mut c = RelayConfig::default();
    if let Some(addresses) = r.addresses {
        if addresses.iter().all(|a| a.trim().is_empty()) {
            check.fail(
                "relay.addresses",
                "must list at least one broker address, like [\"127.0.0.1:61613\"]".to_owned(),
            );
        }
        for address in &addresses {
            check.broker_address("relay.addresses", address.trim());
        }
        c.addresses = addresses.iter().map(|a| a.trim().to_owned()).collect();
    }
    if let Some(host) = r.virtual_host {
        if host.trim().is_empty() {
            check.fail(
                "relay.virtual_host",
                "must not be empty (RabbitMQ's default virtual host is \"/\")".to_owned(),
            );
        }
        c.virtual_host = host;
    }
    // Empty means "the client's own", which an absent key could not say.
    if let Some(login) = r.client_login {
        c.client_login = (!login.is_empty()).then_some(login);
    }
    if let Some(passcode) = r.client_passcode {
        c.client_passcode = (!passcode.is_empty()).then_some(passcode);
    }
    if let Some(login) = r.system_login {
        c.system_login = login;
    }
    if let Some(passcode) = r.system_passcode {
        c.system_passcode = passcode;
    }
    // One broker connection per client session: heart-beats faster than a
    // second would multiply into real load on the broker.
    if let Some(ms) = r.heartbeat_send_ms {
        c.heartbeat_send = interval(check, "relay.heartbeat_send_ms", ms, 1000);
    }
    if let Some(ms) = r.heartbeat_receive_ms {
        c.heartbeat_receive = interval(check, "relay.heartbeat_receive_ms", ms, 1000);
    }
    if let Some(prefixes) = r.prefixes {
        if prefixes.is_empty() {
            check.fail(
                "relay.prefixes",
                "is empty, so no destination would be relayed to the broker".to_owned(),
            );
        }
        check.prefixes("relay.prefixes", &prefixes);
        c.prefixes = prefixes;
    }
    if let Some(prefix) = r.user_destination_prefix {
        let plain = prefix.len() > 1
            && prefix.starts_with('/')
            && prefix.bytes().all(|b| b.is_ascii_graphic());
        if !plain {
            check.fail(
                "relay.user_destination_prefix",
                format!(
                    "must be a destination prefix starting with '/', without spaces, like \
                     \"/exchange/amq.direct/stompbox-user.\" (got \"{prefix}\")"
                ),
            );
        }
        c.user_destination_prefix = prefix;
    }
    if let Some(ms) = r.reconnect_initial_ms {
        c.reconnect_initial =
            Duration::from_millis(check.at_least("relay.reconnect_initial_ms", ms, 100));
    }
    if let Some(ms) = r.reconnect_max_ms {
        c.reconnect_max = Duration::from_millis(ms);
    }
    if c.reconnect_max < c.reconnect_initial {
        check.fail(
            "relay.reconnect_max_ms",
            format!(
                "must be at least relay.reconnect_initial_ms, {} (got {})",
                millis(c.reconnect_initial),
                millis(c.reconnect_max)
            ),
        );
    }
    if let Some(ms) = r.connect_timeout_ms {
        c.connect_timeout =
            Duration::from_millis(check.at_least("relay.connect_timeout_ms", ms, 100));
    }
    if let Some(ms) = r.publish_timeout_ms {
        c.publish_timeout =
            Duration::from_millis(check.at_least("relay.publish_timeout_ms", ms, 100));
    }
    // A client's largest frame comes back from the broker with the headers
    // the broker adds, and must fit into the buffer towards the broker with
    // the headers the relay adds: twice the client limit leaves room, as for
    // limits.outbox_bytes.
    let twice = frame.saturating_mul(2);
    if let Some(n) = r.max_frame_bytes {
        c.max_frame_bytes = n;
    }
    if let Some(n) = r.upstream_buffer_bytes {
        c.upstream_buffer_bytes = n;
    }
    for (key, value) in [
        ("relay.max_frame_bytes", c.max_frame_bytes),
        ("relay.upstream_buffer_bytes", c.upstream_buffer_bytes),
    ] {
        if value < twice {
            check.fail(
                key,
                format!("must be at least twice limits.frame_bytes, {twice} (got {value})"),
            );
        }
    }
    if let Some(n) = r.max_in_flight {
        c.max_in_flight = check.at_least("relay.max_in_flight", n, 1);
    }
    if let Some(encode) = r.encode_slashes {
        c.encode_slashes = encode;
    }
    c.tls = relay_tls(check, r.tls, r.tls_server_name, r.tls_ca_file);
    c
}

/// TLS is on only with `relay.tls = true`: one switch, so a stray
/// `tls_ca_file` cannot quietly turn it on (or be quietly ignored).
fn relay_tls(
    check: &mut Check,
    on: Option<bool>,
    server_name: Option<String>,
    ca_file: Option<String>,
) -> Option<RelayTls> {
    let server_name = server_name.filter(|n| !n.trim().is_empty());
    let ca_file = ca_file.filter(|f| !f.trim().is_empty());
    if on != Some(true) {
        for (key, set) in [
            ("relay.tls_server_name", server_name.is_some()),
            ("relay.tls_ca_file", ca_file.is_some()),
        ] {
            if set {
                check.fail(
                    key,
                    "has no effect while relay.tls is false; set relay.tls = true to connect to \
                     the broker over TLS"
                        .to_owned(),
                );
            }
        }
        return None;
    }
    let mut tls = RelayTls::default();
    if let Some(name) = server_name {
        let name = name.trim();
        // What rustls accepts: a DNS name or an IP address.
        let ok = name.parse::<std::net::IpAddr>().is_ok()
            || (name.len() <= 253
                && name.split('.').all(|label| {
                    (1..=63).contains(&label.len())
                        && label
                            .bytes()
                            .all(|b| b.is_ascii_alphanumeric() || b == b'-')
                }));
        if !ok {
            check.fail(
                "relay.tls_server_name",
                format!(
                    "must be a DNS name or an IP address, like rabbitmq.example.com (got \"{name}\")"
                ),
            );
        }
        tls.server_name = Some(name.to_owned());
    }
    if let Some(file) = ca_file {
        let path = PathBuf::from(file.trim());
        // Checked now: the relay would otherwise fail every connection
        // attempt with the same error, in the background.
        match std::fs::read(&path) {
            Ok(pem) if pem.windows(27).any(|w| w == b"-----BEGIN CERTIFICATE-----") => {}
            Ok(_) => check.fail(
                "relay.tls_ca_file",
                format!("{} holds no PEM certificate", path.display()),
            ),
            Err(e) => check.fail(
                "relay.tls_ca_file",
                format!("cannot read {}: {e}", path.display()),
            ),
        }
        tls.ca_file = Some(path);
    }
    Some(tls)
}

fn embedded(
    check: &mut Check,
    broker: BrokerSection,
    d: &EmbeddedConfig,
    frame: usize,
) -> EmbeddedConfig {
    let mut e = d.clone();
    if let Some(p) = broker.topic_prefixes {
        check.prefixes("broker.topic_prefixes", &p);
        e.topic_prefixes = p;
    }
    if let Some(p) = broker.queue_prefixes {
        check.prefixes("broker.queue_prefixes", &p);
        e.queue_prefixes = p;
    }
    if e.topic_prefixes.is_empty() && e.queue_prefixes.is_empty() {
        check.fail(
            "broker.topic_prefixes",
            "topic_prefixes and queue_prefixes are both empty, so no destination would be accepted"
                .to_owned(),
        );
    }
    // Topic prefixes are matched first, so a queue prefix under a topic
    // prefix would never be reached (and the reverse is just as confusing).
    for q in &e.queue_prefixes {
        if let Some(t) = e
            .topic_prefixes
            .iter()
            .find(|t| q.starts_with(t.as_str()) || t.starts_with(q.as_str()))
        {
            check.fail(
                "broker.queue_prefixes",
                format!(
                    "\"{q}\" overlaps topic prefix \"{t}\"; a destination must be one or the other"
                ),
            );
        }
    }
    if let Some(n) = broker.queue_max_messages {
        e.max_queue_messages = check.at_least("broker.queue_max_messages", n, 1);
    }
    if let Some(n) = broker.queue_max_bytes {
        e.max_queue_bytes = n;
    }
    if e.max_queue_bytes < frame {
        // Otherwise the largest message a client may send could never be queued.
        check.fail(
            "broker.queue_max_bytes",
            format!(
                "must be at least limits.frame_bytes, {frame} (got {})",
                e.max_queue_bytes
            ),
        );
    }
    if let Some(n) = broker.max_total_queue_bytes {
        e.max_total_queue_bytes = check.at_least("broker.max_total_queue_bytes", n, 1024);
    }
    if let Some(n) = broker.max_queues {
        e.max_queues = check.at_least("broker.max_queues", n, 1);
    }
    if let Some(n) = broker.max_unacked {
        e.max_unacked = check.at_least("broker.max_unacked", n, 1);
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
        vars.iter()
            .map(|(k, v)| (OsString::from(k), OsString::from(v)))
            .collect()
    }

    fn from_toml(text: &str) -> Result<Settings, String> {
        let table: Table = toml::from_str(text).expect("test TOML parses");
        let mut layers = Layers::default();
        for (section, value) in table {
            layers.table.insert(section, value);
        }
        let parsed: FileConfig = serde_path_to_error::deserialize(layers.table)
            .map_err(|e| format!("{}: {}", e.path(), e.inner().message()))?;
        validate(parsed).map_err(|p| format!("{p:?}"))
    }

    fn known() -> Table {
        known_keys().expect("defaults serialize")
    }

    #[test]
    fn nothing_set_gives_the_library_defaults() {
        let settings = load(None, env(&[]), &[]).expect("defaults are valid");
        assert_eq!(
            format!("{:?}", settings.server),
            format!("{:?}", ServerConfig::default())
        );
        assert!(settings.demo_chat);
    }

    /// `text` with its "# key = value" lines uncommented (not prose
    /// comments, which have no '=' after one word).
    fn uncomment(text: &str) -> String {
        text.lines()
            .map(|line| match line.strip_prefix("# ") {
                Some(rest)
                    if rest.split_once(" = ").is_some_and(|(k, _)| {
                        !k.is_empty() && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                    }) =>
                {
                    rest
                }
                _ => line,
            })
            .map(|line| format!("{line}\n"))
            .collect()
    }

    #[test]
    fn shipped_file_lists_every_key_with_its_default() {
        let shipped = include_str!("../../../stompbox.toml");
        let uncommented = uncomment(shipped);
        let table: Table = toml::from_str(&uncommented).expect("uncommented stompbox.toml parses");
        let known = known();
        for (section, keys) in &known {
            for key in keys.as_table().expect("sections are tables").keys() {
                assert!(
                    table.get(section).and_then(|s| s.get(key)).is_some(),
                    "stompbox.toml does not document {section}.{key}"
                );
            }
        }
        let settings = from_toml(&uncommented).expect("documented values are valid");
        assert_eq!(
            format!("{:?}", settings.server),
            format!("{:?}", ServerConfig::default())
        );
        assert!(settings.demo_chat);
        // As shipped (everything commented) it is valid too.
        from_toml(shipped).expect("stompbox.toml as shipped is valid");
    }

    #[test]
    fn env_overrides_file_and_flags_override_env() {
        let dir = std::env::temp_dir().join(format!("stompbox-config-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join("precedence.toml");
        std::fs::write(
            &path,
            "[server]\nws_path = \"/file\"\nhttp = \"127.0.0.1:1000\"\n[limits]\nframe_bytes = 2048\n",
        )
        .expect("write config");
        let config = load(
            Some(&path),
            env(&[
                ("STOMPBOX_SERVER_WS_PATH", "/env"),
                ("STOMPBOX_SERVER_HTTP", "127.0.0.1:2000"),
                ("STOMPBOX_BROKER_TOPIC_PREFIXES", "/topic/, /exchange/"),
                ("STOMPBOX_HEARTBEAT_GRACE", "2"),
                ("OTHER_VAR", "ignored"),
            ]),
            &[("server.ws_path".into(), "/flag".into(), "--ws-path".into())],
        )
        .expect("valid")
        .server;
        assert_eq!(config.ws_path, "/flag");
        assert_eq!(config.http_addr.port(), 2000);
        assert_eq!(config.frame_limits.max_frame_bytes, 2048);
        assert_eq!(config.embedded.topic_prefixes, ["/topic/", "/exchange/"]);
        assert!((config.heartbeat_grace - 2.0).abs() < f64::EPSILON);
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn env_values_are_toml_when_they_parse() {
        let n = Value::Integer(0);
        assert_eq!(parse_value("131072", &n), Value::Integer(131_072));
        assert_eq!(
            parse_value("1\nx = 2", &n),
            Value::String("1\nx = 2".into())
        );
        let b = Value::Boolean(true);
        assert_eq!(parse_value("false", &b), Value::Boolean(false));
        // A text key keeps the text, unless it is quoted TOML.
        let d = Value::String(String::new());
        assert_eq!(
            parse_value("127.0.0.1:9000", &d),
            Value::String("127.0.0.1:9000".into())
        );
        assert_eq!(
            parse_value("12345678901234567890", &d),
            Value::String("12345678901234567890".into())
        );
        assert_eq!(parse_value("\"a b\"", &d), Value::String("a b".into()));
        let list = Value::Array(Vec::new());
        assert_eq!(
            parse_value("[\"/a/\"]", &list),
            Value::Array(vec![Value::String("/a/".into())])
        );
    }

    #[test]
    fn bad_values_name_the_key_and_source() {
        let e =
            load(None, env(&[("STOMPBOX_LIMITS_FRAME_BYTES", "10")]), &[]).expect_err("too small");
        assert_eq!(
            e,
            "invalid configuration: limits.frame_bytes: must be at least 1024 (got 10); \
             set by environment variable STOMPBOX_LIMITS_FRAME_BYTES"
        );
        let e = load(
            None,
            env(&[("STOMPBOX_SERVER_MAX_CONNECTIONS", "lots")]),
            &[],
        )
        .expect_err("type");
        assert!(
            e.contains("server.max_connections") && e.contains("STOMPBOX_SERVER_MAX_CONNECTIONS"),
            "{e}"
        );
        let e = load(None, env(&[("STOMPBOX_LIMITS_FRAME_BYTEZ", "1")]), &[]).expect_err("unknown");
        assert!(e.contains("STOMPBOX_LIMITS_FRAME_BYTEZ"), "{e}");
        let e = load(None, env(&[("STOMPBOX_LIMITS", "1")]), &[]).expect_err("no key");
        assert!(e.contains("STOMPBOX_LIMITS "), "{e}");
        let e = load(
            None,
            env(&[]),
            &[("nope.x".into(), "1".into(), "--set nope.x".into())],
        )
        .expect_err("flag");
        assert!(e.contains("nope.x"), "{e}");
    }

    #[test]
    fn unknown_keys_and_sections_are_named() {
        let e = from_toml("[limits]\nfram_bytes = 1\n").expect_err("unknown key");
        assert!(e.contains("fram_bytes"), "{e}");
        let e = from_toml("[limit]\nframe_bytes = 1\n").expect_err("unknown section");
        assert!(e.contains("limit"), "{e}");
        let e = from_toml("frame_bytes = 1\n").expect_err("top-level key");
        assert!(e.contains("frame_bytes"), "{e}");
    }

    #[test]
    fn sanity_rules() {
        for (text, key) in [
            ("[server]\nhttp = \"localhost\"", "server.http"),
            ("[server]\ntcp = \"nope\"", "server.tcp"),
            (
                "[server]\nhttp = \"127.0.0.1:5000\"\ntcp = \"127.0.0.1:5000\"",
                "server.tcp",
            ),
            ("[server]\nws_path = \"/\"", "server.ws_path"),
            ("[server]\nws_path = \"/{x}\"", "server.ws_path"),
            ("[server]\nws_path = \"ws\"", "server.ws_path"),
            ("[server]\nmax_connections = 0", "server.max_connections"),
            (
                "[limits]\nheader_line_bytes = 100000",
                "limits.header_line_bytes",
            ),
            ("[limits]\nheaders = 2", "limits.headers"),
            ("[limits]\noutbox_bytes = 1000", "limits.outbox_bytes"),
            ("[limits]\nframe_bytes = 1048576", "limits.outbox_bytes"),
            ("[limits]\nsend_timeout_ms = 0", "limits.send_timeout_ms"),
            ("[heartbeat]\nsend_ms = 5", "heartbeat.send_ms"),
            ("[heartbeat]\ngrace = 0.5", "heartbeat.grace"),
            ("[heartbeat]\ngrace = nan", "heartbeat.grace"),
            ("[broker]\nkind = \"kafka\"", "broker.kind"),
            (
                "[broker]\ntopic_prefixes = [\"topic\"]",
                "broker.topic_prefixes",
            ),
            (
                "[broker]\ntopic_prefixes = [\"/\"]",
                "broker.topic_prefixes",
            ),
            (
                "[broker]\nqueue_prefixes = [\"/topic/q/\"]",
                "broker.queue_prefixes",
            ),
            (
                "[broker]\ntopic_prefixes = []\nqueue_prefixes = []",
                "broker.topic_prefixes",
            ),
            ("[broker]\nqueue_max_bytes = 10", "broker.queue_max_bytes"),
            ("[broker]\nmax_unacked = 0", "broker.max_unacked"),
            ("[server]\napi_token = \"short\"", "server.api_token"),
            (
                "[server]\napi_token = \"with a space in it here\"",
                "server.api_token",
            ),
            ("[app]\nprefixes = [\"/\"]", "app.prefixes"),
            ("[app]\nprefixes = [\"app\"]", "app.prefixes"),
            ("[app]\nprefixes = [\"/a b\"]", "app.prefixes"),
            ("[app]\nprefixes = [\"/topic\"]", "app.prefixes"),
            ("[app]\nprefixes = [\"/queue/x\"]", "app.prefixes"),
            ("[app]\nuser_prefix = \"\"", "app.user_prefix"),
            ("[app]\nuser_prefix = \"/app\"", "app.user_prefix"),
            ("[app]\nuser_prefix = \"/topic/u\"", "app.user_prefix"),
            ("[app]\nprefixes = [\"/svc\"]", "demo.chat"),
            ("[app]\nuser_prefix = \"/me\"", "demo.chat"),
            (
                "[broker]\ntopic_prefixes = [\"/exchange/\", \"/topic/\"]",
                "demo.chat",
            ),
            ("[demo]\nchat = \"yes\"", "demo.chat"),
        ] {
            let e = from_toml(text).expect_err(text);
            assert!(e.contains(key), "{text}: {e}");
        }
        let ok = from_toml("[server]\ntcp = \"off\"\n[heartbeat]\nsend_ms = 0\n[limits]\ntransactions_per_session = 0")
            .expect("valid");
        // Without the demo, any prefixes that do not collide will do.
        let custom = from_toml(
            "[app]\nprefixes = [\"/svc/\", \"/rpc\"]\nuser_prefix = \"/me/\"\n[demo]\nchat = false",
        )
        .expect("valid");
        assert_eq!(custom.server.app_prefixes, ["/svc/", "/rpc"]);
        assert_eq!(custom.server.user_prefix, "/me/");
        assert!(!custom.demo_chat);
        let token = from_toml("[server]\napi_token = \"0123456789abcdef\"").expect("valid");
        assert_eq!(token.server.api_token.as_deref(), Some("0123456789abcdef"));
        let off = from_toml("[server]\napi_token = \"\"").expect("valid");
        assert!(off.server.api_token.is_none());
        assert!(ok.server.tcp_addr.is_none());
        assert_eq!(ok.server.heartbeat_send, Duration::ZERO);
    }

    #[test]
    fn the_api_token_is_never_shown() {
        let secret = "s3cret-token-0123456789";
        let settings =
            load(None, env(&[("STOMPBOX_SERVER_API_TOKEN", secret)]), &[]).expect("valid");
        assert_eq!(settings.server.api_token.as_deref(), Some(secret));
        let redacted = settings.redacted();
        let printed = toml::to_string(&FileConfig::from_config(&redacted)).expect("prints");
        assert!(!printed.contains(secret), "{printed}");
        assert!(printed.contains(REDACTED), "{printed}");
        assert!(!format!("{redacted:?}").contains(secret));
        let e =
            load(None, env(&[("STOMPBOX_SERVER_API_TOKEN", "tiny")]), &[]).expect_err("too short");
        assert!(
            e.contains("server.api_token") && e.contains("STOMPBOX_SERVER_API_TOKEN"),
            "{e}"
        );
        assert!(!e.contains("tiny"), "{e}");
    }

    #[test]
    fn several_problems_are_listed_together() {
        let e = load(
            None,
            env(&[
                ("STOMPBOX_LIMITS_HEADERS", "1"),
                ("STOMPBOX_BROKER_MAX_QUEUES", "0"),
            ]),
            &[],
        )
        .expect_err("two problems");
        assert!(
            e.contains("2 problems")
                && e.contains("limits.headers")
                && e.contains("broker.max_queues"),
            "{e}"
        );
    }

    #[test]
    fn known_keys_cover_every_section() {
        let known = known();
        let sections: Vec<&String> = known.keys().collect();
        assert_eq!(sections.len(), 7, "{sections:?}");
        assert!(env_key("STOMPBOX_RELAY_ADDRESSES", &known).is_some());
        assert!(env_key("STOMPBOX_RELAY_TLS_CA_FILE", &known).is_some());
        assert!(env_key("STOMPBOX_RELAY_SYSTEM_PASSCODE", &known).is_some());
        assert!(env_key("STOMPBOX_APP_USER_PREFIX", &known).is_some());
        assert!(env_key("STOMPBOX_DEMO_CHAT", &known).is_some());
        assert!(env_key("STOMPBOX_SERVER_API_TOKEN", &known).is_some());
        assert!(env_key("STOMPBOX_SERVER_MAX_CONNECTIONS", &known).is_some());
        assert!(env_key("STOMPBOX_server_tcp", &known).is_some());
        assert!(env_key("STOMPBOX_SERVERTCP", &known).is_none());
    }

    const RELAY: &str = "[broker]\nkind = \"relay\"\n";

    #[test]
    fn relay_defaults_are_the_library_defaults() {
        let settings = from_toml(RELAY).expect("valid");
        let relay = settings.server.relay.expect("relay on");
        assert_eq!(
            format!("{relay:?}"),
            format!("{:?}", RelayConfig::default())
        );
        // The embedded broker is untouched (and unused).
        assert_eq!(
            format!("{:?}", settings.server.embedded),
            format!("{:?}", EmbeddedConfig::default())
        );
        // Without broker.kind = "relay", [relay] is read but not used.
        let embedded = from_toml("[relay]\naddresses = [\"broker:61613\"]").expect("valid");
        assert!(embedded.server.relay.is_none());
    }

    #[test]
    fn every_relay_key_reaches_the_relay_config() {
        let dir = std::env::temp_dir().join(format!("stompbox-relay-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let ca = dir.join("ca.pem");
        std::fs::write(
            &ca,
            "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n",
        )
        .expect("write CA");
        let ca_text = ca.to_str().expect("UTF-8 temp path");
        let settings = load(
            None,
            env(&[
                ("STOMPBOX_BROKER_KIND", "relay"),
                (
                    "STOMPBOX_RELAY_ADDRESSES",
                    "rabbit-1.internal:61614, [::1]:61614",
                ),
                ("STOMPBOX_RELAY_VIRTUAL_HOST", "prod"),
                ("STOMPBOX_RELAY_CLIENT_LOGIN", ""),
                ("STOMPBOX_RELAY_CLIENT_PASSCODE", ""),
                ("STOMPBOX_RELAY_SYSTEM_LOGIN", "stompbox"),
                ("STOMPBOX_RELAY_SYSTEM_PASSCODE", "12345"),
                ("STOMPBOX_RELAY_HEARTBEAT_SEND_MS", "0"),
                ("STOMPBOX_RELAY_HEARTBEAT_RECEIVE_MS", "20000"),
                ("STOMPBOX_RELAY_PREFIXES", "/topic/,/queue/"),
                ("STOMPBOX_RELAY_USER_DESTINATION_PREFIX", "/topic/users."),
                ("STOMPBOX_RELAY_RECONNECT_INITIAL_MS", "200"),
                ("STOMPBOX_RELAY_RECONNECT_MAX_MS", "5000"),
                ("STOMPBOX_RELAY_CONNECT_TIMEOUT_MS", "3000"),
                ("STOMPBOX_RELAY_PUBLISH_TIMEOUT_MS", "4000"),
                ("STOMPBOX_RELAY_MAX_FRAME_BYTES", "262144"),
                ("STOMPBOX_RELAY_UPSTREAM_BUFFER_BYTES", "131072"),
                ("STOMPBOX_RELAY_MAX_IN_FLIGHT", "7"),
                ("STOMPBOX_RELAY_ENCODE_SLASHES", "false"),
                ("STOMPBOX_RELAY_TLS", "true"),
                ("STOMPBOX_RELAY_TLS_SERVER_NAME", "rabbit.example.com"),
                ("STOMPBOX_RELAY_TLS_CA_FILE", ca_text),
            ]),
            &[],
        )
        .expect("valid");
        let r = settings.server.relay.clone().expect("relay on");
        assert_eq!(r.addresses, ["rabbit-1.internal:61614", "[::1]:61614"]);
        assert_eq!(r.virtual_host, "prod");
        assert_eq!(r.client_login, None);
        assert_eq!(r.client_passcode, None);
        assert_eq!(r.system_login, "stompbox");
        // Digits stay text for a text key.
        assert_eq!(r.system_passcode, "12345");
        assert_eq!(r.heartbeat_send, Duration::ZERO);
        assert_eq!(r.heartbeat_receive, Duration::from_secs(20));
        assert_eq!(r.prefixes, ["/topic/", "/queue/"]);
        assert_eq!(r.user_destination_prefix, "/topic/users.");
        assert_eq!(r.reconnect_initial, Duration::from_millis(200));
        assert_eq!(r.reconnect_max, Duration::from_secs(5));
        assert_eq!(r.connect_timeout, Duration::from_secs(3));
        assert_eq!(r.publish_timeout, Duration::from_secs(4));
        assert_eq!(r.max_frame_bytes, 262_144);
        assert_eq!(r.upstream_buffer_bytes, 131_072);
        assert_eq!(r.max_in_flight, 7);
        assert!(!r.encode_slashes);
        let tls = r.tls.clone().expect("TLS on");
        assert_eq!(tls.server_name.as_deref(), Some("rabbit.example.com"));
        assert_eq!(tls.ca_file.as_deref(), Some(ca.as_path()));
        // No warning for a TLS port with TLS on, nor for a remote host with TLS.
        assert!(relay_notes(&r).is_empty(), "{:?}", relay_notes(&r));

        // --check shows the relay's keys, not the embedded broker's, and no
        // passcode; what it prints loads again.
        let printed =
            toml::to_string(&FileConfig::from_config(&settings.redacted())).expect("prints");
        assert!(printed.contains("[relay]"), "{printed}");
        assert!(printed.contains("kind = \"relay\""), "{printed}");
        assert!(!printed.contains("queue_max_messages"), "{printed}");
        assert!(!printed.contains("12345"), "{printed}");
        assert!(printed.contains(REDACTED), "{printed}");
        let shown = toml::to_string(&FileConfig::from_config(&settings)).expect("prints");
        let again = from_toml(&shown).expect("--check output loads again");
        assert_eq!(
            format!("{:?}", again.server),
            format!("{:?}", settings.server)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn check_output_of_the_embedded_broker_has_no_relay_section() {
        let printed =
            toml::to_string(&FileConfig::from_config(&Settings::default())).expect("prints");
        assert!(!printed.contains("[relay]"), "{printed}");
        assert!(printed.contains("queue_max_messages"), "{printed}");
    }

    #[test]
    fn relay_passcodes_are_never_shown() {
        let secret = "relay-s3cret";
        let settings = load(
            None,
            env(&[
                ("STOMPBOX_BROKER_KIND", "relay"),
                ("STOMPBOX_RELAY_CLIENT_PASSCODE", secret),
                ("STOMPBOX_RELAY_SYSTEM_PASSCODE", secret),
            ]),
            &[],
        )
        .expect("valid");
        let redacted = settings.redacted();
        assert!(!format!("{redacted:?}").contains(secret));
        let printed = toml::to_string(&FileConfig::from_config(&redacted)).expect("prints");
        assert!(!printed.contains(secret), "{printed}");
    }

    #[test]
    fn relay_sanity_rules() {
        for (text, key) in [
            ("[relay]\naddresses = []", "relay.addresses"),
            ("[relay]\naddresses = [\"rabbit\"]", "relay.addresses"),
            ("[relay]\naddresses = [\"rabbit:\"]", "relay.addresses"),
            ("[relay]\naddresses = [\"rabbit:0\"]", "relay.addresses"),
            ("[relay]\naddresses = [\"rabbit:70000\"]", "relay.addresses"),
            ("[relay]\naddresses = [\":61613\"]", "relay.addresses"),
            ("[relay]\naddresses = [\"::1:61613\"]", "relay.addresses"),
            ("[relay]\naddresses = [\"[nope]:61613\"]", "relay.addresses"),
            (
                "[relay]\naddresses = [\"stomp://rabbit:61613\"]",
                "relay.addresses",
            ),
            ("[relay]\nvirtual_host = \"\"", "relay.virtual_host"),
            ("[relay]\nheartbeat_send_ms = 10", "relay.heartbeat_send_ms"),
            (
                "[relay]\nheartbeat_receive_ms = 999",
                "relay.heartbeat_receive_ms",
            ),
            ("[relay]\nprefixes = []", "relay.prefixes"),
            ("[relay]\nprefixes = [\"/topic\"]", "relay.prefixes"),
            ("[relay]\nprefixes = [\"topic/\"]", "relay.prefixes"),
            (
                "[relay]\nuser_destination_prefix = \"users.\"",
                "relay.user_destination_prefix",
            ),
            (
                "[relay]\nuser_destination_prefix = \"/user/x.\"",
                "relay.user_destination_prefix",
            ),
            (
                "[relay]\nreconnect_initial_ms = 1",
                "relay.reconnect_initial_ms",
            ),
            ("[relay]\nreconnect_max_ms = 100", "relay.reconnect_max_ms"),
            (
                "[relay]\nconnect_timeout_ms = 0",
                "relay.connect_timeout_ms",
            ),
            (
                "[relay]\npublish_timeout_ms = 5",
                "relay.publish_timeout_ms",
            ),
            ("[relay]\nmax_frame_bytes = 65536", "relay.max_frame_bytes"),
            (
                "[relay]\nupstream_buffer_bytes = 4096",
                "relay.upstream_buffer_bytes",
            ),
            (
                "[limits]\nframe_bytes = 1048576\noutbox_bytes = 4194304",
                "relay.max_frame_bytes",
            ),
            ("[relay]\nmax_in_flight = 0", "relay.max_in_flight"),
            (
                "[relay]\ntls_ca_file = \"/etc/ca.pem\"",
                "relay.tls_ca_file",
            ),
            (
                "[relay]\ntls = false\ntls_server_name = \"rabbit\"",
                "relay.tls_server_name",
            ),
            (
                "[relay]\ntls = true\ntls_server_name = \"not a name\"",
                "relay.tls_server_name",
            ),
            (
                "[relay]\ntls = true\ntls_ca_file = \"/nonexistent/ca.pem\"",
                "relay.tls_ca_file",
            ),
            ("[relay]\ntls = \"yes\"", "relay.tls"),
            ("[relay]\naddress = [\"rabbit:61613\"]", "address"),
            // The embedded broker's keys would have no effect.
            ("queue_max_messages = 5", "broker.queue_max_messages"),
            ("topic_prefixes = [\"/topic/\"]", "broker.topic_prefixes"),
            ("max_unacked = 10", "broker.max_unacked"),
            // Destinations must still have one meaning each.
            ("[app]\nprefixes = [\"/queue\"]", "app.prefixes"),
            ("[app]\nprefixes = [\"/amq\"]", "app.prefixes"),
            // The chat demo needs /topic/ and /queue/ relayed.
            ("[relay]\nprefixes = [\"/exchange/\"]", "demo.chat"),
        ] {
            let text = format!("{RELAY}{text}");
            let e = from_toml(&text).expect_err(&text);
            assert!(e.contains(key), "{text}: {e}");
        }
        let ok = from_toml(&format!(
            "{RELAY}[relay]\naddresses = [\"rabbit-1:61613\", \"10.0.0.2:61613\", \"[fd00::2]:61613\"]\n\
             prefixes = [\"/exchange/\"]\n[demo]\nchat = false"
        ))
        .expect("valid");
        let relay = ok.server.relay.expect("relay on");
        assert_eq!(relay.prefixes, ["/exchange/"]);
        assert!(relay.tls.is_none());
        // A plain-text connection to another host is allowed, with a warning.
        let notes = relay_notes(&relay);
        assert_eq!(notes.len(), 3, "{notes:?}");
        assert!(notes[0].contains("unencrypted"), "{notes:?}");
        let mut ports = RelayConfig::default();
        ports.addresses = vec!["127.0.0.1:5672".into(), "localhost:15674".into()];
        let notes = relay_notes(&ports);
        assert!(
            notes.len() == 2 && notes[0].contains("AMQP") && notes[1].contains("Web-STOMP"),
            "{notes:?}"
        );
    }

    #[test]
    fn shipped_file_with_the_relay_refuses_the_embedded_keys() {
        let shipped = include_str!("../../../stompbox.toml");
        // Only broker.kind uncommented: the relay with its defaults.
        let relay_only = shipped.replace("# kind = \"embedded\"", "kind = \"relay\"");
        assert_ne!(relay_only, shipped, "stompbox.toml documents broker.kind");
        let settings = from_toml(&relay_only).expect("valid");
        assert_eq!(
            format!("{:?}", settings.server.relay),
            format!("{:?}", Some(RelayConfig::default()))
        );
        // Every key uncommented: the embedded broker's keys are refused.
        let e = from_toml(&uncomment(&relay_only)).expect_err("embedded keys with the relay");
        for key in [
            "broker.topic_prefixes",
            "broker.queue_prefixes",
            "broker.queue_max_messages",
            "broker.queue_max_bytes",
            "broker.max_queues",
            "broker.max_total_queue_bytes",
            "broker.max_unacked",
        ] {
            assert!(e.contains(key), "{key}: {e}");
        }
    }
}
