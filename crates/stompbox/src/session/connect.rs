//! CONNECT: the version, the heart-beats, who the client is (rate and
//! failure limits, authentication, sessions per user, the connect hook),
//! and the broker session; then CONNECTED.

use super::identity::carries_credentials;
use super::{Connected, Flow, Heartbeat, HeartbeatMs, OpenTransactions, SERVER_NAME, Session};
use crate::app::ConnectInfo;
use crate::auth::{AuthError, ConnectRequest};
use crate::broker::SessionContext;
use crate::frames::{ErrorReason, StompError, connected_frame};
use crate::router;
use crate::small_map::SmallMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use stompbox_codec::{Frame, Version, header};
use tokio::time::Instant;

/// Parses `heart-beat: cx,cy` into milliseconds.
fn parse_heartbeat(value: &str) -> Option<(u64, u64)> {
    let (cx, cy) = value.split_once(',')?;
    Some((cx.trim().parse().ok()?, cy.trim().parse().ok()?))
}

/// One direction of heart-beats: the interval the client asked for (or
/// offered), but not shorter than `floor`; none when the server turned that
/// direction off (`enabled` zero) or the client wants none (`theirs_ms`
/// zero). The result is also what CONNECTED states for that direction, so
/// the client's own calculation (the larger of the two sides' values)
/// arrives at the same interval.
fn negotiate(enabled: Duration, floor: Duration, theirs_ms: u64) -> Option<Duration> {
    if enabled.is_zero() || theirs_ms == 0 {
        None
    } else {
        let floor = floor.max(Duration::from_millis(1));
        Some(floor.max(Duration::from_millis(theirs_ms)))
    }
}

