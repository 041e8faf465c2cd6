//! One access line per request (target `access`, INFO), and the request's
//! ids on every line logged while it is handled: a `request` span with
//! `request_id` (the gateway's `X-Request-ID`) and `trace_id` (from the
//! gateway's `traceparent`, or a new one for a direct call). The trace id
//! also goes into the request's error envelope (`traceId`,
//! [`crate::error::TRACE_ID`]).
//! The latency histogram is recorded here too, and, with OTLP export on
//! ([`dwp_core::otel`]), the request's span: a child of the gateway's span
//! named in `traceparent`.

use std::sync::Arc;

use axum::extract::State;
use dwp_core::headers::REQUEST_ID;
use tracing::Instrument;

use crate::state::AppState;

/// The middleware: span, access line, latency.
pub async fn record(
    State(state): State<Arc<AppState>>,
    req: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let headers = req.headers();
    let request_id = headers
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .unwrap_or("-")
        .to_owned();
    let parent = headers
        .get(dwp_core::headers::TRACEPARENT)
        .and_then(|v| dwp_core::trace::parse_parent(v.as_bytes()));
    let trace = parent.map_or_else(|| uuid::Uuid::new_v4().into_bytes(), |(id, _, _)| id);
    let trace_id = String::from_utf8_lossy(&dwp_core::trace::hex::<32>(&trace)).into_owned();
    let method = req.method().clone();
    let span = tracing::info_span!("request", %request_id, %trace_id);
    let started = std::time::Instant::now();
    let response = crate::error::TRACE_ID
        .scope(trace_id, next.run(req).instrument(span.clone()))
        .await;
    let status = response.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    span.in_scope(|| {
        tracing::info!(
            target: "access",
            %method,
            route = %route,
            status,
            duration_ms = (seconds * 1000.0) as u64,
            "request"
        );
    });
    if dwp_core::otel::enabled() {
        export(
            &method,
            &route,
            status,
            started,
            trace,
            parent.map(|(_, span, _)| span),
        );
    }
    state.metrics.observe(route, status, seconds);
    response
}

/// The request's span, to the OTLP exporter.
fn export(
    method: &http::Method,
    route: &str,
    status: u16,
    started: std::time::Instant,
    trace_id: [u8; 16],
    parent: Option<[u8; 8]>,
) {
    use dwp_core::otel::{Attribute, Span};
    let mut span_id = [0u8; 8];
    span_id.copy_from_slice(&uuid::Uuid::new_v4().into_bytes()[..8]);
    span_id[0] |= 1; // never all zero
    let end = std::time::SystemTime::now();
    dwp_core::otel::record(Span {
        name: format!("{method} {route}"),
        trace_id,
        span_id,
        parent,
        start: end - started.elapsed(),
        end,
        attributes: vec![
            ("http.request.method", Attribute::Text(method.to_string())),
            ("http.route", Attribute::Text(route.to_owned())),
            (
                "http.response.status_code",
                Attribute::Int(i64::from(status)),
            ),
        ],
        error: status >= 500,
    });
}
