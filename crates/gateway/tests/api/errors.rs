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
    raw_bytes(addr, request.as_bytes()).await
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
async fn a_request_with_both_transfer_encoding_and_content_length_is_read_by_its_chunks_and_its_connection_closed()
 {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let answer = raw(
        gw.addr,
        "POST /api/main/x HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    )
    .await;
    // hyper normalises as RFC 9112 6.3 says: the chunks frame the body, the
    // Content-Length is dropped, and the connection is closed after the
    // answer, so nothing after the body is read as a request.
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(answer.contains("connection: close"), "{answer}");
    let seen = up.requests();
    assert_eq!(seen.len(), 1, "{answer}");
    assert_eq!(&seen[0].body[..], b"hello");
    if let Some(len) = seen[0].headers.get("content-length") {
        assert_eq!(len, "5", "a stale Content-Length was forwarded: {answer}");
    }
}

/// Raw bytes, for probes that are not valid UTF-8.
async fn raw_bytes(addr: std::net::SocketAddr, request: &[u8]) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

/// Request smuggling and header injection probes, each on a connection of
/// its own and followed by a second request (`/api/main/smuggled`) that one
/// reading of the framing takes for body and another for a new request. The
/// gateway refuses each with 400, forwards nothing and closes the
/// connection, or (both framings at once) reads the chunks and closes; the
/// bytes after the probe are never read as a request.
#[tokio::test]
async fn smuggling_and_injection_probes_are_refused_or_normalised_never_forwarded_ambiguously() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let hidden = "GET /api/main/smuggled HTTP/1.1\r\nHost: a\r\n\r\n";
    let chunked_hidden = format!("0\r\n\r\n{hidden}");
    let probes: Vec<(&str, String)> = vec![
        (
            "CL.TE",
            format!(
                "POST /api/main/x HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nTransfer-Encoding: chunked\r\n\r\n{chunked_hidden}",
                chunked_hidden.len()
            ),
        ),
        (
            "TE.CL",
            format!(
                "POST /api/main/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: 3\r\n\r\n{:x}\r\n{hidden}\r\n0\r\n\r\n",
                hidden.len()
            ),
        ),
        (
            "TE obfuscated (xchunked)",
            format!(
                "POST /api/main/x HTTP/1.1\r\nHost: a\r\nContent-Length: {}\r\nTransfer-Encoding: xchunked\r\n\r\n{chunked_hidden}",
                chunked_hidden.len()
            ),
        ),
        (
            "TE list (chunked, identity)",
            format!(
                "POST /api/main/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, identity\r\n\r\n{chunked_hidden}"
            ),
        ),
        (
            "TE twice",
            format!(
                "POST /api/main/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nTransfer-Encoding: identity\r\n\r\n{chunked_hidden}"
            ),
        ),
        (
            "TE with a space before the colon",
            format!(
                "POST /api/main/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\nContent-Length: {}\r\n\r\n{chunked_hidden}",
                chunked_hidden.len()
            ),
        ),
        (
            "TE folded onto the previous line",
            format!(
                "POST /api/main/x HTTP/1.1\r\nHost: a\r\nX-A: b\r\n Transfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n{chunked_hidden}",
                chunked_hidden.len()
            ),
        ),
        (
            "TE in HTTP/1.0",
            format!(
                "POST /api/main/x HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\nContent-Length: {}\r\n\r\n{chunked_hidden}",
                chunked_hidden.len()
            ),
        ),
        (
            "Content-Length with a sign",
            format!(
                "POST /api/main/x HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello{hidden}"
            ),
        ),
        (
            "Content-Length list of two values",
            format!(
                "POST /api/main/x HTTP/1.1\r\nHost: a\r\nContent-Length: 5, 50\r\n\r\nhello{hidden}"
            ),
        ),
        (
            "chunk size overflow",
            format!(
                "POST /api/main/x HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\nffffffffffffffffff1\r\nhello\r\n0\r\n\r\n{hidden}"
            ),
        ),
        (
            "CR inside a header value",
            format!("GET /api/main/x HTTP/1.1\r\nHost: a\r\nX-A: a\rb\r\n\r\n{hidden}"),
        ),
        (
            "NUL inside a header value",
            format!("GET /api/main/x HTTP/1.1\r\nHost: a\r\nX-A: a\0b\r\n\r\n{hidden}"),
        ),
        (
            "CR LF encoded in the path",
            format!("GET /api/main/x%0d%0aX-Injected:%20yes HTTP/1.1\r\nHost: a\r\n\r\n{hidden}"),
        ),
    ];
    let mut failures = Vec::new();
    for (name, probe) in &probes {
        let before = up.requests().len();
        let answer = raw(gw.addr, probe).await;
        let status: u16 = answer.get(9..12).and_then(|s| s.parse().ok()).unwrap_or(0);
        let seen = &up.requests()[before..];
        let forwarded: Vec<_> = seen.iter().map(|r| r.uri.path().to_owned()).collect();
        // Both framings at once (CL.TE, TE.CL): normalised by hyper, the
        // chunks win and the connection is closed after the answer.
        let normalised = name.starts_with("CL.TE") || name.starts_with("TE.CL");
        if normalised {
            if status != 200 || !answer.contains("connection: close") || forwarded != ["/main/x"] {
                failures.push(format!(
                    "{name}: {status}, forwarded {forwarded:?}: {answer:?}"
                ));
            }
        } else if status != 400 {
            failures.push(format!(
                "{name}: {status}, forwarded {forwarded:?}: {answer:?}"
            ));
        } else if !seen.is_empty() {
            failures.push(format!("{name}: refused, yet forwarded {forwarded:?}"));
        }
    }
    assert!(failures.is_empty(), "{failures:#?}");

    // Invalid UTF-8: raw bytes in the request line are refused; escapes that
    // decode to invalid UTF-8 are forwarded as they came, still escaped.
    let answer = raw_bytes(
        gw.addr,
        b"GET /api/main/\xff\xfe HTTP/1.1\r\nHost: a\r\n\r\n",
    )
    .await;
    assert!(answer.starts_with("HTTP/1.1 400"), "{answer:?}");
    let res = get(gw.addr, "/api/main/%ff%fe", &[]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.json().await["path"], "/main/%ff%fe");
    assert_eq!(get(gw.addr, "/health", &[]).await.status(), 200);
}

