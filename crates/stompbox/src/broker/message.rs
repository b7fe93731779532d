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
pub(crate) struct Tails([Option<OutFrame>; 3]);

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
    /// a frame without a head (see [`OutFrame::with_head`]).
    fn tail(&self, version: Version) -> OutFrame {
        let mut out = BytesMut::with_capacity(128 + self.frame.len_bytes());
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
        let own;
        let tail = match tails {
            Some(tails) => tails.get(self, delivery.version),
            None => {
                own = self.tail(delivery.version);
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
        let plain = needs_no_escaping(delivery.subscription)
            && needs_no_escaping(destination)
            && delivery.ack.is_none_or(needs_no_escaping);
        if plain {
            // What nearly every delivery is: the head from its parts, with
            // no buffer but the frame's own.
            let ack: [&[u8]; 3] = match delivery.ack {
                Some(ack) => [b"ack:", ack, b"\n"],
                None => [b"", b"", b""],
            };
            return tail.with_head(&[
                b"MESSAGE\nsubscription:",
                delivery.subscription,
                b"\ndestination:",
                destination,
                b"\n",
                ack[0],
                ack[1],
                ack[2],
                redelivered,
            ]);
        }
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
/// of one upstream MESSAGE. The tail is encoded once per version and the
/// part of the head after the subscription id once per shown destination,
/// so a delivery only puts its subscription id between two copies, into
/// the frame itself. Subscribers with the same subscription id (clients
/// often all call theirs `sub-0`) are no different: their heads are as
/// cheap as a clone would be, and the body is held once either way.
pub(crate) struct FanOut<'m> {
    message: &'m Message,
    tails: Tails,
    /// The head after the subscription id, for the destination shown.
    suffix: Option<Suffix>,
}

/// `\ndestination:…\nredelivered:false\n` for one shown destination.
struct Suffix {
    display: Option<Bytes>,
    /// None when the destination needs escaping (deliveries then take
    /// the general path).
    bytes: Option<Vec<u8>>,
}

impl<'m> FanOut<'m> {
    pub(crate) fn new(message: &'m Message) -> FanOut<'m> {
        FanOut {
            message,
            tails: Tails::default(),
            suffix: None,
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
        let message = self.message;
        if self
            .suffix
            .as_ref()
            .is_none_or(|s| s.display.as_ref() != display)
        {
            let destination = display.map_or(&message.destination[..], |d| &d[..]);
            self.suffix = Some(Suffix {
                display: display.cloned(),
                bytes: needs_no_escaping(destination).then(|| {
                    [
                        &b"\ndestination:"[..],
                        destination,
                        b"\nredelivered:false\n",
                    ]
                    .concat()
                }),
            });
        }
        if let Some(Suffix {
            bytes: Some(suffix),
            ..
        }) = &self.suffix
            && needs_no_escaping(subscription)
        {
            let template = self.tails.get(message, version);
            return template.with_head(&[b"MESSAGE\nsubscription:", subscription, suffix]);
        }
        message.encode(
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
    /// The tail of `message` for `version` subscribers, encoded on first use.
    fn get(&mut self, message: &Message, version: Version) -> &OutFrame {
        let slot = match version {
            Version::V1_0 => &mut self.0[0],
            Version::V1_1 => &mut self.0[1],
            Version::V1_2 => &mut self.0[2],
        };
        slot.get_or_insert_with(|| message.tail(version))
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
            assert_eq!(shared.text, direct.text);
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
        assert!(!out.text || std::str::from_utf8(&out.to_bytes()).is_ok());
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
