//! Property tests of route matching and the path rules: any path is either
//! refused, unknown, or routed by the first matching prefix with exactly
//! `/api` stripped; a dot segment, plain or encoded, is never routed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed unwrap is a failed test, and a scenario reads top to bottom"
)]

use gateway::routes::{PathError, contract_default, find};
use proptest::prelude::*;

fn segment() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("api".to_owned()),
        Just("aura".to_owned()),
        Just("hitl".to_owned()),
        Just("main".to_owned()),
        Just("auth".to_owned()),
        Just(".".to_owned()),
        Just("..".to_owned()),
        Just("%2e%2E".to_owned()),
        Just("%252e".to_owned()),
        Just("%2f".to_owned()),
        Just("a\\b".to_owned()),
        "[a-zA-Z0-9_.~%-]{0,8}",
        any::<String>(),
    ]
}

fn path() -> impl Strategy<Value = String> {
    proptest::collection::vec(segment(), 0..7)
        .prop_map(|segments| format!("/{}", segments.join("/")))
}

fn decodes_to_dot_segment(segment: &str) -> bool {
    let lower = segment.to_ascii_lowercase();
    let decoded = lower.replace("%25", "%").replace("%2e", ".");
    matches!(decoded.as_str(), "." | "..")
}

proptest! {
    #[test]
    fn every_routed_path_strips_exactly_api_and_takes_the_first_match(path in path()) {
        match find(&path) {
            Ok(Some((route, upstream))) => {
                prop_assert!(path.starts_with(route.prefix));
                prop_assert_eq!(format!("/api{upstream}"), path.clone());
                prop_assert!(upstream.starts_with('/'));
                let first = contract_default().routes.iter().find(|r| {
                    path.strip_prefix(r.prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                });
                prop_assert_eq!(first.map(|r| r.name), Some(route.name));
                for seg in path.split('/') {
                    prop_assert!(!decodes_to_dot_segment(seg), "{} routed with {}", path, seg);
                }
            }
            Ok(None) => {
                let matches = contract_default().routes.iter().any(|r| {
                    path.strip_prefix(r.prefix).is_some_and(|rest| rest.is_empty() || rest.starts_with('/'))
                });
                prop_assert!(!matches, "{} matches a route but was not routed", path);
            }
            Err(PathError::Ambiguous) => {}
        }
    }

    #[test]
    fn a_dot_segment_is_never_routed(prefix in path(), dots in prop_oneof![Just(".."), Just("."), Just("%2e%2e"), Just("%2E"), Just("%252e%252e")], rest in path()) {
        let path = format!("{prefix}/{dots}{rest}");
        prop_assert_eq!(find(&path).map(|r| r.is_some()), Err(PathError::Ambiguous), "{}", path);
    }
}
