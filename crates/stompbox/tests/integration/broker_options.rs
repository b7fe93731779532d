//! RabbitMQ's STOMP options that an application may rely on when it moves
//! between the embedded broker and RabbitMQ: `prefetch-count` on SUBSCRIBE,
//! `requeue:false` on NACK, and the `redelivered` header.

use crate::support::*;
use stompbox::ServerConfig;
use stompbox::client::Client;
use stompbox::codec::{Command, Frame};

const PREFETCH: &str = "prefetch-count";

fn ack_id(m: &Frame) -> String {
    m.headers.get("ack").expect("ack header").to_owned()
}

/// The relay passes a client's `prefetch-count` on only where the operator
/// lists it; these tests need it passed.
fn forward_prefetch(config: &mut ServerConfig) {
    if let Some(relay) = config.relay.as_mut() {
        relay.subscribe_headers.push(PREFETCH.into());
    }
}

async fn subscribe_with(
    client: &mut Client,
    id: &str,
    destination: &str,
    ack: &str,
    extra: &[(&str, &str)],
) {
    let mut frame = Frame::new(Command::Subscribe)
        .header("id", id)
        .header("destination", destination)
        .header("ack", ack);
    for (name, value) in extra {
        frame = frame.header(name, value);
    }
    client
        .send_with_receipt(frame, &format!("sub-{id}"))
        .await
        .expect("SUBSCRIBE");
}

/// A consumer over WebSocket, subscribed with a `prefetch-count`.
async fn prefetching(
    server: &TestServer,
    id: &str,
    destination: &str,
    ack: &str,
    prefetch: &str,
) -> Client {
    let mut client = server.connect(Via::Ws).await;
    subscribe_with(&mut client, id, destination, ack, &[(PREFETCH, prefetch)]).await;
    client
}

/// A consumer over WebSocket with one `client-individual` subscription,
/// and a producer over TCP.
async fn consumer_and_producer(
    server: &TestServer,
    id: &str,
    destination: &str,
) -> (Client, Client) {
    let mut consumer = server.connect(Via::Ws).await;
    subscribe(&mut consumer, id, destination, "client-individual").await;
    let producer = server.connect(Via::Tcp).await;
    (consumer, producer)
}

/// Sends `{prefix}{i}` for each `i`, each confirmed by a receipt.
async fn send_numbered(
    producer: &mut Client,
    destination: &str,
    prefix: &str,
    numbers: std::ops::Range<usize>,
) {
    for i in numbers {
        send_receipted(producer, destination, &format!("{prefix}{i}")).await;
    }
}

/// The next messages are `{prefix}{i}` for each `i`, in order.
async fn expect_numbered(consumer: &mut Client, prefix: &str, numbers: std::ops::Range<usize>) {
    for i in numbers {
        assert_eq!(body(&next_message(consumer).await), format!("{prefix}{i}"));
    }
}

async fn ack(client: &mut Client, m: &Frame) {
    client
        .send(&Frame::new(Command::Ack).header("id", &ack_id(m)))
        .await
        .expect("ACK");
}

async fn ack_receipted(client: &mut Client, m: &Frame, receipt: &str) {
    client
        .send_with_receipt(Frame::new(Command::Ack).header("id", &ack_id(m)), receipt)
        .await
        .expect("ACK");
}

/// A NACK with `requeue:false`, confirmed by a receipt.
async fn nack_dropping(client: &mut Client, m: &Frame, receipt: &str) {
    client
        .send_with_receipt(
            Frame::new(Command::Nack)
                .header("id", &ack_id(m))
                .header("requeue", "false"),
            receipt,
        )
        .await
        .expect("NACK requeue:false");
}

#[tokio::test]
async fn prefetch_count_leaves_the_rest_of_a_queue_to_other_consumers_until_acked() {
    if not_on_activemq("ActiveMQ's prefetch header is activemq.prefetchSize") {
        return;
    }
    let server = spawn_server(forward_prefetch).await;
    let queue = unique("/queue/prefetch");
    let mut limited = prefetching(&server, "limited", &queue, "client-individual", "2").await;
    let mut producer = server.connect(Via::Tcp).await;
    send_numbered(&mut producer, &queue, "m", 0..6).await;
    let first = next_message(&mut limited).await;
    let second = next_message(&mut limited).await;
    assert_eq!((body(&first), body(&second)), ("m0", "m1"));

    // Everything past the prefetch waited in the queue: a consumer that
    // comes later gets all of it.
    let mut other = server.connect(Via::Tcp).await;
    subscribe_now(&mut other, "other", &queue, "auto").await;
    expect_numbered(&mut other, "m", 2..6).await;
    other
        .send_with_receipt(
            Frame::new(Command::Unsubscribe).header("id", "other"),
            "unsub",
        )
        .await
        .expect("UNSUBSCRIBE");

    send_numbered(&mut producer, &queue, "m", 6..9).await;
    // Each ACK makes room for one more, and dispatch resumes.
    ack(&mut limited, &first).await;
    let third = next_message(&mut limited).await;
    assert_eq!(body(&third), "m6");
    limited
        .send(&Frame::new(Command::Nack).header("id", &ack_id(&second)))
        .await
        .expect("NACK");
    // The NACKed message comes back first, in the room it freed.
    let again = next_message(&mut limited).await;
    assert_eq!(body(&again), "m1");
    assert_eq!(again.headers.get("redelivered"), Some("true"));
    for m in [&third, &again] {
        ack(&mut limited, m).await;
    }
    assert_eq!(body(&next_message(&mut limited).await), "m7");
    assert_eq!(body(&next_message(&mut limited).await), "m8");
}

