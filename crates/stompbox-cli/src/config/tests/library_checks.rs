//! Settings the library checks when the configuration is loaded: password
//! hashes (`verify_password_hash`, `PasswordAuthenticator`), JWT keys
//! (`JwtAuthenticator`), the HTTP service (`HttpAuthenticator`), access rule
//! patterns (`AccessRules`), and the relay's header lists. Their errors must
//! come out naming the key and where it was set.

use super::auth::{SECRET, jwks, public_key};
use super::{RELAY, env, from_every_source, from_toml, load, scratch, self_signed};
use crate::config::REDACTED;
use crate::config::file::FileConfig;
use std::path::Path;

/// argon2id (m=256 KiB, t=1, p=1) of "alice-password".
const ALICE_HASH: &str = "$argon2id$v=19$m=256,t=1,p=1$c29tZXNhbHRzb21lc2FsdA$NDmU3dHivc6ne29kUUP9aDR+V3h5LMQKxi9nKzD0VZg";
/// argon2id (m=256 KiB, t=1, p=1) of "bob-password".
const BOB_HASH: &str = "$argon2id$v=19$m=256,t=1,p=1$b3RoZXJzYWx0b3RoZXJzYWx0$iwWk6G9IQL5oM/R3UVeaDLPBJlxPgbmudKZ6FSgt0RY";

fn users_file(dir: &Path, text: &str) -> String {
    let path = dir.join("users.toml");
    std::fs::write(&path, text).expect("write users file");
    path.to_str().expect("UTF-8").to_owned()
}

#[test]
fn users_from_file_env_and_flag() {
    let users = format!(
        "[{{ name = \"alice\", password_hash = \"{ALICE_HASH}\", roles = [\"admin\", \"ops\"] }}, \
         {{ name = \"bob\", password_hash = \"{BOB_HASH}\" }}]"
    );
    for settings in
        from_every_source(&[("auth.users", &users), ("auth.password_cache_ttl_ms", "0")])
    {
        let passwords = settings.server.auth.passwords.expect("passwords on");
        assert_eq!(passwords.users.len(), 2);
        assert_eq!(passwords.users[0].name, "alice");
        assert_eq!(passwords.users[0].password_hash, ALICE_HASH);
        assert_eq!(passwords.users[0].roles, ["admin", "ops"]);
        assert!(passwords.users[1].roles.is_empty());
        assert!(passwords.cache_ttl.is_zero());
    }
}

