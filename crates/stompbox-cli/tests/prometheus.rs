//! `GET /metrics` as Prometheus sees it: a real Prometheus server scraping a
//! `stompbox serve` with STOMP clients connected, and `promtool check
//! metrics` linting a scrape taken during traffic.
//!
//! scripts/install-test-deps.sh installs Debian's prometheus package
//! (/usr/bin/prometheus and /usr/bin/promtool). Without it the tests are
//! skipped with the reason, except under CI=true, where a missing
//! dependency is a failure.

use bytes::Bytes;
use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};
use stompbox::client::Client;
use stompbox::codec::{Command as Stomp, Frame, header};

const PROMETHEUS: &str = "/usr/bin/prometheus";
const PROMTOOL: &str = "/usr/bin/promtool";
/// Start-up of either process, and each STOMP exchange.
const WAIT: Duration = Duration::from_secs(20);
/// Prometheus scrapes every second; this bounds the wait for a figure to
/// show in its query API (there is no event to await in another process).
const QUERY_WAIT: Duration = Duration::from_secs(30);
const TOKEN: &str = "prometheus-test-token-0123456789";

/// Under CI a missing dependency fails the test; elsewhere the test says
/// why it did not run.
fn available(test: &str, path: &str) -> bool {
    if Path::new(path).exists() {
        return true;
    }
    let reason = format!("{path} is missing: run scripts/install-test-deps.sh");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: {reason}"
    );
    eprintln!("skipping {test}: {reason}");
    false
}

/// Kills the child when the test ends, however it ends.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A fresh directory for one test's files, under Cargo's scratch directory.
fn scratch(name: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "prometheus-{name}-{}-{}",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("create the test directory");
    dir
}

/// A `stompbox serve` with `/metrics` on a listener of its own behind
/// [`TOKEN`], and the fields of its listening line.
struct Serve {
    _child: Killed,
    fields: HashMap<String, String>,
    log: PathBuf,
}

