//! `POST /api/publish`: lets backends in other languages publish without
//! speaking STOMP. Enabled only when an API token is configured; every
//! request must carry it as `Authorization: Bearer <token>`.

use crate::app::{MessagingError, Payload};
use crate::broker::BrokerError;
use crate::server::ServerShared;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use bytes::Bytes;
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use std::collections::BTreeMap;
use std::sync::Arc;

/// The JSON body of a publish request.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PublishRequest {
    /// A broker destination (`/topic/…`, `/queue/…`) or a user destination
    /// (`/user/{name}/queue/…`).
    destination: String,
    /// The message body, as text.
    #[serde(default)]
    body: String,
    /// Default `text/plain;charset=utf-8`.
    content_type: Option<String>,
    /// Extra MESSAGE headers.
    #[serde(default)]
    headers: BTreeMap<String, String>,
}

fn reply(status: StatusCode, message: &str) -> Response {
    let body = serde_json::json!({ "error": message }).to_string();
    (status, [(header::CONTENT_TYPE, "application/json")], body).into_response()
}

/// Compares without an early exit, so response time does not reveal how
/// much of a guessed token was right.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) async fn publish(
    State(shared): State<Arc<ServerShared>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(token) = &shared.config.api_token else {
        return reply(StatusCode::NOT_FOUND, "the HTTP publish API is not enabled");
    };
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if !offered.is_some_and(|offered| same(offered.as_bytes(), token.as_bytes())) {
        let mut response = reply(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token (Authorization: Bearer <token>)",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    }
    if body.len() > shared.config.frame_limits.max_frame_bytes {
        return reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            &format!(
                "request larger than the frame limit of {} bytes",
                shared.config.frame_limits.max_frame_bytes
            ),
        );
    }
    let request: PublishRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                &format!("invalid request body: {e}"),
            );
        }
    };
    let mut payload = Payload::text(request.body);
    if let Some(content_type) = request.content_type {
        payload.content_type = content_type;
    }
    payload.headers = request.headers.into_iter().collect();
    match shared
        .messaging
        .publish(&request.destination, payload)
        .await
    {
        Ok(()) => (
            StatusCode::ACCEPTED,
            [(header::CONTENT_TYPE, "application/json")],
            r#"{"status":"published"}"#,
        )
            .into_response(),
        Err(MessagingError::InvalidDestination(d)) => reply(
            StatusCode::BAD_REQUEST,
            &format!("'{d}' is not a broker or user destination"),
        ),
        Err(MessagingError::Broker(BrokerError::Unavailable(why))) => reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!("message broker unavailable: {why}"),
        ),
        Err(MessagingError::Broker(e @ BrokerError::QueueFull { .. })) => {
            reply(StatusCode::TOO_MANY_REQUESTS, &e.to_string())
        }
        Err(e) => reply(StatusCode::BAD_REQUEST, &e.to_string()),
    }
}
