//! The chat page in a real browser: `stompbox serve` as a user starts it,
//! and tests/clients/node/browser-chat.mjs driving Debian's Chromium through
//! playwright-core. Without accounts: nicknames (shown as unverified), two
//! people in room 1, one in room 2, a dropped connection, a reload with
//! history; screenshot target/test-output/browser/chat.png. Then presence
//! and rooms: each sees the other online, a room opened by name appears in
//! the others' room lists, a dropped connection and a Leave take people off
//! the list, links are links, "No messages … yet." goes with the first
//! message (chat-presence.png). With password
//! users from a config file: a refused login (chat-login-refused.png), two
//! verified users chatting, a dropped connection logged in again, a logout
//! (chat-login.png). The admin page (tests/clients/node/admin.mjs), with
//! an admin token from STOMPBOX_ADMIN_TOKEN: refused without it, sessions
//! appearing and leaving live, Disconnect and Purge from the page
//! (admin-login.png, admin.png, admin-purged.png).
//!
//! scripts/install-test-deps.sh installs Chromium and playwright-core.
//! Without them the test is skipped with the reason, except under CI=true,
//! where a missing dependency is a failure.

use std::io::{BufRead, BufReader, Read, Write};
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

/// `stompbox serve` on a free port, with the settings of `config` if given
/// and the environment variables `env`; returns it with its HTTP address.
fn serve(log: &Path, config: Option<&Path>, env: &[(&str, &str)]) -> (Killed, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_stompbox"));
    command.args(["serve", "--http", "127.0.0.1:0"]);
    if let Some(config) = config {
        command.arg("--config").arg(config);
    }
    // The developer's own settings must not change the test.
    for (name, _) in std::env::vars_os() {
        if name.to_string_lossy().starts_with("STOMPBOX_") {
            command.env_remove(name);
        }
    }
    command.env_remove("RUST_LOG");
    command.envs(env.iter().copied());
    let log_file = std::fs::File::create(log).expect("create the server log");
    command.stdout(Stdio::piped()).stderr(log_file);
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
    let line = rx.recv_timeout(START_LIMIT).unwrap_or_else(|e| {
        // Most likely it refused its settings and said why in the log.
        let log = std::fs::read_to_string(log).unwrap_or_default();
        panic!("stompbox serve printed no listening line ({e}):\n{log}")
    });
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

/// Whether node, Chromium and playwright-core are there; if not, the test
/// is skipped with the reason (or fails, under CI).
fn browser_available() -> bool {
    let playwright = repo_root().join("tests/clients/node/node_modules/playwright-core");
    let node = Command::new("node")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success());
    available("node", node)
        && available(
            &format!("Chromium ({CHROMIUM})"),
            Path::new(CHROMIUM).exists(),
        )
        && available(
            &format!("playwright-core ({})", playwright.display()),
            playwright.exists(),
        )
}

/// Where the screenshots and server logs go.
fn output_dir() -> PathBuf {
    let out_dir = repo_root().join("target/test-output/browser");
    std::fs::create_dir_all(&out_dir).expect("create the output directory");
    out_dir
}

/// Runs `script` (browser-chat.mjs, admin.mjs) against the server at
/// `http` with `args` after the URL and output directory, and checks it
/// printed `passed` and left the `screenshots` (in `out_dir`) as PNGs.
fn run_scenario(
    script: &str,
    http: &str,
    out_dir: &Path,
    log: &Path,
    args: &[&str],
    passed: &str,
    screenshots: &[&str],
) {
    // Screenshots left by an earlier run must not pass for this one's.
    for name in screenshots {
        let _ = std::fs::remove_file(out_dir.join(name));
    }
    let script = repo_root().join("tests/clients/node").join(script);
    let mut child = Command::new("node")
        .arg(&script)
        .arg(format!("http://{http}/"))
        .arg(out_dir)
        .args(args)
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
    let log = std::fs::read_to_string(log).unwrap_or_default();
    let Some(status) = status else {
        panic!(
            "{} still running after {SCRIPT_LIMIT:?}\n{out}\n{err}\n--- server log ---\n{log}",
            script.display()
        );
    };
    assert!(
        status.success(),
        "{} failed ({status}):\n{out}\n{err}\n--- server log ---\n{log}",
        script.display()
    );
    assert!(out.contains(passed), "{out}");
    for name in screenshots {
        let screenshot = out_dir.join(name);
        let png = std::fs::read(&screenshot)
            .unwrap_or_else(|e| panic!("the screenshot {}: {e}", screenshot.display()));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "not a PNG: {}",
            screenshot.display()
        );
    }
}

