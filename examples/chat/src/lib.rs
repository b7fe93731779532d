//! A chat on stompbox, written the way an application uses the library:
//! handlers for application destinations, lifecycle hooks for presence, the
//! messaging handle for notices, and an HTTP route for the page.
//!
//! It is the Spring example of many STOMP tutorials (a `@MessageMapping`
//! for `/app/chat/{room}` whose return value goes to `/topic/chat/{room}`),
//! plus what a real chat needs around it.
//!
//! Who is who depends on the server. With an authenticator (user accounts),
//! a CONNECT's `login` and `passcode` are checked by the server and the
//! verified user name is shown, marked `verified` in every event. Without
//! one, every session is anonymous and its CONNECT `login` is only a
//! *nickname*: a display name anyone may pick, never an identity (it reaches
//! no one's `/user/…` destinations), shown with `verified: false`. The page
//! follows suit when served with [`routes_with`]: a login form with
//! `PageSettings { accounts: true }`, a nickname field without.
//!
//! What the page in `web/` (or any STOMP client) does:
//!
//! | Frame       | Destination                 | What happens                                            |
//! |-------------|-----------------------------|---------------------------------------------------------|
//! | CONNECT     | `login`, `passcode`         | with accounts: the user, verified by the server         |
//! | CONNECT     | `login: NAME` (optional)    | without accounts: a nickname; none: an anonymous `guest-…` |
//! | SUBSCRIBE   | `/user/queue/errors`        | this session's errors, as `{"error", "destination"}`    |
//! | SUBSCRIBE   | `/app/chat/me`              | one reply: the name others see, and whether verified    |
//! | SUBSCRIBE   | `/topic/chat/{room}`        | the room's live events; the others get a `join` notice  |
//! | SUBSCRIBE   | `/app/chat/{room}/history`  | one reply to this subscriber: the room's last messages  |
//! | SUBSCRIBE   | `/app/chat/{room}/presence` | one reply: who is in the room (or an error if the room cannot open) |
//! | SUBSCRIBE   | `/topic/presence/{room}`    | who is in the room, again after each change             |
//! | SUBSCRIBE   | `/app/chat/rooms`           | one reply: the rooms someone is in, with how many       |
//! | SUBSCRIBE   | `/topic/rooms`              | the room list, again after each change                  |
//! | SEND        | `/app/chat/{room}` `{"text"}` | a `message` event to everyone in the room            |
//! | UNSUBSCRIBE, DISCONNECT |                 | a `leave` notice to the room                            |
//!
//! A room is open while someone is subscribed to its topic; at most
//! [`MAX_OPEN_ROOMS`] are open at once, and a subscription that would open
//! one more is refused (the presence reply says so first, without closing
//! the connection, which is what the page asks before it joins). Presence
//! lists at most [`MAX_LISTED_PEOPLE`] names per room, with the full count.
//! Presence and room-list updates are snapshots, sent at most once per
//! [`PRESENCE_EVERY`] for all the changes in between, so joining and leaving
//! in a loop cannot flood anyone; each carries a `version`, and a page keeps
//! the highest it has seen since it (re)connected.
//!
//! With the relay (several servers behind one broker), presence and the
//! room list are each server's own view: every server publishes the members
//! it sees to the shared topics, so a page sees the snapshot of whichever
//! server published last (and may skip one whose version is lower than the
//! last it kept), not a merge of all. Per-server presence is the accepted
//! limit of this demo. Messages and notices reach every server through the broker,
//! as before.
//!
//! A connection causes at most [`JOIN_NOTICE_BURST`] join notices at once,
//! then one per [`JOIN_NOTICE_EVERY`]; a join past that goes unannounced,
//! and so does its leave.
//!
//! Every event is JSON with a `type`: see [`Event`].
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use stompbox_chat::ChatState;
//!
//! let chat = ChatState::new();
//! let server = stompbox::Server::builder(stompbox::ServerConfig::default())
//!     .app(stompbox_chat::app(&chat))
//!     .routes(stompbox_chat::routes())
//!     .bind()
//!     .await?;
//! // The hooks publish join/leave notices through the server's messaging
//! // handle, which exists only once the server is built.
//! chat.attach(server.messaging());
//! server.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

use axum::body::Bytes;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use stompbox::HttpRouter;
use stompbox::app::{
    App, ConnectInfo, Json, Messaging, Path, Reject, SessionId, SessionInfo, State,
    SubscriptionInfo, User,
};

/// Longest user name, in characters.
pub const MAX_NAME_CHARS: usize = 32;
/// Longest room name, in characters.
pub const MAX_ROOM_CHARS: usize = 32;
/// Longest message text, in characters.
pub const MAX_TEXT_CHARS: usize = 500;
/// Messages kept per room for the history reply.
pub const HISTORY_LEN: usize = 50;
/// Rooms whose history is kept; past it the least recently used room's
/// history is forgotten, so inventing room names cannot exhaust memory.
pub const MAX_ROOMS: usize = 1_000;
/// Room subscriptions one connection may hold at once; bounds the presence
/// records a client can make the server keep.
pub const MAX_ROOMS_PER_SESSION: usize = 16;
/// Rooms with someone in them at once: the room list never grows past this,
/// and a subscription that would open another room is refused. Names come
/// from clients, so without it the list (sent to every page) could grow
/// with every name anyone invents.
pub const MAX_OPEN_ROOMS: usize = 100;
/// Names a presence snapshot lists per room; the snapshot's `count` says
/// how many there are in all. Who is in a room is kept for every member
/// (it is bounded by the server's connection limit times
/// [`MAX_ROOMS_PER_SESSION`]), but what goes out to every member is not.
pub const MAX_LISTED_PEOPLE: usize = 50;
/// Presence and room-list snapshots go out at most this often: every
/// change in between is in the next one.
pub const PRESENCE_EVERY: Duration = Duration::from_millis(200);

