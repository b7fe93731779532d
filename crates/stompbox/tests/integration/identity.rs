//! Who a session is: identities come only from an authenticator; refusals,
//! limits that protect authentication, the verified sender header, and
//! credentials that expire.

use crate::support::*;
use std::time::{Duration, Instant, SystemTime};
use stompbox::auth::{AuthError, Authenticator, ConnectRequest, Identity};
use stompbox::broker::BoxFuture;
use stompbox::client::{Client, ClientOptions};
use stompbox::codec::{Command, Frame};

fn session_of(connected: &Frame) -> String {
    connected
        .headers
        .get("session")
        .expect("session header")
        .to_owned()
}

/// CONNECT with `headers` must be refused with an ERROR whose message
/// starts with `expected`; returns the message.
async fn refused(url: &str, headers: &[(&str, &str)], expected: &str) -> String {
    let mut client = Client::open(url, &["v12.stomp"]).await.expect("open");
    let mut connect = Frame::new(Command::Connect)
        .header("accept-version", "1.2")
        .header("host", "localhost");
    for (name, value) in headers {
        connect = connect.header(name, value);
    }
    client.send(&connect).await.expect("send CONNECT");
    let error = expect_error_and_close(&mut client).await;
    let message = error.headers.get("message").unwrap_or_default().to_owned();
    assert!(
        message.starts_with(expected),
        "expected an ERROR starting with {expected:?}, got {message:?}"
    );
    message
}

#[tokio::test]
async fn without_an_authenticator_a_login_is_not_an_identity() {
    // The issue this closes: `login:alice` with no passcode used to be
    // alice, and read alice's private messages.
    let server = default_server().await;
    // A name of its own: through a relay user destinations are the
    // broker's, shared with every other test's "alice".
    let alice = unique("alice-");
    for via in BOTH {
        let (mut claimed, connected) = Client::connect(server.url(via), &[("login", &alice)])
            .await
            .expect("anonymous sessions are let in");
        let session = session_of(&connected);
        subscribe(&mut claimed, "n", "/user/queue/notes", "auto").await;
        let messaging = server.handle.messaging();
        messaging
            .send_to_user(&alice, "/queue/notes", "alice's secret")
            .await
            .expect("send to alice");
        messaging
            .send_to_session(&session, "/queue/notes", "for this session")
            .await
            .expect("send to the session");
        // Had alice's message reached it, it would have come first.
        assert_eq!(body(&next_message(&mut claimed).await), "for this session");
    }
}

#[tokio::test]
async fn a_wrong_passcode_or_unknown_user_is_refused_after_the_failure_delay() {
    let delay = Duration::from_millis(300);
    let server = spawn_authenticated(stompbox::app::App::new(), |c| {
        c.auth.failure_delay = delay;
    })
    .await;
    for via in BOTH {
        for (login, passcode) in [("alice", "wrong"), ("alice", ""), ("nobody", "nobody-x")] {
            let started = Instant::now();
            refused(
                server.url(via),
                &[("login", login), ("passcode", passcode)],
                "access refused: wrong login or passcode",
            )
            .await;
            assert!(
                started.elapsed() >= delay,
                "the refusal came before the failure delay"
            );
        }
        // The right one still works.
        login(&server, via, "alice").await;
    }
}

#[tokio::test]
async fn a_refusal_echoes_the_connect_receipt() {
    let server = spawn_authenticated(stompbox::app::App::new(), |c| {
        c.auth.failure_delay = Duration::ZERO;
    })
    .await;
    let mut client = server.open(Via::Tcp).await;
    client
        .send(
            &Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("login", "alice")
                .header("passcode", "nope")
                .header("receipt", "c-1"),
        )
        .await
        .expect("send");
    let error = expect_error_and_close(&mut client).await;
    assert_eq!(error.headers.get("receipt-id"), Some("c-1"));
}

