//! The `[metrics]` keys.

use super::{env, from_every_source, from_toml, load, refused_from_every_source};
use crate::config::REDACTED;
use crate::config::file::FileConfig;
use stompbox::MetricsConfig;

#[test]
fn every_metrics_key_from_file_env_and_flag() {
    let pairs = [
        ("metrics.enabled", "false"),
        ("metrics.addr", "\"127.0.0.1:9464\""),
        ("metrics.token", "\"scrape-0123456789abcdef\""),
        ("metrics.per_destination", "true"),
        ("metrics.max_destination_series", "250"),
    ];
    for settings in from_every_source(&pairs) {
        let m = settings.server.metrics;
        assert!(!m.enabled);
        assert_eq!(m.addr, Some("127.0.0.1:9464".parse().expect("address")));
        assert_eq!(m.token.as_deref(), Some("scrape-0123456789abcdef"));
        assert!(m.per_destination);
        assert_eq!(m.max_destination_series, 250);
    }
    // Unquoted, as one would type them.
    let settings = load(
        None,
        env(&[
            ("STOMPBOX_METRICS_ADDR", "[::1]:9464"),
            ("STOMPBOX_METRICS_TOKEN", "01234567890123456789"),
        ]),
        &[],
    )
    .expect("valid");
    assert_eq!(
        settings.server.metrics.addr,
        Some("[::1]:9464".parse().expect("address"))
    );
    // Digits stay text for a text key.
    assert_eq!(
        settings.server.metrics.token.as_deref(),
        Some("01234567890123456789")
    );
}

#[test]
fn empty_addr_and_token_mean_none() {
    for text in [
        "[metrics]\naddr = \"\"\ntoken = \"\"",
        "[metrics]\naddr = \"off\"",
    ] {
        let m = from_toml(text).expect(text).server.metrics;
        assert_eq!(m.addr, None, "{text}");
        assert_eq!(m.token, None, "{text}");
    }
    let d = MetricsConfig::default();
    let m = from_toml("").expect("defaults").server.metrics;
    assert_eq!(format!("{m:?}"), format!("{d:?}"));
}

#[test]
fn bad_metrics_values_name_the_key_and_source() {
    refused_from_every_source("metrics.addr", "\"localhost\"", "expected IP:port");
    refused_from_every_source("metrics.token", "\"short\"", "at least 16 characters");
    refused_from_every_source(
        "metrics.token",
        "\"with a space in it here\"",
        "printable ASCII",
    );
    refused_from_every_source("metrics.max_destination_series", "0", "at least 1");
    refused_from_every_source("metrics.max_destination_series", "10001", "at most 10000");
    refused_from_every_source("metrics.enabled", "\"yes\"", "");
    refused_from_every_source("metrics.per_destination", "2", "");
}

#[test]
fn metrics_sanity_rules() {
    for (text, key, needle) in [
        (
            "[server]\nhttp = \"127.0.0.1:8080\"\n[metrics]\naddr = \"127.0.0.1:8080\"",
            "metrics.addr",
            "must differ from server.http",
        ),
        (
            "[server]\ntcp = \"127.0.0.1:61613\"\n[metrics]\naddr = \"127.0.0.1:61613\"",
            "metrics.addr",
            "must differ from server.tcp",
        ),
        (
            "[server]\napi_token = \"same-token-0123456789\"\n\
             [metrics]\ntoken = \"same-token-0123456789\"",
            "metrics.token",
            "must differ from server.api_token",
        ),
        ("[metrics]\naddress = \"127.0.0.1:9464\"", "address", ""),
    ] {
        let e = from_toml(text).map(|_| ()).expect_err(text);
        assert!(e.contains(key) && e.contains(needle), "{text}: {e}");
    }
    // The token is never quoted back.
    let e = from_toml("[metrics]\ntoken = \"tiny-secret\"")
        .map(|_| ())
        .expect_err("too short");
    assert!(!e.contains("tiny-secret"), "{e}");
    // Port 0 on both: two different ephemeral ports.
    let both = from_toml(
        "[server]\nhttp = \"127.0.0.1:0\"\n[metrics]\naddr = \"127.0.0.1:0\"\n\
         max_destination_series = 10000",
    )
    .expect("valid");
    assert_eq!(both.server.metrics.max_destination_series, 10_000);
}

#[test]
fn check_shows_the_metrics_section_without_the_token() {
    let secret = "metrics-s3cret-0123456789";
    let settings = load(
        None,
        env(&[
            ("STOMPBOX_METRICS_TOKEN", secret),
            ("STOMPBOX_METRICS_ADDR", "127.0.0.1:9464"),
        ]),
        &[],
    )
    .expect("valid");
    let redacted = settings.redacted();
    assert!(!format!("{redacted:?}").contains(secret));
    let printed = toml::to_string(&FileConfig::from_config(&redacted)).expect("prints");
    assert!(!printed.contains(secret), "{printed}");
    assert!(
        printed.contains(&format!(
            "[metrics]\nenabled = true\naddr = \"127.0.0.1:9464\"\ntoken = \"{REDACTED}\"\n\
             per_destination = false\nmax_destination_series = 100\n"
        )),
        "{printed}"
    );
    // Unredacted, what --check prints loads again to the same settings.
    let shown = toml::to_string(&FileConfig::from_config(&settings)).expect("prints");
    let again = from_toml(&shown).expect("--check output loads again");
    assert_eq!(
        format!("{:?}", again.server.metrics),
        format!("{:?}", settings.server.metrics)
    );
    assert_eq!(again.server.metrics.token.as_deref(), Some(secret));
    // Off prints as empty strings, which load as off.
    let printed = toml::to_string(&FileConfig::from_config(&crate::config::Settings::default()))
        .expect("prints");
    assert!(
        printed.contains("[metrics]\nenabled = true\naddr = \"\"\ntoken = \"\"\n"),
        "{printed}"
    );
}