/// Join notices one connection may cause at once; then one more per
/// [`JOIN_NOTICE_EVERY`]. Past it, joins (and their leaves) go unannounced,
/// so a client that subscribes and unsubscribes in a loop cannot flood a
/// room with notices (and get its members cut off as slow consumers).
pub const JOIN_NOTICE_BURST: u32 = 5;
/// How often a connection earns another join notice past the burst.
pub const JOIN_NOTICE_EVERY: Duration = Duration::from_secs(10);

/// Names reserved for anonymous users, so no nickname can pass for one.
const GUEST_PREFIX: &str = "guest-";

/// The topic of a room is this plus the room name. Handler replies go to
/// the broker's first topic prefix plus the SEND's path, so with the default
/// `/topic/` and `/app` prefixes `/app/chat/1` publishes to `/topic/chat/1`.
pub const ROOM_TOPIC_PREFIX: &str = "/topic/chat/";
/// The topic of a room's presence snapshots is this plus the room name.
pub const PRESENCE_TOPIC_PREFIX: &str = "/topic/presence/";
/// The topic of the room list's snapshots.
pub const ROOMS_TOPIC: &str = "/topic/rooms";

/// A message someone said in a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatMessage {
    /// Increasing per server run; with `time`, lets a client drop a message
    /// it already shows (a history reply after a reconnect overlaps).
    pub id: u64,
    /// The room.
    pub room: String,
    /// Who said it: a verified user name, or a nickname.
    pub user: String,
    /// Whether `user` is a name the server verified (an authenticated
    /// user) rather than a nickname the client chose. Absent in JSON from
    /// before it existed, which is read as unverified.
    #[serde(default)]
    pub verified: bool,
    /// What they said.
    pub text: String,
    /// When the server received it, in milliseconds since the Unix epoch.
    pub time: u64,
}

/// Everything the server sends to a room's subscribers, as JSON tagged by
/// `type`: `{"type":"message","id":1,"room":"1","user":"alice","text":"hi","time":…}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Event {
    /// A chat message, on `/topic/chat/{room}`.
    Message(ChatMessage),
    /// Someone subscribed to the room, on `/topic/chat/{room}`.
    Join {
        /// The room.
        room: String,
        /// Who joined.
        user: String,
        /// Whether `user` is verified, as in [`ChatMessage::verified`].
        #[serde(default)]
        verified: bool,
        /// When, in milliseconds since the Unix epoch.
        time: u64,
    },
    /// Someone unsubscribed from the room or disconnected.
    Leave {
        /// The room.
        room: String,
        /// Who left.
        user: String,
        /// Whether `user` is verified, as in [`ChatMessage::verified`].
        #[serde(default)]
        verified: bool,
        /// When, in milliseconds since the Unix epoch.
        time: u64,
    },
    /// The reply to a SUBSCRIBE to `/app/chat/{room}/history`: the room's
    /// most recent messages, oldest first.
    History {
        /// The room.
        room: String,
        /// At most [`HISTORY_LEN`] messages.
        messages: Vec<ChatMessage>,
    },
    /// Who is in a room: the reply to a SUBSCRIBE to
    /// `/app/chat/{room}/presence`, and on `/topic/presence/{room}` after
    /// each change.
    Presence {
        /// The room.
        room: String,
        /// At most [`MAX_LISTED_PEOPLE`] of them, sorted by name. A user
        /// in the room from several connections is listed once.
        people: Vec<Person>,
        /// How many people are in the room, listed or not.
        count: usize,
        /// Grows with every change on this server: of two snapshots, the
        /// one with the higher version is the newer.
        version: u64,
    },
    /// The rooms with someone in them: the reply to a SUBSCRIBE to
    /// `/app/chat/rooms`, and on `/topic/rooms` after each change.
    Rooms {
        /// At most [`MAX_OPEN_ROOMS`], the busiest first.
        rooms: Vec<RoomSummary>,
        /// [`MAX_OPEN_ROOMS`]: when `rooms` has this many, no new room opens.
        limit: usize,
        /// As in [`Event::Presence`].
        version: u64,
    },
    /// The reply to a SUBSCRIBE to `/app/chat/me`, to that subscriber only:
    /// the name the others see for this session. A page cannot work it out
    /// itself: a verified name is whatever the authenticator vouched for,
    /// and a guest's is made from its session id.
    Me {
        /// The name, as [`ChatMessage::user`] shows it.
        user: String,
        /// Whether it is verified, as [`ChatMessage::verified`].
        verified: bool,
    },
}

/// Someone in a room, as presence lists them.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Person {
    /// The name, as [`ChatMessage::user`] shows it.
    pub user: String,
    /// Whether it is verified, as [`ChatMessage::verified`].
    #[serde(default)]
    pub verified: bool,
}

/// A room in the room list.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RoomSummary {
    /// The room's name.
    pub room: String,
    /// How many people are in it.
    pub count: usize,
}