#[tokio::test]
async fn credentials_nobody_accepts_are_refused_rather_than_let_in_anonymously() {
    let server = spawn_authenticated(stompbox::app::App::new(), |c| {
        c.auth.failure_delay = Duration::ZERO;
    })
    .await;
    // TestLogins knows nothing of a passcode without a login, but the
    // client meant to be someone: it must not become anonymous.
    refused(
        &server.tcp,
        &[("passcode", "a-token")],
        "access refused: wrong login or passcode",
    )
    .await;
    refused(
        &server.ws,
        &[("Authorization", "Bearer abc")],
        "access refused: wrong login or passcode",
    )
    .await;
    // Without any credentials the session is anonymous (allowed here).
    let (_, connected) = Client::connect(&server.ws, &[]).await.expect("anonymous");
    assert_eq!(connected.command, Command::Connected);
}

#[tokio::test]
async fn without_credentials_a_session_is_refused_unless_anonymous_sessions_are_allowed() {
    let server = spawn_with(stompbox::app::App::new(), Some(TestLogins), |c| {
        c.auth.failure_delay = Duration::ZERO;
    })
    .await;
    for via in BOTH {
        refused(
            server.url(via),
            &[],
            "access refused: authentication required",
        )
        .await;
        login(&server, via, "bob").await;
    }
}

#[tokio::test]
async fn anonymous_sessions_may_not_send_to_other_users_by_default() {
    let server = default_server().await;
    let mut anonymous = server.connect(Via::Ws).await;
    anonymous
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/user/alice/queue/errors")
                .header("receipt", "r-1")
                .body("your account is suspended"),
        )
        .await
        .expect("send");
    let error = expect_error_and_close(&mut anonymous).await;
    assert_eq!(error.headers.get("receipt-id"), Some("r-1"));
    let message = error.headers.get("message").unwrap_or_default();
    assert!(
        message.starts_with(
            "access refused: SEND to '/user/alice/queue/errors' is not allowed for anonymous sessions"
        ),
        "{message}"
    );
}

#[tokio::test]
async fn every_client_message_carries_its_verified_sender_which_clients_cannot_forge() {
    let server = spawn_authenticated(stompbox::app::App::new(), |_| {}).await;
    let topic = unique("/topic/sender.");
    let mut bob = login(&server, Via::Tcp, "bob").await;
    subscribe(&mut bob, "t", &topic, "auto").await;
    subscribe(&mut bob, "u", "/user/queue/inbox", "auto").await;
    let mut alice = login(&server, Via::Ws, "alice").await;
    for destination in [topic.as_str(), "/user/bob/queue/inbox"] {
        alice
            .send_with_receipt(
                Frame::new(Command::Send)
                    .header("destination", destination)
                    .header("stompbox-sender", "server")
                    .header("stompbox-other", "x")
                    .header("Stompbox-Sender", "server")
                    .header("x-app", "kept")
                    .body("from alice"),
                "a",
            )
            .await
            .expect("send");
        let message = next_message(&mut bob).await;
        assert_eq!(body(&message), "from alice");
        assert_eq!(message.headers.get("stompbox-sender"), Some("alice"));
        assert_eq!(
            message
                .headers
                .iter()
                .filter(|(n, _)| n.to_ascii_lowercase().starts_with("stompbox-"))
                .count(),
            1,
            "{message:?}"
        );
        assert_eq!(message.headers.get("x-app"), Some("kept"));
    }
    // An anonymous sender is marked as one (empty name)…
    let (mut guest, _) = Client::connect(&server.ws, &[]).await.expect("anonymous");
    guest
        .send_with_receipt(
            Frame::new(Command::Send)
                .header("destination", &topic)
                .header("stompbox-sender", "alice")
                .body("from a guest"),
            "g",
        )
        .await
        .expect("send");
    let message = next_message(&mut bob).await;
    assert_eq!(body(&message), "from a guest");
    assert_eq!(message.headers.get("stompbox-sender"), Some(""));
    // …and what the server itself publishes has no sender at all.
    server
        .handle
        .messaging()
        .publish(&topic, "from the server")
        .await
        .expect("publish");
    let message = next_message(&mut bob).await;
    assert_eq!(body(&message), "from the server");
    assert_eq!(message.headers.get("stompbox-sender"), None);
}

