//! The messaging handle: publish to any destination or user from anywhere.

use super::reply::Payload;
use super::user::{Owner, ReplyRoutes, session_key, user_key};
use crate::broker::{Broker, BrokerError, Publish};
use bytes::BytesMut;
use std::sync::Arc;
use stompbox_codec::{Command, Frame, Headers, header};

/// Why a message could not be published.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MessagingError {
    /// The destination is not a broker or user destination.
    #[error(
        "'{0}' is not a broker destination (such as /topic/… or /queue/…) or a user destination (/user/{{name}}/…)"
    )]
    InvalidDestination(String),
    /// A header no STOMP frame can carry: a NUL in a name or value (it
    /// ends a frame on the wire), or a `:` or line break in a name.
    #[error("header '{name}' {problem}")]
    InvalidHeader {
        /// The header's name, with control characters escaped for display.
        name: String,
        /// What is wrong with it.
        problem: &'static str,
    },
    /// The broker refused or is unavailable.
    #[error(transparent)]
    Broker(#[from] BrokerError),
}

/// Headers a publisher may not set: the broker owns them.
const RESERVED: [&str; 6] = [
    header::DESTINATION,
    header::CONTENT_LENGTH,
    header::MESSAGE_ID,
    header::SUBSCRIPTION,
    header::ACK,
    header::REDELIVERED,
];

struct Inner {
    broker: Arc<dyn Broker>,
    user_prefix: String,
    /// Messages the broker accepted from here (handlers' replies, the HTTP
    /// API, the application's own tasks), for operators.
    published: std::sync::atomic::AtomicU64,
}

/// A cloneable handle to publish from handlers, HTTP routes or background
/// tasks. Works the same whichever broker runs; errors are returned, never
/// dropped.
///
/// Get it from [`Server::messaging`](crate::Server::messaging), or in a
/// handler as an extractor:
///
/// ```
/// use stompbox::app::{App, Messaging, MessagingError};
/// use stompbox::{Server, ServerConfig};
///
/// // SEND /app/done: tells the sender's user, in every session of theirs.
/// async fn done(messaging: Messaging, user: stompbox::app::User) -> Result<(), MessagingError> {
///     messaging
///         .send_to_user(user.name(), "/queue/notices", "your export is ready")
///         .await
/// }
///
/// # #[tokio::main] async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// # let mut config = ServerConfig::default();
/// # config.http_addr = "127.0.0.1:0".parse()?;
/// let server = Server::builder(config)
///     .app(App::new().message("/done", done))
///     .bind()
///     .await?;
/// let messaging = server.messaging();
/// // From a task of your own: every subscriber of /topic/prices gets it.
/// messaging
///     .publish_json("/topic/prices", &serde_json::json!({ "ACME": 12.5 }))
///     .await?;
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct Messaging {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Messaging {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Messaging").finish_non_exhaustive()
    }
}

/// Refuses headers that would let the payload's author shape another
/// client's frame. A line break in a value is fine: it is escaped on the way
/// out (the 1.1 way for STOMP 1.0 subscribers).
pub(crate) fn check_headers(payload: &Payload) -> Result<(), MessagingError> {
    let invalid = |name: &str, problem| MessagingError::InvalidHeader {
        name: name.escape_debug().to_string(),
        problem,
    };
    if payload.content_type.contains('\0') {
        return Err(invalid(header::CONTENT_TYPE, "has a NUL byte in its value"));
    }
    for (name, value) in &payload.headers {
        if name.contains('\0') {
            return Err(invalid(name, "has a NUL byte in its name"));
        }
        if name.contains([':', '\n', '\r']) {
            return Err(invalid(name, "has a ':' or a line break in its name"));
        }
        if value.contains('\0') {
            return Err(invalid(name, "has a NUL byte in its value"));
        }
    }
    Ok(())
}

pub(crate) fn send_frame(destination: &str, payload: Payload) -> Frame {
    let mut frame = Frame::new(Command::Send);
    {
        let fields = || {
            [
                (header::DESTINATION, destination),
                (header::CONTENT_TYPE, payload.content_type.as_str()),
            ]
            .into_iter()
            .chain(
                payload
                    .headers
                    .iter()
                    .filter(|(name, _)| {
                        !RESERVED.contains(&name.as_str()) && name != header::CONTENT_TYPE
                    })
                    .map(|(name, value)| (name.as_str(), value.as_str())),
            )
        };
        // Every name and value in one buffer: one allocation for the frame's
        // headers instead of two per header (a handler's reply is published
        // on every request).
        let mut buf = BytesMut::with_capacity(fields().map(|(n, v)| n.len() + v.len()).sum());
        let mut count = 0;
        for (name, value) in fields() {
            buf.extend_from_slice(name.as_bytes());
            buf.extend_from_slice(value.as_bytes());
            count += 1;
        }
        let all = buf.freeze();
        frame.headers = Headers::with_capacity(count);
        let mut at = 0;
        for (name, value) in fields() {
            let middle = at + name.len();
            let end = middle + value.len();
            frame
                .headers
                .push(all.slice(at..middle), all.slice(middle..end));
            at = end;
        }
    }
    frame.body = payload.body;
    frame
}

