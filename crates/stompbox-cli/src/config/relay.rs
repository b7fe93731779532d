//! `[relay]`: the settings of the relay to an external STOMP broker.

use super::check::{Check, interval};
use super::file::{RelaySection, millis};
use std::path::PathBuf;
use std::time::Duration;
use stompbox::broker::relay::{RelayConfig, RelayMode, RelayTls};

/// Most broker links a shared pool may hold: the pool exists to keep an
/// instance's broker connections few, and a link carries many sessions.
const MAX_CONNECTIONS: usize = 64;
/// Most unacknowledged messages per relayed subscription: RabbitMQ's
/// `prefetch-count` is a 16-bit AMQP field.
const MAX_PREFETCH: usize = 65535;

/// Warnings about relay settings that are valid but probably not meant:
/// well-known ports of other protocols, TLS and ports that disagree, and
/// passcodes sent unencrypted to another host.
pub(super) fn relay_notes(relay: &RelayConfig) -> Vec<String> {
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

pub(super) fn relay(check: &mut Check, r: RelaySection, frame: usize) -> RelayConfig {
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
    relay_mode(check, &mut c, r.mode, r.connections, r.prefetch);
    if let Some(login) = r.system_login {
        c.system_login = login;
    }
    if let Some(passcode) = r.system_passcode {
        c.system_passcode = passcode;
    }
    // Per session, one broker connection per client: heart-beats faster
    // than a second would multiply into real load on the broker.
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
    let subscribe_headers = r.subscribe_headers.unwrap_or_default();
    header_names(
        check,
        "relay.subscribe_headers",
        &subscribe_headers,
        SUBSCRIBE_OWN,
    );
    let send_headers = r.send_headers.unwrap_or_default();
    header_names(check, "relay.send_headers", &send_headers, SEND_OWN);
    c.subscribe_headers = subscribe_headers;
    c.send_headers = send_headers;
    if let Some(ack_headers) = r.ack_headers {
        header_names(check, "relay.ack_headers", &ack_headers, ACK_OWN);
        c.ack_headers = ack_headers;
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
    if let Some(ms) = r.retire_timeout_ms {
        c.retire_timeout =
            Duration::from_millis(check.at_least("relay.retire_timeout_ms", ms, 1000));
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

/// `relay.mode`, `relay.connections` and `relay.prefetch`. Called after the
/// client login and passcode are read: the shared pool logs in once, with
/// them, so it cannot pass on each client's own.
fn relay_mode(
    check: &mut Check,
    c: &mut RelayConfig,
    mode: Option<String>,
    connections: Option<usize>,
    prefetch: Option<usize>,
) {
    if let Some(mode) = mode {
        match mode.trim() {
            "shared" => c.mode = RelayMode::Shared,
            "per-session" => c.mode = RelayMode::PerSession,
            other => check.fail(
                "relay.mode",
                format!("unknown relay mode \"{other}\"; use \"shared\" or \"per-session\""),
            ),
        }
    }
    if c.mode == RelayMode::Shared {
        for (key, own) in [
            ("relay.client_login", c.client_login.is_none()),
            ("relay.client_passcode", c.client_passcode.is_none()),
        ] {
            if own {
                check.fail(
                    "relay.mode",
                    format!(
                        "\"shared\" cannot be used with {key} = \"\": per-session passes each \
                         client's own login; the shared pool logs in once. Set relay.mode = \
                         \"per-session\", or give {key} the relay's own"
                    ),
                );
            }
        }
    }
    if let Some(n) = connections {
        c.connections = check.at_least("relay.connections", n, 1);
        check.at_most("relay.connections", n, MAX_CONNECTIONS);
    }
    if let Some(n) = prefetch {
        c.prefetch = check.at_least("relay.prefetch", n, 1);
        check.at_most("relay.prefetch", n, MAX_PREFETCH);
    }
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

/// SUBSCRIBE headers the relay writes itself for the broker; a client's
/// value could only conflict with them.
const SUBSCRIBE_OWN: &[&str] = &["id", "destination", "ack", "receipt"];
/// SEND headers that are the frame's own mechanics, not broker options.
const SEND_OWN: &[&str] = &["destination", "receipt", "transaction", "content-length"];
/// ACK and NACK headers that name the message, the receipt or the
/// transaction, not broker options.
const ACK_OWN: &[&str] = &["id", "message-id", "subscription", "receipt", "transaction"];

/// A list of STOMP header names: each non-empty, without ':' (which ends a
/// name on the wire), whitespace or control characters, listed once, and
/// none of the relay's own (`own`).
fn header_names(check: &mut Check, key: &'static str, names: &[String], own: &[&str]) {
    for (i, name) in names.iter().enumerate() {
        let usable = !name.is_empty()
            && name
                .chars()
                .all(|c| c != ':' && !c.is_whitespace() && !c.is_control());
        if !usable {
            check.fail(
                key,
                format!(
                    "\"{name}\" is not a header name: it must be non-empty, without ':', spaces \
                     or control characters"
                ),
            );
        } else if own.contains(&name.as_str()) {
            check.fail(
                key,
                format!(
                    "\"{name}\" is set by the relay itself and cannot be passed on; list broker \
                     options such as {}",
                    if key == "relay.send_headers" {
                        "\"persistent\""
                    } else if key == "relay.ack_headers" {
                        "\"requeue\""
                    } else {
                        "\"x-queue-name\" or \"selector\""
                    }
                ),
            );
        } else if names[..i].contains(name) {
            check.fail(key, format!("\"{name}\" is listed twice"));
        }
    }
}
