//! The header rules on arbitrary header blocks (`name: value` lines): never a
//! panic; after `strip_hop_by_hop` no hop-by-hop header is left and the
//! propagated identity headers are unchanged; the edge check answers.
#![no_main]

use dwp_core::headers::{HOP_BY_HOP, PROPAGATED};
use gateway::headers::strip_hop_by_hop;
use http::{HeaderMap, HeaderName, HeaderValue};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let mut map = HeaderMap::new();
    for line in data.split(|b| *b == b'\n') {
        let Some(colon) = line.iter().position(|b| *b == b':') else {
            continue;
        };
        let (Ok(name), Ok(value)) = (
            HeaderName::from_bytes(&line[..colon]),
            HeaderValue::from_bytes(line[colon + 1..].trim_ascii()),
        ) else {
            continue;
        };
        map.append(name, value);
    }
    let verifier = dwp_core::token::Verifier::new(b"fuzz-secret-fuzz-secret-fuzz-secret", None);
    for route in gateway::routes::contract_default().routes {
        let _ = gateway::edge::check(route, &map, Some(&verifier));
    }
    let before = map.clone();
    strip_hop_by_hop(&mut map);
    for hop in &HOP_BY_HOP {
        assert!(!map.contains_key(hop));
    }
    for name in &PROPAGATED {
        let kept: Vec<_> = map.get_all(name).iter().collect();
        let was: Vec<_> = before.get_all(name).iter().collect();
        assert_eq!(kept, was);
    }
});
