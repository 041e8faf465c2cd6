//! Property tests of the SSE codec: however a stream is cut into chunks the
//! parser sees the same events; the boundary tracker agrees with the parser
//! after every byte; what the encoder writes parses back to the same event.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed unwrap is a failed test, and a scenario reads top to bottom"
)]

use dwp_core::sse::{Boundary, Event, Parser, encode};
use proptest::prelude::*;

/// Streams made of the pieces SSE is made of, including the awkward ones.
fn stream() -> impl Strategy<Value = Vec<u8>> {
    let piece = prop_oneof![
        Just(b"data: x".to_vec()),
        Just(b"data:".to_vec()),
        Just(b"data".to_vec()),
        Just(b"id: 7".to_vec()),
        Just(b"id: a\0b".to_vec()),
        Just(b"event: plan_step".to_vec()),
        Just(b"retry: 1000".to_vec()),
        Just(b": keep-alive".to_vec()),
        Just(b"\n".to_vec()),
        Just(b"\r".to_vec()),
        Just(b"\r\n".to_vec()),
        Just(b"\xEF\xBB\xBF".to_vec()),
        Just("data: 삭제 {\"k\": 1}".as_bytes().to_vec()),
        proptest::collection::vec(any::<u8>(), 0..6),
    ];
    proptest::collection::vec(piece, 0..40).prop_map(|pieces| pieces.concat())
}

fn parse_in(chunks: &[&[u8]]) -> Vec<Event> {
    let mut parser = Parser::new();
    let mut out = Vec::new();
    for chunk in chunks {
        parser.feed_into(chunk, &mut out);
    }
    out
}

proptest! {
    #[test]
    fn any_chunking_gives_the_same_events(
        bytes in stream(),
        cuts in proptest::collection::vec(any::<prop::sample::Index>(), 0..8),
    ) {
        let mut points: Vec<usize> = cuts.iter().map(|i| i.index(bytes.len() + 1)).collect();
        points.sort_unstable();
        let mut chunks = Vec::new();
        let mut last = 0;
        for p in points {
            chunks.push(&bytes[last..p]);
            last = p;
        }
        chunks.push(&bytes[last..]);
        prop_assert_eq!(parse_in(&chunks), parse_in(&[&bytes]));
    }

    #[test]
    fn the_boundary_tracker_agrees_with_the_parser_after_every_byte(bytes in stream()) {
        let (mut parser, mut boundary) = (Parser::new(), Boundary::new());
        for b in &bytes {
            parser.feed(std::slice::from_ref(b));
            boundary.feed(std::slice::from_ref(b));
            prop_assert_eq!(boundary.is_idle(), parser.is_idle(), "after {:?}", bytes);
        }
    }

    #[test]
    fn encoded_events_parse_back(
        id in "[a-zA-Z0-9_:.-]{1,20}",
        name in "[a-z_]{1,16}",
        data in "[^\r\u{0}]{0,200}",
    ) {
        let event = Event {
            id: Some(id.clone()),
            event: Some(name.clone()),
            data: data.clone(),
            ..Event::default()
        };
        let parsed = Parser::new().feed(encode(&event).as_bytes());
        prop_assert_eq!(parsed.len(), 1);
        prop_assert_eq!(parsed[0].id.as_deref(), Some(id.as_str()));
        prop_assert_eq!(parsed[0].event.as_deref(), Some(name.as_str()));
        prop_assert_eq!(&parsed[0].data, &data);
    }
}
