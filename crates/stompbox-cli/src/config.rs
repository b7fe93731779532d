//! `stompbox serve`: configuration from a TOML file, STOMPBOX_* environment
//! variables and flags, then the server.

/// Flags of `stompbox serve`.
#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// TOML configuration file.
    #[arg(long)]
    config: Option<std::path::PathBuf>,
}

pub(crate) async fn serve(_args: ServeArgs) -> Result<(), String> {
    Err("not yet".into())
}