/// RabbitMQ holds a topic subscription's messages past its prefetch in the
/// subscription's own queue; the embedded broker holds them for it.
#[tokio::test]
async fn prefetch_count_on_a_topic_holds_later_messages_until_acked() {
    if not_on_activemq("ActiveMQ's prefetch header is activemq.prefetchSize") {
        return;
    }
    let server = spawn_server(forward_prefetch).await;
    let topic = unique("/topic/prefetch.");
    let marker_topic = unique("/topic/marker.");
    let mut subscriber = prefetching(&server, "t", &topic, "client-individual", "1").await;
    subscribe(&mut subscriber, "marker", &marker_topic, "auto").await;
    let mut publisher = server.connect(Via::Tcp).await;
    send_numbered(&mut publisher, &topic, "t", 0..3).await;
    send_receipted(&mut publisher, &marker_topic, "marker").await;
    // Published after t1 and t2, so a subscriber given them would have
    // them by the time the marker is there.
    let mut first = None;
    let mut marker = false;
    while first.is_none() || !marker {
        let m = next_message(&mut subscriber).await;
        match m.headers.get("subscription") {
            Some("marker") => marker = true,
            _ => {
                assert_eq!(body(&m), "t0", "past the prefetch of 1: {m:?}");
                assert!(first.is_none(), "a second message in flight: {m:?}");
                first = Some(m);
            }
        }
    }
    let mut held = first.expect("t0");
    for i in 1..3 {
        ack(&mut subscriber, &held).await;
        held = next_message(&mut subscriber).await;
        assert_eq!(body(&held), format!("t{i}"));
        assert_eq!(held.headers.get("redelivered"), Some("false"));
    }
    ack_receipted(&mut subscriber, &held, "last").await;
}

#[tokio::test]
async fn a_huge_prefetch_count_does_not_lift_max_unacked() {
    if embedded_only("max_unacked") {
        return;
    }
    let server = spawn_server(|c| c.embedded.max_unacked = 3).await;
    let queue = unique("/queue/huge-prefetch");
    let mut greedy = prefetching(&server, "greedy", &queue, "client", "1000000").await;
    let mut producer = server.connect(Via::Tcp).await;
    send_numbered(&mut producer, &queue, "m", 0..5).await;
    expect_numbered(&mut greedy, "m", 0..3).await;
    let mut other = server.connect(Via::Tcp).await;
    subscribe_now(&mut other, "other", &queue, "auto").await;
    expect_numbered(&mut other, "m", 3..5).await;
}

/// What a topic subscription holds back past its prefetch counts against
/// `max_unacked` with what is in flight: a subscriber that stops
/// acknowledging is a slow consumer as before, not an unbounded buffer.
#[tokio::test]
async fn held_back_topic_messages_count_against_max_unacked() {
    if embedded_only("max_unacked") {
        return;
    }
    let server = spawn_server(|c| c.embedded.max_unacked = 3).await;
    let topic = unique("/topic/held-back.");
    let mut subscriber = prefetching(&server, "t", &topic, "client-individual", "1").await;
    let mut publisher = server.connect(Via::Tcp).await;
    send_numbered(&mut publisher, &topic, "t", 0..4).await;
    assert_eq!(body(&next_message(&mut subscriber).await), "t0");
    let error = expect_error_and_close(&mut subscriber).await;
    let message = error.headers.get("message").unwrap_or_default();
    assert!(message.contains("max_unacked"), "{error:?}");
}

#[tokio::test]
async fn an_invalid_prefetch_count_is_refused_naming_the_header() {
    if embedded_only("the embedded broker's check of prefetch-count") {
        return;
    }
    for value in ["abc", "-1", "", "1.5"] {
        let server = default_server().await;
        let mut client = server.connect(Via::Tcp).await;
        client
            .send(
                &Frame::new(Command::Subscribe)
                    .header("id", "q")
                    .header("destination", "/queue/prefetch-invalid")
                    .header("ack", "client")
                    .header(PREFETCH, value),
            )
            .await
            .expect("SUBSCRIBE");
        let error = expect_error_and_close(&mut client).await;
        let message = error.headers.get("message").unwrap_or_default();
        assert!(message.contains(PREFETCH), "{value:?}: {error:?}");
    }
    // With `ack:auto` there is nothing to bound, and RabbitMQ ignores it.
    let server = default_server().await;
    let mut client = server.connect(Via::Tcp).await;
    subscribe_with(
        &mut client,
        "q",
        "/queue/prefetch-auto",
        "auto",
        &[(PREFETCH, "abc")],
    )
    .await;
}

