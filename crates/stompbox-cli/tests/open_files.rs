//! `stompbox serve` under a low open-file limit: it raises the soft limit to
//! the hard one, lowers `max_connections` to what fits and says so, and the
//! connection past it gets a clean refusal instead of an unanswered socket.
//!
//! The limit is set by `sh`'s `ulimit` before it execs the binary, as a
//! service manager would set it.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread;
use std::time::{Duration, Instant};

/// Generous for a loaded CI machine; a healthy run takes milliseconds.
const WAIT: Duration = Duration::from_secs(20);

/// Kills the server however the test ends.
struct Serve(Child);

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
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

/// The first line containing `needle`, waiting for it; panics with what was
/// seen when it does not come.
fn line_with(rx: &Receiver<String>, needle: &str) -> String {
    let deadline = Instant::now() + WAIT;
    let mut seen = Vec::new();
    loop {
        match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
            Ok(line) if line.contains(needle) => return line,
            Ok(line) => seen.push(line),
            Err(e) => panic!("no line with {needle:?} ({e}); seen:\n{}", seen.join("\n")),
        }
    }
}

/// `key=value` from a log or listening line.
fn field<'l>(line: &'l str, key: &str) -> &'l str {
    line.split_whitespace()
        .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('='))
        .unwrap_or_else(|| panic!("no {key}= in {line:?}"))
}

/// Reads what the server answers on `stream` until it closes.
fn answer(stream: &mut TcpStream) -> String {
    stream
        .set_read_timeout(Some(WAIT))
        .expect("set read timeout");
    let mut text = Vec::new();
    match stream.read_to_end(&mut text) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "no answer and no close within {WAIT:?} ({e}): {:?}",
            String::from_utf8_lossy(&text)
        ),
    }
    String::from_utf8_lossy(&text).into_owned()
}

#[test]
fn under_a_low_open_file_limit_connections_are_capped_and_the_next_one_refused() {
    let child = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -Sn 80 && ulimit -Hn 100 && exec "$@""#)
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_stompbox"))
        .args(["serve", "--http", "127.0.0.1:0", "--tcp", "127.0.0.1:0"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn sh");
    let mut serve = Serve(child);
    let out = lines(serve.0.stdout.take().expect("stdout"));
    let err = lines(serve.0.stderr.take().expect("stderr"));

    let raised = line_with(&err, "open-file limit raised");
    assert_eq!(
        (field(&raised, "from"), field(&raised, "to")),
        ("80", "100")
    );
    // 100 descriptors, 64 kept for the rest, one per client.
    let limit = line_with(&err, "connection limit");
    assert_eq!(field(&limit, "max_connections"), "36", "{limit}");
    let listening = line_with(&out, "stompbox listening");
    let http = field(&listening, "http").to_owned();
    let tcp = field(&listening, "tcp").to_owned();

    // Every place taken by a socket that has not said anything yet. All on
    // one port: its accept loop takes them in order, so the next one there
    // is accepted after them.
    let held: Vec<TcpStream> = (0..36)
        .map(|_| TcpStream::connect(&tcp).expect("connect"))
        .collect();
    // Refused with an answer, not left hanging…
    let mut stomp = TcpStream::connect(&tcp).expect("connect");
    stomp
        .write_all(b"CONNECT\naccept-version:1.2\n\n\0")
        .expect("write");
    let refusal = answer(&mut stomp);
    assert!(
        refusal.starts_with("ERROR\n") && refusal.contains("connection limit"),
        "{refusal:?}"
    );
    // …and so is a client of the HTTP port, now that all places are taken.
    let mut web = TcpStream::connect(&http).expect("connect");
    web.write_all(b"GET /ws HTTP/1.1\r\nHost: x\r\n\r\n")
        .expect("write");
    let refusal = answer(&mut web);
    assert!(
        refusal.starts_with("HTTP/1.1 503") && refusal.contains("connection limit"),
        "{refusal:?}"
    );
    drop(held);
}

#[test]
fn check_shows_the_connection_limit_the_open_file_limit_allows() {
    let output = Command::new("sh")
        .arg("-c")
        .arg(r#"ulimit -Sn 80 && ulimit -Hn 100 && exec "$@""#)
        .arg("sh")
        .arg(env!("CARGO_BIN_EXE_stompbox"))
        .args(["serve", "--check", "--set", "server.max_connections=1000"])
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .output()
        .expect("run stompbox serve --check");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(
        text.lines().any(|l| l.trim() == "max_connections = 36"),
        "{text}"
    );
}
