//! The server's resident memory under the memory attacks stays within the
//! documented caps plus a stated overhead: `stompbox serve` runs in its own
//! process with small caps, and its peak RSS (VmHWM of /proc/PID/status) is
//! compared with its RSS before the attack.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::Duration;
use stompbox::client::Client;
use stompbox::codec::{Command as Stomp, Frame};

/// Generous for a loaded CI machine.
const WAIT: Duration = Duration::from_secs(20);

const MIB: u64 = 1024 * 1024;

/// The cap both attacks aim at: broker.max_total_queue_bytes.
const QUEUE_CAP: u64 = 16 * MIB;

/// What the server may use beyond the cap: the attackers' connections
/// (buffers of up to a frame each), the allocator's slack, and code paths
/// first touched by the attack. The README states it.
const OVERHEAD: u64 = 16 * MIB;

/// A `stompbox serve` killed when dropped.
struct Serve {
    child: Child,
    ws: String,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Serve {
    fn start(caps: &[&str]) -> Serve {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_stompbox"));
        cmd.args(["serve", "--http", "127.0.0.1:0"]);
        for cap in caps {
            cmd.args(["--set", cap]);
        }
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("STOMPBOX_") {
                cmd.env_remove(name);
            }
        }
        cmd.env_remove("RUST_LOG");
        let mut child = cmd
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start stompbox serve");
        let stdout = child.stdout.take().expect("stdout");
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
        let ws = loop {
            let line = rx.recv_timeout(WAIT).expect("no listening line");
            if let Some(ws) = line
                .split_whitespace()
                .find_map(|field| field.strip_prefix("ws="))
            {
                break ws.to_owned();
            }
        };
        Serve { child, ws }
    }

    fn status_kib(&self, field: &str) -> u64 {
        let status =
            std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).expect("status");
        let line = status
            .lines()
            .find(|line| line.starts_with(field))
            .unwrap_or_else(|| panic!("no {field} in {status}"));
        line[field.len()..]
            .split_whitespace()
            .next()
            .and_then(|kib| kib.parse().ok())
            .unwrap_or_else(|| panic!("bad {line}"))
    }

    fn rss(&self) -> u64 {
        self.status_kib("VmRSS:") * 1024
    }

    /// The highest RSS since the server started.
    fn peak_rss(&self) -> u64 {
        self.status_kib("VmHWM:") * 1024
    }

    async fn connect(&self) -> Client {
        let (client, _) = tokio::time::timeout(WAIT, Client::connect(&self.ws, &[]))
            .await
            .expect("CONNECT timed out")
            .expect("CONNECT");
        client
    }
}

async fn next(client: &mut Client) -> Frame {
    client
        .next_frame_within(WAIT)
        .await
        .expect("read")
        .expect("closed")
}

/// A topic publisher and its subscriber, which must get every message.
struct Canary {
    publisher: Client,
    subscriber: Client,
    sent: usize,
}

impl Canary {
    async fn start(server: &Serve) -> Canary {
        let mut subscriber = server.connect().await;
        subscriber
            .send_with_receipt(
                Frame::new(Stomp::Subscribe)
                    .header("id", "c")
                    .header("destination", "/topic/canary"),
                "subscribed",
            )
            .await
            .expect("SUBSCRIBE");
        Canary {
            publisher: server.connect().await,
            subscriber,
            sent: 0,
        }
    }

    async fn ping(&mut self) {
        let frame = Frame::new(Stomp::Send)
            .header("destination", "/topic/canary")
            .body(format!("canary-{}", self.sent));
        self.sent += 1;
        self.publisher
            .send_with_receipt(frame, "ping")
            .await
            .expect("canary SEND");
    }

    async fn check(mut self) {
        for i in 0..self.sent {
            let frame = next(&mut self.subscriber).await;
            assert_eq!(frame.body, format!("canary-{i}").as_bytes());
        }
    }
}

/// Sends `frames` in batches of 100, each closed by a receipt, until the
/// server refuses one or `most` went out; true when refused.
async fn flood(client: &mut Client, frame: &Frame, most: u64, canary: &mut Canary) -> bool {
    let mut sent = 0;
    while sent < most {
        for i in 0..100 {
            let frame = if i == 99 {
                frame.clone().header("receipt", "batch")
            } else {
                frame.clone()
            };
            client.send(&frame).await.expect("send");
        }
        sent += 100;
        let reply = next(client).await;
        if reply.command == Stomp::Error {
            let message = reply.headers.get("message").unwrap_or_default();
            assert!(message.contains("max_total_queue_bytes"), "{message}");
            return true;
        }
        assert_eq!(reply.command, Stomp::Receipt, "{reply:?}");
        canary.ping().await;
    }
    false
}

