//! One access-log line and one request count per request, written when the
//! response is over: complete, cut by the upstream, ended by the idle
//! timeout, or abandoned by the client (the guard is dropped unfinished).
//! With OTLP export on ([`dwp_core::otel`]) the request's span is recorded
//! at the same moment, with the ids of its `traceparent`.

use std::sync::Arc;
use std::time::Instant;

use http::{HeaderValue, Method};

use crate::metrics::Metrics;
use crate::trace::Trace;

/// How a response ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Still running; dropping the guard now means the client went away.
    Running,
    /// Sent in full.
    Complete,
    /// The upstream broke the response off.
    UpstreamError,
    /// The stream was silent for longer than the idle timeout and was ended.
    IdleTimeout,
}

impl Outcome {
    /// The name written in the access log.
    pub fn label(self) -> &'static str {
        match self {
            Self::Running => "client_disconnect",
            Self::Complete => "complete",
            Self::UpstreamError => "upstream_error",
            Self::IdleTimeout => "idle_timeout",
        }
    }
}

/// The access-log guard of one request.
#[derive(Debug)]
pub struct AccessLog {
    metrics: Arc<Metrics>,
    /// The route name (`none` before routing, `gateway` for own endpoints).
    pub route: &'static str,
    method: Method,
    path: String,
    request_id: HeaderValue,
    trace: Trace,
    start: Instant,
    /// The status sent to the client (499 until one is sent).
    pub status: u16,
    /// Body bytes sent to the client.
    pub bytes: u64,
    /// How it ended.
    pub outcome: Outcome,
    /// The client and user slots it holds, given back with the log line.
    pub held: crate::limits::Held,
}

impl AccessLog {
    /// Starts the clock for a request. The path is copied only when the
    /// access log or the span export is on (it is written nowhere else).
    pub fn new(
        metrics: Arc<Metrics>,
        method: Method,
        path: &str,
        request_id: HeaderValue,
        trace: Trace,
    ) -> Self {
        let path = if tracing::enabled!(target: "access", tracing::Level::INFO)
            || dwp_core::otel::enabled()
        {
            path.to_owned()
        } else {
            String::new()
        };
        Self {
            metrics,
            route: "none",
            method,
            path,
            request_id,
            trace,
            start: Instant::now(),
            status: 499,
            bytes: 0,
            outcome: Outcome::Running,
            held: crate::limits::Held::default(),
        }
    }

    /// The metrics this request is counted in.
    pub fn metrics(&self) -> &Metrics {
        &self.metrics
    }

    /// Marks a response the gateway made itself as sent.
    pub fn finish(&mut self, status: u16, bytes: u64) {
        self.status = status;
        self.bytes = bytes;
        self.outcome = Outcome::Complete;
    }
}

impl Drop for AccessLog {
    fn drop(&mut self) {
        if self.outcome == Outcome::Running {
            self.metrics.client_disconnects.inc();
        }
        self.metrics.count_request(self.route, self.status);
        tracing::info!(
            target: "access",
            request_id = self.request_id.to_str().unwrap_or("-"),
            trace_id = %TraceId(&self.trace.trace_id),
            route = self.route,
            method = %self.method,
            path = %self.path,
            status = self.status,
            duration_ms = self.start.elapsed().as_millis() as u64,
            bytes = self.bytes,
            outcome = self.outcome.label(),
            "request"
        );
        if dwp_core::otel::enabled() {
            self.export();
        }
    }
}

impl AccessLog {
    /// The request's span, to the OTLP exporter.
    fn export(&self) {
        use dwp_core::otel::{Attribute, Span};
        let end = std::time::SystemTime::now();
        let request_id = self.request_id.to_str().unwrap_or("-").to_owned();
        dwp_core::otel::record(Span {
            name: format!("{} {}", self.method, self.route),
            trace_id: self.trace.trace_id,
            span_id: self.trace.span_id,
            parent: self.trace.parent,
            start: end - self.start.elapsed(),
            end,
            attributes: vec![
                (
                    "http.request.method",
                    Attribute::Text(self.method.to_string()),
                ),
                ("url.path", Attribute::Text(self.path.clone())),
                (
                    "http.response.status_code",
                    Attribute::Int(i64::from(self.status)),
                ),
                ("dwp.route", Attribute::Text(self.route.to_owned())),
                (
                    "dwp.outcome",
                    Attribute::Text(self.outcome.label().to_owned()),
                ),
                ("dwp.request_id", Attribute::Text(request_id)),
            ],
            error: self.status >= 500,
        });
    }
}

/// A trace id written as 32 hex digits, only when the line is written.
struct TraceId<'a>(&'a [u8; 16]);

impl std::fmt::Display for TraceId<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.iter().try_for_each(|b| write!(f, "{b:02x}"))
    }
}
