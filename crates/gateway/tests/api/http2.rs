//! HTTP/2 at the edge: TLS with ALPN `h2`, many streams on one connection
//! each under the same checks and caps as an HTTP/1.1 request, and
//! cleartext HTTP/2 with prior knowledge.

use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::sync::watch;

use crate::helpers::*;

/// A cleartext HTTP/2 connection with prior knowledge.
async fn h2c(addr: std::net::SocketAddr) -> hyper::client::conn::http2::SendRequest<Full<Bytes>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(tcp))
            .await
            .unwrap();
    tokio::spawn(conn);
    sender
}

fn stream_request(user: &str) -> Request<Full<Bytes>> {
    Request::builder()
        .method("POST")
        .uri("https://localhost/api/aura/test/stream")
        .header("x-tenant-id", "tenant1")
        .header("x-user-id", user)
        .header(
            "authorization",
            format!("Bearer {}", token(user, "tenant1", 60)),
        )
        .header("accept", "text/event-stream")
        .body(Full::new(Bytes::from_static(br#"{"prompt":"merge it"}"#)))
        .unwrap()
}

/// An agent whose streams send one event and then wait (paused for
/// approval) until `release`; every other path answers at once.
async fn pausing_agent() -> (Upstream, watch::Sender<bool>) {
    let (release, released) = watch::channel(false);
    let up = upstream(move |seen: Seen| {
        let mut released = released.clone();
        async move {
            if !seen.uri.path().contains("/stream") {
                return Response::builder()
                    .header("content-type", "application/json")
                    .body(full(r#"{"approved":true}"#))
                    .unwrap();
            }
            let (tx, body) = channel_body();
            tokio::spawn(async move {
                let _ = tx
                    .send(Bytes::from_static(b"id: 1\nevent: hitl\ndata: {}\n\n"))
                    .await;
                let _ = released.wait_for(|r| *r).await;
                let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
            });
            Response::builder()
                .header("content-type", "text/event-stream")
                .body(body)
                .unwrap()
        }
    })
    .await;
    (up, release)
}

#[tokio::test]
async fn over_tls_many_paused_streams_share_one_connection_and_an_approval_passes_at_once() {
    let (agent, release) = pausing_agent().await;
    let (dir, ca) = testkit::localhost_certificate();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let gw = spawn_gateway(config(
        &agent.uri(),
        &[
            ("GATEWAY_TLS_CERT_FILE", cert.to_str().unwrap()),
            ("GATEWAY_TLS_KEY_FILE", key.to_str().unwrap()),
            ("GATEWAY_MAX_STREAMS_PER_USER", "8"),
            ("JWT_SECRET", SECRET),
        ],
    ))
    .await;
    let mut sender = testkit::h2_over_tls(gw.addr, ca).await;
    // Eight runs paused for approval, all on this one connection.
    let mut paused = Vec::new();
    for _ in 0..8 {
        let mut res = sender.send_request(stream_request("alice")).await.unwrap();
        assert_eq!(res.status(), 200);
        let first = res
            .body_mut()
            .frame()
            .await
            .unwrap()
            .unwrap()
            .into_data()
            .unwrap();
        assert_eq!(&first[..], b"id: 1\nevent: hitl\ndata: {}\n\n");
        paused.push(res);
    }
    // The ninth is over alice's cap, as over HTTP/1.1; the others go on.
    let ninth = sender.send_request(stream_request("alice")).await.unwrap();
    assert_eq!(ninth.status(), 429);
    // The approval leaves at once: no connection to wait for.
    let started = Instant::now();
    let approve = Request::builder()
        .method("POST")
        .uri("https://localhost/api/aura/hitl/approve/req_1")
        .header("x-tenant-id", "tenant1")
        .header("x-user-id", "alice")
        .header(
            "authorization",
            format!("Bearer {}", token("alice", "tenant1", 60)),
        )
        .body(Full::new(Bytes::new()))
        .unwrap();
    let approved = sender.send_request(approve).await.unwrap();
    assert_eq!(approved.status(), 200);
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    let seen = agent.requests();
    let approval = seen
        .iter()
        .find(|s| s.uri.path().contains("approve"))
        .unwrap();
    assert_eq!(
        approval.headers["host"],
        agent.addr.to_string(),
        "the upstream gets a Host"
    );
    assert_eq!(
        approval.headers["x-forwarded-host"], "localhost",
        "from :authority"
    );
    assert_eq!(approval.headers["x-forwarded-proto"], "https");
    release.send(true).unwrap();
    for mut res in paused {
        let rest = res.body_mut().collect().await.unwrap().to_bytes();
        assert_eq!(&rest[..], b"data: [DONE]\n\n");
    }
    std::fs::remove_dir_all(dir).unwrap();
}

#[tokio::test]
async fn cleartext_http2_with_prior_knowledge_is_served_beside_http1() {
    let (agent, _release) = pausing_agent().await;
    let gw = spawn_gateway(config(&agent.uri(), &[("GATEWAY_H2C", "true")])).await;
    let mut sender = h2c(gw.addr).await;
    let res = sender
        .send_request(
            Request::get(format!("http://{}/api/main/x", gw.addr))
                .body(Full::new(Bytes::new()))
                .unwrap(),
        )
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(res.version(), http::Version::HTTP_2);
    // And HTTP/1.1 on the same port as before.
    assert_eq!(get(gw.addr, "/api/main/x", &[]).await.status(), 200);
}

#[tokio::test]
async fn an_http2_stream_left_unread_gives_its_upstream_connection_up_and_its_neighbours_go_on() {
    let big = upstream(|seen: Seen| async move {
        if seen.uri.path().contains("big") {
            return Response::builder()
                .header("content-type", "application/octet-stream")
                .body(full(vec![b'x'; 4 * 1024 * 1024]))
                .unwrap();
        }
        Response::builder().body(full("small")).unwrap()
    })
    .await;
    let gw = spawn_gateway(config(
        &big.uri(),
        &[
            ("GATEWAY_WRITE_IDLE_TIMEOUT_SECS", "1"),
            ("GATEWAY_H2C", "true"),
        ],
    ))
    .await;
    let mut sender = h2c(gw.addr).await;
    let get = |path: &str| {
        Request::get(format!("http://{}{path}", gw.addr))
            .body(Full::new(Bytes::new()))
            .unwrap()
    };
    let unread = sender.send_request(get("/api/main/big")).await.unwrap();
    assert_eq!(unread.status(), 200);
    // Never read: the stream's window fills and the gateway gives it up.
    assert!(
        eventually(Duration::from_secs(4), || !big
            .closed
            .lock()
            .unwrap()
            .is_empty())
        .await,
        "the upstream connection of the unread stream was freed"
    );
    let res = sender.send_request(get("/api/main/small")).await.unwrap();
    assert_eq!(res.status(), 200, "the connection's other streams go on");
    drop(unread);
}
