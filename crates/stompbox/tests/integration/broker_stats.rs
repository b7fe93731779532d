//! What the broker tells an operator (`broker_stats`, `broker_destinations`,
//! `purge_queue`) moves with real traffic: queue depth with sends nobody
//! consumes, unacknowledged counts with client-ack consumers and their ACKs,
//! subscriptions and destinations with SUBSCRIBE, UNSUBSCRIBE and
//! disconnects; a purge empties a queue and gives its memory back. These
//! are the embedded broker's own figures (a relay's queues live in its
//! broker; tests/relay.rs checks the relay's).

use crate::support::*;
use stompbox::broker::{BrokerError, DestinationKind, DestinationStats};
use stompbox::client::Client;
use stompbox::codec::{Command, Frame};

/// The broker's entry for `name`, if it lists one.
fn destination(server: &TestServer, name: &str) -> Option<DestinationStats> {
    server
        .handle
        .broker_destinations(1000)
        .into_iter()
        .find(|d| d.name == name)
}

fn ack(m: &Frame) -> Frame {
    Frame::new(Command::Ack).header("id", m.headers.get("ack").expect("ack header"))
}

async fn disconnect(client: &mut Client) {
    client
        .send_with_receipt(Frame::new(Command::Disconnect), "bye")
        .await
        .expect("DISCONNECT");
}

/// Waits (bounded) until the broker counts `n` subscriptions: a connection
/// dropped without DISCONNECT is cleaned up by its own task, with no frame
/// to wait for.
async fn until_subscriptions(server: &TestServer, n: usize) {
    tokio::time::timeout(WAIT, async {
        while server.handle.broker_stats().subscriptions != n {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "subscriptions stayed at {:?}, expected {n}",
            server.handle.broker_stats()
        )
    });
}

#[tokio::test]
async fn queue_depth_grows_with_sends_and_unacked_with_a_client_ack_consumer() {
    if embedded_only("queue depth figures") {
        return;
    }
    let server = default_server().await;
    let queue = unique("/queue/depth-");
    let mut producer = server.connect(Via::Tcp).await;
    for i in 0..3 {
        send_receipted(&mut producer, &queue, &format!("m{i}")).await;
    }
    let stats = server.handle.broker_stats();
    assert_eq!(stats.queues, 1);
    assert_eq!(stats.queue_messages_ready, 3);
    assert_eq!(stats.queue_messages_unacked, 0);
    let waiting = destination(&server, &queue).expect("queue listed");
    assert_eq!(waiting.kind, DestinationKind::Queue);
    assert_eq!(
        (waiting.ready, waiting.unacked, waiting.subscribers),
        (3, 0, 0)
    );
    assert!(waiting.ready_bytes > 0);

    let mut consumer = server.connect(Via::Ws).await;
    subscribe_now(&mut consumer, "c", &queue, "client-individual").await;
    let mut messages = Vec::new();
    for _ in 0..3 {
        messages.push(next_message(&mut consumer).await);
    }
    // Recorded as pending before each was sent.
    let stats = server.handle.broker_stats();
    assert_eq!(stats.queue_messages_ready, 0);
    assert_eq!(stats.queue_messages_unacked, 3);
    let delivered = destination(&server, &queue).expect("queue listed");
    assert_eq!(
        (delivered.ready, delivered.ready_bytes, delivered.unacked),
        (0, 0, 3)
    );
    assert_eq!(delivered.subscribers, 1);

    consumer
        .send_with_receipt(ack(&messages[1]), "a1")
        .await
        .expect("ACK");
    assert_eq!(server.handle.broker_stats().queue_messages_unacked, 2);
    // A NACK puts one back to wait; the consumer gets it again at once,
    // before the NACK's RECEIPT.
    let nack = Frame::new(Command::Nack)
        .header("id", messages[0].headers.get("ack").expect("ack"))
        .header("receipt", "n0");
    consumer.send(&nack).await.expect("NACK");
    assert_eq!(body(&next_message(&mut consumer).await), "m0");
    assert_eq!(next(&mut consumer).await.command, Command::Receipt);
    assert_eq!(server.handle.broker_stats().queue_messages_unacked, 2);
    // Leaving puts what it held back in the queue.
    disconnect(&mut consumer).await;
    let stats = server.handle.broker_stats();
    assert_eq!(
        (stats.queue_messages_ready, stats.queue_messages_unacked),
        (2, 0)
    );
    assert_eq!(stats.subscriptions, 0);
}

