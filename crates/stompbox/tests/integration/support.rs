//! The one shared way to start a server and connect clients to it.

use std::time::Duration;
use stompbox::ServerConfig;
use stompbox::auth::{AuthError, Authenticator, ConnectRequest, Identity};
use stompbox::broker::relay::RelayMode;
use stompbox::client::Client;
use stompbox::codec::{Command, Frame};

/// Generous bound for any single wait, so a broken server fails a test
/// instead of hanging it.
pub(crate) const WAIT: Duration = Duration::from_secs(10);

pub(crate) struct TestServer {
    pub(crate) handle: stompbox::ServerHandle,
    pub(crate) ws: String,
    pub(crate) tcp: String,
}

/// Which transport a test runs over; most tests run over both.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Via {
    Ws,
    Tcp,
}

pub(crate) const BOTH: [Via; 2] = [Via::Ws, Via::Tcp];

impl TestServer {
    pub(crate) fn url(&self, via: Via) -> &str {
        match via {
            Via::Ws => &self.ws,
            Via::Tcp => &self.tcp,
        }
    }

    pub(crate) async fn connect(&self, via: Via) -> Client {
        let (client, _) = tokio::time::timeout(WAIT, Client::connect(self.url(via), &[]))
            .await
            .expect("CONNECT timed out")
            .expect("CONNECT failed");
        client
    }

    pub(crate) async fn open(&self, via: Via) -> Client {
        Client::open(self.url(via), &["v12.stomp", "v11.stomp", "v10.stomp"])
            .await
            .expect("open failed")
    }
}

/// Starts a server on ephemeral loopback ports with `configure` applied.
pub(crate) async fn spawn_server(configure: impl FnOnce(&mut ServerConfig)) -> TestServer {
    spawn_app(stompbox::app::App::new(), configure).await
}

/// The authenticator tests log in with: user `name` has the password
/// `name-pw`, and users named `admin-…` have the role `admin`. (An
/// application's own authenticator, as a library user writes one; the
/// built-in methods have tests of their own.)
#[derive(Debug, Clone, Copy)]
pub(crate) struct TestLogins;

impl Authenticator for TestLogins {
    fn authenticate<'a>(
        &'a self,
        request: &'a ConnectRequest,
    ) -> stompbox::broker::BoxFuture<'a, Result<Option<Identity>, AuthError>> {
        let answer = match (request.login(), request.passcode()) {
            (Some(login), Some(passcode)) if passcode == format!("{login}-pw") => {
                let identity = Identity::new(login);
                Ok(Some(if login.starts_with("admin-") {
                    identity.with_roles(["admin"])
                } else {
                    identity
                }))
            }
            (Some(_), _) => Err(AuthError::BadCredentials),
            (None, _) => Ok(None),
        };
        Box::pin(async move { answer })
    }
}

/// The CONNECT headers that log in as `name` with [`TestLogins`].
pub(crate) fn credentials(name: &str) -> [(&str, String); 2] {
    [
        ("login", name.to_owned()),
        ("passcode", format!("{name}-pw")),
    ]
}

/// Connects as `name` through [`TestLogins`].
pub(crate) async fn login(server: &TestServer, via: Via, name: &str) -> Client {
    let creds = credentials(name);
    let headers: Vec<(&str, &str)> = creds.iter().map(|(n, v)| (*n, v.as_str())).collect();
    let (client, _) = tokio::time::timeout(WAIT, Client::connect(server.url(via), &headers))
        .await
        .expect("CONNECT timed out")
        .unwrap_or_else(|e| panic!("{name} cannot connect: {e}"));
    client
}

/// Starts a server running `app` whose users log in through [`TestLogins`];
/// anonymous sessions are allowed too.
pub(crate) async fn spawn_authenticated<S: Clone + Send + Sync + 'static>(
    app: stompbox::app::App<S>,
    configure: impl FnOnce(&mut ServerConfig),
) -> TestServer {
    spawn_with(app, Some(TestLogins), |config| {
        config.auth.allow_anonymous = true;
        configure(config);
    })
    .await
}

/// Starts a server running `app`.
pub(crate) async fn spawn_app<S: Clone + Send + Sync + 'static>(
    app: stompbox::app::App<S>,
    configure: impl FnOnce(&mut ServerConfig),
) -> TestServer {
    spawn_with(app, None::<TestLogins>, configure).await
}

