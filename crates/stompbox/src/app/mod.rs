//! Application destinations: handlers written by the user, like Spring's
//! `@MessageMapping` and `@SubscribeMapping` methods, plus lifecycle hooks.
//!
//! ```
//! use stompbox::app::{App, Json, Path, User};
//!
//! #[derive(serde::Deserialize, serde::Serialize)]
//! struct Chat { text: String }
//!
//! // SEND /app/chat/1 → every subscriber of /topic/chat/1 gets the reply.
//! async fn chat(Path(room): Path<String>, user: User, Json(message): Json<Chat>) -> Json<Chat> {
//!     Json(Chat { text: format!("[{room}] {user}: {}", message.text) })
//! }
//!
//! let app = App::new().message("/chat/{room}", chat);
//! # let _ = app;
//! ```
//!
//! # Ordering
//!
//! Frames from one session are handled one at a time, in the order they
//! arrived: a handler finishes (and its reply is published) before the next
//! frame of that session is looked at. Different sessions run concurrently.

mod context;
mod handler;
mod messaging;
mod reply;
mod route;
pub(crate) mod user;

pub use context::{
    Destination, FromMessage, FromPathVars, MessageContext, Path, Rejection, SessionId, State, User,
};
pub use handler::Handler;
pub(crate) use messaging::check_headers;
pub use messaging::{Messaging, MessagingError};
pub use reply::{IntoReply, Json, Payload, Reply, SendTo, SendToUser};
pub use route::InvalidRoute;

use crate::broker::BoxFuture;
use route::RouteTemplate;
use std::future::Future;
use std::sync::Arc;
use stompbox_codec::Headers;

type BoxedHandler = Arc<dyn Fn(MessageContext) -> BoxFuture<'static, Reply> + Send + Sync>;

/// Path variables captured by a route, in template order.
pub(crate) type PathVars = Vec<(Box<str>, String)>;

/// A refusal from a lifecycle hook; the client gets an ERROR with this text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject(pub String);

impl Reject {
    /// A refusal with a message for the client.
    pub fn new(message: impl Into<String>) -> Reject {
        Reject(message.into())
    }
}

/// What the connect hook sees, once authentication has succeeded.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ConnectInfo {
    /// The new session's id.
    pub session_id: Arc<str>,
    /// The verified user (anonymous without an authenticator).
    pub user: User,
    /// `login` from CONNECT, as the client sent it. Unverified: the
    /// verified name is `user`. An application may show it as a display
    /// name (the chat demo's nicknames).
    pub login: Option<String>,
    /// `host` from CONNECT.
    pub host: Option<String>,
    /// Every CONNECT header.
    pub headers: Headers,
    /// What the server saw before CONNECT: the WebSocket handshake's
    /// headers, cookies and query, and the client's address.
    pub handshake: Arc<crate::auth::Handshake>,
}

/// What the send hook sees: a SEND the access rules allowed.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SendInfo {
    /// The session.
    pub session_id: Arc<str>,
    /// The session's user.
    pub user: User,
    /// The destination as the client named it.
    pub destination: String,
    /// Every header of the SEND.
    pub headers: Headers,
}

/// What the subscribe and unsubscribe hooks see.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SubscriptionInfo {
    /// The session.
    pub session_id: Arc<str>,
    /// The session's user.
    pub user: User,
    /// The destination as the client named it.
    pub destination: String,
    /// The client's subscription id.
    pub id: String,
}

/// What the disconnect hook sees.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct SessionInfo {
    /// The session.
    pub session_id: Arc<str>,
    /// The session's user.
    pub user: User,
}

type ConnectHook = Arc<dyn Fn(ConnectInfo) -> BoxFuture<'static, Result<(), Reject>> + Send + Sync>;
type SendHook = Arc<dyn Fn(SendInfo) -> BoxFuture<'static, Result<(), Reject>> + Send + Sync>;
type SubscribeHook =
    Arc<dyn Fn(SubscriptionInfo) -> BoxFuture<'static, Result<(), Reject>> + Send + Sync>;
