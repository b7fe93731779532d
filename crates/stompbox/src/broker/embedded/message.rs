//! A published message, encoded once and shared by every delivery.

use crate::outbox::OutFrame;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::OnceLock;
use stompbox_codec::{Command, Frame, Version, encode_header, header};

/// SEND headers that never reach subscribers: framing and transaction
/// headers belong to the SEND, and the ones the broker sets itself must not
/// be forged by a publisher.
const DROPPED_HEADERS: [&str; 8] = [
    header::DESTINATION,
    header::CONTENT_LENGTH,
    header::TRANSACTION,
    header::RECEIPT,
    header::MESSAGE_ID,
    header::SUBSCRIPTION,
    header::ACK,
    header::REDELIVERED,
];

/// A message as the broker holds it.
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) id: Bytes,
    destination: Bytes,
    frame: Frame,
    body_is_text: bool,
    /// Everything after the per-delivery headers, for each version (escaping
    /// differs), built on first use and then shared by every delivery.
    tails: [OnceLock<Bytes>; 3],
}

/// What differs between two deliveries of one message.
#[derive(Debug, Clone, Copy)]
pub(crate) struct DeliveryHeaders<'a> {
    pub(crate) subscription: &'a [u8],
    /// Shown instead of the message's own destination (user destinations).
    pub(crate) destination: Option<&'a [u8]>,
    pub(crate) ack: Option<&'a [u8]>,
    pub(crate) redelivered: bool,
    pub(crate) version: Version,
}

impl Message {
    pub(crate) fn new(id: Bytes, destination: &str, send: Frame) -> Message {
        let body_is_text = std::str::from_utf8(&send.body).is_ok();
        Message {
            id,
            destination: Bytes::copy_from_slice(destination.as_bytes()),
            // Kept beyond this read (queued, or held by a slow outbox), so it
            // must not pin the read buffer it was decoded from.
            frame: send.detached(),
            body_is_text,
            tails: Default::default(),
        }
    }

    /// Bytes this message holds (headers and body), for queue limits.
    pub(crate) fn body_len(&self) -> usize {
        self.frame.len_bytes()
    }

    fn tail(&self, version: Version) -> &Bytes {
        let slot = match version {
            Version::V1_0 => &self.tails[0],
            Version::V1_1 => &self.tails[1],
            Version::V1_2 => &self.tails[2],
        };
        slot.get_or_init(|| self.encode_tail(version))
    }

    fn encode_tail(&self, version: Version) -> Bytes {
        let mut out = BytesMut::with_capacity(128 + self.frame.body.len());
        encode_header(
            b"message-id",
            &self.id,
            escaping(version, &self.id),
            &mut out,
        );
        for (name, value) in self.frame.headers.iter_bytes() {
            let dropped = DROPPED_HEADERS
                .iter()
                .any(|d| d.as_bytes() == name.as_ref());
            if !dropped {
                let escape = escaping(version, name).or(escaping(version, value));
                encode_header(name, value, escape, &mut out);
            }
        }
        let mut length = itoa_buf(self.frame.body.len());
        encode_header(b"content-length", length.as_bytes_mut(), None, &mut out);
        out.put_u8(b'\n');
        out.put_slice(&self.frame.body);
        out.put_u8(0);
        out.freeze()
    }

    /// The MESSAGE frame for one delivery.
    pub(crate) fn encode(&self, delivery: DeliveryHeaders<'_>) -> OutFrame {
        let escape = escaping(delivery.version, delivery.subscription)
            .or(delivery
                .destination
                .and_then(|d| escaping(delivery.version, d)))
            .or(escaping(delivery.version, &self.destination));
        let tail = self.tail(delivery.version);
        let mut out = BytesMut::with_capacity(
            tail.len()
                + 64
                + delivery.subscription.len()
                + self
                    .destination
                    .len()
                    .max(delivery.destination.map_or(0, <[u8]>::len))
                + delivery.ack.map_or(0, <[u8]>::len),
        );
        out.put_slice(b"MESSAGE\n");
        encode_header(b"subscription", delivery.subscription, escape, &mut out);
        let destination = delivery.destination.unwrap_or(&self.destination);
        encode_header(b"destination", destination, escape, &mut out);
        if let Some(ack) = delivery.ack {
            encode_header(b"ack", ack, escape, &mut out);
        }
        if delivery.redelivered {
            out.put_slice(b"redelivered:true\n");
        }
        out.put_slice(tail);
        OutFrame::with_text(out.freeze(), self.body_is_text)
    }
}

