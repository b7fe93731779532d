//! `GET /metrics` scraped over real HTTP while real clients connect,
//! subscribe, publish, misbehave and leave.

use crate::support::*;
use std::net::SocketAddr;
use stompbox::app::App;
use stompbox::codec::{Command, Frame};
use tokio::io::AsyncWriteExt;

/// One GET, with the bearer token if any; the status code and the body.
async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> (u16, String) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = auth.iter().map(|a| ("Authorization", a.as_str())).collect();
    let answer = http_request(addr, "GET", path, &headers, None).await;
    (answer.status, answer.body)
}

/// The exposition of the server's main listener.
async fn scrape(server: &TestServer) -> Metrics {
    let addr = server.handle.http_addr().expect("http addr");
    let (status, body) = get(addr, "/metrics", None).await;
    assert_eq!(status, 200, "{body}");
    Metrics(body)
}

struct Metrics(String);

impl Metrics {
    /// The value of one series, named with its labels as exposed (labels
    /// in name order), e.g. `stompbox_sessions{transport="tcp",version="1.2"}`.
    fn value(&self, series: &str) -> f64 {
        self.0
            .lines()
            .find_map(|line| {
                let (name, value) = line.rsplit_once(' ')?;
                (name == series).then(|| value.parse::<f64>().ok())?
            })
            .unwrap_or_else(|| panic!("no series {series} in:\n{}", self.0))
    }

    /// The sum over every series of a metric (all label values).
    fn sum(&self, metric: &str) -> f64 {
        self.0
            .lines()
            .filter(|line| {
                line.strip_prefix(metric)
                    .is_some_and(|rest| rest.starts_with('{') || rest.starts_with(' '))
            })
            .filter_map(|line| line.rsplit_once(' ')?.1.parse::<f64>().ok())
            .sum()
    }
}

