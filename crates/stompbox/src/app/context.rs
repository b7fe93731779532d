//! What a handler is given, and the extractors that take pieces of it.

use super::messaging::Messaging;
use super::reply::Json;
pub use crate::auth::User;
use bytes::Bytes;
use serde::de::DeserializeOwned;
use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use stompbox_codec::{Frame, Headers, header};

/// Everything known about one application message (a SEND or SUBSCRIBE to
/// an application destination) when its handler runs.
#[derive(Debug, Clone)]
pub struct MessageContext {
    pub(crate) frame: Frame,
    pub(crate) destination: String,
    pub(crate) path: String,
    pub(crate) vars: Vec<(Box<str>, String)>,
    pub(crate) session_id: Arc<str>,
    pub(crate) user: User,
    pub(crate) messaging: Messaging,
}

impl MessageContext {
    /// The full destination, application prefix included.
    pub fn destination(&self) -> &str {
        &self.destination
    }

    /// The destination without the application prefix (what routes match).
    pub fn path(&self) -> &str {
        &self.path
    }
}

/// Why an extractor could not produce its value. The sender gets the text
/// at `/user/queue/errors`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection(String);

impl Rejection {
    /// A rejection with a message for the sender.
    pub fn new(message: impl Into<String>) -> Rejection {
        Rejection(message.into())
    }
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Something a handler can take as an argument.
///
/// Extraction is synchronous: everything is in the [`MessageContext`].
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be a handler argument",
    note = "handler arguments are extractors such as Path<T>, Json<T>, String, Bytes, Headers, SessionId, User, State<S> or Messaging"
)]
pub trait FromMessage<S>: Sized {
    /// Takes the value from the message.
    ///
    /// # Errors
    ///
    /// A [`Rejection`] the sender is told about.
    fn from_message(context: &MessageContext, state: &S) -> Result<Self, Rejection>;
}

impl<S, T: DeserializeOwned> FromMessage<S> for Json<T> {
    fn from_message(context: &MessageContext, _: &S) -> Result<Self, Rejection> {
        if let Some(content_type) = context.frame.headers.get(header::CONTENT_TYPE) {
            let essence = content_type.split(';').next().unwrap_or_default().trim();
            if !(essence.eq_ignore_ascii_case("application/json") || essence.ends_with("+json")) {
                return Err(Rejection::new(format!(
                    "expected a JSON payload (content-type application/json), got '{content_type}'"
                )));
            }
        }
        serde_json::from_slice(&context.frame.body)
            .map(Json)
            .map_err(|e| Rejection::new(format!("invalid JSON payload: {e}")))
    }
}

impl<S> FromMessage<S> for String {
    fn from_message(context: &MessageContext, _: &S) -> Result<Self, Rejection> {
        String::from_utf8(context.frame.body.to_vec())
            .map_err(|_| Rejection::new("payload is not valid UTF-8 text"))
    }
}

impl<S> FromMessage<S> for Bytes {
    fn from_message(context: &MessageContext, _: &S) -> Result<Self, Rejection> {
        Ok(context.frame.body.clone())
    }
}

impl<S> FromMessage<S> for Headers {
    fn from_message(context: &MessageContext, _: &S) -> Result<Self, Rejection> {
        Ok(context.frame.headers.clone())
    }
}

impl<S> FromMessage<S> for User {
    fn from_message(context: &MessageContext, _: &S) -> Result<Self, Rejection> {
        Ok(context.user.clone())
    }
}

impl<S> FromMessage<S> for Messaging {
    fn from_message(context: &MessageContext, _: &S) -> Result<Self, Rejection> {
        Ok(context.messaging.clone())
    }
}

/// The id of the session that sent the message.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SessionId(pub Arc<str>);

impl<S> FromMessage<S> for SessionId {
    fn from_message(context: &MessageContext, _: &S) -> Result<Self, Rejection> {
        Ok(SessionId(Arc::clone(&context.session_id)))
    }
}

/// The full destination the message was sent to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Destination(pub String);

impl<S> FromMessage<S> for Destination {
    fn from_message(context: &MessageContext, _: &S) -> Result<Self, Rejection> {
        Ok(Destination(context.destination.clone()))
    }
}

/// The application's shared state, as given to [`App::with_state`](super::App::with_state).
#[derive(Debug, Clone, Copy, Default)]
pub struct State<S>(pub S);

impl<S: Clone> FromMessage<S> for State<S> {
    fn from_message(_: &MessageContext, state: &S) -> Result<Self, Rejection> {
        Ok(State(state.clone()))
    }
}

/// Path variables of the route template: a single value (`Path<String>`,
/// `Path<u32>`), a tuple in template order, or a map by name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Path<T>(pub T);

/// Types [`Path`] can produce from the captured variables.
pub trait FromPathVars: Sized {
    /// Builds the value from the variables, in template order.
    ///
    /// # Errors
    ///
    /// A message naming the variable that does not fit.
    fn from_vars(vars: &[(Box<str>, String)]) -> Result<Self, String>;
}

impl<S, T: FromPathVars> FromMessage<S> for Path<T> {
    fn from_message(context: &MessageContext, _: &S) -> Result<Self, Rejection> {
        T::from_vars(&context.vars)
            .map(Path)
            .map_err(Rejection::new)
    }
}

impl FromPathVars for HashMap<String, String> {
    fn from_vars(vars: &[(Box<str>, String)]) -> Result<Self, String> {
        Ok(vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.clone()))
            .collect())
    }
}

fn parse_var<T: std::str::FromStr>(vars: &[(Box<str>, String)], index: usize) -> Result<T, String> {
    let (name, value) = vars
        .get(index)
        .ok_or_else(|| format!("route has no path variable number {}", index + 1))?;
    value
        .parse()
        .map_err(|_| format!("path variable '{name}' has an invalid value '{value}'"))
}

macro_rules! single_path_vars {
    ($($ty:ty),*) => {$(
        impl FromPathVars for $ty {
            fn from_vars(vars: &[(Box<str>, String)]) -> Result<Self, String> {
                parse_var(vars, 0)
            }
        }
    )*};
}

single_path_vars!(String, bool, u8, u16, u32, u64, usize, i8, i16, i32, i64);

macro_rules! tuple_path_vars {
    ($($name:ident $index:tt),*) => {
        impl<$($name: std::str::FromStr),*> FromPathVars for ($($name,)*) {
            fn from_vars(vars: &[(Box<str>, String)]) -> Result<Self, String> {
                Ok(($(parse_var::<$name>(vars, $index)?,)*))
            }
        }
    };
}

tuple_path_vars!(A 0);
tuple_path_vars!(A 0, B 1);
tuple_path_vars!(A 0, B 1, C 2);
tuple_path_vars!(A 0, B 1, C 2, D 3);
