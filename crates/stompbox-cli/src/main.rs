//! The `stompbox` command: run a server, poke at one, or load-test one.

mod bench;
mod config;
mod hash_password;
mod tools;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

#[derive(Debug, Parser)]
#[command(
    name = "stompbox",
    version,
    about = "STOMP over WebSocket messaging server"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the server (embedded broker by default).
    Serve(config::ServeArgs),
    /// Send one message to a destination.
    Send(tools::SendArgs),
    /// Subscribe to a destination and print what arrives.
    Subscribe(tools::SubscribeArgs),
    /// Measure a server's throughput, latency and memory.
    Bench(bench::BenchArgs),
    /// Print the argon2id hash of a password, for a user in stompbox.toml.
    HashPassword(hash_password::HashPasswordArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("stompbox: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        match cli.command {
            Command::Serve(args) => config::serve(args).await,
            Command::Send(args) => tools::send(args).await,
            Command::Subscribe(args) => tools::subscribe(args).await,
            Command::Bench(args) => bench::run(args).await,
            // Blocks (a prompt, one argon2 run), which is fine here: this
            // thread runs nothing else meanwhile.
            Command::HashPassword(args) => hash_password::run(args),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("stompbox: {message}");
            ExitCode::FAILURE
        }
    }
}
