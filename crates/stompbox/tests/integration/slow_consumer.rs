use crate::support::*;
use std::time::Duration;
use stompbox::client::Client;
use stompbox::codec::{Command, Frame};

/// Publishes `count` numbered messages while one subscriber stalls and
/// another must get every one of them in order. The publisher stays within a
/// small window of the healthy reader, so only the stalled one falls behind.
async fn publish_while_one_subscriber_stalls(server: &TestServer, count: usize) {
    let topic = unique("/topic/firehose");
    // The stalled subscriber: subscribes, then never reads again.
    let mut stalled = server.connect(Via::Ws).await;
    subscribe(&mut stalled, "s", &topic, "auto").await;
    let mut reader = server.connect(Via::Ws).await;
    subscribe(&mut reader, "r", &topic, "auto").await;
    let (progress_tx, mut progress) = tokio::sync::watch::channel(0usize);
    let reading = tokio::spawn(async move {
        for i in 0..count {
            let _ = progress_tx.send(i);
            let m = next_message(&mut reader).await;
            let text = body(&m);
            assert!(
                text.starts_with(&format!("{i}:")),
                "message {i} out of order: {}",
                &text[..16.min(text.len())]
            );
        }
        reader
    });
    let mut publisher = server.connect(Via::Tcp).await;
    let filler = "x".repeat(1000);
    for i in 0..count {
        if i >= WINDOW {
            tokio::time::timeout(WAIT, progress.wait_for(|&got| got + WINDOW > i))
                .await
                .expect("healthy reader stopped receiving")
                .expect("reader gone");
        }
        let mut frame = Frame::new(Command::Send)
            .header("destination", &topic)
            .body(format!("{i}:{filler}"));
        if i % 100 == 99 {
            frame = frame.header("receipt", &i.to_string());
            publisher.send(&frame).await.expect("send");
            let receipt = next(&mut publisher).await;
            assert_eq!(receipt.command, Command::Receipt);
        } else {
            publisher.send(&frame).await.expect("send");
        }
    }
    tokio::time::timeout(Duration::from_secs(60), reading)
        .await
        .expect("reader did not get every message in time")
        .expect("reader failed");
    // The stalled client was cut off: draining what the kernel buffered for
    // it ends in a close, never in the full stream of messages.
    let drained = drain(&mut stalled).await;
    if let Some(error) = &drained.error {
        assert!(
            error
                .headers
                .get("message")
                .is_some_and(|m| m.contains("slow consumer"))
        );
    }
    let received = drained.messages;
    assert!(
        received < count,
        "the stalled client got everything ({received})"
    );
    assert_eq!(server.handle.stats().slow_consumers, 1);
}

/// Messages the publisher may be ahead of the healthy reader (about 40 KB,
/// below the outbox limit used here).
const WINDOW: usize = 40;

#[tokio::test]
async fn a_subscriber_that_stops_reading_is_disconnected_while_others_get_everything() {
    let server = spawn_server(|c| {
        c.outbox_bytes = 64 * 1024;
        // The publisher pauses while the stalled subscriber's outbox is over
        // half full, and a relay stops reading its broker link instead of
        // filling the outbox (the broker holds the messages): either way the
        // send time limit is what cuts it off, and a short one keeps the
        // publisher's pause short.
        c.send_timeout = Duration::from_secs(1);
    })
    .await;
    publish_while_one_subscriber_stalls(&server, 20_000).await;
    let _ = Client::open;
}

#[tokio::test]
async fn a_write_stuck_past_the_send_time_limit_is_a_slow_consumer() {
    let server = spawn_server(|c| {
        // The outbox could hold everything; only the time limit can trip.
        c.outbox_bytes = 256 * 1024 * 1024;
        c.send_timeout = Duration::from_millis(300);
    })
    .await;
    publish_while_one_subscriber_stalls(&server, 20_000).await;
}

#[tokio::test]
async fn a_publisher_faster_than_the_server_is_slowed_instead_of_subscribers_being_dropped() {
    if not_through_shared_relay("a publisher is slowed by the subscribers it feeds") {
        return;
    }
    // Small outboxes: without the server-wide backlog pausing the publisher,
    // a publisher sending as fast as it can overflows them.
    let server = spawn_server(|c| {
        c.outbox_bytes = 64 * 1024;
        c.backlog_bytes = 256 * 1024;
    })
    .await;
    let topic = unique("/topic/flood");
    // Through a relay the whole flood also crosses the external broker,
    // which the rest of the suite is using at the same time: 1 MB per
    // subscriber still overflows a 64 KiB outbox many times over.
    let count = if test_broker() == TestBroker::Embedded {
        5_000
    } else {
        1_000
    };
    let mut readers = Vec::new();
    for i in 0..20 {
        let mut sub = server.connect(Via::Ws).await;
        subscribe(&mut sub, &format!("s{i}"), &topic, "auto").await;
        readers.push(tokio::spawn(async move {
            for n in 0..count {
                let m = next_message(&mut sub).await;
                assert!(
                    body(&m).starts_with(&format!("{n}:")),
                    "out of order at {n}"
                );
            }
        }));
    }
    let mut publisher = server.connect(Via::Tcp).await;
    let filler = "x".repeat(1000);
    for n in 0..count {
        let frame = Frame::new(Command::Send)
            .header("destination", &topic)
            .body(format!("{n}:{filler}"));
        publisher.send(&frame).await.expect("send");
    }
    for reader in readers {
        tokio::time::timeout(Duration::from_secs(60), reader)
            .await
            .expect("a subscriber did not get everything in time")
            .expect("subscriber failed");
    }
    assert_eq!(server.handle.stats().slow_consumers, 0);
}
