//! A publisher's burst is slowed by the subscribers it feeds instead of
//! cutting them off; a shared message is counted once in the server-wide
//! backlog. Through a relay the burst is paced by the publisher's own link to
//! the broker and by the subscribers' links, so the burst tests run there too.

use crate::support::*;
use bytes::BytesMut;
use std::time::Duration;
use stompbox::client::Client;
use stompbox::codec::{Command, Frame, Version, encode_frame};

/// Time for a whole burst to reach every subscriber.
const BURST_WAIT: Duration = Duration::from_secs(60);

/// `count` SENDs of `size`-byte numbered bodies to `topic`, encoded back to
/// back so that one write hands the server the whole burst; the last asks
/// for a RECEIPT.
fn burst(topic: &str, count: usize, size: usize) -> bytes::Bytes {
    let mut out = BytesMut::new();
    for i in 0..count {
        let mut body = format!("{i}:");
        body.push_str(&"x".repeat(size.saturating_sub(body.len())));
        let mut frame = Frame::new(Command::Send)
            .header("destination", topic)
            .body(body);
        if i + 1 == count {
            frame = frame.header("receipt", "burst-done");
        }
        encode_frame(&frame, Version::V1_2, &mut out);
    }
    out.freeze()
}

/// Reads `count` numbered messages in order, as fast as it can.
fn read_all(mut client: Client, count: usize) -> tokio::task::JoinHandle<Client> {
    tokio::spawn(async move {
        for i in 0..count {
            let m = next_message(&mut client).await;
            let text = body(&m);
            assert!(
                text.starts_with(&format!("{i}:")),
                "message {i} out of order: {}",
                &text[..16.min(text.len())]
            );
        }
        client
    })
}

/// Writes the burst in one go and waits for its RECEIPT.
async fn publish_burst(server: &TestServer, bytes: bytes::Bytes) {
    let mut publisher = server.connect(Via::Tcp).await;
    let done = tokio::time::timeout(BURST_WAIT, async move {
        publisher.send_raw(bytes).await.expect("burst written");
        let receipt = next(&mut publisher).await;
        assert_eq!(receipt.command, Command::Receipt, "{receipt:?}");
    })
    .await;
    done.expect("the burst was not taken in time");
}

async fn burst_to_five_fast_subscribers(count: usize, size: usize, outbox_bytes: usize) {
    if not_through_shared_relay("a burst waits for the subscribers it feeds") {
        return;
    }
    let server = spawn_server(|c| c.outbox_bytes = outbox_bytes).await;
    let topic = unique("/topic/burst");
    let mut readers = Vec::new();
    for (i, via) in [Via::Ws, Via::Tcp, Via::Ws, Via::Tcp, Via::Ws]
        .into_iter()
        .enumerate()
    {
        let mut sub = server.connect(via).await;
        subscribe(&mut sub, &format!("s{i}"), &topic, "auto").await;
        readers.push(read_all(sub, count));
    }
    publish_burst(&server, burst(&topic, count, size)).await;
    for reader in readers {
        tokio::time::timeout(BURST_WAIT, reader)
            .await
            .expect("a subscriber did not get everything in time")
            .expect("a subscriber was cut off or got messages out of order");
    }
    assert_eq!(server.handle.stats().slow_consumers, 0);
}

#[tokio::test]
async fn a_burst_of_ten_thousand_small_messages_reaches_five_fast_subscribers() {
    // Smaller outboxes than the default 512 KiB: loopback sockets take
    // megabytes each, and the test's debug-built server is slower than the
    // release build of the attack, so at the default the old code did not
    // always overflow them.
    burst_to_five_fast_subscribers(10_000, 1024, 64 * 1024).await;
}

#[tokio::test]
async fn a_burst_of_large_messages_reaches_five_fast_subscribers() {
    // Room for three frames; the publisher pauses past half.
    burst_to_five_fast_subscribers(300, 60 * 1024, 192 * 1024).await;
}

