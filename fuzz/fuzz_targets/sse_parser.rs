//! The SSE parser on arbitrary bytes: it never panics, and however the bytes
//! are cut (the first byte picks the cut) it sees the same events and ends
//! equally idle as the boundary tracker says.
#![no_main]

use dwp_core::sse::{Boundary, Parser};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, bytes)) = data.split_first() else {
        return;
    };
    let whole = Parser::new().feed(bytes);
    let mut parser = Parser::new();
    let mut boundary = Boundary::new();
    let mut pieces = Vec::new();
    for chunk in bytes.chunks(usize::from(cut % 7) + 1) {
        parser.feed_into(chunk, &mut pieces);
        boundary.feed(chunk);
        assert_eq!(parser.is_idle(), boundary.is_idle());
    }
    assert_eq!(whole, pieces);
});
