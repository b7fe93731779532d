//! Application destinations: handlers, replies, subscribe-time replies,
//! hooks and ordering.

use crate::support::*;
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use stompbox::app::{
    App, ConnectInfo, Json, Messaging, Path, Reject, SendTo, SendToUser, SessionInfo, State,
    SubscriptionInfo, User,
};
use stompbox::codec::{Command, Frame};

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Chat {
    text: String,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
struct Said {
    room: String,
    user: String,
    text: String,
}

/// Events the hooks saw, in order; tests can await one.
#[derive(Clone)]
struct Events(Arc<tokio::sync::watch::Sender<Vec<String>>>);

impl Default for Events {
    fn default() -> Events {
        Events(Arc::new(tokio::sync::watch::channel(Vec::new()).0))
    }
}

impl Events {
    fn push(&self, event: String) {
        self.0.send_modify(|all| all.push(event));
    }

    fn all(&self) -> Vec<String> {
        self.0.borrow().clone()
    }

    async fn wait_for(&self, event: &str) {
        let mut seen = self.0.subscribe();
        tokio::time::timeout(WAIT, seen.wait_for(|all| all.iter().any(|e| e == event)))
            .await
            .unwrap_or_else(|_| panic!("no '{event}' in {:?}", self.all()))
            .expect("events channel");
    }
}

async fn chat(Path(room): Path<String>, user: User, Json(chat): Json<Chat>) -> Json<Said> {
    Json(Said {
        room,
        user: user.name().to_owned(),
        text: chat.text,
    })
}

async fn history(Path(room): Path<String>) -> Json<Vec<String>> {
    Json(vec![format!("{room}: first"), format!("{room}: second")])
}

async fn explode() -> String {
    panic!("handler bug")
}

async fn fail(body: String) -> Result<String, String> {
    Err(format!("cannot accept '{body}'"))
}

async fn announce(body: String) -> SendTo<String> {
    SendTo(
        "/topic/announcements".into(),
        format!("announcement: {body}"),
    )
}

async fn whisper(body: String) -> SendToUser<String> {
    SendToUser::new(format!("whisper: {body}"))
}

async fn whisper_here(body: String) -> SendToUser<String> {
    SendToUser::new(format!("here: {body}")).only_this_session()
}

async fn sequence(State(events): State<Events>, body: String) -> SendToUser<String> {
    // Yield a varying number of times so a handler that ran out of order
    // would show up as out-of-order replies.
    let n: u64 = body.parse().unwrap_or_default();
    for _ in 0..(n % 5) {
        tokio::task::yield_now().await;
    }
    events.push(format!("seq {body}"));
    SendToUser::new(body).at("/queue/seq").only_this_session()
}

fn test_app(events: Events) -> App<Events> {
    let connects = events.clone();
    let subscribes = events.clone();
    let unsubscribes = events.clone();
    let disconnects = events.clone();
    App::with_state(events)
        .message("/chat/{room}", chat)
        .subscribe("/history/{room}", history)
        .message("/explode", explode)
        .message("/fail", fail)
        .message("/announce", announce)
        .message("/whisper", whisper)
        .message("/whisper-here", whisper_here)
        .message("/seq", sequence)
        .on_connect(move |info: ConnectInfo| {
            let events = connects.clone();
            async move {
                events.push(format!("connect {:?}", info.login));
                match info.login.as_deref() {
                    Some("mallory") => Err(Reject::new("mallory may not connect")),
                    _ => Ok(()),
                }
            }
        })
        .on_subscribe(move |info: SubscriptionInfo| {
            let events = subscribes.clone();
            async move {
                events.push(format!("subscribe {}", info.destination));
                if info.destination == "/topic/forbidden" {
                    return Err(Reject::new("not for you"));
                }
                Ok(())
            }
        })
        .on_unsubscribe(move |info: SubscriptionInfo| {
            let events = unsubscribes.clone();
            async move { events.push(format!("unsubscribe {}", info.destination)) }
        })
        .on_disconnect(move |info: SessionInfo| {
            let events = disconnects.clone();
            async move { events.push(format!("disconnect {}", info.user)) }
        })
}

fn json_send(destination: &str, json: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", destination)
        .header("content-type", "application/json")
        .body(json.to_owned())
}

#[tokio::test]
async fn a_send_to_an_app_destination_runs_the_handler_and_its_reply_reaches_every_topic_subscriber()
 {
    let server = spawn_authenticated(test_app(Events::default()), |_| {}).await;
    let mut alice = login(&server, Via::Ws, "alice").await;
    let mut bob = login(&server, Via::Tcp, "bob").await;
    let mut other_room = login(&server, Via::Ws, "carol").await;
    subscribe(&mut alice, "a", "/topic/chat/1", "auto").await;
    subscribe(&mut bob, "b", "/topic/chat/1", "auto").await;
    subscribe(&mut other_room, "c", "/topic/chat/2", "auto").await;
    // Alice is a subscriber too, so no RECEIPT is asked for here: the reply
    // may reach her before it would.
    alice
        .send(&json_send("/app/chat/1", r#"{"text":"hi"}"#))
        .await
        .expect("send");
    for client in [&mut alice, &mut bob] {
        let m = next_message(client).await;
        assert_eq!(m.headers.get("destination"), Some("/topic/chat/1"));
        assert_eq!(m.headers.get("content-type"), Some("application/json"));
        let said: Said = serde_json::from_slice(&m.body).expect("json");
        assert_eq!(
            said,
            Said {
                room: "1".into(),
                user: "alice".into(),
                text: "hi".into()
            }
        );
    }
    // Room 2 saw nothing: its next message is its own room's.
    bob.send_with_receipt(json_send("/app/chat/2", r#"{"text":"two"}"#), "s2")
        .await
        .expect("send");
    let m = next_message(&mut other_room).await;
    let said: Said = serde_json::from_slice(&m.body).expect("json");
    assert_eq!(said.text, "two");
}

#[tokio::test]
async fn a_subscribe_handler_replies_once_to_that_subscriber_only() {
    let server = spawn_authenticated(test_app(Events::default()), |_| {}).await;
    let mut client = server.connect(Via::Ws).await;
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "h")
                .header("destination", "/app/history/7")
                .header("receipt", "r"),
        )
        .await
        .expect("send");
    let m = next_message(&mut client).await;
    assert_eq!(m.headers.get("subscription"), Some("h"));
    assert_eq!(m.headers.get("destination"), Some("/app/history/7"));
    let history: Vec<String> = serde_json::from_slice(&m.body).expect("json");
    assert_eq!(history, ["7: first", "7: second"]);
    assert_eq!(next(&mut client).await.command, Command::Receipt);
    // The subscription id is taken, and can be unsubscribed.
    client
        .send_with_receipt(Frame::new(Command::Unsubscribe).header("id", "h"), "u")
        .await
        .expect("unsubscribe");
}

#[tokio::test]
async fn bad_json_and_handler_panics_go_to_the_sender_only_and_nobody_else_is_affected() {
    let server = spawn_authenticated(test_app(Events::default()), |_| {}).await;
    let mut sender = login(&server, Via::Ws, "sam").await;
    subscribe(&mut sender, "e", "/user/queue/errors", "auto").await;
    let mut bystander = login(&server, Via::Ws, "bea").await;
    subscribe(&mut bystander, "e", "/user/queue/errors", "auto").await;
    subscribe(&mut bystander, "c", "/topic/chat/1", "auto").await;

    sender
        .send(&json_send("/app/chat/1", "{not json"))
        .await
        .expect("send");
    let error = next_message(&mut sender).await;
    assert_eq!(error.headers.get("destination"), Some("/user/queue/errors"));
    let body: serde_json::Value = serde_json::from_slice(&error.body).expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("invalid JSON")),
        "{body}"
    );
    assert_eq!(body["destination"], "/app/chat/1");

    sender
        .send(&json_send("/app/explode", "{}"))
        .await
        .expect("send");
    let error = next_message(&mut sender).await;
    let body: serde_json::Value = serde_json::from_slice(&error.body).expect("json");
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("internal error")),
        "{body}"
    );
    assert!(
        !body.to_string().contains("handler bug"),
        "panic text leaked: {body}"
    );

    sender
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/app/fail")
                .body("x"),
        )
        .await
        .expect("send");
    let error = next_message(&mut sender).await;
    let body: serde_json::Value = serde_json::from_slice(&error.body).expect("json");
    assert_eq!(body["error"], "cannot accept 'x'");

    // The same connection still works, and so does everyone else's.
    sender
        .send_with_receipt(json_send("/app/chat/1", r#"{"text":"fine"}"#), "ok")
        .await
        .expect("send");
    let m = next_message(&mut bystander).await;
    assert_eq!(
        m.headers.get("destination"),
        Some("/topic/chat/1"),
        "bystander got an error: {m:?}"
    );
}

#[tokio::test]
async fn replies_can_go_to_an_explicit_destination_or_back_to_the_user() {
    let server = spawn_authenticated(test_app(Events::default()), |_| {}).await;
    let mut first = login(&server, Via::Ws, "una").await;
    let mut second = login(&server, Via::Tcp, "una").await;
    let mut listener = server.connect(Via::Ws).await;
    subscribe(&mut listener, "l", "/topic/announcements", "auto").await;
    subscribe(&mut first, "w", "/user/queue/whisper", "auto").await;
    subscribe(&mut second, "w", "/user/queue/whisper", "auto").await;
    subscribe(&mut first, "h", "/user/queue/whisper-here", "auto").await;
    subscribe(&mut second, "h", "/user/queue/whisper-here", "auto").await;

    first
        .send_with_receipt(
            Frame::new(Command::Send)
                .header("destination", "/app/announce")
                .body("news"),
            "a",
        )
        .await
        .expect("send");
    assert_eq!(
        body(&next_message(&mut listener).await),
        "announcement: news"
    );

    // To every session of the user...
    first
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/app/whisper")
                .body("psst"),
        )
        .await
        .expect("send");
    for client in [&mut first, &mut second] {
        let m = next_message(client).await;
        assert_eq!(m.headers.get("destination"), Some("/user/queue/whisper"));
        assert_eq!(body(&m), "whisper: psst");
    }
    // ...or only the sending one.
    second
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/app/whisper-here")
                .body("me"),
        )
        .await
        .expect("send");
    assert_eq!(body(&next_message(&mut second).await), "here: me");
    first
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/app/whisper-here")
                .body("first"),
        )
        .await
        .expect("send");
    // `first`'s next message is its own, so `second`'s never reached it.
    assert_eq!(body(&next_message(&mut first).await), "here: first");
}

