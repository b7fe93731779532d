//! Two `stompbox serve` processes relaying to one RabbitMQ share one
//! message space: the chat demo's replies, plain topic messages and user
//! destinations reach clients of both instances, whichever instance the
//! sender is connected to. The test runs once per relay mode: the shared
//! pool (the default) and a broker connection per client session.
//!
//! Needs RabbitMQ's STOMP plugin on 127.0.0.1:61613 (guest/guest;
//! `scripts/services.sh` starts it). Without it the test is skipped, except
//! under `CI=true`, where it fails. Every wait is bounded, and the servers
//! are killed when the test ends, however it ends.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpStream};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};
use stompbox::client::Client;
use stompbox::codec::{Command as Stomp, Frame};
use tokio::sync::mpsc;

/// The longest any single wait may take.
const WAIT: Duration = Duration::from_secs(20);
/// The longest the whole test may take.
const WHOLE: Duration = Duration::from_secs(90);
/// RabbitMQ's STOMP plugin.
const BROKER: &str = "127.0.0.1:61613";
/// What `stompbox serve` prints once the relay's system connection is up.
const AVAILABLE: &str = "stompbox broker available";

fn rabbitmq_up() -> bool {
    let addr: SocketAddr = BROKER.parse().expect("BROKER is an IP:port");
    if TcpStream::connect_timeout(&addr, Duration::from_secs(2)).is_ok() {
        return true;
    }
    let reason = format!(
        "RabbitMQ's STOMP plugin is not answering on {BROKER} (scripts/services.sh starts it)"
    );
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{reason}");
    eprintln!("skipping: {reason}");
    false
}

/// A name no earlier run used: RabbitMQ outlives test runs.
fn unique() -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or_default();
    format!("{:x}-{nanos:x}", std::process::id())
}

/// The users of both instances (alice and bob, passcode `<name>-pw`), as the
/// inline TOML value of `auth.users`: both instances verify the same users,
/// so a user destination names the same person on each.
fn users() -> String {
    let entry = |name: &str| {
        let hash = stompbox::auth::hash_password(&format!("{name}-pw")).expect("hash");
        format!("{{ name = \"{name}\", password_hash = \"{hash}\" }}")
    };
    format!("[{}, {}]", entry("alice"), entry("bob"))
}

/// How an instance is told to relay: both ways must work.
#[derive(Debug, Clone, Copy)]
enum Via {
    Flags,
    Env,
}

/// A running `stompbox serve` with the relay.
struct Instance {
    name: &'static str,
    child: Child,
    /// Its stdout, line by line.
    stdout: mpsc::UnboundedReceiver<String>,
    /// Everything it printed (stdout and stderr), for failure messages.
    log: Arc<Mutex<Vec<String>>>,
    ws: String,
}

fn pipe_lines(
    pipe: impl Read + Send + 'static,
    log: Arc<Mutex<Vec<String>>>,
    lines: Option<mpsc::UnboundedSender<String>>,
) {
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines() {
            let Ok(line) = line else { break };
            log.lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(line.clone());
            if let Some(lines) = &lines {
                let _ = lines.send(line);
            }
        }
    });
}

impl Instance {
    /// Starts an instance and waits until it listens and its broker is
    /// available, so that a CONNECT is not refused.
    async fn start(name: &'static str, via: Via, mode: &str, users: &str) -> Instance {
        let mut command = Command::new(env!("CARGO_BIN_EXE_stompbox"));
        command.args(["serve", "--http", "127.0.0.1:0"]);
        // The developer's own STOMPBOX_* or RUST_LOG must not change the test.
        for (var, _) in std::env::vars_os() {
            if var.to_string_lossy().starts_with("STOMPBOX_") {
                command.env_remove(var);
            }
        }
        command.env_remove("RUST_LOG");
        match via {
            Via::Flags => {
                command.args([
                    "--set",
                    "broker.kind=relay",
                    "--set",
                    &format!("relay.addresses={BROKER}"),
                    "--set",
                    &format!("relay.mode={mode}"),
                    "--set",
                    &format!("auth.users={users}"),
                ]);
            }
            Via::Env => {
                command
                    .env("STOMPBOX_BROKER_KIND", "relay")
                    .env("STOMPBOX_RELAY_ADDRESSES", BROKER)
                    .env("STOMPBOX_RELAY_MODE", mode)
                    .env("STOMPBOX_AUTH_USERS", users);
            }
        }
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("spawn stompbox serve");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (lines, stdout) = mpsc::unbounded_channel();
        if let Some(out) = child.stdout.take() {
            pipe_lines(out, Arc::clone(&log), Some(lines));
        }
        if let Some(err) = child.stderr.take() {
            pipe_lines(err, Arc::clone(&log), None);
        }
        let mut instance = Instance {
            name,
            child,
            stdout,
            log,
            ws: String::new(),
        };
        let listening = instance.line_with("stompbox listening").await;
        instance.ws = listening
            .split_whitespace()
            .find_map(|field| field.strip_prefix("ws="))
            .unwrap_or_else(|| panic!("{name}: no ws= in {listening:?}"))
            .to_owned();
        instance.line_with(AVAILABLE).await;
        instance
    }

