//! Header rules for both directions of the proxy (CONTRACT.md section 3),
//! as edits of typed header maps; [`crate::h1`] writes them on the wire.

use dwp_core::headers::{
    self, CORRELATION_ID, DWP_CALLER_TYPE, DWP_SOURCE, NEVER_HOP_BY_HOP, TRACEPARENT,
};
use http::header::{CONNECTION, Entry, HOST};
use http::{HeaderMap, HeaderName, HeaderValue};

use crate::trace::Trace;

/// Fields the gateway adds to a request that no earlier hop set, kept
/// beside the request's own map and written after it
/// ([`crate::h1::RequestHead::added`]): adding them costs no map insert,
/// and the request stays small as it moves through the phases.
#[derive(Debug, Default)]
pub struct Added {
    /// `X-DWP-Source: FRONTEND`.
    source: bool,
    /// `X-DWP-Caller-Type: USER`.
    caller_type: bool,
    /// This hop's `X-Forwarded-*`, when no earlier hop set any.
    forwarded: Option<Forwarded>,
    /// This hop's `traceparent`, and whether `X-Correlation-ID` (the trace
    /// id) is added too ([`crate::trace`]).
    trace: Option<(Trace, bool)>,
}

/// `X-Forwarded-For` (the client), `-Proto` (`http`), `-Host` (the
/// request's `Host`, when it has one) and `-Prefix`.
#[derive(Debug)]
struct Forwarded {
    client: HeaderValue,
    host: Option<HeaderValue>,
    prefix: &'static str,
    https: bool,
}

impl Added {
    /// True when nothing is added.
    pub fn is_empty(&self) -> bool {
        !self.source && !self.caller_type && self.forwarded.is_none() && self.trace.is_none()
    }

    /// The client came over TLS: `X-Forwarded-Proto: https` (when the
    /// gateway writes it itself; see [`https_proto`]).
    pub fn https(&mut self) {
        if let Some(f) = &mut self.forwarded {
            f.https = true;
        }
    }

    /// Adds this hop's `traceparent` of `trace`, and `X-Correlation-ID`
    /// when `correlation`.
    pub fn trace(&mut self, trace: Trace, correlation: bool) {
        self.trace = Some((trace, correlation));
    }

    /// The bytes [`Self::each`]'s fields take as header lines
    /// (`name: value` and CRLF each), so that a head is written into a
    /// buffer of its exact size.
    pub fn encoded_len(&self) -> usize {
        let line = |name: &HeaderName, value: usize| name.as_str().len() + value + 4;
        let mut len = 0;
        if self.source {
            len += line(&DWP_SOURCE, b"FRONTEND".len());
        }
        if self.caller_type {
            len += line(&DWP_CALLER_TYPE, b"USER".len());
        }
        if let Some(f) = &self.forwarded {
            len += line(&headers::FORWARDED_FOR, f.client.len())
                + line(&headers::FORWARDED_PROTO, if f.https { 5 } else { 4 })
                + f.host
                    .as_ref()
                    .map_or(0, |host| line(&headers::FORWARDED_HOST, host.len()))
                + line(&headers::FORWARDED_PREFIX, f.prefix.len());
        }
        if let Some((_, correlation)) = &self.trace {
            len += line(&TRACEPARENT, 55);
            if *correlation {
                len += line(&CORRELATION_ID, 32);
            }
        }
        len
    }