/// The chat's shared state: recent messages per room, who is in which
/// room, and the handle to publish notices with. Cheap to clone.
#[derive(Clone, Default)]
pub struct ChatState {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for ChatState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChatState")
            .field("attached", &self.inner.messaging.get().is_some())
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Inner {
    rooms: Mutex<Rooms>,
    presence: Mutex<Presence>,
    /// What changed since the last snapshots went out.
    pending: Mutex<Pending>,
    /// Session id → the nickname an anonymous session chose with its CONNECT
    /// `login`: a display name only, never an identity. One entry per
    /// connected session, removed when it ends.
    nicknames: Mutex<HashMap<Arc<str>, String>>,
    /// Set once by [`ChatState::attach`].
    messaging: OnceLock<Messaging>,
    warned_unattached: AtomicBool,
}

#[derive(Default)]
struct Rooms {
    by_name: HashMap<String, Room>,
    next_id: u64,
    /// A counter, not a time: orders rooms by last use for eviction.
    clock: u64,
}

struct Room {
    messages: VecDeque<ChatMessage>,
    last_used: u64,
}

/// Who is in which room. One lock for both maps, so they always agree.
#[derive(Default)]
struct Presence {
    /// Session id → the room subscriptions of that session.
    sessions: HashMap<Arc<str>, Member>,
    /// Open room → session id → the name it shows. A room is here exactly
    /// while some session is subscribed to its topic; at most
    /// [`MAX_OPEN_ROOMS`].
    open: HashMap<String, HashMap<Arc<str>, Name>>,
    /// Counts the changes, for the snapshots' `version`.
    version: u64,
}

impl Presence {
    /// `session` is in `room` from now on; false if it already was.
    fn enter(&mut self, room: &str, session: &Arc<str>, name: &Name) -> bool {
        let members = self.open.entry(room.to_owned()).or_default();
        let new = members.insert(Arc::clone(session), name.clone()).is_none();
        if new {
            self.version += 1;
        }
        new
    }

    /// `session` is no longer in `room`; false if it was not.
    fn leave(&mut self, room: &str, session: &str) -> bool {
        let Some(members) = self.open.get_mut(room) else {
            return false;
        };
        let gone = members.remove(session).is_some();
        if members.is_empty() {
            self.open.remove(room);
        }
        if gone {
            self.version += 1;
        }
        gone
    }

    /// Whether a subscription to `room` may open it, with the refusal.
    fn may_open(&self, room: &str) -> Result<(), String> {
        if self.open.contains_key(room) || self.open.len() < MAX_OPEN_ROOMS {
            Ok(())
        } else {
            Err(format!(
                "the server already has {MAX_OPEN_ROOMS} rooms with people in them, its limit: \
                 join one of those, or try again once one is empty"
            ))
        }
    }

    fn snapshot(&self, room: &str) -> Event {
        let people: std::collections::BTreeSet<Person> = self
            .open
            .get(room)
            .into_iter()
            .flat_map(HashMap::values)
            .map(|name| Person {
                user: name.text.clone(),
                verified: name.verified,
            })
            .collect();
        Event::Presence {
            room: room.to_owned(),
            count: people.len(),
            people: people.into_iter().take(MAX_LISTED_PEOPLE).collect(),
            version: self.version,
        }
    }

    fn room_list(&self) -> Event {
        let mut rooms: Vec<RoomSummary> = self
            .open
            .iter()
            .map(|(room, members)| RoomSummary {
                room: room.clone(),
                count: members
                    .values()
                    .map(|n| (&n.text, n.verified))
                    .collect::<HashSet<_>>()
                    .len(),
            })
            .collect();
        rooms.sort_by(|a, b| b.count.cmp(&a.count).then_with(|| a.room.cmp(&b.room)));
        Event::Rooms {
            rooms,
            limit: MAX_OPEN_ROOMS,
            version: self.version,
        }
    }
}

/// Rooms remembered as changed between two flushes of snapshots.
const MAX_PENDING_ROOMS: usize = 2 * MAX_OPEN_ROOMS;

/// Rooms whose presence changed since the last snapshots, and whether the
/// room list did.
#[derive(Default)]
struct Pending {
    /// At most [`MAX_PENDING_ROOMS`]: see [`ChatState::changed`].
    rooms: HashSet<String>,
    /// More rooms changed than `rooms` holds: send every open room.
    every_open_room: bool,
    room_list: bool,
    /// A task is waiting to publish them.
    scheduled: bool,
}

struct Member {
    /// The name notices show.
    name: Name,
    /// Subscription id → room.
    subscriptions: HashMap<String, String>,
    /// Rooms that were told this session joined, and not yet that it left:
    /// a leave is announced only after an announced join, so the notices a
    /// room sees always pair up.
    announced: HashSet<String>,
    /// Join notices this session may still cause, refilled over time.
    notices: f64,
    refilled: Instant,
}

impl Member {
    fn new(name: Name) -> Member {
        Member {
            name,
            subscriptions: HashMap::new(),
            announced: HashSet::new(),
            notices: f64::from(JOIN_NOTICE_BURST),
            refilled: Instant::now(),
        }
    }

    /// Takes one join notice from the budget, if there is one.
    fn take_notice(&mut self) -> bool {
        let now = Instant::now();
        let earned =
            now.duration_since(self.refilled).as_secs_f64() / JOIN_NOTICE_EVERY.as_secs_f64();
        self.notices = (self.notices + earned).min(f64::from(JOIN_NOTICE_BURST));
        self.refilled = now;
        if self.notices >= 1.0 {
            self.notices -= 1.0;
            true
        } else {
            false
        }
    }
}

/// Locks even a mutex a panicking thread left poisoned: every update here
/// leaves the data consistent, so what is inside is still good.
fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

impl ChatState {
    /// An empty chat.
    pub fn new() -> ChatState {
        ChatState::default()
    }

