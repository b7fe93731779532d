//! The admin API (`/admin/api/…`) and page over real HTTP connections,
//! with real STOMP clients over WebSocket and TCP as the sessions it shows.

use crate::support::*;
use serde_json::Value;
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

const TOKEN: &str = "admin-token-0123456789abcdef";

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

fn basic(login: &str, password: &str) -> String {
    use base64::Engine;
    let encoded = base64::engine::general_purpose::STANDARD.encode(format!("{login}:{password}"));
    format!("Basic {encoded}")
}

/// The headers of a request from another origin, with a JSON content type
/// (and so a length, even when empty), as the admin page's requests are.
fn admin_headers(authorization: Option<&str>) -> Vec<(&str, &str)> {
    let mut headers = vec![("Origin", "http://evil.example")];
    headers.extend(authorization.map(|a| ("Authorization", a)));
    headers.push(("Content-Type", "application/json"));
    headers
}

/// One HTTP/1.1 request on a connection of its own.
async fn call(
    server: &TestServer,
    method: &str,
    path: &str,
    authorization: Option<&str>,
    body: Option<&str>,
) -> HttpAnswer {
    let addr = server.handle.http_addr().expect("http addr");
    let headers = admin_headers(authorization);
    http_request(addr, method, path, &headers, Some(body.unwrap_or_default())).await
}

async fn overview(server: &TestServer, authorization: &str) -> HttpAnswer {
    call(
        server,
        "GET",
        "/admin/api/overview",
        Some(authorization),
        None,
    )
    .await
}

/// A purge with the admin token; `body` names the destination.
async fn purge(server: &TestServer, body: &str) -> HttpAnswer {
    call(
        server,
        "POST",
        "/admin/api/queues/purge",
        Some(&bearer(TOKEN)),
        Some(body),
    )
    .await
}

async fn disconnect(server: &TestServer, id: &str, authorization: Option<&str>) -> HttpAnswer {
    let path = format!("/admin/api/sessions/{id}/disconnect");
    call(server, "POST", &path, authorization, None).await
}

async fn get(server: &TestServer, path: &str, authorization: &str) -> Value {
    let answer = call(server, "GET", path, Some(authorization), None).await;
    assert_eq!(answer.status, 200, "GET {path}: {}", answer.body);
    answer.json()
}

/// An open event stream, read as it comes.
struct Events {
    stream: TcpStream,
    buffer: Vec<u8>,
}

impl Events {
    /// Opens `/admin/api/events`; the status, and the stream when 200.
    async fn open(server: &TestServer, authorization: &str) -> (u16, Option<Events>) {
        let addr = server.handle.http_addr().expect("http addr");
        let mut stream = TcpStream::connect(addr).await.expect("connect");
        stream
            .write_all(
                http_request_text(
                    "GET",
                    "/admin/api/events",
                    &admin_headers(Some(authorization)),
                    Some(""),
                )
                .as_bytes(),
            )
            .await
            .expect("write");
        let mut events = Events {
            stream,
            buffer: Vec::new(),
        };
        let head = loop {
            if let Some(end) = find(&events.buffer, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&events.buffer[..end]).into_owned();
                events.buffer.drain(..end + 4);
                break head;
            }
            assert!(events.read().await, "closed before the response head");
        };
        let status = head
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .expect("status line");
        if status == 200 {
            assert!(
                head.to_ascii_lowercase()
                    .contains("content-type: text/event-stream"),
                "{head}"
            );
        }
        (status, (status == 200).then_some(events))
    }

    /// Reads more; false at the end of the connection.
    async fn read(&mut self) -> bool {
        let mut chunk = [0u8; 16 * 1024];
        let n = tokio::time::timeout(WAIT, self.stream.read(&mut chunk))
            .await
            .expect("nothing from the event stream in time")
            .unwrap_or(0);
        self.buffer.extend_from_slice(&chunk[..n]);
        n > 0
    }

    /// The next snapshot; `None` once the stream has ended. (Each event
    /// is one chunk of the chunked body: the chunk sizes around it are
    /// skipped by looking for the event's own lines.)
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(start) = find(&self.buffer, b"data: ")
                && let Some(len) = find(&self.buffer[start..], b"\n\n")
            {
                let data = self.buffer[start + 6..start + len].to_vec();
                self.buffer.drain(..start + len + 2);
                return Some(serde_json::from_slice(&data).expect("snapshot JSON"));
            }
            if !self.read().await {
                return None;
            }
        }
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The session ids the listing holds.
fn listed(sessions: &Value) -> Vec<&str> {
    sessions["sessions"]
        .as_array()
        .expect("sessions array")
        .iter()
        .filter_map(|s| s["id"].as_str())
        .collect()
}