#[tokio::test]
async fn purge_empties_waiting_messages_and_gives_their_memory_back() {
    if embedded_only("purging an embedded queue") {
        return;
    }
    let server = spawn_server(|c| c.embedded.max_unacked = 2).await;
    let queue = unique("/queue/purge-");
    let mut consumer = server.connect(Via::Ws).await;
    subscribe(&mut consumer, "c", &queue, "client-individual").await;
    let mut producer = server.connect(Via::Tcp).await;
    for i in 0..5 {
        send_receipted(&mut producer, &queue, &format!("m{i}")).await;
    }
    let held = next_message(&mut consumer).await;
    next_message(&mut consumer).await;
    let before = server.handle.stats().queue_bytes;
    let listed = destination(&server, &queue).expect("queue listed");
    assert_eq!((listed.ready, listed.unacked), (3, 2));

    assert_eq!(server.handle.purge_queue(&queue).await, Ok(3));
    let stats = server.handle.broker_stats();
    assert_eq!(stats.queue_messages_ready, 0);
    // Delivered messages stay with their consumer, as RabbitMQ's purge
    // leaves them.
    assert_eq!(stats.queue_messages_unacked, 2);
    let after = server.handle.stats().queue_bytes;
    assert!(
        after > 0 && after * 2 < before,
        "queue memory {before} → {after} after purging 3 of 5"
    );
    let listed = destination(&server, &queue).expect("queue still consumed");
    assert_eq!(
        (listed.ready, listed.ready_bytes, listed.unacked),
        (0, 0, 2)
    );
    // The queue takes new messages as before; the ACKed slot lets one in.
    send_receipted(&mut producer, &queue, "after").await;
    consumer
        .send(&ack(&held).header("receipt", "a"))
        .await
        .expect("ACK");
    assert_eq!(body(&next_message(&mut consumer).await), "after");
    assert_eq!(next(&mut consumer).await.command, Command::Receipt);

    disconnect(&mut consumer).await;
    assert_eq!(server.handle.broker_stats().queue_messages_ready, 2);
    assert_eq!(server.handle.purge_queue(&queue).await, Ok(2));
    assert_eq!(server.handle.stats().queue_bytes, 0);
    // Empty and unconsumed, the queue is gone, as after its last message.
    assert_eq!(destination(&server, &queue), None);
    assert!(matches!(
        server.handle.purge_queue(&queue).await,
        Err(BrokerError::UnknownDestination(_))
    ));
    assert!(matches!(
        server.handle.purge_queue("/topic/news").await,
        Err(BrokerError::InvalidDestination(why)) if why.contains("only queues")
    ));
}

