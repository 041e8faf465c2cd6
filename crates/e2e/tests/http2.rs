//! HTTP/2 over TLS through the real binaries: many agent runs on one
//! connection, and an approval that leaves at once while seven runs are
//! paused (over HTTP/1.1 a browser's six connections would all be held).

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::Bytes;
use e2e::{Stack, binary, free_port, kind};
use http::Request;
use http_body_util::Full;
use hyper::client::conn::http2::SendRequest;
use rustls::pki_types::CertificateDer;
use serde_json::Value;

struct TlsGateway {
    addr: SocketAddr,
    child: Child,
    dir: std::path::PathBuf,
    ca: CertificateDer<'static>,
}

impl Drop for TlsGateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A gateway serving TLS with a fresh self-signed certificate for
/// `localhost`, in front of the stack's agent and main-service.
async fn tls_gateway(stack: &Stack) -> TlsGateway {
    let (dir, ca) = testkit::localhost_certificate();
    let port = free_port();
    let child = Command::new(binary("gateway"))
        .env("SERVER_HOST", "127.0.0.1")
        .env("SERVER_PORT", port.to_string())
        .env("ADMIN_PORT", "off")
        .env("RUST_LOG", "warn")
        .env("JWT_SECRET", e2e::SECRET)
        .env("REDIS_URL", &stack.redis_url)
        .env("AURA_PLATFORM_URI", format!("http://{}", stack.aura))
        .env("MAIN_SERVICE_URI", format!("http://{}", stack.main))
        .env("GATEWAY_TLS_CERT_FILE", dir.join("cert.pem"))
        .env("GATEWAY_TLS_KEY_FILE", dir.join("key.pem"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let gateway = TlsGateway {
        addr: ([127, 0, 0, 1], port).into(),
        child,
        dir,
        ca,
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    while tokio::net::TcpStream::connect(gateway.addr).await.is_err() {
        assert!(Instant::now() < deadline, "the TLS gateway never listened");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    gateway
}

/// One HTTP/2 connection over TLS (ALPN must choose h2).
async fn connect(gateway: &TlsGateway) -> SendRequest<Full<Bytes>> {
    testkit::h2_over_tls(gateway.addr, gateway.ca.clone()).await
}

fn request(
    method: &str,
    path: &str,
    stack: &Stack,
    token: &str,
    user: &str,
    body: &str,
) -> Request<Full<Bytes>> {
    Request::builder()
        .method(method)
        .uri(format!("https://localhost{path}"))
        .header("content-type", "application/json")
        .header("accept", "text/event-stream")
        .header("x-tenant-id", stack.tenant.as_str())
        .header("x-user-id", user)
        .header("authorization", format!("Bearer {token}"))
        .body(Full::new(Bytes::from(body.to_owned())))
        .unwrap()
}

#[tokio::test]
async fn over_http2_an_approval_completes_at_once_while_seven_runs_are_paused() {
    // Seven runs of one user start within a second: with the real agent's
    // session ids they would share a session, which is refused (a decision
    // could reach the wrong run). Here the point is the connection.
    let stack = Stack::start(e2e::Options {
        users: &["ines"],
        aura_env: &[("AURA_SIM_SESSION_IDS", "random")],
        ..e2e::Options::default()
    })
    .await;
    let gateway = tls_gateway(&stack).await;
    let ines = stack.user("ines");
    let token = stack.login(&ines).await;
    let mut sender = connect(&gateway).await;

    let mut paused = Vec::new();
    for n in 0..7 {
        let body = format!(r#"{{"prompt":"merge branch {n}"}}"#);
        let res = sender
            .send_request(request(
                "POST",
                "/api/aura/test/stream",
                &stack,
                &token,
                &ines,
                &body,
            ))
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        assert_eq!(res.version(), http::Version::HTTP_2);
        let mut events = testkit::SseBody::new(res.into_body());
        let request_id = loop {
            let block = events.next().await.expect("a hitl event");
            if kind(&block) == "hitl" {
                let data: Value = serde_json::from_str(e2e::data_of(&block)).unwrap();
                break data["data"]["requestId"].as_str().unwrap().to_owned();
            }
        };
        paused.push((events, request_id));
    }
    // Seven runs wait for a person on this one connection; the approval
    // of one of them goes out at once.
    let started = Instant::now();
    let approve = format!("/api/aura/hitl/approve/{}", paused[3].1);
    let approved = sender
        .send_request(request("POST", &approve, &stack, &token, &ines, "{}"))
        .await
        .unwrap();
    assert_eq!(approved.status(), 200);
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
    let rest = paused[3].0.rest().await;
    assert!(rest.iter().any(|b| kind(b) == "tool_execution"), "{rest:?}");
    assert_eq!(kind(rest.last().unwrap()), "[DONE]");
}

#[tokio::test]
async fn over_http2_many_runs_stream_at_once_on_one_connection() {
    let stack = Stack::start(e2e::Options {
        users: &["jonas"],
        ..e2e::Options::default()
    })
    .await;
    let gateway = tls_gateway(&stack).await;
    let jonas = stack.user("jonas");
    let token = stack.login(&jonas).await;
    let sender = connect(&gateway).await;
    let mut runs = tokio::task::JoinSet::new();
    for n in 0..30 {
        let mut sender = sender.clone();
        let body = format!(r#"{{"prompt":"summarise inbox {n}"}}"#);
        let req = request(
            "POST",
            "/api/aura/test/stream",
            &stack,
            &token,
            &jonas,
            &body,
        );
        runs.spawn(async move {
            let res = sender.send_request(req).await.unwrap();
            assert_eq!(res.status(), 200);
            testkit::SseBody::new(res.into_body()).rest().await
        });
    }
    let mut done = 0;
    while let Some(events) = runs.join_next().await {
        let events = events.unwrap();
        assert_eq!(e2e::kinds(&events), e2e::PLAIN_RUN, "{events:?}");
        done += 1;
    }
    assert_eq!(done, 30);
}
