//! `[auth]`: every key from every source, the rules about keys that need
//! their method, the access rules, users files, redaction and --check.
//!
//! These pass with the library's skeleton authenticators as well as with
//! the real ones; tests that need the real ones are in
//! [`super::pending_real_auth`].

use super::{
    env, from_every_source, from_toml, load, refused_from_every_source, scratch, self_signed,
};
use crate::config::auth::{AUTH_OFF, summary};
use crate::config::file::FileConfig;
use crate::config::{REDACTED, Settings};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;
use stompbox::auth::JwtKey;

/// A JWT secret long enough (32 bytes and more).
pub(super) const SECRET: &str = "jwt-s3cret-0123456789abcdefghijklmnop";

/// The PEM public key of the private key `key`, written next to it.
pub(super) fn public_key(key: &Path) -> PathBuf {
    let out = key.with_extension("pub.pem");
    let status = Command::new("openssl")
        .args(["pkey", "-pubout", "-in"])
        .arg(key)
        .arg("-out")
        .arg(&out)
        .stderr(Stdio::null())
        .status()
        .expect("run openssl");
    assert!(status.success(), "openssl pkey failed");
    out
}

/// A JWK set with the P-256 public key of `key`, written next to it.
pub(super) fn jwks(key: &Path) -> PathBuf {
    let der = Command::new("openssl")
        .args(["pkey", "-pubout", "-outform", "DER", "-in"])
        .arg(key)
        .stderr(Stdio::null())
        .output()
        .expect("run openssl");
    assert!(der.status.success(), "openssl pkey failed");
    // A P-256 SubjectPublicKeyInfo ends with the point 04 || x || y.
    let point = &der.stdout[der.stdout.len() - 64..];
    let (x, y) = point.split_at(32);
    let json = format!(
        r#"{{"keys": [{{"kty": "EC", "crv": "P-256", "alg": "ES256", "use": "sig", "kid": "k1", "x": "{}", "y": "{}"}}]}}"#,
        base64url(x),
        base64url(y)
    );
    let out = key.with_extension("jwks.json");
    std::fs::write(&out, json).expect("write JWKS");
    out
}

fn base64url(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | (u32::from(*b) << (16 - 8 * i)));
        for i in 0..=chunk.len() {
            out.push(char::from(ALPHABET[((n >> (18 - 6 * i)) & 63) as usize]));
        }
    }
    out
}

fn quoted(path: &Path) -> String {
    format!("\"{}\"", path.display())
}

