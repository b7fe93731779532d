//! `--spawn`: a `stompbox serve` (or `stompbox bench serve-echo`) child
//! process to measure.

use super::report::{Json, random_u64};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::oneshot;

/// How long a starting server may take to print its listening line.
const START_TIMEOUT: Duration = Duration::from_secs(15);
/// How long a relaying server may take, after its listening line, to print
/// `stompbox broker available` (its system connection to the broker is up).
const BROKER_TIMEOUT: Duration = Duration::from_secs(30);
/// What a relaying server prints on stdout once its broker can be reached.
const BROKER_AVAILABLE_LINE: &str = "stompbox broker available";
/// Lines of the server's stderr kept for the report.
const TAIL_LINES: usize = 12;

/// What the spawned server wrote to stderr: its warnings (slow consumers,
/// refused connections) explain bad figures.
#[derive(Debug, Default)]
pub(crate) struct ServerLog {
    lines: AtomicU64,
    warnings: AtomicU64,
    /// Sessions the server cut off as slow consumers (its
    /// `slow consumer disconnected` warning).
    slow_consumers: AtomicU64,
    tail: Mutex<VecDeque<String>>,
}

impl ServerLog {
    fn push(&self, line: String) {
        self.lines.fetch_add(1, Ordering::Relaxed);
        if line.contains("WARN") || line.contains("ERROR") {
            self.warnings.fetch_add(1, Ordering::Relaxed);
        }
        if line.contains("slow consumer disconnected") {
            self.slow_consumers.fetch_add(1, Ordering::Relaxed);
        }
        let mut tail = self.tail.lock().unwrap_or_else(|e| e.into_inner());
        if tail.len() == TAIL_LINES {
            tail.pop_front();
        }
        tail.push_back(line);
    }

    fn tail(&self) -> Vec<String> {
        self.tail
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub(crate) fn warnings(&self) -> u64 {
        self.warnings.load(Ordering::Relaxed)
    }

    pub(crate) fn slow_consumers(&self) -> u64 {
        self.slow_consumers.load(Ordering::Relaxed)
    }

    pub(crate) fn to_json(&self) -> Json {
        Json::obj()
            .with(
                "stderr_lines",
                Json::uint(self.lines.load(Ordering::Relaxed)),
            )
            .with("warnings", Json::uint(self.warnings()))
            .with("slow_consumer_drops", Json::uint(self.slow_consumers()))
            .with(
                "tail",
                Json::Arr(self.tail().into_iter().map(Json::Str).collect()),
            )
    }

    pub(crate) fn print_tail(&self) {
        let tail = self.tail();
        if tail.is_empty() {
            return;
        }
        println!(
            "server stderr: {} lines, {} warnings/errors ({} slow-consumer drops); last {}:",
            self.lines.load(Ordering::Relaxed),
            self.warnings(),
            self.slow_consumers(),
            tail.len()
        );
        for line in tail {
            println!("  | {line}");
        }
    }
}

/// Flags that turn off `serve`'s per-address limits: every connection of a
/// benchmark comes from 127.0.0.1, so thousands of them would otherwise be
/// refused (limits.connections_per_address) or slowed to the CONNECT rate
/// (limits.connects_per_address_per_sec), and the figures would measure
/// the throttle. Put before the --server-arg arguments, which can set them
/// again. `bench serve-echo` turns them off in its own configuration.
fn unthrottled(command: &[&str]) -> &'static [&'static str] {
    if command == ["serve"] {
        &[
            "--set",
            "limits.connections_per_address=0",
            "--set",
            "limits.connects_per_address_per_sec=0",
        ]
    } else {
        &[]
    }
}

/// A configuration file for spawned servers (`--config FILE`), removed when
/// dropped. It may hold a secret (a JWT key), so only its owner may read it.
#[derive(Debug)]
pub(crate) struct ConfigFile {
    path: PathBuf,
}

