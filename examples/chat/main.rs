//! The chat, served: `cargo run --example chat`, then open the printed URL
//! in two browser windows.
//!
//! Listens on 127.0.0.1:8080; set STOMPBOX_SERVER_HTTP (e.g. `0.0.0.0:9000`)
//! to change that: the variable `stompbox serve` reads for the same setting
//! (which warns about STOMPBOX_* variables that name no setting, so the example
//! uses no name of its own). Ctrl-C shuts down gracefully: every browser is
//! told the server is going away (WebSocket close 1001) and reconnects once
//! it is back.

use std::net::SocketAddr;
use std::process::ExitCode;
use stompbox::{Server, ServerConfig};
use stompbox_chat::ChatState;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> ExitCode {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    tracing_subscriber::fmt().with_env_filter(filter).init();

    let mut config = ServerConfig::default();
    if let Ok(addr) = std::env::var("STOMPBOX_SERVER_HTTP") {
        match addr.trim().parse::<SocketAddr>() {
            Ok(addr) => config.http_addr = addr,
            Err(_) => {
                eprintln!(
                    "chat: STOMPBOX_SERVER_HTTP={addr:?} is not an address like 127.0.0.1:8080"
                );
                return ExitCode::FAILURE;
            }
        }
    }

    let chat = ChatState::new();
    let server = match Server::builder(config.clone())
        .app(stompbox_chat::app(&chat))
        .routes(stompbox_chat::routes_for(&config.ws_path))
        .bind()
        .await
    {
        Ok(server) => server,
        Err(e) => {
            eprintln!("chat: cannot listen on {}: {e}", config.http_addr);
            return ExitCode::FAILURE;
        }
    };
    // The hooks publish join and leave notices with the server's messaging
    // handle, which only exists now that the server is built.
    chat.attach(server.messaging());

    match server.http_addr() {
        Ok(addr) => println!(
            "chat at http://{addr}/ (STOMP over WebSocket at ws://{addr}{}); Ctrl-C stops",
            config.ws_path
        ),
        Err(e) => eprintln!("chat: listening, but cannot read the address: {e}"),
    }
    let ctrl_c = async {
        if let Err(e) = tokio::signal::ctrl_c().await {
            tracing::error!(error = %e, "cannot listen for Ctrl-C; stop the process another way");
            std::future::pending::<()>().await;
        }
    };
    match server.run_until(ctrl_c).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("chat: server failed: {e}");
            ExitCode::FAILURE
        }
    }
}
