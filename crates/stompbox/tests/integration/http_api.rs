//! `POST /api/publish` over a real HTTP connection.

use crate::support::*;

/// One `POST /api/publish`, with the bearer token if any; the status code
/// and the body.
async fn post(server: &TestServer, token: Option<&str>, json: &str) -> (u16, String) {
    let addr = server.handle.http_addr().expect("http addr");
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![("Content-Type", "application/json")];
    headers.extend(auth.iter().map(|a| ("Authorization", a.as_str())));
    let answer = http_request(addr, "POST", "/api/publish", &headers, Some(json)).await;
    (answer.status, answer.body)
}

#[tokio::test]
async fn publish_api_delivers_with_the_token_and_refuses_without_it() {
    let server = spawn_server(|c| c.api_token = Some("s3cret".into())).await;
    let topic = unique("/topic/http");
    let mut sub = server.connect(Via::Ws).await;
    subscribe(&mut sub, "s", &topic, "auto").await;

    let request = format!(
        r#"{{"destination":"{topic}","body":"from http","headers":{{"x-origin":"backend"}}}}"#
    );
    assert_eq!(post(&server, None, &request).await.0, 401);
    assert_eq!(post(&server, Some("wrong"), &request).await.0, 401);
    let (status, body) = post(&server, Some("s3cret"), &request).await;
    assert_eq!(status, 202, "{body}");
    let m = next_message(&mut sub).await;
    assert_eq!(crate::support::body(&m), "from http");
    assert_eq!(m.headers.get("x-origin"), Some("backend"));

    let (status, body) = post(
        &server,
        Some("s3cret"),
        r#"{"destination":"/nowhere","body":"x"}"#,
    )
    .await;
    assert_eq!(status, 400);
    assert!(body.contains("/nowhere"), "{body}");
    assert_eq!(post(&server, Some("s3cret"), "{not json").await.0, 400);
}

/// A NUL would end the MESSAGE frame early; a `:` or line break in a name
/// would shape a header line of the subscriber's frame.
#[tokio::test]
async fn publish_api_refuses_headers_no_frame_can_carry() {
    let server = spawn_server(|c| c.api_token = Some("s3cret".into())).await;
    let topic = unique("/topic/http-nul");
    let mut sub = server.connect(Via::Ws).await;
    subscribe(&mut sub, "s", &topic, "auto").await;
    for (headers, named) in [
        (r#"{"x-evil":"a\u0000b"}"#, "x-evil"),
        (r#"{"x\u0000evil":"a"}"#, "evil' has a NUL"),
        (r#"{"content-length:3":"a"}"#, "content-length:3"),
        (r#"{"x\nforged":"a"}"#, "forged' has a ':'"),
    ] {
        let request = format!(r#"{{"destination":"{topic}","body":"x","headers":{headers}}}"#);
        let (status, body) = post(&server, Some("s3cret"), &request).await;
        assert_eq!(status, 400, "{headers}: {body}");
        assert!(body.contains(named), "{headers}: {body}");
    }
    let nul_type = format!(r#"{{"destination":"{topic}","body":"x","content_type":"a\u0000"}}"#);
    assert_eq!(post(&server, Some("s3cret"), &nul_type).await.0, 400);
    // None of them reached the subscriber: the next message is this one.
    let fine = format!(r#"{{"destination":"{topic}","body":"fine"}}"#);
    assert_eq!(post(&server, Some("s3cret"), &fine).await.0, 202);
    assert_eq!(crate::support::body(&next_message(&mut sub).await), "fine");
}

#[tokio::test]
async fn publish_api_does_not_exist_without_a_configured_token() {
    let server = default_server().await;
    let (status, _) = post(
        &server,
        Some("anything"),
        r#"{"destination":"/topic/a","body":"x"}"#,
    )
    .await;
    assert_eq!(status, 404);
}

#[tokio::test]
async fn a_token_publishes_only_to_its_destinations_and_never_sets_server_headers() {
    let server = spawn_authenticated(stompbox::app::App::new(), |c| {
        c.api_tokens = vec![stompbox::ApiToken::new(
            "notifications-0123456789",
            ["/user/**"],
        )];
    })
    .await;
    let mut alice = login(&server, Via::Ws, "alice").await;
    subscribe(&mut alice, "n", "/user/queue/notes", "auto").await;
    let token = Some("notifications-0123456789");
    let (status, body) = post(
        &server,
        token,
        r#"{"destination":"/user/alice/queue/notes","body":"note"}"#,
    )
    .await;
    assert_eq!(status, 202, "{body}");
    let message = next_message(&mut alice).await;
    assert_eq!(crate::support::body(&message), "note");
    assert_eq!(message.headers.get("stompbox-sender"), None);
    let (status, body) = post(
        &server,
        token,
        r#"{"destination":"/topic/announcements","body":"x"}"#,
    )
    .await;
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("may not publish to '/topic/announcements'"),
        "{body}"
    );
    let (status, body) = post(
        &server,
        token,
        r#"{"destination":"/user/alice/queue/notes","body":"x","headers":{"stompbox-sender":"bob"}}"#,
    )
    .await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("reserved"), "{body}");
}

#[tokio::test]
async fn a_request_body_that_trickles_in_is_cut_off() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = spawn_server(|c| {
        c.api_token = Some("s3cret-0123456789".into());
        c.connect_timeout = std::time::Duration::from_millis(300);
    })
    .await;
    let addr = server.handle.http_addr().expect("http addr");
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            b"POST /api/publish HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer s3cret-0123456789\r\nContent-Length: 1000\r\n\r\n{\"destination\"",
        )
        .await
        .expect("write");
    let mut response = vec![0u8; 256];
    let n = tokio::time::timeout(WAIT, stream.read(&mut response))
        .await
        .expect("the server answered in time")
        .expect("read");
    let response = String::from_utf8_lossy(&response[..n]);
    assert!(response.starts_with("HTTP/1.1 408"), "{response}");
}
