//! Real third-party clients against the server: @stomp/stompjs in Node over
//! WebSocket, stomp.py over TCP. `scripts/install-test-deps.sh` installs
//! them; the test command runs it first.

use crate::support::*;
use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

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

async fn run_script(mut command: tokio::process::Command) {
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
    assert!(
        stdout.lines().filter(|l| l.starts_with("ok ")).count() >= 4,
        "{stdout}"
    );
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
