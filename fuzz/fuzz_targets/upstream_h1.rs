//! The upstream side's HTTP/1.1 parsing on arbitrary bytes, as an upstream
//! could send them: never a panic; a final head takes exactly its own bytes
//! off the buffer; a chunked body decodes to the same bytes however the
//! input is split, and the decoder never yields more than it was given.
#![no_main]

use bytes::BytesMut;
use gateway::h1::{Chunked, Decoded, Parsed, parse_head};
use libfuzzer_sys::fuzz_target;

/// Decodes `input` fed in pieces of `step` bytes; `None` on a framing error.
fn decode(input: &[u8], step: usize) -> Option<(Vec<u8>, bool)> {
    let mut decoder = Chunked::default();
    let mut buf = BytesMut::new();
    let mut body = Vec::new();
    for piece in input.chunks(step.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf).ok()? {
                Decoded::Data(data) => body.extend_from_slice(&data),
                Decoded::NeedMore | Decoded::Done => break,
            }
        }
    }
    Some((body, decoder.is_done()))
}

fuzz_target!(|data: &[u8]| {
    let (head_request, rest) = match data.split_first() {
        Some((first, rest)) => (first & 1 == 1, rest),
        None => return,
    };
    let mut buf = BytesMut::from(rest);
    if let Ok(Parsed::Final(_)) = parse_head(&mut buf, head_request) {
        assert!(buf.len() < rest.len(), "a final head consumed bytes");
        assert!(rest.ends_with(&buf), "only the head was taken off");
    }
    let whole = decode(rest, rest.len());
    let split = decode(rest, 1 + (data[0] as usize % 7));
    if let (Some(whole), Some(split)) = (&whole, &split) {
        assert_eq!(whole, split, "the same body however the input is split");
        assert!(whole.0.len() <= rest.len());
    }
});
