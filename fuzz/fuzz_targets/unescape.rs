//! Checks `unescape` against a plain model of the escapes each version
//! defines, and that escaping then unescaping gives back any bytes.
//!
//! Input layout: byte 0 picks the version (`% 3`: 1.0, 1.1, 1.2); the rest is
//! the raw header text.

#![no_main]

use bytes::{Bytes, BytesMut};
use libfuzzer_sys::fuzz_target;
use stompbox_codec::{DecodeError, Version, escape_into, unescape};

/// What unescaping must give: 1.0 has no escapes; 1.1 defines `\\`, `\n` and
/// `\c`; 1.2 adds `\r`. Anything else after a backslash, or nothing, is an
/// error.
fn model(raw: &[u8], version: Version) -> Option<Vec<u8>> {
    if version == Version::V1_0 {
        return Some(raw.to_vec());
    }
    let mut out = Vec::new();
    let mut i = 0;
    while i < raw.len() {
        if raw[i] != b'\\' {
            out.push(raw[i]);
            i += 1;
            continue;
        }
        out.push(match raw.get(i + 1)? {
            b'\\' => b'\\',
            b'n' => b'\n',
            b'c' => b':',
            b'r' if version == Version::V1_2 => b'\r',
            _ => return None,
        });
        i += 2;
    }
    Some(out)
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, raw)) = data.split_first() else {
        return;
    };
    let version = Version::ALL[usize::from(first % 3)];
    let result = unescape(Bytes::copy_from_slice(raw), version);
    match (&result, model(raw, version)) {
        (Ok(got), Some(want)) => assert_eq!(&got[..], &want[..]),
        (Err(DecodeError::UndefinedEscape(_)), None) => {}
        (got, want) => panic!("unescape gave {got:?}, model {want:?}"),
    }

    // Escaping any bytes and unescaping them gives them back.
    let mut escaped = BytesMut::new();
    escape_into(raw, version, &mut escaped);
    let back = unescape(escaped.freeze(), version);
    assert_eq!(back.as_deref(), Ok(raw));

    // An escaped value has no raw LF, and no raw ':' (1.1 and 1.2), no raw
    // CR (1.2): what the header line syntax needs.
    if let Ok(unescaped) = result {
        let mut again = BytesMut::new();
        escape_into(&unescaped, version, &mut again);
        if version != Version::V1_0 {
            assert!(!again.contains(&b'\n') && !again.contains(&b':'));
        }
        if version == Version::V1_2 {
            assert!(!again.contains(&b'\r'));
        }
    }
});
