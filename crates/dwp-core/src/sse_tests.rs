//! Table tests after the web-platform-tests `eventsource/format-*` files.
//! Every case runs three ways: whole, one byte at a time, and split in two at
//! every position, and all three must give the same events.

use super::*;

/// (name, stream, expected (event type, data, lastEventId) in order)
type Case = (
    &'static str,
    &'static [u8],
    &'static [(&'static str, &'static str, &'static str)],
);

const CASES: &[Case] = &[
    (
        "format-bom: one leading BOM is stripped, a later one is part of a field name",
        b"\xEF\xBB\xBFdata:1\n\n\xEF\xBB\xBFdata:2\n\ndata:3\n\n",
        &[("message", "1", ""), ("message", "3", "")],
    ),
    (
        "format-bom-2: only the first of two BOMs is stripped",
        b"\xEF\xBB\xBF\xEF\xBB\xBFdata:1\n\ndata:2\n\ndata:3\n\n",
        &[("message", "2", ""), ("message", "3", "")],
    ),
    (
        "format-comments: comment lines are ignored anywhere",
        b":\n\n:comment\ndata:1\n:comment in an event\ndata:2\n\n: \n\n",
        &[("message", "1\n2", "")],
    ),
    (
        "format-data-before-final-empty-line: an unterminated event is discarded",
        b"retry:1000\ndata:test1\n\nid:test\ndata:test2",
        &[("message", "test1", "")],
    ),
    (
        "format-field-data: empty data lines count",
        b"data:\n\ndata\ndata\n\ndata:test\n\n",
        &[("message", "", ""), ("message", "\n", ""), ("message", "test", "")],
    ),
    (
        "format-field-event: the type applies to one event only",
        b"event:test\ndata:x\n\ndata:x\n\n",
        &[("test", "x", ""), ("message", "x", "")],
    ),
    (
        "format-field-event-empty: an empty event field means message",
        b"event: \ndata:data\n\n",
        &[("message", "data", "")],
    ),
    (
        "format-field-id: ids persist and an empty id resets",
        b"id: 1\ndata: a\n\ndata: b\n\nid: \ndata: c\n\n",
        &[("message", "a", "1"), ("message", "b", "1"), ("message", "c", "")],
    ),
    (
        "format-field-id-null: an id with NUL is ignored",
        b"id: 1\ndata: a\n\nid: x\0y\ndata: b\n\n",
        &[("message", "a", "1"), ("message", "b", "1")],
    ),
    (
        "format-field-id-2: an id without data sets lastEventId for the next event",
        b"id: 7\n\ndata: a\n\n",
        &[("message", "a", "7")],
    ),
    (
        "format-field-parsing: names are case-sensitive and exact",
        b"data:\0\ndata:  2\rData:1\ndata\0:2\ndata:1\r\0data:4\nda-ta:3\rdata_5\ndata:3\rdata:\r\n data:32\ndata:4\n\n",
        &[("message", "\0\n 2\n1\n3\n\n4", "")],
    ),
    (
        "format-field-unknown: unknown fields and bare words are ignored",
        b"data:test\n data\ndata\nfoobar:xxx\njustsometext\n:thisisacommentyay\ndata:test\n\n",
        &[("message", "test\n\ntest", "")],
    ),
    (
        "format-leading-space: only one leading space is removed",
        b"data:\ttest\rdata: \ndata:test\n\n",
        &[("message", "\ttest\n\ntest", "")],
    ),
    (
        "format-newlines: CR, LF and CRLF all end lines",
        b"data:test\r\ndata\ndata:test\r\n\r",
        &[("message", "test\n\ntest", "")],
    ),
    (
        "format-null-character: NUL in data is kept",
        b"data:\0\n\n\n\n",
        &[("message", "\0", "")],
    ),
    (
        "format-utf-8: data is UTF-8",
        "data:ok\u{2026} \u{c0ac}\u{c81c}\n\n".as_bytes(),
        &[("message", "ok\u{2026} \u{c0ac}\u{c81c}", "")],
    ),
    (
        "aura framing: the contract's events",
        b"id: 1\nevent: start\ndata: {\"type\": \"start\"}\n\nid: 14\nevent: end\ndata: {\"type\": \"end\"}\n\ndata: [DONE]\n\n",
        &[
            ("start", "{\"type\": \"start\"}", "1"),
            ("end", "{\"type\": \"end\"}", "14"),
            ("message", "[DONE]", "14"),
        ],
    ),
];

fn summary(events: &[Event]) -> Vec<(String, String, String)> {
    events
        .iter()
        .map(|e| {
            (
                e.event_type().to_owned(),
                e.data.clone(),
                e.last_event_id.clone(),
            )
        })
        .collect()
}

