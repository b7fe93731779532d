//! The chat over a real server: STOMP clients connect, join rooms, talk,
//! and see exactly what the page would; without user accounts (nicknames)
//! and with them (password users).

use std::collections::VecDeque;
use std::sync::OnceLock;
use std::time::Duration;
use stompbox::auth::{PasswordAuthenticator, PasswordConfig, PasswordUser};
use stompbox::client::{Client, ClientError};
use stompbox::codec::{Command, Frame};
use stompbox::{Server, ServerConfig, ServerHandle};
use stompbox_chat::{
    ChatMessage, ChatState, Event, HISTORY_LEN, JOIN_NOTICE_BURST, MAX_OPEN_ROOMS,
    MAX_ROOMS_PER_SESSION, PageSettings, RoomSummary,
};

const WAIT: Duration = Duration::from_secs(10);

/// The password users of the servers with accounts, as (name, password).
const USERS: [(&str, &str); 2] = [("alice", "alice's secret"), ("bob", "bob's secret")];

struct Chat {
    server: ServerHandle,
    ws: String,
}

/// Whether the server has user accounts, and whether it lets guests in.
#[derive(Clone, Copy)]
enum Accounts {
    /// No authenticator: every session is anonymous, logins are nicknames.
    Off,
    /// Password users; guests let in or not.
    On { guests: bool },
}

async fn start() -> Chat {
    start_with(Accounts::Off).await
}

async fn start_with(accounts: Accounts) -> Chat {
    start_with_config(accounts, |_| {}).await
}

async fn start_with_config(accounts: Accounts, configure: impl FnOnce(&mut ServerConfig)) -> Chat {
    let mut config = ServerConfig::default();
    config.http_addr = ([127, 0, 0, 1], 0).into();
    // Refusals are part of these tests: the delay that slows down password
    // guessing would only slow them down.
    config.auth.failure_delay = Duration::ZERO;
    if let Accounts::On { guests } = accounts {
        config.auth.allow_anonymous = guests;
    }
    configure(&mut config);
    let chat = ChatState::new();
    let builder = Server::builder(config).app(stompbox_chat::app(&chat));
    let builder = match accounts {
        Accounts::Off => builder.routes(stompbox_chat::routes()),
        Accounts::On { .. } => {
            builder
                .authenticator(password_users())
                .routes(stompbox_chat::routes_with(
                    "/ws",
                    PageSettings { accounts: true },
                ))
        }
    };
    let server = builder.bind().await.expect("bind");
    chat.attach(server.messaging());
    let server = server.spawn();
    let addr = server.http_addr().expect("bound address");
    Chat {
        server,
        ws: format!("ws://{addr}/ws"),
    }
}

/// An authenticator for [`USERS`]. The argon2 hashes are made once for all
/// tests: hashing is deliberately slow.
fn password_users() -> PasswordAuthenticator {
    static HASHES: OnceLock<Vec<String>> = OnceLock::new();
    let hashes = HASHES.get_or_init(|| {
        USERS
            .iter()
            .map(|(_, password)| stompbox::auth::hash_password(password).expect("hash"))
            .collect()
    });
    let users = USERS
        .iter()
        .zip(hashes)
        .map(|((name, _), hash)| PasswordUser::new(*name, hash.clone()))
        .collect();
    PasswordAuthenticator::new(PasswordConfig::new(users)).expect("password users")
}

/// The CONNECT headers of the password user `name` from [`USERS`].
fn credentials(name: &str) -> [(&'static str, &'static str); 2] {
    let (login, passcode) = USERS
        .iter()
        .find(|(user, _)| *user == name)
        .copied()
        .unwrap_or_else(|| panic!("no test user {name}"));
    [("login", login), ("passcode", passcode)]
}

/// A chat participant: a raw STOMP client that keeps frames that arrived
/// while it waited for a receipt.
struct Peer {
    client: Client,
    buffered: VecDeque<Frame>,
    next: u32,
}

impl Peer {
    /// Connects with `login` as the only credential: a nickname on a
    /// server without accounts.
    async fn join(chat: &Chat, login: Option<&str>) -> Peer {
        let headers: Vec<(&str, &str)> = login.map(|l| ("login", l)).into_iter().collect();
        Peer::join_with(chat, &headers).await
    }

