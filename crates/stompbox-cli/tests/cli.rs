//! End-to-end tests of the `stompbox` binary: `serve`, `send` and
//! `subscribe` as a user runs them, talking to each other.
//!
//! Every wait has a deadline, and every child is killed when its handle is
//! dropped, so a broken binary fails a test instead of hanging the run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Generous for a loaded CI machine; a healthy run takes milliseconds.
const WAIT: Duration = Duration::from_secs(20);

/// Which output of a child.
#[derive(Debug, Clone, Copy)]
enum Stream {
    Out,
    Err,
}

/// A running `stompbox` process whose output is read line by line.
struct Proc {
    name: String,
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
    /// Lines read so far, for the failure message of a timed-out wait.
    seen_out: Vec<String>,
    seen_err: Vec<String>,
}

fn reader(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        let mut pipe = BufReader::new(pipe);
        let mut line = Vec::new();
        // Bytes, not read_line: a body need not be UTF-8.
        while let Ok(n) = pipe.read_until(b'\n', &mut line) {
            if n == 0
                || tx
                    .send(String::from_utf8_lossy(&line).into_owned())
                    .is_err()
            {
                break;
            }
            line.clear();
        }
    });
    rx
}

fn command(args: &[&str], env: &[(&str, &str)]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stompbox"));
    cmd.args(args);
    // The developer's own STOMPBOX_* or RUST_LOG must not change the tests.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("STOMPBOX_") {
            cmd.env_remove(name);
        }
    }
    cmd.env_remove("RUST_LOG");
    cmd.envs(env.iter().copied());
    cmd
}

impl Proc {
    fn spawn(args: &[&str], env: &[(&str, &str)]) -> Proc {
        Proc::spawn_with_stdin(args, env, None)
    }

