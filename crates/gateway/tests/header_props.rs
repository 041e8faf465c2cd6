//! Property tests of the header rules: after `strip_hop_by_hop` no hop-by-hop
//! header and nothing `Connection` names is left, except what it may never
//! remove (framing, `Host`, the contract's propagated headers, the fields
//! the gateway sets), and everything else is untouched; `append_forwarded`
//! keeps what earlier proxies wrote and adds this hop last, and
//! `add_forwarded`'s lines written straight into the head are the same
//! fields; the edge check
//! answers every header value, however broken, without a panic.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed unwrap is a failed test, and a scenario reads top to bottom"
)]

use dwp_core::headers::{HOP_BY_HOP, NEVER_HOP_BY_HOP, PROPAGATED};
use gateway::headers::{add_forwarded, append_forwarded, strip_hop_by_hop};
use http::{HeaderMap, HeaderName, HeaderValue};
use proptest::prelude::*;

/// Names from every class: hop-by-hop, propagated, the forwarding ones, and
/// ordinary or random tokens.
fn name() -> impl Strategy<Value = HeaderName> {
    let fixed: Vec<HeaderName> = HOP_BY_HOP
        .iter()
        .chain(PROPAGATED.iter())
        .cloned()
        .chain(
            [
                "x-forwarded-for",
                "host",
                "content-type",
                "content-length",
                "x-request-id",
                "x-a",
                "accept",
            ]
            .into_iter()
            .map(HeaderName::from_static),
        )
        .collect();
    prop_oneof![
        proptest::sample::select(fixed),
        "[a-z][a-z0-9-]{0,10}".prop_map(|n| HeaderName::from_bytes(n.as_bytes()).unwrap()),
    ]
}

/// `Connection` values: lists of names, with the odd spacing and case of
/// real clients, and junk.
fn connection_value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        proptest::collection::vec((name(), " {0,2}", any::<bool>()), 0..5).prop_map(|names| {
            let text: Vec<String> = names
                .iter()
                .map(|(n, pad, upper)| {
                    let n = if *upper {
                        n.as_str().to_ascii_uppercase()
                    } else {
                        n.as_str().to_owned()
                    };
                    format!("{pad}{n}{pad}")
                })
                .collect();
            HeaderValue::from_str(&text.join(",")).unwrap()
        }),
        "[ -~]{0,30}".prop_map(|v| HeaderValue::from_str(&v).unwrap()),
    ]
}

fn value() -> impl Strategy<Value = HeaderValue> {
    prop_oneof![
        "[ -~]{0,20}".prop_map(|v| HeaderValue::from_str(&v).unwrap()),
        proptest::collection::vec(any::<u8>(), 0..20)
            .prop_filter_map("not a header value", |b| HeaderValue::from_bytes(&b).ok()),
    ]
}

fn headers() -> impl Strategy<Value = HeaderMap> {
    (
        proptest::collection::vec((name(), value()), 0..12),
        proptest::collection::vec(connection_value(), 0..3),
    )
        .prop_map(|(pairs, connection)| {
            let mut map = HeaderMap::new();
            for (n, v) in pairs {
                map.append(n, v);
            }
            for v in connection {
                map.append(http::header::CONNECTION, v);
            }
            map
        })
}

