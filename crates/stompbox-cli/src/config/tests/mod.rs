//! Tests of the configuration: one module per group of keys, and one of
//! the tests that wait for the library's real authentication methods.

mod auth;
mod library_checks;
mod listener;
mod metrics;

use super::file::{FileConfig, known_keys};
use super::layers::{Layers, env_key, load, parse_value};
use super::relay::relay_notes;
use super::validate::validate;
use super::{REDACTED, Settings};
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use stompbox::ServerConfig;
use stompbox::broker::embedded::EmbeddedConfig;
use stompbox::broker::relay::{RelayConfig, RelayMode};
use toml::{Table, Value};

pub(super) fn env(vars: &[(&str, &str)]) -> Vec<(OsString, OsString)> {
    vars.iter()
        .map(|(k, v)| (OsString::from(k), OsString::from(v)))
        .collect()
}

pub(super) fn from_toml(text: &str) -> Result<Settings, String> {
    let table: Table = toml::from_str(text).expect("test TOML parses");
    let mut layers = Layers::default();
    for (section, value) in table {
        layers.table.insert(section, value);
    }
    let parsed: FileConfig = serde_path_to_error::deserialize(layers.table)
        .map_err(|e| format!("{}: {}", e.path(), e.inner().message()))?;
    validate(parsed).map_err(|p| format!("{p:?}"))
}

/// Settings from `pairs` (`("section.key", TOML value)`) given three ways:
/// in a file, as STOMPBOX_* variables and as --set flags, in that order.
pub(super) fn from_every_source(pairs: &[(&str, &str)]) -> [Settings; 3] {
    let dir = scratch("sources");
    let mut sections: Vec<(&str, String)> = Vec::new();
    for (path, value) in pairs {
        let (section, key) = path.split_once('.').expect("section.key");
        let line = format!("{key} = {value}\n");
        match sections.iter_mut().find(|(s, _)| *s == section) {
            Some((_, text)) => text.push_str(&line),
            None => sections.push((section, line)),
        }
    }
    let text: String = sections
        .iter()
        .map(|(section, keys)| format!("[{section}]\n{keys}"))
        .collect();
    let file = dir.join("every-source.toml");
    std::fs::write(&file, &text).expect("write config");
    let from_file =
        load(Some(&file), env(&[]), &[]).unwrap_or_else(|e| panic!("from the file: {e}\n{text}"));
    let vars: Vec<(String, &str)> = pairs
        .iter()
        .map(|(path, value)| {
            let name = format!("STOMPBOX_{}", path.replace('.', "_").to_ascii_uppercase());
            (name, *value)
        })
        .collect();
    let vars: Vec<(&str, &str)> = vars.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let from_env =
        load(None, env(&vars), &[]).unwrap_or_else(|e| panic!("from the environment: {e}"));
    let flags: Vec<(String, String, String)> = pairs
        .iter()
        .map(|(path, value)| {
            (
                (*path).to_owned(),
                (*value).to_owned(),
                format!("--set {path}"),
            )
        })
        .collect();
    let from_flags = load(None, env(&[]), &flags).unwrap_or_else(|e| panic!("from flags: {e}"));
    let _ = std::fs::remove_dir_all(&dir);
    [from_file, from_env, from_flags]
}

