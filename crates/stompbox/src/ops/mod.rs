//! What operators reach over HTTP: the Prometheus endpoint.

pub(crate) mod metrics;
