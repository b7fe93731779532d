//! What operators reach: `GET /metrics`, the health endpoints for load
//! balancers and orchestrators, and the periodic stats log line. Wired in
//! by `server.rs`.

pub(crate) mod health;
pub(crate) mod metrics;
pub(crate) mod stats_log;