#[test]
fn the_chat_page_works_in_chromium() {
    if !browser_available() {
        return;
    }
    let out_dir = output_dir();
    let log = out_dir.join("server.log");
    let (_server, http) = serve(&log, None, &[]);
    run_scenario(
        "browser-chat.mjs",
        &http,
        &out_dir,
        &log,
        &[],
        "browser-chat: all checks passed",
        &["chat.png", "chat-presence.png"],
    );
}

/// The argon2id hash of `password`, as `stompbox hash-password` prints it
/// for a script: the password on stdin, never on the command line.
fn hash_password(password: &str) -> String {
    let mut child = Command::new(env!("CARGO_BIN_EXE_stompbox"))
        .arg("hash-password")
        .env_remove("RUST_LOG")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn stompbox hash-password");
    let mut stdin = child.stdin.take().expect("stdin is piped");
    writeln!(stdin, "{password}").expect("write the password");
    // Closed: the end of the input.
    drop(stdin);
    let out = collect(child.stdout.take().expect("stdout is piped"));
    let err = collect(child.stderr.take().expect("stderr is piped"));
    let mut child = Killed(child);
    let deadline = Instant::now() + START_LIMIT;
    let status = loop {
        if let Some(status) = child.0.try_wait().expect("poll hash-password") {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "hash-password still running after {START_LIMIT:?}"
        );
        thread::sleep(Duration::from_millis(20));
    };
    let (out, err) = (
        out.join().unwrap_or_default(),
        err.join().unwrap_or_default(),
    );
    assert!(status.success(), "hash-password failed ({status}): {err}");
    let hash = out.trim().to_owned();
    assert!(hash.starts_with("$argon2id$"), "not a PHC string: {out:?}");
    hash
}

/// A directory of this test's own, removed when it ends.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("stompbox-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("create a temporary directory");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The password users of the accounts scenario, as (name, password). The
/// passwords have a space and a colon, which must survive the form and the
/// CONNECT frame.
const USERS: [(&str, &str); 2] = [("alice", "correct horse"), ("bob", "battery: staple")];

#[test]
fn the_chat_page_logs_users_in_in_chromium() {
    if !browser_available() {
        return;
    }
    let dir = TempDir::new("browser-accounts");
    let users: Vec<String> = USERS
        .iter()
        .map(|(name, password)| {
            format!(
                "  {{ name = \"{name}\", password_hash = \"{}\", roles = [] }},",
                hash_password(password)
            )
        })
        .collect();
    // No `anonymous` key: guests are refused by default, and the scenario
    // shows that refusal on the page.
    let config = dir.0.join("stompbox.toml");
    std::fs::write(
        &config,
        format!("[auth]\nusers = [\n{}\n]\n", users.join("\n")),
    )
    .expect("write the config file");

    let out_dir = output_dir();
    let log = out_dir.join("server-accounts.log");
    let (_server, http) = serve(&log, Some(&config), &[]);
    let accounts: Vec<String> = USERS
        .iter()
        .map(|(name, password)| format!("{name}:{password}"))
        .collect();
    let mut args = vec!["accounts"];
    args.extend(accounts.iter().map(String::as_str));
    run_scenario(
        "browser-chat.mjs",
        &http,
        &out_dir,
        &log,
        &args,
        "browser-chat (accounts): all checks passed",
        &["chat-login-refused.png", "chat-login.png"],
    );
}

#[test]
fn the_admin_page_works_in_chromium() {
    if !browser_available() {
        return;
    }
    let token = "browser-admin-token-0123456789abcdef";
    let out_dir = output_dir();
    let log = out_dir.join("server-admin.log");
    let (_server, http) = serve(&log, None, &[("STOMPBOX_ADMIN_TOKEN", token)]);
    run_scenario(
        "admin.mjs",
        &http,
        &out_dir,
        &log,
        &[token],
        "admin: all checks passed",
        &["admin-login.png", "admin.png", "admin-purged.png"],
    );
}