    /// Gives the chat the server's messaging handle, for the join and leave
    /// notices and the presence and room-list snapshots its hooks publish.
    ///
    /// Hooks, unlike handlers, are not given a [`Messaging`], and the handle
    /// only exists once the server is built from the app: so the app is
    /// built first and handed the handle afterwards. Call it right after
    /// `bind()`, before the server runs. A second call is ignored.
    pub fn attach(&self, messaging: Messaging) {
        if self.inner.messaging.set(messaging).is_err() {
            tracing::debug!("chat: attach called again; keeping the first messaging handle");
        }
    }

    /// The last [`HISTORY_LEN`] messages of `room`, oldest first.
    pub fn history(&self, room: &str) -> Vec<ChatMessage> {
        let mut rooms = lock(&self.inner.rooms);
        rooms.clock += 1;
        let clock = rooms.clock;
        match rooms.by_name.get_mut(room) {
            Some(r) => {
                r.last_used = clock;
                r.messages.iter().cloned().collect()
            }
            None => Vec::new(),
        }
    }

    /// Stores a new message in its room's history and returns it.
    fn record(&self, room: &str, name: &Name, text: &str) -> ChatMessage {
        let mut rooms = lock(&self.inner.rooms);
        rooms.next_id += 1;
        rooms.clock += 1;
        let (id, clock) = (rooms.next_id, rooms.clock);
        if !rooms.by_name.contains_key(room) && rooms.by_name.len() >= MAX_ROOMS {
            // A linear scan, but only when a new room pushes an old one out.
            let oldest = rooms
                .by_name
                .iter()
                .min_by_key(|(_, r)| r.last_used)
                .map(|(name, _)| name.clone());
            if let Some(oldest) = oldest {
                rooms.by_name.remove(&oldest);
            }
        }
        let entry = rooms
            .by_name
            .entry(room.to_owned())
            .or_insert_with(|| Room {
                messages: VecDeque::with_capacity(HISTORY_LEN),
                last_used: clock,
            });
        entry.last_used = clock;
        if entry.messages.len() == HISTORY_LEN {
            entry.messages.pop_front();
        }
        let message = ChatMessage {
            id,
            room: room.to_owned(),
            user: name.text.clone(),
            verified: name.verified,
            text: text.to_owned(),
            time: now_ms(),
        };
        entry.messages.push_back(message.clone());
        message
    }

    /// Publishes a notice to the room's topic. A notice that cannot be
    /// published is logged, not fatal: the chat itself still works.
    async fn announce(&self, room: &str, event: Event) {
        let Some(messaging) = self.inner.messaging.get() else {
            self.warn_unattached();
            return;
        };
        let topic = format!("{ROOM_TOPIC_PREFIX}{room}");
        if let Err(e) = messaging.publish_json(&topic, &event).await {
            tracing::warn!(%topic, error = %e, "chat: could not publish a notice");
        }
    }

    /// Publishes `event` to `topic`, quietly: a snapshot that cannot go
    /// out (the server is shutting down, the relay is away) is superseded
    /// by the next one anyway.
    async fn publish_snapshot(&self, topic: &str, event: &Event) {
        if let Some(messaging) = self.inner.messaging.get()
            && let Err(e) = messaging.publish_json(topic, event).await
        {
            tracing::debug!(%topic, error = %e, "chat: could not publish a snapshot");
        }
    }

