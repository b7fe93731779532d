//! A server that cannot bind says which listener, which address and which
//! setting moves it, and keeps the OS error's kind for programs.

use std::io::ErrorKind;
use stompbox::{Server, ServerConfig};

fn loopback_any_port() -> ServerConfig {
    let mut config = ServerConfig::default();
    config.http_addr = ([127, 0, 0, 1], 0).into();
    config.tcp_addr = Some(([127, 0, 0, 1], 0).into());
    config
}

#[tokio::test]
async fn a_taken_address_names_the_listener_and_its_setting() {
    let first = Server::bind(loopback_any_port()).await.expect("bind");
    let http = first.http_addr().expect("HTTP address");
    let tcp = first.tcp_addr().expect("TCP address");

    let mut config = loopback_any_port();
    config.http_addr = http;
    let error = Server::bind(config).await.expect_err("HTTP port taken");
    assert_eq!(error.kind(), ErrorKind::AddrInUse);
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("HTTP listener {http}: address already in use"))
            && message.contains("`http_addr`"),
        "{message}"
    );

    let mut config = loopback_any_port();
    config.tcp_addr = Some(tcp);
    let error = Server::bind(config).await.expect_err("TCP port taken");
    assert_eq!(error.kind(), ErrorKind::AddrInUse);
    let message = error.to_string();
    assert!(
        message.starts_with(&format!("TCP listener {tcp}: address already in use"))
            && message.contains("`tcp_addr`"),
        "{message}"
    );
}
