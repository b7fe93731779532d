//! `stompbox send` and `stompbox subscribe`.

/// Flags of `stompbox send`.
#[derive(Debug, clap::Args)]
pub(crate) struct SendArgs {}

/// Flags of `stompbox subscribe`.
#[derive(Debug, clap::Args)]
pub(crate) struct SubscribeArgs {}

pub(crate) async fn send(_args: SendArgs) -> Result<(), String> {
    Err("not yet".into())
}

pub(crate) async fn subscribe(_args: SubscribeArgs) -> Result<(), String> {
    Err("not yet".into())
}