/// Starts a server running `app`, with `authenticator` if given.
pub(crate) async fn spawn_with<S: Clone + Send + Sync + 'static>(
    app: stompbox::app::App<S>,
    authenticator: Option<impl Authenticator>,
    configure: impl FnOnce(&mut ServerConfig),
) -> TestServer {
    let mut config = ServerConfig::default();
    config.http_addr = "127.0.0.1:0".parse().expect("addr");
    config.tcp_addr = Some("127.0.0.1:0".parse().expect("addr"));
    if let Some(relay) = test_broker().relay() {
        config.relay = Some(relay);
    }
    configure(&mut config);
    let mut builder = stompbox::Server::builder(config).app(app);
    if let Some(authenticator) = authenticator {
        builder = builder.authenticator(authenticator);
    }
    let server = builder.bind().await.expect("bind");
    let handle = server.spawn();
    // A relay is usable once its system connection is up.
    let mut available = handle.broker_availability();
    tokio::time::timeout(WAIT, available.wait_for(|up| *up))
        .await
        .expect("the message broker did not become available")
        .expect("availability");
    let http = handle.http_addr().expect("http addr");
    let tcp = handle.tcp_addr().expect("tcp addr");
    TestServer {
        handle,
        ws: format!("ws://{http}/ws"),
        tcp: format!("tcp://{tcp}"),
    }
}

pub(crate) async fn default_server() -> TestServer {
    spawn_server(|_| {}).await
}

/// The next frame within [`WAIT`]; panics on close or timeout.
pub(crate) async fn next(client: &mut Client) -> Frame {
    client
        .next_frame_within(WAIT)
        .await
        .expect("read failed")
        .expect("connection closed")
}

/// The next frame must be an ERROR, and then the connection must close.
pub(crate) async fn expect_error_and_close(client: &mut Client) -> Frame {
    let frame = next(client).await;
    assert_eq!(
        frame.command,
        Command::Error,
        "expected ERROR, got {frame:?}"
    );
    assert!(
        frame.headers.get("message").is_some_and(|m| !m.is_empty()),
        "ERROR without a message: {frame:?}"
    );
    let after = client.next_frame_within(WAIT).await;
    assert!(
        matches!(after, Ok(None) | Err(_)),
        "connection stayed open after ERROR: {after:?}"
    );
    frame
}

/// A STOMP 1.0 client (a CONNECT without `accept-version`) subscribed to
/// `topic` over TCP.
pub(crate) async fn subscribe_1_0(server: &TestServer, topic: &str) -> Client {
    let mut client = server.open(Via::Tcp).await;
    client
        .send(&Frame::new(Command::Connect).header("host", "localhost"))
        .await
        .expect("send");
    assert_eq!(next(&mut client).await.headers.get("version"), Some("1.0"));
    client.set_version(stompbox::codec::Version::V1_0);
    client
        .send_with_receipt(
            Frame::new(Command::Subscribe).header("destination", topic),
            "s",
        )
        .await
        .expect("subscribe");
    client
}

/// What a client that stopped reading finds once it reads again: the
/// MESSAGEs the kernel still held for it, then how its connection ended.
#[derive(Debug)]
pub(crate) struct Drained {
    pub(crate) messages: usize,
    /// The ERROR the server sent before closing, if it got through.
    pub(crate) error: Option<Frame>,
    /// Nothing more arrived for `WAIT` and no ERROR came: still connected.
    pub(crate) open: bool,
}

/// Reads everything left for `client` until its connection ends, or until
/// nothing arrives for `WAIT`.
pub(crate) async fn drain(client: &mut Client) -> Drained {
    let mut messages = 0;
    let mut error = None;
    loop {
        match client.next_frame_within(WAIT).await {
            Ok(Some(frame)) if frame.command == Command::Message => messages += 1,
            Ok(Some(frame)) if frame.command == Command::Error => error = Some(frame),
            Ok(Some(other)) => panic!("unexpected {other:?}"),
            Err(stompbox::client::ClientError::Io(e))
                if e.kind() == std::io::ErrorKind::TimedOut =>
            {
                let open = error.is_none();
                return Drained {
                    messages,
                    error,
                    open,
                };
            }
            Ok(None) | Err(_) => {
                return Drained {
                    messages,
                    error,
                    open: false,
                };
            }
        }
    }
}

pub(crate) async fn subscribe(client: &mut Client, id: &str, destination: &str, ack: &str) {
    let frame = Frame::new(Command::Subscribe)
        .header("id", id)
        .header("destination", destination)
        .header("ack", ack);
    client
        .send_with_receipt(frame, &format!("sub-{id}"))
        .await
        .expect("SUBSCRIBE");
}

