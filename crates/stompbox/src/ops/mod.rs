//! What an operator runs a server with: health endpoints for load
//! balancers and orchestrators, and the periodic stats log line. At the top
//! of the layering with `http_api.rs`: it reads `ServerShared` and is wired
//! in by `server.rs`.

pub(crate) mod health;
pub(crate) mod stats_log;
