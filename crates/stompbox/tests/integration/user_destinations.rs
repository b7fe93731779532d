//! User destinations: isolation between users and between sessions.

use crate::support::*;
use stompbox::app::App;
use stompbox::client::Client;
use stompbox::codec::{Command, Frame};

fn users_app() -> App {
    App::new().on_connect(|info| async move { Ok(info.login) })
}

async fn login(server: &TestServer, via: Via, name: &str) -> Client {
    let (client, _) = Client::connect(server.url(via), &[("login", name)])
        .await
        .expect("connect");
    client
}

#[tokio::test]
async fn user_messages_reach_every_session_of_that_user_and_nobody_else() {
    let server = spawn_app(users_app(), |_| {}).await;
    let mut ann_1 = login(&server, Via::Ws, "ann").await;
    let mut ann_2 = login(&server, Via::Tcp, "ann").await;
    let mut ben = login(&server, Via::Ws, "ben").await;
    for client in [&mut ann_1, &mut ann_2, &mut ben] {
        subscribe(client, "n", "/user/queue/notes", "auto").await;
    }
    let messaging = server.handle.messaging();
    assert_eq!(
        messaging
            .send_to_user("ann", "/queue/notes", "for ann")
            .await
            .expect("send"),
        2
    );
    assert_eq!(
        messaging
            .send_to_user("ben", "/queue/notes", "for ben")
            .await
            .expect("send"),
        1
    );
    for client in [&mut ann_1, &mut ann_2] {
        let m = next_message(client).await;
        assert_eq!(body(&m), "for ann");
        assert_eq!(m.headers.get("destination"), Some("/user/queue/notes"));
    }
    assert_eq!(body(&next_message(&mut ben).await), "for ben");
}

#[tokio::test]
async fn a_client_sends_to_another_user_by_name() {
    let server = spawn_app(users_app(), |_| {}).await;
    let mut ann = login(&server, Via::Ws, "ann").await;
    let mut ben = login(&server, Via::Ws, "ben").await;
    subscribe(&mut ben, "n", "/user/queue/inbox", "auto").await;
    subscribe(&mut ann, "n", "/user/queue/inbox", "auto").await;
    ann.send_with_receipt(
        Frame::new(Command::Send)
            .header("destination", "/user/ben/queue/inbox")
            .header("x-from", "ann")
            .body("hello ben"),
        "s",
    )
    .await
    .expect("send");
    let m = next_message(&mut ben).await;
    assert_eq!(body(&m), "hello ben");
    assert_eq!(m.headers.get("x-from"), Some("ann"));
    assert_eq!(m.headers.get("destination"), Some("/user/queue/inbox"));
    // Ann got nothing: her next message is one addressed to her.
    ben.send_with_receipt(
        Frame::new(Command::Send)
            .header("destination", "/user/ann/queue/inbox")
            .body("hi ann"),
        "r",
    )
    .await
    .expect("send");
    assert_eq!(body(&next_message(&mut ann).await), "hi ann");
}

#[tokio::test]
async fn sessions_without_login_are_their_own_user_and_resolved_names_cannot_be_used_directly() {
    let server = spawn_app(users_app(), |_| {}).await;
    let (mut first, connected) = Client::connect(&server.ws, &[]).await.expect("connect");
    let session = connected
        .headers
        .get("session")
        .expect("session")
        .to_owned();
    let mut second = server.connect(Via::Ws).await;
    subscribe(&mut first, "n", "/user/queue/private", "auto").await;
    subscribe(&mut second, "n", "/user/queue/private", "auto").await;
    // The anonymous user is named by its session id.
    let messaging = server.handle.messaging();
    assert_eq!(
        messaging
            .send_to_user(&session, "/queue/private", "only first")
            .await
            .expect("send"),
        1
    );
    assert_eq!(body(&next_message(&mut first).await), "only first");
    // `second` knows `first`'s session id (it is not secret here), but the
    // resolved destination is reserved: subscribing to it is refused.
    let mut snoop = server.connect(Via::Tcp).await;
    snoop
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "x")
                .header("destination", &format!("/queue/private-user{session}")),
        )
        .await
        .expect("send");
    let error = expect_error_and_close(&mut snoop).await;
    assert!(
        error
            .headers
            .get("message")
            .is_some_and(|m| m.contains("reserved"))
    );
    // Nor can anyone subscribe to another user's destination by name.
    let mut snoop = server.connect(Via::Tcp).await;
    snoop
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "y")
                .header("destination", &format!("/user/{session}/queue/private")),
        )
        .await
        .expect("send");
    expect_error_and_close(&mut snoop).await;
    // `second` got nothing meant for `first`.
    assert_eq!(
        messaging
            .send_to_user("nobody", "/queue/private", "x")
            .await
            .expect("send"),
        0
    );
    let mut ids = Vec::new();
    for client in [&mut first, &mut second] {
        client
            .send_with_receipt(Frame::new(Command::Disconnect), "bye")
            .await
            .expect("disconnect");
        ids.push(());
    }
}