#[test]
fn every_auth_key_from_file_env_and_flag() {
    let dir = scratch("auth-keys");
    let (cert, key) = self_signed(&dir, "localhost");
    let pem = quoted(&public_key(&key));
    let ca = quoted(&cert);
    let pairs = [
        ("auth.anonymous", "true"),
        ("auth.failure_delay_ms", "250"),
        ("auth.sessions_per_user", "0"),
        ("auth.jwt_public_key_file", pem.as_str()),
        ("auth.jwt_issuer", "\"https://id.example.com\""),
        ("auth.jwt_audience", "\"stompbox\""),
        ("auth.jwt_user_claim", "\"preferred_username\""),
        ("auth.jwt_roles_claim", "\"realm_access.roles\""),
        ("auth.jwt_cookie", "\"id_token\""),
        ("auth.jwt_leeway_ms", "5000"),
        ("auth.http_url", "\"https://auth.example.com/stomp\""),
        ("auth.http_timeout_ms", "500"),
        ("auth.http_cache_ttl_ms", "0"),
        ("auth.http_ca_file", ca.as_str()),
        (
            "auth.rules",
            "[{ who = \"anyone\", subscribe = [\"/topic/**\"] }, \
             { who = \" role:admin \", send = [\"/**\"], subscribe = [\"/**\"] }]",
        ),
    ];
    for settings in from_every_source(&pairs) {
        let a = &settings.server.auth;
        assert!(a.allow_anonymous);
        assert_eq!(a.failure_delay, Duration::from_millis(250));
        assert_eq!(a.max_sessions_per_user, 0);
        assert!(a.passwords.is_none());
        let jwt = a.jwt.as_ref().expect("JWT on");
        assert!(
            matches!(jwt.key, JwtKey::PublicKeyPem(ref pem) if pem.starts_with(b"-----BEGIN PUBLIC KEY-----"))
        );
        assert_eq!(jwt.issuer.as_deref(), Some("https://id.example.com"));
        assert_eq!(jwt.audience.as_deref(), Some("stompbox"));
        assert_eq!(jwt.user_claim, "preferred_username");
        assert_eq!(jwt.roles_claim, "realm_access.roles");
        assert_eq!(jwt.cookie.as_deref(), Some("id_token"));
        assert_eq!(jwt.leeway, Duration::from_secs(5));
        let http = a.http.as_ref().expect("HTTP on");
        assert_eq!(http.url, "https://auth.example.com/stomp");
        assert_eq!(http.timeout, Duration::from_millis(500));
        assert_eq!(http.cache_ttl, Duration::ZERO);
        assert_eq!(http.ca_file.as_deref(), Some(cert.as_path()));
        assert!(!a.rules.is_open());
        let rules = settings.auth_source.rules.as_ref().expect("rules");
        assert_eq!(rules.len(), 2);
        // `who` is printed back trimmed.
        assert_eq!(rules[1].who, "role:admin");
        assert_eq!(rules[1].subscribe, ["/**"]);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_jwt_secret_and_jwks_file_are_keys_too() {
    let [file, vars, flags] = from_every_source(&[("auth.jwt_secret", &format!("\"{SECRET}\""))]);
    for settings in [file, vars, flags] {
        let jwt = settings.server.auth.jwt.expect("JWT on");
        assert!(matches!(jwt.key, JwtKey::Secret(ref s) if s == SECRET.as_bytes()));
    }
    // Unquoted from the environment, a secret of digits stays text.
    let digits = "12345678901234567890123456789012345";
    let settings = load(None, env(&[("STOMPBOX_AUTH_JWT_SECRET", digits)]), &[]).expect("valid");
    let jwt = settings.server.auth.jwt.expect("JWT on");
    assert!(matches!(jwt.key, JwtKey::Secret(ref s) if s == digits.as_bytes()));

    let dir = scratch("jwks");
    let (_, key) = self_signed(&dir, "localhost");
    let jwks = jwks(&key);
    let settings = load(
        None,
        env(&[("STOMPBOX_AUTH_JWT_JWKS_FILE", jwks.to_str().expect("UTF-8"))]),
        &[],
    )
    .expect("valid");
    let jwt = settings.server.auth.jwt.clone().expect("JWT on");
    assert!(matches!(jwt.key, JwtKey::Jwks(ref json) if json.contains("\"kty\": \"EC\"")));
    assert_eq!(
        settings.auth_source.jwt_key_file.as_deref(),
        Some(jwks.as_path())
    );
    // --check names the file, not its contents, and that loads again.
    let printed = toml::to_string(&FileConfig::from_config(&settings.redacted())).expect("prints");
    assert!(
        printed.contains(&format!("jwt_jwks_file = {}", quoted(&jwks))),
        "{printed}"
    );
    let again = from_toml(&printed).expect("loads again");
    assert_eq!(
        format!("{:?}", again.server),
        format!("{:?}", settings.server)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_auth_values_name_the_key_and_where_it_was_set() {
    for (key, value, needle) in [
        ("auth.failure_delay_ms", "60001", "at most 60000"),
        ("auth.anonymous", "\"yes\"", ""),
        ("auth.sessions_per_user", "-1", ""),
        ("auth.jwt_secret", "\"too-short\"", "at least 32 bytes"),
        (
            "auth.jwt_public_key_file",
            "\"/nonexistent/key.pem\"",
            "cannot read",
        ),
        (
            "auth.jwt_jwks_file",
            "\"/nonexistent/jwks.json\"",
            "cannot read",
        ),
        (
            "auth.users_file",
            "\"/nonexistent/users.toml\"",
            "cannot read",
        ),
        (
            "auth.rules",
            "[{ who = \"everyone\", send = [\"/x\"] }]",
            "rule 1: who:",
        ),
        (
            "auth.rules",
            "[{ who = \"anyone\" }]",
            "rule 1 (who = \"anyone\") allows nothing",
        ),
        (
            "auth.rules",
            "[{ who = \"anyone\", publish = [\"/x\"] }]",
            "publish",
        ),
        ("auth.rules", "[{ send = [\"/x\"] }]", "who"),
        ("auth.users", "[{ name = \"alice\" }]", "password_hash"),
        // Keys of a method that is off.
        (
            "auth.jwt_issuer",
            "\"https://id.example.com\"",
            "no JWT key is set",
        ),
        ("auth.jwt_leeway_ms", "1000", "no JWT key is set"),
        ("auth.jwt_user_claim", "\"email\"", "no JWT key is set"),
        ("auth.jwt_cookie", "\"token\"", "no JWT key is set"),
        ("auth.http_timeout_ms", "100", "auth.http_url is empty"),
        ("auth.http_cache_ttl_ms", "0", "auth.http_url is empty"),
        ("auth.http_ca_file", "\"ca.pem\"", "auth.http_url is empty"),
        (
            "auth.password_cache_ttl_ms",
            "0",
            "no password user is configured",
        ),
    ] {
        refused_from_every_source(key, value, needle);
    }
    // Values that need another key to be checked.
    for (vars, key, needle) in [
        (
            &[("STOMPBOX_AUTH_JWT_LEEWAY_MS", "600001")][..],
            "auth.jwt_leeway_ms",
            "at most 600000",
        ),
        (
            &[("STOMPBOX_AUTH_JWT_USER_CLAIM", "\" \"")][..],
            "auth.jwt_user_claim",
            "must name a claim",
        ),
        (
            &[("STOMPBOX_AUTH_JWT_COOKIE", "id token")][..],
            "auth.jwt_cookie",
            "not a cookie name",
        ),
        (
            &[("STOMPBOX_AUTH_JWT_PUBLIC_KEY_FILE", "/etc/hostname")][..],
            "auth.jwt_public_key_file",
            "only one JWT key",
        ),
    ] {
        let mut all = vars.to_vec();
        all.push(("STOMPBOX_AUTH_JWT_SECRET", SECRET));
        let e = load(None, env(&all), &[]).map(|_| ()).expect_err(key);
        let var = format!("STOMPBOX_{}", key.replace('.', "_").to_ascii_uppercase());
        assert!(
            e.contains(&format!("{key}: ")) && e.contains(needle) && e.contains(&var),
            "{key}: {e}"
        );
        assert!(!e.contains(SECRET), "{e}");
    }
    for (vars, key, needle) in [
        (
            &[("STOMPBOX_AUTH_HTTP_TIMEOUT_MS", "50")][..],
            "auth.http_timeout_ms",
            "at least 100",
        ),
        (
            &[("STOMPBOX_AUTH_HTTP_TIMEOUT_MS", "60001")][..],
            "auth.http_timeout_ms",
            "at most 60000",
        ),
        (
            &[
                ("STOMPBOX_AUTH_HTTP_CA_FILE", "/etc/hostname"),
                ("STOMPBOX_AUTH_HTTP_URL", "http://127.0.0.1:9000/auth"),
            ][..],
            "auth.http_ca_file",
            "plain http:// URL",
        ),
    ] {
        let mut all = vars.to_vec();
        if !all.iter().any(|(n, _)| *n == "STOMPBOX_AUTH_HTTP_URL") {
            all.push(("STOMPBOX_AUTH_HTTP_URL", "https://auth.example.com/"));
        }
        let e = load(None, env(&all), &[]).map(|_| ()).expect_err(key);
        assert!(
            e.contains(&format!("{key}: ")) && e.contains(needle),
            "{key}: {e}"
        );
    }
}

#[test]
fn defaults_of_a_method_that_is_off_are_accepted() {
    // As in stompbox.toml with every key uncommented.
    let settings = from_toml(
        "[auth]\njwt_user_claim = \"sub\"\njwt_roles_claim = \"roles\"\njwt_issuer = \"\"\n\
         jwt_leeway_ms = 30000\nhttp_timeout_ms = 2000\nhttp_cache_ttl_ms = 60000\n\
         http_ca_file = \"\"\npassword_cache_ttl_ms = 300000\nusers = []\nusers_file = \"\"",
    )
    .expect("valid");
    assert!(!settings.server.auth.has_methods());
    // auth.anonymous without a method is allowed: every session is
    // anonymous anyway, which the start-up warning says.
    let settings = from_toml("[auth]\nanonymous = true").expect("valid");
    assert!(settings.server.auth.allow_anonymous);
    assert!(summary(&settings.server.auth, &settings.auth_source).is_none());
}

#[test]
fn secrets_are_never_quoted_in_errors() {
    let short = "short-jwt-secret";
    let e = load(None, env(&[("STOMPBOX_AUTH_JWT_SECRET", short)]), &[])
        .map(|_| ())
        .expect_err("short");
    assert!(e.contains("auth.jwt_secret") && !e.contains(short), "{e}");
    // A syntax error in a users file names the line, not its text.
    let dir = scratch("users-syntax");
    let file = dir.join("users.toml");
    let hash = "$argon2id$v=19$m=256,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$NDmU3dHivc6ne29kUUP9aDR";
    std::fs::write(
        &file,
        format!("[[users]]\nname = \"alice\"\npassword_hash = \"{hash}\" roles\n"),
    )
    .expect("write");
    let e = load(
        None,
        env(&[("STOMPBOX_AUTH_USERS_FILE", file.to_str().expect("UTF-8"))]),
        &[],
    )
    .map(|_| ())
    .expect_err("syntax");
    assert!(
        e.contains("auth.users_file") && e.contains("line 3") && !e.contains(hash),
        "{e}"
    );
    // Nor in the hash checks (the skeleton refuses every hash, the real
    // implementation this one's truncated end).
    let e = load(
        None,
        env(&[(
            "STOMPBOX_AUTH_USERS",
            &format!("[{{ name = \"alice\", password_hash = \"{hash}\" }}]"),
        )]),
        &[],
    )
    .map(|_| ())
    .expect_err("hash");
    assert!(
        e.contains("auth.users") && e.contains("alice") && !e.contains(hash),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn users_files_are_checked() {
    let dir = scratch("users-file");
    let hash = "$argon2id$v=19$m=256,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$NDmU3dHivc6ne29kUUP9aDR+V3h5LMQKxi9nKzD0VZg";
    let write = |name: &str, text: &str| {
        let path = dir.join(name);
        std::fs::write(&path, text).expect("write");
        path
    };
    let user = |name: &str| format!("[[users]]\nname = \"{name}\"\npassword_hash = \"{hash}\"\n");
    let load_file = |file: &Path, inline: &str| {
        let mut vars = vec![("STOMPBOX_AUTH_USERS_FILE", file.to_str().expect("UTF-8"))];
        if !inline.is_empty() {
            vars.push(("STOMPBOX_AUTH_USERS", inline));
        }
        load(None, env(&vars), &[]).map(|_| ())
    };
    // A name in both places is an error naming the file (whatever else is
    // wrong: the skeleton refuses every hash).
    let dup = write("dup.toml", &user("alice"));
    let e = load_file(
        &dup,
        &format!("[{{ name = \"alice\", password_hash = \"{hash}\" }}]"),
    )
    .expect_err("duplicate");
    assert!(
        e.contains(&format!(
            "auth.users_file: {}: user \"alice\" is a duplicate: it is also in auth.users",
            dup.display()
        )) && e.contains("STOMPBOX_AUTH_USERS_FILE"),
        "{e}"
    );
    let twice = write("twice.toml", &format!("{}{}", user("bob"), user("bob")));
    let e = load_file(&twice, "").expect_err("twice in the file");
    assert!(
        e.contains("user \"bob\" is a duplicate: it is also earlier in"),
        "{e}"
    );
    let e = load(
        None,
        env(&[(
            "STOMPBOX_AUTH_USERS",
            &format!(
                "[{{ name = \"c\", password_hash = \"{hash}\" }}, {{ name = \"c\", password_hash = \"{hash}\" }}]"
            ),
        )]),
        &[],
    )
    .map(|_| ())
    .expect_err("twice inline");
    assert!(e.contains("auth.users: user \"c\" is listed twice"), "{e}");
    // An empty file would let nobody in: an error, not password login off.
    let empty = write("empty.toml", "# no users yet\n");
    let e = load_file(&empty, "").expect_err("empty");
    assert!(e.contains("has no [[users]] entries"), "{e}");
    let typo = write("typo.toml", "[[user]]\nname = \"a\"\n");
    let e = load_file(&typo, "").expect_err("unknown table");
    assert!(e.contains("auth.users_file") && e.contains("user"), "{e}");
    let roles = write(
        "roles.toml",
        &format!("{}roles = [\"two words\"]\n", user("dave")),
    );
    let e = load_file(&roles, "").expect_err("bad role");
    assert!(e.contains("role \"two words\""), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn absent_rules_are_open_and_present_rules_closed() {
    let open = load(None, env(&[]), &[]).expect("valid");
    assert!(open.server.auth.rules.is_open());
    let printed = toml::to_string(&FileConfig::from_config(&open)).expect("prints");
    assert!(!printed.contains("rules"), "{printed}");

    // Empty, from a flag: nothing is allowed, and --check says so.
    let closed = load(
        None,
        env(&[]),
        &[("auth.rules".into(), "[]".into(), "--set auth.rules".into())],
    )
    .expect("valid");
    assert!(!closed.server.auth.rules.is_open());
    let printed = toml::to_string(&FileConfig::from_config(&closed)).expect("prints");
    assert!(printed.contains("rules = []"), "{printed}");
    let again = from_toml(&printed).expect("loads again");
    assert!(!again.server.auth.rules.is_open());

    // [[auth.rules]] tables in a file are the same key.
    let tables = from_toml(
        "[auth]\nanonymous = false\n[[auth.rules]]\nwho = \"anyone\"\nsubscribe = [\"/topic/**\"]\n\
         [[auth.rules]]\nwho = \"user:alice\"\nsend = [\"/app/**\"]\n",
    )
    .expect("valid");
    let rules = tables.auth_source.rules.expect("rules");
    assert_eq!(rules.len(), 2);
    assert_eq!(rules[1].send, ["/app/**"]);
    assert!(rules[1].subscribe.is_empty());
}

/// JWT, HTTP, rules and the [server] keys together, as --check prints them.
fn configured(dir: &Path) -> Settings {
    let (cert, key) = self_signed(dir, "localhost");
    let cert = cert.to_str().expect("UTF-8").to_owned();
    let key = key.to_str().expect("UTF-8").to_owned();
    load(
        None,
        env(&[
            ("STOMPBOX_AUTH_JWT_SECRET", SECRET),
            ("STOMPBOX_AUTH_JWT_AUDIENCE", "stompbox"),
            ("STOMPBOX_AUTH_HTTP_URL", "https://auth.example.com/stomp"),
            ("STOMPBOX_AUTH_HTTP_CA_FILE", &cert),
            ("STOMPBOX_AUTH_ANONYMOUS", "true"),
            ("STOMPBOX_AUTH_SESSIONS_PER_USER", "3"),
            (
                "STOMPBOX_AUTH_RULES",
                "[{ who = \"anonymous\", subscribe = [\"/topic/public/**\"] }, \
                 { who = \"authenticated\", send = [\"/app/**\"], subscribe = [\"/topic/**\", \"/user/queue/**\"] }]",
            ),
            ("STOMPBOX_SERVER_TLS_CERT_FILE", &cert),
            ("STOMPBOX_SERVER_TLS_KEY_FILE", &key),
            ("STOMPBOX_SERVER_ALLOWED_ORIGINS", "https://chat.example.com"),
            ("STOMPBOX_SERVER_TRUSTED_PROXIES", "10.1.2.3"),
            (
                "STOMPBOX_SERVER_API_TOKENS",
                "[{ token = \"api-s3cret-0123456789\", destinations = [\"/user/**\"] }]",
            ),
            ("STOMPBOX_LIMITS_CONNECTIONS_PER_ADDRESS", "0"),
        ]),
        &[],
    )
    .expect("valid")
}

#[test]
fn check_output_with_auth_loads_back_and_hides_secrets() {
    let dir = scratch("auth-check");
    let settings = configured(&dir);
    let printed = toml::to_string(&FileConfig::from_config(&settings.redacted())).expect("prints");
    for secret in [SECRET, "api-s3cret-0123456789"] {
        assert!(!printed.contains(secret), "{printed}");
        assert!(!format!("{:?}", settings.redacted()).contains(secret));
    }
    for expected in [
        "[auth]\n",
        &format!("jwt_secret = \"{REDACTED}\"\n"),
        "jwt_audience = \"stompbox\"\n",
        "jwt_user_claim = \"sub\"\n",
        "http_url = \"https://auth.example.com/stomp\"\n",
        "anonymous = true\n",
        "sessions_per_user = 3\n",
        "trusted_proxies = [\"10.1.2.3/32\"]\n",
        &format!("token = \"{REDACTED}\"\n"),
        "who = \"anonymous\"\n",
        "connections_per_address = 0\n",
    ] {
        assert!(printed.contains(expected), "no {expected:?} in\n{printed}");
    }
    // No password users: their keys are not shown, as they would be refused.
    assert!(!printed.contains("password_cache_ttl_ms"), "{printed}");
    // Unredacted, the same output loads back to the same settings.
    let shown = toml::to_string(&FileConfig::from_config(&settings)).expect("prints");
    let again = from_toml(&shown).unwrap_or_else(|e| panic!("{e}\n{shown}"));
    assert_eq!(
        format!("{:?}", again.server),
        format!("{:?}", settings.server)
    );
    assert_eq!(
        format!("{:?}", again.auth_source),
        format!("{:?}", settings.auth_source)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn start_up_says_which_methods_are_on() {
    let dir = scratch("auth-summary");
    let settings = configured(&dir);
    let line = summary(&settings.server.auth, &settings.auth_source).expect("methods on");
    for part in [
        "JSON Web Tokens",
        "an HTTP service",
        "gets an anonymous session",
        "2 rules",
    ] {
        assert!(line.contains(part), "{line}");
    }
    let none = Settings::default();
    assert!(summary(&none.server.auth, &none.auth_source).is_none());
    assert!(AUTH_OFF.contains("every session is anonymous") && AUTH_OFF.contains("[auth]"));
    let _ = std::fs::remove_dir_all(&dir);
}
