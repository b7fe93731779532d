use crate::support::*;
use stompbox::client::Client;
use stompbox::codec::{Command, Frame, Version};

fn ack(id: &str) -> Frame {
    Frame::new(Command::Ack).header("id", id)
}

fn nack(id: &str) -> Frame {
    Frame::new(Command::Nack).header("id", id)
}

fn ack_id(m: &Frame) -> String {
    m.headers.get("ack").expect("ack header").to_owned()
}

#[tokio::test]
async fn queue_messages_go_to_competing_consumers_in_turn() {
    let server = default_server().await;
    let queue = unique("/queue/work");
    let mut a = server.connect(Via::Ws).await;
    let mut b = server.connect(Via::Tcp).await;
    subscribe(&mut a, "a", &queue, "auto").await;
    subscribe(&mut b, "b", &queue, "auto").await;
    let mut producer = server.connect(Via::Tcp).await;
    for i in 0..6 {
        send_receipted(&mut producer, &queue, &format!("m{i}")).await;
    }
    let mut got_a = Vec::new();
    let mut got_b = Vec::new();
    for _ in 0..3 {
        got_a.push(body(&next_message(&mut a).await).to_owned());
        got_b.push(body(&next_message(&mut b).await).to_owned());
    }
    assert_eq!(got_a, ["m0", "m2", "m4"]);
    assert_eq!(got_b, ["m1", "m3", "m5"]);
}

#[tokio::test]
async fn queue_holds_messages_until_a_consumer_arrives() {
    let server = default_server().await;
    let queue = unique("/queue/held");
    let mut producer = server.connect(Via::Ws).await;
    for i in 0..3 {
        send_receipted(&mut producer, &queue, &format!("m{i}")).await;
    }
    let mut consumer = server.connect(Via::Ws).await;
    subscribe_now(&mut consumer, "c", &queue, "auto").await;
    for i in 0..3 {
        let m = next_message(&mut consumer).await;
        assert_eq!(body(&m), format!("m{i}"));
        if test_broker() != TestBroker::ActiveMq {
            assert_eq!(m.headers.get("redelivered"), Some("false"));
        }
    }
}

#[tokio::test]
async fn a_full_queue_refuses_sends_with_an_error() {
    if embedded_only("max_queue_messages") {
        return;
    }
    let server = spawn_server(|c| c.embedded.max_queue_messages = 2).await;
    let queue = unique("/queue/full");
    let mut producer = server.connect(Via::Tcp).await;
    send_receipted(&mut producer, &queue, "1").await;
    send_receipted(&mut producer, &queue, "2").await;
    producer
        .send(
            &Frame::new(Command::Send)
                .header("destination", &queue)
                .header("receipt", "r3")
                .body("3"),
        )
        .await
        .expect("send");
    let error = expect_error_and_close(&mut producer).await;
    assert_eq!(error.headers.get("receipt-id"), Some("r3"));
    assert!(
        error
            .headers
            .get("message")
            .is_some_and(|m| m.contains("full"))
    );
    // Nothing accepted was lost.
    let mut consumer = server.connect(Via::Tcp).await;
    subscribe_now(&mut consumer, "c", &queue, "auto").await;
    assert_eq!(body(&next_message(&mut consumer).await), "1");
    assert_eq!(body(&next_message(&mut consumer).await), "2");
}

#[tokio::test]
async fn client_individual_unacked_messages_are_redelivered_to_another_consumer_on_disconnect() {
    let server = default_server().await;
    let queue = unique("/queue/ci");
    let mut first = server.connect(Via::Ws).await;
    subscribe(&mut first, "s", &queue, "client-individual").await;
    let mut producer = server.connect(Via::Tcp).await;
    for i in 1..=4 {
        send_receipted(&mut producer, &queue, &format!("m{i}")).await;
    }
    let mut ids = Vec::new();
    for i in 1..=4 {
        let m = next_message(&mut first).await;
        assert_eq!(body(&m), format!("m{i}"));
        ids.push(ack_id(&m));
    }
    first
        .send_with_receipt(ack(&ids[0]), "a1")
        .await
        .expect("ack m1");
    first
        .send_with_receipt(ack(&ids[2]), "a3")
        .await
        .expect("ack m3");
    drop(first);
    let mut second = server.connect(Via::Tcp).await;
    subscribe_now(&mut second, "t", &queue, "auto").await;
    for expected in ["m2", "m4"] {
        let m = next_message(&mut second).await;
        assert_eq!(body(&m), expected);
        assert_eq!(m.headers.get("redelivered"), Some("true"));
    }
    send_receipted(&mut producer, &queue, "marker").await;
    assert_eq!(body(&next_message(&mut second).await), "marker");
}

