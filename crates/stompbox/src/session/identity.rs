//! Who a session is and what it may do: authentication at CONNECT, the
//! access rules on SEND and SUBSCRIBE, and the verified sender header.

use super::Session;
use crate::app::SendInfo;
use crate::auth::access::Operation;
use crate::auth::{AuthError, ConnectRequest, User};
use crate::frames::{ErrorReason, StompError};
use crate::router::{self, Target};
use crate::shared::ServerShared;
use bytes::Bytes;
use std::sync::Arc;
use std::time::SystemTime;
use stompbox_codec::Frame;

/// The header the server puts on every message a client sends: the sender's
/// verified user name, or empty for an anonymous sender. Messages the server
/// itself publishes (handler replies, the messaging handle, the HTTP API) do
/// not carry it, and a client cannot set it: every `stompbox-` header a
/// client sends is dropped.
pub const SENDER_HEADER: &str = "stompbox-sender";

/// Headers under this prefix are the server's; clients cannot set them.
const RESERVED_HEADER_PREFIX: &[u8] = b"stompbox-";

impl Session {
    /// Who the CONNECT is: a verified user, or an anonymous session when
    /// the server has no authenticator, or when it allows anonymous sessions
    /// and the CONNECT carried no credentials at all.
    pub(super) async fn authenticate(
        server: &ServerShared,
        session_id: &Arc<str>,
        request: &ConnectRequest,
    ) -> Result<(User, Option<SystemTime>), AuthError> {
        let Some(authenticator) = &server.authenticator else {
            // A client-sent login is never an identity on its own.
            return Ok((User::anonymous(session_id), None));
        };
        let config = &server.config;
        // Application code: a panic refuses this CONNECT only, and a hang
        // is bounded like the CONNECT frame itself.
        let answer = tokio::time::timeout(
            config.connect_timeout,
            router::guarded(authenticator.authenticate(request)),
        )
        .await;
        let identity = match answer {
            Ok(Ok(result)) => result?,
            Ok(Err(())) => return Err(AuthError::Unavailable("the authenticator panicked".into())),
            Err(_) => {
                return Err(AuthError::Unavailable(
                    "the authenticator took too long".into(),
                ));
            }
        };
        match identity {
            Some(identity) => {
                if identity.name.is_empty() {
                    return Err(AuthError::Unavailable(
                        "the authenticator returned an empty user name".into(),
                    ));
                }
                if identity
                    .expires_at
                    .is_some_and(|at| at <= SystemTime::now())
                {
                    return Err(AuthError::TokenExpired);
                }
                Ok((User::authenticated(&identity), identity.expires_at))
            }
            // Credentials nobody accepted must not quietly become an
            // anonymous session: the client meant to be someone.
            None if carries_credentials(request) => Err(AuthError::BadCredentials),
            None if config.auth.allow_anonymous => Ok((User::anonymous(session_id), None)),
            None => Err(AuthError::Required),
        }
    }

    /// Checks the access rules for `operation` on `destination`.
    pub(super) fn authorize(
        &self,
        user: &User,
        operation: Operation,
        destination: &str,
        target: &Target,
    ) -> Result<(), StompError> {
        let rules = &self.server.config.auth.rules;
        let command = match operation {
            Operation::Send => "SEND to",
            Operation::Subscribe => "SUBSCRIBE to",
        };
        // Built only for a refusal: this runs for every SEND.
        let who = || {
            if user.is_authenticated() {
                format!("user '{}'", user.name())
            } else {
                "anonymous sessions".to_owned()
            }
        };
        if rules.is_open() {
            // Without rules everything is allowed but writing into another
            // user's destinations anonymously, which would let anyone
            // impersonate the server towards any user.
            if operation == Operation::Send
                && matches!(target, Target::OtherUser { .. })
                && !user.is_authenticated()
            {
                return Err(StompError::new(format!(
                    "access refused: {command} '{destination}' is not allowed for {}; sending to another user needs a login",
                    who()
                ))
                .because(ErrorReason::AccessDenied));
            }
            return Ok(());
        }
        if rules.allows(user, operation, destination) {
            Ok(())
        } else {
            Err(StompError::new(format!(
                "access refused: {command} '{destination}' is not allowed for {}",
                who()
            ))
            .because(ErrorReason::AccessDenied))
        }
    }

    /// The access rules, then the application's send hook, for a SEND.
    pub(super) async fn authorize_send(
        &mut self,
        destination: &str,
        target: &Target,
        frame: &Frame,
    ) -> Result<(), StompError> {
        let connected = self.connected_mut()?;
        let user = connected.user.clone();
        if connected.last_send_allowed.as_deref() != Some(destination) {
            self.authorize(&user, Operation::Send, destination, target)?;
            if !self.server.config.auth.rules.is_open() {
                self.connected_mut()?.last_send_allowed = Some(destination.into());
            }
        }
        if let Some(hook) = &self.server.app.hooks.send {
            let info = SendInfo {
                session_id: Arc::clone(&self.entry.id),
                user,
                destination: destination.to_owned(),
                headers: frame.headers.clone(),
            };
            match router::guarded(hook(info)).await {
                Ok(Ok(())) => {}
                Ok(Err(reject)) => {
                    return Err(StompError::new(reject.0).because(ErrorReason::Application));
                }
                Err(()) => {
                    return Err(StompError::new(format!(
                        "sending to '{destination}' failed"
                    )));
                }
            }
        }
        Ok(())
    }
}

/// True when a CONNECT carried something meant as credentials. Cookies do
/// not count: browsers send them whatever the page meant.
pub(super) fn carries_credentials(request: &ConnectRequest) -> bool {
    let present = |value: Option<&str>| value.is_some_and(|v| !v.is_empty());
    present(request.login())
        || present(request.passcode())
        || request.connect_bearer_token().is_some()
        || request.handshake.bearer_token().is_some()
        || request.handshake.query("access_token").is_some()
}

/// True for a header name in the server's `stompbox-` namespace, in any
/// case (STOMP names are case-sensitive, but a client or broker that folds
/// case must not turn `Stompbox-Sender` into the real one).
pub(crate) fn is_reserved_header(name: &[u8]) -> bool {
    name.get(..RESERVED_HEADER_PREFIX.len())
        .is_some_and(|start| start.eq_ignore_ascii_case(RESERVED_HEADER_PREFIX))
}

/// Drops every `stompbox-` header a client put on a frame.
pub(super) fn strip_reserved(frame: &mut Frame) {
    frame.headers.retain(|name, _| !is_reserved_header(name));
}

/// Marks a client's message with its verified sender, replacing whatever
/// `stompbox-` headers the client put on it.
pub(super) fn stamp_sender(frame: &mut Frame, user: &User) {
    strip_reserved(frame);
    let sender = if user.is_authenticated() {
        Bytes::copy_from_slice(user.name().as_bytes())
    } else {
        Bytes::new()
    };
    frame
        .headers
        .push(Bytes::from_static(SENDER_HEADER.as_bytes()), sender);
}