impl Session {
    pub(super) async fn connect(&mut self, frame: Frame) -> Result<Flow, StompError> {
        if self.connected.is_some() {
            return Err(StompError::new(
                "already connected: CONNECT may only be sent once per connection",
            ));
        }
        let accepted: Vec<Version> = match frame.headers.get(header::ACCEPT_VERSION) {
            None => vec![Version::V1_0],
            Some(list) => list.split(',').filter_map(Version::parse).collect(),
        };
        let version = match self.subprotocol_versions {
            // The `101` named the newest subprotocol offered, before CONNECT
            // could be seen; any other version the client offered is agreed
            // too, so CONNECT decides among those (as RabbitMQ, ActiveMQ and
            // Spring decide by CONNECT alone).
            Some(offered) => accepted
                .iter()
                .copied()
                .filter(|v| offered.contains(*v))
                .max()
                .ok_or_else(|| {
                    let offered: Vec<&str> = offered.oldest_first().map(|v| v.as_str()).collect();
                    StompError {
                        message: format!(
                            "the CONNECT frame's accept-version shares no version with the WebSocket subprotocols offered (STOMP {})",
                            offered.join(", ")
                        ),
                        receipt_id: None,
                        version_header: Some(offered.join(",")),
                        reason: ErrorReason::Protocol,
                    }
                })?,
            None => accepted.iter().copied().max().ok_or_else(|| StompError {
                message: "no supported STOMP version in accept-version (supported: 1.0,1.1,1.2)"
                    .into(),
                receipt_id: None,
                version_header: Some("1.0,1.1,1.2".into()),
                reason: ErrorReason::Protocol,
            })?,
        };
        let (client_send, client_want) = match frame.headers.get(header::HEART_BEAT) {
            None => (0, 0),
            Some(_) if version == Version::V1_0 => (0, 0),
            Some(value) => parse_heartbeat(value).ok_or_else(|| {
                StompError::new(format!(
                    "invalid heart-beat header '{value}': expected two integers such as 10000,10000"
                ))
            })?,
        };
        let config = &self.server.config;
        self.heartbeat = HeartbeatMs::new(Heartbeat {
            send_every: negotiate(config.heartbeat_send, config.heartbeat_min, client_want),
            expect_every: negotiate(config.heartbeat_receive, config.heartbeat_min, client_send),
        });
        let login = frame.headers.get(header::LOGIN).map(str::to_owned);
        let passcode = frame.headers.get(header::PASSCODE).map(str::to_owned);
        let host = frame.headers.get(header::HOST).map(str::to_owned);
        let handshake = self.handshake.take().ok_or_else(|| {
            StompError::new("already connected: CONNECT may only be sent once per connection")
        })?;
        let remote = handshake.remote_addr;
        if !self.server.addresses.connect_attempt(remote.ip()) {
            tracing::info!(session = %self.entry.id, %remote, "CONNECT refused: too many attempts from one address");
            return Err(StompError::new(
                "too many CONNECT attempts from your address; wait a few seconds before trying again",
            )
            .because(ErrorReason::Limit));
        }
        let request = ConnectRequest {
            session_id: Arc::clone(&self.entry.id),
            headers: frame.headers.clone(),
            handshake: Arc::clone(&handshake),
        };
        let counted = carries_credentials(&request);
        if counted && !self.server.addresses.login_begins(remote.ip()) {
            tracing::info!(session = %self.entry.id, %remote, "CONNECT refused: too many failed logins from one address");
            self.server.telemetry.auth_failed("too_many_failed_logins");
            return Err(StompError::new(
                "access refused: too many failed logins from your address; try again in a minute",
            )
            .because(ErrorReason::Authentication));
        }
        let (user, expires) =
            match Session::authenticate(&self.server, &self.entry.id, &request).await {
                Ok(authenticated) => {
                    if counted {
                        self.server.addresses.login_done(remote.ip());
                    }
                    authenticated
                }
                Err(e) => {
                    // Only wrong credentials count, not an outage of the
                    // authentication service.
                    if counted && matches!(e, AuthError::Unavailable(_)) {
                        self.server.addresses.login_done(remote.ip());
                    }
                    tracing::info!(
                        session = %self.entry.id,
                        %remote,
                        login = ?request.login(),
                        reason = e.reason(),
                        "authentication failed"
                    );
                    // Each wrong guess costs the guesser this long.
                    self.server.telemetry.auth_failed(e.reason());
                    tokio::time::sleep(config.auth.failure_delay).await;
                    return Err(StompError::new(format!("access refused: {e}"))
                        .because(ErrorReason::Authentication));
                }
            };
        drop(request);
        let user_slot = if user.is_authenticated() {
            let limit = config.auth.max_sessions_per_user;
            let slot = self.server.user_sessions.try_add(user.name(), limit);
            if slot.is_none() {
                self.server.telemetry.auth_failed("too_many_user_sessions");
                return Err(StompError::new(format!(
                    "access refused: user '{}' already has {limit} sessions on this server (the limit)",
                    user.name()
                ))
                .because(ErrorReason::Authentication));
            }
            slot
        } else {
            None
        };
        if let Some(hook) = &self.server.app.hooks.connect {
            let info = ConnectInfo {
                session_id: Arc::clone(&self.entry.id),
                user: user.clone(),
                login: login.clone(),
                host: host.clone(),
                headers: frame.headers.clone(),
                handshake,
            };
            match router::guarded(hook(info)).await {
                Ok(Ok(())) => {}
                Ok(Err(reject)) => {
                    return Err(StompError::new(reject.0).because(ErrorReason::Application));
                }
                Err(()) => {
                    return Err(StompError::new(
                        "the server could not accept the connection",
                    ));
                }
            }
        }
        let context = SessionContext {
            session_id: Arc::clone(&self.entry.id),
            version,
            outbox: Arc::clone(&self.outbox),
            login,
            passcode,
            host,
            user: user.clone(),
        };
        let broker = self.server.broker.open_session(context).await?;
        self.entry.set_connected(
            user.is_authenticated().then(|| user.name().to_owned()),
            version,
        );
        self.connected = Some(Connected {
            version,
            user,
            expires_at: expires.map(|at| {
                Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default()
            }),
            _user_slot: user_slot,
            broker,
            subscriptions: SmallMap::new(),
            transactions: OpenTransactions::default(),
            transaction_bytes: crate::budget::Held::new(Arc::clone(&self.server.transaction_bytes)),
            last_send_allowed: None,
        });
        // A direction the client turned off still states the server's
        // setting, which tells the client what it could have had.
        let agreed = self.heartbeat();
        let heart_beat = [
            agreed
                .send_every
                .unwrap_or(config.heartbeat_send)
                .as_millis(),
            agreed
                .expect_every
                .unwrap_or(config.heartbeat_receive)
                .as_millis(),
        ];
        self.push(connected_frame(
            version,
            SERVER_NAME,
            &self.entry.id,
            heart_beat,
        ));
        Ok(Flow::Continue)
    }
}

#[cfg(test)]
mod tests {
    use super::negotiate;
    use std::time::Duration;

    #[test]
    fn heart_beats_follow_the_client_down_to_the_floor() {
        let on = Duration::from_secs(10);
        let floor = Duration::from_secs(1);
        let ms = Duration::from_millis;
        assert_eq!(negotiate(on, floor, 1000), Some(ms(1000)));
        assert_eq!(negotiate(on, floor, 30_000), Some(ms(30_000)));
        assert_eq!(negotiate(on, floor, 100), Some(floor));
        assert_eq!(negotiate(on, floor, 0), None);
        assert_eq!(negotiate(Duration::ZERO, floor, 1000), None);
        assert_eq!(negotiate(on, Duration::ZERO, 0), None);
        assert_eq!(negotiate(on, Duration::ZERO, 1), Some(ms(1)));
    }
}
