//! What is settled before a session starts: the WebSocket `Origin`, and TLS
//! on both listeners with a certificate that can be replaced while
//! sessions stay open.

use crate::identity::raw_http;
use crate::support::*;
use std::path::PathBuf;
use std::sync::Arc;
use stompbox::TlsConfig;
use stompbox::client::{Client, ClientOptions};
use tokio_rustls::rustls;

fn upgrade_request(origin: Option<&str>, host: &str) -> String {
    let origin = origin
        .map(|o| format!("Origin: {o}\r\n"))
        .unwrap_or_default();
    format!(
        "GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\
         Sec-WebSocket-Protocol: v12.stomp\r\n{origin}\r\n"
    )
}

fn http_addr(server: &TestServer) -> String {
    server
        .ws
        .trim_start_matches("ws://")
        .trim_end_matches("/ws")
        .to_owned()
}

async fn status(addr: &str, origin: Option<&str>, host: &str) -> String {
    let response = raw_http(addr, &upgrade_request(origin, host)).await;
    response.lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn a_foreign_origin_gets_403_before_the_upgrade() {
    let server = default_server().await;
    let addr = http_addr(&server);
    let own = format!("http://{addr}");
    for (origin, expected) in [
        (None, "HTTP/1.1 101"),
        (Some(own.as_str()), "HTTP/1.1 101"),
        (Some("https://evil.example"), "HTTP/1.1 403"),
        (Some("null"), "HTTP/1.1 403"),
        (Some("http://127.0.0.1:1"), "HTTP/1.1 403"),
    ] {
        let line = status(&addr, origin, &addr).await;
        assert!(line.starts_with(expected), "Origin {origin:?}: {line}");
    }
    let body = raw_http(&addr, &upgrade_request(Some("https://evil.example"), &addr)).await;
    assert!(body.contains("origin not allowed"), "{body}");
}

#[tokio::test]
async fn listed_origins_and_the_wildcard_are_allowed() {
    let server = spawn_server(|c| {
        c.allowed_origins = vec![
            "https://app.example.com".into(),
            "https://*.example.org".into(),
        ];
    })
    .await;
    let addr = http_addr(&server);
    for (origin, expected) in [
        ("https://app.example.com", "HTTP/1.1 101"),
        ("https://chat.example.org", "HTTP/1.1 101"),
        ("https://example.org", "HTTP/1.1 403"),
        ("http://app.example.com", "HTTP/1.1 403"),
    ] {
        let line = status(&addr, Some(origin), &addr).await;
        assert!(line.starts_with(expected), "Origin {origin}: {line}");
    }
    let open = spawn_server(|c| c.allowed_origins = vec!["*".into()]).await;
    let addr = http_addr(&open);
    assert!(
        status(&addr, Some("https://evil.example"), &addr)
            .await
            .starts_with("HTTP/1.1 101")
    );
}

/// The DER of the certificate a TLS server at `addr` presents.
async fn presented_certificate(addr: &str, ca: &PathBuf) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    for cert in rustls_pki_types::CertificateDer::pem_file_iter(ca).expect("ca") {
        roots.add(cert.expect("cert")).expect("add");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(Arc::new(config));
    let stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    let name = rustls_pki_types::ServerName::try_from("localhost").expect("name");
    let tls = connector
        .connect(name, stream)
        .await
        .expect("TLS handshake");
    tls.get_ref()
        .1
        .peer_certificates()
        .and_then(|chain| chain.first())
        .expect("a certificate")
        .to_vec()
}

#[tokio::test]
async fn wss_and_stomp_over_tls_work_and_the_certificate_reloads_without_dropping_sessions() {
    let (dir, ca, cert, key) = throwaway_pki("reload");
    let dir = &dir.0;
    let server = spawn_server(|c| c.tls = Some(TlsConfig::new(&cert, &key))).await;
    let http = http_addr(&server);
    let tcp = server.tcp.trim_start_matches("tcp://").to_owned();
    let wss = format!(
        "wss://localhost:{}/ws",
        http.rsplit_once(':').expect("port").1
    );
    let tls = format!("tls://localhost:{}", tcp.rsplit_once(':').expect("port").1);
    let options = ClientOptions::stomp().ca_file(&ca);
    let (mut over_wss, _) = Client::connect_with(&wss, &options, &[])
        .await
        .expect("wss");
    let (mut over_tls, _) = Client::connect_with(&tls, &options, &[])
        .await
        .expect("tls");
    let topic = unique("/topic/tls.");
    subscribe(&mut over_wss, "t", &topic, "auto").await;
    send_receipted(&mut over_tls, &topic, "over TLS").await;
    assert_eq!(body(&next_message(&mut over_wss).await), "over TLS");
    // A client that does not trust the CA is refused by its own TLS check.
    assert!(Client::connect(&wss, &[]).await.is_err());
    // Plain WebSocket on the TLS port gets nowhere.
    let plain = format!("ws://{http}/ws");
    assert!(Client::connect(&plain, &[]).await.is_err());

    let before = presented_certificate(&http, &ca).await;
    // A renewed certificate from the same CA replaces the files; reload.
    let (renewed, _, new_cert, new_key) = throwaway_pki("renewed");
    // Same CA is not needed for the check: trust both for the new handshake.
    let both = dir.join("both.pem");
    let renewed_ca = renewed.0.join("ca.pem");
    std::fs::write(
        &both,
        format!(
            "{}{}",
            std::fs::read_to_string(&ca).expect("ca"),
            std::fs::read_to_string(&renewed_ca).expect("renewed ca")
        ),
    )
    .expect("write");
    std::fs::copy(&new_cert, &cert).expect("replace cert");
    std::fs::copy(&new_key, &key).expect("replace key");
    server
        .handle
        .tls_reloader()
        .expect("a TLS server has a reloader")
        .reload()
        .expect("reload");
    let after = presented_certificate(&http, &both).await;
    assert_ne!(before, after, "new handshakes present the new certificate");
    let after_tcp = presented_certificate(&tcp, &both).await;
    assert_eq!(after, after_tcp);
    // The sessions opened before the reload go on.
    send_receipted(&mut over_tls, &topic, "after reload").await;
    assert_eq!(body(&next_message(&mut over_wss).await), "after reload");
    // A broken file is refused and the current certificate stays.
    std::fs::write(&key, "not a key").expect("break key");
    let error = server
        .handle
        .tls_reloader()
        .expect("reloader")
        .reload()
        .expect_err("a broken key is refused");
    assert!(error.contains("key.pem"), "{error}");
    assert_eq!(presented_certificate(&http, &both).await, after);
}

#[tokio::test]
async fn an_http_socket_that_sends_no_request_head_in_time_is_closed() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let server = spawn_server(|c| c.connect_timeout = std::time::Duration::from_millis(300)).await;
    let addr = http_addr(&server);
    // Silent, and dribbling a byte at a time without finishing the head.
    let mut silent = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    let mut dribbling = tokio::net::TcpStream::connect(&addr)
        .await
        .expect("connect");
    dribbling
        .write_all(b"GET / HTTP/1.1\r\n")
        .await
        .expect("write");
    for stream in [&mut silent, &mut dribbling] {
        let mut buf = [0u8; 1024];
        // The server must close: read returns 0 (or an error/408 answer
        // followed by the close) well within the bound.
        loop {
            match tokio::time::timeout(WAIT, stream.read(&mut buf)).await {
                Ok(Ok(0) | Err(_)) => break,
                Ok(Ok(_)) => {}
                Err(_) => panic!("an idle HTTP socket stayed open"),
            }
        }
    }
}

#[tokio::test]
async fn a_request_head_past_the_limit_is_refused_before_it_is_buffered() {
    let server = spawn_server(|c| c.max_request_head_bytes = 8 * 1024).await;
    let addr = http_addr(&server);
    let cookie = "c".repeat(12 * 1024);
    let response = raw_http(
        &addr,
        &format!("GET /ws HTTP/1.1\r\nHost: {addr}\r\nCookie: big={cookie}\r\n\r\n"),
    )
    .await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
}
