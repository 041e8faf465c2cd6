//! One access line per request (target `access`, INFO), and the request's
//! ids on every line logged while it is handled: a `request` span with
//! `request_id` (the gateway's `X-Request-ID`) and `trace_id` (from the
//! gateway's `traceparent`, or a new one for a direct call). The trace id
//! also goes into the request's error envelope (`traceId`,
//! [`crate::error::TRACE_ID`]).
//! The latency histogram is recorded here too.

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
    let trace_id =
        dwp_core::trace::trace_id_or(headers.get("traceparent").map(|v| v.as_bytes()), || {
            uuid::Uuid::new_v4().into_bytes()
        });
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
    state.metrics.observe(route, status, seconds);
    response
}