fn row<'a>(sessions: &'a Value, id: &str) -> &'a Value {
    sessions["sessions"]
        .as_array()
        .expect("sessions array")
        .iter()
        .find(|s| s["id"] == id)
        .unwrap_or_else(|| panic!("session {id} not listed: {sessions}"))
}

async fn connect_as(
    server: &TestServer,
    via: Via,
    extra: &[(&str, &str)],
) -> (stompbox::client::Client, String) {
    let (client, connected) = tokio::time::timeout(
        WAIT,
        stompbox::client::Client::connect(server.url(via), extra),
    )
    .await
    .expect("CONNECT timed out")
    .expect("CONNECT failed");
    let id = connected
        .headers
        .get("session")
        .expect("session header")
        .to_owned();
    (client, id)
}

fn with_token(c: &mut stompbox::ServerConfig) {
    c.admin.token = Some(TOKEN.into());
    c.auth.failure_delay = Duration::ZERO;
}

#[tokio::test]
async fn admin_page_and_api_do_not_exist_unless_configured() {
    let server = default_server().await;
    for path in ["/admin", "/admin/api/overview", "/admin/api/sessions"] {
        let answer = call(&server, "GET", path, Some(&bearer(TOKEN)), None).await;
        assert_eq!(answer.status, 404, "{path}");
    }
}

#[tokio::test]
async fn admin_api_refuses_missing_and_wrong_credentials() {
    let server = spawn_server(with_token).await;
    for path in [
        "/admin/api/overview",
        "/admin/api/sessions",
        "/admin/api/destinations",
        "/admin/api/events",
    ] {
        let none = call(&server, "GET", path, None, None).await;
        assert_eq!(none.status, 401, "{path}: {}", none.body);
        assert!(
            none.header("www-authenticate")
                .is_some_and(|v| v.starts_with("bearer"))
        );
        assert!(none.json()["error"].is_string());
        let wrong = call(
            &server,
            "GET",
            path,
            Some(&bearer("not-the-token-at-all")),
            None,
        )
        .await;
        assert_eq!(wrong.status, 401, "{path}");
    }
    let refused = call(
        &server,
        "POST",
        "/admin/api/queues/purge",
        Some(&bearer("wrong")),
        Some(r#"{"destination":"/queue/x"}"#),
    )
    .await;
    assert_eq!(refused.status, 401);
    let refused = disconnect(&server, "x", None).await;
    assert_eq!(refused.status, 401);

    let answer = overview(&server, &bearer(TOKEN)).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.header("cache-control"), Some("no-store"));
    // Asked from another origin, and still no CORS header: no other
    // page may read it.
    assert!(answer.header("access-control-allow-origin").is_none());
    let overview = answer.json();
    assert!(overview["uptime_seconds"].is_u64(), "{overview}");
    assert_eq!(overview["broker"]["available"], true);
    // The relay's links, for a relayed server only.
    let relay = &overview["broker"]["relay"];
    if test_broker() == TestBroker::Embedded {
        assert_eq!(*relay, Value::Null);
    } else {
        assert_eq!(relay["available"], true, "{overview}");
        assert!(
            relay["broker_connections"].as_u64() >= Some(1),
            "{overview}"
        );
    }

    // The page itself is the login form, under a strict policy.
    let page = call(&server, "GET", "/admin", None, None).await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("login-form"));
    let policy = page.header("content-security-policy").expect("CSP");
    assert!(
        policy.contains("script-src 'self'") && !policy.contains("unsafe"),
        "{policy}"
    );
    let script = call(&server, "GET", "/admin/admin.js", None, None).await;
    assert_eq!(script.status, 200);
    assert!(
        !script.body.contains("innerHTML"),
        "text must go in as textContent"
    );
}