#[tokio::test]
async fn client_mode_ack_is_cumulative() {
    let server = default_server().await;
    let queue = unique("/queue/cumulative");
    let mut consumer = server.connect(Via::Tcp).await;
    subscribe(&mut consumer, "s", &queue, "client").await;
    let mut producer = server.connect(Via::Tcp).await;
    for i in 1..=3 {
        send_receipted(&mut producer, &queue, &format!("m{i}")).await;
    }
    let mut ids = Vec::new();
    for _ in 0..3 {
        ids.push(ack_id(&next_message(&mut consumer).await));
    }
    // Acking m2 acks m1 too; only m3 comes back after the disconnect.
    consumer
        .send_with_receipt(ack(&ids[1]), "a")
        .await
        .expect("ack");
    // m1 is no longer pending: acking it is an error.
    consumer.send(&ack(&ids[0])).await.expect("send");
    expect_error_and_close(&mut consumer).await;
    let mut other = server.connect(Via::Tcp).await;
    subscribe_now(&mut other, "o", &queue, "auto").await;
    let m = next_message(&mut other).await;
    assert_eq!(body(&m), "m3");
    assert_eq!(m.headers.get("redelivered"), Some("true"));
}

#[tokio::test]
async fn nack_redelivers_to_the_next_consumer_with_redelivered_true() {
    if not_on_activemq("ActiveMQ sends a NACKed message to its dead-letter queue") {
        return;
    }
    let server = default_server().await;
    let queue = unique("/queue/nack");
    let mut a = server.connect(Via::Ws).await;
    let mut b = server.connect(Via::Ws).await;
    subscribe(&mut a, "a", &queue, "client-individual").await;
    subscribe(&mut b, "b", &queue, "client-individual").await;
    let mut producer = server.connect(Via::Ws).await;
    send_receipted(&mut producer, &queue, "m1").await;
    let m = next_message(&mut a).await;
    assert_eq!(body(&m), "m1");
    a.send_with_receipt(nack(&ack_id(&m)), "n")
        .await
        .expect("nack");
    let again = next_message(&mut b).await;
    assert_eq!(body(&again), "m1");
    assert_eq!(again.headers.get("redelivered"), Some("true"));
    if test_broker() == TestBroker::Embedded {
        // RabbitMQ's message ids name the delivery, so they change.
        assert_eq!(again.headers.get("message-id"), m.headers.get("message-id"));
    }
    b.send_with_receipt(ack(&ack_id(&again)), "ok")
        .await
        .expect("ack");
}

#[tokio::test]
async fn ack_of_an_unknown_id_is_an_error_and_others_keep_working() {
    let server = default_server().await;
    let queue = unique("/queue/unknown-ack");
    let mut bystander = server.connect(Via::Tcp).await;
    subscribe(&mut bystander, "b", &queue, "auto").await;
    let mut client = server.connect(Via::Ws).await;
    client
        .send(
            &Frame::new(Command::Ack)
                .header("id", "no-such-message")
                .header("receipt", "r"),
        )
        .await
        .expect("send");
    let error = expect_error_and_close(&mut client).await;
    assert_eq!(error.headers.get("receipt-id"), Some("r"));
    let mut producer = server.connect(Via::Tcp).await;
    send_receipted(&mut producer, &queue, "still-here").await;
    assert_eq!(body(&next_message(&mut bystander).await), "still-here");
}

#[tokio::test]
async fn prefetch_limit_holds_back_messages_until_acked() {
    if embedded_only("max_unacked") {
        return;
    }
    let server = spawn_server(|c| c.embedded.max_unacked = 2).await;
    let queue = unique("/queue/prefetch");
    let mut consumer = server.connect(Via::Tcp).await;
    subscribe(&mut consumer, "s", &queue, "client-individual").await;
    let mut producer = server.connect(Via::Tcp).await;
    for i in 1..=3 {
        send_receipted(&mut producer, &queue, &format!("m{i}")).await;
    }
    let first = next_message(&mut consumer).await;
    let second = next_message(&mut consumer).await;
    assert_eq!(body(&second), "m2");
    // m3 waits for room; the ACK's RECEIPT comes after m3 is dispatched.
    consumer
        .send(&ack(&ack_id(&first)).header("receipt", "a1"))
        .await
        .expect("ack");
    let third = next(&mut consumer).await;
    assert_eq!(third.command, Command::Message);
    assert_eq!(body(&third), "m3");
    assert_eq!(next(&mut consumer).await.command, Command::Receipt);
}

