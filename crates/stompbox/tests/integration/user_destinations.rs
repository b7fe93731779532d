//! User destinations: isolation between users and between sessions.

use crate::support::*;
use stompbox::app::App;
use stompbox::client::Client;
use stompbox::codec::{Command, Frame};

fn users_app() -> App {
    App::new()
}

#[tokio::test]
async fn user_messages_reach_every_session_of_that_user_and_nobody_else() {
    let server = spawn_authenticated(users_app(), |_| {}).await;
    let mut ann_1 = login(&server, Via::Ws, "ann").await;
    let mut ann_2 = login(&server, Via::Tcp, "ann").await;
    let mut ben = login(&server, Via::Ws, "ben").await;
    for client in [&mut ann_1, &mut ann_2, &mut ben] {
        subscribe(client, "n", "/user/queue/notes", "auto").await;
    }
    let messaging = server.handle.messaging();
    messaging
        .send_to_user("ann", "/queue/notes", "for ann")
        .await
        .expect("send");
    messaging
        .send_to_user("ben", "/queue/notes", "for ben")
        .await
        .expect("send");
    for client in [&mut ann_1, &mut ann_2] {
        let m = next_message(client).await;
        assert_eq!(body(&m), "for ann");
        assert_eq!(m.headers.get("destination"), Some("/user/queue/notes"));
    }
    assert_eq!(body(&next_message(&mut ben).await), "for ben");
}

#[tokio::test]
async fn a_client_sends_to_another_user_by_name() {
    let server = spawn_authenticated(users_app(), |_| {}).await;
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
async fn anonymous_sessions_are_reached_only_as_sessions_never_by_a_user_name() {
    let server = spawn_authenticated(users_app(), |_| {}).await;
    let (mut first, connected) = Client::connect(&server.ws, &[]).await.expect("connect");
    let first_id = connected
        .headers
        .get("session")
        .expect("session")
        .to_owned();
    let (mut second, connected) = Client::connect(&server.tcp, &[]).await.expect("connect");
    let second_id = connected
        .headers
        .get("session")
        .expect("session")
        .to_owned();
    subscribe(&mut first, "n", "/user/queue/private", "auto").await;
    subscribe(&mut second, "n", "/user/queue/private", "auto").await;
    let messaging = server.handle.messaging();
    // Naming an anonymous session as a user reaches nobody: it has no user.
    messaging
        .send_to_user(&first_id, "/queue/private", "by user name")
        .await
        .expect("send");
    messaging
        .send_to_session(&first_id, "/queue/private", "for first")
        .await
        .expect("send");
    messaging
        .send_to_session(&second_id, "/queue/private", "for second")
        .await
        .expect("send");
    // Sent after the user-name message: had that one arrived, it would
    // have come first.
    assert_eq!(body(&next_message(&mut first).await), "for first");
    // `second`'s first message is its own: nothing of `first`'s leaked.
    assert_eq!(body(&next_message(&mut second).await), "for second");
}

#[tokio::test]
async fn one_session_of_a_user_can_be_addressed_alone() {
    let server = spawn_authenticated(users_app(), |_| {}).await;
    let (mut phone, connected) =
        Client::connect(&server.ws, &[("login", "kim"), ("passcode", "kim-pw")])
            .await
            .expect("connect");
    let phone_session = connected
        .headers
        .get("session")
        .expect("session")
        .to_owned();
    let mut laptop = login(&server, Via::Tcp, "kim").await;
    subscribe(&mut phone, "n", "/user/queue/n", "auto").await;
    subscribe(&mut laptop, "n", "/user/queue/n", "auto").await;
    let messaging = server.handle.messaging();
    messaging
        .send_to_session(&phone_session, "/queue/n", "phone only")
        .await
        .expect("send");
    messaging
        .send_to_user("kim", "/queue/n", "both")
        .await
        .expect("send");
    assert_eq!(body(&next_message(&mut phone).await), "phone only");
    assert_eq!(body(&next_message(&mut phone).await), "both");
    // The laptop's first message is the one for both.
    assert_eq!(body(&next_message(&mut laptop).await), "both");
}

#[tokio::test]
async fn clients_cannot_reach_other_users_destinations_directly() {
    // The snoop's `#` sees every test's topic traffic on a shared broker;
    // through the shared relay nothing paces that for it, so its outbox
    // must hold the suite's floods.
    let server = spawn_authenticated(users_app(), |c| c.outbox_bytes = 256 * 1024 * 1024).await;
    // Wildcards over every topic do not see user messages: with the
    // embedded broker and RabbitMQ they live elsewhere; with ActiveMQ they
    // are topics, so such a pattern is refused.
    let mut snoop = login(&server, Via::Tcp, "eve").await;
    if test_broker() == TestBroker::ActiveMq {
        snoop
            .send(
                &Frame::new(Command::Subscribe)
                    .header("id", "all")
                    .header("destination", "/topic/>"),
            )
            .await
            .expect("send");
        expect_error_and_close(&mut snoop).await;
        snoop = login(&server, Via::Tcp, "eve").await;
        subscribe(&mut snoop, "all", "/topic/public.*", "auto").await;
    } else {
        subscribe(&mut snoop, "all", "/topic/#", "auto").await;
    }
    let mut ann = login(&server, Via::Ws, "ann").await;
    subscribe(&mut ann, "n", "/user/queue/n", "auto").await;
    let messaging = server.handle.messaging();
    // Unique texts: other tests publish on a shared broker at the same time,
    // and `#` sees all of their topic traffic.
    let secret = unique("secret-");
    let marker = unique("marker-");
    messaging
        .send_to_user("ann", "/queue/n", secret.as_str())
        .await
        .expect("send");
    assert_eq!(body(&next_message(&mut ann).await), secret);
    let public = unique("/topic/public.");
    messaging
        .publish(&public, marker.as_str())
        .await
        .expect("publish");
    // Everything the snoop sees up to the marker is someone else's topic
    // traffic, never ann's message.
    loop {
        let seen = next_message(&mut snoop).await;
        assert_ne!(
            body(&seen),
            secret,
            "a wildcard subscriber saw a user message"
        );
        if body(&seen) == marker {
            break;
        }
    }
    // Nor can a client subscribe to another user's destination by name, or
    // name the internal namespace.
    for destination in ["/user/ann/queue/n", "/stompbox-user/u.0000"] {
        let mut client = login(&server, Via::Tcp, "eve").await;
        client
            .send(
                &Frame::new(Command::Subscribe)
                    .header("id", "x")
                    .header("destination", destination),
            )
            .await
            .expect("send");
        expect_error_and_close(&mut client).await;
    }
    // User destinations take ack:auto only.
    let mut client = login(&server, Via::Tcp, "eve").await;
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "x")
                .header("destination", "/user/queue/n")
                .header("ack", "client"),
        )
        .await
        .expect("send");
    let error = expect_error_and_close(&mut client).await;
    assert!(
        error
            .headers
            .get("message")
            .is_some_and(|m| m.contains("ack:auto"))
    );
}
