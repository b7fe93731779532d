//! From the parsed file format to the library's settings: every value
//! checked, every problem collected with the key it belongs to.

use super::Settings;
use super::auth::auth_config;
use super::check::{Check, MIN_TOKEN_CHARS, Problems, as_dir, interval, overlap};
use super::file::{AdminSection, BrokerSection, FileConfig};
use super::listener;
use super::metrics::metrics;
use super::relay::relay;
use std::time::Duration;
use stompbox::ServerConfig;
use stompbox::broker::embedded::EmbeddedConfig;

/// The smallest `limits.unauthenticated_frame_bytes`: a CONNECT with a
/// login, a passcode and a host must fit (as for `limits.frame_bytes`).
const MIN_UNAUTHENTICATED_FRAME_BYTES: usize = 1024;

pub(super) fn validate(file: FileConfig) -> Result<Settings, Problems> {
    let d = ServerConfig::default();
    let mut c = ServerConfig::default();
    let mut check = Check {
        problems: Vec::new(),
    };
    let FileConfig {
        server,
        auth: auth_section,
        admin,
        app,
        limits,
        heartbeat,
        broker,
        relay: relay_section,
        demo,
        metrics: metrics_section,
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
    if let Some(ms) = server.stats_interval_ms {
        c.stats_interval = Duration::from_millis(ms);
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
    if let Some(origins) = server.allowed_origins {
        c.allowed_origins = listener::allowed_origins(&mut check, origins);
    }
    if let Some(proxies) = server.trusted_proxies {
        c.trusted_proxies = listener::trusted_proxies(&mut check, &proxies);
    }
    c.tls = listener::tls(&mut check, server.tls_cert_file, server.tls_key_file);
    if let Some(tokens) = server.api_tokens {
        c.api_tokens = listener::api_tokens(&mut check, tokens, c.api_token.as_deref());
    }

    // [auth]
    let (auth, auth_source) = auth_config(&mut check, auth_section);
    c.auth = auth;

    // [admin]
    admin_config(&mut check, &mut c, admin);

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
    if let Some(n) = limits.subscriptions_per_sec {
        // Zero turns the rate off (a trusted client that churns on purpose).
        c.subscriptions_per_sec = n;
    }
    if let Some(n) = limits.transactions_per_session {
        // Zero is allowed: it turns transactions off.
        c.max_transactions = n;
    }
    if let Some(n) = limits.transaction_bytes {
        c.max_transaction_bytes = check.at_least("limits.transaction_bytes", n, 1024);
    }
    if let Some(n) = limits.total_transaction_bytes {
        c.max_total_transaction_bytes = check.at_least("limits.total_transaction_bytes", n, 1024);
    }
    if c.max_total_transaction_bytes < c.max_transaction_bytes {
        // Otherwise one session could never fill its own allowance.
        check.fail(
            "limits.total_transaction_bytes",
            format!(
                "must be at least limits.transaction_bytes, {} (got {})",
                c.max_transaction_bytes, c.max_total_transaction_bytes
            ),
        );
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

    // 0 turns either per-address limit off, e.g. for a load test from one
    // machine or behind a proxy not listed in server.trusted_proxies.
    if let Some(n) = limits.connections_per_address {
        c.max_connections_per_address = n;
    }
    if let Some(n) = limits.connects_per_address_per_sec {
        c.connects_per_address_per_sec = n;
    }
    if let Some(n) = limits.http_head_bytes {
        // hyper's own minimum for its read buffer.
        c.max_request_head_bytes = check.at_least("limits.http_head_bytes", n, 8192);
    }
    if let Some(ms) = limits.http_idle_timeout_ms {
        c.http_idle_timeout =
            Duration::from_millis(check.at_least("limits.http_idle_timeout_ms", ms, 100));
    }
    if let Some(n) = limits.concurrent_api_requests {
        c.max_concurrent_api_requests = check.at_least("limits.concurrent_api_requests", n, 1);
    }
    match limits.unauthenticated_frame_bytes {
        Some(n) => {
            c.unauthenticated_frame_bytes = check.at_least(
                "limits.unauthenticated_frame_bytes",
                n,
                MIN_UNAUTHENTICATED_FRAME_BYTES,
            );
            // The library uses the smaller of the two: a larger value
            // written down would silently not apply.
            if n > frame {
                check.fail(
                    "limits.unauthenticated_frame_bytes",
                    format!("must not exceed limits.frame_bytes ({frame}) (got {n})"),
                );
            }
        }
        // Not set: the default, unless frame_bytes was lowered below it, so
        // that lowering frame_bytes alone stays valid and --check shows the
        // limit that applies.
        None => c.unauthenticated_frame_bytes = d.unauthenticated_frame_bytes.min(frame),
    }

    // [heartbeat]
    if let Some(ms) = heartbeat.send_ms {
        c.heartbeat_send = interval(&mut check, "heartbeat.send_ms", ms, 100);
    }
    if let Some(ms) = heartbeat.receive_ms {
        c.heartbeat_receive = interval(&mut check, "heartbeat.receive_ms", ms, 100);
    }
    if let Some(ms) = heartbeat.min_ms {
        // Each agreed interval wakes the connection's timer: a floor keeps
        // a client from making the server spin for it.
        c.heartbeat_min = Duration::from_millis(check.at_least("heartbeat.min_ms", ms, 100));
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

    // [metrics]
    let listeners: Vec<(&'static str, std::net::SocketAddr)> =
        std::iter::once(("server.http", c.http_addr))
            .chain(c.tcp_addr.map(|tcp| ("server.tcp", tcp)))
            .collect();
    c.metrics = metrics(
        &mut check,
        metrics_section,
        &listeners,
        c.api_token.as_deref(),
    );

    if check.problems.is_empty() {
        Ok(Settings {
            server: c,
            demo_chat,
            auth_source,
        })
    } else {
        Err(check.problems)
    }
}

/// With the relay the embedded broker's keys would have no effect: its queue
/// bounds would silently stop applying and its prefixes would not be the ones
/// relayed. So they are refused rather than ignored.
/// `[admin]`, after `[server]` and `[auth]`, which it is checked against.
fn admin_config(check: &mut Check, c: &mut ServerConfig, admin: AdminSection) {
    // The token is never quoted back, like server.api_token.
    match admin.token {
        None => {}
        Some(token) if token.is_empty() => c.admin.token = None,
        Some(token) => {
            let chars = token.chars().count();
            if chars < MIN_TOKEN_CHARS {
                check.fail(
                    "admin.token",
                    format!(
                        "must be at least {MIN_TOKEN_CHARS} characters, as it guards disconnecting \
                         sessions and purging queues (got {chars}); e.g. `openssl rand -hex 32`, \
                         or \"\" for off"
                    ),
                );
            } else if !token.bytes().all(|b| b.is_ascii_graphic()) {
                check.fail(
                    "admin.token",
                    "must be printable ASCII without spaces, as it is sent in an Authorization \
                     header"
                        .to_owned(),
                );
            } else if c.api_token.as_deref() == Some(token.as_str())
                || c.api_tokens.iter().any(|t| t.token == token)
            {
                // Whoever may publish must not thereby administer.
                check.fail(
                    "admin.token",
                    "must differ from the HTTP publish API's tokens (server.api_token, \
                     server.api_tokens)"
                        .to_owned(),
                );
            }
            c.admin.token = Some(token);
        }
    }
    match admin.role {
        None => {}
        Some(role) if role.is_empty() => c.admin.role = None,
        Some(role) => {
            if !c.auth.has_methods() {
                check.fail(
                    "admin.role",
                    format!(
                        "needs an authentication method to verify users (auth.users, \
                         auth.users_file, auth.jwt_*, auth.http_url); got role \"{role}\" \
                         with none"
                    ),
                );
            }
            c.admin.role = Some(role);
        }
    }
    if let Some(n) = admin.max_event_streams {
        c.admin.max_event_streams = check.at_least("admin.max_event_streams", n, 1);
    }
}

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
            "broker.max_session_unacked_bytes",
            broker.max_session_unacked_bytes.is_some(),
            "the broker's own limits bound unacknowledged messages",
        ),
        (
            "broker.max_total_topic_unacked_bytes",
            broker.max_total_topic_unacked_bytes.is_some(),
            "the broker's own limits bound unacknowledged messages",
        ),
        (
            "broker.max_unacked",
            broker.max_unacked.is_some(),
            "clients set a prefetch-count header on SUBSCRIBE, which passes when relay.subscribe_headers lists it",
        ),
        (
            "broker.max_pattern_words",
            broker.max_pattern_words.is_some(),
            "the broker matches the patterns itself",
        ),
        (
            "broker.max_wildcard_subscriptions",
            broker.max_wildcard_subscriptions.is_some(),
            "the broker matches the patterns itself",
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
    // A client-mode subscriber must be able to hold at least one largest
    // message, or it could never receive one.
    if let Some(n) = broker.max_session_unacked_bytes {
        e.max_session_unacked_bytes = n;
    }
    for (key, value) in [
        (
            "broker.max_session_unacked_bytes",
            e.max_session_unacked_bytes,
        ),
        (
            "broker.max_total_topic_unacked_bytes",
            broker
                .max_total_topic_unacked_bytes
                .unwrap_or(e.max_total_topic_unacked_bytes),
        ),
    ] {
        if value < frame.saturating_mul(2) {
            check.fail(
                key,
                format!(
                    "must be at least twice limits.frame_bytes, {} (got {value})",
                    frame.saturating_mul(2)
                ),
            );
        }
    }
    if let Some(n) = broker.max_total_topic_unacked_bytes {
        e.max_total_topic_unacked_bytes = n;
    }
    if let Some(n) = broker.max_pattern_words {
        e.max_pattern_words = check.at_least("broker.max_pattern_words", n, 1);
    }
    if let Some(n) = broker.max_wildcard_subscriptions {
        // 0 is allowed: no wildcard subscriptions at all.
        e.max_wildcard_subscriptions = n;
    }
    e
}