/// Authenticates from what the WebSocket handshake carried: a session
/// cookie, a query parameter, and only from a loopback address.
struct HandshakeAuth;

impl Authenticator for HandshakeAuth {
    fn authenticate<'a>(
        &'a self,
        request: &'a ConnectRequest,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        let handshake = &request.handshake;
        let answer = if !handshake.remote_addr.ip().is_loopback() {
            Err(AuthError::Refused("not from here".into()))
        } else if let Some(cookie) = handshake.cookie("session") {
            Ok(Some(
                Identity::new(cookie.trim_start_matches("user-")).with_roles(["cookie"]),
            ))
        } else if let Some(ticket) = handshake.query("ticket") {
            Ok(Some(Identity::new(ticket).with_roles(["query"])))
        } else {
            Ok(None)
        };
        Box::pin(async move { answer })
    }
}

#[tokio::test]
async fn an_authenticator_sees_the_handshake_cookies_query_and_address() {
    let app =
        stompbox::app::App::new().message("/whoami", |user: stompbox::app::User| async move {
            stompbox::app::SendToUser::new(format!("{} {:?}", user.name(), user.roles()))
                .at("/queue/whoami")
                .only_this_session()
        });
    let server = spawn_with(app, Some(HandshakeAuth), |c| {
        c.auth.allow_anonymous = true;
    })
    .await;
    let whoami = async |client: &mut Client| {
        subscribe(client, "w", "/user/queue/whoami", "auto").await;
        client
            .send(
                &Frame::new(Command::Send)
                    .header("destination", "/app/whoami")
                    .body(""),
            )
            .await
            .expect("send");
        body(&next_message(client).await).to_owned()
    };
    let options = ClientOptions::stomp().header("Cookie", "theme=dark; session=user-carol");
    let (mut by_cookie, _) = Client::connect_with(&server.ws, &options, &[])
        .await
        .expect("connect");
    assert_eq!(whoami(&mut by_cookie).await, r#"carol ["cookie"]"#);
    let url = format!("{}?x=1&ticket=dave", server.ws);
    let (mut by_query, _) = Client::connect(&url, &[]).await.expect("connect");
    assert_eq!(whoami(&mut by_query).await, r#"dave ["query"]"#);
    // Over TCP there is no handshake: anonymous.
    let mut plain = server.connect(Via::Tcp).await;
    let reply = whoami(&mut plain).await;
    assert!(reply.ends_with("[]"), "{reply}");
}

/// Accepts everyone, with credentials valid for a short time.
struct ShortLived(Duration);

impl Authenticator for ShortLived {
    fn authenticate<'a>(
        &'a self,
        request: &'a ConnectRequest,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        let answer = request.login().map(|name| {
            let expires = SystemTime::now() + self.0;
            Identity::new(name).expiring_at(expires)
        });
        Box::pin(async move { Ok(answer) })
    }
}

#[tokio::test]
async fn a_session_whose_credentials_expire_gets_an_error_and_is_closed() {
    let server = spawn_with(
        stompbox::app::App::new(),
        Some(ShortLived(Duration::from_millis(800))),
        |_| {},
    )
    .await;
    let (mut client, _) = Client::connect(&server.ws, &[("login", "erin")])
        .await
        .expect("connect");
    let topic = unique("/topic/expiry.");
    subscribe(&mut client, "t", &topic, "auto").await;
    let error = expect_error_and_close(&mut client).await;
    assert_eq!(
        error.headers.get("message"),
        Some("access refused: the session's credentials expired; reconnect with fresh ones")
    );
    // Already expired credentials are refused at CONNECT.
    let expired = spawn_with(
        stompbox::app::App::new(),
        Some(ShortLived(Duration::ZERO)),
        |c| c.auth.failure_delay = Duration::ZERO,
    )
    .await;
    refused(
        &expired.tcp,
        &[("login", "erin")],
        "access refused: the token has expired",
    )
    .await;
}