#[tokio::test]
async fn stomp_1_1_and_1_0_acknowledge_by_message_id() {
    let server = default_server().await;
    let queue = unique("/queue/old-acks");
    let mut producer = server.connect(Via::Tcp).await;
    send_receipted(&mut producer, &queue, "for-1.1").await;
    // STOMP 1.1: message-id plus subscription.
    let mut v11 = server.open(Via::Tcp).await;
    v11.send(
        &Frame::new(Command::Connect)
            .header("accept-version", "1.1")
            .header("host", "x"),
    )
    .await
    .expect("send");
    assert_eq!(next(&mut v11).await.headers.get("version"), Some("1.1"));
    v11.set_version(Version::V1_1);
    subscribe_now(&mut v11, "s11", &queue, "client").await;
    let m = next_message(&mut v11).await;
    let message_id = m.headers.get("message-id").expect("message-id").to_owned();
    v11.send_with_receipt(
        Frame::new(Command::Ack)
            .header("message-id", &message_id)
            .header("subscription", "s11"),
        "a11",
    )
    .await
    .expect("1.1 ack");
    v11.send_with_receipt(Frame::new(Command::Disconnect), "bye")
        .await
        .expect("disconnect");

    // STOMP 1.0: message-id alone; NACK does not exist.
    send_receipted(&mut producer, &queue, "for-1.0").await;
    let mut v10 = server.open(Via::Tcp).await;
    v10.send(&Frame::new(Command::Connect).header("host", "x"))
        .await
        .expect("send");
    assert_eq!(next(&mut v10).await.headers.get("version"), Some("1.0"));
    v10.set_version(Version::V1_0);
    v10.send(
        &Frame::new(Command::Subscribe)
            .header("destination", &queue)
            .header("ack", "client"),
    )
    .await
    .expect("subscribe");
    let m = next_message(&mut v10).await;
    // The 1.1 ACK took effect: only the new message arrives, not a redelivery.
    assert_eq!(body(&m), "for-1.0");
    let message_id = m.headers.get("message-id").expect("message-id").to_owned();
    v10.send_with_receipt(
        Frame::new(Command::Ack).header("message-id", &message_id),
        "a10",
    )
    .await
    .expect("1.0 ack");
    v10.send(&Frame::new(Command::Nack).header("message-id", &message_id))
        .await
        .expect("send");
    expect_error_and_close(&mut v10).await;
}

#[tokio::test]
async fn topic_subscribers_in_client_mode_must_ack() {
    let server = default_server().await;
    let topic = unique("/topic/acked");
    let mut consumer = server.connect(Via::Ws).await;
    subscribe(&mut consumer, "s", &topic, "client-individual").await;
    let mut producer = server.connect(Via::Ws).await;
    send_receipted(&mut producer, &topic, "t1").await;
    let m = next_message(&mut consumer).await;
    let id = ack_id(&m);
    consumer
        .send_with_receipt(ack(&id), "a")
        .await
        .expect("ack");
    // The same message cannot be acknowledged twice.
    consumer.send(&ack(&id)).await.expect("send");
    expect_error_and_close(&mut consumer).await;
    let _ = Client::open;
}

#[tokio::test]
async fn a_queue_deeper_than_an_outbox_drains_to_a_consumer_that_keeps_up() {
    let server = spawn_server(|c| c.outbox_bytes = 512 * 1024).await;
    let filler = "x".repeat(1000);
    for ack in ["auto", "client-individual"] {
        // 2 MB waiting, four times the outbox limit.
        let queue = unique("/queue/deep");
        let mut producer = server.connect(Via::Tcp).await;
        for i in 0..2000 {
            let frame = Frame::new(Command::Send)
                .header("destination", &queue)
                .body(format!("{i}:{filler}"));
            if i % 200 == 199 {
                producer
                    .send_with_receipt(frame, &format!("r{i}"))
                    .await
                    .expect("send");
            } else {
                producer.send(&frame).await.expect("send");
            }
        }
        let mut consumer = server.connect(Via::Ws).await;
        subscribe_now(&mut consumer, "c", &queue, ack).await;
        for i in 0..2000 {
            let m = next_message(&mut consumer).await;
            assert!(
                body(&m).starts_with(&format!("{i}:")),
                "{ack}: message {i} missing, got {:?} (redelivered {:?})",
                body(&m).get(..12),
                m.headers.get("redelivered")
            );
            if ack != "auto" {
                consumer
                    .send(&super::queue::ack(&ack_id(&m)))
                    .await
                    .expect("ack");
            }
        }
    }
    assert_eq!(server.handle.stats().slow_consumers, 0);
}