#[tokio::test]
async fn prefetch_count_zero_means_no_limit_of_its_own() {
    if not_on_activemq("ActiveMQ's prefetch header is activemq.prefetchSize") {
        return;
    }
    let server = spawn_server(forward_prefetch).await;
    let queue = unique("/queue/prefetch-zero");
    let mut consumer = prefetching(&server, "c", &queue, "client-individual", "0").await;
    let mut producer = server.connect(Via::Tcp).await;
    send_numbered(&mut producer, &queue, "m", 0..5).await;
    expect_numbered(&mut consumer, "m", 0..5).await;
}

#[tokio::test]
async fn nack_with_requeue_false_drops_the_message() {
    let server = default_server().await;
    let queue = unique("/queue/requeue-false");
    let (mut consumer, mut producer) = consumer_and_producer(&server, "c", &queue).await;
    send_receipted(&mut producer, &queue, "dropped").await;
    let m = next_message(&mut consumer).await;
    assert_eq!(body(&m), "dropped");
    nack_dropping(&mut consumer, &m, "nack").await;
    // Sent after the NACK took effect: had the message been requeued, it
    // would come first.
    send_receipted(&mut producer, &queue, "next").await;
    let next = next_message(&mut consumer).await;
    assert_eq!(body(&next), "next", "{next:?}");
    ack_receipted(&mut consumer, &next, "ack").await;
    if test_broker() == TestBroker::Embedded {
        assert_eq!(server.handle.broker_stats().queue_messages_discarded, 1);
    }
}

#[tokio::test]
async fn nack_with_requeue_true_redelivers() {
    if not_on_activemq("ActiveMQ sends a NACKed message to its dead-letter queue") {
        return;
    }
    let server = default_server().await;
    let queue = unique("/queue/requeue-true");
    let (mut consumer, mut producer) = consumer_and_producer(&server, "c", &queue).await;
    send_receipted(&mut producer, &queue, "again").await;
    let m = next_message(&mut consumer).await;
    consumer
        .send(
            &Frame::new(Command::Nack)
                .header("id", &ack_id(&m))
                .header("requeue", "true"),
        )
        .await
        .expect("NACK");
    let again = next_message(&mut consumer).await;
    assert_eq!(body(&again), "again");
    assert_eq!(again.headers.get("redelivered"), Some("true"));
    ack_receipted(&mut consumer, &again, "ack").await;
}

/// RabbitMQ writes `redelivered:false` on every first delivery, topic or
/// queue, whatever the ack mode.
#[tokio::test]
async fn first_deliveries_say_redelivered_false() {
    if not_on_activemq("ActiveMQ writes no redelivered header on a first delivery") {
        return;
    }
    let server = default_server().await;
    let queue = unique("/queue/first");
    let topic = unique("/topic/first.");
    for via in BOTH {
        let mut client = server.connect(via).await;
        subscribe(&mut client, "q", &queue, "client-individual").await;
        subscribe(&mut client, "auto", &topic, "auto").await;
        subscribe(&mut client, "client", &topic, "client").await;
        let mut producer = server.connect(via).await;
        send_receipted(&mut producer, &queue, "queued").await;
        send_receipted(&mut producer, &topic, "published").await;
        let mut seen = Vec::new();
        for _ in 0..3 {
            let m = next_message(&mut client).await;
            assert_eq!(m.headers.get("redelivered"), Some("false"), "{m:?}");
            seen.push(m.headers.get("subscription").unwrap_or_default().to_owned());
            if m.headers.get("ack").is_some() {
                ack(&mut client, &m).await;
            }
        }
        seen.sort();
        assert_eq!(seen, ["auto", "client", "q"]);
    }
}

/// RabbitMQ requeues a NACKed topic message in the subscription's own
/// queue, so the same subscriber gets it again; `requeue:false` drops it.
#[tokio::test]
async fn nack_on_a_topic_redelivers_to_the_same_subscription() {
    if not_on_activemq("ActiveMQ sends a NACKed message to its dead-letter queue") {
        return;
    }
    let server = default_server().await;
    let topic = unique("/topic/nack.");
    let (mut subscriber, mut publisher) = consumer_and_producer(&server, "t", &topic).await;
    send_receipted(&mut publisher, &topic, "again").await;
    let m = next_message(&mut subscriber).await;
    assert_eq!(m.headers.get("redelivered"), Some("false"));
    subscriber
        .send(&Frame::new(Command::Nack).header("id", &ack_id(&m)))
        .await
        .expect("NACK");
    let again = next_message(&mut subscriber).await;
    assert_eq!(body(&again), "again");
    assert_eq!(again.headers.get("redelivered"), Some("true"));
    nack_dropping(&mut subscriber, &again, "dropped").await;
    send_receipted(&mut publisher, &topic, "next").await;
    let next = next_message(&mut subscriber).await;
    assert_eq!(body(&next), "next", "{next:?}");
    ack_receipted(&mut subscriber, &next, "ack").await;
}
