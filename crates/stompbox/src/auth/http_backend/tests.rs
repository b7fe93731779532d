use super::super::TransportKind;
use super::*;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use std::sync::atomic::{AtomicUsize, Ordering};
use stompbox_codec::Headers;
use tokio::net::TcpListener;

type Reply = Box<dyn Fn(&Value) -> (u16, String) + Send + Sync>;

/// A stand-in authentication service.
struct Service {
    hits: AtomicUsize,
    seen: Mutex<Vec<Seen>>,
    arrived: tokio::sync::Notify,
    delay: Duration,
    reply: Reply,
}

/// One request the service received.
struct Seen {
    method: Method,
    content_type: Option<String>,
    body: Value,
}

impl Service {
    fn hits(&self) -> usize {
        self.hits.load(Ordering::SeqCst)
    }

    fn last(&self) -> Seen {
        self.seen.lock().unwrap().pop().expect("a request")
    }
}

async fn serve(
    reply: impl Fn(&Value) -> (u16, String) + Send + Sync + 'static,
) -> (String, Arc<Service>) {
    serve_with(reply, Duration::ZERO, None).await
}

/// Starts a service answering with `reply` after `delay`, over TLS when
/// given an acceptor; returns its URL.
async fn serve_with(
    reply: impl Fn(&Value) -> (u16, String) + Send + Sync + 'static,
    delay: Duration,
    tls: Option<tokio_rustls::TlsAcceptor>,
) -> (String, Arc<Service>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let port = listener.local_addr().expect("addr").port();
    let url = match tls {
        Some(_) => format!("https://localhost:{port}/auth?key=k"),
        None => format!("http://127.0.0.1:{port}/auth?key=k"),
    };
    let service = Arc::new(Service {
        hits: AtomicUsize::new(0),
        seen: Mutex::new(Vec::new()),
        arrived: tokio::sync::Notify::new(),
        delay,
        reply: Box::new(reply),
    });
    let shared = service.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let service = shared.clone();
            let tls = tls.clone();
            tokio::spawn(async move {
                match tls {
                    Some(acceptor) => {
                        if let Ok(stream) = acceptor.accept(stream).await {
                            connection(TokioIo::new(stream), service).await;
                        }
                    }
                    None => connection(TokioIo::new(stream), service).await,
                }
            });
        }
    });
    (url, service)
}

async fn connection<I>(io: I, service: Arc<Service>)
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let handler = service_fn(move |request| handle(service.clone(), request));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(io, handler)
        .await;
}

async fn handle(
    service: Arc<Service>,
    request: Request<Incoming>,
) -> Result<http::Response<String>, std::convert::Infallible> {
    service.hits.fetch_add(1, Ordering::SeqCst);
    let method = request.method().clone();
    let content_type = request
        .headers()
        .get(header::CONTENT_TYPE)
        .map(|v| v.to_str().expect("content-type").to_owned());
    let body = read_limited(request.into_body(), 1 << 20)
        .await
        .expect("request body");
    let body: Value = serde_json::from_slice(&body).expect("request JSON");
    let (status, answer) = (service.reply)(&body);
    service.seen.lock().unwrap().push(Seen {
        method,
        content_type,
        body,
    });
    service.arrived.notify_one();
    tokio::time::sleep(service.delay).await;
    Ok(http::Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "application/json")
        .body(answer)
        .expect("response"))
}

/// Accepts alice/secret, refuses everyone else without a body.
fn alice(body: &Value) -> (u16, String) {
    if body["login"] == "alice" && body["passcode"] == "secret" {
        let answer = json!({"user": "alice", "roles": ["admin", "ops"], "expires_in": 3600});
        (200, answer.to_string())
    } else {
        (401, String::new())
    }
}

fn authenticator(config: HttpAuthConfig) -> HttpAuthenticator {
    HttpAuthenticator::new(config).expect("authenticator")
}

fn tcp_request(login: &str, passcode: &str) -> ConnectRequest {
    let mut headers = Headers::new();
    headers.push_str("login", login);
    headers.push_str("passcode", passcode);
    ConnectRequest::new(
        "s1",
        headers,
        Handshake::tcp("192.0.2.7:5555".parse().expect("addr"), false),
    )
}

