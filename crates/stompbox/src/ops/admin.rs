//! The admin page (`GET /admin`) and its JSON API (`/admin/api/…`): what a
//! running server holds (sessions, destinations, the relay's links) and
//! two actions, disconnecting a session and purging a queue. Both exist
//! only when an admin token or role is configured (`ServerConfig::admin`).
//!
//! | request | answer |
//! |---|---|
//! | `GET /admin` | the page (`/admin/admin.js`, `/admin/admin.css` beside it) |
//! | `GET /admin/api/overview` | the server's figures, the broker's, the relay's links |
//! | `GET /admin/api/sessions?limit=N` | open connections, fullest outbox first (default 200, at most 2,000) |
//! | `GET /admin/api/destinations?limit=N` | destinations, busiest first (default 200, at most 2,000) |
//! | `GET /admin/api/events?sessions=N&destinations=N` | server-sent events: a snapshot of all three, with rates, each second |
//! | `POST /admin/api/sessions/{id}/disconnect` | ends that session with an ERROR |
//! | `POST /admin/api/queues/purge` `{"destination":"/queue/x"}` | removes the messages waiting in the queue |
//!
//! Every request carries its credential in `Authorization` (see
//! [`auth`]); nothing is kept in a cookie, so no CSRF token is needed, and
//! no CORS header is ever sent, so other origins' pages cannot read the
//! answers. Every answer is `Cache-Control: no-store`; errors are JSON
//! `{"error": "…"}`.

mod auth;
mod snapshot;

use crate::broker::BrokerError;
use crate::config::ServerConfig;
use crate::listener::EndlessAnswer;
use crate::shared::ServerShared;
use auth::{Operator, Refusal};
use axum::Router;
use axum::body::Body;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use bytes::Bytes;
use http::{HeaderValue, StatusCode, header};
use serde::{Deserialize, Serialize};
use snapshot::Snapshots;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

const PAGE: &str = include_str!("admin.html");
const SCRIPT: &str = include_str!("admin.js");
const STYLE: &str = include_str!("admin.css");

/// The page runs only its own script and style, talks only to its own
/// origin, and cannot be framed.
const PAGE_POLICY: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; \
     frame-ancestors 'none'";

/// The largest purge request body: a destination name and some room.
const MAX_ACTION_BODY: usize = 4 * 1024;

/// How often an event stream sends a snapshot.
const EVENT_INTERVAL: Duration = Duration::from_secs(1);

/// What the admin routes share.
struct Admin {
    shared: Arc<ServerShared>,
    /// Places for event streams (`admin.max_event_streams`).
    streams: Arc<Semaphore>,
}

/// Refuses settings the admin page cannot run with.
///
/// # Errors
///
/// An empty token, an empty role, a role without any authenticator to
/// verify users, or no room for an event stream.
pub(crate) fn check_config(config: &ServerConfig, authenticator: bool) -> Result<(), String> {
    let admin = &config.admin;
    if admin.token.as_deref() == Some("") {
        return Err("admin.token is empty: set a long random secret, or None for off".into());
    }
    if let Some(role) = &admin.role {
        if role.is_empty() {
            return Err("admin.role is empty: name a role, or None for off".into());
        }
        if !authenticator {
            return Err(format!(
                "admin.role '{role}' needs authentication: no authenticator would verify users"
            ));
        }
    }
    if admin.enabled() && admin.max_event_streams == 0 {
        return Err("admin.max_event_streams must be at least 1".into());
    }
    Ok(())
}

/// The admin routes, when admin access is configured.
pub(crate) fn routes<S: Clone + Send + Sync + 'static>(
    shared: &Arc<ServerShared>,
) -> Option<Router<S>> {
    let config = &shared.config.admin;
    if !config.enabled() {
        return None;
    }
    let admin = Arc::new(Admin {
        shared: Arc::clone(shared),
        streams: Arc::new(Semaphore::new(config.max_event_streams)),
    });
    Some(
        Router::new()
            .route("/admin", get(page))
            .route("/admin/admin.js", get(script))
            .route("/admin/admin.css", get(style))
            .route("/admin/api/overview", get(overview))
            .route("/admin/api/sessions", get(sessions))
            .route("/admin/api/destinations", get(destinations))
            .route("/admin/api/events", get(events))
            .route("/admin/api/sessions/{id}/disconnect", post(disconnect))
            .route("/admin/api/queues/purge", post(purge))
            .layer(axum::middleware::map_response(no_store))
            .with_state(admin),
    )
}

/// Operators' views are live figures and must never come from a cache.
async fn no_store(mut response: Response) -> Response {
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    response
}

fn json(status: StatusCode, value: &impl Serialize) -> Response {
    match serde_json::to_string(value) {
        Ok(body) => (status, [(header::CONTENT_TYPE, "application/json")], body).into_response(),
        Err(e) => error(
            StatusCode::INTERNAL_SERVER_ERROR,
            &format!("cannot write the answer: {e}"),
        ),
    }
}

