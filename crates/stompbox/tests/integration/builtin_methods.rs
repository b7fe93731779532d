//! The built-in authentication methods, configured through `ServerConfig`
//! as an operator would, over real connections: JWT in each carrier and
//! each refusal, password users, and an HTTP authentication service that is
//! up, refusing, down or slow.

use crate::support::*;
use argon2::password_hash::{PasswordHasher, SaltString};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use stompbox::ServerConfig;
use stompbox::auth::{HttpAuthConfig, JwtConfig, JwtKey, PasswordConfig, PasswordUser};
use stompbox::client::{Client, ClientOptions};
use stompbox::codec::{Command, Frame};

const SECRET: &[u8] = b"an hs256 secret for the integration suite";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn token(claims: &Value, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret).expect("key"),
    )
    .expect("encode")
}

fn valid(sub: &str) -> String {
    token(
        &json!({"sub": sub, "exp": now() + 600, "iss": "https://id.example", "aud": "chat", "roles": ["reader"]}),
        SECRET,
    )
}

fn jwt(c: &mut ServerConfig) {
    let mut jwt = JwtConfig::new(JwtKey::Secret(SECRET.to_vec()));
    jwt.issuer = Some("https://id.example".into());
    jwt.audience = Some("chat".into());
    jwt.cookie = Some("id_token".into());
    jwt.leeway = Duration::ZERO;
    c.auth.jwt = Some(jwt);
    c.auth.failure_delay = Duration::ZERO;
}

/// An app whose `/app/whoami` answers this session with its user and roles.
fn whoami_app() -> stompbox::app::App {
    stompbox::app::App::new().message("/whoami", |user: stompbox::app::User| async move {
        stompbox::app::SendToUser::new(format!(
            "{} {} {:?}",
            user.name(),
            user.is_authenticated(),
            user.roles()
        ))
        .at("/queue/whoami")
        .only_this_session()
    })
}

async fn whoami(client: &mut Client) -> String {
    subscribe(client, "w", "/user/queue/whoami", "auto").await;
    client
        .send(&Frame::new(Command::Send).header("destination", "/app/whoami"))
        .await
        .expect("send");
    body(&next_message(client).await).to_owned()
}

async fn connect_refused(url: &str, options: &ClientOptions, headers: &[(&str, &str)]) -> String {
    match Client::connect_with(url, options, headers).await {
        Err(stompbox::client::ClientError::Server(message)) => message,
        Ok(_) => panic!("CONNECT was accepted"),
        Err(e) => panic!("expected an ERROR, got {e}"),
    }
}

/// Where a token travels: the URL, the handshake, the CONNECT headers.
type Carrier<'a> = (String, ClientOptions, Vec<(&'a str, &'a str)>);

#[tokio::test]
async fn a_jwt_is_accepted_from_every_carrier() {
    let server = spawn_app(whoami_app(), jwt).await;
    let token = valid("alice");
    let bearer = format!("Bearer {token}");
    let plain = ClientOptions::stomp();
    let cases: Vec<Carrier> = vec![
        (
            server.ws.clone(),
            plain.clone(),
            vec![("passcode", token.as_str())],
        ),
        (
            server.tcp.clone(),
            plain.clone(),
            vec![("login", "ignored"), ("passcode", token.as_str())],
        ),
        (
            server.ws.clone(),
            plain.clone(),
            vec![("Authorization", bearer.as_str())],
        ),
        (
            server.ws.clone(),
            ClientOptions::stomp().header("Authorization", &bearer),
            vec![],
        ),
        (
            format!("{}?access_token={token}", server.ws),
            plain.clone(),
            vec![],
        ),
        (
            server.ws.clone(),
            ClientOptions::stomp().header("Cookie", &format!("theme=x; id_token={token}")),
            vec![],
        ),
    ];
    for (i, (url, options, headers)) in cases.iter().enumerate() {
        let (mut client, _) = Client::connect_with(url, options, headers)
            .await
            .unwrap_or_else(|e| panic!("carrier {i}: {e}"));
        assert_eq!(
            whoami(&mut client).await,
            r#"alice true ["reader"]"#,
            "carrier {i}"
        );
    }
}

