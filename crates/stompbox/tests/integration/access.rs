//! Access rules: who may SEND and SUBSCRIBE where, on application, broker
//! and user destinations, with the embedded broker and through the relay.

use crate::support::*;
use stompbox::auth::access::{AccessRules, Rule, Who};
use stompbox::client::Client;
use stompbox::codec::{Command, Frame};

/// The rules of a public chat: anyone reads rooms, signed-in users talk
/// through the application, only admins announce, everyone signed in has
/// their own user destinations, and support staff may write to anyone's
/// support queue.
fn chat_rules() -> AccessRules {
    AccessRules::new(vec![
        Rule::new(Who::Anyone).subscribe([
            "/topic/chat.*",
            "/topic/announcements",
            "/app/history/*",
            "/user/queue/errors",
        ]),
        Rule::new(Who::Authenticated)
            .send(["/app/chat/*"])
            .subscribe(["/user/queue/**"]),
        Rule::new(Who::Role("admin".into())).send(["/topic/announcements"]),
        Rule::new(Who::User("admin-sue".into())).send(["/user/*/queue/support"]),
        Rule::new(Who::Authenticated).send(["/topic/self.{user}"]),
    ])
    .expect("valid rules")
}

fn app() -> stompbox::app::App {
    stompbox::app::App::new()
        .message("/chat/{room}", |body: String| async move { body })
        .subscribe(
            "/history/{room}",
            |stompbox::app::Path(room): stompbox::app::Path<String>| async move {
                format!("history of {room}")
            },
        )
}

async fn chat_server() -> TestServer {
    spawn_authenticated(app(), |c| c.auth.rules = chat_rules()).await
}

/// `frame` must be refused with `access refused: {what}`, the receipt
/// echoed, and the connection closed.
async fn refused(client: &mut Client, frame: Frame, what: &str) {
    client
        .send(&frame.header("receipt", "denied"))
        .await
        .expect("send");
    let error = expect_error_and_close(client).await;
    assert_eq!(
        error.headers.get("message"),
        Some(format!("access refused: {what}").as_str())
    );
    assert_eq!(error.headers.get("receipt-id"), Some("denied"));
}

fn subscribe_frame(destination: &str) -> Frame {
    Frame::new(Command::Subscribe)
        .header("id", "s")
        .header("destination", destination)
}

fn send_frame(destination: &str, body: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", destination)
        .body(body.to_owned())
}

#[tokio::test]
async fn subscriptions_are_allowed_only_where_a_rule_allows_them() {
    let server = chat_server().await;
    let room = unique("/topic/chat.room");
    let mut guest = server.connect(Via::Ws).await;
    subscribe(&mut guest, "r", &room, "auto").await;
    subscribe(&mut guest, "e", "/user/queue/errors", "auto").await;
    // On its own connection: through the relay every test shares the
    // broker, and another test's announcement must not reach `guest`.
    let mut listener = server.connect(Via::Tcp).await;
    subscribe(&mut listener, "a", "/topic/announcements", "auto").await;
    drop(listener);
    // A subscribe handler under /app answers once.
    subscribe_now(&mut guest, "h", "/app/history/lobby", "auto").await;
    assert_eq!(body(&next_message(&mut guest).await), "history of lobby");
    refused(
        &mut guest,
        subscribe_frame("/topic/secret"),
        "SUBSCRIBE to '/topic/secret' is not allowed for anonymous sessions",
    )
    .await;
    // Anonymous sessions have only the errors queue among user destinations.
    let mut guest = server.connect(Via::Tcp).await;
    refused(
        &mut guest,
        subscribe_frame("/user/queue/notes"),
        "SUBSCRIBE to '/user/queue/notes' is not allowed for anonymous sessions",
    )
    .await;
    let mut alice = login(&server, Via::Ws, "alice").await;
    subscribe(&mut alice, "n", "/user/queue/notes", "auto").await;
}

#[tokio::test]
async fn a_wildcard_subscription_must_stay_inside_the_allowed_destinations() {
    if not_on_activemq("'#' is not ActiveMQ's wildcard; the refusals happen before any broker") {
        return;
    }
    let server = chat_server().await;
    let mut guest = server.connect(Via::Ws).await;
    // Every destination `chat.*` can match is a room: allowed.
    subscribe(&mut guest, "rooms", "/topic/chat.*", "auto").await;
    for pattern in ["/topic/chat.#", "/topic/#", "/topic/*", "/topic/chat.*.x.#"] {
        let mut client = server.connect(Via::Tcp).await;
        refused(
            &mut client,
            subscribe_frame(pattern),
            &format!("SUBSCRIBE to '{pattern}' is not allowed for anonymous sessions"),
        )
        .await;
    }
    // The allowed pattern really receives the rooms.
    let mut alice = login(&server, Via::Tcp, "alice").await;
    let room = unique("room");
    alice
        .send_with_receipt(send_frame(&format!("/app/chat/{room}"), "hi"), "r")
        .await
        .expect("send");
    // The chat handler's reply goes to /topic/chat/{room}, a slash name,
    // which `chat.*` does not match; publish to a dotted room directly
    // through the server instead.
    server
        .handle
        .messaging()
        .publish(&format!("/topic/chat.{room}"), "to the room")
        .await
        .expect("publish");
    assert_eq!(body(&next_message(&mut guest).await), "to the room");
}