fn ws_request(
    connect: &[(&str, &str)],
    handshake: &[(&str, &str)],
    uri: &str,
    remote: &str,
) -> ConnectRequest {
    let mut headers = Headers::new();
    for (name, value) in connect {
        headers.push_str(name, value);
    }
    let mut map = http::HeaderMap::new();
    for (name, value) in handshake {
        map.append(
            http::HeaderName::from_bytes(name.as_bytes()).expect("name"),
            http::HeaderValue::from_str(value).expect("value"),
        );
    }
    ConnectRequest::new(
        "s1",
        headers,
        Handshake {
            transport: TransportKind::WebSocket,
            tls: false,
            remote_addr: remote.parse().expect("addr"),
            headers: map,
            uri: Some(uri.parse().expect("uri")),
        },
    )
}

/// A WebSocket CONNECT as alice, with cookies, headers and a query.
fn alice_over_websocket(passcode: &str, remote: &str, cookie: &str) -> ConnectRequest {
    ws_request(
        &[
            ("accept-version", "1.2"),
            ("host", "/"),
            ("login", "alice"),
            ("passcode", passcode),
            ("x-app", "first"),
            ("x-app", "second"),
        ],
        &[
            ("cookie", cookie),
            ("cookie", "extra=1"),
            ("authorization", "Bearer hs"),
            ("origin", "https://app.example"),
            ("x-multi", "a"),
            ("x-multi", "b"),
        ],
        "/ws?room=a%20b&token=t&room=second",
        remote,
    )
}

fn unavailable_detail(result: Result<Option<Identity>, AuthError>) -> String {
    match result {
        Err(AuthError::Unavailable(detail)) => detail,
        other => panic!("expected Unavailable, got {other:?}"),
    }
}

#[tokio::test]
async fn an_accepted_login_gives_the_user_and_roles() {
    let (url, service) = serve(alice).await;
    let auth = authenticator(HttpAuthConfig::new(url));
    let request = alice_over_websocket("secret", "192.0.2.7:5555", "session=abc; theme=dark");
    let identity = auth
        .authenticate(&request)
        .await
        .expect("accepted")
        .expect("a user");
    assert_eq!(identity.name, "alice");
    assert_eq!(identity.roles, ["admin", "ops"]);
    let expires_at = identity.expires_at.expect("an expiry");
    let now = SystemTime::now();
    assert!(expires_at > now + Duration::from_secs(3500));
    assert!(expires_at <= now + Duration::from_secs(3600));

    let seen = service.last();
    assert_eq!(seen.method, Method::POST);
    assert_eq!(seen.content_type.as_deref(), Some("application/json"));
    assert_eq!(
        seen.body,
        json!({
            "session_id": "s1",
            "login": "alice",
            "passcode": "secret",
            "connect_headers": {
                "accept-version": "1.2",
                "host": "/",
                "login": "alice",
                "x-app": "first",
            },
            "transport": "websocket",
            "tls": false,
            "remote_addr": "192.0.2.7:5555",
            "path": "/ws",
            "query": {"room": "a b", "token": "t"},
            "headers": {
                "authorization": "Bearer hs",
                "cookie": "session=abc; theme=dark; extra=1",
                "origin": "https://app.example",
                "x-multi": "a, b",
            },
            "cookies": {"session": "abc", "theme": "dark", "extra": "1"},
        })
    );

    // Over TCP there is no handshake to pass on.
    let tcp = tcp_request("alice", "secret");
    assert!(auth.authenticate(&tcp).await.expect("accepted").is_some());
    let seen = service.last();
    assert_eq!(seen.body["transport"], "tcp");
    assert_eq!(seen.body["path"], Value::Null);
    assert_eq!(seen.body["headers"], json!({}));
    assert_eq!(seen.body["query"], json!({}));
    assert_eq!(seen.body["cookies"], json!({}));
}

#[tokio::test]
async fn a_refusal_passes_on_its_reason() {
    let long = "x".repeat(300);
    let (url, _service) = serve(move |body| {
        let reason = if body["login"] == "long" {
            long.clone()
        } else {
            "account\u{7}\n locked ".to_owned()
        };
        (403, json!({ "reason": reason }).to_string())
    })
    .await;
    let auth = authenticator(HttpAuthConfig::new(url));
    assert_eq!(
        auth.authenticate(&tcp_request("bob", "pw")).await,
        Err(AuthError::Refused("account locked".into()))
    );
    assert_eq!(
        auth.authenticate(&tcp_request("long", "pw")).await,
        Err(AuthError::Refused("x".repeat(200)))
    );
}

