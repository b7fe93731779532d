//! `stompbox serve` with TLS, SIGHUP and the start-up lines about
//! authentication, as an operator runs it: the real binary, certificates
//! made by the openssl command, TLS clients from openssl s_client and curl
//! (the stompbox client does not speak wss:// and this crate has no TLS
//! library of its own).
//!
//! Every wait has a deadline, and every child is killed when its handle is
//! dropped, so a broken binary fails a test instead of hanging the run.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

/// Generous for a loaded CI machine; a healthy run takes milliseconds.
const WAIT: Duration = Duration::from_secs(20);

/// A child process whose stdout and stderr are read line by line.
struct Proc {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
    seen: Vec<String>,
}

fn lines(pipe: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// `stompbox serve ARGS` with only the `env` given of STOMPBOX_* (the
/// developer's own must not change the test).
fn serve(args: &[&str], env: &[(&str, &str)]) -> Proc {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_stompbox"));
    cmd.arg("serve").args(args);
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("STOMPBOX_") {
            cmd.env_remove(name);
        }
    }
    cmd.env_remove("RUST_LOG").envs(env.iter().copied());
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn the stompbox binary");
    let out = lines(child.stdout.take().expect("piped"));
    let err = lines(child.stderr.take().expect("piped"));
    Proc {
        child,
        out,
        err,
        seen: Vec::new(),
    }
}

