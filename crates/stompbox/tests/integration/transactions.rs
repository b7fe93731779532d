use crate::support::*;
use stompbox::codec::{Command, Frame};

/// BEGIN, COMMIT or ABORT of `tx`, waiting for its RECEIPT.
async fn control(client: &mut stompbox::client::Client, command: Command, tx: &str) {
    client
        .send_with_receipt(
            Frame::new(command).header("transaction", tx),
            &format!("{command}-{tx}"),
        )
        .await
        .unwrap_or_else(|e| panic!("{command} {tx}: {e}"));
}

fn in_tx(destination: &str, tx: &str, body: &str) -> Frame {
    Frame::new(Command::Send)
        .header("destination", destination)
        .header("transaction", tx)
        .body(body.to_owned())
}

#[tokio::test]
async fn committed_sends_are_delivered_at_commit_and_aborted_ones_never() {
    let server = default_server().await;
    let topic = unique("/topic/tx");
    for via in BOTH {
        let mut sub = server.connect(via).await;
        subscribe(&mut sub, "s", &topic, "auto").await;
        let mut producer = server.connect(via).await;
        control(&mut producer, Command::Begin, "t1").await;
        producer
            .send_with_receipt(in_tx(&topic, "t1", "tx-1"), "1")
            .await
            .expect("send");
        producer
            .send_with_receipt(in_tx(&topic, "t1", "tx-2"), "2")
            .await
            .expect("send");
        // Nothing was delivered yet: a plain marker overtakes the transaction.
        send_receipted(&mut producer, &topic, "marker").await;
        assert_eq!(body(&next_message(&mut sub).await), "marker");
        control(&mut producer, Command::Commit, "t1").await;
        assert_eq!(body(&next_message(&mut sub).await), "tx-1");
        assert_eq!(body(&next_message(&mut sub).await), "tx-2");

        control(&mut producer, Command::Begin, "t2").await;
        producer
            .send_with_receipt(in_tx(&topic, "t2", "aborted"), "3")
            .await
            .expect("send");
        control(&mut producer, Command::Abort, "t2").await;
        send_receipted(&mut producer, &topic, "after-abort").await;
        assert_eq!(body(&next_message(&mut sub).await), "after-abort");
    }
}

#[tokio::test]
async fn acks_in_a_transaction_take_effect_at_commit_and_are_discarded_on_abort() {
    let server = default_server().await;
    let queue = unique("/queue/tx-ack");
    let mut producer = server.connect(Via::Tcp).await;
    send_receipted(&mut producer, &queue, "m1").await;
    send_receipted(&mut producer, &queue, "m2").await;
    let mut consumer = server.connect(Via::Tcp).await;
    subscribe_now(&mut consumer, "s", &queue, "client-individual").await;
    let m1 = next_message(&mut consumer).await;
    let m2 = next_message(&mut consumer).await;
    let ack = |m: &Frame, tx: &str| {
        Frame::new(Command::Ack)
            .header("id", m.headers.get("ack").expect("ack"))
            .header("transaction", tx)
    };
    control(&mut consumer, Command::Begin, "keep").await;
    consumer
        .send_with_receipt(ack(&m1, "keep"), "a1")
        .await
        .expect("ack");
    control(&mut consumer, Command::Commit, "keep").await;
    control(&mut consumer, Command::Begin, "drop").await;
    consumer
        .send_with_receipt(ack(&m2, "drop"), "a2")
        .await
        .expect("ack");
    control(&mut consumer, Command::Abort, "drop").await;
    drop(consumer);
    // m1's ACK was committed, m2's aborted: only m2 comes back.
    let mut other = server.connect(Via::Tcp).await;
    subscribe_now(&mut other, "o", &queue, "auto").await;
    let again = next_message(&mut other).await;
    assert_eq!(body(&again), "m2");
    assert_eq!(again.headers.get("redelivered"), Some("true"));
}

#[tokio::test]
async fn an_open_transaction_is_discarded_on_disconnect() {
    let server = default_server().await;
    let topic = unique("/topic/tx-dc");
    let mut sub = server.connect(Via::Ws).await;
    subscribe(&mut sub, "s", &topic, "auto").await;
    let mut producer = server.connect(Via::Ws).await;
    control(&mut producer, Command::Begin, "t").await;
    producer
        .send_with_receipt(in_tx(&topic, "t", "never"), "s")
        .await
        .expect("send");
    producer
        .send_with_receipt(Frame::new(Command::Disconnect), "bye")
        .await
        .expect("disconnect");
    let mut marker = server.connect(Via::Ws).await;
    send_receipted(&mut marker, &topic, "marker").await;
    assert_eq!(body(&next_message(&mut sub).await), "marker");
}

#[tokio::test]
async fn unknown_and_duplicate_transactions_are_errors() {
    let server = default_server().await;
    let topic = unique("/topic/tx-bad");
    for frame in [
        Frame::new(Command::Commit).header("transaction", "nope"),
        Frame::new(Command::Abort).header("transaction", "nope"),
        in_tx(&topic, "nope", "x"),
        Frame::new(Command::Begin),
    ] {
        let mut client = server.connect(Via::Tcp).await;
        client
            .send(&frame.header("receipt", "r"))
            .await
            .expect("send");
        let error = expect_error_and_close(&mut client).await;
        assert_eq!(error.headers.get("receipt-id"), Some("r"));
    }
    let mut client = server.connect(Via::Tcp).await;
    control(&mut client, Command::Begin, "t").await;
    client
        .send(&Frame::new(Command::Begin).header("transaction", "t"))
        .await
        .expect("send");
    let error = expect_error_and_close(&mut client).await;
    assert!(
        error
            .headers
            .get("message")
            .is_some_and(|m| m.contains("already open"))
    );
}

#[tokio::test]
async fn transactions_are_bounded() {
    let server = spawn_server(|c| {
        c.max_transaction_frames = 2;
        c.max_transactions = 1;
    })
    .await;
    let topic = unique("/topic/tx-limit");
    let mut client = server.connect(Via::Tcp).await;
    control(&mut client, Command::Begin, "t").await;
    client
        .send_with_receipt(in_tx(&topic, "t", "1"), "1")
        .await
        .expect("send");
    client
        .send_with_receipt(in_tx(&topic, "t", "2"), "2")
        .await
        .expect("send");
    client.send(&in_tx(&topic, "t", "3")).await.expect("send");
    let error = expect_error_and_close(&mut client).await;
    assert!(
        error
            .headers
            .get("message")
            .is_some_and(|m| m.contains("too many frames"))
    );
    let mut client = server.connect(Via::Tcp).await;
    control(&mut client, Command::Begin, "a").await;
    client
        .send(&Frame::new(Command::Begin).header("transaction", "b"))
        .await
        .expect("send");
    let error = expect_error_and_close(&mut client).await;
    assert!(
        error
            .headers
            .get("message")
            .is_some_and(|m| m.contains("too many open transactions"))
    );
}