    /// Notes that who is in `room` changed (and so the room list), and makes
    /// sure a snapshot goes out within [`PRESENCE_EVERY`].
    fn changed(&self, room: &str, still_open: bool) {
        let schedule = {
            let mut pending = lock(&self.inner.pending);
            // Bounded, though room names come from clients: past the
            // bound the flush sends every open room (at most MAX_OPEN_ROOMS)
            // instead, and an emptied room gets no last snapshot. Nobody
            // misses that one: whoever watched it from the page was in it,
            // and has left.
            if !pending.rooms.contains(room) {
                if pending.rooms.len() < MAX_PENDING_ROOMS {
                    pending.rooms.insert(room.to_owned());
                } else if still_open {
                    pending.every_open_room = true;
                }
            }
            pending.room_list = true;
            !std::mem::replace(&mut pending.scheduled, true)
        };
        if !schedule {
            return;
        }
        if self.inner.messaging.get().is_none() {
            lock(&self.inner.pending).scheduled = false;
            self.warn_unattached();
            return;
        }
        let chat = self.clone();
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    tokio::time::sleep(PRESENCE_EVERY).await;
                    chat.flush().await;
                });
            }
            // Hooks run on the server's runtime; this is only reachable by
            // calling them from elsewhere, where there is no one to tell.
            Err(_) => lock(&self.inner.pending).scheduled = false,
        }
    }

    /// Publishes the snapshots of everything that changed.
    async fn flush(&self) {
        let (mut rooms, room_list, every_open_room) = {
            let mut pending = lock(&self.inner.pending);
            pending.scheduled = false;
            (
                std::mem::take(&mut pending.rooms),
                std::mem::take(&mut pending.room_list),
                std::mem::take(&mut pending.every_open_room),
            )
        };
        if every_open_room {
            rooms.extend(lock(&self.inner.presence).open.keys().cloned());
        }
        for room in rooms {
            let snapshot = lock(&self.inner.presence).snapshot(&room);
            let topic = format!("{PRESENCE_TOPIC_PREFIX}{room}");
            self.publish_snapshot(&topic, &snapshot).await;
        }
        if room_list {
            let snapshot = lock(&self.inner.presence).room_list();
            self.publish_snapshot(ROOMS_TOPIC, &snapshot).await;
        }
    }

    fn warn_unattached(&self) {
        if !self.inner.warned_unattached.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "chat: no join/leave notices or presence, as ChatState::attach was not called after bind()"
            );
        }
    }

    /// Who is in `room` now, as [`Event::Presence`].
    pub fn presence(&self, room: &str) -> Event {
        lock(&self.inner.presence).snapshot(room)
    }

    /// The open rooms now, as [`Event::Rooms`].
    pub fn room_list(&self) -> Event {
        lock(&self.inner.presence).room_list()
    }

    /// The subscribe hook: a subscription to a room's topic is joining it.
    async fn subscribed(&self, info: SubscriptionInfo) -> Result<(), Reject> {
        let Some(room) = room_of_topic(&info.destination) else {
            if let Some(room) = info.destination.strip_prefix(PRESENCE_TOPIC_PREFIX) {
                check_room(room).map_err(Reject)?;
            }
            return Ok(());
        };
        check_room(room).map_err(Reject)?;
        let name = self.display_name(&info.user, &info.session_id);
        let (announce, entered) = {
            let mut presence = lock(&self.inner.presence);
            let member = presence
                .sessions
                .entry(Arc::clone(&info.session_id))
                .or_insert_with(|| Member::new(name.clone()));
            if member.subscriptions.len() >= MAX_ROOMS_PER_SESSION {
                return Err(Reject::new(format!(
                    "a connection can be in at most {MAX_ROOMS_PER_SESSION} rooms at once; unsubscribe from one first"
                )));
            }
            let first = !member.subscriptions.values().any(|r| r == room);
            if first {
                presence.may_open(room).map_err(Reject)?;
            }
            // Looked up again: may_open needed the whole of `presence`.
            let Some(member) = presence.sessions.get_mut(&info.session_id) else {
                return Ok(());
            };
            member.subscriptions.insert(info.id, room.to_owned());
            let announce = first && member.take_notice();
            if announce {
                member.announced.insert(room.to_owned());
            }
            let entered = first && presence.enter(room, &info.session_id, &name);
            (announce, entered)
        };
        if entered {
            self.changed(room, true);
        }
        // A second subscription of the same session to the same room is no
        // news. The subscriber itself does not see its own join: the hook
        // runs before its subscription exists (the page says "you joined").
        if announce {
            let event = Event::Join {
                room: room.to_owned(),
                user: name.text,
                verified: name.verified,
                time: now_ms(),
            };
            self.announce(room, event).await;
        }
        Ok(())
    }

    /// The unsubscribe hook: leaving a room's topic is leaving the room.
    async fn unsubscribed(&self, info: SubscriptionInfo) {
        let (room, left, announced, still_open) = {
            let mut presence = lock(&self.inner.presence);
            let Some(member) = presence.sessions.get_mut(&info.session_id) else {
                return;
            };
            let Some(room) = member.subscriptions.remove(&info.id) else {
                return;
            };
            if member.subscriptions.values().any(|r| *r == room) {
                return;
            }
            // The member stays (until the session ends) even when in no
            // room, so that leaving does not refill its notice budget.
            let announced = member.announced.remove(&room).then(|| member.name.clone());
            let left = presence.leave(&room, &info.session_id);
            let still_open = presence.open.contains_key(&room);
            (room, left, announced, still_open)
        };
        if left {
            self.changed(&room, still_open);
        }
        if let Some(name) = announced {
            let event = Event::Leave {
                room: room.clone(),
                user: name.text,
                verified: name.verified,
                time: now_ms(),
            };
            self.announce(&room, event).await;
        }
    }

    /// The disconnect hook: however a session ends, it leaves every room.
    async fn disconnected(&self, info: SessionInfo) {
        lock(&self.inner.nicknames).remove(&info.session_id);
        let (member, left) = {
            let mut presence = lock(&self.inner.presence);
            let Some(member) = presence.sessions.remove(&info.session_id) else {
                return;
            };
            let rooms: HashSet<&String> = member.subscriptions.values().collect();
            let mut left = Vec::with_capacity(rooms.len());
            for room in rooms {
                if presence.leave(room, &info.session_id) {
                    left.push((room.clone(), presence.open.contains_key(room)));
                }
            }
            (member, left)
        };
        for (room, still_open) in left {
            self.changed(&room, still_open);
        }
        for room in member.announced {
            let event = Event::Leave {
                room: room.clone(),
                user: member.name.text.clone(),
                verified: member.name.verified,
                time: now_ms(),
            };
            self.announce(&room, event).await;
        }
    }
}

/// The room of `/topic/chat/{room}`; `None` for any other destination.
fn room_of_topic(destination: &str) -> Option<&str> {
    destination
        .strip_prefix(ROOM_TOPIC_PREFIX)
        .filter(|room| !room.contains('/'))
}

/// Quotes a client-given value in an error, cut short if it is long.
fn quoted(value: &str) -> String {
    const SHOWN: usize = 40;
    match value.char_indices().nth(SHOWN) {
        Some((end, _)) => format!("'{}…'", &value[..end]),
        None => format!("'{value}'"),
    }
}

/// Room names are plain ASCII words: they appear in destinations and URLs.
fn check_room(room: &str) -> Result<(), String> {
    let ok = (1..=MAX_ROOM_CHARS).contains(&room.len())
        && room
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if ok {
        Ok(())
    } else {
        Err(format!(
            "{} is not a room name: use 1 to {MAX_ROOM_CHARS} letters, digits, '_' or '-'",
            quoted(room)
        ))
    }
}