    /// Calls `field` with each added field's name and value, in order.
    pub fn each(&self, mut field: impl FnMut(&[u8], &[u8])) {
        if self.source {
            field(DWP_SOURCE.as_str().as_bytes(), b"FRONTEND");
        }
        if self.caller_type {
            field(DWP_CALLER_TYPE.as_str().as_bytes(), b"USER");
        }
        if let Some(f) = &self.forwarded {
            field(
                headers::FORWARDED_FOR.as_str().as_bytes(),
                f.client.as_bytes(),
            );
            let proto: &[u8] = if f.https { b"https" } else { b"http" };
            field(headers::FORWARDED_PROTO.as_str().as_bytes(), proto);
            if let Some(host) = &f.host {
                field(headers::FORWARDED_HOST.as_str().as_bytes(), host.as_bytes());
            }
            field(
                headers::FORWARDED_PREFIX.as_str().as_bytes(),
                f.prefix.as_bytes(),
            );
        }
        if let Some((trace, correlation)) = &self.trace {
            let traceparent = trace.traceparent();
            field(TRACEPARENT.as_str().as_bytes(), &traceparent);
            if *correlation {
                // The trace id's digits, as they are in the traceparent.
                field(CORRELATION_ID.as_str().as_bytes(), &traceparent[3..35]);
            }
        }
    }
}

/// The first value of each of `names`, found in one pass over the fields:
/// cheaper than a lookup per name, which hashes the name (byte by byte for
/// the contract's own `X-*` names) even when the request has none.
pub fn first_of<'a, const N: usize>(
    headers: &'a HeaderMap,
    names: [&HeaderName; N],
) -> [Option<&'a HeaderValue>; N] {
    let mut found = [None; N];
    for (name, value) in headers {
        if let Some(i) = names.iter().position(|wanted| *wanted == name)
            && found[i].is_none()
        {
            found[i] = Some(value);
        }
    }
    found
}

/// Sets `X-DWP-Source: FRONTEND` and `X-DWP-Caller-Type: USER` when a
/// request has none (or an empty one), as the old gateway did: a browser
/// sends neither, and the agent reads both into its context. An agent
/// calling back says `AURA` / `AGENT` itself, and that is kept.
pub fn add_caller_defaults(headers: &mut HeaderMap, added: &mut Added) {
    // Each is added when the request has none or an empty one (which goes).
    let [source, caller_type] = first_of(headers, [&DWP_SOURCE, &DWP_CALLER_TYPE])
        .map(|value| value.map(HeaderValue::is_empty));
    for (name, empty) in [(DWP_SOURCE, source), (DWP_CALLER_TYPE, caller_type)] {
        if empty == Some(true) {
            headers.remove(name);
        }
    }
    added.source = source != Some(false);
    added.caller_type = caller_type != Some(false);
}

/// Removes hop-by-hop headers: the fixed RFC 9110 list and every header
/// named in `Connection`, except those in [`NEVER_HOP_BY_HOP`]: framing,
/// `Host`, the contract's propagated identity headers and the fields the
/// gateway sets are kept even when `Connection` names them (a client that
/// names `Content-Length` must not unframe its body on a shared upstream
/// connection).
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    // One pass over the names, noting which of the fixed list are there
    // (a bit each): most messages carry none, or only `Connection`.
    let present = headers
        .keys()
        .filter_map(hop_by_hop_index)
        .fold(0u16, |bits, i| bits | 1 << i);
    if present == 0 {
        return;
    }
    // The names `Connection` lists besides the fixed ones (`keep-alive`,
    // `close`: nothing more to do, the common case, with no allocation).
    let mut named: Vec<HeaderName> = Vec::new();
    if present & 1 != 0 {
        let tokens = headers
            .get_all(CONNECTION)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .map(str::trim);
        for token in tokens {
            if token.is_empty()
                || token.eq_ignore_ascii_case("close")
                || token.eq_ignore_ascii_case("keep-alive")
            {
                continue;
            }
            if let Ok(name) = HeaderName::from_bytes(token.as_bytes())
                && !NEVER_HOP_BY_HOP.contains(&name)
            {
                named.push(name);
            }
        }
    }
    for (i, name) in dwp_core::headers::HOP_BY_HOP.iter().enumerate() {
        if present & 1 << i != 0 {
            headers.remove(name);
        }
    }
    for name in named {
        headers.remove(name);
    }
}

