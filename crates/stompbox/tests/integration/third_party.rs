//! Real third-party clients against the server: @stomp/stompjs in Node over
//! WebSocket, stomp.py over TCP, each also against a secured server (TLS,
//! logins, JWTs, access rules, the Origin check). `scripts/install-test-deps.sh`
//! installs them; the test command runs it first.

use crate::support::*;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::{Duration, SystemTime};
use stompbox::auth::access::{AccessRules, Rule, Who};
use stompbox::auth::{AuthChain, JwtAuthenticator, JwtConfig, JwtKey};

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Under CI a missing client is a failure; on a developer's machine the
/// test says why it did not run.
fn available(what: &str, path: &std::path::Path) -> bool {
    if path.exists() {
        return true;
    }
    let reason = format!(
        "{what} not installed at {}: run scripts/install-test-deps.sh",
        path.display()
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
    eprintln!("skipping: {reason}");
    false
}

/// Runs a client script to its end, within a bound; it must exit 0.
/// Returns what it printed.
async fn run_to_end(mut command: tokio::process::Command) -> String {
    command
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let child = command.spawn().expect("spawn client script");
    let output = tokio::time::timeout(Duration::from_secs(90), child.wait_with_output())
        .await
        .expect("client script timed out")
        .expect("client script failed to run");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    assert!(
        output.status.success(),
        "client script failed:\n{stdout}\n{stderr}"
    );
    stdout.into_owned()
}

async fn run_script(command: tokio::process::Command) {
    let stdout = run_to_end(command).await;
    assert!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count() >= 4,
        "{stdout}"
    );
}

/// Runs a client script; each of `scenarios` must have printed `ok`, and
/// none `FAIL`.
async fn run_scenarios(command: tokio::process::Command, scenarios: &[&str]) {
    let stdout = run_to_end(command).await;
    for scenario in scenarios {
        assert!(
            stdout.lines().any(|l| l == format!("ok {scenario}")),
            "scenario {scenario} did not pass:\n{stdout}"
        );
    }
    assert!(!stdout.lines().any(|l| l.starts_with("FAIL")), "{stdout}");
}

#[tokio::test]
async fn stompjs_over_websocket_runs_every_scenario() {
    let root = repo_root();
    let script = root.join("tests/clients/node/scenarios.mjs");
    if !available(
        "@stomp/stompjs",
        &root.join("tests/clients/node/node_modules/@stomp/stompjs"),
    ) {
        return;
    }
    let server = default_server().await;
    let mut command = tokio::process::Command::new("node");
    command.arg(script).arg(&server.ws);
    run_script(command).await;
}

#[tokio::test]
async fn stomp_py_over_tcp_runs_every_scenario() {
    let root = repo_root();
    let python = root.join("target/test-venv/bin/python");
    if !available("stomp.py", &python) {
        return;
    }
    let server = default_server().await;
    let addr = server.tcp.trim_start_matches("tcp://");
    let (host, port) = addr.rsplit_once(':').expect("host:port");
    let mut command = tokio::process::Command::new(python);
    command
        .arg(root.join("tests/clients/python/scenarios.py"))
        .arg(host)
        .arg(port);
    run_script(command).await;
}

/// A foreign origin the secured server lists in `allowed_origins`.
const LISTED_ORIGIN: &str = "https://app.example.com";

/// A server with TLS on both listeners, users from [`TestLogins`] and
/// HS256 JWTs, no anonymous sessions, and access rules; and what a client
/// needs to reach it.
struct Secured {
    server: TestServer,
    /// The CA that signed the server's certificate.
    ca: PathBuf,
    /// A CA that did not.
    other_ca: PathBuf,
    secret: Vec<u8>,
    /// Removes the certificates' directories at the end.
    _dirs: [TempDir; 2],
}

/// What the secure scripts expect: authenticated users talk on
/// `/topic/secure.*` and to their own user queues; nothing else.
fn secure_rules() -> AccessRules {
    AccessRules::new(vec![
        Rule::new(Who::Authenticated)
            .send(["/topic/secure.*", "/user/{user}/queue/**"])
            .subscribe(["/topic/secure.*", "/user/queue/**"]),
    ])
    .expect("valid rules")
}

