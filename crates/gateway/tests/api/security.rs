//! What an attacker tries at the edge: unframing a body with `Connection`,
//! holding upstream connections with a body that never comes, and opening
//! more requests or streams than anyone needs.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// Writes `request` on a new connection and reads until the gateway closes it.
async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn connection_cannot_remove_the_framing_so_a_body_is_never_a_second_request() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let smuggled = "GET /auth/smuggled HTTP/1.1\r\nHost: x\r\n\r\n";
    for named in [
        "close, Content-Length",
        "Content-Length, close, Host, X-Forwarded-For, X-Request-ID",
        "close, content-length, transfer-encoding",
    ] {
        let request = format!(
            "POST /api/auth/login HTTP/1.1\r\nHost: gw.example\r\nConnection: {named}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{smuggled}",
            smuggled.len()
        );
        let answer = raw(gw.addr, &request).await;
        assert!(answer.starts_with("HTTP/1.1 200"), "{named}: {answer}");
    }
    // Pooled connections are reused by the next client: it gets its own answer.
    let res = get(gw.addr, "/api/auth/next", &[]).await;
    assert_eq!(res.json().await["path"], "/auth/next");

    let seen = up.requests();
    let paths: Vec<&str> = seen.iter().map(|s| s.uri.path()).collect();
    assert_eq!(
        paths,
        ["/auth/login", "/auth/login", "/auth/login", "/auth/next"],
        "a body was read as a request"
    );
    for s in &seen[..3] {
        assert_eq!(s.body, smuggled.as_bytes());
        assert_eq!(s.headers["content-length"], smuggled.len().to_string());
        assert_eq!(s.headers["host"], up.addr.to_string());
        assert!(s.headers.contains_key("x-forwarded-for"));
        assert!(s.headers.contains_key("x-request-id"));
    }
}

#[tokio::test]
async fn a_chunked_body_that_fits_is_sent_with_its_exact_length() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let answer = raw(
        gw.addr,
        "POST /api/main/x HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let seen = up.requests();
    assert_eq!(seen[0].body, "hello world");
    assert_eq!(seen[0].headers["content-length"], "11");
    assert!(!seen[0].headers.contains_key("transfer-encoding"));
}

/// Opens an agent stream as `user` and waits for its head.
async fn open_stream(addr: std::net::SocketAddr, user: &str) -> Sent {
    open_stream_in(addr, "tenant1", user).await
}

/// [`open_stream`] as `user` of `tenant`.
async fn open_stream_in(addr: std::net::SocketAddr, tenant: &str, user: &str) -> Sent {
    let token = format!("Bearer {}", token(user, tenant, 600));
    let req = request("POST", addr, "/api/aura/test/stream")
        .header("authorization", token)
        .header("x-tenant-id", tenant)
        .header("x-user-id", user)
        .header("accept", "text/event-stream")
        .body(full("{}"))
        .unwrap();
    send(addr, req).await
}

#[tokio::test]
async fn one_user_cannot_hold_more_streams_than_the_cap_and_others_are_not_blocked() {
    let (up, mut feeds) = feeding_upstream(Some("text/event-stream")).await;
    let gw = spawn_gateway(config(
        &up.uri(),
        &[
            ("JWT_SECRET", SECRET),
            ("GATEWAY_MAX_STREAMS_PER_USER", "2"),
        ],
    ))
    .await;
    let first = open_stream(gw.addr, "alice").await;
    let _feed1 = feeds.recv().await.unwrap();
    let second = open_stream(gw.addr, "alice").await;
    let _feed2 = feeds.recv().await.unwrap();
    assert_eq!((first.status(), second.status()), (200, 200));
    let third = open_stream(gw.addr, "alice").await;
    assert_eq!(third.status(), 429);
    assert_eq!(third.header("retry-after").as_deref(), Some("1"));
    let body = third.json().await;
    assert_eq!(body["errorCode"], "E1001");
    assert!(
        body["message"].as_str().unwrap().contains("streams"),
        "{body}"
    );
    assert_eq!(
        up.requests().len(),
        2,
        "the refused one never went upstream"
    );
    let bob = open_stream(gw.addr, "bob").await;
    assert_eq!(bob.status(), 200, "another user is not blocked");
    let _feed3 = feeds.recv().await.unwrap();
    let namesake = open_stream_in(gw.addr, "tenant2", "alice").await;
    assert_eq!(
        namesake.status(),
        200,
        "alice of another tenant is another user"
    );
    let _feed4 = feeds.recv().await.unwrap();
    // A stream that ends gives its slot back.
    drop(first);
    let mut again = None;
    for _ in 0..50 {
        let res = open_stream(gw.addr, "alice").await;
        if res.status() == 200 {
            again = Some(res);
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(again.is_some(), "the slot came back when the stream ended");
    let metrics = get(gw.admin, "/metrics", &[]).await.text().await;
    assert!(metrics.contains("gateway_limited_total 1"), "{metrics}");
}

#[tokio::test]
async fn one_address_cannot_hold_more_requests_than_the_cap() {
    let (up, mut feeds) = feeding_upstream(Some("text/event-stream")).await;
    let gw = spawn_gateway(config(
        &up.uri(),
        &[("GATEWAY_MAX_REQUESTS_PER_CLIENT", "2")],
    ))
    .await;
    let stream = || {
        get(
            gw.addr,
            "/api/main/stream",
            &[("accept", "text/event-stream")],
        )
    };
    let a = stream().await;
    let _fa = feeds.recv().await.unwrap();
    let b = stream().await;
    let _fb = feeds.recv().await.unwrap();
    assert_eq!((a.status(), b.status()), (200, 200));
    let c = stream().await;
    assert_eq!(c.status(), 429);
    assert!(
        c.json().await["message"]
            .as_str()
            .unwrap()
            .contains("address")
    );
}