fn caps() -> Vec<String> {
    vec![
        format!("broker.max_total_queue_bytes={QUEUE_CAP}"),
        "broker.queue_max_messages=1000000".to_owned(),
        format!("broker.max_session_unacked_bytes={}", 2 * MIB),
        "limits.connections_per_address=0".to_owned(),
    ]
}

fn assert_within(server: &Serve, before: u64, what: &str) {
    let growth = server.peak_rss().saturating_sub(before);
    assert!(
        growth <= QUEUE_CAP + OVERHEAD,
        "{what}: RSS grew {:.1} MiB, more than the {} MiB cap + {} MiB",
        growth as f64 / MIB as f64,
        QUEUE_CAP / MIB,
        OVERHEAD / MIB
    );
    println!(
        "{what}: RSS grew {:.1} MiB (cap {} MiB + {} MiB)",
        growth as f64 / MIB as f64,
        QUEUE_CAP / MIB,
        OVERHEAD / MIB
    );
}

#[tokio::test]
async fn a_queue_flood_of_empty_headers_stays_within_the_queue_cap() {
    let caps = caps();
    let server = Serve::start(&caps.iter().map(String::as_str).collect::<Vec<_>>());
    let mut canary = Canary::start(&server).await;
    let mut attackers = Vec::new();
    for _ in 0..4 {
        attackers.push(server.connect().await);
    }
    let before = server.rss();
    let mut frame = Frame::new(Stomp::Send).header("destination", "/queue/headers");
    for _ in 0..62 {
        frame = frame.header("a", "");
    }
    // Four times the cap's worth of header entries alone: without the cap
    // counting them, all of it is held.
    let most = 4 * QUEUE_CAP / (62 * 64) / 4;
    let mut refused = 0;
    for attacker in &mut attackers {
        refused += usize::from(flood(attacker, &frame, most, &mut canary).await);
    }
    assert_within(&server, before, "empty-header queue flood");
    assert!(refused > 0, "nothing refused");
    canary.check().await;
}

#[tokio::test]
async fn connections_that_never_ack_stay_within_the_queue_cap() {
    let caps = caps();
    let server = Serve::start(&caps.iter().map(String::as_str).collect::<Vec<_>>());
    let mut canary = Canary::start(&server).await;
    // Each with 30 client-individual subscriptions; reading, never acking.
    let mut queues = Vec::new();
    let mut hogs = Vec::new();
    for h in 0..8 {
        let mut hog = server.connect().await;
        for i in 0..30 {
            let queue = format!("/queue/hog-{h}-{i}");
            hog.send(
                &Frame::new(Stomp::Subscribe)
                    .header("id", &i.to_string())
                    .header("destination", &queue)
                    .header("ack", "client-individual"),
            )
            .await
            .expect("SUBSCRIBE");
            queues.push(queue);
        }
        hogs.push(tokio::spawn(async move {
            while let Ok(Some(_)) = hog.next_frame_within(WAIT).await {}
        }));
    }
    let mut publisher = server.connect().await;
    let before = server.rss();
    let body = vec![b'x'; 16 * 1024];
    // Four times the cap's worth.
    let most = 4 * QUEUE_CAP / body.len() as u64;
    let mut refused = false;
    let mut sent = 0;
    while sent < most && !refused {
        for _ in 0..50 {
            let queue = &queues[sent as usize % queues.len()];
            publisher
                .send(
                    &Frame::new(Stomp::Send)
                        .header("destination", queue)
                        .body(body.clone()),
                )
                .await
                .expect("send");
            sent += 1;
        }
        publisher
            .send(
                &Frame::new(Stomp::Send)
                    .header("destination", &queues[0])
                    .header("receipt", "batch"),
            )
            .await
            .expect("send");
        let reply = next(&mut publisher).await;
        if reply.command == Stomp::Error {
            let message = reply.headers.get("message").unwrap_or_default();
            assert!(message.contains("max_total_queue_bytes"), "{message}");
            refused = true;
        } else {
            assert_eq!(reply.command, Stomp::Receipt, "{reply:?}");
        }
        canary.ping().await;
    }
    assert_within(&server, before, "30-subscription hogs that never ack");
    assert!(refused, "{sent} messages of 16 KiB accepted");
    canary.check().await;
    for hog in hogs {
        hog.abort();
    }
}
