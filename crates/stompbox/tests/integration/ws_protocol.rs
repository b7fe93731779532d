//! The WebSocket closing handshake (RFC 6455 §5.5.1, §7.4): a client's
//! Close frame is answered with one carrying its code, and protocol
//! violations get the Close frame that names them (1002 protocol error,
//! 1007 invalid payload data) before the socket closes, not a bare TCP
//! close; before CONNECT and after it. Frames are written by hand on a raw
//! socket.

use crate::raw_ws::*;
use crate::support::*;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn a_close_frame_is_answered_with_the_clients_code_before_and_after_connect() {
    let server = default_server().await;
    for connected in [false, true] {
        for code in [1000u16, 1001, 4000] {
            let mut stream = handshake(&server).await;
            if connected {
                stomp_connect(&mut stream).await;
            }
            stream
                .write_all(&close_frame(code, b"bye"))
                .await
                .expect("write");
            let echoed = next_ws_frame(&mut stream).await;
            let Some((opcode, payload)) = echoed else {
                panic!("code {code}, connected {connected}: closed without a Close frame");
            };
            assert_eq!(opcode, 0x8, "code {code}, connected {connected}");
            assert_eq!(
                payload.get(..2),
                Some(&code.to_be_bytes()[..]),
                "code {code}, connected {connected}: answered {payload:02x?}"
            );
            // Then the server closes the TCP connection: nothing after the
            // Close frame.
            assert_eq!(next_ws_frame(&mut stream).await, None);
        }
    }
}

#[tokio::test]
async fn a_close_frame_without_a_code_is_answered_with_an_empty_one() {
    let server = default_server().await;
    let mut stream = handshake(&server).await;
    stomp_connect(&mut stream).await;
    stream
        .write_all(&frame(0x88, true, b""))
        .await
        .expect("write");
    assert_eq!(next_ws_frame(&mut stream).await, Some((0x8, Vec::new())));
    assert_eq!(next_ws_frame(&mut stream).await, None);
}

#[tokio::test]
async fn protocol_violations_after_connect_get_a_close_frame_too() {
    let server = default_server().await;
    let cases: [(&str, Vec<u8>, u16); 3] = [
        (
            "invalid UTF-8 in a text message",
            frame(0x81, true, &[0xc3, 0x28]),
            1007,
        ),
        ("an RSV bit set", frame(0x81 | 0x20, true, b"hi"), 1002),
        (
            "a close code that may not be sent",
            frame(0x88, true, &1005u16.to_be_bytes()),
            1002,
        ),
    ];
    for (what, bad, expected) in cases {
        let mut stream = handshake(&server).await;
        stomp_connect(&mut stream).await;
        stream.write_all(&bad).await.expect("write");
        let answer = until_closed(&mut stream).await;
        assert_eq!(
            close_code(&answer),
            Some(expected),
            "{what}: the server wrote {answer:02x?} before closing"
        );
    }
}

#[tokio::test]
async fn protocol_violations_get_a_close_frame_with_1002_or_1007() {
    let server = default_server().await;
    let cases: [(&str, Vec<u8>, u16); 6] = [
        (
            "invalid UTF-8 in a text message",
            frame(0x81, true, &[0xc3, 0x28]),
            1007,
        ),
        ("an RSV bit set", frame(0x81 | 0x40, true, b"hi"), 1002),
        ("an unmasked client frame", frame(0x81, false, b"hi"), 1002),
        ("a reserved opcode", frame(0x83, true, b"hi"), 1002),
        (
            "a close code that may not be sent",
            frame(0x88, true, &999u16.to_be_bytes()),
            1002,
        ),
        (
            "a fragmented control frame",
            frame(0x09, true, b"ping"),
            1002,
        ),
    ];
    for (what, bad, expected) in cases {
        let mut stream = handshake(&server).await;
        stream.write_all(&bad).await.expect("write");
        let answer = until_closed(&mut stream).await;
        assert_eq!(
            close_code(&answer),
            Some(expected),
            "{what}: the server wrote {answer:02x?} before closing"
        );
    }
}
