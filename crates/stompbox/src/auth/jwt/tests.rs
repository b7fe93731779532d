use super::*;
use crate::auth::{Handshake, TransportKind};
use jsonwebtoken::{EncodingKey, Header, encode};
use serde_json::json;
use stompbox_codec::Headers;

const SECRET: &[u8] = b"a test secret of at least 32 bytes!!";
const RSA_PRIVATE: &[u8] = include_bytes!("../../../tests/fixtures/jwt-rs256-private.pem");
const RSA_PUBLIC: &[u8] = include_bytes!("../../../tests/fixtures/jwt-rs256-public.pem");
const RSA_PUBLIC_PKCS1: &[u8] =
    include_bytes!("../../../tests/fixtures/jwt-rs256-public-pkcs1.pem");

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// Claims of a token for `alice` valid for ten minutes.
fn claims() -> Value {
    json!({"sub": "alice", "exp": now() + 600})
}

fn sign(alg: Algorithm, key: &EncodingKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(alg);
    header.kid = kid.map(String::from);
    encode(&header, claims, key).expect("encode")
}

fn hs_key() -> EncodingKey {
    EncodingKey::from_secret(SECRET).expect("secret")
}

fn hs_token(claims: &Value) -> String {
    sign(Algorithm::HS256, &hs_key(), None, claims)
}

fn rsa_key() -> EncodingKey {
    EncodingKey::from_rsa_pem(RSA_PRIVATE).expect("RSA key")
}

/// A fresh key pair: the encoding key and the PEM public key.
fn generated(alg: &'static rcgen::SignatureAlgorithm) -> (EncodingKey, String) {
    let pair = rcgen::KeyPair::generate_for(alg).expect("generate");
    let private = pair.serialize_pem();
    let key = if alg == &rcgen::PKCS_ED25519 {
        EncodingKey::from_ed_pem(private.as_bytes())
    } else {
        EncodingKey::from_ec_pem(private.as_bytes())
    }
    .expect("encoding key");
    (key, pair.public_key_pem())
}

fn authenticator(key: JwtKey) -> JwtAuthenticator {
    JwtAuthenticator::new(JwtConfig::new(key)).expect("authenticator")
}

fn hs_authenticator() -> JwtAuthenticator {
    authenticator(JwtKey::Secret(SECRET.to_vec()))
}

fn configured(edit: impl FnOnce(&mut JwtConfig)) -> JwtAuthenticator {
    let mut config = JwtConfig::new(JwtKey::Secret(SECRET.to_vec()));
    edit(&mut config);
    JwtAuthenticator::new(config).expect("authenticator")
}

