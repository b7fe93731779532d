//! What a handler's return value means: where its reply goes.

use bytes::Bytes;
use serde::Serialize;
use std::fmt::Display;

/// A JSON payload. As a handler argument, the message body parsed as JSON
/// (with a `content-type`, it must be JSON); as a return value, the reply
/// serialized as JSON.
// Defined here, with the replies, so that the reply types do not import the
// handler context (which imports the messaging that publishes them).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Json<T>(pub T);

/// A message body with its content type, ready to publish.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Payload {
    /// The body bytes.
    pub body: Bytes,
    /// The `content-type` header.
    pub content_type: String,
    /// Extra headers for the MESSAGE frames.
    pub headers: Vec<(String, String)>,
}

impl Payload {
    /// A `text/plain` payload.
    pub fn text(text: impl Into<String>) -> Payload {
        Payload {
            body: Bytes::from(text.into()),
            content_type: "text/plain;charset=utf-8".into(),
            headers: Vec::new(),
        }
    }

    /// An `application/json` payload.
    ///
    /// # Errors
    ///
    /// When `value` cannot be serialized.
    pub fn json<T: Serialize + ?Sized>(value: &T) -> Result<Payload, serde_json::Error> {
        Ok(Payload {
            body: Bytes::from(serde_json::to_vec(value)?),
            content_type: "application/json".into(),
            headers: Vec::new(),
        })
    }

    /// Raw bytes with a content type.
    pub fn bytes(body: impl Into<Bytes>, content_type: impl Into<String>) -> Payload {
        Payload {
            body: body.into(),
            content_type: content_type.into(),
            headers: Vec::new(),
        }
    }

    /// Adds a header (builder style).
    #[must_use]
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Payload {
        self.headers.push((name.into(), value.into()));
        self
    }
}

impl From<String> for Payload {
    fn from(text: String) -> Payload {
        Payload::text(text)
    }
}

impl From<&str> for Payload {
    fn from(text: &str) -> Payload {
        Payload::text(text)
    }
}

/// Where a handler's reply goes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Reply {
    /// No reply.
    Nothing,
    /// To the default destination: for a SEND, the broker's `/topic` plus
    /// the same path (Spring's `@SendTo` default); for a SUBSCRIBE, straight
    /// back to the subscriber.
    Default(Payload),
    /// To an explicit broker destination.
    To {
        /// The destination, e.g. `/topic/news`.
        destination: String,
        /// The payload.
        payload: Payload,
    },
    /// To the sending user at a user destination such as `/queue/reply`
    /// (clients subscribe to `/user/queue/reply`).
    ToUser {
        /// The destination without the `/user` prefix; `None` means `/queue`
        /// plus the same path.
        destination: Option<String>,
        /// Only the sending session, not every session of the user.
        only_this_session: bool,
        /// The payload.
        payload: Payload,
    },
    /// An error for the sender, delivered at `/user/queue/errors`.
    Error(String),
}

/// A handler return value.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be returned from a handler",
    note = "return (), Json<T>, String, Payload, SendTo, SendToUser, Reply, or a Result of one of these"
)]
pub trait IntoReply {
    /// Converts into a [`Reply`].
    fn into_reply(self) -> Reply;
}

impl IntoReply for Reply {
    fn into_reply(self) -> Reply {
        self
    }
}

impl IntoReply for () {
    fn into_reply(self) -> Reply {
        Reply::Nothing
    }
}

impl IntoReply for Payload {
    fn into_reply(self) -> Reply {
        Reply::Default(self)
    }
}

impl IntoReply for String {
    fn into_reply(self) -> Reply {
        Reply::Default(Payload::text(self))
    }
}

impl<T: Serialize> IntoReply for Json<T> {
    fn into_reply(self) -> Reply {
        match Payload::json(&self.0) {
            Ok(payload) => Reply::Default(payload),
            Err(e) => Reply::Error(format!("the handler's reply could not be serialized: {e}")),
        }
    }
}

impl<R: IntoReply> IntoReply for Option<R> {
    fn into_reply(self) -> Reply {
        self.map_or(Reply::Nothing, IntoReply::into_reply)
    }
}

/// `Err` goes to the sender's `/user/queue/errors` with the error's text
/// (Spring's `@MessageExceptionHandler` pattern).
impl<R: IntoReply, E: Display> IntoReply for Result<R, E> {
    fn into_reply(self) -> Reply {
        match self {
            Ok(reply) => reply.into_reply(),
            Err(e) => Reply::Error(e.to_string()),
        }
    }
}

/// Sends the inner reply's payload to an explicit destination.
///
/// ```
/// use stompbox::app::{App, Json, Path, SendTo};
///
/// #[derive(serde::Deserialize, serde::Serialize)]
/// struct Order {
///     item: String,
/// }
///
/// // SEND /app/orders/{shop}: the order goes to the shop's queue, where
/// // its workers compete for it, instead of the default /topic/orders/….
/// async fn place(Path(shop): Path<String>, Json(order): Json<Order>) -> SendTo<Json<Order>> {
///     SendTo(format!("/queue/orders.{shop}"), Json(order))
/// }
///
/// let app = App::new().message("/orders/{shop}", place);
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
pub struct SendTo<R>(pub String, pub R);

impl<R: IntoReply> IntoReply for SendTo<R> {
    fn into_reply(self) -> Reply {
        match self.1.into_reply() {
            Reply::Default(payload) | Reply::To { payload, .. } | Reply::ToUser { payload, .. } => {
                Reply::To {
                    destination: self.0,
                    payload,
                }
            }
            other => other,
        }
    }
}

/// Sends the inner reply's payload to the sending user (Spring's
/// `@SendToUser`): by default to `/user/queue` plus the same path, to every
/// session of the user.
///
/// ```
/// use stompbox::app::{App, SendToUser, User};
///
/// // SUBSCRIBE /user/queue/answers, then SEND /app/ask: the answer reaches
/// // only the asker (an anonymous asker: only the asking session).
/// async fn ask(user: User, question: String) -> SendToUser<String> {
///     SendToUser::new(format!("{user} asked: {question}")).at("/queue/answers")
/// }
///
/// // Only the session that asked, even when the user has several open.
/// async fn whoami(user: User) -> SendToUser<String> {
///     SendToUser::new(user.name().to_owned()).only_this_session()
/// }
///
/// let app = App::new().message("/ask", ask).message("/whoami", whoami);
/// # let _ = app;
/// ```
#[derive(Debug, Clone)]
pub struct SendToUser<R> {
    reply: R,
    destination: Option<String>,
    only_this_session: bool,
}

impl<R> SendToUser<R> {
    /// To every session of the sending user, at the default destination.
    pub fn new(reply: R) -> SendToUser<R> {
        SendToUser {
            reply,
            destination: None,
            only_this_session: false,
        }
    }

    /// At `destination` (e.g. `/queue/answers`) instead of the default.
    #[must_use]
    pub fn at(mut self, destination: impl Into<String>) -> SendToUser<R> {
        self.destination = Some(destination.into());
        self
    }

    /// Only to the session that sent the message.
    #[must_use]
    pub fn only_this_session(mut self) -> SendToUser<R> {
        self.only_this_session = true;
        self
    }
}

impl<R: IntoReply> IntoReply for SendToUser<R> {
    fn into_reply(self) -> Reply {
        match self.reply.into_reply() {
            Reply::Default(payload) | Reply::To { payload, .. } | Reply::ToUser { payload, .. } => {
                Reply::ToUser {
                    destination: self.destination,
                    only_this_session: self.only_this_session,
                    payload,
                }
            }
            other => other,
        }
    }
}