impl Messaging {
    pub(crate) fn new(broker: Arc<dyn Broker>, user_prefix: &str) -> Messaging {
        Messaging {
            inner: Arc::new(Inner {
                broker,
                user_prefix: user_prefix.trim_end_matches('/').to_owned(),
                published: std::sync::atomic::AtomicU64::new(0),
            }),
        }
    }

    /// Messages published through this handle (and its clones) since start.
    pub(crate) fn published(&self) -> u64 {
        self.inner
            .published
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    fn count_published(&self) {
        self.inner
            .published
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }

    /// Publishes to a broker destination (`/topic/…`, `/queue/…`), or to a
    /// user as `/user/{name}/queue/…`.
    ///
    /// Called from a handler or hook (on the task of the session whose frame
    /// it handles), it returns once the subscribers it fed have room: while
    /// one has more than an eighth of its outbox queued, for at most the send
    /// time limit. So a handler publishing in a loop is slowed instead of
    /// getting subscribers cut off. From other tasks it never waits.
    ///
    /// # Errors
    ///
    /// [`MessagingError`] when the destination is not valid or the broker refuses.
    pub async fn publish(
        &self,
        destination: &str,
        payload: impl Into<Payload>,
    ) -> Result<(), MessagingError> {
        if destination.contains('\0') {
            return Err(MessagingError::InvalidDestination(
                destination.escape_debug().to_string(),
            ));
        }
        if let Some((user, rest)) = self.user_target(destination) {
            self.send_to_user(user, rest, payload).await?;
            return Ok(());
        }
        if !self.inner.broker.handles(destination)
            || self.inner.broker.is_user_destination(destination)
        {
            self.inner.broker.check_destination(destination)?;
            return Err(MessagingError::InvalidDestination(destination.to_owned()));
        }
        let payload = payload.into();
        check_headers(&payload)?;
        let frame = send_frame(destination, payload);
        self.inner
            .broker
            .publish(Publish {
                destination: destination.to_owned(),
                frame,
            })
            .await?;
        self.count_published();
        // Called from a session's handler or hook, a loop of publishes waits
        // for the subscribers it congests, as that session's SENDs would.
        crate::outbox::Congested::wait_here().await;
        Ok(())
    }

    /// Publishes `value` as JSON.
    ///
    /// # Errors
    ///
    /// As [`Messaging::publish`]; a value that does not serialize is an
    /// invalid payload.
    pub async fn publish_json<T: serde::Serialize + ?Sized>(
        &self,
        destination: &str,
        value: &T,
    ) -> Result<(), MessagingError> {
        let payload = Payload::json(value).map_err(|e| {
            MessagingError::Broker(BrokerError::InvalidDestination(format!(
                "payload for {destination}: {e}"
            )))
        })?;
        self.publish(destination, payload).await
    }

    /// Sends to every session of `user` subscribed to the user destination
    /// `destination` (e.g. `/queue/notifications`, which clients subscribe
    /// to as `/user/queue/notifications`), on every instance sharing the
    /// broker. A user with no such session is not an error: like a topic
    /// without subscribers, the message is simply not delivered.
    ///
    /// # Errors
    ///
    /// When the destination is not valid or the broker refuses.
    pub async fn send_to_user(
        &self,
        user: &str,
        destination: &str,
        payload: impl Into<Payload>,
    ) -> Result<(), MessagingError> {
        self.publish_user(&user_key(user, destination), destination, payload.into())
            .await
    }

    /// Sends to one session's user destination `destination`.
    ///
    /// # Errors
    ///
    /// When the destination is not valid or the broker refuses.
    pub async fn send_to_session(
        &self,
        session_id: &str,
        destination: &str,
        payload: impl Into<Payload>,
    ) -> Result<(), MessagingError> {
        self.publish_user(
            &session_key(session_id, destination),
            destination,
            payload.into(),
        )
        .await
    }

    async fn publish_user(
        &self,
        key: &str,
        destination: &str,
        payload: Payload,
    ) -> Result<(), MessagingError> {
        self.check_user_destination(destination)?;
        let resolved = self.inner.broker.user_destination(key);
        self.publish_resolved(resolved, payload).await
    }

    fn check_user_destination(&self, destination: &str) -> Result<(), MessagingError> {
        if !self.inner.broker.handles(destination)
            || self.inner.broker.is_user_destination(destination)
            || destination.contains('\0')
        {
            return Err(MessagingError::InvalidDestination(
                destination.escape_debug().to_string(),
            ));
        }
        Ok(())
    }

    /// [`Messaging::send_to_user`] (`owner` [`Owner::User`]) or
    /// [`Messaging::send_to_session`] ([`Owner::Session`]) for a session's
    /// handler reply, with the broker destination taken from the session's
    /// `routes` instead of computed again for every reply.
    pub(crate) async fn reply_to(
        &self,
        routes: &mut ReplyRoutes,
        owner: Owner,
        user: &str,
        session_id: &str,
        destination: &str,
        payload: Payload,
    ) -> Result<(), MessagingError> {
        self.check_user_destination(destination)?;
        let resolved = routes
            .resolve(
                self.inner.broker.as_ref(),
                owner,
                user,
                session_id,
                destination,
            )
            .to_owned();
        self.publish_resolved(resolved, payload).await
    }

    /// Publishes to the broker destination a user destination resolved to.
    async fn publish_resolved(
        &self,
        resolved: String,
        payload: Payload,
    ) -> Result<(), MessagingError> {
        check_headers(&payload)?;
        let frame = send_frame(&resolved, payload);
        self.inner
            .broker
            .publish(Publish {
                destination: resolved,
                frame,
            })
            .await?;
        self.count_published();
        crate::outbox::Congested::wait_here().await;
        Ok(())
    }

    /// Splits `/user/{name}/queue/x` into (`name`, `/queue/x`).
    pub(crate) fn user_target<'a>(&self, destination: &'a str) -> Option<(&'a str, &'a str)> {
        let rest = destination
            .strip_prefix(self.inner.user_prefix.as_str())?
            .strip_prefix('/')?;
        let slash = rest.find('/')?;
        let (user, target) = rest.split_at(slash);
        (!user.is_empty()).then_some((user, target))
    }