impl Proc {
    /// The first line of stdout (`stderr` false) or stderr containing
    /// `needle`, waiting for it.
    fn line_with(&mut self, stderr: bool, needle: &str) -> String {
        let deadline = Instant::now() + WAIT;
        loop {
            let rx = if stderr { &self.err } else { &self.out };
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "no line with {needle:?} within {WAIT:?}; seen:\n{}",
                    self.seen.join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "output ended before a line with {needle:?}; seen:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    /// Adds the stderr lines that arrived so far to `seen`.
    fn take_stderr(&mut self) {
        self.seen.extend(self.err.try_iter());
    }

    fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .expect("run kill");
        assert!(status.success(), "kill -{name} failed");
    }

    /// SIGTERM, and the exit must be a clean one.
    fn stop(mut self) {
        self.signal("TERM");
        let deadline = Instant::now() + WAIT;
        loop {
            if let Some(status) = self.child.try_wait().expect("poll the child") {
                assert!(status.success(), "serve exited with {status}");
                return;
            }
            assert!(Instant::now() < deadline, "serve did not stop");
            thread::sleep(Duration::from_millis(10));
        }
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

/// `stompbox listening k=v ...` as a map.
fn fields(line: &str) -> HashMap<String, String> {
    line.trim()
        .strip_prefix("stompbox listening ")
        .unwrap_or_else(|| panic!("not a listening line: {line:?}"))
        .split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

fn scratch(name: &str) -> PathBuf {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("serve-tls-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A self-signed P-256 certificate with the subject `CN=<cn>` for localhost
/// and 127.0.0.1, written to `cert` and `key`.
fn make_cert(cn: &str, cert: &Path, key: &Path) {
    make_cert_with(cn, cert, key, &[]);
}

fn make_cert_with(cn: &str, cert: &Path, key: &Path, extra: &[&str]) {
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
        ])
        .args(["-nodes", "-days", "1", "-subj"])
        .arg(format!("/CN={cn}"))
        .args(["-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1"])
        .args(extra)
        .arg("-keyout")
        .arg(key)
        .arg("-out")
        .arg(cert)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .expect("run openssl (needed to make test certificates)");
    assert!(status.success(), "openssl req failed");
}

/// The subject of the certificate a new TLS connection to `addr` gets.
fn served_subject(addr: &str) -> String {
    let output = Command::new("openssl")
        .args(["s_client", "-connect", addr, "-servername", "localhost"])
        .stdin(Stdio::null())
        .stderr(Stdio::null())
        .output()
        .expect("run openssl s_client");
    let text = String::from_utf8_lossy(&output.stdout);
    text.lines()
        .find_map(|l| l.strip_prefix("subject="))
        .map(|s| s.replace(' ', ""))
        .unwrap_or_else(|| panic!("no subject in s_client's output:\n{text}"))
}

/// A long-lived TLS connection through `openssl s_client`: bytes written go
/// to the server, bytes it sends are collected.
struct TlsPipe {
    child: Child,
    stdin: ChildStdin,
    rx: Receiver<Vec<u8>>,
    got: Vec<u8>,
}

impl TlsPipe {
    fn open(addr: &str) -> TlsPipe {
        let mut child = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                addr,
                "-servername",
                "localhost",
                "-quiet",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("run openssl s_client");
        let stdin = child.stdin.take().expect("piped");
        let mut stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            let mut buf = [0; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                    break;
                }
            }
        });
        TlsPipe {
            child,
            stdin,
            rx,
            got: Vec::new(),
        }
    }

    fn send(&mut self, bytes: &[u8]) {
        self.stdin.write_all(bytes).expect("write to s_client");
        self.stdin.flush().expect("flush");
    }

    /// Waits until what the server sent contains `needle`.
    fn expect(&mut self, needle: &str) {
        let deadline = Instant::now() + WAIT;
        while !String::from_utf8_lossy(&self.got).contains(needle) {
            match self
                .rx
                .recv_timeout(deadline.saturating_duration_since(Instant::now()))
            {
                Ok(bytes) => self.got.extend(bytes),
                Err(e) => panic!(
                    "no {needle:?} from the server ({e:?}); got {:?}",
                    String::from_utf8_lossy(&self.got)
                ),
            }
        }
    }
}

impl Drop for TlsPipe {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One client-to-server WebSocket text frame (masked, as a client must).
fn ws_frame(payload: &[u8]) -> Vec<u8> {
    let mask = [0x37, 0xfa, 0x21, 0x3d];
    let mut frame = vec![0x81];
    match payload.len() {
        n @ 0..=125 => frame.push(0x80 | n as u8),
        n => {
            frame.push(0x80 | 126);
            frame.extend(u16::try_from(n).expect("small frame").to_be_bytes());
        }
    }
    frame.extend(mask);
    frame.extend(payload.iter().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    frame
}

const UPGRADE: &str = "GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\n\
    Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
    Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: v12.stomp\r\n\r\n";
const CONNECT: &[u8] = b"CONNECT\naccept-version:1.2\nhost:localhost\nheart-beat:0,0\n\n\0";

#[test]
fn tls_serves_https_and_sighup_swaps_the_certificate_for_new_connections() {
    let dir = scratch("reload");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    make_cert("stompbox-one", &cert, &key);
    let cert_arg = format!("server.tls_cert_file={}", cert.display());
    let key_arg = format!("server.tls_key_file={}", key.display());
    let mut server = serve(
        &[
            "--http",
            "127.0.0.1:0",
            "--tcp",
            "127.0.0.1:0",
            "--set",
            &cert_arg,
            "--set",
            &key_arg,
        ],
        &[],
    );
    let line = server.line_with(false, "stompbox listening");
    let f = fields(&line);
    let addr = f["http"].clone();
    // http= stays for the scripts that read the address from it.
    assert_eq!(f.get("https"), Some(&addr), "{line}");
    assert_eq!(f["ws"], format!("wss://{addr}/ws"), "{line}");

    // HTTPS with a client that checks the certificate against it.
    let page = Command::new("curl")
        .args(["-sS", "--max-time", "10", "--cacert"])
        .arg(&cert)
        .arg(format!("https://{addr}/"))
        .output()
        .expect("run curl");
    assert!(
        page.status.success(),
        "curl: {}",
        String::from_utf8_lossy(&page.stderr)
    );
    assert!(String::from_utf8_lossy(&page.stdout).contains("<html"));
    assert_eq!(served_subject(&addr), "CN=stompbox-one");

    // STOMP over TLS on the TCP listener too.
    let mut tcp = TlsPipe::open(&f["tcp"]);
    tcp.send(CONNECT);
    tcp.expect("CONNECTED");

    // A WebSocket session that must outlive the certificate it began with.
    let mut ws = TlsPipe::open(&addr);
    ws.send(UPGRADE.as_bytes());
    ws.expect("101 Switching Protocols");
    ws.send(&ws_frame(CONNECT));
    ws.expect("CONNECTED");

    // A renewal replaces both files, then SIGHUP.
    let (new_cert, new_key) = (dir.join("new-cert.pem"), dir.join("new-key.pem"));
    make_cert("stompbox-two", &new_cert, &new_key);
    std::fs::rename(&new_key, &key).expect("replace the key");
    std::fs::rename(&new_cert, &cert).expect("replace the certificate");
    server.signal("HUP");
    server.line_with(true, "TLS certificate reloaded");
    assert_eq!(served_subject(&addr), "CN=stompbox-two");

    // The old session goes on.
    ws.send(&ws_frame(
        b"SUBSCRIBE\nid:0\ndestination:/topic/x\nreceipt:after-reload\n\n\0",
    ));
    ws.expect("receipt-id:after-reload");

    // A certificate that cannot be used is refused; the one in use stays.
    std::fs::write(&cert, "not a certificate\n").expect("break the certificate");
    server.signal("HUP");
    let refused = server.line_with(true, "cannot reload the TLS certificate");
    assert!(refused.contains("cert.pem"), "{refused}");
    assert_eq!(served_subject(&addr), "CN=stompbox-two");

    drop(ws);
    drop(tcp);
    server.stop();
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn without_auth_start_up_warns_and_sighup_has_nothing_to_reload() {
    let mut server = serve(&["--http", "127.0.0.1:0"], &[]);
    let warning = server.line_with(true, "authentication is off");
    assert!(
        warning.contains("WARN")
            && warning.contains("every session is anonymous")
            && warning.contains("[auth]"),
        "{warning}"
    );
    let line = server.line_with(false, "stompbox listening");
    let f = fields(&line);
    assert!(f["ws"].starts_with("ws://"), "{line}");
    assert!(!f.contains_key("https"), "{line}");
    // SIGHUP no longer terminates: it is logged and the server goes on.
    server.signal("HUP");
    server.line_with(true, "nothing to reload");
    server.stop();
}

#[test]
fn with_an_auth_method_start_up_names_it_instead() {
    let secret = "jwt-s3cret-0123456789abcdefghijklmnop";
    let mut server = serve(
        &["--http", "127.0.0.1:0", "--set", "auth.anonymous=true"],
        &[("STOMPBOX_AUTH_JWT_SECRET", secret)],
    );
    let line = server.line_with(true, "authentication: ");
    assert!(
        line.contains("INFO")
            && line.contains("JSON Web Tokens")
            && line.contains("anonymous session")
            && line.contains("access rules: open"),
        "{line}"
    );
    server.line_with(false, "stompbox listening");
    server.take_stderr();
    let all = server.seen.join("\n");
    assert!(!all.contains("authentication is off"), "{all}");
    assert!(!all.contains(secret), "{all}");
    server.stop();
}

#[test]
fn check_prints_the_auth_settings_without_their_secrets() {
    let secret = "jwt-s3cret-0123456789abcdefghijklmnop";
    let run = |extra: &[&str]| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stompbox"));
        cmd.args(["serve", "--check"]).args(extra);
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("STOMPBOX_") {
                cmd.env_remove(name);
            }
        }
        let output = cmd
            .env("STOMPBOX_AUTH_JWT_SECRET", secret)
            .output()
            .expect("run stompbox serve --check");
        assert!(
            output.status.success(),
            "{}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    let open = run(&[]);
    for expected in [
        "[auth]\n",
        "jwt_secret = \"(set; not shown)\"\n",
        "jwt_user_claim = \"sub\"\n",
        "anonymous = false\n",
        "connections_per_address = 1000\n",
        "unauthenticated_frame_bytes = 16384\n",
        "allowed_origins = []\n",
    ] {
        assert!(open.contains(expected), "no {expected:?} in\n{open}");
    }
    assert!(!open.contains(secret), "{open}");
    // Open access: no rules key at all, so the output loads back as open.
    assert!(!open.contains("rules"), "{open}");
    let closed = run(&[
        "--set",
        "auth.rules=[{ who = \"authenticated\", subscribe = [\"/topic/**\"] }]",
    ]);
    assert!(
        closed.contains("[[auth.rules]]\nwho = \"authenticated\"\n"),
        "{closed}"
    );
}

#[test]
fn send_logs_in_over_wss_and_a_wrong_passcode_is_refused() {
    let dir = scratch("send");
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    // Not a CA: rustls, unlike OpenSSL, will not take a CA certificate as
    // the server's own.
    make_cert_with(
        "stompbox-send",
        &cert,
        &key,
        &["-addext", "basicConstraints=critical,CA:FALSE"],
    );
    let hash = stompbox::auth::hash_password("correct horse").expect("hash");
    let users = format!("auth.users=[{{ name = \"alice\", password_hash = \"{hash}\" }}]");
    let cert_arg = format!("server.tls_cert_file={}", cert.display());
    let key_arg = format!("server.tls_key_file={}", key.display());
    let mut server = serve(
        &[
            "--http",
            "127.0.0.1:0",
            "--set",
            &cert_arg,
            "--set",
            &key_arg,
            "--set",
            &users,
            "--set",
            "auth.failure_delay_ms=0",
        ],
        &[],
    );
    let line = server.line_with(false, "stompbox listening");
    let addr = fields(&line)["http"].clone();
    let port = addr.rsplit_once(':').expect("port").1.to_owned();
    let send = |passcode: &str| {
        Command::new(env!("CARGO_BIN_EXE_stompbox"))
            .args([
                "send",
                "--url",
                &format!("wss://localhost:{port}/ws"),
                "--ca-file",
            ])
            .arg(&cert)
            .args(["--login", "alice", "--destination", "/topic/x", "hello"])
            // The passcode from the environment, not the process list.
            .env("STOMP_PASSCODE", passcode)
            .output()
            .expect("run stompbox send")
    };
    let sent = send("correct horse");
    assert!(
        sent.status.success(),
        "{}",
        String::from_utf8_lossy(&sent.stderr)
    );
    let refused = send("wrong");
    assert!(!refused.status.success());
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(
        stderr.contains("access refused: wrong login or passcode"),
        "{stderr}"
    );
    server.stop();
}