impl ConfigFile {
    /// Writes `text` to a new file in the temporary directory; `what`
    /// goes into its name.
    pub(crate) fn write(what: &str, text: &str) -> Result<ConfigFile, String> {
        let path = std::env::temp_dir().join(format!(
            "stompbox-bench-{}-{what}-{:016x}.toml",
            std::process::id(),
            random_u64()
        ));
        if path.to_str().is_none() {
            return Err(format!(
                "the temporary directory's path is not UTF-8: {}",
                path.display()
            ));
        }
        let mut options = std::fs::OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let written = options
            .open(&path)
            .and_then(|mut file| file.write_all(text.as_bytes()));
        // From here on, dropping the value removes whatever was created.
        let file = ConfigFile { path };
        written.map_err(|e| format!("cannot write {}: {e}", file.path.display()))?;
        Ok(file)
    }

    /// `--config FILE`, for [`super::Spawn::args`].
    pub(crate) fn args(&self) -> Vec<String> {
        vec![
            "--config".to_owned(),
            self.path.to_string_lossy().into_owned(),
        ]
    }
}

impl Drop for ConfigFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
    }
}

/// `value` as a TOML string (quoted and escaped).
pub(crate) fn toml_str(value: &str) -> String {
    toml::Value::String(value.to_owned()).to_string()
}

/// A running child server; killed when stopped or dropped, so an early
/// return never leaves it behind.
#[derive(Debug)]
pub(crate) struct SpawnedServer {
    child: Child,
    ws_url: String,
    log: Arc<ServerLog>,
}

impl SpawnedServer {
    /// Starts `program command... --http 127.0.0.1:0 extra...` (this
    /// executable when `program` is `None`; `serve` also gets the flags of
    /// [`unthrottled`]) and waits for its listening
    /// line; with `wait_broker`, also for its `stompbox broker available`
    /// line (a relaying server refuses CONNECTs until then).
    pub(crate) async fn start(
        program: Option<&Path>,
        command: &[&str],
        extra: &[String],
        wait_broker: bool,
    ) -> Result<SpawnedServer, String> {
        let program = match program {
            Some(path) => path.to_path_buf(),
            None => std::env::current_exe()
                .map_err(|e| format!("--spawn: cannot find this executable: {e}"))?,
        };
        let mut child = Command::new(&program)
            .args(command)
            .args(["--http", "127.0.0.1:0"])
            .args(unthrottled(command))
            .args(extra)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("--spawn: cannot start {}: {e}", program.display()))?;
        let log = Arc::new(ServerLog::default());
        let (found, listening) = oneshot::channel();
        let (up, available) = oneshot::channel();
        // Blocking reader threads, because the pipes must be drained for the
        // server's whole life (a full pipe would stall its logging).
        if let Some(stdout) = child.stdout.take() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                let mut found = Some(found);
                let mut up = Some(up);
                for line in BufReader::new(stdout).lines() {
                    let Ok(line) = line else { break };
                    if found.is_some()
                        && let Some(url) = parse_listening(&line)
                    {
                        if let Some(found) = found.take() {
                            let _ = found.send(url);
                        }
                        continue;
                    }
                    if line.trim() == BROKER_AVAILABLE_LINE
                        && let Some(up) = up.take()
                    {
                        let _ = up.send(());
                    }
                    log.push(line);
                }
            });
        }
        if let Some(stderr) = child.stderr.take() {
            let log = Arc::clone(&log);
            std::thread::spawn(move || {
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    log.push(line);
                }
            });
        }
        let mut server = SpawnedServer {
            child,
            ws_url: String::new(),
            log,
        };
        match tokio::time::timeout(START_TIMEOUT, listening).await {
            Ok(Ok(url)) => server.ws_url = url,
            // The sender is gone: stdout closed, the server exited.
            Ok(Err(_)) => return Err(server.exited(&program, "before listening")),
            Err(_) => {
                return Err(format!(
                    "--spawn: {} printed no 'stompbox listening ... ws=URL' line within {} s: {}",
                    program.display(),
                    START_TIMEOUT.as_secs(),
                    server.log.tail().join(" / ")
                ));
            }
        }
        if wait_broker {
            match tokio::time::timeout(BROKER_TIMEOUT, available).await {
                Ok(Ok(())) => {}
                Ok(Err(_)) => {
                    return Err(server.exited(&program, "before its broker was available"));
                }
                Err(_) => {
                    return Err(format!(
                        "--spawn: {} printed no '{BROKER_AVAILABLE_LINE}' line within {} s \
                         (is the broker it relays to running?): {}",
                        program.display(),
                        BROKER_TIMEOUT.as_secs(),
                        server.log.tail().join(" / ")
                    ));
                }
            }
        }
        Ok(server)
    }

    /// Describes a server whose stdout closed early.
    fn exited(&mut self, program: &Path, when: &str) -> String {
        let status = self
            .child
            .wait()
            .map_or_else(|e| e.to_string(), |s| s.to_string());
        format!(
            "--spawn: {} exited ({status}) {when}: {}",
            program.display(),
            self.log.tail().join(" / ")
        )
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    pub(crate) fn ws_url(&self) -> &str {
        &self.ws_url
    }

    pub(crate) fn log(&self) -> Arc<ServerLog> {
        Arc::clone(&self.log)
    }

    /// Kills the server and reaps it.
    pub(crate) fn stop(self) {
        drop(self);
    }
}

