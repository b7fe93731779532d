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

/// The encoded tails of one message (everything after a delivery's own
/// headers) by version, kept only while one publish fans the message out,
/// so that many subscribers cost one encoding, not one each.
#[derive(Debug, Default)]
pub(crate) struct Tails {
    /// After a head with the subscription id (and an ack id) alone: the
    /// destination and `redelivered:false` headers, then the rest. What
    /// nearly every delivery uses; for the destination in `shown`.
    short: [Option<OutFrame>; 3],
    /// The destination `short` shows, when not the message's own (user
    /// destinations).
    shown: Option<Bytes>,
    /// After a head with every per-delivery header: redeliveries, and
    /// values that need escaping.
    full: [Option<OutFrame>; 3],
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

    /// The tail of this message's deliveries to `version` subscribers, as
    /// a frame without a head (see [`OutFrame::with_head`]). A short tail
    /// starts with the `destination` and `redelivered:false` headers, for
    /// heads that hold only the subscription and ack headers.
    fn tail(&self, version: Version, short: Option<&[u8]>) -> OutFrame {
        let mut out =
            BytesMut::with_capacity(160 + short.map_or(0, <[u8]>::len) + self.frame.len_bytes());
        if let Some(destination) = short {
            out.put_slice(b"\ndestination:");
            out.put_slice(destination);
            out.put_slice(b"\nredelivered:false\n");
        }
        self.write_tail(version, &mut out);
        OutFrame::with_text(out.freeze(), self.body_is_text)
    }

    /// The MESSAGE frame for one delivery: its own head, then the tail.
    /// With `tails`, the tail is encoded once per version and shared by
    /// later calls with the same `tails`.
    pub(crate) fn encode(
        &self,
        delivery: DeliveryHeaders<'_>,
        tails: Option<&mut Tails>,
    ) -> OutFrame {
        let destination = delivery.destination.unwrap_or(&self.destination);
        let short = !delivery.redelivered
            && needs_no_escaping(delivery.subscription)
            && needs_no_escaping(destination)
            && delivery.ack.is_none_or(needs_no_escaping);
        if short {
            // What nearly every delivery is: a head of the subscription
            // and ack ids alone, inside the frame, before a tail that
            // starts with the headers all deliveries share.
            let own;
            let tail = match tails {
                Some(tails) => tails.short(self, delivery.destination, delivery.version),
                None => {
                    own = self.tail(delivery.version, Some(destination));
                    &own
                }
            };
            let ack: [&[u8]; 2] = match delivery.ack {
                Some(ack) => [b"\nack:", ack],
                None => [b"", b""],
            };
            return tail.with_head(&[
                b"MESSAGE\nsubscription:",
                delivery.subscription,
                ack[0],
                ack[1],
            ]);
        }
        let own;
        let tail = match tails {
            Some(tails) => tails.full(self, delivery.version),
            None => {
                own = self.tail(delivery.version, None);
                &own
            }
        };
        // RabbitMQ writes the redelivered header on every MESSAGE, topic or
        // queue, first delivery or not; clients that branch on it see the
        // same.
        let redelivered: &[u8] = if delivery.redelivered {
            b"redelivered:true\n"
        } else {
            b"redelivered:false\n"
        };
        let escape = escaping(delivery.version, delivery.subscription)
            .or(escaping(delivery.version, destination))
            .or(escaping(delivery.version, &self.destination));
        let mut head = BytesMut::with_capacity(
            64 + 2
                * (delivery.subscription.len()
                    + destination.len()
                    + delivery.ack.map_or(0, <[u8]>::len)),
        );
        head.put_slice(b"MESSAGE\n");
        encode_header(b"subscription", delivery.subscription, escape, &mut head);
        encode_header(b"destination", destination, escape, &mut head);
        if let Some(ack) = delivery.ack {
            encode_header(b"ack", ack, escape, &mut head);
        }
        head.put_slice(redelivered);
        tail.with_head(&[&head])
    }
}

/// True when a header value reads the same escaped or not, in every STOMP
/// version: the per-delivery headers can then be copied as they are.
fn needs_no_escaping(value: &[u8]) -> bool {
    !value
        .iter()
        .any(|b| matches!(b, b'\\' | b'\n' | b'\r' | b':'))
}

/// One message's deliveries to subscribers that acknowledge automatically:
/// the embedded broker's topic publish and the shared relay's local fan-out
/// of one upstream MESSAGE. The tail, with the destination shown, is
/// encoded once per version, so a delivery only puts its subscription id
/// into the frame itself. Subscribers with the same subscription id
/// (clients often all call theirs `sub-0`) are no different: their heads
/// are as cheap as a clone would be, and the body is held once either way.
pub(crate) struct FanOut<'m> {
    message: &'m Message,
    tails: Tails,
    /// The message's own destination needs no escaping, so a delivery
    /// that shows it only checks its subscription id.
    plain_destination: bool,
}

