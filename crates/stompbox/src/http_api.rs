//! `POST /api/publish`: lets backends in other languages publish without
//! speaking STOMP. Enabled only when an API token is configured; every
//! request must carry one as `Authorization: Bearer <token>`, and may
//! publish only to the destinations that token is for.

use crate::app::{MessagingError, Payload};
use crate::broker::BrokerError;
use crate::shared::ServerShared;
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
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

pub(crate) async fn publish(
    State(shared): State<Arc<ServerShared>>,
    request: axum::extract::Request,
) -> Response {
    let (parts, body) = request.into_parts();
    let headers: HeaderMap = parts.headers;
    if shared.api_tokens.is_empty() {
        return reply(StatusCode::NOT_FOUND, "the HTTP publish API is not enabled");
    }
    let offered = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(crate::auth::bearer);
    // Every token is compared, so the time taken does not tell which one
    // came close.
    let matching = offered.and_then(|offered| {
        shared.api_tokens.iter().fold(None, |found, t| {
            let equal = same(offered.as_bytes(), t.token.as_bytes());
            found.or(equal.then_some(t))
        })
    });
    let Some(token) = matching else {
        let mut response = reply(
            StatusCode::UNAUTHORIZED,
            "missing or wrong API token (Authorization: Bearer <token>)",
        );
        response
            .headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        return response;
    };
    // A body being read holds memory and a task; past the cap the caller
    // is told to come back rather than queued.
    let Ok(_reading) = shared.api_requests.try_acquire() else {
        let mut response = reply(
            StatusCode::SERVICE_UNAVAILABLE,
            &format!(
                "the server reads at most {} publish requests at once; try again later",
                shared.config.max_concurrent_api_requests
            ),
        );
        response
            .headers_mut()
            .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        return response;
    };
    // The body is read only for a caller with a token, at most a frame's
    // worth, and within the time a client has for its first frame: nobody
    // can make the server hold a slowly trickled body.
    let limit = shared.config.frame_limits.max_frame_bytes;
    let body: Bytes = match tokio::time::timeout(
        shared.config.connect_timeout,
        axum::body::to_bytes(body, limit),
    )
    .await
    {
        Ok(Ok(body)) => body,
        Ok(Err(_)) => {
            return reply(
                StatusCode::PAYLOAD_TOO_LARGE,
                &format!("request larger than the frame limit of {limit} bytes"),
            );
        }
        Err(_) => {
            return reply(
                StatusCode::REQUEST_TIMEOUT,
                "the request body did not arrive in time",
            );
        }
    };
    let request: PublishRequest = match serde_json::from_slice(&body) {
        Ok(request) => request,
        Err(e) => {
            return reply(
                StatusCode::BAD_REQUEST,
                &format!("invalid request body: {e}"),
            );
        }
    };
    if !token.allows(&request.destination) {
        return reply(
            StatusCode::FORBIDDEN,
            &format!(
                "this API token may not publish to '{}'",
                request.destination
            ),
        );
    }
    // The server's own headers cannot be set from outside either.
    if let Some(name) = request
        .headers
        .keys()
        .find(|name| crate::session::is_reserved_header(name.as_bytes()))
    {
        return reply(
            StatusCode::BAD_REQUEST,
            &format!("header '{name}' is reserved for the server"),
        );
    }
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