/// A CA and a certificate it signed for `localhost` and 127.0.0.1, written
/// to a fresh directory; returns (dir, CA PEM path, cert path, key path).
///
async fn secured_server() -> Secured {
    let (dir, ca, cert, key) = throwaway_pki("server");
    let (other_dir, other_ca, _, _) = throwaway_pki("other");
    let secret = unique("jwt-secret-").into_bytes();
    let jwt = JwtAuthenticator::new(JwtConfig::new(JwtKey::Secret(secret.clone()))).expect("jwt");
    // The token first: TestLogins would take a token in the passcode next
    // to a login for a wrong password.
    let chain = AuthChain::new().with(jwt).with(TestLogins);
    let server = spawn_with(stompbox::app::App::new(), Some(chain), |c| {
        c.tls = Some(stompbox::TlsConfig::new(&cert, &key));
        c.auth.failure_delay = Duration::ZERO;
        c.auth.rules = secure_rules();
        c.allowed_origins = vec![LISTED_ORIGIN.into()];
    })
    .await;
    Secured {
        server,
        ca,
        other_ca,
        secret,
        _dirs: [dir, other_dir],
    }
}

impl Secured {
    fn wss(&self) -> String {
        let http = self.server.handle.http_addr().expect("http addr");
        format!("wss://localhost:{}/ws", http.port())
    }

    fn tls_port(&self) -> u16 {
        self.server.handle.tcp_addr().expect("tcp addr").port()
    }

    /// An HS256 token for `sub` that expires at `exp`.
    fn token(&self, sub: &str, exp: SystemTime) -> String {
        use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
        let exp = exp
            .duration_since(SystemTime::UNIX_EPOCH)
            .expect("after 1970")
            .as_secs();
        let key = EncodingKey::from_secret(&self.secret).expect("secret");
        encode(
            &Header::new(Algorithm::HS256),
            &serde_json::json!({ "sub": sub, "exp": exp }),
            &key,
        )
        .expect("encode")
    }

    /// The credentials the scripts read from their environment: a user's
    /// login and passcode, a valid token and its subject, an expired token.
    fn credentials(&self, command: &mut tokio::process::Command) {
        let user = unique("user-");
        let subject = unique("jwt-user-");
        let now = SystemTime::now();
        command
            .env("STOMP_PASSCODE", format!("{user}-pw"))
            .env("STOMP_LOGIN", user)
            .env(
                "STOMP_JWT",
                self.token(&subject, now + Duration::from_secs(600)),
            )
            .env("STOMP_JWT_SUBJECT", subject)
            .env(
                "STOMP_JWT_EXPIRED",
                // Well past the 30 s leeway.
                self.token("late", now - Duration::from_secs(3600)),
            );
    }
}

#[tokio::test]
async fn stompjs_over_wss_logs_in_and_is_held_to_the_rules() {
    let root = repo_root();
    if !available(
        "@stomp/stompjs",
        &root.join("tests/clients/node/node_modules/@stomp/stompjs"),
    ) {
        return;
    }
    let secured = secured_server().await;
    let mut command = tokio::process::Command::new("node");
    command
        .arg(root.join("tests/clients/node/secure.mjs"))
        .arg(secured.wss())
        .env("NODE_EXTRA_CA_CERTS", &secured.ca)
        .env("STOMP_ALLOWED_ORIGIN", LISTED_ORIGIN);
    secured.credentials(&mut command);
    run_scenarios(
        command,
        &[
            "login-over-wss",
            "wrong-passcode-refused",
            "jwt-as-passcode",
            "jwt-as-bearer-header",
            "expired-jwt-refused",
            "foreign-origin-403",
            "send-outside-rules-refused",
            "untrusted-ca-refused",
        ],
    )
    .await;
}

#[tokio::test]
async fn stomp_py_over_tls_logs_in_and_is_held_to_the_rules() {
    let root = repo_root();
    let python = root.join("target/test-venv/bin/python");
    if !available("stomp.py", &python) {
        return;
    }
    let secured = secured_server().await;
    let mut command = tokio::process::Command::new(python);
    command
        .arg(root.join("tests/clients/python/secure.py"))
        .arg("localhost")
        .arg(secured.tls_port().to_string())
        .arg(&secured.ca)
        .arg(&secured.other_ca);
    secured.credentials(&mut command);
    run_scenarios(
        command,
        &[
            "login-over-tls",
            "wrong-passcode-refused",
            "jwt-as-passcode",
            "send-outside-rules-refused",
            "untrusted-ca-refused",
        ],
    )
    .await;
}