#[tokio::test]
async fn the_send_hook_can_refuse_a_send() {
    let app = stompbox::app::App::new().on_send(|info: stompbox::app::SendInfo| async move {
        if info.destination.ends_with(".locked") {
            Err(stompbox::app::Reject::new(format!(
                "{} may not send there",
                info.user.name()
            )))
        } else {
            Ok(())
        }
    });
    let server = spawn_authenticated(app, |_| {}).await;
    let mut alice = login(&server, Via::Tcp, "alice").await;
    send_receipted(&mut alice, &unique("/topic/open."), "fine").await;
    alice
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/topic/room.locked")
                .body("no"),
        )
        .await
        .expect("send");
    let error = expect_error_and_close(&mut alice).await;
    assert_eq!(
        error.headers.get("message"),
        Some("alice may not send there")
    );
}

#[tokio::test]
async fn sessions_per_user_are_limited() {
    let server = spawn_authenticated(stompbox::app::App::new(), |c| {
        c.auth.max_sessions_per_user = 2;
    })
    .await;
    let mut first = login(&server, Via::Ws, "frank").await;
    let _second = login(&server, Via::Tcp, "frank").await;
    let creds = credentials("frank");
    let headers: Vec<(&str, &str)> = creds.iter().map(|(n, v)| (*n, v.as_str())).collect();
    refused(
        &server.ws,
        &headers,
        "access refused: user 'frank' already has 2 sessions on this server",
    )
    .await;
    // Other users are not affected.
    login(&server, Via::Ws, "gina").await;
    // Once a session ends its place is free again.
    first
        .send_with_receipt(Frame::new(Command::Disconnect), "bye")
        .await
        .expect("disconnect");
    login(&server, Via::Ws, "frank").await;
}

#[tokio::test]
async fn connect_attempts_per_address_are_rate_limited() {
    let server = spawn_authenticated(stompbox::app::App::new(), |c| {
        c.connects_per_address_per_sec = 1;
        c.auth.failure_delay = Duration::ZERO;
    })
    .await;
    // A burst of one: the second attempt within the second is refused,
    // whether the first succeeded or not.
    refused(
        &server.tcp,
        &[("login", "hal"), ("passcode", "guess")],
        "access refused: wrong login or passcode",
    )
    .await;
    refused(
        &server.ws,
        &[("login", "hal"), ("passcode", "hal-pw")],
        "too many CONNECT attempts from your address",
    )
    .await;
}

/// Counts how often it is asked; accepts nobody.
struct Counting(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Authenticator for Counting {
    fn authenticate<'a>(
        &'a self,
        _: &'a ConnectRequest,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async { Err(AuthError::BadCredentials) })
    }
}

#[tokio::test]
async fn an_address_that_keeps_failing_logins_is_no_longer_heard() {
    // The attack: guessing passwords as fast as the server answers, each
    // guess costing it a hash. After the allowance the guesses are refused
    // without asking the authenticator at all.
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = spawn_with(
        stompbox::app::App::new(),
        Some(Counting(std::sync::Arc::clone(&asked))),
        |c| {
            c.auth.failures_per_address_per_min = 3;
            c.auth.failure_delay = Duration::ZERO;
        },
    )
    .await;
    for i in 0..3 {
        refused(
            &server.tcp,
            &[("login", "root"), ("passcode", &format!("guess-{i}"))],
            "access refused: wrong login or passcode",
        )
        .await;
    }
    for _ in 0..20 {
        refused(
            &server.ws,
            &[("login", "root"), ("passcode", "one more")],
            "access refused: too many failed logins from your address",
        )
        .await;
    }
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 3);
}

/// Refuses everyone, after a while (a slow hash).
struct SlowRefusal(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Authenticator for SlowRefusal {
    fn authenticate<'a>(
        &'a self,
        _: &'a ConnectRequest,
    ) -> BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        Box::pin(async {
            tokio::time::sleep(Duration::from_millis(200)).await;
            Err(AuthError::BadCredentials)
        })
    }
}

