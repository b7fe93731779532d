//! Wildcard topic patterns are bounded per pattern and per session, and a
//! client holding as many as it may does not hold up other topics.

use crate::support::*;
use stompbox::client::Client;
use stompbox::codec::{Command, Frame};

fn pattern_subscribe(id: usize, destination: &str) -> Frame {
    Frame::new(Command::Subscribe)
        .header("id", &format!("p{id}"))
        .header("destination", destination)
}

/// Subscribes `count` patterns that match nothing else, waiting for the
/// last one's RECEIPT (the frames before it are handled in order).
async fn hold_patterns(client: &mut Client, base: &str, count: usize) {
    for i in 0..count {
        let frame = pattern_subscribe(i, &format!("/topic/#.{base}-{i}"));
        if i + 1 == count {
            client
                .send_with_receipt(frame, "held")
                .await
                .expect("patterns up to the cap are accepted");
        } else {
            client.send(&frame).await.expect("SUBSCRIBE");
        }
    }
}

#[tokio::test]
async fn a_session_past_its_wildcard_subscription_cap_gets_an_error_naming_the_limit() {
    if embedded_only("max_wildcard_subscriptions") {
        return;
    }
    let server = spawn_server(|c| c.embedded.max_wildcard_subscriptions = 3).await;
    let base = unique("cap");
    let mut client = server.connect(Via::Tcp).await;
    hold_patterns(&mut client, &base, 3).await;
    // Exact destinations do not count against it.
    subscribe(
        &mut client,
        "exact",
        &format!("/topic/{base}.exact"),
        "auto",
    )
    .await;
    // An UNSUBSCRIBE gives the slot back.
    client
        .send_with_receipt(Frame::new(Command::Unsubscribe).header("id", "p0"), "u")
        .await
        .expect("UNSUBSCRIBE");
    let again = pattern_subscribe(10, &format!("/topic/*.{base}.again"));
    client
        .send_with_receipt(again, "again")
        .await
        .expect("a freed slot is usable");
    let over = pattern_subscribe(11, &format!("/topic/{base}.over.#"));
    client
        .send(&over.header("receipt", "over"))
        .await
        .expect("send");
    let error = expect_error_and_close(&mut client).await;
    let message = error.headers.get("message").unwrap_or_default();
    assert!(
        message.contains("max_wildcard_subscriptions") && message.contains("limit 3"),
        "{message}"
    );
    assert_eq!(error.headers.get("receipt-id"), Some("over"));
}

#[tokio::test]
async fn a_pattern_longer_than_the_word_cap_gets_an_error_naming_the_limit() {
    if embedded_only("max_pattern_words") {
        return;
    }
    let server = default_server().await;
    let base = unique("words");
    let mut client = server.connect(Via::Ws).await;
    // 32 words, the default cap, are fine.
    let longest = format!("/topic/{base}{}", ".*".repeat(31));
    client
        .send_with_receipt(pattern_subscribe(0, &longest), "ok")
        .await
        .expect("a pattern at the cap is accepted");
    // A long run of `#`, which once cost a stored word each, is refused.
    let hostile = format!("/topic/{base}{}", ".#".repeat(2000));
    client
        .send(&pattern_subscribe(1, &hostile))
        .await
        .expect("send");
    let error = expect_error_and_close(&mut client).await;
    let message = error.headers.get("message").unwrap_or_default();
    assert!(
        message.contains("max_pattern_words") && message.contains("2001 words"),
        "{message}"
    );
}

/// One connection holds its maximum of patterns (and a second one that
/// tries for more is refused and closed, its patterns removed), while a
/// subscriber of another topic receives every receipted message, in order.
#[tokio::test]
async fn a_client_at_its_wildcard_cap_does_not_hold_up_another_topic() {
    if embedded_only("max_wildcard_subscriptions") {
        return;
    }
    let server = default_server().await;
    let cap = stompbox::broker::embedded::EmbeddedConfig::default().max_wildcard_subscriptions;
    let base = unique("attack");
    let mut holder = server.connect(Via::Ws).await;
    hold_patterns(&mut holder, &format!("{base}-a"), cap).await;
    let mut greedy = server.connect(Via::Tcp).await;
    hold_patterns(&mut greedy, &format!("{base}-b"), cap).await;
    let topic = format!("/topic/{base}.news");
    let mut reader = server.connect(Via::Tcp).await;
    subscribe(&mut reader, "s", &topic, "auto").await;
    let mut publisher = server.connect(Via::Ws).await;
    greedy
        .send(&pattern_subscribe(cap, &format!("/topic/#.{base}-over")))
        .await
        .expect("send");
    for i in 0..200 {
        send_receipted(&mut publisher, &topic, &i.to_string()).await;
    }
    let error = expect_error_and_close(&mut greedy).await;
    assert!(
        error
            .headers
            .get("message")
            .is_some_and(|m| m.contains("max_wildcard_subscriptions")),
        "{error:?}"
    );
    for i in 0..200 {
        assert_eq!(body(&next_message(&mut reader).await), i.to_string());
    }
    // The holder's patterns still work: it is a subscriber like any other.
    send_receipted(&mut publisher, &format!("/topic/x.{base}-a-7"), "held").await;
    assert_eq!(body(&next_message(&mut holder).await), "held");
}