#[tokio::test]
async fn a_refusal_without_a_reason_is_bad_credentials() {
    let (url, service) = serve(|body| {
        let answer = match body["login"].as_str() {
            Some("empty") => json!({"reason": " \u{1} "}).to_string(),
            Some("number") => json!({"reason": 5}).to_string(),
            _ => String::new(),
        };
        (401, answer)
    })
    .await;
    let auth = authenticator(HttpAuthConfig::new(url));
    for login in ["bob", "empty", "number"] {
        assert_eq!(
            auth.authenticate(&tcp_request(login, "pw")).await,
            Err(AuthError::BadCredentials),
            "{login}"
        );
    }
    // Refusals are not remembered.
    assert_eq!(
        auth.authenticate(&tcp_request("bob", "pw")).await,
        Err(AuthError::BadCredentials)
    );
    assert_eq!(service.hits(), 4);
}

#[tokio::test]
async fn a_server_error_is_unavailable() {
    let (url, _service) = serve(|_| (500, "{\"user\": \"alice\"}".into())).await;
    let auth = authenticator(HttpAuthConfig::new(url));
    let error = auth
        .authenticate(&tcp_request("alice", "secret"))
        .await
        .expect_err("refused");
    assert_eq!(error.reason(), "service_unavailable");
    // The client is not told the details.
    assert!(!error.to_string().contains("500"), "{error}");
    let AuthError::Unavailable(detail) = error else {
        panic!("not unavailable")
    };
    assert!(detail.contains("500"), "{detail}");
}

#[tokio::test]
async fn invalid_answers_are_unavailable() {
    let (url, _service) = serve(|body| {
        let answer = match body["login"].as_str().expect("login") {
            "text" => "not json".to_owned(),
            "array" => "[\"alice\"]".to_owned(),
            "number" => json!({"user": 5}).to_string(),
            "empty" => json!({"user": ""}).to_string(),
            "long" => json!({"user": "a".repeat(257)}).to_string(),
            "control" => json!({"user": "ali\nce"}).to_string(),
            "roles" => json!({"user": "alice", "roles": vec!["r"; 65]}).to_string(),
            "role" => json!({"user": "alice", "roles": [1]}).to_string(),
            "expiry" => json!({"user": "alice", "expires_in": -1}).to_string(),
            _ => json!({"user": "a".repeat(256), "roles": vec!["r"; 64]}).to_string(),
        };
        (200, answer)
    })
    .await;
    let auth = authenticator(HttpAuthConfig::new(url));
    for login in [
        "text", "array", "number", "empty", "long", "control", "roles", "role", "expiry",
    ] {
        let result = auth.authenticate(&tcp_request(login, "pw")).await;
        assert!(
            matches!(result, Err(AuthError::Unavailable(_))),
            "{login}: {result:?}"
        );
    }
    // Right at the limits is fine.
    let identity = auth
        .authenticate(&tcp_request("limits", "pw"))
        .await
        .expect("accepted")
        .expect("a user");
    assert_eq!(identity.roles.len(), 64);
}

#[tokio::test]
async fn no_user_is_anonymous() {
    let (url, service) = serve(|body| {
        let answer = match body["login"].as_str() {
            Some("null") => json!({"user": null}),
            _ => json!({"note": "no user"}),
        };
        (200, answer.to_string())
    })
    .await;
    let auth = authenticator(HttpAuthConfig::new(url));
    assert_eq!(auth.authenticate(&tcp_request("null", "")).await, Ok(None));
    assert_eq!(auth.authenticate(&tcp_request("none", "")).await, Ok(None));
    // Not remembered: only users are.
    assert_eq!(auth.authenticate(&tcp_request("none", "")).await, Ok(None));
    assert_eq!(service.hits(), 3);
}

