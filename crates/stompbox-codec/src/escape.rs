use crate::{DecodeError, Version};
use bytes::{BufMut, Bytes, BytesMut};

/// Appends `raw` to `out`, escaped as `version` requires for header names and
/// values of frames that escape (see [`Command::escapes_headers`](crate::Command::escapes_headers)).
pub fn escape_into(raw: &[u8], version: Version, out: &mut BytesMut) {
    if version == Version::V1_0
        || !raw
            .iter()
            .any(|b| matches!(b, b'\n' | b'\r' | b':' | b'\\'))
    {
        out.extend_from_slice(raw);
        return;
    }
    for &b in raw {
        match b {
            b'\\' => out.put_slice(b"\\\\"),
            b'\n' => out.put_slice(b"\\n"),
            b':' => out.put_slice(b"\\c"),
            // 1.1 has no escape for CR; it passes through as a byte.
            b'\r' if version == Version::V1_2 => out.put_slice(b"\\r"),
            other => out.put_u8(other),
        }
    }
}

/// Undoes [`escape_into`]. Returns the input itself (no copy) when it has no
/// backslash. An escape the version does not define is an error, as the
/// specification requires.
pub fn unescape(raw: Bytes, version: Version) -> Result<Bytes, DecodeError> {
    if version == Version::V1_0 || !raw.contains(&b'\\') {
        return Ok(raw);
    }
    let mut out = BytesMut::with_capacity(raw.len());
    let mut bytes = raw.iter();
    while let Some(&b) = bytes.next() {
        if b != b'\\' {
            out.put_u8(b);
            continue;
        }
        match bytes.next() {
            Some(b'\\') => out.put_u8(b'\\'),
            Some(b'n') => out.put_u8(b'\n'),
            Some(b'c') => out.put_u8(b':'),
            Some(b'r') if version == Version::V1_2 => out.put_u8(b'\r'),
            Some(&other) => return Err(DecodeError::UndefinedEscape(char::from(other))),
            None => return Err(DecodeError::UndefinedEscape(' ')),
        }
    }
    Ok(out.freeze())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn esc(s: &str, v: Version) -> String {
        let mut out = BytesMut::new();
        escape_into(s.as_bytes(), v, &mut out);
        String::from_utf8(out.to_vec()).unwrap_or_default()
    }

    #[test]
    fn escapes_per_version() {
        assert_eq!(esc("a:b\\c\nd\re", Version::V1_0), "a:b\\c\nd\re");
        assert_eq!(esc("a:b\\c\nd\re", Version::V1_1), "a\\cb\\\\c\\nd\re");
        assert_eq!(esc("a:b\\c\nd\re", Version::V1_2), "a\\cb\\\\c\\nd\\re");
    }

    #[test]
    fn unescape_rejects_undefined_escapes() {
        let r = |s: &'static str, v| unescape(Bytes::from_static(s.as_bytes()), v);
        assert_eq!(r("a\\cb", Version::V1_1).as_deref(), Ok(&b"a:b"[..]));
        assert_eq!(r("a\\rb", Version::V1_2).as_deref(), Ok(&b"a\rb"[..]));
        assert_eq!(
            r("a\\rb", Version::V1_1),
            Err(DecodeError::UndefinedEscape('r'))
        );
        assert_eq!(
            r("a\\tb", Version::V1_2),
            Err(DecodeError::UndefinedEscape('t'))
        );
        assert_eq!(
            r("a\\", Version::V1_2),
            Err(DecodeError::UndefinedEscape(' '))
        );
        assert_eq!(r("a\\tb", Version::V1_0).as_deref(), Ok(&b"a\\tb"[..]));
    }
}