#[tokio::test]
async fn failed_admin_logins_are_limited_per_address() {
    let server = spawn_server(|c| {
        with_token(c);
        c.auth.failures_per_address_per_min = 2;
    })
    .await;
    for _ in 0..2 {
        let wrong = overview(&server, &bearer("guess-guess")).await;
        assert_eq!(wrong.status, 401);
    }
    let limited = overview(&server, &bearer("guess-again")).await;
    assert_eq!(limited.status, 429, "{}", limited.body);
    // Whoever failed on purpose from the operator's address (a shared NAT)
    // does not lock the operator out: the configured token still works.
    let right = overview(&server, &bearer(TOKEN)).await;
    assert_eq!(right.status, 200, "{}", right.body);
    let still_limited = overview(&server, &bearer("guess-more")).await;
    assert_eq!(still_limited.status, 429);
}

#[tokio::test]
async fn sessions_show_user_transport_version_and_subscriptions() {
    let server = spawn_authenticated(stompbox::app::App::new(), with_token).await;
    let creds = credentials("alice");
    let (mut alice, alice_id) = connect_as(
        &server,
        Via::Ws,
        &[("login", &creds[0].1), ("passcode", &creds[1].1)],
    )
    .await;
    subscribe(&mut alice, "a", &unique("/topic/admin-a"), "auto").await;
    subscribe(&mut alice, "b", &unique("/topic/admin-b"), "auto").await;
    // STOMP 1.0 over TCP, subscribed to one topic.
    let mut anonymous = subscribe_1_0(&server, &unique("/topic/admin-c")).await;
    send_receipted(&mut anonymous, &unique("/topic/admin-d"), "one").await;

    let sessions = get(&server, "/admin/api/sessions", &bearer(TOKEN)).await;
    assert_eq!(sessions["total"], 2, "{sessions}");
    let a = row(&sessions, &alice_id);
    assert_eq!(a["user"], "alice");
    assert_eq!(a["transport"], "websocket");
    assert_eq!(a["version"], "1.2");
    assert_eq!(a["subscriptions"], 2);
    assert!(
        a["address"]
            .as_str()
            .is_some_and(|s| s.starts_with("127.0.0.1:"))
    );
    assert!(a["connected_at_ms"].is_u64());
    let b = sessions["sessions"]
        .as_array()
        .expect("sessions")
        .iter()
        .find(|s| s["transport"] == "tcp")
        .expect("the TCP session listed");
    assert_eq!(b["user"], Value::Null);
    assert_eq!(b["transport"], "tcp");
    assert_eq!(b["version"], "1.0");
    assert_eq!(b["subscriptions"], 1);
    assert_eq!(b["messages_in"], 1);

    // A limit caps the listing, not the count.
    let one = get(&server, "/admin/api/sessions?limit=1", &bearer(TOKEN)).await;
    assert_eq!(one["total"], 2);
    assert_eq!(listed(&one).len(), 1);
    let bad = call(
        &server,
        "GET",
        "/admin/api/sessions?limit=many",
        Some(&bearer(TOKEN)),
        None,
    )
    .await;
    assert_eq!(bad.status, 400);
}

