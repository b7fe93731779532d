use crate::support::*;
use stompbox::codec::{Command, Frame};

#[tokio::test]
async fn topic_message_reaches_every_subscriber_with_headers_over_both_transports() {
    let server = default_server().await;
    let topic = unique("/topic/news.");
    let mut a = server.connect(Via::Ws).await;
    let mut b = server.connect(Via::Tcp).await;
    subscribe(&mut a, "s1", &topic, "auto").await;
    subscribe(&mut b, "s2", &topic, "auto").await;
    let mut publisher = server.connect(Via::Tcp).await;
    let send = Frame::new(Command::Send)
        .header("destination", &topic)
        .header("content-type", "text/plain")
        .header("x-trace", "abc:def")
        .header("receipt", "r-1")
        .body("hello");
    publisher.send(&send).await.expect("send");
    let receipt = next(&mut publisher).await;
    assert_eq!(receipt.command, Command::Receipt);
    assert_eq!(receipt.headers.get("receipt-id"), Some("r-1"));
    for (client, id) in [(&mut a, "s1"), (&mut b, "s2")] {
        let m = next_message(client).await;
        assert_eq!(m.headers.get("destination"), Some(topic.as_str()));
        assert_eq!(m.headers.get("subscription"), Some(id));
        assert_eq!(m.headers.get("content-type"), Some("text/plain"));
        assert_eq!(m.headers.get("content-length"), Some("5"));
        assert_eq!(m.headers.get("x-trace"), Some("abc:def"));
        assert_eq!(m.headers.get("receipt"), None);
        assert!(m.headers.get("message-id").is_some());
        assert_eq!(m.headers.get("ack"), None);
        assert_eq!(body(&m), "hello");
    }
}

#[tokio::test]
async fn wildcard_subscriptions_follow_rabbitmq_topic_rules() {
    if not_on_activemq("ActiveMQ's wildcards are '*' and '>', not '#'") {
        return;
    }
    let server = default_server().await;
    let base = unique("/topic/w");
    let mut star = server.connect(Via::Ws).await;
    let mut hash = server.connect(Via::Ws).await;
    subscribe(&mut star, "s", &format!("{base}.*.price"), "auto").await;
    subscribe(&mut hash, "h", &format!("{base}.#"), "auto").await;
    let mut publisher = server.connect(Via::Ws).await;
    // Matches neither `*.price` (two words) nor anything but `#`.
    send_receipted(&mut publisher, &format!("{base}.eu.de.price"), "deep").await;
    send_receipted(&mut publisher, &format!("{base}.eu.price"), "one").await;
    send_receipted(&mut publisher, &base, "zero-words").await;
    // `*` matched only the one-word middle.
    assert_eq!(body(&next_message(&mut star).await), "one");
    // `#` matched all three, in order.
    for expected in ["deep", "one", "zero-words"] {
        assert_eq!(body(&next_message(&mut hash).await), expected);
    }
    // Nothing else is pending for `star`: a marker arrives next.
    send_receipted(&mut publisher, &format!("{base}.marker.price"), "marker").await;
    assert_eq!(body(&next_message(&mut star).await), "marker");
}

#[tokio::test]
async fn unsubscribe_stops_delivery_and_binary_bodies_survive() {
    let server = default_server().await;
    let topic = unique("/topic/u");
    let mut sub = server.connect(Via::Ws).await;
    subscribe(&mut sub, "a", &topic, "auto").await;
    subscribe(&mut sub, "b", &format!("{topic}x"), "auto").await;
    let mut publisher = server.connect(Via::Tcp).await;
    let binary = Frame::new(Command::Send)
        .header("destination", &topic)
        .header("content-length", "4")
        .body(vec![0u8, 0xff, 0, 1]);
    publisher.send(&binary).await.expect("send");
    let m = next_message(&mut sub).await;
    assert_eq!(&m.body[..], &[0u8, 0xff, 0, 1]);
    sub.send_with_receipt(Frame::new(Command::Unsubscribe).header("id", "a"), "unsub")
        .await
        .expect("unsubscribe");
    send_receipted(&mut publisher, &topic, "dropped").await;
    send_receipted(&mut publisher, &format!("{topic}x"), "marker").await;
    let m = next_message(&mut sub).await;
    assert_eq!(m.headers.get("subscription"), Some("b"));
    assert_eq!(body(&m), "marker");
}

#[tokio::test]
async fn receipts_come_after_the_effect() {
    if not_on_activemq("ActiveMQ receipts a SEND before it dispatches the MESSAGE") {
        return;
    }
    let server = default_server().await;
    let topic = unique("/topic/r");
    let mut client = server.connect(Via::Ws).await;
    subscribe(&mut client, "self", &topic, "auto").await;
    // The MESSAGE to our own subscription is queued before the RECEIPT.
    let send = Frame::new(Command::Send)
        .header("destination", &topic)
        .header("receipt", "after")
        .body("mine");
    client.send(&send).await.expect("send");
    let first = next(&mut client).await;
    assert_eq!(first.command, Command::Message);
    let second = next(&mut client).await;
    assert_eq!(second.command, Command::Receipt);
    assert_eq!(second.headers.get("receipt-id"), Some("after"));
}

/// STOMP 1.0 unsubscribes by `destination` alone, whether the SUBSCRIBE
/// carried an `id` or not; an error names the header actually sent.
#[tokio::test]
async fn stomp_1_0_unsubscribes_by_destination() {
    let server = default_server().await;
    let with_id = unique("/topic/v10-id");
    let without_id = unique("/topic/v10-noid");
    let later = unique("/topic/v10-later");
    let mut v10 = subscribe_1_0(&server, &without_id).await;
    v10.send_with_receipt(
        Frame::new(Command::Subscribe)
            .header("destination", &with_id)
            .header("id", "mine"),
        "s-id",
    )
    .await
    .expect("subscribe with an id");
    for destination in [&with_id, &without_id] {
        v10.send_with_receipt(
            Frame::new(Command::Unsubscribe).header("destination", destination),
            &format!("u-{destination}"),
        )
        .await
        .expect("unsubscribe by destination");
    }
    // Nothing more arrives from either: a message to each, then one to a
    // new subscription, and the new one's is the first to come.
    v10.send_with_receipt(
        Frame::new(Command::Subscribe).header("destination", &later),
        "s-later",
    )
    .await
    .expect("subscribe");
    let mut publisher = server.connect(Via::Tcp).await;
    send_receipted(&mut publisher, &with_id, "to-with-id").await;
    send_receipted(&mut publisher, &without_id, "to-without-id").await;
    send_receipted(&mut publisher, &later, "to-later").await;
    assert_eq!(body(&next_message(&mut v10).await), "to-later");

    v10.send(&Frame::new(Command::Unsubscribe).header("destination", &with_id))
        .await
        .expect("send");
    let error = expect_error_and_close(&mut v10).await;
    assert_eq!(
        error.headers.get("message"),
        Some(format!("no subscription to destination '{with_id}'").as_str())
    );

    let mut v12 = server.connect(Via::Tcp).await;
    v12.send(&Frame::new(Command::Unsubscribe).header("id", "nope"))
        .await
        .expect("send");
    let error = expect_error_and_close(&mut v12).await;
    assert_eq!(
        error.headers.get("message"),
        Some("no subscription with id 'nope'")
    );
}
