//! The service skeleton: envelope errors, health, readiness, metrics, and
//! Redis outages.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::*;

#[tokio::test]
async fn bad_input_is_answered_in_the_envelope() {
    let app = spawn_app().await;
    let (request_id, _) = agent_request(Some("user123"), Some("tenant1")).await;
    let auth = bearer("user123", "tenant1");
    let ok = [
        ("authorization", auth.as_str()),
        ("x-tenant-id", "tenant1"),
        ("x-user-id", "user123"),
    ];
    let path = format!("/aura/hitl/approve/{request_id}");

    let mut json = ok.to_vec();
    json.push(("content-type", "application/json"));
    let res = app.send("POST", &path, &json, "{not json").await;
    assert_eq!(
        (res.status, res.body["errorCode"].as_str()),
        (400, Some("E1001")),
        "{}",
        res.text
    );

    let mut text = ok.to_vec();
    text.push(("content-type", "text/plain"));
    let res = app.send("POST", &path, &text, "userId=user123").await;
    assert_eq!(res.status, 415, "{}", res.text);
    assert_eq!(res.body["status"], "ERROR");

    let res = app
        .send(
            "POST",
            &path,
            &json,
            &format!(r#"{{"reason":"{}"}}"#, "x".repeat(5000)),
        )
        .await;
    assert_eq!(res.status, 413, "{}", res.text);
    assert_eq!(res.body["status"], "ERROR");

    // U+0000 cannot be stored by PostgreSQL: refused in every body (as
    // schemathesis found on login and task creation, which answered 500).
    for (route, body) in [
        (
            "/auth/login",
            r#"{"username":"a","password":"b","tenantId":"\u0000"}"#,
        ),
        ("/main/agent/tasks", r#"{"taskType":"x\u0000y"}"#),
        (path.as_str(), r#"{"reason":"why\u0000"}"#),
    ] {
        let res = app.send("POST", route, &json, body).await;
        assert_eq!(
            (res.status, res.body["errorCode"].as_str()),
            (400, Some("E1001")),
            "{route}: {}",
            res.text
        );
    }

    let res = app.send("GET", "/no/such/route", &[], "").await;
    assert_eq!(
        (res.status, res.body["errorCode"].as_str()),
        (404, Some("E1004"))
    );

    let res = app.send("GET", &path, &ok, "").await;
    assert_eq!(res.status, 405);
    assert_eq!(res.body["status"], "ERROR");

    assert!(
        res.headers.contains_key("x-request-id"),
        "a request id is returned"
    );
}

#[tokio::test]
async fn health_readiness_and_metrics() {
    let app = spawn_app().await;
    // The web frontend's dashboard renders `data` as text: a string, as
    // the old main-service answered, never an object.
    let res = app.send("GET", "/main/health", &[], "").await;
    assert_eq!(
        (res.status, &res.body["data"]),
        (200, &serde_json::json!("Main Service is running"))
    );
    let res = app.send("GET", "/main/info", &[], "").await;
    assert_eq!(res.status, 200, "{}", res.text);
    let info = res.body["data"].as_object().unwrap();
    let mut keys: Vec<&str> = info.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["description", "port", "service"]);
    assert_eq!(info["service"], "dwp-main-service");
    assert!(info.values().all(serde_json::Value::is_string), "{info:?}");
    let res = app.send("GET", "/main/health/ready", &[], "").await;
    assert_eq!(res.status, 200, "{}", res.text);

    let (request_id, _) = agent_request(Some("user123"), Some("tenant1")).await;
    app.decide("approve", &request_id, "user123", "tenant1", "")
        .await;
    app.decide("reject", &request_id, "user123", "tenant1", "")
        .await;
    app.decide("approve", &request_id, "user123", "tenant1", "")
        .await;
    assert_eq!(
        app.send("GET", "/metrics", &[], "").await.status,
        404,
        "the metrics are not on the public port"
    );
    let res = app.admin.send("GET", "/metrics", &[], "").await;
    assert_eq!(
        res.headers["content-type"],
        "application/openmetrics-text; version=1.0.0; charset=utf-8"
    );
    assert!(res.text.ends_with("# EOF\n"), "{}", res.text);
    // The gauges read at the scrape: the pool, both streams' backlog.
    for line in [
        "main_db_pool_connections{state=\"in_use\"}",
        "main_db_pool_connections{state=\"idle\"}",
        "main_stream_entries{stream=\"dwp:hitl-decisions\",kind=\"pending\"}",
        "main_stream_entries{stream=\"dwp:hitl-decisions\",kind=\"lag\"}",
        "main_stream_entries{stream=\"dwp:agent-task-events\",kind=\"lag\"}",
    ] {
        assert!(res.text.contains(line), "{line}: {}", res.text);
    }
    for family in [
        "process_resident_memory_bytes",
        "process_open_fds",
        "dwp_build",
    ] {
        assert!(
            res.text.contains(&format!("# HELP {family} ")),
            "{family}: {}",
            res.text
        );
    }
    assert!(
        res.text
            .contains(r#"main_hitl_decisions_total{outcome="approved"} 1"#),
        "{}",
        res.text
    );
    assert!(
        res.text
            .contains(r#"main_hitl_decisions_total{outcome="conflict"} 1"#),
        "{}",
        res.text
    );
    for line in [
        r#"main_hitl_decisions_total{outcome="repeated"} 1"#,
        r#"main_hitl_signal_deliveries_total{result="queued"} 1"#,
    ] {
        assert!(res.text.contains(line), "{line}: {}", res.text);
    }
    assert!(res.text.contains("main_request_duration_seconds_count{route=\"/aura/hitl/approve/{id}\",status=\"200\"} 2"), "{}", res.text);
}

/// A Redis server of the test's own, on a free port.
struct OwnRedis {
    port: u16,
    child: Option<Child>,
}

impl OwnRedis {
    fn start(port: u16) -> Self {
        Self::start_with(port, &[])
    }

    /// Started with `extra` arguments (for example `--requirepass`).
    fn start_with(port: u16, extra: &[&str]) -> Self {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is installed by scripts/services.sh");
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                started.elapsed() < Duration::from_secs(5),
                "redis-server did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            port,
            child: Some(child),
        }
    }

    fn signal(&self, signal: &str) {
        let pid = self
            .child
            .as_ref()
            .map(|c| c.id().to_string())
            .unwrap_or_default();
        assert!(
            Command::new("kill")
                .args([signal, &pid])
                .status()
                .unwrap()
                .success()
        );
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for OwnRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

#[tokio::test]
async fn a_redis_password_holding_url_characters_is_accepted_and_used() {
    let port = free_port();
    let password = "p/@#:w%d";
    let _redis = OwnRedis::start_with(port, &["--requirepass", password]);
    let port = port.to_string();
    let app = spawn_app_with(config_with(
        "",
        &admin_database_url(),
        &[
            ("DB_AUTO_MIGRATE", "false"),
            ("CONSUMERS_ENABLED", "false"),
            ("REDIS_HOST", "127.0.0.1"),
            ("REDIS_PORT", &port),
            ("REDIS_PASSWORD", password),
        ],
    ))
    .await;
    let res = app.send("GET", "/main/health/ready", &[], "").await;
    assert_eq!(
        res.status, 200,
        "Redis answers with the password: {}",
        res.text
    );
}

/// A throw-away CA in `dir` and a certificate it signed for 127.0.0.1:
/// returns the CA's PEM path; the server's are `server.pem` and `server.key`.
fn throwaway_ca(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let run = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(dir)
            .output()
            .expect("openssl is installed by scripts/services.sh");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let ca = format!("{name}.pem");
    let ca_key = format!("{name}.key");
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-days",
        "1",
        "-subj",
        "/CN=dwp test CA",
        "-keyout",
        &ca_key,
        "-out",
        &ca,
    ]);
    if !dir.join("server.pem").exists() {
        std::fs::write(dir.join("ext"), "subjectAltName=IP:127.0.0.1\n").unwrap();
        run(&[
            "req",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-subj",
            "/CN=127.0.0.1",
            "-keyout",
            "server.key",
            "-out",
            "server.csr",
        ]);
        run(&[
            "x509",
            "-req",
            "-in",
            "server.csr",
            "-CA",
            &ca,
            "-CAkey",
            &ca_key,
            "-CAcreateserial",
            "-days",
            "1",
            "-extfile",
            "ext",
            "-out",
            "server.pem",
        ]);
    }
    dir.join(ca)
}

#[tokio::test]
async fn a_tls_redis_is_used_with_its_ca_and_refused_with_another() {
    let dir = std::env::temp_dir().join(format!("dwp-tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).unwrap();
    let ca = throwaway_ca(&dir, "ca");
    let other_ca = throwaway_ca(&dir, "other-ca");
    let port = free_port();
    let (cert, key) = (dir.join("server.pem"), dir.join("server.key"));
    let port_text = port.to_string();
    let _redis = OwnRedis::start_with(
        port,
        &[
            "--port",
            "0",
            "--tls-port",
            &port_text,
            "--tls-cert-file",
            cert.to_str().unwrap(),
            "--tls-key-file",
            key.to_str().unwrap(),
            "--tls-ca-cert-file",
            ca.to_str().unwrap(),
            "--tls-auth-clients",
            "no",
        ],
    );
    let url = format!("rediss://127.0.0.1:{port}");
    let ready = |ca_file: std::path::PathBuf| {
        let url = url.clone();
        async move {
            let app = spawn_app_with(config_with(
                &url,
                &admin_database_url(),
                &[
                    ("DB_AUTO_MIGRATE", "false"),
                    ("CONSUMERS_ENABLED", "false"),
                    ("REDIS_CA_FILE", ca_file.to_str().unwrap()),
                ],
            ))
            .await;
            app.send("GET", "/main/health/ready", &[], "").await
        }
    };
    let res = ready(ca).await;
    assert_eq!(res.status, 200, "TLS Redis with its CA: {}", res.text);
    let res = ready(other_ca).await;
    assert_eq!(
        res.status, 503,
        "a server the CA did not sign is not trusted: {}",
        res.text
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test]
async fn redis_down_is_a_quick_503_and_back_is_served_without_a_restart() {
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let app = spawn_app_with(config(&url)).await;
    let auth = bearer("user123", "tenant1");
    let headers = [
        ("authorization", auth.as_str()),
        ("x-tenant-id", "tenant1"),
        ("x-user-id", "user123"),
    ];

    // Never up yet: quick 503.
    let started = Instant::now();
    let res = app
        .send("POST", "/aura/hitl/approve/req_0123456789ab", &headers, "")
        .await;
    assert_eq!(res.status, 503, "{}", res.text);
    assert_eq!(res.body["errorCode"], "E5000");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        app.send("GET", "/main/health/ready", &[], "").await.status,
        503
    );
    assert_eq!(
        app.send("GET", "/main/health", &[], "").await.status,
        200,
        "liveness does not depend on Redis"
    );
    // The old service's Actuator probes: DOWN with 503, liveness still UP.
    let actuator = app.send("GET", "/actuator/health", &[], "").await;
    assert_eq!(actuator.status, 503, "{}", actuator.text);
    assert_eq!(actuator.body["status"], "DOWN");
    let readiness = app.send("GET", "/actuator/health/readiness", &[], "").await;
    assert_eq!(
        (readiness.status, readiness.body["status"].as_str()),
        (503, Some("DOWN"))
    );
    let liveness = app.send("GET", "/actuator/health/liveness", &[], "").await;
    assert_eq!(
        (liveness.status, liveness.body["status"].as_str()),
        (200, Some("UP"))
    );

    let mut redis = OwnRedis::start(port);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let up = app.send("GET", "/actuator/health/readiness", &[], "").await;
        if up.status == 200 {
            assert_eq!(up.text, r#"{"status":"UP"}"#);
            break;
        }
        assert!(
            Instant::now() < deadline,
            "readiness never came up: {}",
            up.text
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let health = app.send("GET", "/actuator/health", &[], "").await;
    assert_eq!(health.status, 200, "{}", health.text);
    assert_eq!(health.body["components"]["redis"]["status"], "UP");
    let res = app.send("GET", "/aura/hitl/signals/s1", &headers, "").await;
    assert_eq!(
        res.status, 404,
        "served (no such session) once Redis is up: {}",
        res.text
    );

    // Up, then down: quick 503 again.
    redis.stop();
    let started = Instant::now();
    let res = app.send("GET", "/aura/hitl/signals/s1", &headers, "").await;
    assert_eq!(res.status, 503, "{}", res.text);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );

    // Back: served again, same process.
    let redis = OwnRedis::start(redis.port);
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let res = app.send("GET", "/aura/hitl/signals/s1", &headers, "").await;
        if res.status == 404 {
            break; // answered: Redis says there is no such session
        }
        assert!(
            Instant::now() < deadline,
            "still {} after Redis came back",
            res.status
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Stalled (accepts, never answers): still a quick 503, never a hung call.
    let (request_id, _) = agent_request_in(&url).await;
    redis.signal("-STOP");
    let started = Instant::now();
    let res = app
        .send(
            "POST",
            &format!("/aura/hitl/approve/{request_id}"),
            &headers,
            "",
        )
        .await;
    redis.signal("-CONT");
    assert_eq!(res.status, 503, "{}", res.text);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_openapi_document_describes_every_route_and_its_errors() {
    let app = spawn_app().await;
    let res = app.send("GET", "/main/openapi.json", &[], "").await;
    assert_eq!(res.status, 200, "{}", res.text);
    let doc = res.body;
    assert_eq!(doc["openapi"], "3.1.0");
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    for route in [
        "/auth/login",
        "/aura/hitl/approve/{id}",
        "/aura/hitl/reject/{id}",
        "/aura/hitl/requests",
        "/aura/hitl/requests/{id}",
        "/aura/hitl/signals/{id}",
        "/main/agent/tasks",
        "/main/agent/tasks/{task_id}",
        "/main/agent/tasks/{task_id}/start",
        "/main/agent/tasks/{task_id}/progress",
        "/main/agent/tasks/{task_id}/complete",
        "/main/agent/tasks/{task_id}/fail",
        "/main/agent/tasks/{task_id}/plan-steps",
        "/main/health",
        "/main/health/ready",
        "/main/info",
    ] {
        assert!(paths.contains(&route), "{route} missing from {paths:?}");
    }
    let approve = &doc["paths"]["/aura/hitl/approve/{id}"]["post"];
    for status in [
        "200", "400", "401", "403", "404", "409", "413", "429", "503",
    ] {
        assert!(
            approve["responses"][status].is_object(),
            "approve documents {status}"
        );
    }
    assert_eq!(approve["security"], serde_json::json!([{"bearer": []}]));
    let link = &doc["paths"]["/main/agent/tasks"]["post"]["responses"]["201"]["links"]["start"];
    assert_eq!(link["operationId"], "start");
    assert_eq!(link["parameters"]["task_id"], "$response.body#/data/taskId");
    assert!(doc["components"]["schemas"]["Envelope"].is_object());
}

#[tokio::test]
async fn idle_kept_alive_connections_and_dripped_heads_are_closed_at_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let app = spawn_app_with(config_with(
        &redis_url(),
        &admin_database_url(),
        &[
            ("DB_AUTO_MIGRATE", "false"),
            ("CONSUMERS_ENABLED", "false"),
            ("MAIN_HEADER_READ_TIMEOUT_SECS", "1"),
        ],
    ))
    .await;
    // A request, then silence on the kept-alive connection.
    let mut idle = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    idle.write_all(b"GET /main/health HTTP/1.1\r\nHost: m\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    // A head that never ends.
    let mut drip = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    drip.write_all(b"GET /main/health HTTP/1.1\r\nHost: m\r\n")
        .await
        .unwrap();
    let started = Instant::now();
    for conn in [&mut idle, &mut drip] {
        let closed = tokio::time::timeout(Duration::from_secs(5), async {
            let mut rest = Vec::new();
            let _ = conn.read_to_end(&mut rest).await;
        })
        .await;
        assert!(closed.is_ok(), "the connection stayed open");
    }
    assert!(started.elapsed() < Duration::from_secs(4));
}

#[tokio::test]
async fn pending_hitl_requests_are_counted_at_the_scrape_whoever_wrote_them() {
    let port = free_port();
    let _redis = OwnRedis::start(port);
    let url = format!("redis://127.0.0.1:{port}");
    let app = spawn_app_with(config(&url)).await;
    let scrape = || async {
        let res = app.admin.send("GET", "/metrics", &[], "").await;
        res.text
            .lines()
            .find_map(|l| l.strip_prefix("main_hitl_pending_requests "))
            .map(str::to_owned)
    };
    assert_eq!(scrape().await.as_deref(), Some("0"));
    // Three written as the agent writes them, one of them with numeric
    // owners (as the Java backend's agent did); a key that holds no request
    // counts for nothing and breaks nothing.
    let mut ids = Vec::new();
    for _ in 0..2 {
        ids.push(agent_request_in(&url).await.0);
    }
    let numeric = unique("req");
    agent_writes(
        &url,
        &numeric,
        &unique("session"),
        serde_json::json!(7),
        serde_json::json!(1),
    )
    .await;
    let mut conn = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg("hitl:request:junk")
        .arg("not json")
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(scrape().await.as_deref(), Some("3"));
    let res = app
        .decide("approve", &ids[0], "user123", "tenant1", "")
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        scrape().await.as_deref(),
        Some("2"),
        "a decided one waits no more"
    );
}