fn error(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

impl Refusal {
    fn into_response(self) -> Response {
        match self {
            Refusal::Unauthorized(message) => {
                let mut response = error(StatusCode::UNAUTHORIZED, message);
                // Bearer only: a `Basic` challenge would make a browser put
                // up its own login dialog over the page's form.
                response.headers_mut().insert(
                    header::WWW_AUTHENTICATE,
                    HeaderValue::from_static("Bearer realm=\"stompbox admin\""),
                );
                response
            }
            Refusal::Forbidden(message) => error(StatusCode::FORBIDDEN, &message),
            Refusal::TooManyFailures => {
                let mut response = error(
                    StatusCode::TOO_MANY_REQUESTS,
                    "too many failed logins from your address; try again in a minute",
                );
                response
                    .headers_mut()
                    .insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
                response
            }
            Refusal::Unavailable(why) => error(
                StatusCode::SERVICE_UNAVAILABLE,
                &format!("the authentication service is unavailable: {why}"),
            ),
        }
    }
}

/// The operator making `request`, or the answer refusing it.
async fn operator(admin: &Admin, request: &http::request::Parts) -> Result<Operator, Response> {
    // Put there by the accept loop; a request that did not come through it
    // has no address to count failures by but the unspecified one.
    let peer = request
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)), |c| c.0);
    auth::authorize(&admin.shared, &request.headers, peer)
        .await
        .map_err(Refusal::into_response)
}

/// The value of query parameter `name` as a count within `max`; `default`
/// when absent; the answer refusing the request when not a number.
fn limit(
    request: &http::request::Parts,
    name: &str,
    default: usize,
    max: usize,
) -> Result<usize, Box<Response>> {
    let query = request.uri.query().unwrap_or_default();
    let Some(value) = query
        .split('&')
        .find_map(|pair| pair.strip_prefix(name)?.strip_prefix('='))
    else {
        return Ok(default);
    };
    value.parse::<usize>().map(|n| n.min(max)).map_err(|_| {
        Box::new(error(
            StatusCode::BAD_REQUEST,
            &format!("{name} must be a number from 0 to {max}"),
        ))
    })
}

async fn page(State(admin): State<Arc<Admin>>) -> Response {
    // The form asks for a login and password only where they can work.
    let page = if admin.shared.config.admin.role.is_some() {
        PAGE.replace(
            "data-password-login=\"false\"",
            "data-password-login=\"true\"",
        )
    } else {
        PAGE.to_owned()
    };
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, PAGE_POLICY),
            (header::X_FRAME_OPTIONS, "DENY"),
        ],
        page,
    )
        .into_response()
}

async fn script() -> Response {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
        .into_response()
}

async fn style() -> Response {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE).into_response()
}

async fn overview(State(admin): State<Arc<Admin>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    if let Err(refused) = operator(&admin, &parts).await {
        return refused;
    }
    let stats = admin.shared.stats();
    json(StatusCode::OK, &snapshot::overview(&admin.shared, &stats))
}

async fn sessions(State(admin): State<Arc<Admin>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    if let Err(refused) = operator(&admin, &parts).await {
        return refused;
    }
    match limit(
        &parts,
        "limit",
        snapshot::DEFAULT_SESSIONS,
        snapshot::MAX_SESSIONS,
    ) {
        Ok(limit) => json(StatusCode::OK, &snapshot::sessions(&admin.shared, limit)),
        Err(bad) => *bad,
    }
}

async fn destinations(State(admin): State<Arc<Admin>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    if let Err(refused) = operator(&admin, &parts).await {
        return refused;
    }
    match limit(
        &parts,
        "limit",
        snapshot::DEFAULT_DESTINATIONS,
        snapshot::MAX_DESTINATIONS,
    ) {
        Ok(limit) => json(
            StatusCode::OK,
            &snapshot::destinations(&admin.shared, limit),
        ),
        Err(bad) => *bad,
    }
}