impl Serve {
    fn start(dir: &Path) -> Serve {
        let log = dir.join("stompbox.log");
        let mut command = Command::new(env!("CARGO_BIN_EXE_stompbox"));
        command.args([
            "serve",
            "--http",
            "127.0.0.1:0",
            "--tcp",
            "127.0.0.1:0",
            "--set",
            "metrics.addr=127.0.0.1:0",
        ]);
        // The developer's own settings must not change the test.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("STOMPBOX_") {
                command.env_remove(name);
            }
        }
        command.env_remove("RUST_LOG");
        command.env("STOMPBOX_METRICS_TOKEN", TOKEN);
        let log_file = std::fs::File::create(&log).expect("create the server log");
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log_file);
        let mut child = command.spawn().expect("spawn stompbox serve");
        let stdout = child.stdout.take().expect("stdout is piped");
        let child = Killed(child);
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let line = rx.recv_timeout(WAIT).unwrap_or_else(|e| {
            let log = std::fs::read_to_string(&log).unwrap_or_default();
            panic!("stompbox serve printed no listening line ({e}):\n{log}")
        });
        let fields: HashMap<String, String> = line
            .strip_prefix("stompbox listening ")
            .unwrap_or_else(|| panic!("not a listening line: {line:?}"))
            .split_whitespace()
            .filter_map(|kv| kv.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        for key in ["ws", "tcp", "metrics"] {
            assert!(fields.contains_key(key), "no {key}= in {line:?}");
        }
        Serve {
            _child: child,
            fields,
            log,
        }
    }

    fn ws(&self) -> &str {
        &self.fields["ws"]
    }

    fn tcp_url(&self) -> String {
        format!("tcp://{}", self.fields["tcp"])
    }

    fn metrics(&self) -> &str {
        &self.fields["metrics"]
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// A GET over HTTP/1.0 (so neither server chunks the body), returning the
/// status and the body.
fn get(addr: &str, target: &str, headers: &[String]) -> Result<(u16, String), String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect {addr}: {e}"))?;
    stream
        .set_read_timeout(Some(WAIT))
        .map_err(|e| e.to_string())?;
    let mut request = format!("GET {target} HTTP/1.0\r\nHost: {addr}\r\n");
    for h in headers {
        request.push_str(h);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    stream
        .write_all(request.as_bytes())
        .map_err(|e| format!("write to {addr}: {e}"))?;
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .map_err(|e| format!("read from {addr}: {e}"))?;
    let response = String::from_utf8_lossy(&response).into_owned();
    let (head, body) = response
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("not an HTTP response: {response:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| format!("no status in {head:?}"))?;
    Ok((status, body.to_owned()))
}

/// `query` with a query string's reserved characters escaped.
fn escape(query: &str) -> String {
    query
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'_' | b'-' | b'.' => (b as char).to_string(),
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A Prometheus server scraping the given jobs every second, with its
/// storage in `dir`.
struct Prometheus {
    _child: Killed,
    addr: String,
    log: PathBuf,
}

impl Prometheus {
    /// `jobs` are `(name, target, token)`.
    fn start(dir: &Path, jobs: &[(&str, &str, Option<&str>)]) -> Prometheus {
        let mut config =
            String::from("global:\n  scrape_interval: 1s\n  scrape_timeout: 1s\nscrape_configs:\n");
        for (name, target, token) in jobs {
            config.push_str(&format!(
                "  - job_name: {name}\n    static_configs:\n      - targets: ['{target}']\n"
            ));
            if let Some(token) = token {
                config.push_str(&format!("    authorization:\n      credentials: {token}\n"));
            }
        }
        let config_path = dir.join("prometheus.yml");
        std::fs::write(&config_path, &config).expect("write prometheus.yml");
        let check = Command::new(PROMTOOL)
            .arg("check")
            .arg("config")
            .arg(&config_path)
            .output()
            .expect("run promtool check config");
        assert!(
            check.status.success(),
            "promtool refuses the test's configuration:\n{config}\n{}{}",
            String::from_utf8_lossy(&check.stdout),
            String::from_utf8_lossy(&check.stderr)
        );
        // Prometheus cannot say which port it bound, so a free one is
        // picked here; another process taking it meanwhile shows as
        // Prometheus exiting, with its log.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("find a free port")
            .port();
        let addr = format!("127.0.0.1:{port}");
        let log = dir.join("prometheus.log");
        let log_file = std::fs::File::create(&log).expect("create the Prometheus log");
        let child = Command::new(PROMETHEUS)
            .arg(format!("--config.file={}", config_path.display()))
            .arg(format!(
                "--storage.tsdb.path={}",
                dir.join("data").display()
            ))
            .arg(format!("--web.listen-address={addr}"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log_file)
            .spawn()
            .expect("start prometheus");
        let mut prometheus = Prometheus {
            _child: Killed(child),
            addr,
            log,
        };
        // Ready: the storage is open and the scrapes have begun.
        let deadline = Instant::now() + WAIT;
        loop {
            if let Ok((200, _)) = get(&prometheus.addr, "/-/ready", &[]) {
                break;
            }
            if let Ok(Some(status)) = prometheus._child.0.try_wait() {
                panic!("prometheus exited ({status}):\n{}", prometheus.log());
            }
            assert!(
                Instant::now() < deadline,
                "prometheus not ready within {WAIT:?}:\n{}",
                prometheus.log()
            );
            thread::sleep(Duration::from_millis(100));
        }
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The value of an instant query returning one sample, if it does.
    fn value(&self, query: &str) -> Result<Option<f64>, String> {
        let target = format!("/api/v1/query?query={}", escape(query));
        let (status, body) = get(&self.addr, &target, &[])?;
        if status != 200 {
            return Err(format!("HTTP {status}: {body}"));
        }
        let json: serde_json::Value =
            serde_json::from_str(&body).map_err(|e| format!("{e}: {body}"))?;
        let result = json["data"]["result"]
            .as_array()
            .ok_or_else(|| format!("no data.result in {body}"))?;
        match result.as_slice() {
            [] => Ok(None),
            [one] => one["value"][1]
                .as_str()
                .and_then(|v| v.parse().ok())
                .map(Some)
                .ok_or_else(|| format!("no value in {body}")),
            _ => Err(format!("more than one series: {body}")),
        }
    }

    /// Waits until `query` gives `expected`, or fails with what Prometheus
    /// last said and both logs.
    fn wait_for(&self, query: &str, expected: f64, server: &Serve) {
        let deadline = Instant::now() + QUERY_WAIT;
        let mut last = Ok(None);
        while Instant::now() < deadline {
            last = self.value(query);
            if matches!(last, Ok(Some(v)) if v == expected) {
                return;
            }
            thread::sleep(Duration::from_millis(200));
        }
        let targets = get(&self.addr, "/api/v1/targets", &[]).map(|(_, body)| body);
        panic!(
            "{query} did not become {expected} within {QUERY_WAIT:?}; last: {last:?}\n\
             targets: {targets:?}\n--- prometheus log ---\n{}\n--- stompbox log ---\n{}",
            self.log(),
            server.log()
        );
    }
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}

/// A connected STOMP client, or the test fails saying why.
async fn connect(url: &str, login: &str) -> Client {
    let connected = tokio::time::timeout(WAIT, Client::connect(url, &[("login", login)])).await;
    match connected {
        Ok(Ok((client, _))) => client,
        Ok(Err(e)) => panic!("connect to {url}: {e}"),
        Err(_) => panic!("connect to {url}: no CONNECTED within {WAIT:?}"),
    }
}

/// Subscribes and waits for the RECEIPT, passing over MESSAGEs before it
/// (a subscribe handler's reply comes first; no test message is sent yet).
async fn subscribe(client: &mut Client, id: &str, destination: &str) {
    let receipt = format!("sub-{id}");
    let frame = Frame::new(Stomp::Subscribe)
        .header(header::ID, id)
        .header(header::DESTINATION, destination)
        .header(header::RECEIPT, &receipt);
    let confirmed = async {
        client.send(&frame).await?;
        loop {
            let Some(frame) = client.next_frame().await? else {
                return Err(stompbox::client::ClientError::Closed);
            };
            match frame.command {
                Stomp::Message => {}
                Stomp::Receipt if frame.headers.get(header::RECEIPT_ID) == Some(&receipt) => {
                    return Ok(());
                }
                _ => return Err(stompbox::client::ClientError::Server(format!("{frame:?}"))),
            }
        }
    };
    tokio::time::timeout(WAIT, confirmed)
        .await
        .unwrap_or_else(|_| panic!("no RECEIPT for SUBSCRIBE {destination}"))
        .unwrap_or_else(|e| panic!("SUBSCRIBE {destination}: {e}"));
}

async fn send(client: &mut Client, destination: &str, body: &str, receipt: &str) {
    let frame = Frame::new(Stomp::Send)
        .header(header::DESTINATION, destination)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Bytes::from(body.to_owned()));
    tokio::time::timeout(WAIT, client.send_with_receipt(frame, receipt))
        .await
        .unwrap_or_else(|_| panic!("no RECEIPT for SEND {destination}"))
        .unwrap_or_else(|e| panic!("SEND {destination}: {e}"));
}

/// Reads MESSAGEs until one of each of `needles` came (others, such as
/// the chat's join notices, are passed over).
async fn receive_all(client: &mut Client, needles: &[&str]) {
    let mut missing: Vec<&str> = needles.to_vec();
    let deadline = tokio::time::Instant::now() + WAIT;
    while !missing.is_empty() {
        let frame = tokio::time::timeout_at(deadline, client.next_frame())
            .await
            .unwrap_or_else(|_| panic!("still waiting for {missing:?} after {WAIT:?}"))
            .unwrap_or_else(|e| panic!("waiting for {missing:?}: {e}"))
            .unwrap_or_else(|| panic!("connection closed while waiting for {missing:?}"));
        if frame.command == Stomp::Message {
            let body = String::from_utf8_lossy(&frame.body);
            missing.retain(|needle| !body.contains(needle));
        }
    }
}

#[test]
fn prometheus_scrapes_the_sessions_of_a_running_server() {
    if !available("the Prometheus scrape test", PROMETHEUS)
        || !available("the Prometheus scrape test", PROMTOOL)
    {
        return;
    }
    let dir = scratch("scrape");
    let server = Serve::start(&dir);
    let rt = runtime();
    // Two sessions over WebSocket, one over TCP.
    let (first, second, tcp) = rt.block_on(async {
        (
            connect(server.ws(), "alice").await,
            connect(server.ws(), "bob").await,
            connect(&server.tcp_url(), "carol").await,
        )
    });
    let prometheus = Prometheus::start(
        &dir,
        &[
            ("stompbox", server.metrics(), Some(TOKEN)),
            // The same endpoint without the token: refused, so down.
            ("stompbox-no-token", server.metrics(), None),
        ],
    );
    prometheus.wait_for(r#"up{job="stompbox"}"#, 1.0, &server);
    prometheus.wait_for(r#"sum(stompbox_sessions{job="stompbox"})"#, 3.0, &server);
    prometheus.wait_for(
        r#"sum(stompbox_sessions{job="stompbox",transport="tcp"})"#,
        1.0,
        &server,
    );
    prometheus.wait_for(
        r#"sum(stompbox_sessions{job="stompbox",transport="websocket",version="1.2"})"#,
        2.0,
        &server,
    );
    prometheus.wait_for(r#"up{job="stompbox-no-token"}"#, 0.0, &server);

    // A session that ends is gone from the next scrape.
    drop(first);
    prometheus.wait_for(r#"sum(stompbox_sessions{job="stompbox"})"#, 2.0, &server);
    drop((second, tcp));
    prometheus.wait_for(r#"sum(stompbox_sessions{job="stompbox"})"#, 0.0, &server);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_scrape_during_traffic_passes_promtool_lint() {
    if !available("the promtool lint test", PROMTOOL) {
        return;
    }
    let dir = scratch("lint");
    let server = Serve::start(&dir);
    let rt = runtime();
    // Kept open while the scrape is taken: sessions and subscriptions
    // exist, messages have been delivered, and the chat's handlers (a
    // SEND and a SUBSCRIBE route) have run, so the histogram has series.
    let clients = rt.block_on(async {
        let mut alice = connect(server.ws(), "alice").await;
        let mut bob = connect(&server.tcp_url(), "bob").await;
        for client in [&mut alice, &mut bob] {
            subscribe(client, "room", "/topic/chat/1").await;
            subscribe(client, "plain", "/topic/plain").await;
        }
        subscribe(&mut alice, "history", "/app/chat/1/history").await;
        let mut carol = connect(server.ws(), "carol").await;
        send(
            &mut carol,
            "/app/chat/1",
            r#"{"text":"hello from the lint test"}"#,
            "chat",
        )
        .await;
        for i in 0..3 {
            send(
                &mut carol,
                "/topic/plain",
                &format!("plain message {i}"),
                &format!("plain-{i}"),
            )
            .await;
        }
        let expected = [
            "hello from the lint test",
            "plain message 0",
            "plain message 1",
            "plain message 2",
        ];
        receive_all(&mut alice, &expected).await;
        receive_all(&mut bob, &expected).await;
        (alice, bob, carol)
    });

    let (status, body) = get(
        server.metrics(),
        "/metrics",
        &[format!("Authorization: Bearer {TOKEN}")],
    )
    .unwrap_or_else(|e| panic!("scrape: {e}\n{}", server.log()));
    assert_eq!(status, 200, "{body}");
    // What the lint is run on has the series this test made.
    for series in [
        "stompbox_handler_duration_seconds_count{kind=\"message\",route=\"/chat/{room}\"} 1\n",
        "stompbox_handler_duration_seconds_count{kind=\"subscribe\",route=\"/chat/{room}/history\"} 1\n",
        "stompbox_sessions{transport=\"tcp\",version=\"1.2\"} 1\n",
        "stompbox_sessions{transport=\"websocket\",version=\"1.2\"} 2\n",
        "process_resident_memory_bytes ",
    ] {
        assert!(body.contains(series), "no {series:?} in\n{body}");
    }
    let sample = |name: &str| {
        body.lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse::<f64>().ok())
            .unwrap_or_else(|| panic!("no {name} in\n{body}"))
    };
    // Two each held by the readers (a room and a plain topic).
    assert!(sample("stompbox_subscriptions") >= 4.0, "{body}");
    // Each of the two readers got the chat message and three plain ones.
    assert!(sample("stompbox_messages_delivered_total") >= 8.0, "{body}");

    let mut lint = Command::new(PROMTOOL)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool check metrics");
    let mut stdin = lint.stdin.take().expect("stdin is piped");
    stdin
        .write_all(body.as_bytes())
        .expect("write the scrape to promtool");
    // Closing stdin ends the input.
    drop(stdin);
    let lint = Killed(lint);
    let output = wait_output(lint);
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(
        output.status.success(),
        "promtool check metrics failed ({}):\n{said}",
        output.status
    );
    assert!(said.trim().is_empty(), "promtool lint problems:\n{said}");
    drop(clients);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The output of a child whose stdin is already closed, killing it if it
/// takes longer than [`WAIT`].
fn wait_output(mut child: Killed) -> std::process::Output {
    let collect = |pipe: Option<Box<dyn Read + Send>>| {
        thread::spawn(move || {
            let mut bytes = Vec::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_end(&mut bytes);
            }
            bytes
        })
    };
    let out = collect(child.0.stdout.take().map(|p| Box::new(p) as _));
    let err = collect(child.0.stderr.take().map(|p| Box::new(p) as _));
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("poll the child") {
            break status;
        }
        assert!(Instant::now() < deadline, "still running after {WAIT:?}");
        thread::sleep(Duration::from_millis(20));
    };
    std::process::Output {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
    }
}