    /// Connects with these CONNECT headers.
    async fn join_with(chat: &Chat, headers: &[(&str, &str)]) -> Peer {
        let (client, _) = Client::connect(&chat.ws, headers).await.expect("connect");
        let mut peer = Peer {
            client,
            buffered: VecDeque::new(),
            next: 0,
        };
        peer.subscribe("/user/queue/errors").await;
        peer
    }

    fn id(&mut self) -> String {
        self.next += 1;
        format!("s{}", self.next)
    }

    /// Sends `frame` with a receipt and waits for it.
    async fn confirmed(&mut self, frame: Frame) {
        let receipt = self.id();
        self.client
            .send(&frame.header("receipt", &receipt))
            .await
            .expect("send");
        loop {
            let frame = self.frame().await;
            match frame.command {
                Command::Receipt if frame.headers.get("receipt-id") == Some(&receipt) => return,
                Command::Message => self.buffered.push_back(frame),
                _ => panic!("expected RECEIPT {receipt}, got {frame:?}"),
            }
        }
    }

    async fn frame(&mut self) -> Frame {
        match self.client.next_frame_within(WAIT).await {
            Ok(Some(frame)) => frame,
            other => panic!("expected a frame, got {other:?}"),
        }
    }

    /// Subscribes (with a receipt) and returns the subscription id.
    async fn subscribe(&mut self, destination: &str) -> String {
        let id = self.id();
        let frame = Frame::new(Command::Subscribe)
            .header("id", &id)
            .header("destination", destination);
        self.confirmed(frame).await;
        id
    }

    async fn unsubscribe(&mut self, id: &str) {
        self.confirmed(Frame::new(Command::Unsubscribe).header("id", id))
            .await;
    }

    async fn say(&mut self, room: &str, json: &str) {
        let frame = Frame::new(Command::Send)
            .header("destination", &format!("/app/chat/{room}"))
            .header("content-type", "application/json")
            .body(json.to_owned());
        self.client.send(&frame).await.expect("send");
    }

    /// The next MESSAGE frame.
    async fn message(&mut self) -> Frame {
        if let Some(frame) = self.buffered.pop_front() {
            return frame;
        }
        let frame = self.frame().await;
        assert_eq!(frame.command, Command::Message, "{frame:?}");
        frame
    }

    /// The next chat event.
    async fn event(&mut self) -> Event {
        let frame = self.message().await;
        serde_json::from_slice(&frame.body)
            .unwrap_or_else(|e| panic!("not a chat event ({e}): {frame:?}"))
    }

    /// Who the chat says this session is: the reply to `/app/chat/me`.
    async fn me(&mut self) -> (String, bool) {
        self.subscribe("/app/chat/me").await;
        match self.event().await {
            Event::Me { user, verified } => (user, verified),
            other => panic!("expected who I am, got {other:?}"),
        }
    }

    /// Reads events until a presence snapshot of `room` lists exactly
    /// `want` (names, sorted), skipping the rest; returns its count.
    async fn presence_until(&mut self, room: &str, want: &[&str]) -> usize {
        loop {
            if let Event::Presence {
                room: r,
                people,
                count,
                ..
            } = self.event().await
                && r == room
                && people
                    .iter()
                    .map(|p| p.user.as_str())
                    .eq(want.iter().copied())
            {
                return count;
            }
        }
    }

    /// Reads events until a room list satisfies `want`; returns it.
    async fn rooms_until(&mut self, want: impl Fn(&[RoomSummary]) -> bool) -> Vec<RoomSummary> {
        loop {
            if let Event::Rooms { rooms, limit, .. } = self.event().await {
                assert_eq!(limit, MAX_OPEN_ROOMS);
                if want(&rooms) {
                    return rooms;
                }
            }
        }
    }

    async fn chat_message(&mut self) -> ChatMessage {
        match self.event().await {
            Event::Message(message) => message,
            other => panic!("expected a message, got {other:?}"),
        }
    }

    /// The next error at /user/queue/errors.
    async fn error(&mut self) -> String {
        let frame = self.message().await;
        assert!(
            frame
                .headers
                .get("destination")
                .is_some_and(|d| d.ends_with("/queue/errors")),
            "{frame:?}"
        );
        let body: serde_json::Value = serde_json::from_slice(&frame.body).expect("JSON error");
        body["error"].as_str().expect("error text").to_owned()
    }
}

