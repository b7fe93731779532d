//! A published message, encoded once and shared by every delivery.

use crate::outbox::OutFrame;
use bytes::{BufMut, Bytes, BytesMut};
use std::sync::Mutex;
use stompbox_codec::{ALLOCATION_OVERHEAD, Command, Frame, Version, encode_header, header};

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

/// A message as the broker holds it: the SEND frame in one buffer, and
/// nothing else of its size. Deliveries are encoded from the frame, so a
/// queued or unacknowledged message holds its body once.
#[derive(Debug)]
pub(crate) struct Message {
    pub(crate) id: Bytes,
    destination: Bytes,
    frame: Frame,
    body_is_text: bool,
    /// What this message occupies in memory, as limits count it.
    memory: usize,
    /// How many topic subscribers hold it unacknowledged: the server-wide
    /// charge for it is taken by the first and given back by the last.
    pub(super) unacked_holders: Mutex<usize>,
}

/// The encoded tails of one message (everything after the per-delivery
/// headers) by version, kept only while one publish fans the message out,
/// so that many subscribers cost one encoding, not one each.
#[derive(Debug, Default)]
pub(crate) struct Tails([Option<Bytes>; 3]);

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
        // Kept beyond this read (queued, or held by a slow outbox), so it
        // must not pin the read buffer it was decoded from.
        let frame = send.detached();
        let memory = std::mem::size_of::<Message>()
            + 2 * std::mem::size_of::<usize>()
            + frame.memory_bytes()
            + id.len()
            + destination.len()
            + 3 * ALLOCATION_OVERHEAD;
        Message {
            id,
            destination: Bytes::copy_from_slice(destination.as_bytes()),
            frame,
            body_is_text,
            memory,
            unacked_holders: Mutex::new(0),
        }
    }

    /// What this message occupies in memory (the struct, its frame with
    /// every header entry, its id and destination), for memory limits.
    pub(crate) fn memory_bytes(&self) -> usize {
        self.memory
    }

    fn write_tail(&self, version: Version, out: &mut BytesMut) {
        encode_header(b"message-id", &self.id, escaping(version, &self.id), out);
        for (name, value) in self.frame.headers.iter_bytes() {
            let dropped = DROPPED_HEADERS
                .iter()
                .any(|d| d.as_bytes() == name.as_ref());
            if !dropped {
                let escape = name_escaping(version, name).or(escaping(version, value));
                encode_header(name, value, escape, out);
            }
        }
        let mut length = itoa_buf(self.frame.body.len());
        encode_header(b"content-length", length.as_bytes_mut(), None, out);
        out.put_u8(b'\n');
        out.put_slice(&self.frame.body);
        out.put_u8(0);
    }

    /// The MESSAGE frame for one delivery. With `tails`, the tail is
    /// encoded once per version and reused by later calls with the same
    /// `tails`; without, it is written straight into the frame.
    pub(crate) fn encode(
        &self,
        delivery: DeliveryHeaders<'_>,
        tails: Option<&mut Tails>,
    ) -> OutFrame {
        let escape = escaping(delivery.version, delivery.subscription)
            .or(delivery
                .destination
                .and_then(|d| escaping(delivery.version, d)))
            .or(escaping(delivery.version, &self.destination));
        let tail = tails.map(|tails| {
            let slot = match delivery.version {
                Version::V1_0 => &mut tails.0[0],
                Version::V1_1 => &mut tails.0[1],
                Version::V1_2 => &mut tails.0[2],
            };
            slot.get_or_insert_with(|| {
                let mut out = BytesMut::with_capacity(128 + self.frame.len_bytes());
                self.write_tail(delivery.version, &mut out);
                out.freeze()
            })
            .clone()
        });
        let tail_len = tail
            .as_ref()
            .map_or(128 + self.frame.len_bytes(), Bytes::len);
        let mut out = BytesMut::with_capacity(
            tail_len
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
        // RabbitMQ writes the header on every MESSAGE, topic or queue,
        // first delivery or not; clients that branch on it see the same.
        out.put_slice(if delivery.redelivered {
            b"redelivered:true\n"
        } else {
            b"redelivered:false\n"
        });
        match tail {
            Some(tail) => out.put_slice(&tail),
            None => self.write_tail(delivery.version, &mut out),
        }
        OutFrame::with_text(out.freeze(), self.body_is_text)
    }
}

/// One message's deliveries to subscribers that acknowledge automatically:
/// the embedded broker's topic publish and the shared relay's local fan-out
/// of one upstream MESSAGE. The tail is encoded once per version, and
/// consecutive subscribers that share a subscription id and version
/// (clients often all call theirs `sub-0`) get the very same bytes.
pub(crate) struct FanOut<'m> {
    message: &'m Message,
    tails: Tails,
    last: Option<(Bytes, Option<Bytes>, Version, OutFrame)>,
}

impl<'m> FanOut<'m> {
    pub(crate) fn new(message: &'m Message) -> FanOut<'m> {
        FanOut {
            message,
            tails: Tails::default(),
            last: None,
        }
    }

    /// The tails shared by this publish, for deliveries this type does not
    /// encode itself (those with an ack header).
    pub(crate) fn tails(&mut self) -> &mut Tails {
        &mut self.tails
    }

    /// The MESSAGE frame for one subscriber in auto mode; `display` is the
    /// destination it shows instead of the message's (user destinations).
    pub(crate) fn frame(
        &mut self,
        subscription: &Bytes,
        display: Option<&Bytes>,
        version: Version,
    ) -> OutFrame {
        if let Some((id, shown, v, frame)) = &self.last
            && id == subscription
            && shown.as_ref() == display
            && *v == version
        {
            return frame.clone();
        }
        let frame = self.message.encode(
            DeliveryHeaders {
                subscription,
                destination: display.map(|d| &d[..]),
                ack: None,
                redelivered: false,
                version,
            },
            Some(&mut self.tails),
        );
        self.last = Some((
            subscription.clone(),
            display.cloned(),
            version,
            frame.clone(),
        ));
        frame
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

/// How a header name is escaped: as a value, and also when it holds a `:`,
/// which a 1.0 subscriber would read as the end of the name (a 1.2
/// publisher's `content-length\c3` would arrive as `content-length:3…`).
fn name_escaping(version: Version, name: &[u8]) -> Option<Version> {
    match version {
        Version::V1_0 if name.contains(&b':') => Some(Version::V1_1),
        _ => escaping(version, name),
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
        let out = message.encode(
            DeliveryHeaders {
                subscription: b"/topic/a",
                destination: None,
                ack: None,
                redelivered: false,
                version: Version::V1_0,
            },
            None,
        );
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
    fn a_shared_tail_encodes_the_same_bytes_as_a_direct_one() {
        let send = Frame::new(Command::Send)
            .header("x-custom", "a:b")
            .body(&b"body"[..]);
        let message = Message::new(Bytes::from_static(b"m-1"), "/queue/a", send);
        let mut tails = Tails::default();
        for version in Version::ALL {
            let delivery = DeliveryHeaders {
                subscription: b"sub-0",
                destination: None,
                ack: Some(b"1.1"),
                redelivered: false,
                version,
            };
            let direct = message.encode(delivery, None);
            let shared = message.encode(delivery, Some(&mut tails));
            let again = message.encode(delivery, Some(&mut tails));
            assert_eq!(direct.bytes, shared.bytes);
            assert_eq!(direct.bytes, again.bytes);
        }
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
        let out = message.encode(
            DeliveryHeaders {
                subscription: b"sub-0",
                destination: None,
                ack: Some(b"7.1"),
                redelivered: true,
                version: Version::V1_2,
            },
            None,
        );
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
