//! stompbox: a STOMP-over-WebSocket messaging server, usable as a library.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! let server = stompbox::Server::bind(stompbox::ServerConfig::default()).await?;
//! println!("STOMP over WebSocket at ws://{}/ws", server.http_addr()?);
//! server.run_until(async { let _ = tokio::signal::ctrl_c().await; }).await
//! # }
//! ```

mod admission;
mod api_tokens;
pub mod app;
pub mod auth;
pub mod broker;
mod budget;
pub mod client;
mod config;
mod connection;
mod frames;
mod http_api;
mod listener;
mod open_files;
mod ops;
mod origin;
mod outbox;
mod router;
mod scratch;
mod server;
mod session;
mod shared;
mod small_map;
mod telemetry;
mod tls;
mod transport;
mod upgrade;
mod websocket;

pub use admission::IpNetwork;
pub use config::{AdminConfig, ApiToken, MetricsConfig, ServerConfig, TlsConfig};
pub use open_files::{OpenFileLimit, raise_open_file_limit};
pub use outbox::{Backlog, OutFrame, Outbox, PushError, Taken};
pub use server::{Server, ServerBuilder, ServerHandle};
pub use session::{SENDER_HEADER, SERVER_NAME};
pub use shared::Stats;
pub use stompbox_codec as codec;
pub use tls::TlsReloader;

/// The HTTP router type accepted by [`ServerBuilder::routes`].
pub use axum::Router as HttpRouter;
