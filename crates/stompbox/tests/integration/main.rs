//! Integration tests over real sockets, WebSocket and TCP.

mod support;

mod access;
mod app;
mod bad_input;
mod builtin_methods;
mod connect;
mod flow_control;
mod handshake;
mod heartbeat;
mod http_api;
mod identity;
mod pubsub;
mod queue;
mod shutdown;
mod slow_consumer;
mod third_party;
mod transactions;
mod user_destinations;