/// Whether `name` is in [`headers::HOP_BY_HOP`], by its text.
#[cfg(test)]
fn is_hop_by_hop(name: &HeaderName) -> bool {
    hop_by_hop_index(name).is_some()
}

/// `name`'s place in [`headers::HOP_BY_HOP`], by its text: a `match` on a
/// few short strings costs a tenth of comparing against each listed name,
/// and it runs for every field of every request and response.
fn hop_by_hop_index(name: &HeaderName) -> Option<u32> {
    Some(match name.as_str() {
        "connection" => 0,
        "keep-alive" => 1,
        "proxy-connection" => 2,
        "te" => 3,
        "trailer" => 4,
        "transfer-encoding" => 5,
        "upgrade" => 6,
        "proxy-authorization" => 7,
        "proxy-authenticate" => 8,
        _ => return None,
    })
}

/// Adds this hop's `X-Forwarded-*`: `-For` is appended to what came (the
/// client's address); `-Proto`, `-Host` and `-Prefix` are the gateway's
/// own, one value each, whatever a client sent. Behind `hops` trusted
/// proxies, the last `-Proto`/`-Host` they set is kept (one value).
pub fn add_forwarded(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    prefix: &'static str,
    hops: usize,
    added: &mut Added,
) {
    if headers
        .keys()
        .any(|name| name.as_str().starts_with("x-forwarded-"))
    {
        append_forwarded(headers, client, prefix, hops);
        return;
    }
    added.forwarded = Some(Forwarded {
        client: client.clone(),
        host: headers.get(HOST).cloned(),
        prefix,
        https: false,
    });
}

/// After [`add_forwarded`], for a client that came over TLS: the proto
/// the gateway sets is `https` (a trusted proxy's, with `hops` above 0,
/// stays as it said).
pub fn https_proto(headers: &mut HeaderMap, hops: usize, added: &mut Added) {
    added.https();
    if hops == 0 && headers.contains_key(headers::FORWARDED_PROTO) {
        headers.insert(headers::FORWARDED_PROTO, HeaderValue::from_static("https"));
    }
}

/// Appends the client's address to `X-Forwarded-For` and sets `-Proto`,
/// `-Host` and `-Prefix` to one value each: the last one trusted proxies
/// set (`hops` above 0), else the gateway's own.
pub fn append_forwarded(
    headers: &mut HeaderMap,
    client: &HeaderValue,
    prefix: &'static str,
    hops: usize,
) {
    append(headers, headers::FORWARDED_FOR, client.clone());
    let trusted = |headers: &HeaderMap, name: &HeaderName| {
        (hops > 0)
            .then(|| headers.get_all(name).iter().next_back().cloned())
            .flatten()
            .and_then(|v| {
                let text = v.to_str().ok()?;
                let last = text.rsplit(',').next()?.trim();
                (!last.is_empty()).then(|| HeaderValue::from_str(last).ok())?
            })
    };
    let proto =
        trusted(headers, &headers::FORWARDED_PROTO).unwrap_or(HeaderValue::from_static("http"));
    headers.insert(headers::FORWARDED_PROTO, proto);
    match trusted(headers, &headers::FORWARDED_HOST).or_else(|| headers.get(HOST).cloned()) {
        Some(host) => {
            headers.insert(headers::FORWARDED_HOST, host);
        }
        None => {
            headers.remove(headers::FORWARDED_HOST);
        }
    }
    headers.insert(headers::FORWARDED_PREFIX, HeaderValue::from_static(prefix));
}

pub use dwp_core::headers::forwarded_client;