#[tokio::test]
async fn a_slow_service_times_out() {
    let (url, _service) = serve_with(alice, Duration::from_secs(10), None).await;
    let mut config = HttpAuthConfig::new(url);
    config.timeout = Duration::from_millis(200);
    let auth = authenticator(config);
    let started = std::time::Instant::now();
    let detail = unavailable_detail(auth.authenticate(&tcp_request("alice", "secret")).await);
    assert!(started.elapsed() < Duration::from_secs(2), "took too long");
    assert!(detail.contains("within"), "{detail}");
}

#[tokio::test]
async fn a_service_that_is_down_is_unavailable() {
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        listener.local_addr().expect("addr").port()
    };
    let auth = authenticator(HttpAuthConfig::new(format!("http://127.0.0.1:{port}/")));
    let detail = unavailable_detail(auth.authenticate(&tcp_request("alice", "secret")).await);
    assert!(detail.contains("request failed"), "{detail}");
}

#[tokio::test]
async fn an_oversized_answer_is_unavailable() {
    let (url, _service) = serve(|_| {
        let padding = "x".repeat(100 * 1024);
        (
            200,
            json!({"user": "alice", "padding": padding}).to_string(),
        )
    })
    .await;
    let auth = authenticator(HttpAuthConfig::new(url));
    let detail = unavailable_detail(auth.authenticate(&tcp_request("alice", "secret")).await);
    assert!(detail.contains("larger than"), "{detail}");
}

#[tokio::test]
async fn accepted_logins_are_remembered_by_their_credentials() {
    let (url, service) = serve(alice).await;
    let auth = authenticator(HttpAuthConfig::new(url));
    let cookie = "session=abc";
    let request = alice_over_websocket("secret", "192.0.2.7:5555", cookie);
    let first = auth.authenticate(&request).await.expect("accepted");
    assert_eq!(auth.authenticate(&request).await.expect("accepted"), first);
    assert_eq!(service.hits(), 1);
    // A reconnection from another port of the same address.
    let reconnect = alice_over_websocket("secret", "192.0.2.7:6000", cookie);
    assert_eq!(
        auth.authenticate(&reconnect).await.expect("accepted"),
        first
    );
    assert_eq!(service.hits(), 1);

    let wrong = alice_over_websocket("wrong", "192.0.2.7:5555", cookie);
    assert_eq!(
        auth.authenticate(&wrong).await,
        Err(AuthError::BadCredentials)
    );
    assert_eq!(service.hits(), 2);
    let other_address = alice_over_websocket("secret", "192.0.2.8:5555", cookie);
    assert!(auth.authenticate(&other_address).await.is_ok());
    assert_eq!(service.hits(), 3);
    let other_cookie = alice_over_websocket("secret", "192.0.2.7:5555", "session=xyz");
    assert!(auth.authenticate(&other_cookie).await.is_ok());
    assert_eq!(service.hits(), 4);
}

#[tokio::test]
async fn every_field_the_service_sees_is_part_of_the_cache_key() {
    // A service that knows its users by a CONNECT header of its own:
    // a client without that header must not get alice's cached answer.
    let (url, service) = serve(
        |body| match body["connect_headers"]["x-auth-token"].as_str() {
            Some("alice-token") => (200, json!({"user": "alice"}).to_string()),
            _ => (200, json!({"user": null}).to_string()),
        },
    )
    .await;
    let auth = authenticator(HttpAuthConfig::new(url));
    let alice = ws_request(
        &[("x-auth-token", "alice-token")],
        &[("user-agent", "x")],
        "/ws",
        "192.0.2.7:5555",
    );
    let nobody = ws_request(&[], &[("user-agent", "x")], "/ws", "192.0.2.7:5555");
    let other_header = ws_request(
        &[("x-auth-token", "alice-token")],
        &[("user-agent", "x"), ("x-forwarded-user", "bob")],
        "/ws",
        "192.0.2.7:5555",
    );
    assert!(auth.authenticate(&alice).await.expect("ok").is_some());
    assert_eq!(auth.authenticate(&nobody).await.expect("ok"), None);
    assert_eq!(service.hits(), 2);
    assert!(
        auth.authenticate(&other_header)
            .await
            .expect("ok")
            .is_some()
    );
    assert_eq!(service.hits(), 3);
    // Alice again, on new handshakes (fresh WebSocket keys and ports):
    // answered from the cache.
    let again = ws_request(
        &[("x-auth-token", "alice-token")],
        &[("user-agent", "x"), ("sec-websocket-key", "fresh")],
        "/ws",
        "192.0.2.7:6000",
    );
    let again_too = ws_request(
        &[("x-auth-token", "alice-token")],
        &[("user-agent", "x"), ("sec-websocket-key", "other")],
        "/ws",
        "192.0.2.7:6001",
    );
    assert!(auth.authenticate(&again).await.expect("ok").is_some());
    assert!(auth.authenticate(&again_too).await.expect("ok").is_some());
    assert_eq!(service.hits(), 3);
}