#[tokio::test]
async fn sends_are_allowed_only_where_a_rule_allows_them() {
    let server = chat_server().await;
    let mut guest = server.connect(Via::Ws).await;
    refused(
        &mut guest,
        send_frame("/app/chat/lobby", "hi"),
        "SEND to '/app/chat/lobby' is not allowed for anonymous sessions",
    )
    .await;
    let mut alice = login(&server, Via::Ws, "alice").await;
    subscribe(&mut alice, "l", "/topic/chat.lobby", "auto").await;
    alice
        .send_with_receipt(send_frame("/app/chat/lobby", "hi"), "ok")
        .await
        .expect("authenticated users talk through the application");
    refused(
        &mut alice,
        send_frame("/topic/announcements", "free beer"),
        "SEND to '/topic/announcements' is not allowed for user 'alice'",
    )
    .await;
    let mut admin = login(&server, Via::Tcp, "admin-ann").await;
    let mut reader = server.connect(Via::Ws).await;
    subscribe(&mut reader, "a", "/topic/announcements", "auto").await;
    send_receipted(&mut admin, "/topic/announcements", "maintenance at noon").await;
    let message = next_message(&mut reader).await;
    assert_eq!(body(&message), "maintenance at noon");
    assert_eq!(message.headers.get("stompbox-sender"), Some("admin-ann"));
    // Inside a transaction the SEND is refused when sent, not at COMMIT.
    let mut bob = login(&server, Via::Tcp, "bob").await;
    bob.send(&Frame::new(Command::Begin).header("transaction", "t"))
        .await
        .expect("begin");
    refused(
        &mut bob,
        send_frame("/topic/announcements", "x").header("transaction", "t"),
        "SEND to '/topic/announcements' is not allowed for user 'bob'",
    )
    .await;
}

#[tokio::test]
async fn writing_to_another_users_destinations_needs_a_rule() {
    let server = chat_server().await;
    let mut bob = login(&server, Via::Ws, "bob").await;
    subscribe(&mut bob, "s", "/user/queue/support", "auto").await;
    let mut alice = login(&server, Via::Tcp, "alice").await;
    refused(
        &mut alice,
        send_frame("/user/bob/queue/support", "from alice"),
        "SEND to '/user/bob/queue/support' is not allowed for user 'alice'",
    )
    .await;
    let mut sue = login(&server, Via::Tcp, "admin-sue").await;
    send_receipted(&mut sue, "/user/bob/queue/support", "ticket 7 solved").await;
    let message = next_message(&mut bob).await;
    assert_eq!(body(&message), "ticket 7 solved");
    assert_eq!(message.headers.get("stompbox-sender"), Some("admin-sue"));
    refused(
        &mut sue,
        send_frame("/user/bob/queue/notes", "x"),
        "SEND to '/user/bob/queue/notes' is not allowed for user 'admin-sue'",
    )
    .await;
}

#[tokio::test]
async fn the_user_placeholder_stands_for_the_sessions_own_name() {
    let server = chat_server().await;
    let mut carol = login(&server, Via::Ws, "carol").await;
    send_receipted(&mut carol, "/topic/self.carol", "mine").await;
    refused(
        &mut carol,
        send_frame("/topic/self.dave", "not mine"),
        "SEND to '/topic/self.dave' is not allowed for user 'carol'",
    )
    .await;
    // An anonymous session has no name to stand in.
    let mut guest = server.connect(Via::Tcp).await;
    refused(
        &mut guest,
        send_frame("/topic/self.carol", "x"),
        "SEND to '/topic/self.carol' is not allowed for anonymous sessions",
    )
    .await;
}

#[tokio::test]
async fn with_rules_nothing_is_allowed_that_no_rule_names() {
    let server = spawn_authenticated(app(), |c| {
        c.auth.rules = AccessRules::new(Vec::new()).expect("no rules");
    })
    .await;
    let mut alice = login(&server, Via::Ws, "alice").await;
    refused(
        &mut alice,
        subscribe_frame("/topic/anything"),
        "SUBSCRIBE to '/topic/anything' is not allowed for user 'alice'",
    )
    .await;
}

#[tokio::test]
async fn names_a_relayed_broker_would_split_are_refused() {
    // ActiveMQ reads `/topic/public.x,>` as two destinations, the second a
    // wildcard over every topic, user destinations included; no check made
    // on the whole name would see it. The relay refuses such names.
    if test_broker() == TestBroker::Embedded {
        println!("the embedded broker takes ',' and '?' as plain characters");
        return;
    }
    let server = spawn_authenticated(app(), |_| {}).await;
    for (frame, destination) in [
        (subscribe_frame("/topic/public.x,>"), "/topic/public.x,>"),
        (
            send_frame("/queue/public.y,admin", "x"),
            "/queue/public.y,admin",
        ),
        (
            subscribe_frame("/queue/a?consumer.exclusive=true"),
            "/queue/a?consumer.exclusive=true",
        ),
    ] {
        let mut client = server.connect(Via::Tcp).await;
        client
            .send(&frame.header("receipt", "r"))
            .await
            .expect("send");
        let error = expect_error_and_close(&mut client).await;
        let message = error.headers.get("message").unwrap_or_default();
        assert!(
            message.contains(destination) && message.contains("',' and '?' are not allowed"),
            "{message}"
        );
    }
    // The server's own publishing refuses them as well.
    let refused = server.handle.messaging().publish("/topic/x,>", "x").await;
    assert!(refused.is_err());
}