#[tokio::test]
async fn subscriptions_and_destinations_go_with_unsubscribe_and_disconnect() {
    if embedded_only("the embedded broker's subscriptions") {
        return;
    }
    let server = default_server().await;
    let topic = unique("/topic/chat-");
    let pattern = format!("{topic}.#");
    let mut a = server.connect(Via::Ws).await;
    subscribe(&mut a, "t", &topic, "auto").await;
    subscribe(&mut a, "p", &pattern, "auto").await;
    let mut b = server.connect(Via::Tcp).await;
    subscribe(&mut b, "t", &topic, "auto").await;
    let stats = server.handle.broker_stats();
    assert_eq!((stats.subscriptions, stats.destinations), (3, 2));
    assert_eq!(destination(&server, &topic).map(|d| d.subscribers), Some(2));
    let listed = destination(&server, &pattern).expect("pattern listed");
    assert_eq!(
        (listed.kind, listed.subscribers),
        (DestinationKind::Pattern, 1)
    );

    a.send_with_receipt(Frame::new(Command::Unsubscribe).header("id", "t"), "u")
        .await
        .expect("UNSUBSCRIBE");
    assert_eq!(server.handle.broker_stats().subscriptions, 2);
    assert_eq!(destination(&server, &topic).map(|d| d.subscribers), Some(1));

    // The last subscriber of the topic goes without a word.
    drop(b);
    until_subscriptions(&server, 1).await;
    assert_eq!(destination(&server, &topic), None);
    assert_eq!(server.handle.broker_stats().destinations, 1);

    disconnect(&mut a).await;
    assert_eq!(server.handle.broker_stats(), Default::default());
    assert!(server.handle.broker_destinations(100).is_empty());
}

#[tokio::test]
async fn client_ack_topic_deliveries_count_until_acknowledged() {
    if embedded_only("the embedded broker's unacknowledged topic messages") {
        return;
    }
    let server = default_server().await;
    let topic = unique("/topic/acked-");
    let mut subscriber = server.connect(Via::Ws).await;
    subscribe(&mut subscriber, "s", &topic, "client").await;
    let mut publisher = server.connect(Via::Tcp).await;
    send_receipted(&mut publisher, &topic, "one").await;
    send_receipted(&mut publisher, &topic, "two").await;
    next_message(&mut subscriber).await;
    let second = next_message(&mut subscriber).await;
    assert_eq!(server.handle.broker_stats().topic_messages_unacked, 2);
    assert_eq!(destination(&server, &topic).map(|d| d.unacked), Some(2));
    // A `client` mode ACK takes every earlier message with it.
    subscriber
        .send_with_receipt(ack(&second), "a")
        .await
        .expect("ACK");
    assert_eq!(server.handle.broker_stats().topic_messages_unacked, 0);
    assert_eq!(server.handle.stats().topic_unacked_bytes, 0);
}

#[tokio::test]
async fn the_busiest_destinations_come_first_and_the_limit_caps_the_list() {
    if embedded_only("the embedded broker's destinations") {
        return;
    }
    let server = default_server().await;
    let deep = unique("/queue/deep-");
    let shallow = unique("/queue/shallow-");
    let topic = unique("/topic/quiet-");
    let mut client = server.connect(Via::Tcp).await;
    subscribe(&mut client, "t", &topic, "auto").await;
    for i in 0..3 {
        send_receipted(&mut client, &deep, &format!("d{i}")).await;
    }
    send_receipted(&mut client, &shallow, "s").await;
    let names: Vec<_> = server
        .handle
        .broker_destinations(10)
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(names, [deep.clone(), shallow, topic]);
    let capped: Vec<_> = server
        .handle
        .broker_destinations(1)
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert_eq!(capped, [deep]);
}

#[tokio::test]
async fn user_destinations_are_listed_as_such_and_hold_nothing_to_purge() {
    if embedded_only("the embedded broker's user destinations") {
        return;
    }
    let server = spawn_authenticated(stompbox::app::App::new(), |_| {}).await;
    let mut ann = login(&server, Via::Ws, "ann").await;
    subscribe(&mut ann, "n", "/user/queue/notes", "auto").await;
    // The user's destination and the session's.
    let users: Vec<_> = server
        .handle
        .broker_destinations(10)
        .into_iter()
        .filter(|d| d.kind == DestinationKind::User)
        .collect();
    assert_eq!(users.len(), 2, "{users:?}");
    assert_eq!(server.handle.broker_stats().subscriptions, 2);
    for user in &users {
        assert_eq!(server.handle.purge_queue(&user.name).await, Ok(0));
    }
    server
        .handle
        .messaging()
        .send_to_user("ann", "/queue/notes", "still here")
        .await
        .expect("send to ann");
    assert_eq!(body(&next_message(&mut ann).await), "still here");
}
