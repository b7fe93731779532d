//! The file format: the `serde` structs every source is deserialized into,
//! and the way back from the effective settings for `--check`.
//!
//! Every key is optional: an absent key keeps the library's default, so
//! `ServerConfig::default()` stays the one place defaults live.

use super::Settings;
use serde::{Deserialize, Serialize};
use std::time::Duration;
use stompbox::broker::relay::{RelayConfig, RelayMode};
use toml::Table;

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table of sections ([server], [auth], [admin], [app], [limits], [heartbeat], [broker], [relay], [demo], [metrics])"
)]
pub(super) struct FileConfig {
    #[serde(default)]
    pub(super) server: ServerSection,
    #[serde(default)]
    pub(super) auth: AuthSection,
    #[serde(default)]
    pub(super) admin: AdminSection,
    #[serde(default)]
    pub(super) app: AppSection,
    #[serde(default)]
    pub(super) limits: LimitsSection,
    #[serde(default)]
    pub(super) heartbeat: HeartbeatSection,
    #[serde(default)]
    pub(super) broker: BrokerSection,
    /// Read only with `broker.kind = "relay"`; absent from --check otherwise.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) relay: Option<RelaySection>,
    #[serde(default)]
    pub(super) demo: DemoSection,
    #[serde(default)]
    pub(super) metrics: MetricsSection,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of [server] settings")]
pub(super) struct ServerSection {
    pub(super) http: Option<String>,
    pub(super) ws_path: Option<String>,
    pub(super) tcp: Option<String>,
    pub(super) max_connections: Option<usize>,
    pub(super) shutdown_timeout_ms: Option<u64>,
    /// 0 turns the stats log line off.
    pub(super) stats_interval_ms: Option<u64>,
    /// Empty means off: an absent value could not be listed as a key.
    pub(super) api_token: Option<String>,
    pub(super) allowed_origins: Option<Vec<String>>,
    pub(super) trusted_proxies: Option<Vec<String>>,
    /// Empty (with `tls_key_file`): TLS off.
    pub(super) tls_cert_file: Option<String>,
    pub(super) tls_key_file: Option<String>,
    /// Last: an array of tables is printed after the plain keys.
    pub(super) api_tokens: Option<Vec<ApiTokenEntry>>,
}

/// One entry of `server.api_tokens`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { token = \"...\", destinations = [\"/user/**\"] }"
)]
pub(super) struct ApiTokenEntry {
    pub(super) token: String,
    pub(super) destinations: Vec<String>,
}

/// `[auth]`: the settings of [`stompbox::auth::AuthConfig`], flat (`jwt_*`,
/// `http_*`) so every key has an environment variable. Optional values are
/// empty strings when off, as an absent value could not be listed as a key.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of [auth] settings")]
pub(super) struct AuthSection {
    pub(super) anonymous: Option<bool>,
    pub(super) failure_delay_ms: Option<u64>,
    pub(super) sessions_per_user: Option<usize>,
    pub(super) failures_per_address_per_min: Option<u32>,
    /// Empty: no users file.
    pub(super) users_file: Option<String>,
    pub(super) password_cache_ttl_ms: Option<u64>,
    /// At most one of the three key keys is set; empty: JWT off.
    pub(super) jwt_secret: Option<String>,
    pub(super) jwt_public_key_file: Option<String>,
    pub(super) jwt_jwks_file: Option<String>,
    pub(super) jwt_issuer: Option<String>,
    pub(super) jwt_audience: Option<String>,
    pub(super) jwt_user_claim: Option<String>,
    pub(super) jwt_roles_claim: Option<String>,
    pub(super) jwt_cookie: Option<String>,
    pub(super) jwt_leeway_ms: Option<u64>,
    /// Empty: the HTTP service is off.
    pub(super) http_url: Option<String>,
    pub(super) http_timeout_ms: Option<u64>,
    pub(super) http_cache_ttl_ms: Option<u64>,
    pub(super) http_ca_file: Option<String>,
    pub(super) users: Option<Vec<UserEntry>>,
    /// Absent: open access. Present, even empty: only what a rule allows
    /// is allowed. So absent is printed as absent, not as `[]`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) rules: Option<Vec<RuleEntry>>,
}