/// SUBSCRIBE without waiting for a RECEIPT, for destinations that already
/// hold messages (they may arrive before any RECEIPT would).
pub(crate) async fn subscribe_now(client: &mut Client, id: &str, destination: &str, ack: &str) {
    let frame = Frame::new(Command::Subscribe)
        .header("id", id)
        .header("destination", destination)
        .header("ack", ack);
    client.send(&frame).await.expect("SUBSCRIBE");
}

pub(crate) async fn send_receipted(client: &mut Client, destination: &str, body: &str) {
    let frame = Frame::new(Command::Send)
        .header("destination", destination)
        .body(body.to_owned());
    client
        .send_with_receipt(frame, &format!("send-{body}"))
        .await
        .expect("SEND with receipt");
}

/// The next MESSAGE's body as text.
pub(crate) async fn next_message(client: &mut Client) -> Frame {
    let frame = next(client).await;
    assert_eq!(
        frame.command,
        Command::Message,
        "expected MESSAGE, got {frame:?}"
    );
    frame
}

pub(crate) fn body(frame: &Frame) -> &str {
    std::str::from_utf8(&frame.body).expect("utf-8 body")
}

/// A destination no other test, and no earlier run, uses (an external
/// broker keeps durable queues between runs).
pub(crate) fn unique(prefix: &str) -> String {
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    static RUN: OnceLock<String> = OnceLock::new();
    let run = RUN.get_or_init(|| {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        format!("{:x}", nanos ^ u128::from(std::process::id()))
    });
    format!("{prefix}{run}-{}", N.fetch_add(1, Ordering::Relaxed))
}

/// The broker the suite runs against: `STOMPBOX_TEST_BROKER` is
/// `embedded` (the default), `rabbitmq` or `activemq`; the test command
/// runs the suite once for each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TestBroker {
    Embedded,
    RabbitMq,
    ActiveMq,
}

pub(crate) fn test_broker() -> TestBroker {
    match std::env::var("STOMPBOX_TEST_BROKER").as_deref() {
        Ok("rabbitmq") => TestBroker::RabbitMq,
        Ok("activemq") => TestBroker::ActiveMq,
        Ok("embedded") | Err(_) => TestBroker::Embedded,
        Ok(other) => {
            panic!("unknown STOMPBOX_TEST_BROKER '{other}' (embedded, rabbitmq, activemq)")
        }
    }
}

/// How a relayed run reaches the broker: `STOMPBOX_TEST_RELAY_MODE` is
/// `shared` (the default) or `per-session`; the test command runs the
/// relayed suite once in each. The embedded broker ignores it.
pub(crate) fn test_relay_mode() -> RelayMode {
    match std::env::var("STOMPBOX_TEST_RELAY_MODE").as_deref() {
        Ok("shared") | Err(_) => RelayMode::Shared,
        Ok("per-session") => RelayMode::PerSession,
        Ok(other) => {
            panic!("unknown STOMPBOX_TEST_RELAY_MODE '{other}' (shared, per-session)")
        }
    }
}

impl TestBroker {
    fn relay(self) -> Option<stompbox::broker::relay::RelayConfig> {
        let mut relay = stompbox::broker::relay::RelayConfig::default();
        relay.mode = test_relay_mode();
        match self {
            TestBroker::Embedded => return None,
            TestBroker::RabbitMq => {
                relay.addresses = vec![
                    std::env::var("STOMPBOX_TEST_RABBITMQ")
                        .unwrap_or_else(|_| "127.0.0.1:61613".into()),
                ];
            }
            TestBroker::ActiveMq => {
                relay.addresses = vec![
                    std::env::var("STOMPBOX_TEST_ACTIVEMQ")
                        .unwrap_or_else(|_| "127.0.0.1:61623".into()),
                ];
                relay.system_login = "admin".into();
                relay.system_passcode = "admin".into();
                relay.client_login = Some("admin".into());
                relay.client_passcode = Some("admin".into());
                relay.prefixes = vec!["/topic/".into(), "/queue/".into()];
                relay.user_destination_prefix = "/topic/stompbox-user.".into();
                relay.encode_slashes = false;
            }
        }
        Some(relay)
    }
}

/// True (and says why) when a test exercises a behaviour ActiveMQ does not
/// share (each one is listed in the README's broker differences).
pub(crate) fn not_on_activemq(what: &str) -> bool {
    if test_broker() != TestBroker::ActiveMq {
        return false;
    }
    println!("not run against ActiveMQ: {what}");
    true
}

