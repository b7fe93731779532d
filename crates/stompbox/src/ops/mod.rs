//! What operators reach: `GET /metrics`, the health endpoints for load
//! balancers and orchestrators, the periodic stats log line, and the admin
//! page with its JSON API. Wired in by `server.rs`.

pub(crate) mod admin;
pub(crate) mod health;
pub(crate) mod metrics;
pub(crate) mod stats_log;
