//! Routes of CONTRACT.md section 2, StripPrefix semantics, Host handling,
//! unknown paths, own endpoints.

use std::collections::HashMap;
use std::time::Duration;

use bytes::Bytes;
use http::Response;

use crate::helpers::*;

#[tokio::test]
async fn each_route_reaches_its_upstream_with_one_segment_stripped_and_the_query_kept() {
    let aura = echo_upstream().await;
    let main = echo_upstream().await;
    let auth = echo_upstream().await;
    let (main_uri, auth_uri) = (main.uri(), auth.uri());
    let config = config(
        &aura.uri(),
        &[
            ("MAIN_SERVICE_URI", &main_uri),
            ("AUTH_SERVER_URI", &auth_uri),
        ],
    );
    let gw = spawn_gateway(config).await;

    let cases = [
        (
            "/api/aura/hitl/approve/req_1?x=1",
            &main,
            "/aura/hitl/approve/req_1?x=1",
        ),
        (
            "/api/aura/test/stream?a=b&c=%20d",
            &aura,
            "/aura/test/stream?a=b&c=%20d",
        ),
        (
            "/api/main/agent/tasks?page=0&size=20",
            &main,
            "/main/agent/tasks?page=0&size=20",
        ),
        ("/api/auth/login", &auth, "/auth/login"),
    ];
    for (path, upstream, want) in cases {
        let before = upstream.requests().len();
        let res = get(gw.addr, path, &[("x-tenant-id", "tenant1")]).await;
        assert_eq!(res.status(), 200, "{path}");
        let seen = upstream.requests();
        assert_eq!(seen.len(), before + 1, "{path} reached its upstream");
        let last = seen.last().unwrap();
        assert_eq!(last.uri.to_string(), want, "{path}");
        assert_eq!(last.headers["x-forwarded-prefix"], "/api", "{path}");
    }
}

#[tokio::test]
async fn the_aura_route_keeps_the_original_host_and_the_others_do_not() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let host = [("host", "dwp.example.com"), ("x-tenant-id", "t")];
    get(gw.addr, "/api/aura/x", &host).await.text().await;
    get(gw.addr, "/api/main/x", &host).await.text().await;
    let seen = up.requests();
    assert_eq!(seen[0].headers["host"], "dwp.example.com");
    assert_eq!(seen[1].headers["host"], up.addr.to_string().as_str());
    assert_eq!(seen[1].headers["x-forwarded-host"], "dwp.example.com");
}