#[tokio::test]
async fn invalid_jwts_are_refused_with_the_reason() {
    let server = spawn_server(jwt).await;
    let options = ClientOptions::stomp();
    let base = json!({"sub": "alice", "iss": "https://id.example", "aud": "chat"});
    let with = |extra: Value| {
        let mut claims = base.clone();
        if let (Some(claims), Some(extra)) = (claims.as_object_mut(), extra.as_object()) {
            for (k, v) in extra {
                claims.insert(k.clone(), v.clone());
            }
        }
        claims
    };
    let cases = [
        (
            token(&with(json!({"exp": now() - 60})), SECRET),
            "access refused: the token has expired",
        ),
        (
            token(
                &with(json!({"exp": now() + 600, "nbf": now() + 300})),
                SECRET,
            ),
            "access refused: the token is not valid yet",
        ),
        (
            token(&with(json!({"exp": now() + 600, "aud": "billing"})), SECRET),
            "access refused: invalid token: wrong audience",
        ),
        (
            token(
                &with(json!({"exp": now() + 600, "iss": "https://evil.example"})),
                SECRET,
            ),
            "access refused: invalid token: wrong issuer",
        ),
        (
            token(
                &with(json!({"exp": now() + 600})),
                b"another secret, not the server's one",
            ),
            "access refused: invalid token: signature does not verify",
        ),
    ];
    for (token, expected) in cases {
        for url in [&server.ws, &server.tcp] {
            let message = connect_refused(url, &options, &[("passcode", &token)]).await;
            assert_eq!(message, expected);
        }
    }
}

#[tokio::test]
async fn a_session_ends_when_its_token_expires() {
    let server = spawn_server(jwt).await;
    let short = token(
        &json!({"sub": "alice", "exp": now() + 2, "iss": "https://id.example", "aud": "chat"}),
        SECRET,
    );
    let (mut client, _) = Client::connect(&server.ws, &[("passcode", &short)])
        .await
        .expect("connect");
    let error = expect_error_and_close(&mut client).await;
    assert_eq!(
        error.headers.get("message"),
        Some("access refused: the session's credentials expired; reconnect with fresh ones")
    );
}

/// A hash with cheap parameters: the defaults take seconds in a debug build.
fn cheap_hash(password: &str) -> String {
    let params = argon2::Params::new(256, 1, 1, None).expect("params");
    let salt = SaltString::encode_b64(b"integration-salt").expect("salt");
    argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params)
        .hash_password(password.as_bytes(), &salt)
        .expect("hash")
        .to_string()
}

