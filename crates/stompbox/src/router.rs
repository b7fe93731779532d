//! Where a destination goes: an application handler, a user destination, or
//! the broker. Also runs handlers (isolated from panics) and delivers their
//! replies.

use crate::app::user::{Owner, ReplyRoutes};
use crate::app::{Payload, Reply, User, context};
use crate::frames::{StompError, encode};
use crate::outbox::Outbox;
use crate::shared::ServerShared;
use futures_util::FutureExt;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use stompbox_codec::{Command, Frame, Version, header};

/// The user destination errors go to (clients subscribe to
/// `/user/queue/errors`).
pub(crate) const ERRORS_DESTINATION: &str = "/queue/errors";

/// What a destination names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Target {
    /// A broker destination.
    Broker,
    /// An application destination; `path` is without the prefix.
    App { path: String },
    /// `/user/queue/x` on SUBSCRIBE: this session's own user destination.
    OwnUser { target: String },
    /// `/user/{name}/queue/x` on SEND: another user's destination.
    OtherUser { user: String, target: String },
}

fn app_path(server: &ServerShared, destination: &str) -> Option<String> {
    server.config.app_prefixes.iter().find_map(|prefix| {
        let rest = destination.strip_prefix(prefix.trim_end_matches('/'))?;
        rest.starts_with('/').then(|| rest.to_owned())
    })
}

fn unknown(server: &ServerShared, destination: &str) -> StompError {
    let mut known: Vec<String> = server
        .config
        .app_prefixes
        .iter()
        .map(|p| format!("{}/", p.trim_end_matches('/')))
        .collect();
    known.push(format!("{}/", server.messaging.user_prefix()));
    known.extend(server.broker.prefixes());
    StompError::new(format!(
        "destination '{destination}' is under no known prefix (known: {})",
        known.join(", ")
    ))
}

fn reserved(destination: &str) -> StompError {
    StompError::new(format!(
        "destination '{destination}' is reserved for user destinations; use /user/… instead"
    ))
}

pub(crate) fn classify_send(
    server: &ServerShared,
    destination: &str,
) -> Result<Target, StompError> {
    if let Some(path) = app_path(server, destination) {
        return Ok(Target::App { path });
    }
    if server.messaging.is_user_destination(destination) {
        return match server.messaging.user_target(destination) {
            Some((user, target)) if server.broker.handles(target) => Ok(Target::OtherUser {
                user: user.to_owned(),
                target: target.to_owned(),
            }),
            _ => Ok(Target::OwnUser {
                target: destination.to_owned(),
            }),
        };
    }
    if server.broker.is_user_destination(destination) {
        return Err(reserved(destination));
    }
    server.broker.check_destination(destination)?;
    if server.broker.handles(destination) {
        return Ok(Target::Broker);
    }
    Err(unknown(server, destination))
}

pub(crate) fn classify_subscribe(
    server: &ServerShared,
    destination: &str,
) -> Result<Target, StompError> {
    if let Some(path) = app_path(server, destination) {
        return Ok(Target::App { path });
    }
    if let Some(target) = destination.strip_prefix(server.messaging.user_prefix()) {
        if server.broker.handles(target) {
            return Ok(Target::OwnUser {
                target: target.to_owned(),
            });
        }
        if target.starts_with('/') {
            return Ok(Target::OtherUser {
                user: String::new(),
                target: target.to_owned(),
            });
        }
    }
    if server.broker.is_user_destination(destination) {
        return Err(reserved(destination));
    }
    server.broker.check_destination(destination)?;
    if server.broker.handles(destination) {
        return Ok(Target::Broker);
    }
    Err(unknown(server, destination))
}

/// Runs user code so that a panic becomes an `Err(())` for this one call
/// instead of taking the session's task (and its socket) down.
pub(crate) async fn guarded<T>(future: impl Future<Output = T>) -> Result<T, ()> {
    match AssertUnwindSafe(future).catch_unwind().await {
        Ok(value) => Ok(value),
        Err(panic) => {
            let message = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_owned())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_default();
            tracing::error!(panic = %message, "application code panicked");
            Err(())
        }
    }
}

/// Runs the handler for an application destination.
pub(crate) async fn run_handler(
    server: &ServerShared,
    subscribe: bool,
    frame: Frame,
    destination: &str,
    path: &str,
    session_id: &std::sync::Arc<str>,
    user: &User,
) -> Result<Reply, StompError> {
    let Some((route, vars)) = server.app.find(subscribe, path) else {
        return Err(StompError::new(format!(
            "no application handler for {} '{destination}'",
            if subscribe { "SUBSCRIBE to" } else { "SEND to" }
        )));
    };
    let context = context(
        frame,
        destination.to_owned(),
        path.to_owned(),
        vars,
        std::sync::Arc::clone(session_id),
        user.clone(),
        server.messaging.clone(),
    );
    let started = std::time::Instant::now();
    let reply = guarded((route.handler())(context)).await;
    server.telemetry.handler_finished(
        subscribe,
        route.template(),
        route.latency(),
        started.elapsed(),
    );
    Ok(reply.unwrap_or_else(|()| {
        Reply::Error(format!("internal error while handling '{destination}'"))
    }))
}