#[tokio::test]
async fn frames_from_one_session_are_handled_in_order() {
    let events = Events::default();
    let server = spawn_authenticated(test_app(events.clone()), |_| {}).await;
    let mut client = server.connect(Via::Tcp).await;
    subscribe(&mut client, "s", "/user/queue/seq", "auto").await;
    // Another session sends concurrently; its frames interleave with ours
    // in the handler, but each session's stay in order.
    let mut other = server.connect(Via::Ws).await;
    subscribe(&mut other, "s", "/user/queue/seq", "auto").await;
    let other_task = tokio::spawn(async move {
        for i in 0..1000 {
            other
                .send(
                    &Frame::new(Command::Send)
                        .header("destination", "/app/seq")
                        .body(i.to_string()),
                )
                .await
                .expect("send");
        }
        for i in 0..1000 {
            assert_eq!(body(&next_message(&mut other).await), i.to_string());
        }
    });
    for i in 0..1000 {
        client
            .send(
                &Frame::new(Command::Send)
                    .header("destination", "/app/seq")
                    .body(i.to_string()),
            )
            .await
            .expect("send");
    }
    for i in 0..1000 {
        assert_eq!(body(&next_message(&mut client).await), i.to_string());
    }
    other_task.await.expect("other session");
    assert_eq!(
        events
            .all()
            .iter()
            .filter(|e| e.starts_with("seq "))
            .count(),
        2000
    );
}