#[tokio::test]
async fn a_zero_ttl_turns_the_cache_off() {
    let (url, service) = serve(alice).await;
    let mut config = HttpAuthConfig::new(url);
    config.cache_ttl = Duration::ZERO;
    let auth = authenticator(config);
    let request = tcp_request("alice", "secret");
    for _ in 0..2 {
        assert!(auth.authenticate(&request).await.expect("ok").is_some());
    }
    assert_eq!(service.hits(), 2);
}

#[tokio::test]
async fn remembered_logins_expire_with_the_ttl_or_the_identity() {
    let (url, service) = serve(|body| {
        let answer = match body["login"].as_str() {
            Some("alice") => json!({"user": "alice", "expires_in": 1}),
            _ => json!({"user": "bob"}),
        };
        (200, answer.to_string())
    })
    .await;
    let mut config = HttpAuthConfig::new(url);
    config.cache_ttl = Duration::from_secs(5);
    let auth = authenticator(config);
    let alice = tcp_request("alice", "a");
    let bob = tcp_request("bob", "b");
    for _ in 0..2 {
        auth.authenticate(&alice).await.expect("alice");
        auth.authenticate(&bob).await.expect("bob");
    }
    assert_eq!(service.hits(), 2);

    // The clock is moved only between exchanges, so that no timeout
    // fires while the service is being asked.
    async fn wait(by: Duration) {
        tokio::time::pause();
        tokio::time::advance(by).await;
        tokio::time::resume();
    }
    wait(Duration::from_millis(1500)).await;
    auth.authenticate(&alice).await.expect("alice");
    assert_eq!(service.hits(), 3, "alice's identity expired");
    auth.authenticate(&bob).await.expect("bob");
    assert_eq!(service.hits(), 3, "bob is still remembered");
    wait(Duration::from_secs(4)).await;
    auth.authenticate(&bob).await.expect("bob");
    assert_eq!(service.hits(), 4, "the TTL passed");
}

#[test]
fn a_full_cache_drops_expired_entries_then_the_oldest() {
    let t0 = Instant::now();
    let entry = |inserted: Instant, expires: Instant| Cached {
        identity: Identity::new("u"),
        inserted,
        expires,
    };
    let long = Duration::from_secs(60);
    let mut entries = CacheEntries::new(2);
    entries.insert([1; 32], entry(t0, t0 + long), t0);
    entries.insert([2; 32], entry(t0 + Duration::from_secs(1), t0 + long), t0);
    entries.insert([3; 32], entry(t0 + Duration::from_secs(2), t0 + long), t0);
    assert!(!entries.map.contains_key(&[1; 32]), "the oldest goes");
    assert_eq!(entries.map.len(), 2);

    let mut entries = CacheEntries::new(2);
    entries.insert([1; 32], entry(t0, t0 + long), t0);
    let soon = t0 + Duration::from_secs(3);
    entries.insert([2; 32], entry(t0 + Duration::from_secs(1), soon), t0);
    let later = t0 + Duration::from_secs(5);
    entries.insert([3; 32], entry(later, later + long), later);
    assert!(entries.map.contains_key(&[1; 32]), "the older entry stays");
    assert!(!entries.map.contains_key(&[2; 32]), "the expired one goes");
    assert!(entries.map.contains_key(&[3; 32]));
}

