//! OpenTelemetry export: with `OTEL_EXPORTER_OTLP_ENDPOINT` set, the
//! gateway and main-service post their spans over OTLP/HTTP (JSON) to a
//! receiver the test runs, one trace across both hops.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed unwrap is a failed test, and a scenario reads top to bottom"
)]

use std::convert::Infallible;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use e2e::*;
use http_body_util::{BodyExt, Full};
use serde_json::Value;

/// An OTLP/HTTP receiver on a free port: every body posted to
/// `/v1/traces`, parsed.
async fn receiver() -> (std::net::SocketAddr, Arc<Mutex<Vec<Value>>>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let received = Arc::new(Mutex::new(Vec::new()));
    let kept = received.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let kept = kept.clone();
            tokio::spawn(async move {
                let service =
                    hyper::service::service_fn(move |req: http::Request<hyper::body::Incoming>| {
                        let kept = kept.clone();
                        async move {
                            let ok = req.uri().path() == "/v1/traces"
                                && req.headers()[http::header::CONTENT_TYPE] == "application/json";
                            let body = req.into_body().collect().await.map(|b| b.to_bytes());
                            if let (true, Ok(body)) = (ok, body) {
                                kept.lock()
                                    .unwrap()
                                    .push(serde_json::from_slice(&body).unwrap());
                            }
                            Ok::<_, Infallible>(http::Response::new(Full::new(Bytes::from_static(
                                b"{}",
                            ))))
                        }
                    });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(hyper_util::rt::TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, received)
}

/// (service.name, span) of every span received.
fn spans(received: &Mutex<Vec<Value>>) -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for body in received.lock().unwrap().iter() {
        for resource in body["resourceSpans"].as_array().into_iter().flatten() {
            let service = resource["resource"]["attributes"]
                .as_array()
                .into_iter()
                .flatten()
                .find(|a| a["key"] == "service.name")
                .and_then(|a| a["value"]["stringValue"].as_str())
                .unwrap_or_default()
                .to_owned();
            for scope in resource["scopeSpans"].as_array().into_iter().flatten() {
                for span in scope["spans"].as_array().into_iter().flatten() {
                    out.push((service.clone(), span.clone()));
                }
            }
        }
    }
    out
}

#[tokio::test]
async fn one_trace_is_exported_across_the_gateway_and_main_service() {
    let (collector, received) = receiver().await;
    let endpoint = format!("http://{collector}");
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str())];
    let stack = Stack::start(Options {
        users: &["hal"],
        gateway_env: &env,
        main_env: &env,
        ..Options::default()
    })
    .await;
    let hal = stack.user("hal");
    let token = stack.login(&hal).await;
    let trace = "5bf92f3577b34da6a3ce929d0e0e4736";
    let client_span = "10f067aa0ba902b7";
    let traceparent = format!("00-{trace}-{client_span}-01");
    let auth = format!("Bearer {token}");
    let (status, body, _) = call(
        stack.gateway,
        "GET",
        "/api/main/agent/tasks",
        &[
            ("authorization", &auth),
            ("x-tenant-id", "tenant1"),
            ("x-user-id", &hal),
            ("traceparent", &traceparent),
        ],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");

    let deadline = Instant::now() + Duration::from_secs(10);
    let (gateway, main) = loop {
        let of_trace: Vec<(String, Value)> = spans(&received)
            .into_iter()
            .filter(|(_, s)| s["traceId"] == trace)
            .collect();
        let find = |name: &str| {
            of_trace
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, s)| s.clone())
        };
        if let (Some(g), Some(m)) = (find("gateway"), find("main-service")) {
            break (g, m);
        }
        assert!(
            Instant::now() < deadline,
            "spans received: {:?}",
            spans(&received)
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    // The gateway's span is a child of the client's, main-service's of the
    // gateway's: one trace, in order.
    assert_eq!(gateway["parentSpanId"], client_span, "{gateway}");
    assert_eq!(main["parentSpanId"], gateway["spanId"], "{main}");
    assert_ne!(main["spanId"], gateway["spanId"]);
    assert_eq!(gateway["kind"], 2);
    assert_eq!(main["name"], "GET /main/agent/tasks", "{main}");
    let status_of = |span: &Value| {
        span["attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["key"] == "http.response.status_code")
            .map(|a| a["value"]["intValue"].clone())
    };
    assert_eq!(status_of(&gateway), Some(Value::from("200")));
    assert_eq!(status_of(&main), Some(Value::from("200")));
    let nanos = |span: &Value, field: &str| span[field].as_str().unwrap().parse::<u128>().unwrap();
    assert!(nanos(&gateway, "startTimeUnixNano") <= nanos(&main, "startTimeUnixNano"));
    assert!(nanos(&main, "endTimeUnixNano") <= nanos(&gateway, "endTimeUnixNano") + 1_000_000);
}