#[tokio::test]
async fn a_message_reaches_everyone_in_its_room_and_nobody_else() {
    let chat = start().await;
    let mut alice = Peer::join(&chat, Some("alice")).await;
    let mut bob = Peer::join(&chat, Some("bob")).await;
    let mut carol = Peer::join(&chat, Some("carol")).await;
    alice.subscribe("/topic/chat/1").await;
    bob.subscribe("/topic/chat/1").await;
    carol.subscribe("/topic/chat/2").await;
    // Bob's arrival is news to Alice, not to Bob himself.
    assert!(
        matches!(alice.event().await, Event::Join { ref room, ref user, .. } if room == "1" && user == "bob")
    );

    alice.say("1", r#"{"text":"  hello, room 1  "}"#).await;
    let said = alice.chat_message().await;
    assert_eq!(
        (said.room.as_str(), said.user.as_str(), said.text.as_str()),
        ("1", "alice", "hello, room 1")
    );
    assert_eq!(bob.chat_message().await, said);
    bob.say("1", r#"{"text":"hi alice"}"#).await;
    assert_eq!(alice.chat_message().await.text, "hi alice");
    assert_eq!(bob.chat_message().await.text, "hi alice");

    // Carol, in room 2, saw none of it: the first thing she gets is room 2's.
    bob.say("2", r#"{"text":"anyone in 2?"}"#).await;
    let first = carol.chat_message().await;
    assert_eq!(
        (first.room.as_str(), first.text.as_str()),
        ("2", "anyone in 2?")
    );
    chat.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn bad_messages_and_rooms_are_errors_for_the_sender_only() {
    let chat = start().await;
    let mut alice = Peer::join(&chat, Some("alice")).await;
    let mut bob = Peer::join(&chat, Some("bob")).await;
    bob.subscribe("/topic/chat/1").await;

    alice.say("1", r#"{"text":"   "}"#).await;
    assert_eq!(alice.error().await, "a message needs some text");
    alice
        .say("1", &format!(r#"{{"text":"{}"}}"#, "é".repeat(501)))
        .await;
    let e = alice.error().await;
    assert!(
        e.contains("at most 500 characters") && e.contains("501"),
        "{e}"
    );
    alice.say("1", "not json").await;
    assert!(alice.error().await.contains("invalid JSON"));
    alice.say("a%20b", r#"{"text":"x"}"#).await;
    assert!(alice.error().await.contains("is not a room name"));
    alice.say(&"r".repeat(33), r#"{"text":"x"}"#).await;
    assert!(alice.error().await.contains("is not a room name"));

    // Exactly 500 characters is fine, and it is the first thing Bob sees.
    let longest = "é".repeat(500);
    alice.say("1", &format!(r#"{{"text":"{longest}"}}"#)).await;
    assert_eq!(bob.chat_message().await.text, longest);
    chat.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn history_replies_to_the_subscriber_with_the_last_messages_of_the_room() {
    let chat = start().await;
    let mut alice = Peer::join(&chat, Some("alice")).await;
    for i in 0..HISTORY_LEN + 5 {
        alice.say("1", &format!(r#"{{"text":"m{i}"}}"#)).await;
    }
    alice.say("2", r#"{"text":"elsewhere"}"#).await;
    // Every SEND is handled in order; a receipt after them means all are in.
    alice
        .confirmed(Frame::new(Command::Send).header("destination", "/topic/sync"))
        .await;

    let mut bob = Peer::join(&chat, Some("bob")).await;
    let id = bob.id();
    bob.client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", &id)
                .header("destination", "/app/chat/1/history"),
        )
        .await
        .expect("subscribe");
    let frame = bob.message().await;
    assert_eq!(frame.headers.get("subscription"), Some(id.as_str()));
    let Event::History { room, messages } = serde_json::from_slice(&frame.body).expect("event")
    else {
        panic!("expected history: {frame:?}");
    };
    assert_eq!(room, "1");
    let texts: Vec<&str> = messages.iter().map(|m| m.text.as_str()).collect();
    let expected: Vec<String> = (5..HISTORY_LEN + 5).map(|i| format!("m{i}")).collect();
    assert_eq!(texts, expected);
    assert!(messages.iter().all(|m| m.user == "alice" && m.room == "1"));

    // An empty room has an empty history; a bad name is an error.
    bob.subscribe("/app/chat/empty/history").await;
    assert!(matches!(bob.event().await, Event::History { messages, .. } if messages.is_empty()));
    bob.subscribe("/app/chat/no%20such/history").await;
    assert!(bob.error().await.contains("is not a room name"));
    chat.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn join_and_leave_notices_follow_subscriptions_and_disconnects() {
    let chat = start().await;
    let mut alice = Peer::join(&chat, Some("alice")).await;
    alice.subscribe("/topic/chat/1").await;

    let mut bob = Peer::join(&chat, Some("bob")).await;
    let sub = bob.subscribe("/topic/chat/1").await;
    // A second subscription to the same room is not a second arrival...
    let again = bob.subscribe("/topic/chat/1").await;
    assert!(matches!(alice.event().await, Event::Join { user, .. } if user == "bob"));
    bob.unsubscribe(&again).await;
    // ...and dropping one of two is not leaving.
    bob.unsubscribe(&sub).await;
    assert!(matches!(alice.event().await, Event::Leave { user, .. } if user == "bob"));

    bob.subscribe("/topic/chat/1").await;
    assert!(matches!(alice.event().await, Event::Join { user, .. } if user == "bob"));
    // However a session ends, it leaves its rooms.
    drop(bob);
    assert!(
        matches!(alice.event().await, Event::Leave { room, user, .. } if room == "1" && user == "bob")
    );

    // An anonymous user is a guest named after its session.
    let mut guest = Peer::join(&chat, None).await;
    guest.subscribe("/topic/chat/1").await;
    let Event::Join { user, .. } = alice.event().await else {
        panic!("expected a join");
    };
    assert!(
        user.starts_with("guest-") && user.len() == "guest-".len() + 8,
        "{user}"
    );
    guest.say("1", r#"{"text":"hi"}"#).await;
    assert_eq!(alice.chat_message().await.user, user);
    chat.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn subscription_churn_cannot_flood_a_room_with_notices() {
    // The server's own limit on SUBSCRIBE/UNSUBSCRIBE per second is off, so
    // this is the chat's notice budget alone (and the test stays short).
    let chat = start_with_config(Accounts::Off, |c| c.subscriptions_per_sec = 0).await;
    let mut alice = Peer::join(&chat, Some("alice")).await;
    alice.subscribe("/topic/chat/1").await;
    // Every SUBSCRIBE and UNSUBSCRIBE below changes who is in room 1 and
    // the room list: their snapshots must not swamp alice either.
    alice.subscribe("/topic/presence/1").await;
    alice.subscribe("/topic/rooms").await;
    let mut mallory = Peer::join(&chat, Some("mallory")).await;
    // Alice reads nothing while the churn goes on.
    const PAIRS: usize = 1_000;
    for i in 0..PAIRS {
        let id = format!("churn-{i}");
        let subscribe = Frame::new(Command::Subscribe)
            .header("id", &id)
            .header("destination", "/topic/chat/1");
        mallory.client.send(&subscribe).await.expect("SUBSCRIBE");
        let unsubscribe = Frame::new(Command::Unsubscribe).header("id", &id);
        mallory
            .client
            .send(&unsubscribe)
            .await
            .expect("UNSUBSCRIBE");
    }
    mallory.subscribe("/topic/chat/1").await;
    mallory.say("1", r#"{"text":"done"}"#).await;
    let mut notices = 0;
    loop {
        match alice.event().await {
            Event::Join { user, .. } | Event::Leave { user, .. } => {
                assert_eq!(user, "mallory");
                notices += 1;
            }
            Event::Message(message) => {
                assert_eq!(message.text, "done");
                break;
            }
            Event::Presence { .. } | Event::Rooms { .. } => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    let budget = 2 * usize::try_from(JOIN_NOTICE_BURST).expect("small");
    assert!(
        notices <= budget,
        "{PAIRS} subscribe/unsubscribe pairs made {notices} notices (budget {budget})"
    );
    assert_eq!(chat.server.stats().slow_consumers, 0);
    chat.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn room_subscriptions_are_checked_and_bounded() {
    let chat = start().await;
    let mut alice = Peer::join(&chat, Some("alice")).await;
    for i in 0..MAX_ROOMS_PER_SESSION {
        alice.subscribe(&format!("/topic/chat/{i}")).await;
    }
    // Past the limit the SUBSCRIBE is refused with an ERROR.
    alice
        .client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "one-too-many")
                .header("destination", "/topic/chat/more"),
        )
        .await
        .expect("send");
    let error = alice.frame().await;
    assert_eq!(error.command, Command::Error);
    assert!(
        error
            .headers
            .get("message")
            .is_some_and(|m| m.contains("at most")),
        "{error:?}"
    );

    let mut bob = Peer::join(&chat, Some("bob")).await;
    bob.client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "x")
                .header("destination", "/topic/chat/not a room"),
        )
        .await
        .expect("send");
    let error = bob.frame().await;
    assert_eq!(error.command, Command::Error);
    assert!(
        error
            .headers
            .get("message")
            .is_some_and(|m| m.contains("not a room name")),
        "{error:?}"
    );
    chat.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn logins_must_be_valid_names() {
    let chat = start().await;
    for bad in ["two words", "a:b", "guest-12345678", &"n".repeat(33)] {
        match Client::connect(&chat.ws, &[("login", bad)]).await {
            Err(ClientError::Server(message)) => {
                assert!(
                    message.contains("not a valid chat name") || message.contains("anonymous"),
                    "{bad}: {message}"
                );
            }
            other => panic!("{bad}: expected a refusal, got {other:?}"),
        }
    }
    let mut yunseo = Peer::join(&chat, Some("윤서")).await;
    yunseo.subscribe("/topic/chat/1").await;
    yunseo.say("1", r#"{"text":"안녕하세요"}"#).await;
    let said = yunseo.chat_message().await;
    assert_eq!(
        (said.user.as_str(), said.text.as_str()),
        ("윤서", "안녕하세요")
    );
    chat.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_page_and_its_client_are_served() {
    let chat = start().await;
    let addr = chat.server.http_addr().expect("address");
    for (path, content_type, needle) in [
        (
            "/",
            "text/html",
            "<meta name=\"stomp-endpoint\" content=\"/ws\">",
        ),
        (
            "/",
            "text/html",
            r#"<html lang="en" data-accounts="false">"#,
        ),
        ("/stomp.js", "text/javascript", "export class StompClient"),
    ] {
        let response = http_get(addr, path).await;
        assert!(response.starts_with("HTTP/1.1 200"), "{path}: {response}");
        assert!(
            response
                .to_ascii_lowercase()
                .contains(&format!("content-type: {content_type}")),
            "{path}: {response}"
        );
        assert!(response.contains(needle), "{path}: {needle}");
    }
    chat.server.shutdown().await.expect("shutdown");

    // With accounts the page is told so, and shows its login form.
    let chat = start_with(Accounts::On { guests: false }).await;
    let addr = chat.server.http_addr().expect("address");
    let page = http_get(addr, "/").await;
    assert!(
        page.contains(r#"<html lang="en" data-accounts="true">"#),
        "{page}"
    );
    assert!(page.contains(r#"type="password""#));
    chat.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn nicknames_are_unverified_display_names_that_reach_no_users_messages() {
    let chat = start().await;
    // Without accounts anyone may call themselves alice...
    let mut alice = Peer::join(&chat, Some("alice")).await;
    assert_eq!(alice.me().await, ("alice".to_owned(), false));
    alice.subscribe("/user/queue/private").await;
    alice.subscribe("/topic/chat/1").await;
    let mut bob = Peer::join(&chat, Some("bob")).await;
    bob.subscribe("/topic/chat/1").await;
    assert!(matches!(
        alice.event().await,
        Event::Join { ref user, verified: false, .. } if user == "bob"
    ));

    // ...but the name is shown unverified on everything the room sees,
    bob.say("1", r#"{"text":"hi alice?"}"#).await;
    let said = alice.chat_message().await;
    assert_eq!((said.user.as_str(), said.verified), ("bob", false));
    assert_eq!(bob.chat_message().await, said);
    alice.say("1", r#"{"text":"it's me"}"#).await;
    let said = bob.chat_message().await;
    assert_eq!((said.user.as_str(), said.verified), ("alice", false));
    assert_eq!(alice.chat_message().await, said);

    // ...and it is no identity: what the application sends to user alice
    // does not reach her. (A client cannot even try: anonymous sessions may
    // not send to other users.)
    chat.server
        .messaging()
        .send_to_user("alice", "/queue/private", "for the real alice")
        .await
        .expect("send to user");
    // Sent after it: the first thing she gets.
    bob.say("1", r#"{"text":"after"}"#).await;
    let next = alice.chat_message().await;
    assert_eq!((next.user.as_str(), next.text.as_str()), ("bob", "after"));

    // Leaving, too, is announced unverified.
    drop(bob);
    assert!(matches!(
        alice.event().await,
        Event::Leave { ref user, verified: false, .. } if user == "bob"
    ));
    chat.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn with_accounts_the_verified_name_is_shown_and_marked() {
    let chat = start_with(Accounts::On { guests: true }).await;
    let mut alice = Peer::join_with(&chat, &credentials("alice")).await;
    assert_eq!(alice.me().await, ("alice".to_owned(), true));
    alice.subscribe("/user/queue/private").await;
    alice.subscribe("/topic/chat/1").await;
    let mut bob = Peer::join_with(&chat, &credentials("bob")).await;
    bob.subscribe("/topic/chat/1").await;
    assert!(matches!(
        alice.event().await,
        Event::Join { ref user, verified: true, .. } if user == "bob"
    ));

    bob.say("1", r#"{"text":"hello, verified alice"}"#).await;
    let said = alice.chat_message().await;
    assert_eq!((said.user.as_str(), said.verified), ("bob", true));
    assert_eq!(bob.chat_message().await, said);
    // History keeps the mark.
    bob.subscribe("/app/chat/1/history").await;
    match bob.event().await {
        Event::History { messages, .. } => assert_eq!(messages, vec![said]),
        other => panic!("expected history, got {other:?}"),
    }

    // The verified name is an identity: her /user messages reach her.
    bob.confirmed(
        Frame::new(Command::Send)
            .header("destination", "/user/alice/queue/private")
            .body("for alice".to_owned()),
    )
    .await;
    let private = alice.message().await;
    assert_eq!(&private.body[..], b"for alice");

    // A guest is unverified, and named after its session.
    let mut guest = Peer::join_with(&chat, &[]).await;
    let (name, verified) = guest.me().await;
    assert!(name.starts_with("guest-") && !verified, "{name}");
    guest.subscribe("/topic/chat/1").await;
    assert!(matches!(
        alice.event().await,
        Event::Join { ref user, verified: false, .. } if *user == name
    ));
    guest.say("1", r#"{"text":"hi all"}"#).await;
    let said = alice.chat_message().await;
    assert_eq!((said.user.as_str(), said.verified), (name.as_str(), false));

    drop(bob);
    assert!(matches!(
        alice.event().await,
        Event::Leave { ref user, verified: true, .. } if user == "bob"
    ));
    chat.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn with_accounts_a_users_name_cannot_be_taken_as_a_nickname() {
    let chat = start_with(Accounts::On { guests: true }).await;
    // A login is a claim the server checks, even when guests are let in: no
    // passcode, a wrong one, or an unknown user are all refused alike (so
    // the page shows the message, and knows not to retry).
    for headers in [
        vec![("login", "alice")],
        vec![("login", "alice"), ("passcode", "bob's secret")],
        vec![("login", "mallory"), ("passcode", "anything")],
    ] {
        match Client::connect(&chat.ws, &headers).await {
            Err(ClientError::Server(message)) => {
                assert_eq!(
                    message, "access refused: wrong login or passcode",
                    "{headers:?}"
                );
            }
            other => panic!("{headers:?}: expected a refusal, got {other:?}"),
        }
    }
    chat.server.shutdown().await.expect("shutdown");

    // Without guests, no credentials is refused with its own message, which
    // the page tells apart from a wrong password.
    let chat = start_with(Accounts::On { guests: false }).await;
    match Client::connect(&chat.ws, &[]).await {
        Err(ClientError::Server(message)) => {
            assert!(
                message.starts_with("access refused: authentication required"),
                "{message}"
            );
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    let mut alice = Peer::join_with(&chat, &credentials("alice")).await;
    assert_eq!(alice.me().await, ("alice".to_owned(), true));
    chat.server.shutdown().await.expect("shutdown");
}

/// A bare HTTP/1.1 GET, to keep an HTTP client out of the dependencies.
async fn http_get(addr: std::net::SocketAddr, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let request = format!("GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n");
    stream
        .write_all(request.as_bytes())
        .await
        .expect("write request");
    let mut response = Vec::new();
    tokio::time::timeout(WAIT, stream.read_to_end(&mut response))
        .await
        .expect("response in time")
        .expect("read response");
    String::from_utf8_lossy(&response).into_owned()
}

/// A client cannot post room events itself: straight to the room's topic it
/// could write any name and a "verified" mark (the page also ignores any
/// frame a client sent there).
#[tokio::test]
async fn clients_cannot_send_room_events_straight_to_the_topic() {
    let chat = start_with(Accounts::On { guests: true }).await;
    let mut guest = Peer::join_with(&chat, &[]).await;
    let forged = r#"{"type":"message","id":999,"room":"lobby","user":"alice","verified":true,"text":"send me your password","time":1}"#;
    guest
        .client
        .send(
            &Frame::new(Command::Send)
                .header("destination", "/topic/chat/lobby")
                .header("content-type", "application/json")
                .header("receipt", "forged")
                .body(forged.to_owned()),
        )
        .await
        .expect("send");
    let frame = guest
        .client
        .next_frame_within(WAIT)
        .await
        .expect("read")
        .expect("a frame");
    assert_eq!(frame.command, Command::Error, "{frame:?}");
    assert_eq!(
        frame.headers.get("message"),
        Some("send chat messages to /app/chat/{room}, not to '/topic/chat/lobby'")
    );
}

#[tokio::test]
async fn presence_lists_who_is_in_a_room_through_joins_leaves_and_drops() {
    let chat = start().await;
    let mut alice = Peer::join(&chat, Some("alice")).await;
    alice.subscribe("/topic/presence/1").await;
    alice.subscribe("/topic/chat/1").await;
    assert_eq!(alice.presence_until("1", &["alice"]).await, 1);

    let mut bob = Peer::join(&chat, Some("bob")).await;
    let sub = bob.subscribe("/topic/chat/1").await;
    // Two connections of one name are one person.
    let mut bob_again = Peer::join(&chat, Some("bob")).await;
    bob_again.subscribe("/topic/chat/1").await;
    assert_eq!(alice.presence_until("1", &["alice", "bob"]).await, 2);

    // Asked for, the list comes to the asker alone, at once.
    let mut carol = Peer::join(&chat, Some("carol")).await;
    carol.subscribe("/app/chat/1/presence").await;
    let Event::Presence {
        room,
        people,
        count,
        ..
    } = carol.event().await
    else {
        panic!("expected presence");
    };
    assert_eq!((room.as_str(), count), ("1", 2));
    assert!(people.iter().all(|p| !p.verified));

    // Bob is there until his last connection leaves, by UNSUBSCRIBE or by
    // dropping the connection.
    bob.unsubscribe(&sub).await;
    drop(bob_again);
    assert_eq!(alice.presence_until("1", &["alice"]).await, 1);
    bob.subscribe("/topic/chat/1").await;
    assert_eq!(alice.presence_until("1", &["alice", "bob"]).await, 2);
    drop(bob);
    assert_eq!(alice.presence_until("1", &["alice"]).await, 1);

    // Room names are checked on the presence topic too.
    carol
        .client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "bad")
                .header("destination", "/topic/presence/not a room"),
        )
        .await
        .expect("send");
    let error = carol.frame().await;
    assert_eq!(error.command, Command::Error);
    chat.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn with_accounts_presence_shows_verified_names() {
    let chat = start_with(Accounts::On { guests: false }).await;
    let mut alice = Peer::join_with(&chat, &credentials("alice")).await;
    alice.subscribe("/topic/presence/lobby").await;
    alice.subscribe("/topic/chat/lobby").await;
    let mut bob = Peer::join_with(&chat, &credentials("bob")).await;
    bob.subscribe("/topic/chat/lobby").await;
    loop {
        if let Event::Presence { people, .. } = alice.event().await
            && people.len() == 2
        {
            assert!(people.iter().all(|p| p.verified), "{people:?}");
            break;
        }
    }
    chat.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn the_room_list_follows_rooms_opening_and_emptying() {
    let chat = start().await;
    let mut alice = Peer::join(&chat, Some("alice")).await;
    alice.subscribe("/topic/rooms").await;
    alice.subscribe("/topic/chat/lobby").await;
    alice
        .rooms_until(|rooms| rooms == [summary("lobby", 1)])
        .await;

    let mut bob = Peer::join(&chat, Some("bob")).await;
    bob.subscribe("/topic/chat/lobby").await;
    let garden = bob.subscribe("/topic/chat/garden").await;
    // The busiest room first.
    alice
        .rooms_until(|rooms| rooms == [summary("lobby", 2), summary("garden", 1)])
        .await;

    // Asked for, the list comes to the asker at once.
    let mut carol = Peer::join(&chat, Some("carol")).await;
    carol.subscribe("/app/chat/rooms").await;
    assert!(matches!(carol.event().await, Event::Rooms { rooms, .. } if rooms.len() == 2));

    // An empty room leaves the list, however its last member went.
    bob.unsubscribe(&garden).await;
    alice
        .rooms_until(|rooms| rooms == [summary("lobby", 2)])
        .await;
    drop(bob);
    alice
        .rooms_until(|rooms| rooms == [summary("lobby", 1)])
        .await;
    chat.server.shutdown().await.expect("shutdown");
}

fn summary(room: &str, count: usize) -> RoomSummary {
    RoomSummary {
        room: room.to_owned(),
        count,
    }
}

#[tokio::test]
async fn rooms_past_the_limit_are_refused_with_a_clear_error() {
    let chat = start().await;
    let mut openers = Vec::new();
    for chunk in (0..MAX_OPEN_ROOMS)
        .collect::<Vec<_>>()
        .chunks(MAX_ROOMS_PER_SESSION)
    {
        let mut peer = Peer::join(&chat, None).await;
        for i in chunk {
            peer.subscribe(&format!("/topic/chat/r{i}")).await;
        }
        openers.push(peer);
    }

    // The page's question first: an error for the asker, connection intact.
    let mut alice = Peer::join(&chat, Some("alice")).await;
    alice.subscribe("/app/chat/one-more/presence").await;
    let error = alice.error().await;
    assert!(
        error.contains(&format!("{MAX_OPEN_ROOMS} rooms")) && error.contains("limit"),
        "{error}"
    );
    // An open room can still be joined and asked about.
    alice.subscribe("/app/chat/r0/presence").await;
    assert!(matches!(
        alice.event().await,
        Event::Presence { count: 1, .. }
    ));
    alice.subscribe("/topic/chat/r0").await;

    // Subscribing straight to a new room's topic is refused.
    alice
        .client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "too-many")
                .header("destination", "/topic/chat/one-more"),
        )
        .await
        .expect("send");
    let refused = loop {
        let frame = alice.frame().await;
        if frame.command == Command::Error {
            break frame;
        }
    };
    assert!(
        refused
            .headers
            .get("message")
            .is_some_and(|m| m.contains("limit")),
        "{refused:?}"
    );

    // Once a room empties, a new one can open.
    let mut bob = Peer::join(&chat, Some("bob")).await;
    bob.subscribe("/topic/rooms").await;
    drop(openers.pop());
    bob.rooms_until(|rooms| rooms.len() < MAX_OPEN_ROOMS).await;
    bob.subscribe("/app/chat/one-more/presence").await;
    loop {
        if let Event::Presence { room, count, .. } = bob.event().await {
            assert_eq!((room.as_str(), count), ("one-more", 0));
            break;
        }
    }
    bob.subscribe("/topic/chat/one-more").await;
    chat.server.shutdown().await.expect("shutdown");
}

#[tokio::test]
async fn clients_cannot_send_presence_or_room_lists() {
    let chat = start().await;
    for destination in ["/topic/presence/lobby", "/topic/rooms"] {
        let mut mallory = Peer::join(&chat, Some("mallory")).await;
        mallory
            .client
            .send(
                &Frame::new(Command::Send)
                    .header("destination", destination)
                    .body(r#"{"type":"rooms","rooms":[],"limit":1,"version":99}"#.to_owned()),
            )
            .await
            .expect("send");
        let frame = mallory.frame().await;
        assert_eq!(frame.command, Command::Error, "{destination}: {frame:?}");
    }
    chat.server.shutdown().await.expect("shutdown");
}