#[tokio::test]
async fn password_users_log_in_and_wrong_or_unknown_ones_are_refused() {
    let users = vec![
        PasswordUser::new("alice", cheap_hash("correct horse")).with_roles(["admin"]),
        PasswordUser::new("bob", cheap_hash("battery staple")),
    ];
    let server = spawn_app(whoami_app(), |c| {
        c.auth.passwords = Some(PasswordConfig::new(users));
        c.auth.failure_delay = Duration::ZERO;
    })
    .await;
    for via in BOTH {
        let (mut alice, _) = Client::connect(
            server.url(via),
            &[("login", "alice"), ("passcode", "correct horse")],
        )
        .await
        .expect("alice");
        assert_eq!(whoami(&mut alice).await, r#"alice true ["admin"]"#);
        // A reconnect (served from the verification cache) works the same.
        let (mut again, _) = Client::connect(
            server.url(via),
            &[("login", "alice"), ("passcode", "correct horse")],
        )
        .await
        .expect("alice again");
        assert_eq!(whoami(&mut again).await, r#"alice true ["admin"]"#);
        for (login, passcode) in [
            ("alice", "battery staple"),
            ("mallory", "correct horse"),
            ("bob", ""),
        ] {
            let message = connect_refused(
                server.url(via),
                &ClientOptions::stomp(),
                &[("login", login), ("passcode", passcode)],
            )
            .await;
            assert_eq!(
                message, "access refused: wrong login or passcode",
                "{login}"
            );
        }
        let message = connect_refused(server.url(via), &ClientOptions::stomp(), &[]).await;
        assert!(
            message.starts_with("access refused: authentication required"),
            "{message}"
        );
    }
}

/// A small authentication service: alice/secret is alice with role
/// `staff`, the passcode `slow` answers after `slow` has passed; counts
/// requests.
async fn auth_service(slow: Duration) -> (String, Arc<AtomicUsize>) {
    use axum::Json;
    use axum::http::StatusCode;
    let requests = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&requests);
    let app = axum::Router::new().route(
        "/auth",
        axum::routing::post(move |Json(request): Json<Value>| {
            let counter = Arc::clone(&counter);
            async move {
                counter.fetch_add(1, Ordering::SeqCst);
                let login = request["login"].as_str().unwrap_or_default().to_owned();
                let passcode = request["passcode"].as_str().unwrap_or_default().to_owned();
                let cookie = request["cookies"]["sid"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                if passcode == "slow" {
                    tokio::time::sleep(slow).await;
                }
                match (login.as_str(), passcode.as_str(), cookie.as_str()) {
                    ("alice", "secret", _) => (
                        StatusCode::OK,
                        Json(json!({"user": "alice", "roles": ["staff"]})),
                    ),
                    (_, _, "valid-session") => (StatusCode::OK, Json(json!({"user": "carol"}))),
                    ("", "", _) => (StatusCode::OK, Json(json!({"user": null}))),
                    ("banned", _, _) => (
                        StatusCode::FORBIDDEN,
                        Json(json!({"reason": "this account is suspended"})),
                    ),
                    _ => (StatusCode::UNAUTHORIZED, Json(json!({}))),
                }
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (format!("http://{addr}/auth"), requests)
}

#[tokio::test]
async fn an_http_authentication_service_decides_and_its_answers_are_cached() {
    let (url, requests) = auth_service(Duration::from_secs(5)).await;
    let server = spawn_app(whoami_app(), |c| {
        let mut http = HttpAuthConfig::new(url);
        http.timeout = Duration::from_millis(300);
        c.auth.http = Some(http);
        c.auth.allow_anonymous = true;
        c.auth.failure_delay = Duration::ZERO;
    })
    .await;
    let options = ClientOptions::stomp();
    let (mut alice, _) = Client::connect(&server.ws, &[("login", "alice"), ("passcode", "secret")])
        .await
        .expect("alice");
    assert_eq!(whoami(&mut alice).await, r#"alice true ["staff"]"#);
    let asked = requests.load(Ordering::SeqCst);
    // The same credentials again: answered from the cache.
    Client::connect(&server.ws, &[("login", "alice"), ("passcode", "secret")])
        .await
        .expect("alice again");
    assert_eq!(requests.load(Ordering::SeqCst), asked);
    // The handshake's cookies reach the service.
    let (mut carol, _) = Client::connect_with(
        &server.ws,
        &ClientOptions::stomp().header("Cookie", "sid=valid-session"),
        &[],
    )
    .await
    .expect("carol");
    assert_eq!(whoami(&mut carol).await, r#"carol true []"#);
    // No credentials: the service says anonymous, which is allowed here.
    let (mut guest, _) = Client::connect(&server.tcp, &[]).await.expect("guest");
    assert!(whoami(&mut guest).await.contains(" false "));
    assert_eq!(
        connect_refused(
            &server.ws,
            &options,
            &[("login", "alice"), ("passcode", "wrong")]
        )
        .await,
        "access refused: wrong login or passcode"
    );
    assert_eq!(
        connect_refused(
            &server.ws,
            &options,
            &[("login", "banned"), ("passcode", "x")]
        )
        .await,
        "access refused: this account is suspended"
    );
    // A service slower than the time limit: refused as unavailable.
    assert_eq!(
        connect_refused(
            &server.tcp,
            &options,
            &[("login", "alice"), ("passcode", "slow")]
        )
        .await,
        "access refused: the authentication service is unavailable; try again later"
    );
}

#[tokio::test]
async fn an_http_authentication_service_that_is_down_refuses_logins_but_not_the_server() {
    let gone = {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        listener.local_addr().expect("addr")
    };
    let server = spawn_server(|c| {
        let mut http = HttpAuthConfig::new(format!("http://{gone}/auth"));
        http.timeout = Duration::from_millis(500);
        c.auth.http = Some(http);
        c.auth.failure_delay = Duration::ZERO;
    })
    .await;
    for via in BOTH {
        assert_eq!(
            connect_refused(
                server.url(via),
                &ClientOptions::stomp(),
                &[("login", "alice"), ("passcode", "secret")]
            )
            .await,
            "access refused: the authentication service is unavailable; try again later"
        );
    }
}