#[tokio::test]
async fn a_subscriber_that_reads_nothing_is_cut_off_and_the_publisher_goes_on() {
    // Behind the relay the broker holds a stalled subscriber's messages in
    // its own queue once the subscriber's link stops reading (seen with
    // both RabbitMQ and ActiveMQ), so whether it is ever cut off depends on
    // the broker's pace and the kernel's buffers, not on stompbox.
    if embedded_only("cutting off a subscriber that reads nothing") {
        return;
    }
    let server = spawn_server(|c| c.send_timeout = Duration::from_millis(500)).await;
    let topic = unique("/topic/stall");
    let count = 10_000;
    let mut stalled = server.connect(Via::Tcp).await;
    subscribe(&mut stalled, "stalled", &topic, "auto").await;
    let mut readers = Vec::new();
    for (i, via) in [Via::Ws, Via::Tcp].into_iter().enumerate() {
        let mut sub = server.connect(via).await;
        subscribe(&mut sub, &format!("s{i}"), &topic, "auto").await;
        readers.push(read_all(sub, count));
    }
    publish_burst(&server, burst(&topic, count, 1024)).await;
    for reader in readers {
        tokio::time::timeout(BURST_WAIT, reader)
            .await
            .expect("a reader did not get everything in time")
            .expect("a reader was cut off");
    }
    // What the kernel buffered for the stalled client ends in the slow
    // consumer ERROR (when there was room to write it) and a close, never
    // in the whole burst.
    let drained = drain(&mut stalled).await;
    if let Some(error) = &drained.error {
        let message = error.headers.get("message").unwrap_or_default();
        assert!(message.contains("slow consumer"), "{message}");
    }
    assert!(
        drained.messages < count,
        "the stalled client got everything"
    );
    assert_eq!(server.handle.stats().slow_consumers, 1);
}

#[tokio::test]
async fn a_subscriber_that_reads_nothing_holds_a_publisher_about_a_second_not_the_send_limit() {
    if embedded_only("the publisher's wait for a stalled subscriber") {
        return;
    }
    // A send limit far longer than the test may take: without a bound of
    // its own on waiting for a writer that takes nothing, the publisher
    // would be held until the send limit cut the stalled subscriber off.
    let server = spawn_server(|c| {
        c.send_timeout = Duration::from_secs(120);
        c.outbox_bytes = 256 * 1024;
    })
    .await;
    let topic = unique("/topic/stall-bound");
    let mut stalled = Vec::new();
    for _ in 0..3 {
        let mut sub = server.connect(Via::Tcp).await;
        subscribe(&mut sub, "stalled", &topic, "auto").await;
        stalled.push(sub);
    }
    let mut reader = server.connect(Via::Ws).await;
    subscribe(&mut reader, "r", &topic, "auto").await;
    // More than the kernel buffers for an unread socket, so the stalled
    // subscribers' outboxes fill.
    let count = 400;
    let reading = read_all(reader, count);
    tokio::time::timeout(
        WAIT,
        publish_burst(&server, burst(&topic, count, 60 * 1024)),
    )
    .await
    .expect("the publisher was held by subscribers that read nothing");
    tokio::time::timeout(BURST_WAIT, reading)
        .await
        .expect("the reader did not get everything in time")
        .expect("the reader was cut off");
    for mut sub in stalled {
        assert!(
            !drain(&mut sub).await.open,
            "a subscriber that read nothing was not cut off"
        );
    }
    assert_eq!(server.handle.stats().slow_consumers, 3);
}

