//! OpenTelemetry traces exported over OTLP/HTTP, JSON encoding, when
//! `OTEL_EXPORTER_OTLP_ENDPOINT` is set (spans go to `{endpoint}/v1/traces`)
//! or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (used as it is). Each server
//! records one span per request it answered ([`record`]), with the trace
//! and span ids it already carries for `traceparent` and its log lines, so
//! the exported trace and the logs name the same ids.
//!
//! What it does: a bounded queue ([`QUEUE`] spans; a full queue drops and
//! counts, [`dropped`]), a thread of its own that posts a batch every
//! second or every [`BATCH`] spans over plain HTTP/1.1, and a flush at
//! shutdown. What it does not: TLS to the collector (an `https://`
//! endpoint is refused at start-up: run the collector as a sidecar or node
//! agent and export to it over `http://`), `OTEL_EXPORTER_OTLP_HEADERS`,
//! retries of a failed batch (it is logged and dropped), metrics and logs.
//! `OTEL_SERVICE_NAME` replaces the binary's name as `service.name`.

use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

use crate::trace::hex;

/// Spans waiting for the exporter thread at most.
pub const QUEUE: usize = 4096;
/// Spans in one export request at most.
pub const BATCH: usize = 512;
/// The longest a batch waits before it is sent.
const INTERVAL: Duration = Duration::from_secs(1);
/// The longest one export request may take.
const EXPORT_TIMEOUT: Duration = Duration::from_secs(5);

/// One finished server span.
#[derive(Debug, Clone)]
pub struct Span {
    /// The operation, e.g. `POST /aura/hitl/approve/{id}`.
    pub name: String,
    /// The trace.
    pub trace_id: [u8; 16],
    /// This span.
    pub span_id: [u8; 8],
    /// The caller's span, when the request carried a `traceparent`.
    pub parent: Option<[u8; 8]>,
    /// When the request arrived.
    pub start: SystemTime,
    /// When it was answered.
    pub end: SystemTime,
    /// `http.request.method`, `http.response.status_code`, ...
    pub attributes: Vec<(&'static str, Attribute)>,
    /// The answer was a server error (status 5xx).
    pub error: bool,
}

/// A span attribute's value.
#[derive(Debug, Clone)]
pub enum Attribute {
    /// A string.
    Text(String),
    /// A whole number.
    Int(i64),
}

/// Where spans are posted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Endpoint {
    /// Host name or address.
    pub host: String,
    /// Port.
    pub port: u16,
    /// Path of the traces resource, e.g. `/v1/traces`.
    pub path: String,
}

impl Endpoint {
    /// The endpoint the OTLP variables of `var` name, `None` when neither
    /// is set (export off); an error names the variable and the problem.
    pub fn from_vars(var: impl Fn(&str) -> Option<String>) -> Result<Option<Self>, String> {
        let set = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let (name, url, suffix) = match (
            set("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            set("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            (Some(url), _) => ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url, ""),
            (None, Some(url)) => ("OTEL_EXPORTER_OTLP_ENDPOINT", url, "/v1/traces"),
            (None, None) => return Ok(None),
        };
        let bad = |why: &str| Err(format!("{name}: {url:?} {why}"));
        if url.starts_with("https://") {
            return bad(
                "is https, which this exporter does not speak: export to a collector over http://",
            );
        }
        let Some(rest) = url.trim().strip_prefix("http://") else {
            return bad("is not an http:// URL");
        };
        let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
        let (host, port) = match authority.rsplit_once(':') {
            Some((host, port)) if !host.ends_with(']') || authority.starts_with('[') => {
                match port.parse::<u16>() {
                    Ok(port) if port > 0 => (host, port),
                    _ => return bad("has no usable port"),
                }
            }
            _ => (authority, 80),
        };
        let host = host.trim_matches(['[', ']']);
        if host.is_empty() {
            return bad("has no host");
        }
        let path = format!("{}{suffix}", path.trim_end_matches('/'));
        Ok(Some(Self {
            host: host.to_owned(),
            port,
            path: if path.is_empty() { "/".into() } else { path },
        }))
    }
}

enum Message {
    Span(Box<Span>),
    Flush(mpsc::Sender<()>),
}

struct Exporter {
    queue: SyncSender<Message>,
    dropped: AtomicU64,
}

static EXPORTER: OnceLock<Exporter> = OnceLock::new();