#[tokio::test]
async fn unknown_paths_are_404_in_the_envelope_and_never_reach_an_upstream() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    for path in [
        "/",
        "/api",
        "/api/unknown/x",
        "/apix/aura",
        "/aura/test/stream",
    ] {
        let res = get(gw.addr, path, &[]).await;
        assert_eq!(res.status(), 404, "{path}");
        let body = res.json().await;
        assert_eq!(body["status"], "ERROR");
        assert_eq!(body["success"], false);
        assert_eq!(body["errorCode"], "E1004");
    }
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn dot_segments_are_refused_before_routing() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    for path in [
        "/api/aura/../main/agent/tasks",
        "/api/aura/%2e%2e/main/x",
        "/api/aura/a%2fb",
    ] {
        let res = get(gw.addr, path, &[("x-tenant-id", "t")]).await;
        assert_eq!(res.status(), 400, "{path}");
        assert_eq!(res.json().await["errorCode"], "E1001");
    }
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn health_and_metrics_are_served_by_the_gateway_itself_metrics_only_on_the_admin_port() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let health = get(gw.addr, "/health", &[]).await;
    assert_eq!(health.status(), 200);
    assert_eq!(health.json().await["data"]["status"], "UP");

    get(gw.addr, "/api/main/x", &[]).await.text().await;
    let metrics = get(gw.admin, "/metrics", &[]).await;
    // The body is OpenMetrics text (`# EOF`, `_total`): so says its type.
    assert_eq!(
        metrics.header("content-type").unwrap(),
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    let text = metrics.text().await;
    assert!(text.ends_with("# EOF\n"), "{text}");
    for family in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "process_cpu_seconds",
        "dwp_build",
    ] {
        assert!(
            text.contains(&format!("# HELP {family} ")),
            "{family}: {text}"
        );
    }
    assert!(
        text.contains(r#"dwp_build_info{service="gateway",version=""#),
        "{text}"
    );
    assert!(
        text.contains(r#"gateway_requests_total{route="main",status="200"} 1"#),
        "{text}"
    );
    assert!(text.contains("gateway_open_streams 0"), "{text}");
    assert!(
        text.contains("gateway_upstream_response_seconds_count{route=\"main\"} 1"),
        "{text}"
    );
    assert!(text.contains("gateway_sse_heartbeats_total"), "{text}");
    assert!(text.contains("gateway_client_disconnects_total"), "{text}");
    assert!(
        up.requests().len() == 1,
        "own endpoints never reach an upstream"
    );
    // The metrics are on the admin listener only, never the public port.
    let public = get(gw.addr, "/metrics", &[]).await;
    assert_eq!(public.status(), 404);
    assert!(!public.text().await.contains("gateway_requests_total"));
    let admin_health = get(gw.admin, "/health", &[]).await;
    assert_eq!(admin_health.status(), 200);
}

#[tokio::test]
async fn a_route_added_in_the_file_reaches_its_own_upstream_behind_the_token_check() {
    let aura = echo_upstream().await;
    let synapse = echo_upstream().await;
    let dir = std::env::temp_dir().join(format!("gw-routes-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.toml");
    std::fs::write(
        &file,
        format!(
            "[[routes]]\nprefix = \"/api/synapse\"\nuri = \"{}\"\n",
            synapse.uri()
        ),
    )
    .unwrap();
    let env = std::collections::HashMap::from([
        ("AURA_PLATFORM_URI".to_string(), aura.uri()),
        ("MAIN_SERVICE_URI".to_string(), aura.uri()),
        ("GATEWAY_WORKER_THREADS".to_string(), "1".to_string()),
        ("GATEWAY_RECORDER_ENABLED".to_string(), "false".to_string()),
        ("JWT_SECRET".to_string(), SECRET.to_string()),
    ]);
    let config = gateway::Config::from_sources(Some(&file), env).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    let gw = spawn_gateway(config).await;

    let res = get(gw.addr, "/api/synapse/callback?run=1", &[]).await;
    assert_eq!(res.status(), 401, "the token check applies by default");
    let auth = format!("Bearer {}", token("agent", "tenant1", 60));
    let res = get(
        gw.addr,
        "/api/synapse/callback?run=1",
        &[("authorization", &auth), ("x-dwp-source", "AURA")],
    )
    .await;
    assert_eq!(res.status(), 200);
    let seen = synapse.requests();
    assert_eq!(seen.len(), 1, "only the synapse upstream was called");
    assert_eq!(seen[0].uri, "/synapse/callback?run=1");
    assert_eq!(seen[0].headers["x-forwarded-prefix"], "/api");
    assert_eq!(seen[0].headers["x-dwp-source"], "AURA");
    assert!(aura.requests().is_empty());
}

/// A route's own timeouts and body limit, from its `[[routes]]` entry,
/// hold on that route only.
#[tokio::test]
async fn a_routes_own_timeouts_and_body_limit_hold_on_that_route_only() {
    let slow = upstream(|seen: Seen| async move {
        if seen.uri.path().contains("slow") {
            tokio::time::sleep(Duration::from_secs(4)).await;
        }
        let (tx, body) = channel_body();
        tokio::spawn(async move {
            let _ = tx.send(Bytes::from_static(b"data: one\n\n")).await;
            tokio::time::sleep(Duration::from_secs(30)).await; // then silent
            drop(tx);
        });
        Response::builder()
            .header("content-type", "text/event-stream")
            .body(body)
            .unwrap()
    })
    .await;
    let dir = std::env::temp_dir().join(format!("gw-policy-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("gateway.toml");
    std::fs::write(
        &file,
        format!(
            "[[routes]]\nprefix = \"/api/quick\"\nuri = \"{}\"\ntoken_check = false\nresponse_timeout_secs = 1\nidle_timeout_secs = 1\nmax_body_bytes = 10\n",
            slow.uri()
        ),
    )
    .unwrap();
    let env = HashMap::from([
        ("AURA_PLATFORM_URI".to_string(), slow.uri()),
        ("MAIN_SERVICE_URI".to_string(), slow.uri()),
        ("GATEWAY_WORKER_THREADS".to_string(), "1".to_string()),
        ("GATEWAY_RECORDER_ENABLED".to_string(), "false".to_string()),
        ("GATEWAY_AUTH".to_string(), "off".to_string()),
    ]);
    let config = gateway::Config::from_sources(Some(&file), env).unwrap();
    std::fs::remove_dir_all(dir).unwrap();
    let gw = spawn_gateway(config).await;

    let started = std::time::Instant::now();
    let res = get(gw.addr, "/api/quick/slow", &[]).await;
    assert_eq!(res.status(), 504, "the route's 1 s response timeout");
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );

    let started = std::time::Instant::now();
    let res = get(gw.addr, "/api/quick/stream", &[]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await, "data: one\n\n");
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "the route's 1 s idle timeout ended the stream: {:?}",
        started.elapsed()
    );

    let req = request("POST", gw.addr, "/api/quick/x")
        .body(full("more than ten bytes"))
        .unwrap();
    assert_eq!(send(gw.addr, req).await.status(), 413);

    // The contract's routes keep the gateway-wide defaults.
    let res = get(gw.addr, "/api/main/slow", &[]).await;
    assert_eq!(
        res.status(),
        200,
        "300 s by default: the 4 s upstream answers"
    );
}
