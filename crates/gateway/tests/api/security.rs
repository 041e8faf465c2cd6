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