#[tokio::test]
async fn past_max_in_flight_a_login_is_refused_at_once() {
    let (url, service) = serve_with(alice, Duration::from_secs(30), None).await;
    let mut config = HttpAuthConfig::new(url);
    config.max_in_flight = 1;
    config.timeout = Duration::from_secs(30);
    let auth = Arc::new(authenticator(config));
    let first = tokio::spawn({
        let auth = auth.clone();
        async move { auth.authenticate(&tcp_request("alice", "secret")).await }
    });
    service.arrived.notified().await;

    let started = std::time::Instant::now();
    let detail = unavailable_detail(auth.authenticate(&tcp_request("bob", "pw")).await);
    assert!(started.elapsed() < Duration::from_secs(2), "it waited");
    assert_eq!(detail, TOO_MANY_REQUESTS);
    assert_eq!(service.hits(), 1);

    // The permit comes back when the first request ends.
    first.abort();
    let _ = first.await;
    assert_eq!(auth.in_flight.available_permits(), 1);
}

#[test]
fn new_refuses_unusable_settings() {
    let error = |config: HttpAuthConfig| HttpAuthenticator::new(config).expect_err("refused");
    let message = error(HttpAuthConfig::new("ftp://x/auth"));
    assert!(message.contains("http:// or https://"), "{message}");
    let message = error(HttpAuthConfig::new("/auth"));
    assert!(message.contains("http:// or https://"), "{message}");
    for url in ["http:///auth", "http://:80/auth", "https://"] {
        let message = error(HttpAuthConfig::new(url));
        assert!(message.contains(url), "{message}");
        assert!(message.contains("no host"), "{message}");
    }
    let message = error(HttpAuthConfig::new("http://user:pw@auth.example/"));
    assert!(message.contains("user info"), "{message}");

    let dir = std::env::temp_dir();
    let missing = dir.join(format!(
        "stompbox-httpauth-missing-{}.pem",
        std::process::id()
    ));
    let mut config = HttpAuthConfig::new("https://auth.example/");
    config.ca_file = Some(missing.clone());
    let message = error(config);
    assert!(
        message.contains(&missing.display().to_string()),
        "{message}"
    );

    let empty = dir.join(format!(
        "stompbox-httpauth-empty-{}.pem",
        std::process::id()
    ));
    std::fs::write(&empty, "").expect("write");
    let mut config = HttpAuthConfig::new("https://auth.example/");
    config.ca_file = Some(empty.clone());
    let message = error(config);
    let _ = std::fs::remove_file(&empty);
    assert!(message.contains("no certificates"), "{message}");

    // Building needs no runtime (the server may build its chain before
    // starting one).
    HttpAuthenticator::new(HttpAuthConfig::new("https://auth.example/check"))
        .expect("usable settings");

    let mut config = HttpAuthConfig::new("http://auth.example/");
    config.max_in_flight = 0;
    assert!(error(config).contains("max_in_flight"));
    let mut config = HttpAuthConfig::new("http://auth.example/");
    config.timeout = Duration::ZERO;
    assert!(error(config).contains("timeout"));
}

/// A throw-away CA and a certificate for `localhost` it signed; returns
/// the CA's PEM and an acceptor presenting the certificate.
fn pki() -> (String, tokio_rustls::TlsAcceptor) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca =
        rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().expect("key"))
            .expect("ca");
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let key = rustls_pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).expect("key der");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .expect("server config");
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

#[tokio::test]
async fn https_with_a_trusted_ca() {
    let (ca_pem, acceptor) = pki();
    let (url, service) = serve_with(alice, Duration::ZERO, Some(acceptor)).await;
    let ca_file =
        std::env::temp_dir().join(format!("stompbox-httpauth-ca-{}.pem", std::process::id()));
    std::fs::write(&ca_file, ca_pem).expect("write CA");
    let mut config = HttpAuthConfig::new(url.clone());
    config.ca_file = Some(ca_file.clone());
    let built = HttpAuthenticator::new(config);
    let _ = std::fs::remove_file(&ca_file);
    let auth = built.expect("authenticator");
    let identity = auth
        .authenticate(&tcp_request("alice", "secret"))
        .await
        .expect("accepted")
        .expect("a user");
    assert_eq!(identity.name, "alice");
    assert_eq!(service.hits(), 1);

    // With only the public roots, the service is not trusted.
    let untrusting = authenticator(HttpAuthConfig::new(url));
    let detail = unavailable_detail(
        untrusting
            .authenticate(&tcp_request("alice", "secret"))
            .await,
    );
    assert!(detail.contains("certificate"), "{detail}");
    assert_eq!(service.hits(), 1);
}