/// How a MESSAGE header is escaped for a subscriber of `version`.
///
/// STOMP 1.0 has no escaping, but a value from a 1.1/1.2 publisher may hold a
/// line break, which would end the header early and let the publisher forge
/// headers or whole frames for 1.0 subscribers. Such a value is escaped the
/// 1.1 way instead, as RabbitMQ does.
fn escaping(version: Version, text: &[u8]) -> Option<Version> {
    match version {
        Version::V1_0 if text.iter().any(|b| matches!(b, b'\n' | b'\r')) => Some(Version::V1_1),
        Version::V1_0 => None,
        _ => Command::Message.escapes_headers(version).then_some(version),
    }
}

/// A tiny stack buffer holding a number's decimal digits.
struct Digits {
    buf: [u8; 20],
    start: usize,
}

impl Digits {
    fn as_bytes_mut(&mut self) -> &[u8] {
        &self.buf[self.start..]
    }
}

fn itoa_buf(mut n: usize) -> Digits {
    let mut d = Digits {
        buf: [0; 20],
        start: 20,
    };
    loop {
        d.start -= 1;
        d.buf[d.start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            return d;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use stompbox_codec::{Decoded, Decoder, Limits};

    #[test]
    fn a_line_break_cannot_forge_headers_for_stomp_1_0_subscribers() {
        let send = Frame::new(Command::Send)
            .header("x", "a\n\nforged")
            .body(&b"real"[..]);
        let message = Message::new(Bytes::from_static(b"m-1"), "/topic/a", send);
        let out = message.encode(DeliveryHeaders {
            subscription: b"/topic/a",
            destination: None,
            ack: None,
            redelivered: false,
            version: Version::V1_0,
        });
        let mut decoder = Decoder::new(Limits::default());
        decoder.set_version(Version::V1_0);
        let mut buf = BytesMut::from(&out.bytes[..]);
        let Ok(Some(Decoded::Frame(frame))) = decoder.decode(&mut buf) else {
            panic!("not a frame")
        };
        assert_eq!(&frame.body[..], b"real");
        assert_eq!(frame.headers.get("x"), Some("a\\n\\nforged"));
        assert!(buf.is_empty(), "left over: {buf:?}");
    }

    #[test]
    fn delivery_is_a_valid_message_frame_with_user_headers() {
        let send = Frame::new(Command::Send)
            .header("destination", "/topic/a")
            .header("receipt", "r1")
            .header("x-custom", "a:b")
            .header("content-type", "text/plain")
            .body(&b"he\0llo"[..]);
        let message = Message::new(Bytes::from_static(b"m-1"), "/topic/a", send);
        let out = message.encode(DeliveryHeaders {
            subscription: b"sub-0",
            destination: None,
            ack: Some(b"7.1"),
            redelivered: true,
            version: Version::V1_2,
        });
        assert!(!out.text || std::str::from_utf8(&out.bytes).is_ok());
        let mut buf = BytesMut::from(&out.bytes[..]);
        let Ok(Some(Decoded::Frame(frame))) = Decoder::new(Limits::default()).decode(&mut buf)
        else {
            panic!("not a frame")
        };
        assert_eq!(frame.command, Command::Message);
        assert_eq!(frame.headers.get("subscription"), Some("sub-0"));
        assert_eq!(frame.headers.get("ack"), Some("7.1"));
        assert_eq!(frame.headers.get("redelivered"), Some("true"));
        assert_eq!(frame.headers.get("destination"), Some("/topic/a"));
        assert_eq!(frame.headers.get("message-id"), Some("m-1"));
        assert_eq!(frame.headers.get("x-custom"), Some("a:b"));
        assert_eq!(frame.headers.get("content-type"), Some("text/plain"));
        assert_eq!(frame.headers.get("content-length"), Some("6"));
        assert_eq!(frame.headers.get("receipt"), None);
        assert_eq!(&frame.body[..], b"he\0llo");
    }
}
