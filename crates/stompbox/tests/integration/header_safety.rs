//! No client shapes a header line another client reads.

use crate::support::*;
use bytes::Bytes;
use stompbox::codec::{Command, Frame};

/// A STOMP 1.2 publisher's header name with an escaped `:` would, written
/// raw, reach a 1.0 subscriber as a `content-length:3…` line of its own
/// before the real one.
#[tokio::test]
async fn a_1_2_header_name_with_an_escaped_colon_forges_no_line_for_a_1_0_subscriber() {
    let server = default_server().await;
    let topic = unique("/topic/forge");
    let mut v10 = subscribe_1_0(&server, &topic).await;
    let mut v12 = server.connect(Via::Tcp).await;
    v12.send_raw(Bytes::from(format!(
        "SEND\ndestination:{topic}\ncontent-length\\c3:\nx\\c\\nforged:1\nreceipt:r\n\nhello\0"
    )))
    .await
    .expect("send");
    assert_eq!(next(&mut v12).await.command, Command::Receipt);
    let m = next_message(&mut v10).await;
    assert_eq!(body(&m), "hello");
    let lengths: Vec<_> = m
        .headers
        .iter()
        .filter(|(name, _)| *name == "content-length")
        .map(|(_, value)| value)
        .collect();
    assert_eq!(lengths, ["5"], "{m:?}");
    assert!(m.headers.iter().all(|(name, _)| name != "forged"), "{m:?}");
}

async fn snapshot_with_a_nul_header() -> stompbox::app::Payload {
    stompbox::app::Payload::text("snapshot").header("x-evil", "a\0b")
}

/// A subscribe handler's reply is written straight into the subscriber's
/// MESSAGE frame: a NUL header there is refused like at the Messaging
/// handle, and the session hears why at its errors destination.
#[tokio::test]
async fn a_subscribe_reply_with_a_nul_header_is_refused_and_reported() {
    let app = stompbox::app::App::new().subscribe("/snapshot", snapshot_with_a_nul_header);
    let server = spawn_app(app, |_| {}).await;
    let mut client = server.connect(Via::Tcp).await;
    subscribe(&mut client, "e", "/user/queue/errors", "auto").await;
    client
        .send(
            &Frame::new(Command::Subscribe)
                .header("id", "s")
                .header("destination", "/app/snapshot")
                .header("receipt", "r"),
        )
        .await
        .expect("send");
    // The RECEIPT and the report, in either order (with the relay the
    // report travels through the broker).
    let (mut receipt, mut error) = (None, None);
    for _ in 0..2 {
        let frame = next(&mut client).await;
        match frame.command {
            Command::Receipt => receipt = Some(frame),
            Command::Message => error = Some(frame),
            _ => panic!("unexpected {frame:?}"),
        }
    }
    assert_eq!(
        receipt.expect("RECEIPT").headers.get("receipt-id"),
        Some("r")
    );
    let error = error.expect("the report");
    assert_eq!(error.headers.get("destination"), Some("/user/queue/errors"));
    let text = body(&error);
    assert!(text.contains("x-evil") && text.contains("NUL"), "{text}");
    // No MESSAGE for the subscription itself follows.
    client
        .send_with_receipt(Frame::new(Command::Unsubscribe).header("id", "s"), "u")
        .await
        .expect("the next frame is the UNSUBSCRIBE's RECEIPT");
}