    /// The next stdout line containing `needle`.
    async fn line_with(&mut self, needle: &str) -> String {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            match tokio::time::timeout_at(deadline, self.stdout.recv()).await {
                Ok(Some(line)) if line.contains(needle) => return line,
                Ok(Some(_)) => {}
                Ok(None) => panic!(
                    "{}: stdout ended (exit {:?}) before a line with {needle:?}\n{}",
                    self.name,
                    self.child.try_wait(),
                    self.describe()
                ),
                Err(_) => panic!(
                    "{}: no line with {needle:?} within {WAIT:?}\n{}",
                    self.name,
                    self.describe()
                ),
            }
        }
    }

    fn describe(&self) -> String {
        let log = self.log.lock().unwrap_or_else(PoisonError::into_inner);
        format!("--- output of {} ---\n{}", self.name, log.join("\n"))
    }

    /// SIGTERM, then the exit status, which must come within [`WAIT`].
    async fn stop(mut self) -> ExitStatus {
        let pid = self.child.id().to_string();
        let sent = Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .expect("run kill");
        assert!(sent.success(), "{}: kill -TERM {pid} failed", self.name);
        let deadline = Instant::now() + WAIT;
        loop {
            match self.child.try_wait() {
                Ok(Some(status)) => return status,
                Ok(None) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Ok(None) => panic!(
                    "{}: still running {WAIT:?} after SIGTERM\n{}",
                    self.name,
                    self.describe()
                ),
                Err(e) => panic!("{}: cannot wait for the process: {e}", self.name),
            }
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if std::thread::panicking() {
            eprintln!("{}", self.describe());
        }
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

async fn connect(instance: &Instance, login: &str) -> Client {
    match tokio::time::timeout(
        WAIT,
        Client::connect(
            &instance.ws,
            &[("login", login), ("passcode", &format!("{login}-pw"))],
        ),
    )
    .await
    {
        Ok(Ok((client, _))) => client,
        Ok(Err(e)) => panic!("{login} cannot connect to {}: {e}", instance.name),
        Err(_) => panic!("{login}: CONNECT to {} timed out", instance.name),
    }
}

/// The next frame that `wanted` accepts, skipping others (join notices,
/// other runs' chat messages); an ERROR fails the test.
async fn frame_where(client: &mut Client, who: &str, wanted: impl Fn(&Frame) -> bool) -> Frame {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match client.next_frame_within(left).await {
            Ok(Some(frame)) if frame.command == Stomp::Error => panic!(
                "{who}: ERROR {:?}",
                frame.headers.get("message").unwrap_or_default()
            ),
            Ok(Some(frame)) if wanted(&frame) => return frame,
            Ok(Some(_)) => {}
            Ok(None) => panic!("{who}: the server closed the connection"),
            Err(e) => panic!("{who}: nothing expected arrived within {WAIT:?}: {e}"),
        }
    }
}

/// SUBSCRIBE, waiting for its RECEIPT: the broker has the subscription.
async fn subscribe(client: &mut Client, who: &str, id: &str, destination: &str) {
    let receipt = format!("sub-{id}");
    client
        .send(
            &Frame::new(Stomp::Subscribe)
                .header("id", id)
                .header("destination", destination)
                .header("receipt", &receipt),
        )
        .await
        .unwrap_or_else(|e| panic!("{who}: SUBSCRIBE {destination}: {e}"));
    frame_where(client, who, |f| {
        f.command == Stomp::Receipt && f.headers.get("receipt-id") == Some(receipt.as_str())
    })
    .await;
}

/// Receives MESSAGE frames until one for each `(destination, body part)`
/// of `expected` arrived, in any order; returns them in the order of
/// `expected`.
async fn receive_all(client: &mut Client, who: &str, expected: &[(&str, &str)]) -> Vec<Frame> {
    let matches = |f: &Frame, (destination, part): (&str, &str)| {
        f.command == Stomp::Message
            && f.headers.get("destination") == Some(destination)
            && String::from_utf8_lossy(&f.body).contains(part)
    };
    let mut found: Vec<Option<Frame>> = expected.iter().map(|_| None).collect();
    while found.iter().any(Option::is_none) {
        let frame = frame_where(client, who, |f| {
            expected
                .iter()
                .zip(&found)
                .any(|(e, seen)| seen.is_none() && matches(f, *e))
        })
        .await;
        if let Some(slot) = expected
            .iter()
            .zip(found.iter_mut())
            .find_map(|(e, seen)| (seen.is_none() && matches(&frame, *e)).then_some(seen))
        {
            *slot = Some(frame);
        }
    }
    found.into_iter().flatten().collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_message_space_through_the_shared_relay() {
    two_instances_in("shared").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_instances_share_one_message_space_through_per_session_relays() {
    two_instances_in("per-session").await;
}

/// The test with both instances in relay mode `mode` (`relay.mode`).
async fn two_instances_in(mode: &str) {
    if !rabbitmq_up() {
        return;
    }
    tokio::time::timeout(WHOLE, two_instances(mode))
        .await
        .unwrap_or_else(|_| panic!("the relay instances test ({mode}) took longer than 90 s"));
}

async fn two_instances(mode: &str) {
    let run = unique();
    let topic = format!("/topic/x-{run}");
    let chat_text = format!("hello from one {run}");
    let ping = format!("ping {run}");
    let direct = format!("for bob only {run}");

    let users = users();
    let one = Instance::start("instance 1", Via::Flags, mode, &users).await;
    let two = Instance::start("instance 2", Via::Env, mode, &users).await;

    // alice on instance 1, bob on instance 2; both in room 1 and on the topic.
    let mut alice = connect(&one, "alice").await;
    let mut bob = connect(&two, "bob").await;
    for (client, who) in [(&mut alice, "alice"), (&mut bob, "bob")] {
        subscribe(client, who, "room", "/topic/chat/1").await;
        subscribe(client, who, "x", &topic).await;
    }
    subscribe(&mut bob, "bob", "inbox", "/user/queue/inbox").await;

    // The chat demo's handler replies through the relay's system connection.
    let chat = Frame::new(Stomp::Send)
        .header("destination", "/app/chat/1")
        .header("content-type", "application/json")
        .body(format!("{{\"text\":\"{chat_text}\"}}"));
    let plain = Frame::new(Stomp::Send)
        .header("destination", &topic)
        .body(ping.clone());
    let to_bob = Frame::new(Stomp::Send)
        .header("destination", "/user/bob/queue/inbox")
        .body(direct.clone());
    for frame in [chat, plain, to_bob] {
        alice.send(&frame).await.expect("alice: SEND");
    }

    let chat_reply = format!("\"text\":\"{chat_text}\"");
    let expected = [
        ("/topic/chat/1", chat_reply.as_str()),
        (topic.as_str(), ping.as_str()),
    ];
    receive_all(&mut alice, "alice (instance 1)", &expected).await;
    let with_inbox = [
        expected[0],
        expected[1],
        ("/user/queue/inbox", direct.as_str()),
    ];
    let got = receive_all(&mut bob, "bob (instance 2)", &with_inbox).await;
    // The reply is the chat's JSON message event, from alice.
    let event = String::from_utf8_lossy(&got[0].body);
    assert!(
        event.contains("\"type\":\"message\"") && event.contains("\"user\":\"alice\""),
        "{event}"
    );
    assert_eq!(got[1].body, ping.as_bytes());
    // The user destination crossed instances, under bob's own name for it.
    assert_eq!(got[2].body, direct.as_bytes());
    assert_eq!(got[2].headers.get("subscription"), Some("inbox"));

    // A graceful stop, with clients still connected, exits 0.
    for instance in [one, two] {
        let name = instance.name;
        let status = instance.stop().await;
        assert!(
            status.success(),
            "{name} exited with {status} after SIGTERM"
        );
    }
}