#[test]
fn users_file_merges_with_users_and_check_lists_them_without_hashes() {
    let dir = scratch("users-merge");
    let file = users_file(
        &dir,
        &format!("[[users]]\nname = \"bob\"\npassword_hash = \"{BOB_HASH}\"\nroles = [\"ops\"]\n"),
    );
    let settings = load(
        None,
        env(&[
            (
                "STOMPBOX_AUTH_USERS",
                &format!("[{{ name = \"alice\", password_hash = \"{ALICE_HASH}\", roles = [\"admin\"] }}]"),
            ),
            ("STOMPBOX_AUTH_USERS_FILE", &file),
            ("STOMPBOX_AUTH_JWT_SECRET", SECRET),
        ]),
        &[],
    )
    .expect("valid");
    let passwords = settings
        .server
        .auth
        .passwords
        .clone()
        .expect("passwords on");
    let names: Vec<&str> = passwords.users.iter().map(|u| u.name.as_str()).collect();
    assert_eq!(names, ["alice", "bob"]);

    let printed = toml::to_string(&FileConfig::from_config(&settings.redacted())).expect("prints");
    for hash in [ALICE_HASH, BOB_HASH, SECRET] {
        assert!(!printed.contains(hash), "{printed}");
    }
    for expected in [
        "name = \"alice\"",
        "name = \"bob\"",
        "roles = [\"ops\"]",
        &format!("password_hash = \"{REDACTED}\""),
        "password_cache_ttl_ms = 300000",
    ] {
        assert!(printed.contains(expected), "no {expected:?} in\n{printed}");
    }
    // Unredacted: every user under auth.users, users_file "", and that
    // loads back to the same settings.
    let shown = toml::to_string(&FileConfig::from_config(&settings)).expect("prints");
    assert!(shown.contains("users_file = \"\""), "{shown}");
    let again = from_toml(&shown).unwrap_or_else(|e| panic!("{e}\n{shown}"));
    assert_eq!(
        format!("{:?}", again.server),
        format!("{:?}", settings.server)
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_password_hashes_name_the_user_and_are_not_quoted() {
    let bcrypt = "$2b$12$R9h/cIPz0gi.URNNX3kh2OPST9/PgBkqquzi.Ss7KIUgO2t0jWMUW";
    let e = load(
        None,
        env(&[(
            "STOMPBOX_AUTH_USERS",
            &format!("[{{ name = \"alice\", password_hash = \"{bcrypt}\" }}]"),
        )]),
        &[],
    )
    .map(|_| ())
    .expect_err("bcrypt");
    assert!(
        e.contains("auth.users: user \"alice\": password_hash is not usable")
            && e.contains("bcrypt")
            && e.contains("STOMPBOX_AUTH_USERS")
            && !e.contains(bcrypt),
        "{e}"
    );
    let dir = scratch("bad-hash");
    let file = users_file(
        &dir,
        &format!(
            "[[users]]\nname = \"alice\"\npassword_hash = \"{ALICE_HASH}\"\n\
             [[users]]\nname = \"bob\"\npassword_hash = \"plain-text-password\"\n"
        ),
    );
    let e = load(None, env(&[("STOMPBOX_AUTH_USERS_FILE", &file)]), &[])
        .map(|_| ())
        .expect_err("not a hash");
    assert!(
        e.contains(&format!(
            "auth.users_file: {file}: user \"bob\": password_hash"
        )) && !e.contains("plain-text-password")
            && !e.contains("alice"),
        "{e}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unusable_jwt_keys_name_their_key() {
    let dir = scratch("bad-jwt");
    let garbage = dir.join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PUBLIC KEY-----\nnope\n-----END PUBLIC KEY-----\n",
    )
    .expect("write");
    let not_json = dir.join("jwks.json");
    std::fs::write(&not_json, "{\"keys\": 5}").expect("write");
    for (var, path, key) in [
        (
            "STOMPBOX_AUTH_JWT_PUBLIC_KEY_FILE",
            &garbage,
            "auth.jwt_public_key_file",
        ),
        (
            "STOMPBOX_AUTH_JWT_JWKS_FILE",
            &not_json,
            "auth.jwt_jwks_file",
        ),
    ] {
        let e = load(None, env(&[(var, path.to_str().expect("UTF-8"))]), &[])
            .map(|_| ())
            .expect_err(key);
        assert!(e.contains(&format!("{key}: ")) && e.contains(var), "{e}");
    }
    // The real ones load (also checked, before, with the skeleton).
    let (_, key) = self_signed(&dir, "localhost");
    for (var, path) in [
        ("STOMPBOX_AUTH_JWT_PUBLIC_KEY_FILE", public_key(&key)),
        ("STOMPBOX_AUTH_JWT_JWKS_FILE", jwks(&key)),
    ] {
        load(None, env(&[(var, path.to_str().expect("UTF-8"))]), &[]).expect("a real key");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn unusable_http_settings_name_their_key() {
    let dir = scratch("bad-http");
    let garbage = dir.join("ca.pem");
    std::fs::write(&garbage, "not a certificate\n").expect("write");
    for (vars, key) in [
        (
            vec![("STOMPBOX_AUTH_HTTP_URL", "ftp://auth.example.com/")],
            "auth.http_url",
        ),
        (
            vec![("STOMPBOX_AUTH_HTTP_URL", "https://")],
            "auth.http_url",
        ),
        (
            vec![
                ("STOMPBOX_AUTH_HTTP_URL", "https://auth.example.com/"),
                (
                    "STOMPBOX_AUTH_HTTP_CA_FILE",
                    garbage.to_str().expect("UTF-8"),
                ),
            ],
            "auth.http_ca_file",
        ),
    ] {
        let e = load(None, env(&vars), &[]).map(|_| ()).expect_err(key);
        assert!(e.contains(&format!("{key}: ")), "{vars:?}: {e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_rule_patterns_name_the_rule() {
    for (rules, needle) in [
        (
            "[{ who = \"anyone\", subscribe = [\"/topic/**\"] }, { who = \"anyone\", send = [\"/topic/**x\"] }]",
            "rule 2",
        ),
        ("[{ who = \"anyone\", send = [\"/topic/#\"] }]", "rule 1"),
        (
            "[{ who = \"anyone\", subscribe = [\"topic/x\"] }]",
            "rule 1",
        ),
        (
            "[{ who = \"anyone\", subscribe = [\"/user/{name}/x\"] }]",
            "rule 1",
        ),
    ] {
        let e = load(
            None,
            env(&[]),
            &[("auth.rules".into(), rules.into(), "--set auth.rules".into())],
        )
        .map(|_| ())
        .expect_err(rules);
        assert!(
            e.contains("auth.rules: ") && e.contains(needle) && e.contains("--set auth.rules"),
            "{rules}: {e}"
        );
    }
    // {user} is fine in rules.
    from_toml("[auth]\nrules = [{ who = \"authenticated\", subscribe = [\"/user/{user}/**\"] }]")
        .expect("valid");
}

#[test]
fn bad_api_token_destinations_name_the_entry() {
    let e = load(
        None,
        env(&[(
            "STOMPBOX_SERVER_API_TOKENS",
            "[{ token = \"0123456789abcdef\", destinations = [\"/topic/**x\"] }]",
        )]),
        &[],
    )
    .map(|_| ())
    .expect_err("bad pattern");
    assert!(
        e.contains("server.api_tokens: entry 1: destination \"/topic/**x\"")
            && !e.contains("rule 1"),
        "{e}"
    );
}

#[test]
fn relay_header_lists_reach_the_relay() {
    let [file, vars, flags] = from_every_source(&[
        ("broker.kind", "\"relay\""),
        ("relay.subscribe_headers", "[\"x-queue-name\", \"durable\"]"),
        ("relay.send_headers", "[\"persistent\"]"),
        ("relay.ack_headers", "[\"requeue\", \"x-reason\"]"),
    ]);
    for settings in [file, vars, flags] {
        let relay = settings.server.relay.clone().expect("relay on");
        let (subscribe, send) = (relay.subscribe_headers.clone(), relay.send_headers.clone());
        assert_eq!(subscribe, ["x-queue-name", "durable"]);
        assert_eq!(send, ["persistent"]);
        assert_eq!(relay.ack_headers, ["requeue", "x-reason"]);
        // --check shows them, and loads back.
        let shown = toml::to_string(&FileConfig::from_config(&settings)).expect("prints");
        assert!(shown.contains("send_headers = [\"persistent\"]"), "{shown}");
        let again = from_toml(&shown).expect("loads again");
        assert_eq!(
            format!("{:?}", again.server.relay),
            format!("{:?}", settings.server.relay)
        );
    }
    from_toml(&format!("{RELAY}[relay]\nsend_headers = [\"persistent\"]")).expect("valid");
    // Absent, ack_headers keeps the library's default; [] passes none.
    let default = from_toml(RELAY).expect("valid");
    assert_eq!(
        default.server.relay.expect("relay").ack_headers,
        ["requeue"]
    );
    let none = from_toml(&format!("{RELAY}[relay]\nack_headers = []")).expect("valid");
    assert!(none.server.relay.expect("relay").ack_headers.is_empty());
}