#[tokio::test]
async fn stalled_subscribers_of_one_topic_count_a_shared_message_once_and_pause_nobody_else() {
    if embedded_only("the server-wide backlog accounting") {
        return;
    }
    // Outboxes large enough to hold the whole stream under their pause mark
    // (an eighth) and a long send limit, so the stalled subscribers stay
    // connected holding it without pausing the publisher; a backlog limit
    // that counting the stream once per subscriber passes many times over.
    // The stream is larger than what the kernel buffers for a socket that
    // is not read (up to tcp_wmem's 4 MiB), so most of it stays in the
    // server.
    const SUBSCRIBERS: usize = 10;
    const MESSAGES: usize = 200;
    const SIZE: usize = 60 * 1024;
    let server = spawn_server(|c| {
        c.outbox_bytes = 128 * 1024 * 1024;
        c.backlog_bytes = 24 * 1024 * 1024;
        c.send_timeout = Duration::from_secs(30);
    })
    .await;
    let topic = unique("/topic/stalled");
    let mut stalled = Vec::new();
    for _ in 0..SUBSCRIBERS {
        let mut sub = server.connect(Via::Tcp).await;
        subscribe(&mut sub, "s", &topic, "auto").await;
        stalled.push(sub);
    }
    // Counted per outbox, the backlog would pass its limit and the server
    // would stop reading this publisher until the stalled ones are cut off.
    tokio::time::timeout(WAIT, publish_burst(&server, burst(&topic, MESSAGES, SIZE)))
        .await
        .expect("the publisher was paused by the backlog");
    let published = MESSAGES * SIZE;
    let backlog = server.handle.stats().backlog_bytes;
    assert!(
        backlog > 1024 * 1024,
        "the stalled subscribers hold little ({backlog} bytes): the test proves nothing"
    );
    assert!(
        backlog <= published,
        "{backlog} bytes counted for {published} bytes published: a shared frame counted per outbox"
    );
    // Another topic's traffic is not paused by the stalled ones.
    let canary_topic = unique("/topic/canary");
    let mut canary = server.connect(Via::Ws).await;
    subscribe(&mut canary, "c", &canary_topic, "auto").await;
    let mut publisher = server.connect(Via::Tcp).await;
    for i in 0..20 {
        send_receipted(&mut publisher, &canary_topic, &format!("canary {i}")).await;
        assert_eq!(
            body(&next_message(&mut canary).await),
            format!("canary {i}")
        );
    }
    assert_eq!(server.handle.stats().slow_consumers, 0);
    drop(stalled);
}

#[tokio::test]
async fn subscription_churn_past_the_rate_is_slowed_not_refused() {
    let server = spawn_server(|c| c.subscriptions_per_sec = 50).await;
    let topic = unique("/topic/churn");
    let mut client = server.connect(Via::Tcp).await;
    // 60 SUBSCRIBE/UNSUBSCRIBE pairs in one write: more than a second's
    // worth, so some must wait; none may be refused.
    let mut out = BytesMut::new();
    for i in 0..60 {
        let id = format!("c{i}");
        let subscribe = Frame::new(Command::Subscribe)
            .header("id", &id)
            .header("destination", &topic);
        encode_frame(&subscribe, Version::V1_2, &mut out);
        let unsubscribe = Frame::new(Command::Unsubscribe)
            .header("id", &id)
            .header("receipt", &id);
        encode_frame(&unsubscribe, Version::V1_2, &mut out);
    }
    client.send_raw(out.freeze()).await.expect("churn written");
    for i in 0..60 {
        let receipt = next(&mut client).await;
        assert_eq!(receipt.command, Command::Receipt, "{receipt:?}");
        assert_eq!(
            receipt.headers.get("receipt-id"),
            Some(format!("c{i}").as_str())
        );
    }
    assert!(
        server.handle.stats().subscription_holds > 0,
        "120 changes at 50 a second were never held"
    );
    // The session is still usable.
    subscribe(&mut client, "after", &topic, "auto").await;
}

/// Publishes `count` numbered messages of about 1 KiB to `topic`, from a
/// SEND to `/app/flood` whose body is `topic count`.
async fn flood(messaging: stompbox::app::Messaging, body: String) {
    let mut words = body.split(' ');
    let topic = words.next().unwrap_or_default().to_owned();
    let count: usize = words.next().and_then(|n| n.parse().ok()).unwrap_or(0);
    let filler = "z".repeat(1000);
    for i in 0..count {
        if messaging
            .publish(&topic, format!("{i}:{filler}"))
            .await
            .is_err()
        {
            return;
        }
    }
}

#[tokio::test]
async fn a_handler_publishing_in_a_loop_is_slowed_instead_of_cutting_subscribers_off() {
    if not_through_shared_relay("a handler's publishes wait for the subscribers they feed") {
        return;
    }
    let app = stompbox::app::App::new().message("/flood", flood);
    // Small outboxes, as in the burst tests: a handler's loop is as fast as
    // a burst.
    let server = spawn_app(app, |c| c.outbox_bytes = 64 * 1024).await;
    let topic = unique("/topic/flood");
    let count = 5_000;
    let mut readers = Vec::new();
    for (i, via) in [Via::Ws, Via::Tcp, Via::Ws].into_iter().enumerate() {
        let mut sub = server.connect(via).await;
        subscribe(&mut sub, &format!("s{i}"), &topic, "auto").await;
        readers.push(read_all(sub, count));
    }
    let mut client = server.connect(Via::Tcp).await;
    let frame = Frame::new(Command::Send)
        .header("destination", "/app/flood")
        .body(format!("{topic} {count}"));
    tokio::time::timeout(BURST_WAIT, client.send_with_receipt(frame, "flood"))
        .await
        .expect("the handler did not finish in time")
        .expect("SEND to /app/flood");
    for reader in readers {
        tokio::time::timeout(BURST_WAIT, reader)
            .await
            .expect("a subscriber did not get everything in time")
            .expect("a subscriber was cut off or got messages out of order");
    }
    assert_eq!(server.handle.stats().slow_consumers, 0);
}