#[test]
fn wpt_format_cases_whole_bytewise_and_split() {
    for (name, stream, expected) in CASES {
        let expected: Vec<_> = expected
            .iter()
            .map(|(t, d, id)| (t.to_string(), d.to_string(), id.to_string()))
            .collect();

        let whole = Parser::new().feed(stream);
        assert_eq!(summary(&whole), expected, "{name} (whole)");

        let mut p = Parser::new();
        let bytewise: Vec<Event> = stream.iter().flat_map(|b| p.feed(&[*b])).collect();
        assert_eq!(summary(&bytewise), expected, "{name} (byte by byte)");

        for cut in 0..=stream.len() {
            let mut p = Parser::new();
            let mut events = p.feed(&stream[..cut]);
            events.extend(p.feed(&stream[cut..]));
            assert_eq!(summary(&events), expected, "{name} (split at {cut})");
        }
    }
}

#[test]
fn retry_sets_the_reconnection_time_only_when_all_digits() {
    let mut p = Parser::new();
    p.feed(b"retry:03000\ndata:x\n\n");
    assert_eq!(p.reconnection_ms(), Some(3000));
    p.feed(b"retry:1000x\ndata:x\n\n");
    assert_eq!(p.reconnection_ms(), Some(3000), "bogus retry is ignored");
    p.feed(b"retry\ndata:x\n\n");
    assert_eq!(p.reconnection_ms(), Some(3000), "empty retry is ignored");
    p.feed(b"retry: 500\ndata:x\n\n");
    assert_eq!(
        p.reconnection_ms(),
        Some(500),
        "one leading space is allowed"
    );
    p.feed(b"retry:99999999999999999999999\ndata:x\n\n");
    assert_eq!(p.reconnection_ms(), Some(500), "overflow is ignored");
}

#[test]
fn a_lone_cr_at_a_chunk_end_then_lf_is_one_line_end() {
    let mut p = Parser::new();
    assert!(p.feed(b"data: a\r").is_empty());
    assert!(p.feed(b"\n").is_empty(), "the LF belongs to the CR");
    assert_eq!(p.feed(b"\r\n")[0].data, "a");
}

#[test]
fn a_utf8_sequence_split_across_chunks_is_decoded_whole() {
    let bytes = "data: \u{c0ac}\u{c81c}\n\n".as_bytes();
    let mut p = Parser::new();
    let mut events = p.feed(&bytes[..8]);
    events.extend(p.feed(&bytes[8..]));
    assert_eq!(events[0].data, "\u{c0ac}\u{c81c}");
}

#[test]
fn idle_only_between_events() {
    let mut p = Parser::new();
    assert!(p.is_idle(), "nothing seen yet");
    p.feed(b"\xEF");
    assert!(!p.is_idle(), "a BOM may be arriving");
    let mut p = Parser::new();
    p.feed(b"id: 1\n");
    assert!(!p.is_idle(), "a field of an unfinished event is pending");
    p.feed(b"data: x\n\n");
    assert!(p.is_idle());
    p.feed(b": comment\n");
    assert!(p.is_idle(), "a comment does not open an event");
    p.feed(b"data: par");
    assert!(!p.is_idle(), "a partial line is pending");
    p.feed(b"tial\n\r");
    assert!(!p.is_idle(), "a CR may still be followed by its LF");
    p.feed(b"\n");
    assert!(p.is_idle());
}

#[test]
fn encode_round_trips_through_the_parser() {
    let event = Event {
        id: Some("8".into()),
        event: Some("hitl".into()),
        data: "{\"a\": 1}\nsecond line".into(),
        retry: Some(1500),
        last_event_id: String::new(),
    };
    let text = encode(&event);
    assert_eq!(
        text,
        "id: 8\nevent: hitl\nretry: 1500\ndata: {\"a\": 1}\ndata: second line\n\n"
    );
    let parsed = Parser::new().feed(text.as_bytes());
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].id.as_deref(), Some("8"));
    assert_eq!(parsed[0].event.as_deref(), Some("hitl"));
    assert_eq!(parsed[0].data, event.data);
    assert_eq!(parsed[0].retry, Some(1500));
}

#[test]
fn encode_cannot_be_broken_by_newlines_in_id_or_event() {
    let event = Event {
        id: Some("1\n\ndata: injected".into()),
        event: Some("x\r\ny".into()),
        data: "d".into(),
        ..Event::default()
    };
    let parsed = Parser::new().feed(encode(&event).as_bytes());
    assert_eq!(parsed.len(), 1);
    assert_eq!(parsed[0].data, "d");
}