type UnsubscribeHook = Arc<dyn Fn(SubscriptionInfo) -> BoxFuture<'static, ()> + Send + Sync>;
type DisconnectHook = Arc<dyn Fn(SessionInfo) -> BoxFuture<'static, ()> + Send + Sync>;

#[derive(Clone, Default)]
pub(crate) struct Hooks {
    pub(crate) connect: Option<ConnectHook>,
    pub(crate) send: Option<SendHook>,
    pub(crate) subscribe: Option<SubscribeHook>,
    pub(crate) unsubscribe: Option<UnsubscribeHook>,
    pub(crate) disconnect: Option<DisconnectHook>,
}

pub(crate) struct Route {
    template: RouteTemplate,
    handler: BoxedHandler,
    /// This route's latency histogram, once the first call looked it up:
    /// the route serves one server for its life, and finding a labelled
    /// metric hashes its labels under a lock.
    latency: std::sync::OnceLock<prometheus::Histogram>,
}

impl Route {
    fn new(template: RouteTemplate, handler: BoxedHandler) -> Route {
        Route {
            template,
            handler,
            latency: std::sync::OnceLock::new(),
        }
    }

    /// The handler.
    pub(crate) fn handler(&self) -> &BoxedHandler {
        &self.handler
    }

    /// The template, which labels the handler's latency.
    pub(crate) fn template(&self) -> &str {
        self.template.as_str()
    }

    /// Where the route's latency histogram is kept once looked up.
    pub(crate) fn latency(&self) -> &std::sync::OnceLock<prometheus::Histogram> {
        &self.latency
    }
}

/// An application: handlers for application destinations and lifecycle
/// hooks, sharing a state `S`.
pub struct App<S = ()> {
    state: S,
    message_routes: Vec<Route>,
    subscribe_routes: Vec<Route>,
    hooks: Hooks,
}