/// `per_topic` numbered messages of `size` bytes to each of `topics`, in
/// turns (one to each topic, then the next round), the last with a
/// receipt.
fn burst_across(topics: &[String], per_topic: usize, size: usize) -> bytes::Bytes {
    let mut out = BytesMut::new();
    for i in 0..per_topic {
        for (t, topic) in topics.iter().enumerate() {
            let mut body = format!("{i}:");
            body.push_str(&"x".repeat(size.saturating_sub(body.len())));
            let mut frame = Frame::new(Command::Send)
                .header("destination", topic.as_str())
                .body(body);
            if i + 1 == per_topic && t + 1 == topics.len() {
                frame = frame.header("receipt", "burst-done");
            }
            encode_frame(&frame, Version::V1_2, &mut out);
        }
    }
    out.freeze()
}

#[tokio::test]
async fn stalled_subscribers_of_their_own_topics_are_cut_off_instead_of_pausing_the_server() {
    if embedded_only("the server-wide backlog") {
        return;
    }
    // Each stalled subscriber is on its own topic, so each holds messages
    // nobody else holds: real memory that passes the backlog limit and
    // pauses every connection (subscribers of one topic share a message's
    // bytes, whatever their subscription ids, so it takes distinct
    // messages). The send limit is far longer than the test may take, so
    // only the stall rule can end that pause in time. Each topic gets more
    // than the kernel buffers for a socket that is not read.
    const SUBSCRIBERS: usize = 8;
    let backlog_limit = 4 * 1024 * 1024;
    let server = spawn_server(|c| {
        c.backlog_bytes = backlog_limit;
        c.send_timeout = Duration::from_secs(120);
    })
    .await;
    let topics: Vec<String> = (0..SUBSCRIBERS)
        .map(|_| unique("/topic/stalled-own"))
        .collect();
    let mut stalled = Vec::new();
    for (i, topic) in topics.iter().enumerate() {
        let mut sub = server.connect(Via::Tcp).await;
        subscribe(&mut sub, &format!("s{i}"), topic, "auto").await;
        stalled.push(sub);
    }
    let mut publisher = server.connect(Via::Tcp).await;
    let feed = burst_across(&topics, 100, 60 * 1024);
    let feeding = tokio::spawn(async move {
        let _ = publisher.send_raw(feed).await;
        publisher
    });
    // The attack has taken hold once the backlog is over its limit (or the
    // stall rule has already cut someone off).
    let mut took_hold = false;
    // Each topic's subscriber congests on its own and pauses the publisher
    // a while before it counts as stalled, so this takes several seconds
    // (about 7 s here).
    for _ in 0..4_000 {
        let stats = server.handle.stats();
        if stats.backlog_bytes > backlog_limit || stats.slow_consumers > 0 {
            took_hold = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    assert!(
        took_hold,
        "the stalled subscribers never filled the backlog"
    );
    // A client arriving now connects and gets its messages: the stalled
    // ones are cut off about a second after the backlog passed its limit,
    // not at the send limit.
    let canary_topic = unique("/topic/canary");
    tokio::time::timeout(WAIT, async {
        let mut canary = server.connect(Via::Ws).await;
        subscribe(&mut canary, "c", &canary_topic, "auto").await;
        let mut canary_publisher = server.connect(Via::Tcp).await;
        for i in 0..5 {
            send_receipted(&mut canary_publisher, &canary_topic, &format!("canary {i}")).await;
            assert_eq!(
                body(&next_message(&mut canary).await),
                format!("canary {i}")
            );
        }
    })
    .await
    .expect("the server stayed paused by subscribers that read nothing");
    assert!(server.handle.stats().slow_consumers >= 1);
    feeding.abort();
    drop(stalled);
}
