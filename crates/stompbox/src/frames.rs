//! Frames that both the session layer and the brokers build: an encoded
//! frame, a RECEIPT, and the STOMP error that ends a session with an ERROR.
//!
//! They live here, below both, so that a broker never imports the session
//! layer that drives it: imports point down only (see ARCHITECTURE.md).

use crate::outbox::OutFrame;
use bytes::{BufMut, Bytes, BytesMut};
use std::io::Write;
use stompbox_codec::{Command, Frame, Version, encode_frame, encode_header, header};

/// Why a session ended with an ERROR, as counted for operators (a small
/// fixed set, so a metric labelled by it stays small).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ErrorReason {
    /// A frame that breaks STOMP, or is not allowed in the session's state.
    Protocol,
    /// A frame past the size, header count or header line limits.
    FrameTooLarge,
    /// No CONNECT within `connect_timeout`.
    ConnectTimeout,
    /// No heart-beat or frame within the agreed interval and grace.
    HeartbeatTimeout,
    /// CONNECT refused: credentials, or a limit on logins or sessions.
    Authentication,
    /// A SEND or SUBSCRIBE the access rules refuse.
    AccessDenied,
    /// The session's credential expired.
    CredentialsExpired,
    /// A limit of the server (subscriptions, transactions, queues, rates).
    Limit,
    /// The message broker refused or failed.
    Broker,
    /// Cut off for not reading (or not acknowledging) fast enough.
    SlowConsumer,
    /// Refused by the application (a hook or handler).
    Application,
    /// Disconnected by an operator.
    Administrator,
}

impl ErrorReason {
    pub(crate) const ALL: [ErrorReason; 12] = [
        ErrorReason::Protocol,
        ErrorReason::FrameTooLarge,
        ErrorReason::ConnectTimeout,
        ErrorReason::HeartbeatTimeout,
        ErrorReason::Authentication,
        ErrorReason::AccessDenied,
        ErrorReason::CredentialsExpired,
        ErrorReason::Limit,
        ErrorReason::Broker,
        ErrorReason::SlowConsumer,
        ErrorReason::Application,
        ErrorReason::Administrator,
    ];

    /// The label value.
    pub(crate) fn label(self) -> &'static str {
        match self {
            ErrorReason::Protocol => "protocol",
            ErrorReason::FrameTooLarge => "frame_too_large",
            ErrorReason::ConnectTimeout => "connect_timeout",
            ErrorReason::HeartbeatTimeout => "heartbeat_timeout",
            ErrorReason::Authentication => "authentication",
            ErrorReason::AccessDenied => "access_denied",
            ErrorReason::CredentialsExpired => "credentials_expired",
            ErrorReason::Limit => "limit",
            ErrorReason::Broker => "broker",
            ErrorReason::SlowConsumer => "slow_consumer",
            ErrorReason::Application => "application",
            ErrorReason::Administrator => "administrator",
        }
    }
}

/// A protocol error: the client is sent an ERROR frame with this message,
/// then disconnected.
#[derive(Debug, Clone)]
pub(crate) struct StompError {
    pub(crate) message: String,
    pub(crate) receipt_id: Option<Bytes>,
    pub(crate) version_header: Option<String>,
    pub(crate) reason: ErrorReason,
}

impl StompError {
    pub(crate) fn new(message: impl Into<String>) -> StompError {
        StompError {
            message: message.into(),
            receipt_id: None,
            version_header: None,
            reason: ErrorReason::Protocol,
        }
    }

    /// The same error, counted under `reason`.
    #[must_use]
    pub(crate) fn because(mut self, reason: ErrorReason) -> StompError {
        self.reason = reason;
        self
    }

    /// The ERROR frame, encoded for the connection's version.
    pub(crate) fn to_frame(&self, version: Version) -> OutFrame {
        // STOMP 1.0 has no escapes: a line break in a header would end it.
        let unescaped = |text: &[u8]| -> Bytes {
            if version == Version::V1_0 && text.iter().any(|b| matches!(b, b'\n' | b'\r')) {
                text.iter()
                    .map(|&b| if matches!(b, b'\n' | b'\r') { b' ' } else { b })
                    .collect::<Vec<u8>>()
                    .into()
            } else {
                Bytes::copy_from_slice(text)
            }
        };
        let mut frame = Frame::new(Command::Error);
        frame.headers.push(
            Bytes::from_static(header::MESSAGE.as_bytes()),
            unescaped(self.message.as_bytes()),
        );
        if let Some(receipt) = &self.receipt_id {
            frame.headers.push(
                Bytes::from_static(header::RECEIPT_ID.as_bytes()),
                unescaped(receipt),
            );
        }
        if let Some(versions) = &self.version_header {
            frame.headers.push_str(header::VERSION, versions);
        }
        let body = format!("{}\n", self.message);
        frame.headers.push_str(header::CONTENT_TYPE, "text/plain");
        frame
            .headers
            .push_str(header::CONTENT_LENGTH, &body.len().to_string());
        frame.body = Bytes::from(body);
        encode(&frame, version)
    }
}