impl Drop for SpawnedServer {
    fn drop(&mut self) {
        // SIGKILL: a bench server has nothing worth a graceful shutdown, and
        // waiting for one would only slow the run down.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The WebSocket URL from `stompbox listening http=ADDR ws=URL tcp=...`;
/// when `ws=` is missing, `ws://ADDR/ws`.
fn parse_listening(line: &str) -> Option<String> {
    let rest = line.trim().strip_prefix("stompbox listening")?;
    let field = |name: &str| {
        rest.split_whitespace()
            .find_map(|token| token.strip_prefix(name))
            .filter(|value| !value.is_empty() && *value != "-")
    };
    if let Some(ws) = field("ws=") {
        return Some(ws.to_owned());
    }
    field("http=").map(|http| format!("ws://{http}/ws"))
}

#[cfg(test)]
mod tests {
    use super::{ConfigFile, parse_listening, toml_str, unthrottled};

    #[test]
    fn config_files_are_private_and_removed_when_dropped() {
        let file = ConfigFile::write("test", "[auth]\njwt_secret = \"x\"\n").expect("write");
        let args = file.args();
        assert_eq!(args[0], "--config");
        let path = std::path::PathBuf::from(&args[1]);
        assert_eq!(
            std::fs::read_to_string(&path).expect("read"),
            "[auth]\njwt_secret = \"x\"\n"
        );
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path)
                .expect("metadata")
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        drop(file);
        assert!(!path.exists());
    }

    #[test]
    fn toml_strings_round_trip() {
        for value in [
            "a\"b$c",
            "x\\y\n",
            "$argon2id$v=19$m=19456,t=2,p=1$abc+/=",
            "it's",
        ] {
            let table: toml::Table = format!("k = {}", toml_str(value)).parse().expect("toml");
            assert_eq!(table["k"].as_str(), Some(value));
        }
    }

    #[test]
    fn only_serve_gets_the_per_address_limits_turned_off() {
        let flags = unthrottled(&["serve"]).join(" ");
        assert_eq!(
            flags,
            "--set limits.connections_per_address=0 --set limits.connects_per_address_per_sec=0"
        );
        // serve-echo has no such flags; it turns the limits off itself.
        assert!(unthrottled(&["bench", "serve-echo"]).is_empty());
    }

    #[test]
    fn listening_line() {
        assert_eq!(
            parse_listening(
                "stompbox listening http=127.0.0.1:4000 ws=ws://127.0.0.1:4000/ws tcp=-"
            )
            .as_deref(),
            Some("ws://127.0.0.1:4000/ws")
        );
        assert_eq!(
            parse_listening("stompbox listening http=127.0.0.1:4000").as_deref(),
            Some("ws://127.0.0.1:4000/ws")
        );
        assert_eq!(parse_listening("2025 INFO starting"), None);
    }
}
