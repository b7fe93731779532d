//! `GET /health/live` and `GET /health/ready`.
//!
//! They follow the Kubernetes split. Liveness answers 200 for as long as the
//! process serves HTTP at all, through a graceful shutdown too, so nothing
//! restarts a node that is draining or waiting for its broker (a restart
//! would not bring the broker back). Readiness answers 200 only while the
//! server is running, not shutting down, and its message broker is
//! available, so a load balancer stops sending new clients to a node that
//! is starting, draining, or cut off from the broker, while its sessions go
//! on (or finish their drain).
//!
//! During a graceful shutdown the HTTP listener keeps accepting until the
//! sessions have drained, but then serves only these two endpoints, one
//! request per connection (see `listener::serve_http`): a probe gets a
//! clear 503 "shutting down" from readiness rather than a refused
//! connection, and liveness stays 200 until the process exits.

use crate::shared::ServerShared;
use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use http::{HeaderValue, StatusCode, header};
use std::sync::Arc;

pub(crate) const LIVE_PATH: &str = "/health/live";
pub(crate) const READY_PATH: &str = "/health/ready";

/// Why the server is not ready, for the body of the 503.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum NotReady {
    ShuttingDown,
    BrokerUnavailable,
}

impl NotReady {
    fn reason(self) -> &'static str {
        match self {
            NotReady::ShuttingDown => "shutting down",
            NotReady::BrokerUnavailable => "message broker unavailable",
        }
    }
}

/// Whether the server should be given new clients.
pub(crate) fn readiness(shared: &ServerShared) -> Result<(), NotReady> {
    // Shutting down first: a draining node stays out of rotation even if
    // its broker is fine.
    if *shared.shutdown.borrow() {
        return Err(NotReady::ShuttingDown);
    }
    if !*shared.broker.availability().borrow() {
        return Err(NotReady::BrokerUnavailable);
    }
    Ok(())
}

/// A small JSON answer that no cache in between may keep: a probe must see
/// the state of now.
fn answer(status: StatusCode, body: &serde_json::Value) -> Response {
    let mut response = (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        body.to_string(),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn live() -> Response {
    answer(StatusCode::OK, &serde_json::json!({ "status": "live" }))
}

async fn ready(State(shared): State<Arc<ServerShared>>) -> Response {
    match readiness(&shared) {
        Ok(()) => answer(
            StatusCode::OK,
            &serde_json::json!({ "status": "ready", "broker": "available" }),
        ),
        Err(why) => answer(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "status": "not_ready", "reason": why.reason() }),
        ),
    }
}

/// The two endpoints, for the main listener (while it runs and while it
/// drains) and the operators' own.
pub(crate) fn routes() -> Router<Arc<ServerShared>> {
    Router::new()
        .route(LIVE_PATH, get(live))
        .route(READY_PATH, get(ready))
}

/// What the main HTTP listener serves while the server drains: the
/// operators' endpoints (`operators`), and 503 for everything else (no new
/// WebSocket sessions, API requests or pages on a node that is leaving).
pub(crate) fn draining(operators: Router) -> Router {
    operators.fallback(|| async {
        answer(
            StatusCode::SERVICE_UNAVAILABLE,
            &serde_json::json!({ "error": "server shutting down" }),
        )
    })
}
