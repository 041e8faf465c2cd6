//! Header propagation (CONTRACT.md section 3), hop-by-hop removal both ways,
//! X-Forwarded-*, X-Request-ID, and CORS.

use http::Response;

use crate::helpers::*;

#[tokio::test]
async fn every_propagated_header_arrives_unchanged_and_hop_by_hop_ones_do_not() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let propagated = [
        ("authorization", "Bearer abc.def.ghi"),
        ("x-tenant-id", "tenant1"),
        ("x-user-id", "user123"),
        ("x-dwp-source", "FRONTEND"),
        ("x-dwp-caller-type", "USER"),
        ("last-event-id", "42"),
        ("x-agent-id", "agent-7"),
    ];
    let mut headers = propagated.to_vec();
    headers.extend([
        ("connection", "keep-alive, x-hop-secret"),
        ("x-hop-secret", "must not pass"),
        ("keep-alive", "timeout=5"),
        ("te", "trailers"),
        ("proxy-authorization", "Basic Zm9vOmJhcg=="),
        ("x-forwarded-for", "203.0.113.9"),
    ]);
    let res = get(gw.addr, "/api/aura/test/x", &headers).await;
    assert_eq!(res.status(), 200);
    let seen = &up.requests()[0];
    for (name, value) in propagated {
        assert_eq!(seen.headers[name], value, "{name}");
    }
    for name in ["x-hop-secret", "keep-alive", "te", "proxy-authorization"] {
        assert!(
            !seen.headers.contains_key(name),
            "{name} must not reach the upstream"
        );
    }
    assert_eq!(seen.headers["x-forwarded-for"], "203.0.113.9, 127.0.0.1");
    assert_eq!(seen.headers["x-forwarded-proto"], "http");
    assert_eq!(
        seen.headers["x-forwarded-host"],
        gw.addr.to_string().as_str()
    );
    assert_eq!(seen.headers["x-forwarded-prefix"], "/api");
}

#[tokio::test]
async fn a_browser_without_caller_headers_is_sent_on_as_frontend_user_an_agent_is_kept() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    for (sent, expected) in [
        (vec![], ("FRONTEND", "USER")),
        (
            vec![("x-dwp-source", ""), ("x-dwp-caller-type", "")],
            ("FRONTEND", "USER"),
        ),
        (
            vec![("x-dwp-source", "AURA"), ("x-dwp-caller-type", "AGENT")],
            ("AURA", "AGENT"),
        ),
    ] {
        let res = get(gw.addr, "/api/main/x", &sent).await;
        assert_eq!(res.status(), 200);
        let seen = up.requests().pop().unwrap();
        assert_eq!(
            (
                &seen.headers["x-dwp-source"],
                &seen.headers["x-dwp-caller-type"]
            ),
            (
                &expected.0.parse::<http::HeaderValue>().unwrap(),
                &expected.1.parse::<http::HeaderValue>().unwrap()
            ),
            "{sent:?}"
        );
    }
}

#[tokio::test]
async fn hop_by_hop_headers_of_the_response_are_removed() {
    let up = upstream(|_| async {
        Response::builder()
            .header("connection", "x-up-hop")
            .header("x-up-hop", "secret")
            .header("keep-alive", "timeout=99")
            .header("x-end-to-end", "kept")
            .body(full("ok"))
            .unwrap()
    })
    .await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let res = get(gw.addr, "/api/main/x", &[]).await;
    assert_eq!(res.header("x-end-to-end").as_deref(), Some("kept"));
    assert_eq!(res.header("x-up-hop"), None);
    assert_eq!(res.header("keep-alive"), None);
}

#[tokio::test]
async fn a_request_id_is_generated_when_absent_sent_upstream_and_returned() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let res = get(gw.addr, "/api/main/x", &[]).await;
    let generated = res.header("x-request-id").expect("returned to the client");
    assert_eq!(generated.len(), 36, "a UUID");
    let res = get(
        gw.addr,
        "/api/main/x",
        &[("x-request-id", "client-chosen-1")],
    )
    .await;
    assert_eq!(
        res.header("x-request-id").as_deref(),
        Some("client-chosen-1")
    );
    let seen = up.requests();
    assert_eq!(seen[0].headers["x-request-id"], generated.as_str());
    assert_eq!(seen[1].headers["x-request-id"], "client-chosen-1");
}