/// The names a `Connection` header lists, as the proxy reads them.
fn named_in_connection(map: &HeaderMap) -> Vec<HeaderName> {
    map.get_all(http::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect()
}

proptest! {
    #[test]
    fn hop_by_hop_headers_and_what_connection_names_are_gone_the_rest_untouched(original in headers()) {
        let mut stripped = original.clone();
        strip_hop_by_hop(&mut stripped);
        let named = named_in_connection(&original);
        for hop in &HOP_BY_HOP {
            prop_assert!(!stripped.contains_key(hop), "{hop} left");
        }
        for name in original.keys() {
            let kept: Vec<_> = stripped.get_all(name).iter().collect();
            let before: Vec<_> = original.get_all(name).iter().collect();
            if NEVER_HOP_BY_HOP.contains(name) && !HOP_BY_HOP.contains(name) {
                prop_assert_eq!(kept, before, "{} is never removed by Connection", name);
            } else if HOP_BY_HOP.contains(name) || named.contains(name) {
                prop_assert!(kept.is_empty(), "{} left", name);
            } else {
                prop_assert_eq!(kept, before, "{} changed", name);
            }
        }
        prop_assert!(stripped.keys().all(|n| original.contains_key(n)), "nothing added");
    }

    #[test]
    fn forwarded_headers_keep_earlier_hops_and_add_this_one_last(
        earlier in proptest::collection::vec("[0-9.]{1,15}", 0..4),
        host in proptest::option::of("[a-z0-9.:-]{1,20}"),
        client in "[0-9.]{7,15}",
    ) {
        let mut map = HeaderMap::new();
        for hop in &earlier {
            map.append("x-forwarded-for", HeaderValue::from_str(hop).unwrap());
        }
        if let Some(host) = &host {
            map.insert(http::header::HOST, HeaderValue::from_str(host).unwrap());
        }
        append_forwarded(&mut map, &HeaderValue::from_str(&client).unwrap(), "/api", 0);
        let mut want = earlier.clone();
        want.push(client.clone());
        let forwarded_for: Vec<_> = map.get_all("x-forwarded-for").iter().collect();
        prop_assert_eq!(forwarded_for.len(), 1, "one joined value");
        prop_assert_eq!(forwarded_for[0].to_str().unwrap(), want.join(", "));
        prop_assert_eq!(map.get("x-forwarded-proto").unwrap(), "http");
        prop_assert_eq!(map.get("x-forwarded-prefix").unwrap(), "/api");
        prop_assert_eq!(
            map.get("x-forwarded-host").map(|v| v.to_str().unwrap().to_owned()),
            host
        );
    }

    #[test]
    fn forwarded_fields_added_beside_the_map_are_the_fields_the_map_would_carry(
        earlier in proptest::option::of(("x-forwarded-(for|host|proto|prefix|port)", "[0-9.]{1,15}")),
        host in proptest::option::of("[a-z0-9.:-]{1,20}"),
        client in "[0-9.]{7,15}",
    ) {
        let mut map = HeaderMap::new();
        map.insert("x-other", HeaderValue::from_static("1"));
        if let Some((name, value)) = &earlier {
            map.insert(
                http::HeaderName::from_bytes(name.as_bytes()).unwrap(),
                HeaderValue::from_str(value).unwrap(),
            );
        }
        if let Some(host) = &host {
            map.insert(http::header::HOST, HeaderValue::from_str(host).unwrap());
        }
        let client = HeaderValue::from_str(&client).unwrap();
        // The reference: every field in the map, then encoded.
        let mut by_map = map.clone();
        append_forwarded(&mut by_map, &client, "/api", 0);
        let mut want = Vec::new();
        gateway::h1::encode_fields(&mut want, &by_map);
        // The fast path: fields added beside the map, then both encoded.
        let mut added = gateway::headers::Added::default();
        add_forwarded(&mut map, &client, "/api", 0, &mut added);
        prop_assert_eq!(added.is_empty(), earlier.is_some(), "added only when no earlier hop");
        let mut got = Vec::new();
        added.each(|name, value| gateway::h1::encode_field(&mut got, name, value));
        gateway::h1::encode_fields(&mut got, &map);
        let lines = |head: &[u8]| {
            let mut lines: Vec<String> = String::from_utf8(head.to_vec())
                .unwrap()
                .split("\r\n")
                .map(str::to_owned)
                .collect();
            lines.sort();
            lines
        };
        prop_assert_eq!(lines(&got), lines(&want));
    }

    #[test]
    fn the_edge_check_answers_any_header_values_without_panicking(
        tenant in proptest::option::of(value()),
        user in proptest::option::of(value()),
        authorization in proptest::option::of(prop_oneof![
            value(),
            "Bearer [A-Za-z0-9_.=-]{0,80}".prop_map(|v| HeaderValue::from_str(&v).unwrap()),
        ]),
        route in 0..gateway::routes::contract_default().routes.len(),
    ) {
        let verifier = dwp_core::token::Verifier::new(b"header-props-secret-0123456789abcdef", None);
        let tokens = gateway::tokens::Tokens::new(verifier, 1, 16);
        let mut map = HeaderMap::new();
        for (name, v) in [("x-tenant-id", tenant), ("x-user-id", user), ("authorization", authorization)] {
            if let Some(v) = v {
                map.insert(name, v);
            }
        }
        let route = &gateway::routes::contract_default().routes[route];
        let checked = gateway::edge::check(route.policy.edge, &map, Some(&tokens), 0);
        if route.policy.edge != gateway::routes::Edge::Open {
            // No random value is a token signed with this secret.
            prop_assert!(checked.is_err());
        }
    }
}