/// Sets `name` to `value`, or to `existing, value` when earlier proxies set it.
fn append(headers: &mut HeaderMap, name: HeaderName, value: HeaderValue) {
    match headers.entry(name) {
        Entry::Vacant(slot) => {
            slot.insert(value);
        }
        Entry::Occupied(mut slot) => {
            let mut joined: Vec<u8> = Vec::new();
            for existing in slot.iter() {
                joined.extend_from_slice(existing.as_bytes());
                joined.extend_from_slice(b", ");
            }
            joined.extend_from_slice(value.as_bytes());
            if let Ok(joined) = HeaderValue::from_bytes(&joined) {
                slot.insert(joined);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwp_core::headers::HOP_BY_HOP;

    #[test]
    fn the_hop_by_hop_match_is_the_contract_list() {
        for (i, name) in HOP_BY_HOP.iter().enumerate() {
            assert_eq!(hop_by_hop_index(name), Some(i as u32), "{name}");
        }
        for name in dwp_core::headers::NEVER_HOP_BY_HOP
            .iter()
            .chain(&dwp_core::headers::PROPAGATED)
        {
            assert_eq!(is_hop_by_hop(name), HOP_BY_HOP.contains(name), "{name}");
        }
        assert!(!is_hop_by_hop(&HeaderName::from_static("x-connection")));
    }

    #[test]
    fn first_of_finds_each_names_first_value_in_one_pass() {
        let mut h = HeaderMap::new();
        h.append("x-user-id", HeaderValue::from_static("u1"));
        h.append("authorization", HeaderValue::from_static("Bearer t"));
        h.append("x-user-id", HeaderValue::from_static("u2"));
        h.append("x-tenant", HeaderValue::from_static("near"));
        let [user, tenant, auth] = first_of(
            &h,
            [
                &HeaderName::from_static("x-user-id"),
                &HeaderName::from_static("x-tenant-id"),
                &http::header::AUTHORIZATION,
            ],
        );
        assert_eq!(user, Some(&HeaderValue::from_static("u1")));
        assert_eq!(tenant, None);
        assert_eq!(auth, Some(&HeaderValue::from_static("Bearer t")));
    }

    #[test]
    fn caller_defaults_fill_what_is_missing_or_empty_only() {
        /// Fields sent; then `added.source`, `added.caller_type`, and the
        /// names left in the request.
        type Case = (
            &'static [(&'static str, &'static str)],
            bool,
            bool,
            &'static [&'static str],
        );
        let cases: [Case; 4] = [
            (&[], true, true, &[]),
            (&[("x-dwp-source", "AURA")], false, true, &["x-dwp-source"]),
            (
                &[("x-dwp-source", ""), ("x-dwp-caller-type", "AGENT")],
                true,
                false,
                &["x-dwp-caller-type"],
            ),
            (
                &[("x-dwp-caller-type", ""), ("x-dwp-caller-type", "AGENT")],
                true,
                true,
                &[],
            ),
        ];
        for (sent, source, caller_type, kept) in cases {
            let mut h = HeaderMap::new();
            for (name, value) in sent {
                h.append(*name, HeaderValue::from_static(value));
            }
            let mut added = Added::default();
            add_caller_defaults(&mut h, &mut added);
            assert_eq!(
                (added.source, added.caller_type),
                (source, caller_type),
                "{sent:?}"
            );
            let names: Vec<&str> = h.keys().map(HeaderName::as_str).collect();
            assert_eq!(names, kept, "{sent:?}");
        }
    }

    #[test]
    fn the_added_fields_take_the_bytes_their_length_says() {
        let trace = Trace::from_headers(&HeaderMap::new());
        for case in 0..32u8 {
            let bit = |i: u8| case & 1 << i != 0;
            let mut headers = HeaderMap::new();
            if bit(0) {
                headers.insert(HOST, HeaderValue::from_static("gateway.example:8080"));
            }
            let mut added = Added::default();
            if bit(1) {
                add_caller_defaults(&mut headers, &mut added);
            }
            if bit(2) {
                let client = HeaderValue::from_static("2001:db8::1");
                add_forwarded(&mut headers, &client, "/api/aura", 0, &mut added);
                if bit(3) {
                    https_proto(&mut headers, 0, &mut added);
                }
            }
            if bit(4) {
                added.trace(trace, case % 2 == 0);
            }
            let mut out = Vec::new();
            added.each(|name, value| crate::h1::encode_field(&mut out, name, value));
            assert_eq!(added.encoded_len(), out.len(), "case {case:05b}");
        }
    }

    #[test]
    fn hop_by_hop_and_connection_named_headers_go() {
        let mut h = HeaderMap::new();
        for (k, v) in [
            (
                "connection",
                "keep-alive, X-Secret-Hop, x-tenant-id, Content-Length, Host, X-Forwarded-For",
            ),
            ("content-length", "5"),
            ("host", "dwp.example"),
            ("x-forwarded-for", "10.0.0.1"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("te", "trailers"),
            ("trailer", "x"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "h2c"),
            ("proxy-authorization", "Basic x"),
            ("proxy-authenticate", "Basic"),
            ("x-secret-hop", "1"),
            ("x-tenant-id", "tenant1"),
            ("authorization", "Bearer t"),
            ("x-other", "kept"),
        ] {
            h.append(HeaderName::from_static(k), HeaderValue::from_static(v));
        }
        strip_hop_by_hop(&mut h);
        let mut left: Vec<_> = h.keys().map(|k| k.as_str()).collect();
        left.sort_unstable();
        assert_eq!(
            left,
            [
                "authorization",
                "content-length",
                "host",
                "x-forwarded-for",
                "x-other",
                "x-tenant-id"
            ]
        );
    }

    #[test]
    fn forwarded_headers_are_appended() {
        let mut h = HeaderMap::new();
        h.insert("x-forwarded-for", HeaderValue::from_static("10.0.0.1"));
        h.append("x-forwarded-for", HeaderValue::from_static("10.0.0.2"));
        h.insert("host", HeaderValue::from_static("dwp.example:8080"));
        append_forwarded(&mut h, &HeaderValue::from_static("127.0.0.1"), "/api", 0);
        assert_eq!(h.get_all("x-forwarded-for").iter().count(), 1);
        assert_eq!(h["x-forwarded-for"], "10.0.0.1, 10.0.0.2, 127.0.0.1");
        assert_eq!(h["x-forwarded-proto"], "http");
        assert_eq!(h["x-forwarded-host"], "dwp.example:8080");
        assert_eq!(h["x-forwarded-prefix"], "/api");
    }

    #[test]
    fn a_clients_forwarded_host_proto_and_prefix_never_reach_upstreams() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("dwp.example"));
        for (name, value) in [
            ("x-forwarded-host", "evil.example"),
            ("x-forwarded-prefix", "/admin"),
            ("x-forwarded-proto", "https"),
        ] {
            h.append(name, HeaderValue::from_static(value));
            h.append(name, HeaderValue::from_static("second"));
        }
        append_forwarded(&mut h, &HeaderValue::from_static("10.0.0.9"), "/api", 0);
        for (name, want) in [
            ("x-forwarded-host", "dwp.example"),
            ("x-forwarded-prefix", "/api"),
            ("x-forwarded-proto", "http"),
        ] {
            let got: Vec<_> = h.get_all(name).iter().collect();
            assert_eq!(got, [want], "{name}");
        }
        // Behind one trusted proxy, what it set last is kept (one value).
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("gateway:8080"));
        h.append(
            "x-forwarded-host",
            HeaderValue::from_static("forged.example"),
        );
        h.append("x-forwarded-host", HeaderValue::from_static("dwp.example"));
        h.insert("x-forwarded-proto", HeaderValue::from_static("https"));
        append_forwarded(&mut h, &HeaderValue::from_static("10.0.0.9"), "/api", 1);
        let hosts: Vec<_> = h.get_all("x-forwarded-host").iter().collect();
        assert_eq!(hosts, ["dwp.example"]);
        assert_eq!(h["x-forwarded-proto"], "https");
    }
}
