//! Upstream failures and bad input: 502, 504, 413, 400, never 500.

use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

#[tokio::test]
async fn a_stopped_upstream_is_502_e5000() {
    let dead = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = dead.local_addr().unwrap();
    drop(dead);
    let gw = spawn_gateway(config(&format!("http://{addr}"), &[])).await;
    let res = get(gw.addr, "/api/main/x", &[]).await;
    assert_eq!(res.status(), 502);
    let body = res.json().await;
    assert_eq!(body["errorCode"], "E5000");
    assert_eq!(body["success"], false);
}

#[tokio::test]
async fn a_stalled_upstream_is_504_e5001_at_the_response_timeout() {
    let up = upstream(|_| async { std::future::pending().await }).await;
    let gw = spawn_gateway(config(&up.uri(), &[("GATEWAY_RESPONSE_TIMEOUT_SECS", "1")])).await;
    let started = std::time::Instant::now();
    let res = get(gw.addr, "/api/main/x", &[]).await;
    assert_eq!(res.status(), 504);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(res.json().await["errorCode"], "E5001");
}

#[tokio::test]
async fn an_upstream_that_never_accepts_is_504_at_the_connect_timeout() {
    // A listener with a full accept queue: the kernel drops further SYNs.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(0).unwrap();
    let addr = listener.local_addr().unwrap();
    let mut fillers = Vec::new();
    for _ in 0..8 {
        if let Ok(Ok(s)) = tokio::time::timeout(
            Duration::from_millis(200),
            tokio::net::TcpStream::connect(addr),
        )
        .await
        {
            fillers.push(s);
        }
    }
    let gw = spawn_gateway(config(
        &format!("http://{addr}"),
        &[
            ("GATEWAY_CONNECT_TIMEOUT_SECS", "1"),
            ("GATEWAY_RESPONSE_TIMEOUT_SECS", "20"),
        ],
    ))
    .await;
    let started = std::time::Instant::now();
    let res = get(gw.addr, "/api/main/x", &[]).await;
    assert_eq!(res.status(), 504, "connect timed out");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "the connect timeout, not the response timeout"
    );
    assert_eq!(res.json().await["errorCode"], "E5001");
    drop(listener);
}

#[tokio::test]
async fn bodies_over_the_limit_are_413_by_length_and_while_streaming() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[("GATEWAY_MAX_BODY_BYTES", "1000")])).await;
    let res = send(
        gw.addr,
        request("POST", gw.addr, "/api/main/x")
            .body(full(vec![b'a'; 1001]))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 413);
    assert_eq!(res.json().await["errorCode"], "E1001");
    assert!(up.requests().is_empty(), "refused before the upstream");

    let (tx, body) = channel_body();
    tokio::spawn(async move {
        for _ in 0..4 {
            if tx.send(bytes::Bytes::from(vec![b'b'; 400])).await.is_err() {
                break;
            }
        }
    });
    let res = send(
        gw.addr,
        request("POST", gw.addr, "/api/main/x").body(body).unwrap(),
    )
    .await;
    assert_eq!(res.status(), 413);

    let res = send(
        gw.addr,
        request("POST", gw.addr, "/api/main/x")
            .body(full(vec![b'c'; 1000]))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200, "exactly the limit passes");
}

async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn malformed_requests_are_400_and_never_reach_the_upstream() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    for bad in [
        "GET /api/main/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello",
        "POST /api/main/x HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
        "GET /api/main/x HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n",
        "NOT A REQUEST\r\n\r\n",
        "GET /api/main/x HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
    ] {
        let answer = raw(gw.addr, bad).await;
        assert!(answer.starts_with("HTTP/1.1 400"), "{bad:?} -> {answer:?}");
    }
    let huge = format!(
        "GET /api/main/x HTTP/1.1\r\nHost: a\r\nX-Big: {}\r\n\r\n",
        "a".repeat(100 * 1024)
    );
    let answer = raw(gw.addr, &huge).await;
    assert!(answer.starts_with("HTTP/1.1 431"), "{answer:?}");
    assert!(up.requests().is_empty());
    assert_eq!(
        get(gw.addr, "/health", &[]).await.status(),
        200,
        "still serving"
    );
}

#[tokio::test]
async fn a_request_with_both_transfer_encoding_and_content_length_is_never_forwarded_ambiguously() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let answer = raw(
        gw.addr,
        "POST /api/main/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    let seen = up.requests();
    if answer.starts_with("HTTP/1.1 400") {
        assert!(seen.is_empty(), "refused before the upstream");
    } else {
        // Normalised: the upstream sees one framing that matches the body.
        assert_eq!(seen.len(), 1, "{answer}");
        assert_eq!(&seen[0].body[..], b"hello");
        if let Some(len) = seen[0].headers.get("content-length") {
            assert_eq!(len, "5", "a stale Content-Length was forwarded: {answer}");
        }
    }
}