/// User names may be in any script (letters and digits of any language),
/// but no spaces, punctuation or control characters, so one name cannot
/// pass for another and notices read unambiguously.
fn check_name(name: &str) -> Result<(), String> {
    let chars = name.chars().count();
    let ok = (1..=MAX_NAME_CHARS).contains(&chars)
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c == '_' || c == '-');
    if !ok {
        return Err(format!(
            "{} is not a valid chat name: use 1 to {MAX_NAME_CHARS} letters, digits, '_' or '-' \
             (or no login to chat anonymously)",
            quoted(name)
        ));
    }
    if name
        .get(..GUEST_PREFIX.len())
        .is_some_and(|p| p.eq_ignore_ascii_case(GUEST_PREFIX))
    {
        return Err(format!(
            "names starting with '{GUEST_PREFIX}' are kept for anonymous users; choose another"
        ));
    }
    Ok(())
}

/// A name as others see it, and whether the server vouches for it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Name {
    text: String,
    verified: bool,
}

impl ChatState {
    /// The name others see: a verified user's name; for an anonymous
    /// session the nickname it chose, or `guest-` and the first 8 digits of
    /// its session id, both unverified.
    fn display_name(&self, user: &User, session_id: &str) -> Name {
        if user.is_authenticated() {
            return Name {
                text: user.name().to_owned(),
                verified: true,
            };
        }
        let text = match lock(&self.inner.nicknames).get(session_id) {
            Some(nickname) => nickname.clone(),
            None => format!(
                "{GUEST_PREFIX}{}",
                session_id.get(..8).unwrap_or(session_id)
            ),
        };
        Name {
            text,
            verified: false,
        }
    }

    /// The connect hook: a verified user is known by name; an anonymous
    /// session may pick a nickname with its CONNECT `login`, shown to others
    /// but never an identity (it reaches no one's `/user` destinations).
    async fn connected(&self, info: ConnectInfo) -> Result<(), Reject> {
        if info.user.is_authenticated() {
            return Ok(());
        }
        if let Some(name) = info.login.filter(|n| !n.is_empty()) {
            check_name(&name).map_err(Reject)?;
            lock(&self.inner.nicknames).insert(info.session_id, name);
        }
        Ok(())
    }
}

/// The body of a SEND to `/app/chat/{room}`.
#[derive(Debug, Deserialize)]
struct Post {
    text: String,
}

/// SEND `/app/chat/{room}` with `{"text": "…"}`. The reply is published to
/// `/topic/chat/{room}` (the default for a SEND handler's reply); an `Err`
/// goes only to the sender, at `/user/queue/errors`.
async fn post(
    Path(room): Path<String>,
    user: User,
    SessionId(session): SessionId,
    State(chat): State<ChatState>,
    Json(post): Json<Post>,
) -> Result<Json<Event>, String> {
    check_room(&room)?;
    let text = post.text.trim();
    if text.is_empty() {
        return Err("a message needs some text".into());
    }
    let chars = text.chars().count();
    if chars > MAX_TEXT_CHARS {
        return Err(format!(
            "a message can be at most {MAX_TEXT_CHARS} characters (this one has {chars})"
        ));
    }
    let message = chat.record(&room, &chat.display_name(&user, &session), text);
    Ok(Json(Event::Message(message)))
}

/// SUBSCRIBE `/app/chat/me`: who this session is in the chat. Like the
/// history, the reply goes to this subscriber alone; a page subscribes on
/// every (re)connect and so always shows the name the others see.
async fn me(
    user: User,
    SessionId(session): SessionId,
    State(chat): State<ChatState>,
) -> Json<Event> {
    let name = chat.display_name(&user, &session);
    Json(Event::Me {
        user: name.text,
        verified: name.verified,
    })
}

/// SUBSCRIBE `/app/chat/{room}/history`: a subscribe handler's reply goes
/// straight to that subscriber, once, so history never reaches the room.
async fn history(
    Path(room): Path<String>,
    State(chat): State<ChatState>,
) -> Result<Json<Event>, String> {
    check_room(&room)?;
    let messages = chat.history(&room);
    Ok(Json(Event::History { room, messages }))
}

/// SUBSCRIBE `/app/chat/{room}/presence`: who is in the room, to this
/// subscriber. The page asks before it subscribes to a room's topic: a room
/// that could not open is then an error here, at `/user/queue/errors`,
/// rather than a refused subscription that ends the connection.
async fn presence(
    Path(room): Path<String>,
    State(chat): State<ChatState>,
) -> Result<Json<Event>, String> {
    check_room(&room)?;
    let presence = lock(&chat.inner.presence);
    presence.may_open(&room)?;
    Ok(Json(presence.snapshot(&room)))
}

/// SUBSCRIBE `/app/chat/rooms`: the open rooms, to this subscriber.
async fn rooms(State(chat): State<ChatState>) -> Json<Event> {
    Json(chat.room_list())
}

/// Whether `destination` is one the chat itself publishes to, which no
/// client may send to.
fn is_chat_topic(destination: &str) -> bool {
    room_of_topic(destination).is_some()
        || destination.starts_with(PRESENCE_TOPIC_PREFIX)
        || destination == ROOMS_TOPIC
}