/// Whether spans are exported (one atomic load: the cost on every request
/// when export is off).
pub fn enabled() -> bool {
    EXPORTER.get().is_some()
}

/// Queues a finished span for export; dropped (and counted) when the
/// queue is full or export is off.
pub fn record(span: Span) {
    let Some(exporter) = EXPORTER.get() else {
        return;
    };
    if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) =
        exporter.queue.try_send(Message::Span(Box::new(span)))
    {
        exporter.dropped.fetch_add(1, Ordering::Relaxed);
    }
}

/// Spans dropped because the queue was full.
pub fn dropped() -> u64 {
    EXPORTER
        .get()
        .map_or(0, |e| e.dropped.load(Ordering::Relaxed))
}

/// Starts the exporter thread for `service` (once per process; a second
/// call is ignored).
pub fn start(service: &str, version: &str, endpoint: Endpoint) -> std::io::Result<()> {
    let (queue, received) = mpsc::sync_channel(QUEUE);
    if EXPORTER
        .set(Exporter {
            queue,
            dropped: AtomicU64::new(0),
        })
        .is_err()
    {
        return Ok(());
    }
    let resource = resource(service, version);
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    std::thread::Builder::new()
        .name("otel-export".into())
        .spawn(move || runtime.block_on(export_loop(received, endpoint, resource)))?;
    Ok(())
}

/// Sends what is queued and waits for it, at most `timeout` (at shutdown).
pub fn flush(timeout: Duration) {
    let Some(exporter) = EXPORTER.get() else {
        return;
    };
    let (done, finished) = mpsc::channel();
    if exporter.queue.send(Message::Flush(done)).is_ok() {
        let _ = finished.recv_timeout(timeout);
    }
}

async fn export_loop(received: mpsc::Receiver<Message>, endpoint: Endpoint, resource: Value) {
    let mut batch = Vec::with_capacity(BATCH);
    loop {
        let deadline = Instant::now() + INTERVAL;
        let mut flushed = None;
        while batch.len() < BATCH {
            let wait = deadline.saturating_duration_since(Instant::now());
            // The receiver blocks this thread only; no other task runs here.
            match received.recv_timeout(wait) {
                Ok(Message::Span(span)) => batch.push(*span),
                Ok(Message::Flush(done)) => {
                    flushed = Some(done);
                    break;
                }
                Err(RecvTimeoutError::Timeout) => break,
                Err(RecvTimeoutError::Disconnected) => return,
            }
        }
        if !batch.is_empty() {
            let body = encode(&resource, &batch);
            match tokio::time::timeout(EXPORT_TIMEOUT, post(&endpoint, body)).await {
                Ok(Ok(status)) if (200..300).contains(&status) => {}
                Ok(Ok(status)) => {
                    tracing::warn!(status, spans = batch.len(), "OTLP export refused")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, spans = batch.len(), "OTLP export failed"),
                Err(_) => tracing::warn!(spans = batch.len(), "OTLP export timed out"),
            }
            batch.clear();
        }
        if let Some(done) = flushed {
            let _ = done.send(());
        }
    }
}