/// One password user, in `auth.users` or in the `auth.users_file`.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { name = \"alice\", password_hash = \"$argon2id$...\", roles = [] }"
)]
pub(super) struct UserEntry {
    pub(super) name: String,
    pub(super) password_hash: String,
    #[serde(default)]
    pub(super) roles: Vec<String>,
}

/// One access rule of `auth.rules`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(
    deny_unknown_fields,
    expecting = "a table like { who = \"anyone\", send = [\"/topic/**\"], subscribe = [\"/topic/**\"] }"
)]
pub(super) struct RuleEntry {
    pub(super) who: String,
    #[serde(default)]
    pub(super) send: Vec<String>,
    #[serde(default)]
    pub(super) subscribe: Vec<String>,
}

/// `[admin]`: who may use the admin page and API
/// ([`stompbox::AdminConfig`]). Empty strings are off, as an absent value
/// could not be listed as a key.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of [admin] settings")]
pub(super) struct AdminSection {
    /// Empty: no admin token.
    pub(super) token: Option<String>,
    /// Empty: no admin role.
    pub(super) role: Option<String>,
    pub(super) max_event_streams: Option<usize>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of [app] settings")]
pub(super) struct AppSection {
    pub(super) prefixes: Option<Vec<String>>,
    pub(super) user_prefix: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of [demo] settings")]
pub(super) struct DemoSection {
    pub(super) chat: Option<bool>,
}

/// `[metrics]`: the settings of [`stompbox::MetricsConfig`]. `addr` and
/// `token` are empty strings when off, as an absent value could not be
/// listed as a key.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of [metrics] settings")]
pub(super) struct MetricsSection {
    pub(super) enabled: Option<bool>,
    /// Empty: /metrics only on server.http.
    pub(super) addr: Option<String>,
    /// Empty: no token asked for.
    pub(super) token: Option<String>,
    pub(super) per_destination: Option<bool>,
    pub(super) max_destination_series: Option<usize>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of [limits] settings")]
pub(super) struct LimitsSection {
    pub(super) frame_bytes: Option<usize>,
    pub(super) header_line_bytes: Option<usize>,
    pub(super) headers: Option<usize>,
    pub(super) subscriptions_per_session: Option<usize>,
    pub(super) subscriptions_per_sec: Option<u32>,
    pub(super) transactions_per_session: Option<usize>,
    pub(super) transaction_frames: Option<usize>,
    pub(super) transaction_bytes: Option<usize>,
    pub(super) total_transaction_bytes: Option<usize>,
    pub(super) outbox_bytes: Option<usize>,
    pub(super) backlog_bytes: Option<usize>,
    pub(super) send_timeout_ms: Option<u64>,
    pub(super) connect_timeout_ms: Option<u64>,
    pub(super) connections_per_address: Option<usize>,
    pub(super) connects_per_address_per_sec: Option<u32>,
    pub(super) unauthenticated_frame_bytes: Option<usize>,
    pub(super) http_head_bytes: Option<usize>,
    pub(super) http_idle_timeout_ms: Option<u64>,
    pub(super) concurrent_api_requests: Option<usize>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of [heartbeat] settings")]
pub(super) struct HeartbeatSection {
    pub(super) send_ms: Option<u64>,
    pub(super) receive_ms: Option<u64>,
    pub(super) min_ms: Option<u64>,
    pub(super) grace: Option<f64>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of [broker] settings")]
pub(super) struct BrokerSection {
    pub(super) kind: Option<String>,
    pub(super) topic_prefixes: Option<Vec<String>>,
    pub(super) queue_prefixes: Option<Vec<String>>,
    pub(super) queue_max_messages: Option<usize>,
    pub(super) queue_max_bytes: Option<usize>,
    pub(super) max_queues: Option<usize>,
    pub(super) max_total_queue_bytes: Option<usize>,
    pub(super) max_unacked: Option<usize>,
    pub(super) max_session_unacked_bytes: Option<usize>,
    pub(super) max_total_topic_unacked_bytes: Option<usize>,
    pub(super) max_pattern_words: Option<usize>,
    pub(super) max_wildcard_subscriptions: Option<usize>,
}

/// `[relay]`: the settings of [`RelayConfig`]. Optional values are empty
/// strings when off, as an absent value could not be listed as a key; TLS
/// is flat (`tls`, `tls_server_name`, `tls_ca_file`) so every key has an
/// environment variable.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields, expecting = "a table of [relay] settings")]
pub(super) struct RelaySection {
    /// "shared" or "per-session".
    pub(super) mode: Option<String>,
    pub(super) connections: Option<usize>,
    pub(super) prefetch: Option<usize>,
    pub(super) retire_timeout_ms: Option<u64>,
    pub(super) addresses: Option<Vec<String>>,
    pub(super) virtual_host: Option<String>,
    /// Empty: pass the client's own login.
    pub(super) client_login: Option<String>,
    /// Empty: pass the client's own passcode.
    pub(super) client_passcode: Option<String>,
    pub(super) system_login: Option<String>,
    pub(super) system_passcode: Option<String>,
    pub(super) heartbeat_send_ms: Option<u64>,
    pub(super) heartbeat_receive_ms: Option<u64>,
    pub(super) prefixes: Option<Vec<String>>,
    pub(super) user_destination_prefix: Option<String>,
    pub(super) subscribe_headers: Option<Vec<String>>,
    pub(super) send_headers: Option<Vec<String>>,
    pub(super) ack_headers: Option<Vec<String>>,
    pub(super) reconnect_initial_ms: Option<u64>,
    pub(super) reconnect_max_ms: Option<u64>,
    pub(super) connect_timeout_ms: Option<u64>,
    pub(super) publish_timeout_ms: Option<u64>,
    pub(super) max_frame_bytes: Option<usize>,
    pub(super) upstream_buffer_bytes: Option<usize>,
    pub(super) max_in_flight: Option<usize>,
    pub(super) encode_slashes: Option<bool>,
    pub(super) tls: Option<bool>,
    /// Empty: the host part of the address.
    pub(super) tls_server_name: Option<String>,
    /// Empty: the Mozilla root store.
    pub(super) tls_ca_file: Option<String>,
}

impl RelaySection {
    fn from_config(r: &RelayConfig) -> RelaySection {
        let tls = r.tls.as_ref();
        let (subscribe_headers, send_headers) =
            (r.subscribe_headers.clone(), r.send_headers.clone());
        RelaySection {
            mode: Some(mode_name(r.mode)),
            connections: Some(r.connections),
            prefetch: Some(r.prefetch),
            retire_timeout_ms: Some(millis(r.retire_timeout)),
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
            subscribe_headers: Some(subscribe_headers),
            send_headers: Some(send_headers),
            ack_headers: Some(r.ack_headers.clone()),
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

/// The name of a relay mode in `relay.mode`.
pub(super) fn mode_name(mode: RelayMode) -> String {
    match mode {
        RelayMode::Shared => "shared".to_owned(),
        RelayMode::PerSession => "per-session".to_owned(),
        // The enum is non-exhaustive; a mode this binary cannot name yet is
        // still shown, if not in a form `relay.mode` accepts.
        other => format!("{other:?}"),
    }
}

pub(super) fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

impl FileConfig {
    /// Every key that applies, from `settings`: the effective settings for
    /// --check. Only the keys of the broker and the authentication methods
    /// in use are listed, so the output can be loaded again.
    pub(super) fn from_config(settings: &Settings) -> FileConfig {
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
                stats_interval_ms: Some(millis(c.stats_interval)),
                api_token: Some(c.api_token.clone().unwrap_or_default()),
                allowed_origins: Some(c.allowed_origins.clone()),
                trusted_proxies: Some(c.trusted_proxies.iter().map(ToString::to_string).collect()),
                tls_cert_file: Some(
                    c.tls
                        .as_ref()
                        .map(|t| t.cert_file.display().to_string())
                        .unwrap_or_default(),
                ),
                tls_key_file: Some(
                    c.tls
                        .as_ref()
                        .map(|t| t.key_file.display().to_string())
                        .unwrap_or_default(),
                ),
                api_tokens: Some(
                    c.api_tokens
                        .iter()
                        .map(|t| ApiTokenEntry {
                            token: t.token.clone(),
                            destinations: t.destinations.clone(),
                        })
                        .collect(),
                ),
            },
            auth: AuthSection::from_config(&c.auth, &settings.auth_source),
            admin: AdminSection {
                token: Some(c.admin.token.clone().unwrap_or_default()),
                role: Some(c.admin.role.clone().unwrap_or_default()),
                max_event_streams: Some(c.admin.max_event_streams),
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
                subscriptions_per_sec: Some(c.subscriptions_per_sec),
                transactions_per_session: Some(c.max_transactions),
                transaction_frames: Some(c.max_transaction_frames),
                transaction_bytes: Some(c.max_transaction_bytes),
                total_transaction_bytes: Some(c.max_total_transaction_bytes),
                outbox_bytes: Some(c.outbox_bytes),
                backlog_bytes: Some(c.backlog_bytes),
                send_timeout_ms: Some(millis(c.send_timeout)),
                connect_timeout_ms: Some(millis(c.connect_timeout)),
                connections_per_address: Some(c.max_connections_per_address),
                connects_per_address_per_sec: Some(c.connects_per_address_per_sec),
                unauthenticated_frame_bytes: Some(c.unauthenticated_frame_bytes),
                http_head_bytes: Some(c.max_request_head_bytes),
                http_idle_timeout_ms: Some(millis(c.http_idle_timeout)),
                concurrent_api_requests: Some(c.max_concurrent_api_requests),
            },
            heartbeat: HeartbeatSection {
                send_ms: Some(millis(c.heartbeat_send)),
                receive_ms: Some(millis(c.heartbeat_receive)),
                min_ms: Some(millis(c.heartbeat_min)),
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
                max_session_unacked_bytes: embedded.then_some(c.embedded.max_session_unacked_bytes),
                max_total_topic_unacked_bytes: embedded
                    .then_some(c.embedded.max_total_topic_unacked_bytes),
                max_pattern_words: embedded.then_some(c.embedded.max_pattern_words),
                max_wildcard_subscriptions: embedded
                    .then_some(c.embedded.max_wildcard_subscriptions),
            },
            relay: relay.map(RelaySection::from_config),
            demo: DemoSection {
                chat: Some(settings.demo_chat),
            },
            metrics: MetricsSection::from_config(&c.metrics),
        }
    }

    /// Every key there is, with its default: the keys the environment and
    /// --set may name (both brokers' keys, whichever is in use, and the keys
    /// of every authentication method, whether on or not).
    pub(super) fn every_key() -> FileConfig {
        let mut all = FileConfig::from_config(&Settings::default());
        all.relay = Some(RelaySection::from_config(&RelayConfig::default()));
        all.auth = AuthSection::every_key();
        all
    }
}

/// [`FileConfig::every_key`] as a table of sections.
pub(super) fn known_keys() -> Result<Table, String> {
    Table::try_from(FileConfig::every_key())
        .map_err(|e| format!("internal error listing the configuration keys: {e}"))
}
