use crate::{Frame, Version, escape::escape_into};
use bytes::{BufMut, BytesMut};

/// Appends `frame` to `out` as wire bytes for a connection of `version`.
///
/// Headers are written exactly as given (escaped when the command and version
/// call for it); add `content-length` yourself when the body may hold NULs.
pub fn encode_frame(frame: &Frame, version: Version, out: &mut BytesMut) {
    let escape = frame.command.escapes_headers(version);
    let headers_len: usize = frame
        .headers
        .iter_bytes()
        .map(|(n, v)| n.len() + v.len() + 2)
        .sum();
    out.reserve(frame.command.as_str().len() + headers_len + frame.body.len() + 3);
    out.put_slice(frame.command.as_str().as_bytes());
    out.put_u8(b'\n');
    for (name, value) in frame.headers.iter_bytes() {
        encode_header(name, value, escape.then_some(version), out);
    }
    out.put_u8(b'\n');
    out.put_slice(&frame.body);
    out.put_u8(0);
}

/// Appends one `name:value\n` line, escaped for `escape` when it is `Some`.
pub fn encode_header(name: &[u8], value: &[u8], escape: Option<Version>, out: &mut BytesMut) {
    match escape {
        Some(version) => {
            escape_into(name, version, out);
            out.put_u8(b':');
            escape_into(value, version, out);
        }
        None => {
            out.put_slice(name);
            out.put_u8(b':');
            out.put_slice(value);
        }
    }
    out.put_u8(b'\n');
}

/// Appends one heart-beat (a single end-of-line byte).
pub fn encode_heartbeat(out: &mut BytesMut) {
    out.put_u8(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Command;

    #[test]
    fn encodes_exact_bytes() {
        let frame = Frame::new(Command::Message)
            .header("destination", "/topic/a:b")
            .body(&b"x"[..]);
        let mut out = BytesMut::new();
        encode_frame(&frame, Version::V1_2, &mut out);
        assert_eq!(&out[..], b"MESSAGE\ndestination:/topic/a\\cb\n\nx\0");
        out.clear();
        encode_frame(&frame, Version::V1_0, &mut out);
        assert_eq!(&out[..], b"MESSAGE\ndestination:/topic/a:b\n\nx\0");
        out.clear();
        let connected = Frame::new(Command::Connected).header("server", "a:b");
        encode_frame(&connected, Version::V1_2, &mut out);
        assert_eq!(&out[..], b"CONNECTED\nserver:a:b\n\n\0");
    }
}
