//! STOMP 1.0, 1.1 and 1.2 frames on [`bytes`], with no I/O.
//!
//! The [`Decoder`] turns a growing [`BytesMut`](bytes::BytesMut) into [`Frame`]s
//! incrementally: a frame may arrive split over many reads, many frames may
//! arrive in one read, and end-of-line heart-beats may stand between frames.
//! Every limit in [`Limits`] is checked before the bytes it guards are
//! buffered, so a hostile peer cannot make the decoder allocate past them.
//!
//! Decoding is zero-copy: the header names, values and the body of a decoded
//! frame are slices of one shared [`Bytes`](bytes::Bytes) buffer, except for
//! header values that contained escape sequences.
//!
//! ```
//! use bytes::BytesMut;
//! use stompbox_codec::{Command, Decoded, Decoder, Limits, Version};
//!
//! let mut decoder = Decoder::new(Limits::default());
//! decoder.set_version(Version::V1_2);
//! let mut buf = BytesMut::from(&b"SEND\ndestination:/queue/a\n\nhello\0"[..]);
//! let Some(Decoded::Frame(frame)) = decoder.decode(&mut buf).unwrap() else { panic!() };
//! assert_eq!(frame.command, Command::Send);
//! assert_eq!(frame.headers.get("destination"), Some("/queue/a"));
//! assert_eq!(&frame.body[..], b"hello");
//! ```

mod decode;
mod encode;
mod error;
mod escape;
mod frame;

pub use decode::{Decoded, Decoder, Limits};
pub use encode::{encode_frame, encode_header, encode_heartbeat};
pub use error::DecodeError;
pub use escape::{escape_into, unescape};
pub use frame::{ALLOCATION_OVERHEAD, Command, Frame, Headers, Version, header};