#[tokio::test]
async fn hooks_see_connect_subscribe_unsubscribe_and_exactly_one_disconnect() {
    let events = Events::default();
    let server = spawn_authenticated(test_app(events.clone()), |_| {}).await;
    // A rejected CONNECT gets an ERROR with the hook's message.
    let mut open = server.open(Via::Ws).await;
    open.send(
        &Frame::new(Command::Connect)
            .header("accept-version", "1.2")
            .header("login", "mallory")
            .header("passcode", "mallory-pw"),
    )
    .await
    .expect("send");
    let error = expect_error_and_close(&mut open).await;
    assert_eq!(
        error.headers.get("message"),
        Some("mallory may not connect")
    );
    // A rejected SUBSCRIBE too.
    let mut client = login(&server, Via::Tcp, "hugo").await;
    subscribe(&mut client, "ok", "/topic/fine", "auto").await;
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "no")
                .header("destination", "/topic/forbidden"),
        )
        .await
        .expect("send");
    let error = expect_error_and_close(&mut client).await;
    assert_eq!(error.headers.get("message"), Some("not for you"));
    // An abnormal close (socket dropped) still runs the disconnect hook.
    let mut dropped = login(&server, Via::Ws, "ivy").await;
    subscribe(&mut dropped, "x", "/topic/x", "auto").await;
    dropped
        .send_with_receipt(Frame::new(Command::Unsubscribe).header("id", "x"), "u")
        .await
        .expect("unsubscribe");
    drop(dropped);
    events.wait_for("disconnect ivy").await;
    events.wait_for("disconnect hugo").await;
    let all = events.all();
    let count = |e: &str| all.iter().filter(|x| *x == e).count();
    assert_eq!(count("connect Some(\"mallory\")"), 1);
    assert_eq!(count("disconnect hugo"), 1);
    assert_eq!(count("disconnect ivy"), 1);
    // The rejected session never connected, so it has no disconnect.
    assert_eq!(count("disconnect mallory"), 0);
    assert_eq!(count("subscribe /topic/forbidden"), 1);
    assert_eq!(count("unsubscribe /topic/x"), 1);
}