async fn disconnect(
    State(admin): State<Arc<Admin>>,
    Path(id): Path<String>,
    request: Request,
) -> Response {
    let (parts, _) = request.into_parts();
    let operator = match operator(&admin, &parts).await {
        Ok(operator) => operator,
        Err(refused) => return refused,
    };
    let (status, result) = match admin.shared.telemetry.sessions.find(&id) {
        None => (StatusCode::NOT_FOUND, "no such session"),
        Some(entry) if entry.kick(&operator.name) => (StatusCode::OK, "disconnected"),
        Some(_) => (StatusCode::CONFLICT, "already closing"),
    };
    tracing::info!(
        operator = %operator.name,
        address = %operator.address,
        session = %id,
        result,
        "admin: disconnect session"
    );
    if status == StatusCode::OK {
        json(status, &serde_json::json!({ "disconnected": id }))
    } else {
        error(status, &format!("session '{id}': {result}"))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PurgeRequest {
    destination: String,
}

async fn purge(State(admin): State<Arc<Admin>>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let operator = match operator(&admin, &parts).await {
        Ok(operator) => operator,
        Err(refused) => return refused,
    };
    // Read only for an operator, bounded in size and in time.
    let body = match tokio::time::timeout(
        admin.shared.config.connect_timeout,
        axum::body::to_bytes(body, MAX_ACTION_BODY),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request larger than {MAX_ACTION_BODY} bytes"),
            );
        }
        Err(_) => {
            return error(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            );
        }
    };
    let request: PurgeRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return error(
                StatusCode::BAD_REQUEST,
                &format!("expected {{\"destination\": \"/queue/…\"}}: {e}"),
            );
        }
    };
    let destination = request.destination;
    let outcome = admin.shared.broker.purge(&destination).await;
    let result = match &outcome {
        Ok(n) => format!("{n} messages removed"),
        Err(e) => e.to_string(),
    };
    tracing::info!(
        operator = %operator.name,
        address = %operator.address,
        %destination,
        result,
        "admin: purge queue"
    );
    match outcome {
        Ok(purged) => json(
            StatusCode::OK,
            &serde_json::json!({ "destination": destination, "purged": purged }),
        ),
        Err(e) => {
            let status = match e {
                BrokerError::InvalidDestination(_) => StatusCode::BAD_REQUEST,
                BrokerError::UnknownDestination(_) => StatusCode::NOT_FOUND,
                BrokerError::NotAllowed(_) => StatusCode::CONFLICT,
                BrokerError::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
                _ => StatusCode::BAD_GATEWAY,
            };
            error(status, &e.to_string())
        }
    }
}

/// One event stream's state between snapshots.
struct EventStream {
    admin: Arc<Admin>,
    /// Its place among `admin.max_event_streams`, given back when the
    /// client goes (hyper drops the body) or the stream ends.
    _place: OwnedSemaphorePermit,
    shutdown: watch::Receiver<bool>,
    /// When the operator's credential expires.
    expires: Option<tokio::time::Instant>,
    ticks: tokio::time::Interval,
    snapshots: Snapshots,
    sessions: usize,
    destinations: usize,
}

impl EventStream {
    /// The next event, or `None` to end the stream: at shutdown, so an
    /// open admin page never holds the drain, or when the credential
    /// expires.
    async fn next(mut self) -> Option<(Result<Bytes, std::convert::Infallible>, EventStream)> {
        let expires = self.expires;
        tokio::select! {
            _ = self.shutdown.wait_for(|stopping| *stopping) => return None,
            () = async {
                match expires {
                    Some(at) => tokio::time::sleep_until(at).await,
                    None => std::future::pending().await,
                }
            } => return None,
            _ = self.ticks.tick() => {}
        }
        let stats = self.admin.shared.stats();
        let snapshot =
            self.snapshots
                .next(&self.admin.shared, stats, self.sessions, self.destinations);
        let event = match serde_json::to_string(&snapshot) {
            Ok(data) => format!("event: snapshot\ndata: {data}\n\n"),
            Err(e) => format!(
                "event: failure\ndata: {}\n\n",
                serde_json::json!({ "error": e.to_string() })
            ),
        };
        Some((Ok(Bytes::from(event)), self))
    }
}

async fn events(State(admin): State<Arc<Admin>>, request: Request) -> Response {
    let (parts, _) = request.into_parts();
    let operator = match operator(&admin, &parts).await {
        Ok(operator) => operator,
        Err(refused) => return refused,
    };
    let sessions = match limit(
        &parts,
        "sessions",
        snapshot::DEFAULT_SESSIONS,
        snapshot::MAX_SESSIONS,
    ) {
        Ok(n) => n,
        Err(bad) => return *bad,
    };
    let destinations = match limit(
        &parts,
        "destinations",
        snapshot::DEFAULT_DESTINATIONS,
        snapshot::MAX_DESTINATIONS,
    ) {
        Ok(n) => n,
        Err(bad) => return *bad,
    };
    let Ok(place) = Arc::clone(&admin.streams).try_acquire_owned() else {
        tracing::info!(operator = %operator.name, address = %operator.address, "admin: event stream refused: all places taken");
        let mut response = error(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "at most {} admin event streams at once (admin.max_event_streams); close another admin page",
                admin.shared.config.admin.max_event_streams
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        return response;
    };
    tracing::debug!(operator = %operator.name, address = %operator.address, "admin: event stream opened");
    if let Some(endless) = parts.extensions.get::<EndlessAnswer>() {
        endless.mark();
    }
    let expires = operator.expires_at.map(|at| {
        tokio::time::Instant::now() + at.duration_since(SystemTime::now()).unwrap_or_default()
    });
    let mut ticks = tokio::time::interval(EVENT_INTERVAL);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let stream = EventStream {
        shutdown: admin.shared.shutdown.subscribe(),
        admin,
        _place: place,
        expires,
        ticks,
        snapshots: Snapshots::default(),
        sessions,
        destinations,
    };
    let body = Body::from_stream(futures_util::stream::unfold(stream, EventStream::next));
    (
        [
            (header::CONTENT_TYPE, "text/event-stream"),
            // Proxies that buffer answers (nginx) would hold the snapshots.
            (http::HeaderName::from_static("x-accel-buffering"), "no"),
        ],
        body,
    )
        .into_response()
}