#[tokio::test]
async fn a_client_that_drips_its_request_head_is_cut_off_at_the_header_read_timeout() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(
        &up.uri(),
        &[("GATEWAY_HEADER_READ_TIMEOUT_SECS", "1")],
    ))
    .await;
    // Slowloris: a head that never ends, one byte every 100 ms.
    let mut slow = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    slow.write_all(b"GET /api/main/x HTTP/1.1\r\nHost: a\r\nX-Slow: ")
        .await
        .unwrap();
    let started = std::time::Instant::now();
    let dripping = async {
        loop {
            tokio::time::sleep(Duration::from_millis(100)).await;
            if slow.write_all(b"a").await.is_err() {
                return;
            }
            let mut buf = [0u8; 256];
            match tokio::time::timeout(Duration::from_millis(1), slow.read(&mut buf)).await {
                Ok(Ok(0)) | Ok(Err(_)) => return, // closed by the gateway
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(5), dripping)
        .await
        .expect("the gateway closed the dripping connection");
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_millis(2500),
        "cut off at the timeout, not before: {took:?}"
    );
    assert!(up.requests().is_empty(), "nothing reached the upstream");

    // An idle kept-alive connection is closed after the same time; a
    // request that arrives in time is served.
    let mut idle = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    idle.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = idle.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let mut rest = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(4), idle.read_to_end(&mut rest)).await;
    assert!(closed.is_ok(), "the idle connection was closed");
}