/// The chat application. Call [`ChatState::attach`] with the server's
/// messaging handle once it is bound, for join and leave notices, presence
/// and the room list.
pub fn app(chat: &ChatState) -> App<ChatState> {
    // Hooks are plain closures (they take no extractors), so each captures
    // its own clone of the state.
    let (on_connect, on_subscribe, on_unsubscribe, on_disconnect) =
        (chat.clone(), chat.clone(), chat.clone(), chat.clone());
    App::with_state(chat.clone())
        .message("/chat/{room}", post)
        .subscribe("/chat/{room}/history", history)
        .subscribe("/chat/{room}/presence", presence)
        // Like "me", a subscribe route: SEND to a room named "rooms" works.
        .subscribe("/chat/rooms", rooms)
        // A subscribe route, so no clash with SEND to a room named "me".
        .subscribe("/chat/me", me)
        .on_connect(move |info| {
            let chat = on_connect.clone();
            async move { chat.connected(info).await }
        })
        .on_subscribe(move |info| {
            let chat = on_subscribe.clone();
            async move { chat.subscribed(info).await }
        })
        .on_unsubscribe(move |info| {
            let chat = on_unsubscribe.clone();
            async move { chat.unsubscribed(info).await }
        })
        .on_disconnect(move |info| {
            let chat = on_disconnect.clone();
            async move { chat.disconnected(info).await }
        })
        .on_send(|info: stompbox::app::SendInfo| async move {
            // Room events are the server's: a client posts through
            // /app/chat/{room}, where its name is the verified one. Straight
            // to the topic it could write any name and a "verified" mark, or
            // a made-up presence list.
            if is_chat_topic(&info.destination) {
                return Err(Reject::new(format!(
                    "send chat messages to /app/chat/{{room}}, not to {}",
                    quoted(&info.destination)
                )));
            }
            Ok(())
        })
}

const INDEX_HTML: &str = include_str!("../web/index.html");
const STOMP_JS: &str = include_str!("../web/stomp.js");

/// What the page needs to know about the server it is served by.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PageSettings {
    /// Whether the server has user accounts (an authenticator is set up):
    /// the page then shows a login form (user name and password, sent as
    /// the CONNECT `login` and `passcode`) instead of a nickname field.
    /// Without accounts a `login` is only a nickname, so the page must not
    /// ask for a password that nothing would check.
    pub accounts: bool,
}

/// The page (`/`) and its STOMP client (`/stomp.js`), for a server whose
/// WebSocket endpoint is the default `/ws` and that has no user accounts.
pub fn routes() -> HttpRouter {
    routes_for("/ws")
}

/// As [`routes`], for a server whose WebSocket endpoint is `ws_path`.
pub fn routes_for(ws_path: &str) -> HttpRouter {
    routes_with(ws_path, PageSettings::default())
}

/// The page and its client for a server whose WebSocket endpoint is
/// `ws_path`, in the mode `settings` says. The settings are written into the
/// page itself, so it knows them without asking the server.
pub fn routes_with(ws_path: &str, settings: PageSettings) -> HttpRouter {
    let page = Bytes::from(render_page(ws_path, settings));
    HttpRouter::new()
        .route(
            "/",
            get(move || {
                let page = page.clone();
                async move { asset("text/html; charset=utf-8", page) }
            }),
        )
        .route(
            "/stomp.js",
            get(|| async { asset("text/javascript; charset=utf-8", Bytes::from(STOMP_JS)) }),
        )
}

fn asset(content_type: &'static str, body: Bytes) -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Always revalidate: the files change with the binary.
            (header::CACHE_CONTROL, "no-cache"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        body,
    )
}

fn render_page(ws_path: &str, settings: PageSettings) -> String {
    // `accounts` first: a ws_path containing the other placeholder must stay
    // as it is.
    INDEX_HTML
        .replace(
            "{{accounts}}",
            if settings.accounts { "true" } else { "false" },
        )
        .replace("{{ws_path}}", &escape_attribute(ws_path))
}