/// A frame encoded for one STOMP version, ready for an outbox.
pub(crate) fn encode(frame: &Frame, version: Version) -> OutFrame {
    let mut out = BytesMut::new();
    encode_frame(frame, version, &mut out);
    OutFrame::new(out.freeze())
}

/// A RECEIPT frame (no header of it needs escaping but the id), encoded
/// straight into its buffer: every SUBSCRIBE and SEND with a receipt makes
/// one, and going through a [`Frame`] costs a header list and copies.
pub(crate) fn receipt_frame(receipt_id: &[u8]) -> OutFrame {
    let mut out = BytesMut::with_capacity(24 + 2 * receipt_id.len());
    out.put_slice(b"RECEIPT\n");
    encode_header(
        header::RECEIPT_ID.as_bytes(),
        receipt_id,
        Some(Version::V1_2),
        &mut out,
    );
    out.put_slice(b"\n\0");
    OutFrame::new(out.freeze())
}

/// The CONNECTED frame, encoded straight into its buffer (one per
/// connection; reconnect storms make many at once). STOMP never escapes
/// CONNECTED headers, and these values hold no byte that would need it:
/// the session id is hex digits.
pub(crate) fn connected_frame(
    version: Version,
    server: &str,
    session: &str,
    heart_beat: [u128; 2],
) -> OutFrame {
    let mut out = BytesMut::with_capacity(96 + server.len() + session.len());
    out.put_slice(b"CONNECTED\n");
    encode_header(
        header::VERSION.as_bytes(),
        version.as_str().as_bytes(),
        None,
        &mut out,
    );
    encode_header(header::SERVER.as_bytes(), server.as_bytes(), None, &mut out);
    encode_header(
        header::SESSION.as_bytes(),
        session.as_bytes(),
        None,
        &mut out,
    );
    let mut beats = [0u8; 80];
    let mut cursor = &mut beats[..];
    let _ = write!(cursor, "{},{}", heart_beat[0], heart_beat[1]);
    let left = cursor.len();
    encode_header(
        header::HEART_BEAT.as_bytes(),
        &beats[..beats.len() - left],
        None,
        &mut out,
    );
    out.put_slice(b"\n\0");
    OutFrame::with_text(out.freeze(), true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receipt_encodes_as_the_frame_would() {
        for id in [&b"r-1"[..], b"a:b\\c\nd\re", b""] {
            let mut frame = Frame::new(Command::Receipt);
            frame.headers.push(
                Bytes::from_static(header::RECEIPT_ID.as_bytes()),
                Bytes::copy_from_slice(id),
            );
            let direct = receipt_frame(id);
            assert_eq!(direct.to_bytes(), encode(&frame, Version::V1_2).to_bytes());
            assert!(direct.is_text());
        }
    }

    #[test]
    fn connected_encodes_as_the_frame_would() {
        for version in Version::ALL {
            let frame = Frame::new(Command::Connected)
                .header(header::VERSION, version.as_str())
                .header(header::SERVER, "stompbox/9.9.9")
                .header(header::SESSION, "0123abcd")
                .header(header::HEART_BEAT, "10000,0");
            let direct = connected_frame(version, "stompbox/9.9.9", "0123abcd", [10_000, 0]);
            assert_eq!(direct.to_bytes(), encode(&frame, version).to_bytes());
            assert!(direct.is_text());
        }
        // The largest heart-beats fit.
        let max = connected_frame(Version::V1_2, "s", "i", [u128::MAX, u128::MAX]);
        let text = String::from_utf8(max.to_bytes().to_vec()).unwrap();
        assert!(
            text.contains(&format!("heart-beat:{0},{0}\n", u128::MAX)),
            "{text}"
        );
    }
}