/// True (and says why) when a test is about publishers paced by the
/// subscribers they feed, which the shared relay does not do: its links
/// never stop reading for one local subscriber, so a subscriber absorbs a
/// burst in its outbox or is cut off (README, "The relay").
pub(crate) fn not_through_shared_relay(what: &str) -> bool {
    if test_broker() == TestBroker::Embedded || test_relay_mode() != RelayMode::Shared {
        return false;
    }
    println!("not run through the shared relay: {what}");
    true
}

/// True (and says why) when a test exercises something only the embedded
/// broker has, such as its own configurable limits.
pub(crate) fn embedded_only(what: &str) -> bool {
    let broker = test_broker();
    if broker == TestBroker::Embedded {
        return false;
    }
    println!("not run against {broker:?}: {what} is a setting of the embedded broker");
    true
}

/// A directory removed when the test ends, however it ends.
pub(crate) struct TempDir(pub(crate) std::path::PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A throw-away CA and a `localhost` certificate it signed, written to a
/// fresh directory; returns (the directory, CA PEM, certificate, key).
/// The CA and the leaf have subjects of their own: OpenSSL-based clients
/// take a leaf whose subject equals its issuer's for self-signed.
pub(crate) fn throwaway_pki(
    tag: &str,
) -> (
    TempDir,
    std::path::PathBuf,
    std::path::PathBuf,
    std::path::PathBuf,
) {
    fn named(common_name: &str, sans: Vec<String>) -> rcgen::CertificateParams {
        let mut params = rcgen::CertificateParams::new(sans).expect("params");
        params.distinguished_name = rcgen::DistinguishedName::new();
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, common_name);
        params
    }
    let dir = TempDir(std::env::temp_dir().join(unique(&format!("stompbox-tls-{tag}-"))));
    std::fs::create_dir_all(&dir.0).expect("temp dir");
    let mut ca_params = named(&format!("stompbox test CA {tag}"), Vec::new());
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let ca =
        rcgen::CertifiedIssuer::self_signed(ca_params, rcgen::KeyPair::generate().expect("key"))
            .expect("ca");
    let key = rcgen::KeyPair::generate().expect("key");
    let cert = named("localhost", vec!["localhost".into(), "127.0.0.1".into()])
        .signed_by(&key, &ca)
        .expect("leaf");
    let paths = (
        dir.0.join("ca.pem"),
        dir.0.join("cert.pem"),
        dir.0.join("key.pem"),
    );
    std::fs::write(&paths.0, ca.pem()).expect("write ca");
    std::fs::write(&paths.1, cert.pem()).expect("write cert");
    std::fs::write(&paths.2, key.serialize_pem()).expect("write key");
    (dir, paths.0, paths.1, paths.2)
}

/// An HTTP/1.1 answer: status, head (lower-cased, for header checks) and body.
#[derive(Debug)]
pub(crate) struct HttpAnswer {
    pub(crate) status: u16,
    pub(crate) head: String,
    pub(crate) body: String,
}

impl HttpAnswer {
    pub(crate) fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("not JSON ({e}): {self:?}"))
    }

    /// A header's value; `name` in lower case.
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.head.lines().find_map(|line| {
            let (n, v) = line.split_once(':')?;
            (n.trim() == name).then(|| v.trim())
        })
    }
}

/// The bytes of one HTTP/1.1 request: `headers` in order after `Host`, a
/// body with its `Content-Length`, and `Connection: close`.
pub(crate) fn http_request_text(
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> String {
    let mut request = format!("{method} {path} HTTP/1.1\r\nHost: localhost\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if let Some(body) = body {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("Connection: close\r\n\r\n");
    request.push_str(body.unwrap_or_default());
    request
}

/// One raw HTTP/1.1 request on a connection of its own, read until the
/// server closes it; see [`http_request_text`].
pub(crate) async fn http_request(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
) -> HttpAnswer {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let request = http_request_text(method, path, headers, body);
    let mut stream = tokio::net::TcpStream::connect(addr).await.expect("connect");
    stream.write_all(request.as_bytes()).await.expect("write");
    let mut response = String::new();
    tokio::time::timeout(WAIT, stream.read_to_string(&mut response))
        .await
        .expect("response timed out")
        .expect("read");
    let (head, body) = response
        .split_once("\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {response:?}"));
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {head:?}"));
    HttpAnswer {
        status,
        head: head.to_ascii_lowercase(),
        body: body.to_owned(),
    }
}
