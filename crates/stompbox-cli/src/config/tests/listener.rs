//! The `[server]` keys of TLS, origins, proxies and API tokens, `[admin]`, the
//! per-address `[limits]`, and the relay's header lists.

use super::{
    RELAY, env, from_every_source, from_toml, load, refused_from_every_source, scratch, self_signed,
};
use crate::config::REDACTED;
use crate::config::file::FileConfig;

#[test]
fn every_new_server_and_limits_key_from_file_env_and_flag() {
    let dir = scratch("server-keys");
    let (cert, key) = self_signed(&dir, "localhost");
    let cert = format!("\"{}\"", cert.display());
    let key_text = format!("\"{}\"", key.display());
    let pairs = [
        (
            "server.allowed_origins",
            "[\"https://chat.example.com\", \"https://*.example.com:8443\", \"null\"]",
        ),
        ("server.trusted_proxies", "[\"10.0.0.0/8\", \"::1\"]"),
        ("server.tls_cert_file", cert.as_str()),
        ("server.tls_key_file", key_text.as_str()),
        (
            "server.api_tokens",
            "[{ token = \"notify-0123456789abcdef\", destinations = [\"/user/**\"] }, \
             { token = \"news-0123456789abcdef\", destinations = [\"/topic/news\", \"/topic/news.*\"] }]",
        ),
        ("limits.connections_per_address", "10"),
        ("limits.connects_per_address_per_sec", "0"),
        ("limits.subscriptions_per_sec", "25"),
        ("limits.unauthenticated_frame_bytes", "4096"),
        ("limits.http_idle_timeout_ms", "1500"),
        ("limits.concurrent_api_requests", "8"),
    ];
    for settings in from_every_source(&pairs) {
        let c = settings.server;
        assert_eq!(
            c.allowed_origins,
            [
                "https://chat.example.com",
                "https://*.example.com:8443",
                "null"
            ]
        );
        let proxies: Vec<String> = c.trusted_proxies.iter().map(ToString::to_string).collect();
        assert_eq!(proxies, ["10.0.0.0/8", "::1/128"]);
        let tls = c.tls.expect("TLS on");
        assert_eq!(tls.key_file, key);
        assert_eq!(c.api_tokens.len(), 2);
        assert_eq!(c.api_tokens[0].token, "notify-0123456789abcdef");
        assert_eq!(c.api_tokens[0].destinations, ["/user/**"]);
        assert_eq!(
            c.api_tokens[1].destinations,
            ["/topic/news", "/topic/news.*"]
        );
        assert_eq!(c.max_connections_per_address, 10);
        assert_eq!(c.connects_per_address_per_sec, 0);
        assert_eq!(c.subscriptions_per_sec, 25);
        assert_eq!(c.unauthenticated_frame_bytes, 4096);
        assert_eq!(c.http_idle_timeout, std::time::Duration::from_millis(1500));
        assert_eq!(c.max_concurrent_api_requests, 8);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn lists_from_the_environment_need_no_toml_quotes() {
    let settings = load(
        None,
        env(&[
            ("STOMPBOX_SERVER_ALLOWED_ORIGINS", "https://a.example, *"),
            ("STOMPBOX_SERVER_TRUSTED_PROXIES", "192.168.0.0/16,fd00::/8"),
        ]),
        &[],
    )
    .expect("valid");
    assert_eq!(settings.server.allowed_origins, ["https://a.example", "*"]);
    assert_eq!(settings.server.trusted_proxies.len(), 2);
}

#[test]
fn bad_server_and_limits_values_name_the_key_and_where_it_was_set() {
    for (key, value, needle) in [
        (
            "server.allowed_origins",
            "[\"https://chat.example.com/app\"]",
            "no path",
        ),
        ("server.allowed_origins", "[\"chat.example.com\"]", "scheme"),
        ("server.trusted_proxies", "[\"10.0.0.0/33\"]", "10.0.0.0/33"),
        ("server.trusted_proxies", "[\"proxy.local\"]", "proxy.local"),
        (
            "server.api_tokens",
            "[{ token = \"short\", destinations = [\"/user/**\"] }]",
            "entry 1: the token must be at least 16",
        ),
        (
            "server.api_tokens",
            "[{ token = \"with spaces in the token\", destinations = [\"/x\"] }]",
            "printable ASCII",
        ),
        (
            "server.api_tokens",
            "[{ token = \"0123456789abcdef\", destinations = [] }]",
            "destinations is empty",
        ),
        (
            "server.api_tokens",
            "[{ token = \"0123456789abcdef\", destinations = [\"topic/x\"] }]",
            "must start with '/'",
        ),
        (
            "server.api_tokens",
            "[{ token = \"0123456789abcdef\", destinations = [\"/user/{user}/**\"] }]",
            "{user}",
        ),
        (
            "server.api_tokens",
            "[{ token = \"0123456789abcdef\", destinations = [\"/a\"] }, \
             { token = \"0123456789abcdef\", destinations = [\"/b\"] }]",
            "entry 2: the same token as entry 1",
        ),
        (
            "server.api_tokens",
            "[{ token = \"0123456789abcdef\" }]",
            "destinations",
        ),
        ("limits.unauthenticated_frame_bytes", "100", "at least 1024"),
        (
            "limits.unauthenticated_frame_bytes",
            "1000000",
            "must not exceed limits.frame_bytes",
        ),
        ("limits.connects_per_address_per_sec", "-1", ""),
        ("limits.http_idle_timeout_ms", "0", "at least 100"),
        ("limits.concurrent_api_requests", "0", "at least 1"),
        ("limits.subscriptions_per_sec", "-1", ""),
    ] {
        refused_from_every_source(key, value, needle);
    }
}

#[test]
fn api_tokens_are_never_shown_nor_quoted() {
    let secret = "tok-s3cret-0123456789";
    let settings = load(
        None,
        env(&[(
            "STOMPBOX_SERVER_API_TOKENS",
            &format!("[{{ token = \"{secret}\", destinations = [\"/user/**\"] }}]"),
        )]),
        &[],
    )
    .expect("valid");
    let redacted = settings.redacted();
    let printed = toml::to_string(&FileConfig::from_config(&redacted)).expect("prints");
    assert!(!printed.contains(secret), "{printed}");
    assert!(
        printed.contains(&format!("token = \"{REDACTED}\"")),
        "{printed}"
    );
    assert!(
        printed.contains("destinations = [\"/user/**\"]"),
        "{printed}"
    );
    assert!(!format!("{redacted:?}").contains(secret));
    let short = "tiny-secret";
    let e = load(
        None,
        env(&[(
            "STOMPBOX_SERVER_API_TOKENS",
            &format!("[{{ token = \"{short}\", destinations = [\"/x\"] }}]"),
        )]),
        &[],
    )
    .map(|_| ())
    .expect_err("short");
    assert!(!e.contains(short), "{e}");
    // The same token as api_token would be ambiguous.
    let e = load(
        None,
        env(&[
            ("STOMPBOX_SERVER_API_TOKEN", secret),
            (
                "STOMPBOX_SERVER_API_TOKENS",
                &format!("[{{ token = \"{secret}\", destinations = [\"/x\"] }}]"),
            ),
        ]),
        &[],
    )
    .map(|_| ())
    .expect_err("same as api_token");
    assert!(e.contains("server.api_token") && !e.contains(secret), "{e}");
}

#[test]
fn lowering_frame_bytes_lowers_the_unauthenticated_limit_with_it() {
    let settings = from_toml("[limits]\nframe_bytes = 8192").expect("valid");
    assert_eq!(settings.server.unauthenticated_frame_bytes, 8192);
    // What --check prints of it loads again.
    let shown = toml::to_string(&FileConfig::from_config(&settings)).expect("prints");
    let again = from_toml(&shown).expect("loads again");
    assert_eq!(again.server.unauthenticated_frame_bytes, 8192);
}

#[test]
fn tls_files_are_checked_at_start_up() {
    let dir = scratch("tls");
    let (cert, key) = self_signed(&dir, "one");
    let (_, other_key) = self_signed(&dir, "two");
    let garbage = dir.join("garbage.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    let tls = |cert: &std::path::Path, key: &std::path::Path| {
        load(
            None,
            env(&[
                (
                    "STOMPBOX_SERVER_TLS_CERT_FILE",
                    cert.to_str().expect("UTF-8"),
                ),
                ("STOMPBOX_SERVER_TLS_KEY_FILE", key.to_str().expect("UTF-8")),
            ]),
            &[],
        )
        .map(|s| s.server.tls)
    };
    let on = tls(&cert, &key).expect("valid").expect("TLS on");
    assert_eq!(on.cert_file, cert);
    for (c, k, field, needle) in [
        (
            dir.join("missing.pem"),
            key.clone(),
            "server.tls_cert_file",
            "cannot read",
        ),
        (
            cert.clone(),
            dir.join("missing.pem"),
            "server.tls_key_file",
            "missing.pem",
        ),
        (
            garbage.clone(),
            key.clone(),
            "server.tls_cert_file",
            "garbage.pem",
        ),
        (
            cert.clone(),
            garbage.clone(),
            "server.tls_key_file",
            "garbage.pem",
        ),
        (
            cert.clone(),
            other_key.clone(),
            "server.tls_key_file",
            "does not belong",
        ),
    ] {
        let e = tls(&c, &k).expect_err(&format!("{c:?} {k:?}"));
        let var = if field.ends_with("cert_file") {
            "STOMPBOX_SERVER_TLS_CERT_FILE"
        } else {
            "STOMPBOX_SERVER_TLS_KEY_FILE"
        };
        assert!(
            e.contains(&format!("{field}: ")) && e.contains(needle) && e.contains(var),
            "{c:?} {k:?}: {e}"
        );
    }
    // "" for both is off; one without the other is an error naming the other.
    let off = from_toml("[server]\ntls_cert_file = \"\"\ntls_key_file = \"\"").expect("off");
    assert!(off.server.tls.is_none());
    let e = from_toml(&format!("[server]\ntls_key_file = \"{}\"", key.display()))
        .map(|_| ())
        .expect_err("key alone");
    assert!(e.contains("server.tls_cert_file"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn relay_header_lists_are_checked() {
    for (text, key) in [
        (
            "[relay]\nsubscribe_headers = [\"x queue\"]",
            "relay.subscribe_headers",
        ),
        (
            "[relay]\nsubscribe_headers = [\"\"]",
            "relay.subscribe_headers",
        ),
        (
            "[relay]\nsubscribe_headers = [\"id\"]",
            "relay.subscribe_headers",
        ),
        (
            "[relay]\nsubscribe_headers = [\"durable\", \"durable\"]",
            "relay.subscribe_headers",
        ),
        ("[relay]\nsend_headers = [\"a:b\"]", "relay.send_headers"),
        (
            "[relay]\nsend_headers = [\"destination\"]",
            "relay.send_headers",
        ),
        (
            "[relay]\nsend_headers = \"persistent\"",
            "relay.send_headers",
        ),
        ("[relay]\nack_headers = [\"id\"]", "relay.ack_headers"),
        (
            "[relay]\nack_headers = [\"transaction\"]",
            "relay.ack_headers",
        ),
        ("[relay]\nack_headers = [\"re queue\"]", "relay.ack_headers"),
    ] {
        let text = format!("{RELAY}{text}");
        let e = from_toml(&text).map(|_| ()).expect_err(&text);
        assert!(e.contains(key), "{text}: {e}");
    }
    // Empty lists (the default) are fine, with the relay or without.
    from_toml(&format!(
        "{RELAY}[relay]\nsubscribe_headers = []\nsend_headers = []\nack_headers = []"
    ))
    .expect("valid");
}

#[test]
fn admin_token_and_role_are_read_from_every_source_and_the_token_never_shown() {
    let secret = "adm-s3cret-0123456789";
    for settings in from_every_source(&[
        ("admin.token", &format!("\"{secret}\"")),
        ("admin.max_event_streams", "3"),
    ]) {
        assert_eq!(settings.server.admin.token.as_deref(), Some(secret));
        assert_eq!(settings.server.admin.max_event_streams, 3);
        assert!(settings.server.admin.enabled());
        let printed =
            toml::to_string(&FileConfig::from_config(&settings.redacted())).expect("prints");
        assert!(!printed.contains(secret), "{printed}");
        assert!(
            printed.contains(&format!("[admin]\ntoken = \"{REDACTED}\"")),
            "{printed}"
        );
        assert!(!format!("{:?}", settings.server).contains(secret));
    }
    let off = load(None, env(&[]), &[]).expect("defaults");
    assert!(!off.server.admin.enabled());
    let printed = toml::to_string(&FileConfig::from_config(&off.redacted())).expect("prints");
    assert!(printed.contains("[admin]\ntoken = \"\""), "{printed}");

    for (vars, needle) in [
        (vec![("STOMPBOX_ADMIN_TOKEN", "tiny-secret")], "admin.token"),
        (
            vec![
                ("STOMPBOX_ADMIN_TOKEN", secret),
                ("STOMPBOX_SERVER_API_TOKEN", secret),
            ],
            "must differ",
        ),
        // A role needs an authentication method to verify anyone.
        (vec![("STOMPBOX_ADMIN_ROLE", "admin")], "admin.role"),
        (
            vec![("STOMPBOX_ADMIN_MAX_EVENT_STREAMS", "0")],
            "admin.max_event_streams",
        ),
    ] {
        let e = load(None, env(&vars), &[]).map(|_| ()).expect_err(needle);
        assert!(e.contains(needle), "{e}");
        assert!(!e.contains(secret) && !e.contains("tiny-secret"), "{e}");
    }
}