/// The error of `key = value` (TOML) from a file, a variable and a flag;
/// each must name the key and where it was set, and contain `needle`.
pub(super) fn refused_from_every_source(key: &str, value: &str, needle: &str) {
    let dir = scratch("refused");
    let (section, name) = key.split_once('.').expect("section.key");
    let file = dir.join("refused.toml");
    std::fs::write(&file, format!("[{section}]\n{name} = {value}\n")).expect("write config");
    let var = format!("STOMPBOX_{}", key.replace('.', "_").to_ascii_uppercase());
    let flag = format!("--set {key}");
    for (e, origin) in [
        (
            load(Some(&file), env(&[]), &[]),
            format!("set in {}", file.display()),
        ),
        (
            load(None, env(&[(&var, value)]), &[]),
            format!("set by environment variable {var}"),
        ),
        (
            load(
                None,
                env(&[]),
                &[(key.to_owned(), value.to_owned(), flag.clone())],
            ),
            format!("set by {flag}"),
        ),
    ] {
        let e = e
            .map(|_| ())
            .expect_err(&format!("{key} = {value} ({origin})"));
        assert!(
            e.contains(key) && e.contains(&origin) && e.contains(needle),
            "{key} = {value}: expected {needle:?} and {origin:?} in: {e}"
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A fresh directory for one test's files.
pub(super) fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = std::env::temp_dir().join(format!(
        "stompbox-config-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

/// A self-signed P-256 certificate for localhost and 127.0.0.1 and its key,
/// `{name}.cert.pem` and `{name}.key.pem` in `dir`, made by the openssl
/// command (the CLI crate has no certificate library).
pub(super) fn self_signed(dir: &Path, name: &str) -> (PathBuf, PathBuf) {
    let cert = dir.join(format!("{name}.cert.pem"));
    let key = dir.join(format!("{name}.key.pem"));
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj"])
        .arg(format!("/CN={name}"))
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .expect("run openssl (needed to make test certificates)");
    assert!(status.success(), "openssl req failed: {status}");
    (cert, key)
}

pub(super) fn known() -> Table {
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

/// Keys whose default is their absence (`auth.rules`: absent is open
/// access, any value closes it), so stompbox.toml shows an example of them
/// instead of a default, which [`uncomment`] leaves commented out.
const EXAMPLE_ONLY: &[(&str, &str)] = &[("auth", "rules")];

/// `text` with its "# key = value" lines uncommented (not prose
/// comments, which have no '=' after one word, nor [`EXAMPLE_ONLY`] keys).
pub(super) fn uncomment(text: &str) -> String {
    text.lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest)
                if rest.split_once(" = ").is_some_and(|(k, _)| {
                    !k.is_empty()
                        && k.bytes().all(|b| b.is_ascii_lowercase() || b == b'_')
                        && !EXAMPLE_ONLY.iter().any(|(_, key)| *key == k)
                }) =>
            {
                rest
            }
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect()
}

/// The commented example of `key` in `text`: from "# key = [" to the
/// closing "# ]", uncommented.
pub(super) fn example(text: &str, key: &str) -> String {
    let start = format!("# {key} = [");
    let mut lines = text.lines().skip_while(|l| *l != start);
    let mut out = String::new();
    for line in lines.by_ref() {
        let line = line.strip_prefix('#').unwrap_or(line);
        out.push_str(line.trim_start());
        out.push('\n');
        if line.trim() == "]" {
            break;
        }
    }
    assert!(!out.is_empty(), "no \"{start}\" example");
    out
}

#[test]
fn shipped_file_lists_every_key_with_its_default() {
    let shipped = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../stompbox.toml"));
    let uncommented = uncomment(shipped);
    let table: Table = toml::from_str(&uncommented).expect("uncommented stompbox.toml parses");
    let known = known();
    for (section, keys) in &known {
        for key in keys.as_table().expect("sections are tables").keys() {
            if EXAMPLE_ONLY.contains(&(section.as_str(), key.as_str())) {
                continue;
            }
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
    // The example of each key without a default loads, and is in its section.
    for (section, key) in EXAMPLE_ONLY {
        let text = format!("[{section}]\n{}", example(shipped, key));
        from_toml(&text).unwrap_or_else(|e| panic!("the {section}.{key} example: {e}\n{text}"));
        let before = shipped
            .split(&format!("# {key} = ["))
            .next()
            .unwrap_or_default();
        assert!(
            before
                .rfind("\n[")
                .map(|at| &before[at + 1..])
                .is_some_and(|rest| rest.starts_with(&format!("[{section}]"))),
            "the {section}.{key} example is not in [{section}]"
        );
    }
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
            ("STOMPBOX_HEARTBEAT_MIN_MS", "250"),
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
    assert_eq!(config.heartbeat_min, Duration::from_millis(250));
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
    let e = load(None, env(&[("STOMPBOX_LIMITS_FRAME_BYTES", "10")]), &[]).expect_err("too small");
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
    let e =
        load(None, env(&[("STOMPBOX_LIMITS_FRAME_BYTES", "abc")]), &[]).expect_err("not a number");
    assert!(e.contains("expected a whole number"), "{e}");
    assert!(!e.contains("usize"), "{e}");
    let e = load(
        None,
        env(&[]),
        &[("nope.x".into(), "1".into(), "--set nope.x".into())],
    )
    .expect_err("flag");
    assert!(e.contains("nope.x"), "{e}");
}

#[test]
fn unknown_variables_warn_with_the_closest_key_and_test_ones_are_skipped() {
    let known = known();
    let mut layers = Layers::default();
    layers
        .add_env(
            env(&[
                ("STOMPBOX_LIMITS_FRAME_BYTEZ", "1"),
                ("STOMPBOX_LIMITS", "1"),
                ("STOMPBOX_TEST_BROKER", "rabbitmq"),
                ("STOMPBOX_SERVER_WS_PATH", "/socket"),
            ]),
            &known,
        )
        .expect("unknown variables are not fatal");
    assert_eq!(
        layers.warnings,
        [
            "environment variable STOMPBOX_LIMITS names no setting and is ignored; use \
             STOMPBOX_<SECTION>_<KEY> with a key of stompbox.toml, e.g. STOMPBOX_LIMITS_FRAME_BYTES",
            "environment variable STOMPBOX_LIMITS_FRAME_BYTEZ names no setting and is ignored; \
             did you mean STOMPBOX_LIMITS_FRAME_BYTES?",
        ]
    );
    // The known one still applies.
    assert_eq!(
        layers.table["server"]["ws_path"],
        Value::String("/socket".into())
    );
}

#[test]
fn mistyped_keys_get_the_closest_one() {
    let e = load(
        None,
        env(&[]),
        &[(
            "limits.frame_byte".into(),
            "1".into(),
            "--set limits.frame_byte".into(),
        )],
    )
    .expect_err("unknown flag key");
    assert!(e.contains("did you mean limits.frame_bytes?"), "{e}");
    let e = load(
        None,
        env(&[]),
        &[("nope.x".into(), "1".into(), "--set nope.x".into())],
    )
    .expect_err("nothing close");
    assert!(!e.contains("did you mean"), "{e}");
    let file = scratch("mistyped").join("stompbox.toml");
    std::fs::write(&file, "[limits]\nfram_bytes = 1\n").expect("write the file");
    let e = load(Some(&file), env(&[]), &[]).expect_err("unknown key in the file");
    assert!(e.contains("did you mean limits.frame_bytes?"), "{e}");
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
        ("[heartbeat]\nmin_ms = 0", "heartbeat.min_ms"),
        ("[heartbeat]\nmin_ms = 99", "heartbeat.min_ms"),
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
        (
            "[broker]\nmax_session_unacked_bytes = 1000",
            "broker.max_session_unacked_bytes",
        ),
        (
            "[broker]\nmax_total_topic_unacked_bytes = 1000",
            "broker.max_total_topic_unacked_bytes",
        ),
        (
            "[limits]\ntotal_transaction_bytes = 4096",
            "limits.total_transaction_bytes",
        ),
        (
            "[broker]\nmax_pattern_words = 0",
            "broker.max_pattern_words",
        ),
        (
            "[broker]\nmax_wildcard_subscriptions = -1",
            "broker.max_wildcard_subscriptions",
        ),
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
    let ok = from_toml(
        "[server]\ntcp = \"off\"\n[heartbeat]\nsend_ms = 0\n[limits]\ntransactions_per_session = 0",
    )
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
    let settings = load(None, env(&[("STOMPBOX_SERVER_API_TOKEN", secret)]), &[]).expect("valid");
    assert_eq!(settings.server.api_token.as_deref(), Some(secret));
    let redacted = settings.redacted();
    let printed = toml::to_string(&FileConfig::from_config(&redacted)).expect("prints");
    assert!(!printed.contains(secret), "{printed}");
    assert!(printed.contains(REDACTED), "{printed}");
    assert!(!format!("{redacted:?}").contains(secret));
    let e = load(None, env(&[("STOMPBOX_SERVER_API_TOKEN", "tiny")]), &[]).expect_err("too short");
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
        e.contains("2 problems") && e.contains("limits.headers") && e.contains("broker.max_queues"),
        "{e}"
    );
}

#[test]
fn known_keys_cover_every_section() {
    let known = known();
    let sections: Vec<&String> = known.keys().collect();
    assert_eq!(sections.len(), 10, "{sections:?}");
    assert!(env_key("STOMPBOX_METRICS_TOKEN", &known).is_some());
    assert!(env_key("STOMPBOX_ADMIN_TOKEN", &known).is_some());
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

pub(super) const RELAY: &str = "[broker]\nkind = \"relay\"\n";

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
            // Each client's own login needs a connection of its own.
            ("STOMPBOX_RELAY_MODE", "per-session"),
            ("STOMPBOX_RELAY_CONNECTIONS", "2"),
            ("STOMPBOX_RELAY_PREFETCH", "500"),
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
    assert_eq!(r.mode, RelayMode::PerSession);
    assert_eq!(r.connections, 2);
    assert_eq!(r.prefetch, 500);
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
    let printed = toml::to_string(&FileConfig::from_config(&settings.redacted())).expect("prints");
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
    let printed = toml::to_string(&FileConfig::from_config(&Settings::default())).expect("prints");
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
        ("[relay]\nmode = \"pooled\"", "relay.mode"),
        ("[relay]\nmode = 1", "relay.mode"),
        ("[relay]\nconnections = 0", "relay.connections"),
        ("[relay]\nconnections = 65", "relay.connections"),
        ("[relay]\nconnections = -1", "relay.connections"),
        ("[relay]\nprefetch = 0", "relay.prefetch"),
        ("[relay]\nprefetch = 65536", "relay.prefetch"),
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
        ("max_pattern_words = 8", "broker.max_pattern_words"),
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
fn the_shared_pool_cannot_pass_each_clients_own_login() {
    for key in ["client_login", "client_passcode"] {
        let text = format!("{RELAY}[relay]\n{key} = \"\"");
        let e = from_toml(&text).map(|_| ()).expect_err(&text);
        assert!(
            e.contains("\"relay.mode\"")
                && e.contains(&format!("relay.{key} = \\\"\\\""))
                && e.contains("the shared pool logs in once"),
            "{e}"
        );
        let per_session = from_toml(&format!("{text}\nmode = \"per-session\""))
            .unwrap_or_else(|e| panic!("{text}: {e}"));
        assert_eq!(
            per_session.server.relay.expect("relay on").mode,
            RelayMode::PerSession
        );
    }
}

#[test]
fn shipped_file_with_the_relay_refuses_the_embedded_keys() {
    let shipped = include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../stompbox.toml"));
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
        "broker.max_session_unacked_bytes",
        "broker.max_total_topic_unacked_bytes",
        "broker.max_pattern_words",
        "broker.max_wildcard_subscriptions",
    ] {
        assert!(e.contains(key), "{key}: {e}");
    }
}
