//! What operators reach over HTTP: the Prometheus endpoint, and the admin
//! page with its JSON API. At the top of the layering with `http_api.rs`:
//! it reads `ServerShared` and is wired in by `server.rs`.

pub(crate) mod admin;
pub(crate) mod metrics;