#[tokio::test]
async fn a_trace_is_continued_or_started_sent_upstream_and_named_in_errors() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let client = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    get(
        gw.addr,
        "/api/main/x",
        &[("traceparent", client), ("tracestate", "vendor=1")],
    )
    .await;
    get(gw.addr, "/api/main/x", &[("x-correlation-id", "corr-7")]).await;
    let seen = up.requests();
    // The client's trace, continued: same trace id, this hop a new span.
    let sent = seen[0].headers["traceparent"].to_str().unwrap();
    assert!(
        sent.starts_with("00-4bf92f3577b34da6a3ce929d0e0e4736-"),
        "{sent}"
    );
    assert!(
        sent.ends_with("-01") && !sent.contains("00f067aa0ba902b7"),
        "{sent}"
    );
    assert_eq!(seen[0].headers["tracestate"], "vendor=1");
    assert_eq!(
        seen[0].headers["x-correlation-id"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
    // No trace: a new one; the client's correlation id is kept.
    let started = seen[1].headers["traceparent"].to_str().unwrap();
    assert_eq!(started.len(), 55, "{started}");
    assert!(!started.contains("4bf92f3577b34da6a3ce929d0e0e4736"));
    assert_eq!(seen[1].headers["x-correlation-id"], "corr-7");
    // An error the gateway answers itself names the trace.
    let res = get(gw.addr, "/api/nowhere", &[("traceparent", client)]).await;
    assert_eq!(res.status(), 404);
    assert_eq!(
        res.json().await["traceId"],
        "4bf92f3577b34da6a3ce929d0e0e4736"
    );
}

#[tokio::test]
async fn preflights_are_answered_by_the_gateway_without_calling_the_upstream() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let headers = [
        ("origin", "http://localhost:4200"),
        ("access-control-request-method", "POST"),
        (
            "access-control-request-headers",
            "authorization, x-tenant-id",
        ),
    ];
    let mut req = request("OPTIONS", gw.addr, "/api/aura/test/stream");
    for (k, v) in headers {
        req = req.header(k, v);
    }
    let res = send(gw.addr, req.body(full("")).unwrap()).await;
    assert_eq!(res.status(), 200);
    assert_eq!(
        res.header("access-control-allow-origin").as_deref(),
        Some("http://localhost:4200")
    );
    assert_eq!(
        res.header("access-control-allow-credentials").as_deref(),
        Some("true")
    );
    assert_eq!(
        res.header("access-control-allow-headers").as_deref(),
        Some("authorization, x-tenant-id")
    );
    assert!(
        res.header("access-control-allow-methods")
            .unwrap()
            .contains("POST")
    );
    assert_eq!(
        res.header("access-control-max-age").as_deref(),
        Some("3600")
    );

    let mut evil = request("OPTIONS", gw.addr, "/api/aura/test/stream")
        .header("origin", "http://evil.example")
        .header("access-control-request-method", "POST");
    evil = evil.header("x-tenant-id", "t");
    let res = send(gw.addr, evil.body(full("")).unwrap()).await;
    assert_eq!(res.status(), 403);
    assert!(up.requests().is_empty(), "the upstream was never called");
    // Both are in the access log and the request counts, with their outcome.
    let metrics = get(gw.admin, "/metrics", &[]).await.text().await;
    for line in [
        r#"gateway_requests_total{route="preflight",status="200"} 1"#,
        r#"gateway_requests_total{route="preflight",status="403"} 1"#,
    ] {
        assert!(metrics.contains(line), "{line}: {metrics}");
    }
}

#[tokio::test]
async fn cors_headers_are_set_once_even_when_the_upstream_sets_them_too() {
    let up = upstream(|_| async {
        Response::builder()
            .header("access-control-allow-origin", "*")
            .header("access-control-allow-credentials", "true")
            .body(full("ok"))
            .unwrap()
    })
    .await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let res = get(
        gw.addr,
        "/api/main/x",
        &[("origin", "http://localhost:4200")],
    )
    .await;
    let origins: Vec<_> = res
        .response
        .headers()
        .get_all("access-control-allow-origin")
        .iter()
        .collect();
    assert_eq!(origins, ["http://localhost:4200"]);
    assert_eq!(
        res.response
            .headers()
            .get_all("access-control-allow-credentials")
            .iter()
            .count(),
        1
    );

    let res = get(gw.addr, "/api/main/x", &[("origin", "http://evil.example")]).await;
    assert_eq!(
        res.header("access-control-allow-origin"),
        None,
        "not echoed for foreign origins"
    );
}