#[tokio::test]
async fn guesses_sent_all_at_once_are_counted_before_they_are_checked() {
    // The allowance is taken when a check starts, not when it fails: forty
    // guesses in flight together get three checks, not forty.
    let asked = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let server = spawn_with(
        stompbox::app::App::new(),
        Some(SlowRefusal(std::sync::Arc::clone(&asked))),
        |c| {
            c.auth.failures_per_address_per_min = 3;
            c.auth.failure_delay = Duration::ZERO;
        },
    )
    .await;
    let guesses = (0..40).map(|i| {
        let url = server.tcp.clone();
        tokio::spawn(async move {
            let passcode = format!("guess-{i}");
            match Client::connect(&url, &[("login", "root"), ("passcode", &passcode)]).await {
                Err(stompbox::client::ClientError::Server(message)) => message,
                other => panic!("expected a refusal, got {other:?}"),
            }
        })
    });
    let mut unchecked = 0;
    for guess in guesses.collect::<Vec<_>>() {
        let message = guess.await.expect("task");
        if message.starts_with("access refused: too many failed logins") {
            unchecked += 1;
        } else {
            assert_eq!(message, "access refused: wrong login or passcode");
        }
    }
    assert_eq!(asked.load(std::sync::atomic::Ordering::SeqCst), 3);
    assert_eq!(unchecked, 37);
}

#[tokio::test]
async fn connections_per_address_are_limited_on_both_listeners() {
    if not_on_activemq("the limit is the server's own; one broker run is enough") {
        return;
    }
    let server = spawn_server(|c| c.max_connections_per_address = 2).await;
    let _a = server.connect(Via::Ws).await;
    let _b = server.connect(Via::Tcp).await;
    // A third socket to the HTTP port gets an HTTP answer…
    let response = raw_http(
        server
            .ws
            .trim_start_matches("ws://")
            .trim_end_matches("/ws"),
        "GET /ws HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 429"), "{response}");
    assert!(response.contains("too many connections from your address (limit 2)"));
    // …and one to the STOMP port an ERROR frame.
    let mut third = server.open(Via::Tcp).await;
    let error = expect_error_and_close(&mut third).await;
    assert_eq!(
        error.headers.get("message"),
        Some("too many connections from your address (limit 2)")
    );
}

#[tokio::test]
async fn before_connect_only_a_small_frame_is_accepted() {
    let server = spawn_server(|c| c.unauthenticated_frame_bytes = 1024).await;
    for via in BOTH {
        let mut client = server.open(via).await;
        client
            .send(
                &Frame::new(Command::Connect)
                    .header("accept-version", "1.2")
                    .header("x-padding", &"p".repeat(2000)),
            )
            .await
            .expect("send");
        let error = expect_error_and_close(&mut client).await;
        let message = error.headers.get("message").unwrap_or_default();
        assert!(message.contains("1024"), "{message}");
        // After CONNECT the full frame limit applies.
        let mut client = server.connect(via).await;
        send_receipted(&mut client, &unique("/topic/big."), &"b".repeat(4000)).await;
    }
    // Over WebSocket a message of more than twice the limit is not even
    // read to its end: the WebSocket layer closes with 1009.
    let mut client = server.open(Via::Ws).await;
    client
        .send_raw(bytes::Bytes::from(vec![b'x'; 3000]))
        .await
        .expect("send");
    assert!(matches!(
        client.next_frame_within(WAIT).await,
        Ok(None) | Err(_)
    ));
    assert_eq!(client.close_reason().map(|(code, _)| code), Some(1009));
}

/// Sends `request` on a fresh TCP connection to `addr` and returns the
/// response head and body (as far as its content-length says).
pub(crate) async fn raw_http(addr: &str, request: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        if let Some(end) = response.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&response[..end]).to_ascii_lowercase();
            let length = head
                .lines()
                .find_map(|l| l.strip_prefix("content-length:"))
                .and_then(|v| v.trim().parse::<usize>().ok())
                .unwrap_or(0);
            if response.len() >= end + 4 + length {
                break;
            }
        }
        match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => break,
            Ok(Ok(n)) => response.extend_from_slice(&buf[..n]),
            Err(_) => panic!("no complete answer from {addr}: {response:?}"),
        }
    }
    String::from_utf8_lossy(&response).into_owned()
}