fn handshake(headers: &[(&str, &str)], uri: &str) -> Handshake {
    let mut map = http::HeaderMap::new();
    for (name, value) in headers {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    Handshake {
        transport: TransportKind::WebSocket,
        tls: false,
        remote_addr: "127.0.0.1:1".parse().expect("addr"),
        headers: map,
        uri: Some(uri.parse().expect("uri")),
    }
}

fn request(connect: &[(&str, &str)], handshake: Handshake) -> ConnectRequest {
    let mut headers = Headers::new();
    for (name, value) in connect {
        headers.push_str(name, value);
    }
    ConnectRequest::new("s1", headers, handshake)
}

/// `token` as the CONNECT passcode.
fn in_passcode(token: &str) -> ConnectRequest {
    request(
        &[("login", "ignored"), ("passcode", token)],
        handshake(&[], "/ws"),
    )
}

async fn check(
    authenticator: &JwtAuthenticator,
    token: &str,
) -> Result<Option<Identity>, AuthError> {
    authenticator.authenticate(&in_passcode(token)).await
}

async fn name_of(authenticator: &JwtAuthenticator, token: &str) -> String {
    check(authenticator, token)
        .await
        .expect("accepted")
        .expect("an identity")
        .name
}

fn refused(reason: &str) -> Result<Option<Identity>, AuthError> {
    Err(AuthError::InvalidToken(reason.into()))
}

/// A JWK of the public `key`, with `kid`.
fn jwk(key: &DecodingKey, alg: Algorithm, kid: Option<&str>) -> Value {
    let mut jwk = Jwk::from_decoding_key(key, Some(alg)).expect("jwk");
    jwk.common.key_id = kid.map(String::from);
    serde_json::to_value(jwk).expect("json")
}

fn jwks(keys: &[Value]) -> JwtKey {
    JwtKey::Jwks(json!({ "keys": keys }).to_string())
}

fn new_error(key: JwtKey) -> String {
    JwtAuthenticator::new(JwtConfig::new(key)).expect_err("refused")
}

#[tokio::test]
async fn hs256_token_gives_name_roles_and_expiry() {
    let exp = now() + 600;
    let token = hs_token(&json!({"sub": "alice", "exp": exp, "roles": ["admin", "ops"]}));
    let identity = check(&hs_authenticator(), &token)
        .await
        .expect("accepted")
        .expect("identity");
    assert_eq!(
        identity,
        Identity::new("alice")
            .with_roles(["admin", "ops"])
            .expiring_at(UNIX_EPOCH + Duration::from_secs(exp) + Duration::from_secs(30))
    );
}

#[tokio::test]
async fn rs256_with_spki_or_pkcs1_pem() {
    let token = sign(Algorithm::RS256, &rsa_key(), None, &claims());
    for pem in [RSA_PUBLIC, RSA_PUBLIC_PKCS1] {
        let auth = authenticator(JwtKey::PublicKeyPem(pem.to_vec()));
        assert_eq!(name_of(&auth, &token).await, "alice");
    }
}

#[tokio::test]
async fn es256_and_eddsa_with_pem() {
    for (rcgen_alg, alg) in [
        (&rcgen::PKCS_ECDSA_P256_SHA256, Algorithm::ES256),
        (&rcgen::PKCS_ED25519, Algorithm::EdDSA),
    ] {
        let (key, public) = generated(rcgen_alg);
        let auth = authenticator(JwtKey::PublicKeyPem(public.into_bytes()));
        let token = sign(alg, &key, None, &claims());
        assert_eq!(name_of(&auth, &token).await, "alice");
        // Signed by another key of the same kind.
        let (other, _) = generated(rcgen_alg);
        let forged = sign(alg, &other, None, &claims());
        assert_eq!(
            check(&auth, &forged).await,
            refused("signature does not verify")
        );
    }
}

#[tokio::test]
async fn jwks_picks_the_key_by_kid() {
    let (ec, ec_public) = generated(&rcgen::PKCS_ECDSA_P256_SHA256);
    let (ed, ed_public) = generated(&rcgen::PKCS_ED25519);
    let rsa_public = DecodingKey::from_rsa_pem(RSA_PUBLIC).expect("rsa");
    let ec_public = DecodingKey::from_ec_pem(ec_public.as_bytes()).expect("ec");
    let ed_public = DecodingKey::from_ed_pem(ed_public.as_bytes()).expect("ed");
    let auth = authenticator(jwks(&[
        jwk(&rsa_public, Algorithm::RS256, Some("r")),
        jwk(&ec_public, Algorithm::ES256, Some("e")),
        jwk(&ed_public, Algorithm::EdDSA, Some("d")),
    ]));
    let rsa = rsa_key();
    for (alg, key, kid) in [
        (Algorithm::RS256, &rsa, "r"),
        (Algorithm::ES256, &ec, "e"),
        (Algorithm::EdDSA, &ed, "d"),
    ] {
        let token = sign(alg, key, Some(kid), &claims());
        assert_eq!(name_of(&auth, &token).await, "alice", "{kid}");
    }
    // The right key type under the wrong kid: that key pins another alg.
    let token = sign(Algorithm::ES256, &ec, Some("r"), &claims());
    assert_eq!(
        check(&auth, &token).await,
        refused("algorithm ES256 not accepted")
    );
    let token = sign(Algorithm::ES256, &ec, Some("nope"), &claims());
    assert_eq!(check(&auth, &token).await, refused("unknown key id"));
    let token = sign(Algorithm::ES256, &ec, None, &claims());
    assert_eq!(
        check(&auth, &token).await,
        refused("the token has no key id (kid)")
    );
}

#[tokio::test]
async fn a_single_key_jwks_needs_no_kid() {
    let rsa_public = DecodingKey::from_rsa_pem(RSA_PUBLIC).expect("rsa");
    let token = sign(Algorithm::RS256, &rsa_key(), None, &claims());
    let without_kid = authenticator(jwks(&[jwk(&rsa_public, Algorithm::RS256, None)]));
    assert_eq!(name_of(&without_kid, &token).await, "alice");
    let with_kid = authenticator(jwks(&[jwk(&rsa_public, Algorithm::RS256, Some("k1"))]));
    assert_eq!(name_of(&with_kid, &token).await, "alice");
    let wrong_kid = sign(Algorithm::RS256, &rsa_key(), Some("k2"), &claims());
    assert_eq!(
        check(&with_kid, &wrong_kid).await,
        refused("unknown key id")
    );
}

#[tokio::test]
async fn each_carrier_is_read_in_order() {
    let token = |name: &str| hs_token(&json!({"sub": name, "exp": now() + 600}));
    let (pass, connect, upgrade, query, cookie) = (
        token("passcode"),
        token("connect"),
        token("handshake"),
        token("query"),
        token("cookie"),
    );
    let auth = configured(|c| c.cookie = Some("jwt".into()));
    let connect_auth = format!("Bearer {connect}");
    let upgrade_auth = format!("Bearer {upgrade}");
    let cookie_header = format!("other=1; jwt={cookie}");
    let uri = format!("/ws?access_token={query}");
    let all_connect = [
        ("passcode", pass.as_str()),
        ("Authorization", connect_auth.as_str()),
    ];
    let all_handshake = [
        ("authorization", upgrade_auth.as_str()),
        ("cookie", cookie_header.as_str()),
    ];
    // Drop the carriers one at a time, first to last.
    type Pairs<'a> = &'a [(&'a str, &'a str)];
    // (CONNECT headers, handshake headers, handshake URI, whose token wins)
    let cases: [(Pairs, Pairs, &str, &str); 5] = [
        (&all_connect, &all_handshake, &uri, "passcode"),
        (&all_connect[1..], &all_handshake, &uri, "connect"),
        (&[], &all_handshake, &uri, "handshake"),
        (&[], &all_handshake[1..], &uri, "query"),
        (&[], &all_handshake[1..], "/ws", "cookie"),
    ];
    for (connect, upgrade, uri, expected) in cases {
        let identity = auth
            .authenticate(&request(connect, handshake(upgrade, uri)))
            .await
            .expect("accepted")
            .expect("identity");
        assert_eq!(identity.name, expected);
    }
    let nothing = request(&[], handshake(&all_handshake[1..], "/ws"));
    assert_eq!(hs_authenticator().authenticate(&nothing).await, Ok(None));
}

#[tokio::test]
async fn values_that_are_not_jwts_are_left_to_other_methods() {
    let auth = hs_authenticator();
    let passwords = [
        "hunter2",
        "correct.horse.battery",
        "a.b",
        "a.b.c.d",
        "a..c",
        "a.b.c d",
        "x.y.z=",
        "",
    ];
    for password in passwords {
        assert_eq!(check(&auth, password).await, Ok(None), "{password:?}");
    }
    let opaque = request(
        &[("Authorization", "Bearer opaque-token")],
        handshake(&[("authorization", "Basic dXNlcjpwdw==")], "/ws?x=1"),
    );
    assert_eq!(auth.authenticate(&opaque).await, Ok(None));
    let empty = request(
        &[],
        Handshake::tcp("127.0.0.1:1".parse().expect("addr"), false),
    );
    assert_eq!(auth.authenticate(&empty).await, Ok(None));
    // A password in the passcode does not hide a token further on.
    let token = hs_token(&claims());
    let both = request(
        &[("login", "bob"), ("passcode", "correct.horse.battery")],
        handshake(&[], &format!("/ws?access_token={token}")),
    );
    let identity = auth.authenticate(&both).await.expect("ok").expect("id");
    assert_eq!(identity.name, "alice");
}

#[tokio::test]
async fn expiry_and_not_before_allow_the_leeway() {
    let auth = hs_authenticator();
    let at = |exp: u64, nbf: u64| hs_token(&json!({"sub": "alice", "exp": exp, "nbf": nbf}));
    let now = now();
    assert_eq!(
        check(&auth, &at(now - 120, now - 600)).await,
        Err(AuthError::TokenExpired)
    );
    assert_eq!(name_of(&auth, &at(now - 5, now - 600)).await, "alice");
    assert_eq!(
        check(&auth, &at(now + 900, now + 600)).await,
        Err(AuthError::TokenNotYetValid)
    );
    assert_eq!(name_of(&auth, &at(now + 900, now + 5)).await, "alice");
    let strict = configured(|c| c.leeway = Duration::ZERO);
    assert_eq!(
        check(&strict, &at(now - 5, now - 600)).await,
        Err(AuthError::TokenExpired)
    );
}

#[tokio::test]
async fn exp_is_required_and_dates_must_be_numbers() {
    let auth = hs_authenticator();
    let no_exp = hs_token(&json!({"sub": "alice"}));
    assert_eq!(
        check(&auth, &no_exp).await,
        refused("the token has no exp claim")
    );
    for claims in [
        json!({"sub": "alice", "exp": "tomorrow"}),
        json!({"sub": "alice", "exp": -1}),
        json!({"sub": "alice", "exp": now() + 600, "nbf": "now"}),
    ] {
        assert_eq!(
            check(&auth, &hs_token(&claims)).await,
            refused("malformed token")
        );
    }
    let fractional = hs_token(&json!({"sub": "alice", "exp": now() as f64 + 600.5}));
    assert_eq!(name_of(&auth, &fractional).await, "alice");
}

#[tokio::test]
async fn issuer_and_audience_are_checked_when_configured() {
    let auth = configured(|c| {
        c.issuer = Some("https://idp.example".into());
        c.audience = Some("stompbox".into());
    });
    let with = |extra: Value| {
        let mut claims = claims();
        for (name, value) in extra.as_object().expect("object") {
            claims[name] = value.clone();
        }
        hs_token(&claims)
    };
    let iss = "https://idp.example";
    for good in [
        json!({"iss": iss, "aud": "stompbox"}),
        json!({"iss": iss, "aud": ["other", "stompbox"]}),
    ] {
        assert_eq!(name_of(&auth, &with(good)).await, "alice");
    }
    for (claims, reason) in [
        (json!({"iss": iss, "aud": "other"}), "wrong audience"),
        (json!({"iss": iss, "aud": ["a", "b"]}), "wrong audience"),
        (json!({"iss": iss}), "wrong audience"),
        (
            json!({"iss": "https://evil.example", "aud": "stompbox"}),
            "wrong issuer",
        ),
        (json!({"iss": [iss], "aud": "stompbox"}), "wrong issuer"),
        (json!({"aud": "stompbox"}), "wrong issuer"),
    ] {
        assert_eq!(check(&auth, &with(claims)).await, refused(reason));
    }
    // Without an audience configured, the token's is not looked at.
    let open = hs_authenticator();
    assert_eq!(
        name_of(&open, &with(json!({"aud": "anyone", "iss": "x"}))).await,
        "alice"
    );
}

#[tokio::test]
async fn a_wrong_signature_is_refused() {
    let other = EncodingKey::from_secret(b"another secret").expect("secret");
    let token = sign(Algorithm::HS256, &other, None, &claims());
    assert_eq!(
        check(&hs_authenticator(), &token).await,
        refused("signature does not verify")
    );
    // A valid token whose payload was swapped.
    let good = hs_token(&claims());
    let evil = hs_token(&json!({"sub": "root", "exp": now() + 600}));
    let parts: Vec<&str> = good.split('.').collect();
    let evil_payload = evil.split('.').nth(1).expect("payload");
    let spliced = format!("{}.{}.{}", parts[0], evil_payload, parts[2]);
    assert_eq!(
        check(&hs_authenticator(), &spliced).await,
        refused("signature does not verify")
    );
}

#[tokio::test]
async fn unsigned_tokens_are_refused() {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = URL_SAFE_NO_PAD.encode(claims().to_string());
    let rsa = authenticator(JwtKey::PublicKeyPem(RSA_PUBLIC.to_vec()));
    for auth in [&hs_authenticator(), &rsa] {
        let with_signature = format!("{header}.{payload}.c2ln");
        assert_eq!(
            check(auth, &with_signature).await,
            refused("algorithm none not accepted")
        );
        // Without a signature it is not even taken for a token.
        let bare = format!("{header}.{payload}.");
        assert_eq!(check(auth, &bare).await, Ok(None));
    }
}

#[tokio::test]
async fn an_hmac_keyed_with_the_rsa_public_key_is_refused() {
    let confused = EncodingKey::from_secret(RSA_PUBLIC).expect("secret");
    let token = sign(Algorithm::HS256, &confused, None, &claims());
    let rsa = authenticator(JwtKey::PublicKeyPem(RSA_PUBLIC.to_vec()));
    assert_eq!(
        check(&rsa, &token).await,
        refused("algorithm HS256 not accepted")
    );
    // And the other way round: a secret accepts no RS256 token.
    let rs = sign(Algorithm::RS256, &rsa_key(), None, &claims());
    assert_eq!(
        check(&hs_authenticator(), &rs).await,
        refused("algorithm RS256 not accepted")
    );
}

#[tokio::test]
async fn the_user_claim_must_be_a_usable_name() {
    let auth = hs_authenticator();
    for sub in [
        Value::Null,
        json!(""),
        json!(42),
        json!("ali\nce"),
        json!("x".repeat(257)),
    ] {
        let token = hs_token(&json!({"sub": sub, "exp": now() + 600}));
        assert_eq!(
            check(&auth, &token).await,
            refused("no usable 'sub' claim"),
            "{sub}"
        );
    }
    let missing = hs_token(&json!({"exp": now() + 600}));
    assert_eq!(
        check(&auth, &missing).await,
        refused("no usable 'sub' claim")
    );
    let longest = "é".repeat(128);
    let token = hs_token(&json!({"sub": longest, "exp": now() + 600}));
    assert_eq!(name_of(&auth, &token).await, longest);

    let custom = configured(|c| c.user_claim = "preferred_username".into());
    let token =
        hs_token(&json!({"sub": "id-1", "preferred_username": "carol", "exp": now() + 600}));
    assert_eq!(name_of(&custom, &token).await, "carol");
    assert_eq!(
        check(&custom, &hs_token(&claims())).await,
        refused("no usable 'preferred_username' claim")
    );
}

async fn roles_of(auth: &JwtAuthenticator, extra: Value) -> Result<Vec<String>, AuthError> {
    let mut claims = claims();
    for (name, value) in extra.as_object().expect("object") {
        claims[name] = value.clone();
    }
    check(auth, &hs_token(&claims))
        .await
        .map(|identity| identity.expect("identity").roles)
}

#[tokio::test]
async fn roles_come_as_an_array_a_string_or_a_path() {
    let auth = hs_authenticator();
    assert_eq!(roles_of(&auth, json!({})).await, Ok(vec![]));
    assert_eq!(
        roles_of(&auth, json!({"roles": ["a", "b"]})).await,
        Ok(vec!["a".into(), "b".into()])
    );
    assert_eq!(
        roles_of(&auth, json!({"roles": " read  write\tadmin "})).await,
        Ok(vec!["read".into(), "write".into(), "admin".into()])
    );
    for bad in [json!({"roles": 7}), json!({"roles": ["a", 1]})] {
        assert_eq!(
            roles_of(&auth, bad).await,
            Err(AuthError::InvalidToken("unusable 'roles' claim".into()))
        );
    }

    let keycloak = configured(|c| c.roles_claim = "realm_access.roles".into());
    assert_eq!(
        roles_of(&keycloak, json!({"realm_access": {"roles": ["user"]}})).await,
        Ok(vec!["user".into()])
    );
    assert_eq!(
        roles_of(&keycloak, json!({"realm_access": {"other": 1}})).await,
        Ok(vec![])
    );
    let scope = configured(|c| c.roles_claim = "scope".into());
    assert_eq!(
        roles_of(&scope, json!({"scope": "openid send:chat"})).await,
        Ok(vec!["openid".into(), "send:chat".into()])
    );
    let namespaced = configured(|c| c.roles_claim = "https://example.com/roles".into());
    assert_eq!(
        roles_of(&namespaced, json!({"https://example.com/roles": ["x"]})).await,
        Ok(vec!["x".into()])
    );
}

#[tokio::test]
async fn roles_are_bounded() {
    let auth = hs_authenticator();
    let names = |n: usize| (0..n).map(|i| format!("r{i}")).collect::<Vec<_>>();
    assert_eq!(
        roles_of(&auth, json!({"roles": names(64)})).await,
        Ok(names(64))
    );
    let too_many = Err(AuthError::InvalidToken(
        "more than 64 roles in 'roles'".into(),
    ));
    assert_eq!(roles_of(&auth, json!({"roles": names(65)})).await, too_many);
    assert_eq!(
        roles_of(&auth, json!({"roles": names(65).join(" ")})).await,
        too_many
    );
    assert_eq!(
        roles_of(&auth, json!({"roles": ["x".repeat(257)]})).await,
        Err(AuthError::InvalidToken(
            "a role in 'roles' is longer than 256 bytes".into()
        ))
    );
}

#[tokio::test]
async fn oversized_and_malformed_tokens_are_refused() {
    let auth = hs_authenticator();
    let big = hs_token(&json!({"sub": "alice", "exp": now() + 600, "pad": "x".repeat(8200)}));
    assert!(big.len() > MAX_TOKEN_BYTES);
    assert_eq!(check(&auth, &big).await, refused("token too long"));
    let b64 = |text: &str| URL_SAFE_NO_PAD.encode(text);
    let payload = b64(&claims().to_string());
    for token in [
        format!("{}.{payload}.c2ln", b64(r#"{"typ":"JWT"}"#)),
        format!("{}.{payload}.c2ln", b64(r#"{"alg":5}"#)),
        format!("{}.{payload}.c2ln", b64(r#"{"alg":"HS256","kid":5}"#)),
        // Well signed, but the claims are not an object.
        hs_token(&json!([1])),
    ] {
        assert_eq!(check(&auth, &token).await, refused("malformed token"));
    }
    let odd_alg = format!("{}.{payload}.c2ln", b64(r#"{"alg":"HS256\n; x"}"#));
    assert_eq!(
        check(&auth, &odd_alg).await,
        refused("algorithm not accepted")
    );
}

#[test]
fn new_refuses_unusable_keys() {
    assert!(new_error(JwtKey::Secret(Vec::new())).contains("secret is empty"));

    let private = new_error(JwtKey::PublicKeyPem(RSA_PRIVATE.to_vec()));
    assert!(private.contains("a public key is needed"), "{private}");
    let ec_private = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
        .expect("generate")
        .serialize_pem();
    let private = new_error(JwtKey::PublicKeyPem(ec_private.into_bytes()));
    assert!(private.contains("a public key is needed"), "{private}");

    let garbage = new_error(JwtKey::PublicKeyPem(b"not a key".to_vec()));
    assert!(garbage.contains("not a PEM public key"), "{garbage}");
    let broken = b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n";
    let broken = new_error(JwtKey::PublicKeyPem(broken.to_vec()));
    assert!(
        broken.contains("not a valid SubjectPublicKeyInfo"),
        "{broken}"
    );
    let p384 = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P384_SHA384)
        .expect("generate")
        .public_key_pem();
    let p384 = new_error(JwtKey::PublicKeyPem(p384.into_bytes()));
    assert!(p384.contains("other than P-256"), "{p384}");

    assert!(new_error(JwtKey::Jwks(r#"{"keys":[]}"#.into())).contains("no keys"));
    assert!(new_error(JwtKey::Jwks("{".into())).contains("not JSON"));
    assert!(new_error(JwtKey::Jwks("{}".into())).contains("no \"keys\" array"));
}

#[test]
fn new_refuses_unusable_jwks() {
    let rsa = DecodingKey::from_rsa_pem(RSA_PUBLIC).expect("rsa");
    let rsa_jwk = |kid: Option<&str>| jwk(&rsa, Algorithm::RS256, kid);
    let with = |mut jwk: Value, field: &str, value: Value| {
        jwk[field] = value;
        jwk
    };
    let cases = [
        (
            vec![json!({"kty": "oct", "k": "c2VjcmV0"})],
            "symmetric key",
        ),
        (
            vec![json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"})],
            "curve other than P-256",
        ),
        (
            vec![json!({"kty": "RSA", "n": "AQAB"})],
            "missing or malformed",
        ),
        (vec![json!({"kty": "AKP", "x": "AA"})], "key type \"AKP\""),
        (
            vec![with(rsa_jwk(None), "alg", json!("RS512"))],
            "alg \"RS512\"",
        ),
        (
            vec![with(rsa_jwk(None), "alg", json!("RSA-OAEP"))],
            "alg \"RSA-OAEP\"",
        ),
        (
            vec![with(rsa_jwk(None), "use", json!("enc"))],
            "not for signatures",
        ),
        (
            vec![with(rsa_jwk(None), "key_ops", json!(["encrypt"]))],
            "not for verifying",
        ),
        (vec![rsa_jwk(Some("a")), rsa_jwk(Some("a"))], "two keys"),
        (vec![rsa_jwk(Some("a")), rsa_jwk(None)], "no kid"),
        // Too short for Ed25519 (jsonwebtoken would panic on it).
        (
            vec![json!({"kty": "OKP", "crv": "Ed25519", "x": "AAAA"})],
            "32 bytes",
        ),
        // Not a point of P-256.
        (
            vec![json!({"kty": "EC", "crv": "P-256", "x": "AQ", "y": "AQ"})],
            "not a valid ES256 key",
        ),
    ];
    for (keys, expected) in cases {
        let error = new_error(jwks(&keys));
        assert!(error.contains(expected), "{error} (wanted {expected:?})");
    }
    // A matching alg and "use": "sig" are fine.
    let fine = with(
        with(rsa_jwk(Some("a")), "alg", json!("RS256")),
        "use",
        json!("sig"),
    );
    assert!(JwtAuthenticator::new(JwtConfig::new(jwks(&[fine]))).is_ok());
}

#[test]
fn what_is_taken_for_a_jwt() {
    assert!(is_jwt_shaped("a.b.c"));
    assert!(is_jwt_shaped("eyJ-_09.AZaz.x"));
    for value in [
        "", "a", "a.b", "a.b.", ".b.c", "a.b.c.d", "a.b.c=", "a+b.c.d", "a.b.c ",
    ] {
        assert!(!is_jwt_shaped(value), "{value:?}");
    }
    // Shaped, but the header is no JSON object: a password.
    assert!(!looks_like_jwt("abc.def.ghi"));
    assert!(!looks_like_jwt(&format!(
        "{}.e30.x",
        URL_SAFE_NO_PAD.encode("[1]")
    )));
    assert!(looks_like_jwt(&format!(
        "{}.x.x",
        URL_SAFE_NO_PAD.encode("{}")
    )));
    assert!(looks_like_jwt(&hs_token(&claims())));
    // Too long to be looked into: taken as a token, to be refused.
    assert!(looks_like_jwt(&format!(
        "a.{}.c",
        "b".repeat(MAX_TOKEN_BYTES)
    )));
}