fn escape_attribute(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_rooms_are_checked() {
        for ok in ["alice", "Bob_2", "x-y", "윤서", &"a".repeat(MAX_NAME_CHARS)] {
            assert!(check_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "",
            "a b",
            "a:b",
            "tab\t",
            &"a".repeat(MAX_NAME_CHARS + 1),
            "guest-1",
            "GUEST-abc",
        ] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        for ok in ["1", "general", "a_b-C", &"r".repeat(MAX_ROOM_CHARS)] {
            assert!(check_room(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a/b", "*", "방", &"r".repeat(MAX_ROOM_CHARS + 1)] {
            assert!(check_room(bad).is_err(), "{bad:?}");
        }
        let long = check_room(&"x".repeat(1000)).expect_err("too long");
        assert!(long.len() < 200, "{long}");
    }

    #[test]
    fn room_topics_are_recognised() {
        assert_eq!(room_of_topic("/topic/chat/1"), Some("1"));
        assert_eq!(room_of_topic("/topic/chat/"), Some(""));
        assert_eq!(room_of_topic("/topic/chat/1/x"), None);
        assert_eq!(room_of_topic("/topic/news"), None);
        assert_eq!(room_of_topic("/app/chat/1/history"), None);
    }

    #[test]
    fn history_is_bounded_per_room_and_in_rooms() {
        let chat = ChatState::new();
        let alice = Name {
            text: "alice".into(),
            verified: false,
        };
        for i in 0..HISTORY_LEN + 5 {
            chat.record("1", &alice, &format!("m{i}"));
        }
        let history = chat.history("1");
        assert_eq!(history.len(), HISTORY_LEN);
        assert_eq!(history[0].text, "m5");
        assert!(history.windows(2).all(|w| w[0].id < w[1].id));

        // Filling up the rooms evicts the least recently used one: room "1"
        // was just read, so room "r0" goes first.
        for i in 0..MAX_ROOMS - 1 {
            chat.record(&format!("r{i}"), &alice, "hi");
        }
        chat.history("1");
        chat.record("one-more", &alice, "hi");
        assert_eq!(chat.history("1").len(), HISTORY_LEN);
        assert!(chat.history("r0").is_empty());
        assert_eq!(chat.history("r1").len(), 1);
        assert_eq!(lock(&chat.inner.rooms).by_name.len(), MAX_ROOMS);
    }

    #[test]
    fn presence_lists_a_bounded_number_of_people_once_each() {
        let mut presence = Presence::default();
        let name = |text: &str, verified| Name {
            text: text.to_owned(),
            verified,
        };
        let extra = 10;
        for i in 0..MAX_LISTED_PEOPLE + extra {
            let session: Arc<str> = Arc::from(format!("s{i}"));
            assert!(presence.enter("1", &session, &name(&format!("u{i:03}"), false)));
        }
        // A second connection of a listed person is not another person; a
        // verified user of the same name is.
        assert!(presence.enter("1", &Arc::from("again"), &name("u000", false)));
        assert!(presence.enter("1", &Arc::from("user"), &name("u000", true)));
        let Event::Presence { people, count, .. } = presence.snapshot("1") else {
            panic!("not presence");
        };
        assert_eq!(count, MAX_LISTED_PEOPLE + extra + 1);
        assert_eq!(people.len(), MAX_LISTED_PEOPLE);
        assert_eq!(
            people[..2],
            [
                Person {
                    user: "u000".into(),
                    verified: false
                },
                Person {
                    user: "u000".into(),
                    verified: true
                }
            ]
        );
        let Event::Rooms { rooms, .. } = presence.room_list() else {
            panic!("not rooms");
        };
        assert_eq!(rooms[0].count, count);

        // Leaving twice is one change; the last one out closes the room.
        let version = presence.version;
        assert!(presence.leave("1", "again"));
        assert!(!presence.leave("1", "again"));
        assert_eq!(presence.version, version + 1);
        assert!(!presence.leave("nowhere", "s0"));
    }

    #[test]
    fn rooms_waiting_for_a_snapshot_are_bounded() {
        let chat = ChatState::new();
        for i in 0..MAX_PENDING_ROOMS + 50 {
            chat.changed(&format!("r{i}"), i % 2 == 0);
        }
        let pending = lock(&chat.inner.pending);
        assert_eq!(pending.rooms.len(), MAX_PENDING_ROOMS);
        // The open rooms past the bound are not lost: all open rooms go out.
        assert!(pending.every_open_room && pending.room_list);
    }

    #[test]
    fn open_rooms_are_bounded() {
        let mut presence = Presence::default();
        let who = Name {
            text: "a".into(),
            verified: false,
        };
        for i in 0..MAX_OPEN_ROOMS {
            let room = format!("r{i}");
            assert!(presence.may_open(&room).is_ok());
            presence.enter(&room, &Arc::from("s"), &who);
        }
        let refusal = presence.may_open("new").expect_err("full");
        assert!(refusal.contains("limit"), "{refusal}");
        // Rooms already open stay joinable.
        assert!(presence.may_open("r0").is_ok());
        presence.leave("r0", "s");
        assert!(presence.may_open("new").is_ok());
    }

    #[test]
    fn events_are_tagged_json() {
        let event = Event::Join {
            room: "1".into(),
            user: "alice".into(),
            verified: true,
            time: 5,
        };
        assert_eq!(
            serde_json::to_string(&event).expect("serializes"),
            r#"{"type":"join","room":"1","user":"alice","verified":true,"time":5}"#
        );
        let message = Event::Message(ChatMessage {
            id: 1,
            room: "1".into(),
            user: "alice".into(),
            verified: false,
            text: "hi".into(),
            time: 5,
        });
        let json = serde_json::to_string(&message).expect("serializes");
        assert!(json.starts_with(r#"{"type":"message","id":1,"#), "{json}");
        assert_eq!(
            serde_json::from_str::<Event>(&json).expect("parses"),
            message
        );
        // Events from before `verified` existed are read as unverified.
        let old = r#"{"type":"leave","room":"1","user":"bob","time":5}"#;
        assert!(matches!(
            serde_json::from_str::<Event>(old).expect("parses"),
            Event::Leave {
                verified: false,
                ..
            }
        ));
        assert_eq!(
            serde_json::to_string(&Event::Me {
                user: "alice".into(),
                verified: true
            })
            .expect("serializes"),
            r#"{"type":"me","user":"alice","verified":true}"#
        );
    }

    #[test]
    fn the_page_gets_the_endpoint_and_the_mode() {
        assert!(INDEX_HTML.contains("{{ws_path}}"));
        assert!(INDEX_HTML.contains(r#"data-accounts="{{accounts}}""#));
        assert_eq!(escape_attribute("/a\"<b>&"), "/a&quot;&lt;b&gt;&amp;");
        let plain = render_page("/ws", PageSettings::default());
        assert!(plain.contains(r#"data-accounts="false""#));
        assert!(plain.contains(r#"content="/ws""#));
        let accounts = render_page("/{{accounts}}", PageSettings { accounts: true });
        assert!(accounts.contains(r#"data-accounts="true""#));
        assert!(accounts.contains(r#"content="/{{accounts}}""#));
        assert!(!accounts.contains("{{ws_path}}"));
    }
}
