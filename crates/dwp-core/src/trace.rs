//! W3C Trace Context (`traceparent`), read and written by hand: a trace id
//! and flags out of a header, hex digits into one. The gateway continues or
//! starts a trace per request; main-service logs the trace id it is given.

/// The trace id of a `traceparent` as 32 hex digits, or a new random one
/// when there is no usable header (`fresh` gives 16 random bytes).
pub fn trace_id_or(traceparent: Option<&[u8]>, fresh: impl FnOnce() -> [u8; 16]) -> String {
    let id = traceparent.and_then(parse).map_or_else(fresh, |(id, _)| id);
    String::from_utf8_lossy(&hex::<32>(&id)).into_owned()
}

/// A `traceparent` of version 00 (or a later one, read as 00 allows):
/// its trace id and flags; `None` when it is not one.
pub fn parse(value: &[u8]) -> Option<([u8; 16], u8)> {
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
    (trace_id != [0; 16] && parent_id != [0; 8]).then_some((trace_id, flags))
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
    fn the_trace_id_of_a_header_or_a_new_one() {
        let header = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        assert_eq!(
            trace_id_or(Some(header), || [7; 16]),
            "4bf92f3577b34da6a3ce929d0e0e4736"
        );
        assert_eq!(trace_id_or(Some(b"junk"), || [0xab; 16]), "ab".repeat(16));
        assert_eq!(trace_id_or(None, || [1; 16]), "01".repeat(16));
    }
}