impl<S> std::fmt::Debug for App<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("App")
            .field(
                "message_routes",
                &self
                    .message_routes
                    .iter()
                    .map(|r| r.template.as_str())
                    .collect::<Vec<_>>(),
            )
            .field(
                "subscribe_routes",
                &self
                    .subscribe_routes
                    .iter()
                    .map(|r| r.template.as_str())
                    .collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl App<()> {
    /// An application without shared state.
    pub fn new() -> App<()> {
        App::with_state(())
    }
}

impl Default for App<()> {
    fn default() -> App<()> {
        App::new()
    }
}

impl<S: Clone + Send + Sync + 'static> App<S> {
    /// An application whose handlers can take `State<S>`.
    pub fn with_state(state: S) -> App<S> {
        App {
            state,
            message_routes: Vec::new(),
            subscribe_routes: Vec::new(),
            hooks: Hooks::default(),
        }
    }

    fn boxed<H: Handler<T, S>, T>(&self, handler: H) -> BoxedHandler {
        let state = self.state.clone();
        Arc::new(move |context| handler.clone().call(context, state.clone()))
    }

    fn route(template: &str) -> RouteTemplate {
        match RouteTemplate::parse(template) {
            Ok(template) => template,
            // Routes are written by the programmer, like axum's; a bad one
            // is a bug to fix before the server ever starts.
            Err(e) => panic!("{e}"),
        }
    }

    /// Handles SENDs to an application destination (prefix excluded), e.g.
    /// `/chat/{room}` for `/app/chat/1`.
    ///
    /// # Panics
    ///
    /// When the template is not valid (a programming error, as in axum).
    #[must_use]
    pub fn message<H: Handler<T, S>, T>(mut self, template: &str, handler: H) -> App<S> {
        let route = Route::new(Self::route(template), self.boxed(handler));
        self.message_routes.push(route);
        self
    }

    /// Handles SUBSCRIBEs to an application destination: the reply goes
    /// straight to that subscriber, once (Spring's `@SubscribeMapping`).
    ///
    /// # Panics
    ///
    /// When the template is not valid.
    #[must_use]
    pub fn subscribe<H: Handler<T, S>, T>(mut self, template: &str, handler: H) -> App<S> {
        let route = Route::new(Self::route(template), self.boxed(handler));
        self.subscribe_routes.push(route);
        self
    }

    /// Runs on CONNECT once the server's authenticator has verified the
    /// user (or let the session in anonymously); `Err` refuses it. Who a
    /// user is comes only from the authenticator
    /// ([`ServerBuilder::authenticator`](crate::ServerBuilder::authenticator)
    /// or the built-in methods), never from this hook.
    ///
    /// The CONNECT `login` is there as sent, unverified; without
    /// authentication an application may show it as a display name
    /// (examples/hello keeps it per session for its replies):
    ///
    /// ```
    /// use stompbox::app::{App, Reject};
    ///
    /// let app = App::new().on_connect(|info| async move {
    ///     if info.user.is_authenticated() {
    ///         return Ok(());
    ///     }
    ///     match info.login.as_deref() {
    ///         Some(name) if !name.is_empty() && name.len() <= 32 => Ok(()),
    ///         _ => Err(Reject::new("send a login of 1 to 32 bytes: it is your name here")),
    ///     }
    /// });
    /// # let _ = app;
    /// ```
    #[must_use]
    pub fn on_connect<F, Fut>(mut self, hook: F) -> App<S>
    where
        F: Fn(ConnectInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Reject>> + Send + 'static,
    {
        self.hooks.connect = Some(Arc::new(move |info| Box::pin(hook(info))));
        self
    }

    /// Runs on every SEND the access rules allowed, before it takes effect
    /// (inside a transaction: when it is sent, not at COMMIT); `Err`
    /// refuses it with an ERROR.
    #[must_use]
    pub fn on_send<F, Fut>(mut self, hook: F) -> App<S>
    where
        F: Fn(SendInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Reject>> + Send + 'static,
    {
        self.hooks.send = Some(Arc::new(move |info| Box::pin(hook(info))));
        self
    }

    /// Runs on SUBSCRIBE, before anything else; `Err` refuses it.
    #[must_use]
    pub fn on_subscribe<F, Fut>(mut self, hook: F) -> App<S>
    where
        F: Fn(SubscriptionInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), Reject>> + Send + 'static,
    {
        self.hooks.subscribe = Some(Arc::new(move |info| Box::pin(hook(info))));
        self
    }

    /// Runs on UNSUBSCRIBE.
    #[must_use]
    pub fn on_unsubscribe<F, Fut>(mut self, hook: F) -> App<S>
    where
        F: Fn(SubscriptionInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.hooks.unsubscribe = Some(Arc::new(move |info| Box::pin(hook(info))));
        self
    }

    /// Runs once when a connected session ends, however it ends.
    #[must_use]
    pub fn on_disconnect<F, Fut>(mut self, hook: F) -> App<S>
    where
        F: Fn(SessionInfo) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.hooks.disconnect = Some(Arc::new(move |info| Box::pin(hook(info))));
        self
    }

    pub(crate) fn into_runtime(self) -> AppRuntime {
        let sort = |mut routes: Vec<Route>| {
            routes.sort_by_key(|r| std::cmp::Reverse(r.template.specificity()));
            routes
        };
        AppRuntime {
            message_routes: sort(self.message_routes),
            subscribe_routes: sort(self.subscribe_routes),
            hooks: self.hooks,
        }
    }
}

/// The type-erased application the sessions use.
pub(crate) struct AppRuntime {
    message_routes: Vec<Route>,
    subscribe_routes: Vec<Route>,
    pub(crate) hooks: Hooks,
}

impl AppRuntime {
    /// The route for `path`, and its path variables.
    pub(crate) fn find(&self, subscribe: bool, path: &str) -> Option<(&Route, PathVars)> {
        let routes = if subscribe {
            &self.subscribe_routes
        } else {
            &self.message_routes
        };
        routes
            .iter()
            .find_map(|r| r.template.matches(path).map(|vars| (r, vars)))
    }
}

pub(crate) fn context(
    frame: stompbox_codec::Frame,
    destination: String,
    path: String,
    vars: PathVars,
    session_id: Arc<str>,
    user: User,
    messaging: Messaging,
) -> MessageContext {
    MessageContext {
        frame,
        destination,
        path,
        vars,
        session_id,
        user,
        messaging,
    }
}