#[tokio::test]
async fn disconnecting_a_session_closes_that_client_only() {
    let server = spawn_server(with_token).await;
    let (mut doomed, doomed_id) = connect_as(&server, Via::Ws, &[]).await;
    let (mut other, _) = connect_as(&server, Via::Tcp, &[]).await;
    let answer = disconnect(&server, &doomed_id, Some(&bearer(TOKEN))).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["disconnected"], doomed_id.as_str());
    let error = expect_error_and_close(&mut doomed).await;
    assert!(
        error
            .headers
            .get("message")
            .is_some_and(|m| m.contains("administrator")),
        "{error:?}"
    );
    // The other client goes on.
    send_receipted(&mut other, &unique("/topic/admin-still"), "here").await;
    let unknown = disconnect(&server, "no-such-session", Some(&bearer(TOKEN))).await;
    assert_eq!(unknown.status, 404, "{}", unknown.body);
    assert!(unknown.json()["error"].is_string());
}

#[tokio::test]
async fn purge_empties_a_queue() {
    let server = spawn_server(with_token).await;
    let queue = unique("/queue/admin-purge");
    let mut producer = server.connect(Via::Tcp).await;
    for n in 0..3 {
        send_receipted(&mut producer, &queue, &format!("old-{n}")).await;
    }
    let purge_body = format!(r#"{{"destination":"{queue}"}}"#);
    if test_broker() != TestBroker::Embedded {
        // STOMP has no purge: the relay says so.
        let refused = purge(&server, &purge_body).await;
        assert_eq!(refused.status, 409, "{}", refused.body);
        return;
    }
    let before = server.handle.stats().queue_bytes;
    assert!(before > 0);
    let destinations = get(&server, "/admin/api/destinations", &bearer(TOKEN)).await;
    let listed = destinations["destinations"]
        .as_array()
        .expect("destinations")
        .iter()
        .find(|d| d["name"] == queue.as_str())
        .unwrap_or_else(|| panic!("{queue} not listed: {destinations}"))
        .clone();
    assert_eq!(listed["kind"], "queue");
    assert_eq!(listed["ready"], 3);

    let answer = purge(&server, &purge_body).await;
    assert_eq!(answer.status, 200, "{}", answer.body);
    assert_eq!(answer.json()["purged"], 3);
    assert_eq!(server.handle.stats().queue_bytes, 0);

    // A new consumer gets what is sent now, and nothing from before.
    let mut consumer = server.connect(Via::Ws).await;
    subscribe(&mut consumer, "q", &queue, "auto").await;
    send_receipted(&mut producer, &queue, "new").await;
    assert_eq!(body(&next_message(&mut consumer).await), "new");

    let bad = purge(&server, "{\"dest\":1}").await;
    assert_eq!(bad.status, 400);
    let topic = purge(&server, r#"{"destination":"/topic/x"}"#).await;
    assert_eq!(topic.status, 400, "{}", topic.body);
    let too_big = format!(r#"{{"destination":"/queue/{}"}}"#, "x".repeat(8 * 1024));
    let too_big = purge(&server, &too_big).await;
    assert_eq!(too_big.status, 413);
}

#[tokio::test]
async fn event_stream_shows_a_new_session_in_a_later_snapshot() {
    let server = spawn_server(with_token).await;
    let (status, events) = Events::open(&server, &bearer(TOKEN)).await;
    assert_eq!(status, 200);
    let mut events = events.expect("stream");
    let first = events.next().await.expect("a first snapshot");
    assert_eq!(first["rates"], Value::Null);
    assert!(first["overview"]["sessions"].is_u64(), "{first}");
    assert!(first["destinations"]["destinations"].is_array());

    let (mut client, id) = connect_as(&server, Via::Ws, &[]).await;
    let topic = unique("/topic/admin-live");
    subscribe(&mut client, "s", &topic, "auto").await;
    let seen = loop {
        let snapshot = events.next().await.expect("the stream went on");
        if listed(&snapshot["sessions"]).contains(&id.as_str()) {
            break snapshot;
        }
    };
    assert!(seen["rates"]["messages_in"].is_number(), "{seen}");
    assert_eq!(row(&seen["sessions"], &id)["subscriptions"], 1);
    drop(client);
    // And it goes once the client does.
    loop {
        let snapshot = events.next().await.expect("the stream went on");
        if !listed(&snapshot["sessions"]).contains(&id.as_str()) {
            break;
        }
    }
}

#[tokio::test]
async fn event_streams_are_bounded_and_end_at_shutdown() {
    let server = spawn_server(|c| {
        with_token(c);
        c.admin.max_event_streams = 2;
        // Far longer than the test waits: a stream holding the drain
        // would fail it.
        c.shutdown_timeout = Duration::from_secs(60);
    })
    .await;
    let mut open = Vec::new();
    for _ in 0..2 {
        let (status, events) = Events::open(&server, &bearer(TOKEN)).await;
        assert_eq!(status, 200);
        let mut events = events.expect("stream");
        events.next().await.expect("a snapshot");
        open.push(events);
    }
    let (status, _) = Events::open(&server, &bearer(TOKEN)).await;
    assert_eq!(status, 503);
    tokio::time::timeout(WAIT, server.handle.shutdown())
        .await
        .expect("an open event stream held the shutdown")
        .expect("shutdown");
    for mut events in open {
        while events.next().await.is_some() {}
    }
}

/// The most a socket's kernel send buffer grows to (`tcp_wmem`'s maximum),
/// 4 MiB where it cannot be read.
fn send_buffer_max() -> usize {
    std::fs::read_to_string("/proc/sys/net/ipv4/tcp_wmem")
        .ok()
        .and_then(|s| s.split_whitespace().nth(2)?.parse().ok())
        .unwrap_or(4 << 20)
}

#[tokio::test]
async fn an_event_stream_nobody_reads_does_not_hold_the_drain() {
    if embedded_only("queues listed as destinations") {
        return;
    }
    let server = spawn_server(|c| {
        with_token(c);
        c.shutdown_timeout = Duration::from_secs(60);
    })
    .await;
    // Big snapshots, so that the server's writes fill the socket buffers
    // in a few seconds: 2,000 queues with long names.
    let messaging = server.handle.messaging();
    let padding = "p".repeat(1000);
    for i in 0..2000 {
        messaging
            .publish(&format!("/queue/unread-{i}-{padding}"), "x")
            .await
            .expect("publish");
    }
    let addr = server.handle.http_addr().expect("http addr");
    let socket = tokio::net::TcpSocket::new_v4().expect("socket");
    socket.set_recv_buffer_size(4096).expect("buffer size");
    let mut stream = socket.connect(addr).await.expect("connect");
    let request = format!(
        "GET /admin/api/events?sessions=0&destinations=2000 HTTP/1.1\r\nHost: localhost\r\n\
         Authorization: {}\r\n\r\n",
        bearer(TOKEN)
    );
    stream.write_all(request.as_bytes()).await.expect("write");
    // The response head, then nothing more is read.
    let mut received = Vec::new();
    let mut chunk = [0u8; 4096];
    while find(&received, b"\r\n\r\n").is_none() {
        let n = tokio::time::timeout(WAIT, stream.read(&mut chunk))
            .await
            .expect("no answer in time")
            .expect("read");
        assert!(n > 0, "closed: {}", String::from_utf8_lossy(&received));
        received.extend_from_slice(&chunk[..n]);
    }
    assert!(
        received.starts_with(b"HTTP/1.1 200"),
        "{}",
        String::from_utf8_lossy(&received)
    );
    // Each snapshot holds at least the destinations' listing.
    let listing = call(
        &server,
        "GET",
        "/admin/api/destinations?limit=2000",
        Some(&bearer(TOKEN)),
        None,
    )
    .await;
    assert_eq!(listing.status, 200);
    let event_bytes = listing.body.len();
    // No event says that the server's writes are stuck: wait for the
    // snapshots that fill the kernel's buffers (one a second), and two
    // more.
    let seconds = send_buffer_max().div_ceil(event_bytes) + 2;
    tokio::time::sleep(Duration::from_secs(seconds as u64)).await;
    tokio::time::timeout(WAIT, server.handle.shutdown())
        .await
        .expect("an event stream nobody reads held the drain")
        .expect("shutdown");
    drop(stream);
}

#[tokio::test]
async fn users_with_the_admin_role_log_in_with_their_password() {
    let server = spawn_authenticated(stompbox::app::App::new(), |c| {
        c.admin.role = Some("admin".into());
        c.auth.failure_delay = Duration::ZERO;
    })
    .await;
    let ok = overview(&server, &basic("admin-ann", "admin-ann-pw")).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let no_role = overview(&server, &basic("bob", "bob-pw")).await;
    assert_eq!(no_role.status, 403, "{}", no_role.body);
    let wrong = overview(&server, &basic("admin-ann", "nope")).await;
    assert_eq!(wrong.status, 401);
    // No token is configured: a bearer token is not one.
    let token = overview(&server, &bearer(TOKEN)).await;
    assert_eq!(token.status, 401);
    // The page offers the login form for users.
    let page = call(&server, "GET", "/admin", None, None).await;
    assert!(page.body.contains("data-password-login=\"true\""));

    let (mut client, id) = connect_as(&server, Via::Tcp, &[]).await;
    let answer = disconnect(&server, &id, Some(&basic("admin-ann", "admin-ann-pw"))).await;
    assert_eq!(answer.status, 200);
    expect_error_and_close(&mut client).await;
}

fn jwt_for(sub: &str, roles: &[&str], lifetime: u64, secret: &[u8]) -> String {
    let exp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
        + lifetime;
    jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &serde_json::json!({ "sub": sub, "exp": exp, "roles": roles }),
        &jsonwebtoken::EncodingKey::from_secret(secret).expect("key"),
    )
    .expect("encode")
}

#[tokio::test]
async fn admins_log_in_with_a_jwt_and_its_event_stream_ends_when_it_expires() {
    const SECRET: &[u8] = b"an hs256 secret for the admin tests";
    let server = spawn_server(|c| {
        let mut jwt =
            stompbox::auth::JwtConfig::new(stompbox::auth::JwtKey::Secret(SECRET.to_vec()));
        jwt.leeway = Duration::ZERO;
        c.auth.jwt = Some(jwt);
        c.auth.failure_delay = Duration::ZERO;
        c.admin.role = Some("admin".into());
    })
    .await;
    let admin = bearer(&jwt_for("ops-olga", &["admin"], 600, SECRET));
    let ok = overview(&server, &admin).await;
    assert_eq!(ok.status, 200, "{}", ok.body);
    let reader = bearer(&jwt_for("rita", &["reader"], 600, SECRET));
    let forbidden = overview(&server, &reader).await;
    assert_eq!(forbidden.status, 403, "{}", forbidden.body);
    let forged = bearer(&jwt_for(
        "mallory",
        &["admin"],
        600,
        b"another secret entirely",
    ));
    let refused = overview(&server, &forged).await;
    assert_eq!(refused.status, 401, "{}", refused.body);

    // A stream lasts as long as the credential it was opened with.
    let short = bearer(&jwt_for("ops-olga", &["admin"], 3, SECRET));
    let (status, events) = Events::open(&server, &short).await;
    assert_eq!(status, 200);
    let mut events = events.expect("stream");
    events.next().await.expect("a first snapshot");
    tokio::time::timeout(WAIT, async { while events.next().await.is_some() {} })
        .await
        .expect("the stream outlived its token");
}