    /// True for `/user/…` destinations.
    pub(crate) fn is_user_destination(&self, destination: &str) -> bool {
        destination
            .strip_prefix(self.inner.user_prefix.as_str())
            .is_some_and(|rest| rest.starts_with('/'))
    }

    /// The user prefix, e.g. `/user`.
    pub(crate) fn user_prefix(&self) -> &str {
        &self.inner.user_prefix
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::embedded::{EmbeddedBroker, EmbeddedConfig};

    fn messaging() -> Messaging {
        Messaging::new(
            Arc::new(EmbeddedBroker::new(EmbeddedConfig::default())),
            "/user",
        )
    }

    #[tokio::test]
    async fn headers_no_frame_can_carry_are_refused_at_every_entry() {
        let messaging = messaging();
        for (name, value, problem) in [
            ("x-nul", "a\0b", "NUL byte in its value"),
            ("x\0nul", "a", "NUL byte in its name"),
            ("content-length:3", "a", "':' or a line break"),
            ("x\nforged", "a", "':' or a line break"),
        ] {
            let payload = || Payload::text("x").header(name, value);
            for result in [
                messaging.publish("/topic/a", payload()).await,
                messaging.publish("/user/bob/queue/a", payload()).await,
                messaging.send_to_user("bob", "/queue/a", payload()).await,
                messaging
                    .send_to_session("s-1", "/queue/a", payload())
                    .await,
            ] {
                match result {
                    Err(e @ MessagingError::InvalidHeader { .. }) => {
                        let text = e.to_string();
                        assert!(text.contains(&name.escape_debug().to_string()), "{text}");
                        assert!(text.contains(problem), "{text}");
                    }
                    other => panic!("{name:?}: {other:?}"),
                }
            }
        }
        let mut payload = Payload::text("x");
        payload.content_type = "text/plain\0".into();
        assert!(matches!(
            messaging.publish("/topic/a", payload).await,
            Err(MessagingError::InvalidHeader { .. })
        ));
        assert!(matches!(
            messaging.publish("/topic/a\0b", "x").await,
            Err(MessagingError::InvalidDestination(_))
        ));
        // A line break in a value is escaped on the way out, so allowed.
        let fine = Payload::text("x").header("x-multi", "line 1\nline 2");
        assert_eq!(messaging.publish("/topic/a", fine).await, Ok(()));
    }
}
