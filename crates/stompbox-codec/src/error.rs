use thiserror::Error;

/// What was wrong with the bytes a peer sent.
///
/// Every variant is the peer's fault; the decoder has no other failure mode.
/// The `Display` text is meant for the `message` header of an ERROR frame, so
/// it says what to fix and never shows internals.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// The frame is larger than the configured limit.
    #[error("frame too large: more than {max} bytes")]
    FrameTooLarge {
        /// The limit in bytes.
        max: usize,
    },
    /// A header line (or the command line) is longer than the limit.
    #[error("header line too long: more than {max} bytes")]
    HeaderLineTooLong {
        /// The limit in bytes.
        max: usize,
    },
    /// More header lines than allowed.
    #[error("too many headers: more than {max}")]
    TooManyHeaders {
        /// The limit.
        max: usize,
    },
    /// The command line names no STOMP command.
    #[error("unknown command '{0}'")]
    UnknownCommand(String),
    /// A header line has no colon.
    #[error("malformed header line (no ':' separator, or a NUL byte)")]
    MalformedHeader,
    /// A header or command is not valid UTF-8.
    #[error("header is not valid UTF-8")]
    InvalidUtf8,
    /// A backslash escape that the negotiated STOMP version does not define.
    #[error("undefined escape sequence '\\{0}' in header")]
    UndefinedEscape(char),
    /// `content-length` is not a decimal number.
    #[error("invalid content-length header '{0}'")]
    InvalidContentLength(String),
    /// The byte after `content-length` bytes of body is not NUL.
    #[error("frame body longer than its content-length header (expected NUL after the body)")]
    MissingNul,
}
