//! `stompbox bench`: the load tool.

/// Flags of `stompbox bench`.
#[derive(Debug, clap::Args)]
pub(crate) struct BenchArgs {}

pub(crate) async fn run(_args: BenchArgs) -> Result<(), String> {
    Err("not yet".into())
}
