//! The chat page in a real browser: `stompbox serve` as a user starts it,
//! and tests/clients/node/browser-chat.mjs driving Debian's Chromium through
//! playwright-core (two people in room 1, one in room 2, a dropped
//! connection, a reload with history). It leaves a screenshot at
//! target/test-output/browser/chat.png.
//!
//! scripts/install-test-deps.sh installs Chromium and playwright-core.
//! Without them the test is skipped with the reason, except under CI=true,
//! where a missing dependency is a failure.

use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, Instant};

const CHROMIUM: &str = "/usr/bin/chromium";
/// The script bounds itself at 60 s; this only catches a hung process.
const SCRIPT_LIMIT: Duration = Duration::from_secs(90);
const START_LIMIT: Duration = Duration::from_secs(20);

fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Under CI a missing dependency fails the test; elsewhere the test says
/// why it did not run.
fn available(what: &str, present: bool) -> bool {
    if present {
        return true;
    }
    let reason = format!("{what} is missing: run scripts/install-test-deps.sh");
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "CI=true: {reason}"
    );
    eprintln!("skipping the browser test: {reason}");
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

/// `stompbox serve` on a free port; returns it with its HTTP address.
fn serve(log: &Path) -> (Killed, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stompbox"));
    command.args(["serve", "--http", "127.0.0.1:0"]);
    // The developer's own settings must not change the test.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("STOMPBOX_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    let log = std::fs::File::create(log).expect("create the server log");
    command.stdout(Stdio::piped()).stderr(log);
    let mut child = command.spawn().expect("spawn stompbox serve");
    let stdout = child.stdout.take().expect("stdout is piped");
    let server = Killed(child);
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let line = rx
        .recv_timeout(START_LIMIT)
        .expect("stompbox serve printed no listening line in time");
    let http = line
        .strip_prefix("stompbox listening ")
        .and_then(|rest| {
            rest.split_whitespace()
                .find_map(|f| f.strip_prefix("http="))
        })
        .unwrap_or_else(|| panic!("not a listening line: {line:?}"))
        .to_owned();
    (server, http)
}

/// Reads a pipe to its end on a thread of its own, so that neither pipe of
/// the child can fill up and stall it.
fn collect(mut pipe: impl Read + Send + 'static) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut bytes = Vec::new();
        let _ = pipe.read_to_end(&mut bytes);
        String::from_utf8_lossy(&bytes).into_owned()
    })
}

#[test]
fn the_chat_page_works_in_chromium() {
    let root = repo_root();
    let script = root.join("tests/clients/node/browser-chat.mjs");
    let playwright = root.join("tests/clients/node/node_modules/playwright-core");
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !(available("node", node)
        && available(
            &format!("Chromium ({CHROMIUM})"),
            Path::new(CHROMIUM).exists(),
        )
        && available(
            &format!("playwright-core ({})", playwright.display()),
            playwright.exists(),
        ))
    {
        return;
    }

    let out_dir = root.join("target/test-output/browser");
    std::fs::create_dir_all(&out_dir).expect("create the output directory");
    let screenshot = out_dir.join("chat.png");
    // A screenshot left by an earlier run must not pass for this one's.
    let _ = std::fs::remove_file(&screenshot);
    let (_server, http) = serve(&out_dir.join("server.log"));

    let mut child = Command::new("node")
        .arg(&script)
        .arg(format!("http://{http}/"))
        .arg(&out_dir)
        // playwright-core downloads nothing by itself; this makes sure.
        .env("PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD", "1")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run node");
    let out = collect(child.stdout.take().expect("stdout is piped"));
    let err = collect(child.stderr.take().expect("stderr is piped"));
    let mut child = Killed(child);
    let deadline = Instant::now() + SCRIPT_LIMIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("poll node") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            drop(child);
            break None;
        }
        thread::sleep(Duration::from_millis(50));
    };
    let out = out.join().unwrap_or_default();
    let err = err.join().unwrap_or_default();
    println!("{out}");
    let log = std::fs::read_to_string(out_dir.join("server.log")).unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "browser-chat.mjs still running after {SCRIPT_LIMIT:?}\n{out}\n{err}\n--- server log ---\n{log}"
        );
    };
    assert!(
        status.success(),
        "browser-chat.mjs failed ({status}):\n{out}\n{err}\n--- server log ---\n{log}"
    );
    assert!(out.contains("browser-chat: all checks passed"), "{out}");
    let png = std::fs::read(&screenshot).expect("the screenshot exists");
    assert!(
        png.starts_with(b"\x89PNG\r\n\x1a\n"),
        "not a PNG: {}",
        screenshot.display()
    );
}