#[tokio::test]
async fn metrics_follow_sessions_subscriptions_and_messages() {
    let server = spawn_server(|_| {}).await;
    let topic = unique("/topic/metrics");
    let before = scrape(&server).await;
    let mut reader = server.connect(Via::Ws).await;
    subscribe(&mut reader, "r", &topic, "auto").await;
    let mut writer = server.connect(Via::Tcp).await;
    for i in 0..3 {
        send_receipted(&mut writer, &topic, &format!("m{i}")).await;
    }
    for _ in 0..3 {
        next_message(&mut reader).await;
    }
    let during = scrape(&server).await;
    assert_eq!(
        during.value(r#"stompbox_sessions{transport="websocket",version="1.2"}"#),
        1.0
    );
    assert_eq!(
        during.value(r#"stompbox_sessions{transport="tcp",version="1.2"}"#),
        1.0
    );
    assert_eq!(
        during.value(r#"stompbox_connections{transport="websocket"}"#),
        1.0
    );
    assert_eq!(during.value("stompbox_subscriptions"), 1.0);
    let grew = |series: &str| during.value(series) - before.value(series);
    assert_eq!(
        grew(r#"stompbox_frames_received_total{command="SEND"}"#),
        3.0
    );
    assert_eq!(
        grew(r#"stompbox_frames_received_total{command="SUBSCRIBE"}"#),
        1.0
    );
    assert_eq!(
        grew(r#"stompbox_frames_received_total{command="CONNECT"}"#),
        2.0
    );
    assert_eq!(
        grew(r#"stompbox_messages_published_total{source="client"}"#),
        3.0
    );
    assert_eq!(grew("stompbox_messages_delivered_total"), 3.0);
    assert!(grew("stompbox_received_bytes_total") > 0.0);
    // Three MESSAGEs, three RECEIPTs, two CONNECTEDs at least.
    assert!(grew("stompbox_sent_bytes_total") > 3.0 * 50.0);
    assert_eq!(
        grew(r#"stompbox_connections_opened_total{transport="websocket"}"#),
        1.0
    );
    assert_eq!(during.value("stompbox_broker_up"), 1.0);
    assert_eq!(during.value("stompbox_ready"), 1.0);
    assert!(during.value("process_open_fds") > 0.0);
    assert!(during.value("process_resident_memory_bytes") > 0.0);

    // A client that leaves is gone from the figures by the time its
    // socket closes; what it counted stays in the totals.
    reader
        .send_with_receipt(Frame::new(Command::Disconnect), "bye")
        .await
        .expect("DISCONNECT");
    assert!(matches!(reader.next_frame_within(WAIT).await, Ok(None)));
    let after = scrape(&server).await;
    assert_eq!(
        after.value(r#"stompbox_sessions{transport="websocket",version="1.2"}"#),
        0.0
    );
    assert_eq!(after.value("stompbox_subscriptions"), 0.0);
    assert_eq!(
        after.value("stompbox_messages_delivered_total"),
        during.value("stompbox_messages_delivered_total")
    );
}

#[tokio::test]
async fn errors_and_failed_logins_are_counted_by_reason() {
    let server = spawn_authenticated(App::new(), |_| {}).await;
    let before = scrape(&server).await;
    // A wrong password.
    let mut guesser = server.open(Via::Tcp).await;
    guesser
        .send(
            &Frame::new(Command::Connect)
                .header("accept-version", "1.2")
                .header("host", "localhost")
                .header("login", "alice")
                .header("passcode", "wrong"),
        )
        .await
        .expect("send");
    expect_error_and_close(&mut guesser).await;
    // A frame no STOMP client sends.
    let mut rude = server.connect(Via::Ws).await;
    rude.send(&Frame::new(Command::Message).header("destination", "/topic/x"))
        .await
        .expect("send");
    expect_error_and_close(&mut rude).await;
    let after = scrape(&server).await;
    let grew = |series: &str| after.value(series) - before.value(series);
    assert_eq!(
        grew(r#"stompbox_authentication_failures_total{reason="bad_credentials"}"#),
        1.0
    );
    assert_eq!(
        grew(r#"stompbox_errors_total{reason="authentication"}"#),
        1.0
    );
    assert_eq!(grew(r#"stompbox_errors_total{reason="protocol"}"#), 1.0);
    assert_eq!(
        after.sum("stompbox_errors_total") - before.sum("stompbox_errors_total"),
        2.0
    );
}

#[tokio::test]
async fn a_slow_consumer_disconnect_is_counted() {
    let server = spawn_server(|c| {
        c.outbox_bytes = 64 * 1024;
        c.send_timeout = std::time::Duration::from_secs(1);
    })
    .await;
    let topic = unique("/topic/metrics-slow");
    let mut stalled = server.connect(Via::Tcp).await;
    subscribe(&mut stalled, "s", &topic, "auto").await;
    let before = scrape(&server).await;
    // Published from outside any session, so nothing waits for the
    // stalled reader: its kernel buffers, then its outbox, fill up.
    let messaging = server.handle.messaging();
    let filler = "x".repeat(32 * 1024);
    for _ in 0..2_000 {
        if server.handle.stats().slow_consumers > 0 {
            break;
        }
        if messaging.publish(&topic, filler.clone()).await.is_err() {
            break;
        }
        tokio::task::yield_now().await;
    }
    // Through a relay the broker holds what the stalled reader's link has
    // no room for, so the cut-off (its write stuck past the send time
    // limit) may come after the last publish. Nothing is read from the
    // stalled client until then: reading would unstick it.
    let deadline = tokio::time::Instant::now() + 3 * WAIT;
    while server.handle.stats().slow_consumers == 0 {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the stalled client was not cut off"
        );
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let drained = drain(&mut stalled).await;
    assert!(!drained.open, "the stalled client is still connected");
    let after = scrape(&server).await;
    assert_eq!(
        after.sum("stompbox_slow_consumer_disconnects_total")
            - before.sum("stompbox_slow_consumer_disconnects_total"),
        1.0
    );
    assert_eq!(
        after.value(r#"stompbox_errors_total{reason="slow_consumer"}"#)
            - before.value(r#"stompbox_errors_total{reason="slow_consumer"}"#),
        1.0
    );
    assert!(
        after.value(r#"stompbox_messages_published_total{source="server"}"#)
            > before.value(r#"stompbox_messages_published_total{source="server"}"#)
    );
}

#[tokio::test]
async fn handler_latency_is_a_histogram_by_route() {
    let app = App::new().message("/echo/{room}", |body: String| async move { body });
    let server = spawn_app(app, |_| {}).await;
    let topic_room = unique("room");
    let mut client = server.connect(Via::Ws).await;
    subscribe(
        &mut client,
        "t",
        &format!("/topic/echo/{topic_room}"),
        "auto",
    )
    .await;
    for i in 0..2 {
        client
            .send(
                &Frame::new(Command::Send)
                    .header("destination", &format!("/app/echo/{topic_room}"))
                    .body(format!("hi {i}")),
            )
            .await
            .expect("send");
        next_message(&mut client).await;
    }
    let metrics = scrape(&server).await;
    assert_eq!(
        metrics.value(
            r#"stompbox_handler_duration_seconds_count{kind="message",route="/echo/{room}"}"#
        ),
        2.0
    );
    assert_eq!(
        metrics.value(
            r#"stompbox_handler_duration_seconds_bucket{kind="message",route="/echo/{room}",le="+Inf"}"#
        ),
        2.0
    );
}

#[tokio::test]
async fn a_metrics_token_is_required_when_configured_and_a_listener_of_its_own_serves_them() {
    let server = spawn_server(|c| {
        c.metrics.token = Some("scrape-secret".into());
        c.metrics.addr = Some(SocketAddr::from(([127, 0, 0, 1], 0)));
    })
    .await;
    let main = server.handle.http_addr().expect("http addr");
    let ops = server.handle.metrics_addr().expect("metrics listener");
    assert_ne!(main, ops);
    for addr in [main, ops] {
        assert_eq!(get(addr, "/metrics", None).await.0, 401);
        assert_eq!(get(addr, "/metrics", Some("scrape-secreT")).await.0, 401);
        let (status, body) = get(addr, "/metrics", Some("scrape-secret")).await;
        assert_eq!(status, 200);
        assert!(body.contains("stompbox_sessions{"), "{body}");
    }
    // The operators' listener serves no STOMP.
    assert_eq!(get(ops, "/ws", None).await.0, 404);

    let off = spawn_server(|c| c.metrics.enabled = false).await;
    let addr = off.handle.http_addr().expect("http addr");
    assert_eq!(get(addr, "/metrics", None).await.0, 404);
}

#[tokio::test]
async fn promtool_accepts_the_exposition() {
    let Some(promtool) = required_tool("promtool") else {
        return;
    };
    let app = App::new().message("/echo/{room}", |body: String| async move { body });
    let server = spawn_app(app, |_| {}).await;
    let mut client = server.connect(Via::Ws).await;
    subscribe(&mut client, "t", &unique("/topic/lint"), "auto").await;
    send_receipted(&mut client, "/app/echo/lint", "hello").await;
    let metrics = scrape(&server).await;
    let mut child = tokio::process::Command::new(promtool)
        .args(["check", "metrics"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run promtool");
    let mut stdin = child.stdin.take().expect("stdin");
    stdin.write_all(metrics.0.as_bytes()).await.expect("write");
    drop(stdin);
    let output = tokio::time::timeout(WAIT, child.wait_with_output())
        .await
        .expect("promtool hung")
        .expect("promtool failed");
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(output.status.success(), "promtool: {said}");
    assert!(said.trim().is_empty(), "promtool lint: {said}");
}

/// `name` on the PATH; under CI=true a missing tool fails the test, on a
/// developer's machine the test says why it did not run.
fn required_tool(name: &str) -> Option<std::path::PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|dir| dir.join(name))
            .find(|path| path.is_file())
    });
    if found.is_none() {
        let reason = format!(
            "{name} is missing: install Debian's prometheus package (scripts/install-test-deps.sh)"
        );
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true: {reason}"
        );
        eprintln!("skipped: {reason}");
    }
    found
}

#[tokio::test]
async fn queue_depth_is_exposed_in_total_and_for_the_busiest_destinations_only() {
    if embedded_only("per-destination queue depth") {
        return;
    }
    let server = spawn_server(|c| {
        c.metrics.per_destination = true;
        c.metrics.max_destination_series = 1;
    })
    .await;
    let deep = unique("/queue/metrics-deep");
    let shallow = unique("/queue/metrics-shallow");
    let mut producer = server.connect(Via::Tcp).await;
    for i in 0..3 {
        send_receipted(&mut producer, &deep, &format!("d{i}")).await;
    }
    send_receipted(&mut producer, &shallow, "s0").await;
    let metrics = scrape(&server).await;
    assert_eq!(metrics.value("stompbox_queue_messages_ready"), 4.0);
    assert_eq!(metrics.value("stompbox_queues"), 2.0);
    assert_eq!(
        metrics.value(&format!(
            r#"stompbox_destination_messages_ready{{destination="{deep}",kind="queue"}}"#
        )),
        3.0
    );
    // Capped at one series: the shallow queue has none.
    assert!(!metrics.0.contains(&shallow), "{}", metrics.0);

    // A consumer in client mode holds what it was given unacknowledged.
    let mut consumer = server.connect(Via::Ws).await;
    subscribe_now(&mut consumer, "c", &deep, "client-individual").await;
    for _ in 0..3 {
        next_message(&mut consumer).await;
    }
    let metrics = scrape(&server).await;
    assert_eq!(metrics.value("stompbox_queue_messages_ready"), 1.0);
    assert_eq!(metrics.value("stompbox_queue_messages_unacked"), 3.0);
}