/// Where a handler's reply goes by default: the topic prefix plus the
/// handler's path (Spring's `@SendTo` default).
fn topic_prefix(server: &ServerShared) -> &str {
    match &server.config.relay {
        Some(_) => "/topic",
        None => server
            .config
            .embedded
            .topic_prefixes
            .first()
            .map_or("/topic", |p| p.trim_end_matches('/')),
    }
}

fn queue_prefix(server: &ServerShared) -> &str {
    match &server.config.relay {
        Some(_) => "/queue",
        None => server
            .config
            .embedded
            .queue_prefixes
            .first()
            .map_or("/queue", |p| p.trim_end_matches('/')),
    }
}

/// Delivers a SEND handler's reply. `routes` remembers, for the session,
/// where its user destinations are on the broker.
pub(crate) async fn deliver_reply(
    server: &ServerShared,
    routes: &mut ReplyRoutes,
    reply: Reply,
    destination: &str,
    path: &str,
    session_id: &str,
    user: &User,
) {
    let result = match reply {
        Reply::Nothing => Ok(()),
        Reply::Default(payload) => {
            let to = format!("{}{path}", topic_prefix(server));
            server.messaging.publish(&to, payload).await
        }
        Reply::To {
            destination,
            payload,
        } => server.messaging.publish(&destination, payload).await,
        Reply::ToUser {
            destination: to,
            only_this_session,
            payload,
        } => {
            let to = to.unwrap_or_else(|| format!("{}{path}", queue_prefix(server)));
            // An anonymous session has no user to reach: its reply goes
            // to the session itself.
            let owner = if only_this_session || !user.is_authenticated() {
                Owner::Session
            } else {
                Owner::User
            };
            server
                .messaging
                .reply_to(routes, owner, user.name(), session_id, &to, payload)
                .await
        }
        Reply::Error(message) => {
            report_error(server, session_id, destination, &message).await;
            Ok(())
        }
    };
    if let Err(e) = result {
        report_error(server, session_id, destination, &e.to_string()).await;
    }
}

/// Who a SUBSCRIBE handler's reply goes to.
pub(crate) struct SubscribeReplyTarget<'a> {
    pub(crate) routes: &'a mut ReplyRoutes,
    pub(crate) subscription: &'a [u8],
    pub(crate) destination: &'a str,
    pub(crate) path: &'a str,
    pub(crate) session_id: &'a str,
    pub(crate) user: &'a User,
    pub(crate) version: Version,
    pub(crate) message_id: &'a str,
}

/// Delivers a SUBSCRIBE handler's reply: by default straight to the
/// subscriber as a MESSAGE on its new subscription.
pub(crate) async fn deliver_subscribe_reply(
    server: &ServerShared,
    outbox: &Outbox,
    reply: Reply,
    target: SubscribeReplyTarget<'_>,
) {
    let Reply::Default(payload) = reply else {
        deliver_reply(
            server,
            target.routes,
            reply,
            target.destination,
            target.path,
            target.session_id,
            target.user,
        )
        .await;
        return;
    };
    // Written straight into a MESSAGE frame, so held to what the
    // messaging handle accepts.
    if let Err(e) = crate::app::check_headers(&payload) {
        report_error(
            server,
            target.session_id,
            target.destination,
            &e.to_string(),
        )
        .await;
        return;
    }
    let mut frame = Frame::new(Command::Message);
    frame.headers.push(
        bytes::Bytes::from_static(header::SUBSCRIPTION.as_bytes()),
        bytes::Bytes::copy_from_slice(target.subscription),
    );
    frame
        .headers
        .push_str(header::DESTINATION, target.destination);
    frame
        .headers
        .push_str(header::MESSAGE_ID, target.message_id);
    frame
        .headers
        .push_str(header::CONTENT_TYPE, &payload.content_type);
    for (name, value) in &payload.headers {
        frame.headers.push_str(name, value);
    }
    frame
        .headers
        .push_str(header::CONTENT_LENGTH, &payload.body.len().to_string());
    frame.body = payload.body;
    let _ = outbox.push(encode(&frame, target.version));
}

/// Sends an error to the session's `/user/queue/errors` as JSON
/// `{"error": …, "destination": …}`. A session that does not subscribe there
/// does not get it (as with Spring); the log has it either way.
pub(crate) async fn report_error(
    server: &ServerShared,
    session_id: &str,
    destination: &str,
    message: &str,
) {
    tracing::debug!(
        session = session_id,
        destination,
        error = message,
        "handler error"
    );
    let body = serde_json::json!({ "error": message, "destination": destination });
    let payload = match Payload::json(&body) {
        Ok(payload) => payload,
        Err(_) => Payload::text(message),
    };
    if let Err(e) = server
        .messaging
        .send_to_session(session_id, ERRORS_DESTINATION, payload)
        .await
    {
        tracing::warn!(session = session_id, error = %e, "could not deliver a handler error");
    }
}

/// The payload of a client's SEND, for forwarding to a user.
pub(crate) fn payload_of(frame: Frame) -> Payload {
    let content_type = frame
        .headers
        .get(header::CONTENT_TYPE)
        .unwrap_or("application/octet-stream")
        .to_owned();
    let headers = frame
        .headers
        .iter()
        .filter(|(name, _)| {
            !matches!(
                *name,
                header::DESTINATION | header::CONTENT_TYPE | header::RECEIPT | header::TRANSACTION
            )
        })
        .map(|(n, v)| (n.to_owned(), v.to_owned()))
        .collect();
    Payload {
        body: frame.body,
        content_type,
        headers,
    }
}