#[tokio::test]
async fn the_messaging_handle_publishes_from_outside_any_handler() {
    let server = spawn_authenticated(test_app(Events::default()), |_| {}).await;
    let mut sub = login(&server, Via::Ws, "zoe").await;
    subscribe(&mut sub, "t", "/topic/ticker", "auto").await;
    subscribe(&mut sub, "n", "/user/queue/notes", "auto").await;
    let messaging: Messaging = server.handle.messaging();
    let background = tokio::spawn(async move {
        messaging
            .publish("/topic/ticker", "tick")
            .await
            .expect("publish");
        messaging
            .publish_json("/topic/ticker", &serde_json::json!({"n": 1}))
            .await
            .expect("json");
        messaging
            .send_to_user("zoe", "/queue/notes", "note")
            .await
            .expect("user");
        let error = messaging
            .publish("/elsewhere/x", "nope")
            .await
            .expect_err("invalid destination");
        assert!(error.to_string().contains("/elsewhere/x"));
    });
    background.await.expect("background task");
    let mut ticker = Vec::new();
    let mut notes = Vec::new();
    let mut all = Vec::new();
    for _ in 0..3 {
        let m = next_message(&mut sub).await;
        all.push(body(&m).to_owned());
        match m.headers.get("subscription") {
            Some("t") => ticker.push(body(&m).to_owned()),
            _ => {
                assert_eq!(m.headers.get("destination"), Some("/user/queue/notes"));
                notes.push(body(&m).to_owned());
            }
        }
    }
    // In order per destination; across two destinations only the embedded
    // broker orders them (through a relay they are two broker queues).
    assert_eq!(ticker, ["tick", r#"{"n":1}"#]);
    assert_eq!(notes, ["note"]);
    if test_broker() == TestBroker::Embedded {
        assert_eq!(all, ["tick", r#"{"n":1}"#, "note"]);
    }
}

#[tokio::test]
async fn an_unknown_app_destination_is_an_error() {
    let server = spawn_authenticated(test_app(Events::default()), |_| {}).await;
    let mut client = server.connect(Via::Ws).await;
    client
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/app/nothing-here")
                .header("receipt", "r"),
        )
        .await
        .expect("send");
    let error = expect_error_and_close(&mut client).await;
    assert!(
        error
            .headers
            .get("message")
            .is_some_and(|m| m.contains("/app/nothing-here"))
    );
}

/// Signals between a test and a handler it holds up.
#[derive(Clone, Default)]
struct Gate {
    started: Arc<tokio::sync::Notify>,
    release: Arc<tokio::sync::Notify>,
}

async fn held(State(gate): State<Gate>) {
    gate.started.notify_one();
    gate.release.notified().await;
}

#[tokio::test]
async fn a_handler_that_awaits_does_not_stop_its_clients_deliveries() {
    let gate = Gate::default();
    let app = App::with_state(gate.clone()).message("/held", held);
    // An outbox far smaller than what arrives while the handler waits.
    let server = spawn_app(app, |c| c.outbox_bytes = 128 * 1024).await;
    let topic = unique("/topic/during-handler");
    let mut client = server.connect(Via::Ws).await;
    subscribe(&mut client, "t", &topic, "auto").await;
    client
        .send(&Frame::new(Command::Send).header("destination", "/app/held"))
        .await
        .expect("send");
    gate.started.notified().await;
    // While the handler is still waiting, 1 MB flows to the same client.
    let mut publisher = server.connect(Via::Tcp).await;
    let filler = "y".repeat(1000);
    let reading = tokio::spawn(async move {
        for i in 0..1000 {
            let m = next_message(&mut client).await;
            assert!(body(&m).starts_with(&format!("{i}:")), "message {i}");
        }
        client
    });
    for i in 0..1000 {
        let frame = Frame::new(Command::Send)
            .header("destination", &topic)
            .body(format!("{i}:{filler}"));
        if i % 50 == 49 {
            publisher
                .send_with_receipt(frame, &format!("r{i}"))
                .await
                .expect("send");
        } else {
            publisher.send(&frame).await.expect("send");
        }
    }
    let mut client = tokio::time::timeout(WAIT, reading)
        .await
        .expect("the client's deliveries stalled behind its handler")
        .expect("reader");
    gate.release.notify_one();
    client
        .send_with_receipt(Frame::new(Command::Disconnect), "bye")
        .await
        .expect("the session goes on after the handler");
    assert_eq!(server.handle.stats().slow_consumers, 0);
}

#[tokio::test]
async fn a_handler_that_awaits_does_not_stop_its_clients_heart_beats() {
    use stompbox::codec::{Decoded, Decoder, Limits};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let gate = Gate::default();
    let app = App::with_state(gate.clone()).message("/held", held);
    let server = spawn_app(app, |c| {
        c.heartbeat_send = std::time::Duration::from_millis(50);
        c.heartbeat_min = std::time::Duration::from_millis(50);
    })
    .await;
    let addr = server.tcp.trim_start_matches("tcp://").to_owned();
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream
        .write_all(
            b"CONNECT\naccept-version:1.2\nhost:x\nheart-beat:0,50\n\n\0\
              SEND\ndestination:/app/held\n\n\0",
        )
        .await
        .expect("write");
    tokio::time::timeout(WAIT, gate.started.notified())
        .await
        .expect("the handler did not start");
    // The handler is waiting: the client must still get heart-beats, or a
    // client that checks them (stomp.js) would drop the connection.
    let mut decoder = Decoder::new(Limits::default());
    let mut buf = bytes::BytesMut::new();
    let mut heartbeats = 0;
    let deadline = tokio::time::Instant::now() + WAIT;
    while heartbeats < 3 {
        let n = tokio::time::timeout_at(deadline, stream.read_buf(&mut buf))
            .await
            .expect("no heart-beats while the handler waits")
            .expect("read");
        assert!(n > 0, "closed");
        while let Some(item) = decoder.decode(&mut buf).expect("decode") {
            if matches!(item, Decoded::Heartbeat) {
                heartbeats += 1;
            }
        }
    }
    gate.release.notify_one();
}
