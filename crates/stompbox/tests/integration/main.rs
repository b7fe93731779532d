//! Integration tests over real sockets, WebSocket and TCP.

mod support;

mod access;
mod admin;
mod app;
mod bad_input;
mod broker_options;
mod broker_stats;
mod builtin_methods;
mod connect;
mod flow_control;
mod handshake;
mod header_safety;
mod health;
mod heartbeat;
mod http_api;
mod http_limits;
mod identity;
mod memory;
mod metrics;
mod pubsub;
mod queue;
mod raw_ws;
mod shutdown;
mod slow_consumer;
mod third_party;
mod transactions;
mod user_destinations;
mod wildcard_limits;
mod ws_conformance;
mod ws_protocol;