    fn spawn_with_stdin(args: &[&str], env: &[(&str, &str)], stdin: Option<&[u8]>) -> Proc {
        let mut cmd = command(args, env);
        cmd.stdout(Stdio::piped()).stderr(Stdio::piped());
        cmd.stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        });
        let mut child = cmd.spawn().expect("spawn the stompbox binary");
        if let Some(data) = stdin {
            let mut pipe = child.stdin.take().expect("stdin is piped");
            pipe.write_all(data).expect("write stdin");
            // Dropping the pipe closes it: the end of the body.
        }
        let out: ChildStdout = child.stdout.take().expect("stdout is piped");
        let err = child.stderr.take().expect("stderr is piped");
        Proc {
            name: args.iter().take(1).copied().collect(),
            child,
            out: reader(out),
            err: reader(err),
            seen_out: Vec::new(),
            seen_err: Vec::new(),
        }
    }

    fn describe(&self) -> String {
        format!(
            "stompbox {}\n--- stdout ---\n{}--- stderr ---\n{}",
            self.name,
            self.seen_out.concat(),
            self.seen_err.concat()
        )
    }

    /// The first line of `stream` containing `needle`, waiting for it.
    fn line_with(&mut self, stream: Stream, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let rx = match stream {
                Stream::Out => &self.out,
                Stream::Err => &self.err,
            };
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    let found = line.contains(needle);
                    match stream {
                        Stream::Out => self.seen_out.push(line.clone()),
                        Stream::Err => self.seen_err.push(line.clone()),
                    }
                    if found {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "no line with {needle:?} within {WAIT:?}\n{}",
                        self.describe()
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    let status = self.child.wait().ok();
                    self.drain();
                    panic!(
                        "stream ended (exit {status:?}) before a line with {needle:?}\n{}",
                        self.describe()
                    )
                }
            }
        }
    }

    /// Collects what is left of both streams, after the process exited.
    fn drain(&mut self) {
        let deadline = Instant::now() + WAIT;
        for (rx, seen) in [
            (&self.out, &mut self.seen_out),
            (&self.err, &mut self.seen_err),
        ] {
            while let Ok(line) = rx.recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                seen.push(line);
            }
        }
    }

    /// Waits for the exit (killing the process if it takes longer than
    /// `limit`) and returns the status with the whole stdout and stderr.
    fn finish_within(&mut self, limit: Duration) -> (ExitStatus, String, String) {
        let deadline = Instant::now() + limit;
        let status = loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                break status;
            }
            if Instant::now() >= deadline {
                let _ = self.child.kill();
                let _ = self.child.wait();
                self.drain();
                panic!("did not exit within {limit:?}\n{}", self.describe());
            }
            thread::sleep(Duration::from_millis(10));
        };
        self.drain();
        (status, self.seen_out.concat(), self.seen_err.concat())
    }

    fn finish(&mut self) -> (ExitStatus, String, String) {
        self.finish_within(WAIT)
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs a command that should end by itself.
fn run(args: &[&str], env: &[(&str, &str)]) -> (ExitStatus, String, String) {
    Proc::spawn(args, env).finish()
}

/// A `stompbox serve` and the addresses from its listening line.
struct Server {
    proc: Proc,
    fields: HashMap<String, String>,
}

impl Server {
    fn start(args: &[&str], env: &[(&str, &str)]) -> Server {
        let mut all = vec!["serve"];
        all.extend_from_slice(args);
        let mut proc = Proc::spawn(&all, env);
        let line = proc.line_with(Stream::Out, "stompbox listening");
        let fields = parse_listening(&line);
        Server { proc, fields }
    }

    fn ws(&self) -> &str {
        &self.fields["ws"]
    }

    fn tcp_url(&self) -> String {
        format!("tcp://{}", self.fields["tcp"])
    }

    /// SIGTERM, then the exit status, which must come promptly.
    fn stop(mut self) -> (ExitStatus, String) {
        self.proc.signal("TERM");
        let (status, _, err) = self.proc.finish_within(Duration::from_secs(10));
        (status, err)
    }
}

/// `stompbox listening http=A ws=ws://A/ws tcp=B` as a map.
fn parse_listening(line: &str) -> HashMap<String, String> {
    let rest = line
        .trim()
        .strip_prefix("stompbox listening ")
        .unwrap_or_else(|| panic!("not a listening line: {line:?}"));
    let fields: HashMap<String, String> = rest
        .split_whitespace()
        .map(|kv| {
            let (k, v) = kv
                .split_once('=')
                .unwrap_or_else(|| panic!("bad field {kv:?} in {line:?}"));
            (k.to_owned(), v.to_owned())
        })
        .collect();
    for key in ["http", "ws", "tcp"] {
        assert!(fields.contains_key(key), "no {key}= in {line:?}");
    }
    fields
}

/// A config file of its own for each test, under Cargo's scratch directory.
fn config_file(text: &str) -> PathBuf {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
    let path = dir.join(format!(
        "cli-test-{}-{}.toml",
        std::process::id(),
        NEXT.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, text).expect("write the test config file");
    path
}

fn ephemeral() -> [&'static str; 4] {
    ["--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0"]
}

#[test]
fn subscriber_prints_what_send_publishes_across_transports() {
    let server = Server::start(&ephemeral(), &[]);
    assert!(server.ws().starts_with("ws://127.0.0.1:") && server.ws().ends_with("/ws"));
    assert_ne!(server.fields["tcp"], "off");

    let mut sub = Proc::spawn(
        &[
            "subscribe",
            "--url",
            server.ws(),
            "--destination",
            "/topic/cli",
            "--count",
            "1",
        ],
        &[],
    );
    sub.line_with(Stream::Err, "subscribed to /topic/cli");

    let tcp = server.tcp_url();
    let (status, out, err) = run(
        &[
            "send",
            "--url",
            &tcp,
            "--destination",
            "/topic/cli",
            "--header",
            "x-trace:abc",
            "--content-type",
            "text/plain",
            "--receipt",
            "hello from send",
        ],
        &[],
    );
    assert!(status.success(), "send failed: {err}");
    assert!(
        out.starts_with("receipt-id:"),
        "send --receipt printed {out:?}"
    );

    let (status, out, err) = sub.finish();
    assert!(status.success(), "subscribe failed: {err}");
    assert!(out.starts_with("MESSAGE\n"), "{out}");
    for expected in [
        "destination:/topic/cli\n",
        "x-trace:abc\n",
        "content-type:text/plain\n",
        "subscription:sub-0\n",
        "\nhello from send\n",
    ] {
        assert!(
            out.contains(expected),
            "no {expected:?} in subscriber output:\n{out}"
        );
    }

    let (status, err) = server.stop();
    assert!(status.success(), "serve exited with {status:?}\n{err}");
}

#[test]
fn queue_consumer_acks_so_nothing_is_redelivered() {
    let server = Server::start(&ephemeral(), &[]);
    let url = server.ws().to_owned();
    let mut sub = Proc::spawn(
        &[
            "subscribe",
            "--url",
            &url,
            "-d",
            "/queue/cli",
            "--ack",
            "client-individual",
            "--body-only",
            "--count",
            "2",
        ],
        &[],
    );
    sub.line_with(Stream::Err, "subscribed to /queue/cli");
    let (status, _, err) = run(&["send", "--url", &url, "-d", "/queue/cli", "one"], &[]);
    assert!(status.success(), "send failed: {err}");
    // The body from stdin, as in `echo two | stompbox send …`.
    let (status, _, err) = Proc::spawn_with_stdin(
        &["send", "--url", &url, "-d", "/queue/cli"],
        &[],
        Some(b"two\n"),
    )
    .finish();
    assert!(status.success(), "send from stdin failed: {err}");
    let (status, out, err) = sub.finish();
    assert!(status.success(), "subscribe failed: {err}");
    assert_eq!(out, "one\ntwo\n");

    // Were the ACKs lost, "one" and "two" would come back before "three".
    let (status, _, err) = run(&["send", "--url", &url, "-d", "/queue/cli", "three"], &[]);
    assert!(status.success(), "send failed: {err}");
    let (status, out, err) = run(
        &[
            "subscribe",
            "--url",
            &url,
            "-d",
            "/queue/cli",
            "--ack",
            "client",
            "--body-only",
            "-n",
            "1",
        ],
        &[],
    );
    assert!(status.success(), "second subscribe failed: {err}");
    assert_eq!(out, "three\n");

    let (status, err) = server.stop();
    assert!(status.success(), "{err}");
}

#[test]
fn send_exits_non_zero_on_a_server_error() {
    let server = Server::start(&ephemeral(), &[]);
    let (status, _, err) = run(
        &["send", "--url", server.ws(), "-d", "/nowhere/x", "lost"],
        &[],
    );
    assert!(
        !status.success(),
        "send to an unknown destination succeeded"
    );
    assert!(err.contains("server error"), "{err}");
    assert!(err.contains("/nowhere/x"), "{err}");

    let (status, _, err) = run(
        &[
            "send",
            "--url",
            server.ws(),
            "-d",
            "/topic/x",
            "--header",
            "receipt:1",
            "x",
        ],
        &[],
    );
    assert!(!status.success());
    assert!(err.contains("receipt"), "{err}");
    let (status, err) = server.stop();
    assert!(status.success(), "{err}");
}

/// The chat demo's handler refuses a body that is not its JSON; the error
/// goes to the sender's /user/queue/errors, which `send` watches.
#[test]
fn send_reports_a_handlers_refusal_with_a_non_zero_exit() {
    let server = Server::start(&ephemeral(), &[]);
    let (status, out, err) = run(
        &[
            "send",
            "--url",
            server.ws(),
            "-d",
            "/app/chat/lobby",
            "plain text",
        ],
        &[],
    );
    assert!(!status.success(), "a refused message exited 0: {out}{err}");
    assert!(
        err.contains("the server's handler refused the message:"),
        "{err}"
    );

    let (status, _, err) = run(
        &[
            "send",
            "--url",
            server.ws(),
            "-d",
            "/app/chat/lobby",
            r#"{"text": "hello"}"#,
        ],
        &[],
    );
    assert!(status.success(), "an accepted message failed: {err}");
    let (status, err) = server.stop();
    assert!(status.success(), "{err}");
}

#[test]
fn send_reports_an_unreachable_server() {
    // Bound then dropped: nothing listens there any more.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("pick a port")
        .port();
    let url = format!("tcp://127.0.0.1:{port}");
    let (status, _, err) = run(
        &[
            "send",
            "--url",
            &url,
            "-d",
            "/topic/x",
            "x",
            "--timeout",
            "5",
        ],
        &[],
    );
    assert!(!status.success());
    assert!(err.contains(&url), "{err}");
}

#[test]
fn subscribe_disconnects_and_exits_zero_on_ctrl_c() {
    let server = Server::start(&ephemeral(), &[]);
    let mut sub = Proc::spawn(
        &[
            "subscribe",
            "--url",
            &server.tcp_url(),
            "-d",
            "/topic/forever",
        ],
        &[],
    );
    sub.line_with(Stream::Err, "subscribed to /topic/forever");
    sub.signal("INT");
    let (status, _, err) = sub.finish();
    assert!(status.success(), "subscribe exited with {status:?}: {err}");
    let (status, err) = server.stop();
    assert!(status.success(), "{err}");
}

#[test]
fn sigterm_and_sigint_shut_down_gracefully_with_exit_zero() {
    for signal in ["TERM", "INT"] {
        let mut server = Server::start(&ephemeral(), &[]);
        // A connected client must not hold the shutdown up past its timeout.
        let mut sub = Proc::spawn(&["subscribe", "--url", server.ws(), "-d", "/topic/x"], &[]);
        sub.line_with(Stream::Err, "subscribed to /topic/x");
        let started = Instant::now();
        server.proc.signal(signal);
        let (status, _, err) = server.proc.finish_within(Duration::from_secs(10));
        assert!(
            status.success(),
            "SIG{signal}: serve exited with {status:?}\n{err}"
        );
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "SIG{signal}: took {:?}",
            started.elapsed()
        );
        // The subscriber sees the server go away and says so.
        let (status, _, err) = sub.finish();
        assert!(
            !status.success(),
            "subscriber should report the closed connection"
        );
        assert!(err.contains("closed"), "{err}");
    }
}

#[test]
fn shipped_config_file_works_unchanged() {
    let shipped = concat!(env!("CARGO_MANIFEST_DIR"), "/../../stompbox.toml");
    // Only the port is overridden, so tests can run side by side.
    let server = Server::start(&["--config", shipped, "--http", "127.0.0.1:0"], &[]);
    assert!(server.ws().ends_with("/ws"), "{:?}", server.fields);
    assert_eq!(server.fields["tcp"], "off");
    let (status, err) = server.stop();
    assert!(status.success(), "{err}");
}

#[test]
fn flags_override_environment_which_overrides_the_file() {
    let file = config_file("[server]\nhttp = \"127.0.0.1:0\"\nws_path = \"/from-file\"\n");
    let file = file.to_str().expect("UTF-8 temp path");

    let server = Server::start(&["--config", file], &[]);
    assert!(server.ws().ends_with("/from-file"), "{:?}", server.fields);
    // The chat page is told where the endpoint moved to.
    let (_, page) = http_request(&server.fields["http"], "GET", "/", &[], "");
    assert!(page.contains(r#"content="/from-file""#), "{page}");
    server.stop();

    let env = [
        ("STOMPBOX_SERVER_WS_PATH", "/from-env"),
        ("STOMPBOX_SERVER_TCP", "127.0.0.1:0"),
    ];
    let server = Server::start(&["--config", file], &env);
    assert!(server.ws().ends_with("/from-env"), "{:?}", server.fields);
    assert_ne!(
        server.fields["tcp"], "off",
        "STOMPBOX_SERVER_TCP did not turn TCP on"
    );
    server.stop();

    let server = Server::start(
        &["--config", file, "--ws-path", "/from-flag", "--tcp", "off"],
        &env,
    );
    assert!(server.ws().ends_with("/from-flag"), "{:?}", server.fields);
    assert_eq!(server.fields["tcp"], "off");
    server.stop();
}

#[test]
fn invalid_value_in_file_stops_start_up_naming_the_field() {
    let file = config_file("[limits]\nframe_bytes = 10\n");
    let (status, out, err) = run(
        &[
            "serve",
            "--config",
            file.to_str().expect("UTF-8"),
            "--http",
            "127.0.0.1:0",
        ],
        &[],
    );
    assert!(!status.success());
    assert!(!out.contains("listening"), "{out}");
    assert!(
        err.contains("invalid configuration: limits.frame_bytes: must be at least 1024 (got 10)"),
        "{err}"
    );

    let file = config_file("[heartbeat]\ngrace = \"soon\"\n");
    let (status, _, err) = run(&["serve", "--config", file.to_str().expect("UTF-8")], &[]);
    assert!(!status.success());
    assert!(err.contains("heartbeat.grace"), "{err}");
}

#[test]
fn invalid_value_in_env_stops_start_up_naming_field_and_variable() {
    let (status, _, err) = run(
        &["serve", "--http", "127.0.0.1:0"],
        &[("STOMPBOX_LIMITS_FRAME_BYTES", "10")],
    );
    assert!(!status.success());
    assert!(err.contains("limits.frame_bytes"), "{err}");
    assert!(err.contains("STOMPBOX_LIMITS_FRAME_BYTES"), "{err}");

    let (status, _, err) = run(&["serve"], &[("STOMPBOX_SERVER_HTTP", "not-an-address")]);
    assert!(!status.success());
    assert!(err.contains("server.http"), "{err}");
}

#[test]
fn unknown_keys_are_errors_naming_them() {
    let file = config_file("[limits]\nfram_bytes = 131072\n");
    let (status, _, err) = run(&["serve", "--config", file.to_str().expect("UTF-8")], &[]);
    assert!(!status.success());
    assert!(err.contains("fram_bytes"), "{err}");

    let (status, _, err) = run(
        &[
            "serve",
            "--http",
            "127.0.0.1:0",
            "--set",
            "limits.frame_byte=1",
        ],
        &[],
    );
    assert!(!status.success());
    assert!(
        err.contains("'limits.frame_byte' is not a setting; did you mean limits.frame_bytes?"),
        "{err}"
    );
}

/// A variable with the settings' prefix that names none is a warning with
/// the closest key, not fatal; the test harness's own are not mentioned.
#[test]
fn unknown_variables_warn_with_the_closest_key() {
    let (status, out, err) = run(
        &["serve", "--check"],
        &[
            ("STOMPBOX_LIMITS_FRAME_BYTEZ", "1"),
            ("STOMPBOX_TEST_BROKER", "rabbitmq"),
        ],
    );
    assert!(status.success(), "{err}");
    assert!(out.contains("[limits]"), "{out}");
    assert!(
        err.contains(
            "environment variable STOMPBOX_LIMITS_FRAME_BYTEZ names no setting and is ignored; \
             did you mean STOMPBOX_LIMITS_FRAME_BYTES?"
        ),
        "{err}"
    );
    assert!(!err.contains("STOMPBOX_TEST_BROKER"), "{err}");
}

#[test]
fn a_value_of_the_wrong_type_asks_for_a_whole_number() {
    let (status, _, err) = run(
        &["serve", "--check", "--set", "limits.frame_bytes=abc"],
        &[],
    );
    assert!(!status.success());
    assert!(
        err.contains("limits.frame_bytes") && err.contains("expected a whole number"),
        "{err}"
    );
    assert!(!err.contains("usize"), "{err}");
}

#[test]
fn listen_addresses_take_host_names() {
    let server = Server::start(&["--http", "localhost:0", "--tcp", "off"], &[]);
    let http: std::net::SocketAddr = server.fields["http"].parse().expect("an address");
    assert!(http.ip().is_loopback(), "{http}");
    let (status, err) = server.stop();
    assert!(status.success(), "{err}");

    let (status, _, err) = run(
        &["serve", "--check", "--http", "no-such-host.invalid:8080"],
        &[],
    );
    assert!(!status.success());
    assert!(
        err.contains("server.http")
            && err.contains("cannot resolve host name \"no-such-host.invalid\""),
        "{err}"
    );
}

/// A second server on a taken port says which listener collided and how
/// to move it.
#[test]
fn an_address_in_use_names_the_listener() {
    let server = Server::start(&ephemeral(), &[]);
    let taken = server.fields["tcp"].clone();
    let (status, _, err) = run(&["serve", "--http", "127.0.0.1:0", "--tcp", &taken], &[]);
    assert!(!status.success());
    assert!(
        err.contains(&format!("TCP listener {taken}: address already in use"))
            && err.contains("--tcp (server.tcp)"),
        "{err}"
    );
    let taken = server.fields["http"].clone();
    let (status, _, err) = run(&["serve", "--http", &taken], &[]);
    assert!(!status.success());
    assert!(
        err.contains(&format!("HTTP listener {taken}: address already in use"))
            && err.contains("--http (server.http)"),
        "{err}"
    );
    let (status, err) = server.stop();
    assert!(status.success(), "{err}");
}

#[test]
fn missing_config_file_is_an_error_naming_it() {
    let path = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("no-such-stompbox.toml");
    let path = path.to_str().expect("UTF-8");
    let (status, _, err) = run(&["serve", "--config", path], &[]);
    assert!(!status.success());
    assert!(err.contains(path), "{err}");
}

#[test]
fn invalid_relay_settings_stop_start_up_naming_the_field() {
    // The relay itself works (tests/relay_instances.rs); a bad address or an
    // embedded-broker key alongside it is refused before anything starts.
    let file = config_file(
        "[broker]\nkind = \"relay\"\nmax_queues = 10\n[relay]\naddresses = [\"rabbit\"]\n",
    );
    let path = file.to_str().expect("UTF-8");
    let (status, out, err) = run(&["serve", "--config", path], &[]);
    assert!(!status.success());
    assert!(!out.contains("listening"), "{out}");
    assert!(
        err.contains("relay.addresses: expected host:port") && err.contains(path),
        "{err}"
    );
    assert!(
        err.contains("broker.max_queues: belongs to the embedded broker"),
        "{err}"
    );
}

/// A bare HTTP/1.1 request to `addr` (no HTTP client dependency); returns
/// the status code and the whole response, headers included.
fn http_request(
    addr: &str,
    method: &str,
    path: &str,
    headers: &[&str],
    body: &str,
) -> (u16, String) {
    let mut stream = std::net::TcpStream::connect(addr).expect("connect to the HTTP listener");
    stream.set_read_timeout(Some(WAIT)).expect("read timeout");
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream
        .write_all(request.as_bytes())
        .expect("write the request");
    let mut response = Vec::new();
    stream
        .read_to_end(&mut response)
        .expect("read the response");
    let response = String::from_utf8_lossy(&response).into_owned();
    let status = response
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {response:?}"));
    (status, response)
}

#[test]
fn serve_runs_the_chat_demo_unless_it_is_turned_off() {
    let server = Server::start(&["--http", "127.0.0.1:0"], &[]);
    let http = server.fields["http"].clone();
    let (status, page) = http_request(&http, "GET", "/", &[], "");
    assert_eq!(status, 200, "{page}");
    assert!(page.contains("<title>stompbox chat</title>"), "{page}");
    assert!(page.contains(r#"<meta name="stomp-endpoint" content="/ws">"#));
    let (status, script) = http_request(&http, "GET", "/stomp.js", &[], "");
    assert_eq!(status, 200);
    assert!(script.contains("export class StompClient"));

    // The chat's handler answers SENDs to /app/chat/{room} on the room's topic.
    let mut sub = Proc::spawn(
        &[
            "subscribe",
            "--url",
            server.ws(),
            "--destination",
            "/topic/chat/1",
            "--count",
            "1",
            "--body-only",
        ],
        &[],
    );
    sub.line_with(Stream::Err, "subscribed to /topic/chat/1");
    let (status, _, err) = run(
        &[
            "send",
            "--url",
            server.ws(),
            "--login",
            "alice",
            "--destination",
            "/app/chat/1",
            "--content-type",
            "application/json",
            r#"{"text":"hello from the CLI"}"#,
        ],
        &[],
    );
    assert!(status.success(), "send failed: {err}");
    let (status, out, err) = sub.finish();
    assert!(status.success(), "subscribe failed: {err}");
    for expected in [
        r#""type":"message""#,
        r#""user":"alice""#,
        r#""text":"hello from the CLI""#,
    ] {
        assert!(out.contains(expected), "no {expected} in {out}");
    }
    server.stop();

    let server = Server::start(&["--http", "127.0.0.1:0", "--set", "demo.chat=false"], &[]);
    let http = server.fields["http"].clone();
    let (status, page) = http_request(&http, "GET", "/", &[], "");
    assert_eq!(status, 200);
    assert!(
        page.contains("STOMP over WebSocket server") && page.contains("<code>/ws</code>"),
        "{page}"
    );
    let (status, _) = http_request(&http, "GET", "/stomp.js", &[], "");
    assert_eq!(status, 404);
    // No chat handlers either.
    let (status, _, err) = run(
        &[
            "send",
            "--url",
            server.ws(),
            "--destination",
            "/app/chat/1",
            "{}",
        ],
        &[],
    );
    assert!(!status.success());
    assert!(err.contains("no application handler"), "{err}");
    server.stop();
}

#[test]
fn an_api_token_turns_on_http_publishing() {
    let token = "cli-test-token-0123456789";
    let server = Server::start(
        &["--http", "127.0.0.1:0"],
        &[("STOMPBOX_SERVER_API_TOKEN", token)],
    );
    let http = server.fields["http"].clone();
    let mut sub = Proc::spawn(
        &[
            "subscribe",
            "--url",
            server.ws(),
            "--destination",
            "/topic/http",
            "--count",
            "1",
            "--body-only",
        ],
        &[],
    );
    sub.line_with(Stream::Err, "subscribed to /topic/http");
    let body = r#"{"destination":"/topic/http","body":"published over HTTP"}"#;
    let (status, response) = http_request(&http, "POST", "/api/publish", &[], body);
    assert_eq!(status, 401, "{response}");
    let bearer = format!("Authorization: Bearer {token}");
    let (status, response) = http_request(
        &http,
        "POST",
        "/api/publish",
        &[&bearer, "Content-Type: application/json"],
        body,
    );
    assert_eq!(status, 202, "{response}");
    let (status, out, err) = sub.finish();
    assert!(status.success(), "{err}");
    assert_eq!(out.trim(), "published over HTTP");
    let (status, err) = server.stop();
    assert!(status.success(), "{err}");
    assert!(!err.contains(token), "the token was logged:\n{err}");

    // Without a token the endpoint does not exist.
    let server = Server::start(&["--http", "127.0.0.1:0"], &[]);
    let (status, _) = http_request(
        &server.fields["http"],
        "POST",
        "/api/publish",
        &[&bearer],
        body,
    );
    assert_eq!(status, 404);
    server.stop();
}

#[test]
fn check_shows_app_and_demo_settings_but_not_the_token() {
    let token = "check-test-token-0123456789";
    let (status, out, err) = run(
        &[
            "serve",
            "--check",
            "--set",
            "app.prefixes=/svc",
            "--set",
            "demo.chat=false",
        ],
        &[("STOMPBOX_SERVER_API_TOKEN", token)],
    );
    assert!(status.success(), "{err}");
    for expected in [
        "[app]\n",
        "prefixes = [\"/svc\"]\n",
        "user_prefix = \"/user\"\n",
        "[demo]\n",
        "chat = false\n",
        "api_token = \"(set; not shown)\"\n",
    ] {
        assert!(out.contains(expected), "no {expected:?} in\n{out}");
    }
    assert!(!out.contains(token), "{out}");
}

#[test]
fn app_settings_that_cannot_work_stop_start_up_naming_the_field() {
    let (status, _, err) = run(
        &[
            "serve",
            "--http",
            "127.0.0.1:0",
            "--set",
            "app.prefixes=/topic",
        ],
        &[],
    );
    assert!(!status.success());
    assert!(
        err.contains("app.prefixes")
            && err.contains("overlaps")
            && err.contains("--set app.prefixes"),
        "{err}"
    );

    // The chat demo's page needs the default prefixes.
    let (status, _, err) = run(
        &["serve", "--http", "127.0.0.1:0"],
        &[("STOMPBOX_APP_PREFIXES", "/svc")],
    );
    assert!(!status.success());
    assert!(err.contains("demo.chat") && err.contains("/app"), "{err}");

    let (status, _, err) = run(
        &["serve", "--http", "127.0.0.1:0"],
        &[("STOMPBOX_SERVER_API_TOKEN", "short")],
    );
    assert!(!status.success());
    assert!(
        err.contains("server.api_token") && err.contains("STOMPBOX_SERVER_API_TOKEN"),
        "{err}"
    );
}

#[test]
fn relay_mode_settings_reach_check_from_flags_and_environment() {
    // --check needs no broker: it shows what `serve` would use.
    let (status, out, err) = run(&["serve", "--check", "--set", "broker.kind=relay"], &[]);
    assert!(status.success(), "{err}");
    for expected in [
        "mode = \"shared\"\n",
        "connections = 4\n",
        "prefetch = 64\n",
    ] {
        assert!(out.contains(expected), "no {expected:?} in\n{out}");
    }

    let (status, out, err) = run(
        &[
            "serve",
            "--check",
            "--set",
            "broker.kind=relay",
            "--set",
            "relay.mode=per-session",
            "--set",
            "relay.connections=8",
        ],
        &[
            ("STOMPBOX_RELAY_PREFETCH", "1000"),
            // Each client's own login: only per-session can pass it.
            ("STOMPBOX_RELAY_CLIENT_LOGIN", ""),
        ],
    );
    assert!(status.success(), "{err}");
    for expected in [
        "mode = \"per-session\"\n",
        "connections = 8\n",
        "prefetch = 1000\n",
        "client_login = \"\"\n",
    ] {
        assert!(out.contains(expected), "no {expected:?} in\n{out}");
    }
}

#[test]
fn invalid_relay_mode_settings_stop_start_up_naming_the_field() {
    // Each problem from a flag or a variable: the message names the field
    // and where it was set.
    for (flags, env, expected) in [
        (
            &["--set", "relay.connections=0"][..],
            &[][..],
            "relay.connections: must be at least 1 (got 0); set by --set relay.connections",
        ),
        (
            &[],
            &[("STOMPBOX_RELAY_CONNECTIONS", "65")],
            "relay.connections: must be at most 64 (got 65); set by environment variable \
             STOMPBOX_RELAY_CONNECTIONS",
        ),
        (
            &["--set", "relay.prefetch=0"],
            &[],
            "relay.prefetch: must be at least 1 (got 0)",
        ),
        (
            &[],
            &[("STOMPBOX_RELAY_PREFETCH", "65536")],
            "relay.prefetch: must be at most 65535 (got 65536)",
        ),
        (
            &["--set", "relay.mode=pooled"],
            &[],
            "relay.mode: unknown relay mode \"pooled\"; use \"shared\" or \"per-session\"",
        ),
    ] {
        let mut args = vec![
            "serve",
            "--http",
            "127.0.0.1:0",
            "--set",
            "broker.kind=relay",
        ];
        args.extend_from_slice(flags);
        let (status, out, err) = run(&args, env);
        assert!(!status.success(), "{args:?} {env:?}: {out}");
        assert!(!out.contains("listening"), "{out}");
        assert!(err.contains(expected), "{args:?} {env:?}: {err}");
    }

    // The shared pool logs in once, so it cannot pass each client's own
    // login: the error names both fields, and where the mode came from.
    let file = config_file(
        "[broker]\nkind = \"relay\"\n[relay]\nmode = \"shared\"\nclient_login = \"\"\n",
    );
    let path = file.to_str().expect("UTF-8");
    let (status, out, err) = run(&["serve", "--config", path, "--http", "127.0.0.1:0"], &[]);
    assert!(!status.success());
    assert!(!out.contains("listening"), "{out}");
    assert!(
        err.contains("relay.mode: \"shared\" cannot be used with relay.client_login = \"\"")
            && err.contains("the shared pool logs in once")
            && err.contains(path),
        "{err}"
    );
}

/// A log line as the JSON object `--log-format json` writes.
fn json_line(line: &str) -> serde_json::Value {
    serde_json::from_str(line.trim())
        .unwrap_or_else(|e| panic!("not a JSON log line ({e}): {line:?}"))
}

#[test]
fn json_logs_carry_the_stats_line_as_numbers() {
    let mut server = Server::start(
        &[
            "--log-format",
            "json",
            "--set",
            "server.stats_interval_ms=1000",
            "--http",
            "127.0.0.1:0",
            "--tcp",
            "127.0.0.1:0",
        ],
        &[],
    );
    let mut sub = Proc::spawn(&["subscribe", "--url", server.ws(), "-d", "/topic/x"], &[]);
    sub.line_with(Stream::Err, "subscribed to /topic/x");
    let (status, _, err) = run(
        &["send", "--url", server.ws(), "-d", "/topic/x", "counted"],
        &[],
    );
    assert!(status.success(), "{err}");
    sub.line_with(Stream::Out, "counted");
    // Lines from before may count less; one of the next, a second apart,
    // counts the subscriber's session and the message both ways.
    let at_least_one = |stats: &serde_json::Value, key: &str| stats[key].as_u64() >= Some(1);
    let stats = loop {
        let line = server.proc.line_with(Stream::Err, "stompbox::stats");
        let stats = json_line(&line);
        if ["sessions", "subscriptions", "messages_in", "messages_out"]
            .iter()
            .all(|key| at_least_one(&stats, key))
        {
            break stats;
        }
    };
    assert!(at_least_one(&stats, "connections"), "{stats}");
    assert!(at_least_one(&stats, "bytes_in"), "{stats}");
    assert!(at_least_one(&stats, "bytes_out"), "{stats}");
    assert_eq!(stats["target"], "stompbox::stats", "{stats}");
    assert_eq!(stats["level"], "INFO", "{stats}");
    assert_eq!(stats["message"], "stats", "{stats}");
    for counter in [
        "connections",
        "sessions",
        "subscriptions",
        "messages_in",
        "messages_by_server",
        "messages_out",
        "bytes_in",
        "bytes_out",
        "backlog_bytes",
        "queue_bytes",
        "slow_consumers",
        "slow_consumers_total",
        "publisher_pauses",
        "publisher_pauses_total",
    ] {
        assert!(stats[counter].is_u64(), "{counter} in {stats}");
    }
    for rate in [
        "interval_secs",
        "messages_in_per_sec",
        "messages_by_server_per_sec",
        "messages_out_per_sec",
        "bytes_in_per_sec",
        "bytes_out_per_sec",
    ] {
        assert!(stats[rate].is_number(), "{rate} in {stats}");
    }
    assert!(
        stats["interval_secs"].as_f64().unwrap_or(0.0) > 0.5,
        "{stats}"
    );
    assert_eq!(stats["broker_available"], true, "{stats}");
    drop(sub);
    let (status, err) = server.stop();
    assert!(status.success(), "{err}");
    // Every line, not only the stats, is one JSON object.
    for line in err.lines().filter(|l| !l.trim().is_empty()) {
        json_line(line);
    }
}

#[test]
fn the_log_format_can_come_from_the_environment() {
    let mut server = Server::start(&ephemeral(), &[("STOMPBOX_LOG_FORMAT", "json")]);
    let line = server.proc.line_with(Stream::Err, "stompbox listening");
    assert_eq!(json_line(&line)["message"], "stompbox listening");
    let (status, err) = server.stop();
    assert!(status.success(), "{err}");

    let (status, _, err) = run(&["serve", "--check"], &[("STOMPBOX_LOG_FORMAT", "xml")]);
    assert!(!status.success());
    assert!(err.contains("xml") && err.contains("json"), "{err}");
}

/// deploy/stompbox.service's ExecStart arguments (after the binary) and
/// the value of its `key=`.
fn unit_setting(unit: &str, key: &str) -> String {
    unit.lines()
        .find_map(|line| line.strip_prefix(&format!("{key}=")))
        .unwrap_or_else(|| panic!("deploy/stompbox.service has no {key}="))
        .trim()
        .to_owned()
}

#[test]
fn the_deployment_example_config_and_unit_pass_check_together() {
    let deploy = concat!(env!("CARGO_MANIFEST_DIR"), "/../../deploy");
    let config = format!("{deploy}/stompbox.toml");
    let unit = std::fs::read_to_string(format!("{deploy}/stompbox.service"))
        .expect("read deploy/stompbox.service");
    // The unit's own command line, pointed at the example config, with
    // --check: the flags it passes must exist too.
    let exec = unit_setting(&unit, "ExecStart");
    let mut args: Vec<&str> = exec.split_whitespace().skip(1).collect();
    assert_eq!(args.first(), Some(&"serve"), "{exec}");
    let at = args
        .iter()
        .position(|a| *a == "/etc/stompbox/stompbox.toml")
        .unwrap_or_else(|| panic!("ExecStart does not read /etc/stompbox/stompbox.toml: {exec}"));
    args[at] = &config;
    args.push("--check");
    let (status, out, err) = run(&args, &[]);
    assert!(status.success(), "{err}");
    let checked: toml::Table = toml::from_str(&out).expect("--check prints TOML");
    let shutdown_ms = checked["server"]["shutdown_timeout_ms"]
        .as_integer()
        .expect("server.shutdown_timeout_ms");
    // systemd must not SIGKILL a drain the server would still finish.
    let stop_secs: i64 = unit_setting(&unit, "TimeoutStopSec")
        .trim_end_matches('s')
        .parse()
        .expect("TimeoutStopSec in seconds, like 30s");
    assert!(
        stop_secs * 1000 > shutdown_ms + 1000,
        "TimeoutStopSec={stop_secs}s does not leave room for shutdown_timeout_ms={shutdown_ms}"
    );
    assert_eq!(unit_setting(&unit, "LimitNOFILE"), "65536");
}

#[test]
fn check_shows_the_metrics_section_with_the_token_redacted() {
    let token = "metrics-check-token-0123456789";
    let (status, out, err) = run(
        &[
            "serve",
            "--check",
            "--set",
            "metrics.addr=127.0.0.1:9464",
            "--set",
            "metrics.max_destination_series=500",
        ],
        &[("STOMPBOX_METRICS_TOKEN", token)],
    );
    assert!(status.success(), "{err}");
    assert!(
        out.contains(
            "[metrics]\nenabled = true\naddr = \"127.0.0.1:9464\"\ntoken = \"(set; not shown)\"\n\
             per_destination = false\nmax_destination_series = 500\n"
        ),
        "{out}"
    );
    assert!(!out.contains(token), "{out}");
    assert!(!err.contains(token), "{err}");
}

#[test]
fn invalid_metrics_settings_stop_start_up_naming_the_field() {
    for (flags, env, expected) in [
        (
            &["--set", "metrics.max_destination_series=0"][..],
            &[][..],
            "metrics.max_destination_series: must be at least 1 (got 0); set by --set \
             metrics.max_destination_series",
        ),
        (
            &[],
            &[("STOMPBOX_METRICS_MAX_DESTINATION_SERIES", "20000")],
            "metrics.max_destination_series: must be at most 10000 (got 20000); set by \
             environment variable STOMPBOX_METRICS_MAX_DESTINATION_SERIES",
        ),
        (
            &["--set", "metrics.addr=metrics.internal"],
            &[],
            "metrics.addr: expected IP:port",
        ),
        (
            &[],
            &[("STOMPBOX_METRICS_TOKEN", "short")],
            "metrics.token: must be at least 16 characters (got 5)",
        ),
        (
            &["--set", "metrics.enabled=maybe"],
            &[],
            "metrics.enabled: invalid type",
        ),
    ] {
        let mut args = vec!["serve", "--http", "127.0.0.1:0"];
        args.extend_from_slice(flags);
        let (status, out, err) = run(&args, env);
        assert!(!status.success(), "{args:?} {env:?}: {out}");
        assert!(!out.contains("listening"), "{out}");
        assert!(err.contains(expected), "{args:?} {env:?}: {err}");
    }
}

#[test]
fn metrics_on_a_listener_of_its_own_ask_for_the_token() {
    let token = "metrics-serve-token-0123456789";
    let server = Server::start(
        &["--http", "127.0.0.1:0", "--set", "metrics.addr=127.0.0.1:0"],
        &[("STOMPBOX_METRICS_TOKEN", token)],
    );
    let metrics = server
        .fields
        .get("metrics")
        .unwrap_or_else(|| panic!("no metrics= on the listening line: {:?}", server.fields))
        .clone();
    assert_ne!(metrics, server.fields["http"]);
    let (status, response) = http_request(&metrics, "GET", "/metrics", &[], "");
    assert_eq!(status, 401, "{response}");
    let bearer = format!("Authorization: Bearer {token}");
    let (status, response) = http_request(&metrics, "GET", "/metrics", &[&bearer], "");
    assert_eq!(status, 200, "{response}");
    assert!(response.contains("\nstompbox_sessions{"), "{response}");
    let (status, err) = server.stop();
    assert!(status.success(), "{err}");
    assert!(!err.contains(token), "the token was logged:\n{err}");
    assert!(err.contains("Prometheus metrics at"), "{err}");

    // Without metrics.addr the line is as before.
    let server = Server::start(&["--http", "127.0.0.1:0"], &[]);
    assert!(
        !server.fields.contains_key("metrics"),
        "{:?}",
        server.fields
    );
    server.stop();
}