#[test]
fn the_keep_alive_comment_is_invisible_to_a_client() {
    let mut p = Parser::new();
    let mut events = p.feed(b"data: a\n\n");
    events.extend(p.feed(KEEP_ALIVE));
    events.extend(p.feed(comment("x\ny").as_bytes()));
    events.extend(p.feed(b"data: b\n\n"));
    assert_eq!(summary(&events).len(), 2);
}

#[test]
fn boundary_agrees_with_the_parser_after_every_byte() {
    let extra: &[&[u8]] = &[
        b"\xEF\xBB\xBF: comment\n\ndata: x\n\n",
        b"\xEF\xBBdata: x\n\n",
        b"\xEFdata\r\n\r\n: c\r\r",
        b": a\n: b\ndata: c\r\n\r\nid: 3\nevent: e\n\n",
        b"data:\r\r\r\n\n",
    ];
    let streams = CASES
        .iter()
        .map(|(_, s, _)| *s)
        .chain(extra.iter().copied());
    for stream in streams {
        let (mut parser, mut boundary) = (Parser::new(), Boundary::new());
        assert_eq!(parser.is_idle(), boundary.is_idle());
        for (i, b) in stream.iter().enumerate() {
            parser.feed(&[*b]);
            boundary.feed(&[*b]);
            assert_eq!(
                parser.is_idle(),
                boundary.is_idle(),
                "after byte {i} of {:?}",
                String::from_utf8_lossy(stream)
            );
        }
        let (mut parser, mut boundary) = (Parser::new(), Boundary::new());
        parser.feed(stream);
        boundary.feed(stream);
        assert_eq!(
            parser.is_idle(),
            boundary.is_idle(),
            "whole {:?}",
            String::from_utf8_lossy(stream)
        );
    }
}

#[test]
fn an_event_over_the_cap_is_skipped_to_its_blank_line_and_counted_never_held() {
    let mut p = Parser::with_max_event(64);
    let mut out = p.feed(b"data: small\n\ndata: ");
    // A huge data line in pieces, never ended by a newline for a while.
    for _ in 0..1000 {
        out.extend(p.feed(&[b'x'; 1000]));
        assert!(p.line.len() <= 64 && p.data.len() <= 64, "held");
    }
    out.extend(p.feed(b"\r\nevent: big\ndata: more\n\nid: 3\ndata: after\n\n"));
    let data: Vec<&str> = out.iter().map(|e| e.data.as_str()).collect();
    assert_eq!(data, ["small", "after"]);
    assert_eq!(p.take_oversized(), 1);
    assert_eq!(p.take_oversized(), 0);
    // Many lines that together pass the cap count too.
    let mut p = Parser::with_max_event(64);
    let many = "data: 0123456789\n".repeat(10);
    let out = p.feed(format!("{many}\ndata: ok\n\n").as_bytes());
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].data, "ok");
    assert_eq!(p.take_oversized(), 1);
    assert!(p.is_idle());
}
#[test]
fn blocks_keep_every_byte_and_end_at_blank_lines() {
    let stream = b"id: 1\nevent: start\ndata: {}\n\n: comment\n\ndata: [DONE]\r\n\r\ndata: x";
    for split in 1..stream.len() {
        let mut blocks = Blocks::new(1024);
        let mut out = Vec::new();
        blocks.feed(&stream[..split], &mut out);
        blocks.feed(&stream[split..], &mut out);
        let rest = blocks.rest();
        let joined: Vec<u8> = out
            .iter()
            .chain(rest.iter())
            .flat_map(|b| b.bytes.clone())
            .collect();
        assert_eq!(joined, stream.to_vec(), "split at {split}");
        assert_eq!(out.len(), 3, "split at {split}: {out:?}");
        assert_eq!(out[0].id.as_deref(), Some("1"));
        assert!(out[0].has_data);
        assert!(!out[1].has_data && out[1].id.is_none(), "a comment");
        assert!(out[2].has_data && out[2].id.is_none());
        assert_eq!(rest.unwrap().bytes, b"data: x");
    }
}

#[test]
fn a_block_past_its_cap_is_handed_out_as_it_stands() {
    let mut blocks = Blocks::new(8);
    let mut out = Vec::new();
    blocks.feed(b"data: 0123456789", &mut out);
    assert_eq!(out.len(), 1);
    assert!(!out[0].has_data, "a cut event is not marked as one");
    blocks.feed(b"\n\n", &mut out);
    let joined: Vec<u8> = out.iter().flat_map(|b| b.bytes.clone()).collect();
    assert_eq!(joined, b"data: 0123456789\n\n", "every byte kept");
}
