//! W3C Trace Context (`traceparent`), read and written by hand: a trace id
//! (and the caller's span) out of a header, hex digits into one. The gateway
//! continues or starts a trace per request; main-service logs the trace id
//! it is given and makes its span a child of the gateway's.

/// A `traceparent` of version 00 (or a later one, read as 00 allows):
/// its trace id and flags; `None` when it is not one.
pub fn parse(value: &[u8]) -> Option<([u8; 16], u8)> {
    parse_parent(value).map(|(trace_id, _, flags)| (trace_id, flags))
}

/// [`parse`] with the caller's span id: (trace id, parent span id, flags).
pub fn parse_parent(value: &[u8]) -> Option<([u8; 16], [u8; 8], u8)> {
    // version "-" trace-id(32) "-" parent-id(16) "-" flags(2)
    if value.len() < 55 || value[2] != b'-' || value[35] != b'-' || value[52] != b'-' {
        return None;
    }
    let version = unhex::<1>(&value[..2])?[0];
    if version == 0xff
        || (version == 0 && value.len() != 55)
        || (value.len() > 55 && value[55] != b'-')
    {
        return None;
    }
    let trace_id = unhex::<16>(&value[3..35])?;
    let parent_id = unhex::<8>(&value[36..52])?;
    let flags = unhex::<1>(&value[53..55])?[0];
    (trace_id != [0; 16] && parent_id != [0; 8]).then_some((trace_id, parent_id, flags))
}

/// `N` bytes from `2N` lower-case hex digits (upper case is invalid in
/// Trace Context).
fn unhex<const N: usize>(digits: &[u8]) -> Option<[u8; N]> {
    let nibble = |d: u8| match d {
        b'0'..=b'9' => Some(d - b'0'),
        b'a'..=b'f' => Some(d - b'a' + 10),
        _ => None,
    };
    let mut out = [0u8; N];
    for (i, byte) in out.iter_mut().enumerate() {
        *byte = nibble(digits[2 * i])? << 4 | nibble(digits[2 * i + 1])?;
    }
    Some(out)
}

/// `bytes` as lower-case hex digits (`N` = twice its length).
pub fn hex<const N: usize>(bytes: &[u8]) -> [u8; N] {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; N];
    for (pair, b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(b >> 4)];
        pair[1] = DIGITS[usize::from(b & 15)];
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_ids_of_a_header_and_none_of_junk() {
        let header = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let (trace, parent, flags) = parse_parent(header).unwrap();
        assert_eq!(&hex::<32>(&trace), b"4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(&hex::<16>(&parent), b"00f067aa0ba902b7");
        assert_eq!(flags, 1);
        assert_eq!(parse(b"junk"), None);
    }
}