impl<'m> FanOut<'m> {
    pub(crate) fn new(message: &'m Message) -> FanOut<'m> {
        FanOut {
            message,
            tails: Tails::default(),
            plain_destination: needs_no_escaping(&message.destination),
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
        subscription: &[u8],
        display: Option<&Bytes>,
        version: Version,
    ) -> OutFrame {
        if display.is_none() && self.plain_destination && needs_no_escaping(subscription) {
            // What `encode` would do, without checking the destination
            // again for every subscriber.
            let tail = self.tails.short(self.message, None, version);
            return tail.with_head(&[b"MESSAGE\nsubscription:", subscription]);
        }
        self.message.encode(
            DeliveryHeaders {
                subscription,
                destination: display.map(|d| &d[..]),
                ack: None,
                redelivered: false,
                version,
            },
            Some(&mut self.tails),
        )
    }
}

impl Tails {
    /// The short tail of `message` for `version` subscribers, showing
    /// `shown` or else its own destination, encoded on first use.
    fn short(&mut self, message: &Message, shown: Option<&[u8]>, version: Version) -> &OutFrame {
        if self.shown.as_deref() != shown {
            // Deliveries of one publish show one destination, or take
            // turns only between users' sessions; the last one is kept.
            self.short = Default::default();
            self.shown = shown.map(Bytes::copy_from_slice);
        }
        let slot = &mut self.short[version_index(version)];
        slot.get_or_insert_with(|| {
            message.tail(version, Some(shown.unwrap_or(&message.destination)))
        })
    }

    /// The tail of `message` for `version` subscribers after a full head,
    /// encoded on first use.
    fn full(&mut self, message: &Message, version: Version) -> &OutFrame {
        self.full[version_index(version)].get_or_insert_with(|| message.tail(version, None))
    }
}

fn version_index(version: Version) -> usize {
    match version {
        Version::V1_0 => 0,
        Version::V1_1 => 1,
        Version::V1_2 => 2,
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
        let mut buf = BytesMut::from(&out.to_bytes()[..]);
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
            assert_eq!(direct.to_bytes(), shared.to_bytes());
            assert_eq!(direct.to_bytes(), again.to_bytes());
            // Its own head holds the subscription and ack ids, and the
            // shared part the rest of a complete MESSAGE frame.
            let mut decoder = Decoder::new(Limits::default());
            decoder.set_version(version);
            let mut buf = BytesMut::from(&shared.to_bytes()[..]);
            let Ok(Some(Decoded::Frame(frame))) = decoder.decode(&mut buf) else {
                panic!("not a frame: {:?}", shared.to_bytes())
            };
            assert!(buf.is_empty(), "left over: {buf:?}");
            assert_eq!(frame.command, Command::Message);
            let expected = [
                ("subscription", "sub-0"),
                ("ack", "1.1"),
                ("destination", "/queue/a"),
                ("redelivered", "false"),
                ("message-id", "m-1"),
                ("content-length", "4"),
            ];
            for (name, value) in expected {
                assert_eq!(
                    frame.headers.get(name),
                    Some(value),
                    "{name} in {version:?}"
                );
            }
            assert_eq!(&frame.body[..], b"body");
        }
    }

    #[test]
    fn a_fan_out_encodes_what_a_single_delivery_would() {
        let send = Frame::new(Command::Send)
            .header("x-custom", "a:b")
            .body(&b"body"[..]);
        let message = Message::new(Bytes::from_static(b"m-1"), "/topic/a", send);
        let mut fan_out = FanOut::new(&message);
        let shown = Bytes::from_static(b"/user/queue/x");
        let odd = Bytes::from_static(b"/topic/a:b\nc");
        let cases: Vec<(Bytes, Option<&Bytes>, Version)> = vec![
            (Bytes::from_static(b"1"), None, Version::V1_2),
            (Bytes::from_static(b"2"), None, Version::V1_2),
            // The same id again.
            (Bytes::from_static(b"sub-0"), None, Version::V1_2),
            (Bytes::from_static(b"sub-0"), None, Version::V1_2),
            (Bytes::from_static(b"sub-0"), None, Version::V1_2),
            (Bytes::from_static(b"sub-0"), None, Version::V1_0),
            (Bytes::from_static(b"sub-0"), Some(&shown), Version::V1_1),
            (Bytes::from_static(b"sub-0"), Some(&odd), Version::V1_2),
            (Bytes::from_static(b"sub-0"), Some(&odd), Version::V1_0),
            (Bytes::from_static(b"a:b"), None, Version::V1_2),
            (Bytes::from_static(b"a\\b\r"), None, Version::V1_1),
            (Bytes::from(vec![b'i'; 200]), None, Version::V1_2),
        ];
        for (subscription, display, version) in cases {
            let shared = fan_out.frame(&subscription, display, version);
            let direct = message.encode(
                DeliveryHeaders {
                    subscription: &subscription,
                    destination: display.map(|d| &d[..]),
                    ack: None,
                    redelivered: false,
                    version,
                },
                None,
            );
            assert_eq!(
                shared.to_bytes(),
                direct.to_bytes(),
                "{subscription:?} {display:?} {version:?}"
            );
            assert_eq!(shared.len(), direct.len());
            assert_eq!(shared.is_text(), direct.is_text());
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
        assert!(!out.is_text() || std::str::from_utf8(&out.to_bytes()).is_ok());
        let mut buf = BytesMut::from(&out.to_bytes()[..]);
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
