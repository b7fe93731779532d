//! The relay over TLS: a TLS-terminating proxy with a throw-away CA stands
//! in front of RabbitMQ's plain STOMP port, and the relay must trust that CA
//! (and refuse a broker it cannot verify).

use std::sync::Arc;
use std::time::Duration;
use stompbox::broker::relay::{RelayConfig, RelayTls};
use stompbox::client::Client;
use stompbox::codec::{Command, Frame};
use stompbox::{Server, ServerConfig};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::rustls;

const WAIT: Duration = Duration::from_secs(20);

fn rabbitmq_up() -> bool {
    if std::net::TcpStream::connect("127.0.0.1:61613").is_ok() {
        return true;
    }
    let reason = "RabbitMQ's STOMP plugin is not answering on 127.0.0.1:61613";
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
    eprintln!("skipping: {reason}");
    false
}

/// A CA, and a certificate for `localhost` it signed; returns the CA's PEM
/// and a TLS acceptor presenting the certificate.
fn pki() -> (String, tokio_rustls::TlsAcceptor) {
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca =
        rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().expect("key"))
            .expect("ca");
    let leaf_key = rcgen::KeyPair::generate().expect("key");
    let leaf = rcgen::CertificateParams::new(vec!["localhost".to_owned()])
        .expect("params")
        .signed_by(&leaf_key, &ca)
        .expect("leaf");
    let key = rustls_pki_types::PrivateKeyDer::try_from(leaf_key.serialize_der()).expect("key der");
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("versions")
        .with_no_client_auth()
        .with_single_cert(vec![leaf.der().clone()], key)
        .expect("server config");
    (ca.pem(), tokio_rustls::TlsAcceptor::from(Arc::new(config)))
}

/// Accepts TLS on a loopback port and pipes each connection to RabbitMQ.
async fn tls_proxy(acceptor: tokio_rustls::TlsAcceptor) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr = listener.local_addr().expect("addr");
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(stream).await else {
                    return;
                };
                let Ok(mut upstream) = TcpStream::connect("127.0.0.1:61613").await else {
                    return;
                };
                let _ = tokio::io::copy_bidirectional(&mut tls, &mut upstream).await;
            });
        }
    });
    addr.to_string()
}

async fn server_with(tls: RelayTls, address: String) -> stompbox::ServerHandle {
    let mut config = ServerConfig::default();
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    let mut relay = RelayConfig::default();
    relay.addresses = vec![address];
    relay.tls = Some(tls);
    relay.reconnect_initial = Duration::from_millis(100);
    relay.reconnect_max = Duration::from_millis(500);
    config.relay = Some(relay);
    Server::bind(config).await.expect("bind").spawn()
}

#[tokio::test]
async fn the_relay_speaks_tls_to_the_broker_and_verifies_it() {
    if !rabbitmq_up() {
        return;
    }
    let (ca_pem, acceptor) = pki();
    let dir = std::env::temp_dir().join(format!("stompbox-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("dir");
    let ca_file = dir.join("ca.pem");
    std::fs::write(&ca_file, ca_pem).expect("write ca");
    let proxy = tls_proxy(acceptor).await;

    let mut tls = RelayTls::default();
    tls.server_name = Some("localhost".into());
    tls.ca_file = Some(ca_file);
    let server = server_with(tls, proxy.clone()).await;
    let mut available = server.broker_availability();
    tokio::time::timeout(WAIT, available.wait_for(|up| *up))
        .await
        .expect("system connection over TLS never came up")
        .expect("availability");
    let url = format!("ws://{}/ws", server.http_addr().expect("addr"));
    let (mut client, _) = Client::connect(&url, &[])
        .await
        .expect("connect over the TLS relay");
    let topic = format!("/topic/tls.{}", std::process::id());
    client
        .send_with_receipt(
            Frame::new(Command::Subscribe)
                .header("id", "s")
                .header("destination", &topic),
            "sub",
        )
        .await
        .expect("subscribe");
    client
        .send(
            &Frame::new(Command::Send)
                .header("destination", &topic)
                .body("over tls"),
        )
        .await
        .expect("send");
    let message = client
        .next_frame_within(WAIT)
        .await
        .expect("read")
        .expect("open");
    assert_eq!(&message.body[..], b"over tls");
    server.shutdown().await.expect("shutdown");

    // Trusting only the default roots, the same broker is refused.
    let mut untrusted = RelayTls::default();
    untrusted.server_name = Some("localhost".into());
    let server = server_with(untrusted, proxy).await;
    let url = format!("ws://{}/ws", server.http_addr().expect("addr"));
    assert!(!*server.broker_availability().borrow());
    match Client::connect(&url, &[]).await {
        Err(stompbox::client::ClientError::Server(message)) => {
            assert!(message.contains("unavailable"), "{message}")
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
    server.shutdown().await.expect("shutdown");
}
