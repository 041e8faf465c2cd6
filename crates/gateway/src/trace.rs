//! W3C Trace Context at the edge: the client's `traceparent` is continued
//! (its trace id kept, this hop a new span), a missing or malformed one is
//! replaced by a new trace. The upstream gets this hop's `traceparent` and
//! an `X-Correlation-ID` (the client's, else the trace id); the trace id is
//! written in the gateway's log lines and in its error envelopes
//! (`traceId`). `tracestate` passes through untouched.

use dwp_core::headers::{CORRELATION_ID, TRACEPARENT};
use dwp_core::trace::{hex, parse_parent};
use http::HeaderMap;
#[cfg(test)]
use http::HeaderValue;

/// One request's place in its trace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Trace {
    /// The trace id, 16 bytes, never all zero.
    pub trace_id: [u8; 16],
    /// This hop's span id, 8 bytes, never all zero.
    pub span_id: [u8; 8],
    /// The trace flags (bit 0: sampled).
    pub flags: u8,
    /// The client's span (of its usable `traceparent`).
    pub parent: Option<[u8; 8]>,
    /// The client sent a `traceparent` (usable or not).
    pub client_sent: bool,
    /// The client's `X-Correlation-ID`: `None` when absent, else whether
    /// it is usable (not empty, at most 128 bytes). Only the first value
    /// counts: more than one is cut down to it (`correlation_repeated`).
    pub correlation: Option<bool>,
    /// The client sent more than one `X-Correlation-ID`.
    pub correlation_repeated: bool,
}

impl Trace {
    /// The client's trace continued, or a new one. One pass over the
    /// fields finds both of ours (cheaper than two map lookups).
    pub fn from_headers(headers: &HeaderMap) -> Self {
        let (mut sent, mut correlation, mut correlation_repeated) = (None, None, false);
        for (name, value) in headers {
            match name.as_str() {
                "traceparent" if sent.is_none() => sent = Some(value),
                "x-correlation-id" if correlation.is_none() => {
                    correlation = Some(!value.is_empty() && value.len() <= 128);
                }
                "x-correlation-id" => correlation_repeated = true,
                _ => {}
            }
        }
        let mut span_id = crate::ids::next_u64().to_le_bytes();
        span_id[0] |= 1; // never all zero
        let (trace_id, parent, flags) = match sent.and_then(|v| parse_parent(v.as_bytes())) {
            Some((trace_id, parent, flags)) => (trace_id, Some(parent), flags),
            None => {
                let mut trace_id = crate::ids::bytes16();
                trace_id[0] |= 1; // never all zero
                (trace_id, None, 1)
            }
        };
        Self {
            trace_id,
            span_id,
            flags,
            parent,
            client_sent: sent.is_some(),
            correlation,
            correlation_repeated,
        }
    }

    /// The trace id as 32 lower-case hex digits.
    pub fn trace_id_hex(&self) -> String {
        let digits: [u8; 32] = hex(&self.trace_id);
        String::from_utf8_lossy(&digits).into_owned()
    }

    /// This hop's `traceparent`: `00-{trace id}-{span id}-{flags}`.
    pub fn traceparent(&self) -> [u8; 55] {
        let mut out = [b'-'; 55];
        out[..2].copy_from_slice(b"00");
        out[3..35].copy_from_slice(&hex::<32>(&self.trace_id));
        out[36..52].copy_from_slice(&hex::<16>(&self.span_id));
        out[53..55].copy_from_slice(&hex::<2>(&[self.flags]));
        out
    }

    /// Sets up the upstream request's trace fields: the client's
    /// `traceparent` goes (this hop's is added by the caller). True when
    /// `X-Correlation-ID` is to be added too: the client sent no usable one.
    pub fn propagate(&self, headers: &mut HeaderMap) -> bool {
        if self.client_sent {
            headers.remove(TRACEPARENT);
        }
        if self.correlation == Some(false) {
            headers.remove(CORRELATION_ID);
        } else if self.correlation_repeated
            && let Some(first) = headers.get(CORRELATION_ID).cloned()
        {
            // One value goes upstream: the first, which was checked.
            headers.insert(CORRELATION_ID, first);
        }
        self.correlation != Some(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use dwp_core::trace::parse;

    fn with(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(TRACEPARENT, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn a_client_trace_is_continued_with_a_new_span() {
        let t = Trace::from_headers(&with(
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ));
        assert_eq!(t.trace_id_hex(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(t.flags, 1);
        let sent = t.traceparent();
        let sent = std::str::from_utf8(&sent).unwrap();
        assert!(
            sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
            "{sent}"
        );
        assert!(
            !sent.contains("00f067aa0ba902b7"),
            "this hop is a new span: {sent}"
        );
        assert_eq!(parse(sent.as_bytes()).map(|(id, _)| id), Some(t.trace_id));
    }

    #[test]
    fn malformed_or_missing_traceparents_start_a_new_trace() {
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
            "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        ] {
            let t = Trace::from_headers(&with(bad));
            assert_ne!(
                t.trace_id_hex(),
                "4bf92f3577b34da6a3ce929d0e0e4736",
                "{bad:?}"
            );
            assert!(parse(&t.traceparent()).is_some(), "{bad:?}");
        }
        let t = Trace::from_headers(&HeaderMap::new());
        assert_ne!(t.trace_id, [0; 16]);
        // A later version may add fields after a dash.
        assert!(parse(b"01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-more").is_some());
    }

    #[test]
    fn only_the_first_correlation_id_is_checked_and_sent() {
        let mut h = HeaderMap::new();
        h.append(CORRELATION_ID, HeaderValue::from_static("corr-1"));
        h.append(
            CORRELATION_ID,
            HeaderValue::from_str(&"x".repeat(4096)).unwrap(),
        );
        let t = Trace::from_headers(&h);
        assert!(!t.propagate(&mut h), "the client's correlation id is kept");
        let sent: Vec<_> = h.get_all(CORRELATION_ID).iter().collect();
        assert_eq!(sent, ["corr-1"], "one bounded value");
        // A first value over the cap: none of the client's goes.
        let mut h = HeaderMap::new();
        h.append(
            CORRELATION_ID,
            HeaderValue::from_str(&"x".repeat(129)).unwrap(),
        );
        h.append(CORRELATION_ID, HeaderValue::from_static("corr-2"));
        let t = Trace::from_headers(&h);
        assert!(t.propagate(&mut h), "the trace id is the correlation id");
        assert!(h.get(CORRELATION_ID).is_none());
    }
}