fn resource(service: &str, version: &str) -> Value {
    let name = std::env::var("OTEL_SERVICE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .unwrap_or_else(|| service.to_owned());
    json!({"attributes": [
        {"key": "service.name", "value": {"stringValue": name}},
        {"key": "service.version", "value": {"stringValue": version}},
    ]})
}

/// An `ExportTraceServiceRequest` in OTLP's JSON encoding: ids as hex,
/// times as decimal strings of Unix nanoseconds, kind 2 (server).
pub fn encode(resource: &Value, spans: &[Span]) -> Vec<u8> {
    let nanos = |t: SystemTime| {
        t.duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
            .to_string()
    };
    let text = |bytes: &[u8]| String::from_utf8_lossy(bytes).into_owned();
    let spans: Vec<Value> = spans
        .iter()
        .map(|s| {
            let attributes: Vec<Value> = s
                .attributes
                .iter()
                .map(|(key, value)| match value {
                    Attribute::Text(v) => json!({"key": key, "value": {"stringValue": v}}),
                    Attribute::Int(v) => json!({"key": key, "value": {"intValue": v.to_string()}}),
                })
                .collect();
            let mut span = json!({
                "traceId": text(&hex::<32>(&s.trace_id)),
                "spanId": text(&hex::<16>(&s.span_id)),
                "name": s.name,
                "kind": 2,
                "startTimeUnixNano": nanos(s.start),
                "endTimeUnixNano": nanos(s.end),
                "attributes": attributes,
                "status": {"code": if s.error { 2 } else { 0 }},
            });
            if let Some(parent) = s.parent {
                span["parentSpanId"] = json!(text(&hex::<16>(&parent)));
            }
            span
        })
        .collect();
    json!({"resourceSpans": [{
        "resource": resource,
        "scopeSpans": [{"scope": {"name": "dwp"}, "spans": spans}],
    }]})
    .to_string()
    .into_bytes()
}

async fn post(endpoint: &Endpoint, body: Vec<u8>) -> Result<u16, String> {
    use http_body_util::Full;
    let stream = tokio::net::TcpStream::connect((endpoint.host.as_str(), endpoint.port))
        .await
        .map_err(|e| format!("connect {}:{}: {e}", endpoint.host, endpoint.port))?;
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(|e| e.to_string())?;
    let host = match endpoint.host.contains(':') {
        true => format!("[{}]:{}", endpoint.host, endpoint.port),
        false => format!("{}:{}", endpoint.host, endpoint.port),
    };
    let request = http::Request::post(endpoint.path.as_str())
        .header(http::header::HOST, host)
        .header(http::header::CONTENT_TYPE, "application/json")
        .body(Full::new(bytes::Bytes::from(body)))
        .map_err(|e| e.to_string())?;
    // The connection is driven beside the exchange and ends with it (the
    // answer's body is not read: dropping it closes the connection).
    let exchange = async move {
        let status = sender
            .send_request(request)
            .await
            .map(|r| r.status().as_u16());
        drop(sender);
        status
    };
    let (status, _) = tokio::join!(exchange, connection);
    status.map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn endpoint(vars: &[(&str, &str)]) -> Result<Option<Endpoint>, String> {
        Endpoint::from_vars(|name| {
            vars.iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| (*v).to_owned())
        })
    }

    #[test]
    fn the_endpoint_variables() {
        assert_eq!(endpoint(&[]), Ok(None));
        assert_eq!(endpoint(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "")]), Ok(None));
        let e = endpoint(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")])
            .unwrap()
            .unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("collector", 4318, "/v1/traces")
        );
        let e = endpoint(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:1"),
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                "http://[::1]:9/otlp/traces",
            ),
        ])
        .unwrap()
        .unwrap();
        assert_eq!(
            (e.host.as_str(), e.port, e.path.as_str()),
            ("::1", 9, "/otlp/traces")
        );
        let e = endpoint(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector")])
            .unwrap()
            .unwrap();
        assert_eq!(e.port, 80);
        for bad in [
            "https://collector:4318",
            "collector:4318",
            "http://:4318",
            "http://c:x",
        ] {
            let e = endpoint(&[("OTEL_EXPORTER_OTLP_ENDPOINT", bad)]).unwrap_err();
            assert!(e.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{bad}: {e}");
        }
    }

    #[test]
    fn spans_are_encoded_as_otlp_json() {
        let start = UNIX_EPOCH + Duration::from_nanos(1_700_000_000_123_456_789);
        let span = Span {
            name: "GET /health".into(),
            trace_id: [0xab; 16],
            span_id: [1; 8],
            parent: Some([2; 8]),
            start,
            end: start + Duration::from_millis(3),
            attributes: vec![
                ("http.request.method", Attribute::Text("GET".into())),
                ("http.response.status_code", Attribute::Int(503)),
            ],
            error: true,
        };
        let body: Value = serde_json::from_slice(&encode(&resource("gw", "1.0"), &[span])).unwrap();
        let resource = &body["resourceSpans"][0]["resource"]["attributes"];
        assert_eq!(resource[0]["value"]["stringValue"], "gw");
        let s = &body["resourceSpans"][0]["scopeSpans"][0]["spans"][0];
        assert_eq!(s["traceId"], "ab".repeat(16));
        assert_eq!(s["spanId"], "0101010101010101");
        assert_eq!(s["parentSpanId"], "0202020202020202");
        assert_eq!(s["startTimeUnixNano"], "1700000000123456789");
        assert_eq!(s["endTimeUnixNano"], "1700000000126456789");
        assert_eq!(s["kind"], 2);
        assert_eq!(s["status"]["code"], 2);
        assert_eq!(s["attributes"][1]["value"]["intValue"], "503");
    }
}
