//! What the gateway does with whatever an upstream sends: raw TCP upstreams
//! on port 0 that answer with scripted bytes, good and bad.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

use crate::helpers::*;

/// What a scripted upstream does after it has read a request head.
#[derive(Clone)]
struct Script {
    /// The bytes written back.
    answer: Vec<u8>,
    /// Close the connection after writing them.
    close: bool,
}

/// A raw upstream: reads each request head (and a Content-Length body),
/// records it with its connection number, and writes `script(request, n)`
/// (`n`: the request's number on its connection, from 0).
struct RawUpstream {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<(usize, String)>>>,
    task: JoinHandle<()>,
}

impl Drop for RawUpstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl RawUpstream {
    fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }
    fn requests_of(&self, method: &str) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter().filter(|(_, h)| h.starts_with(method)).count()
    }
    fn connections(&self) -> usize {
        let seen = self.seen.lock().unwrap();
        seen.iter().map(|(c, _)| *c).max().map_or(0, |c| c + 1)
    }
}

async fn raw_upstream(
    script: impl Fn(&str, usize) -> Script + Send + Sync + 'static,
) -> RawUpstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let script = Arc::new(script);
    let seen2 = seen.clone();
    let task = tokio::spawn(async move {
        for conn in 0.. {
            let Ok((mut stream, _)) = listener.accept().await else {
                return;
            };
            let (seen, script) = (seen2.clone(), script.clone());
            tokio::spawn(async move {
                let mut buf = Vec::new();
                for nth in 0.. {
                    let Some(end) = read_head(&mut stream, &mut buf).await else {
                        return;
                    };
                    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
                    let body_len = head
                        .lines()
                        .find_map(|l| {
                            let (k, v) = l.split_once(':')?;
                            k.eq_ignore_ascii_case("content-length")
                                .then(|| v.trim().parse::<usize>().ok())?
                        })
                        .unwrap_or(0);
                    while buf.len() < end + body_len {
                        let mut chunk = [0u8; 4096];
                        match stream.read(&mut chunk).await {
                            Ok(0) | Err(_) => return,
                            Ok(n) => buf.extend_from_slice(&chunk[..n]),
                        }
                    }
                    buf.drain(..end + body_len);
                    seen.lock().unwrap().push((conn, head.clone()));
                    let Script { answer, close } = script(&head, nth);
                    if stream.write_all(&answer).await.is_err() || close {
                        return;
                    }
                }
            });
        }
    });
    RawUpstream { addr, seen, task }
}

/// Reads until a blank line; returns the head's length, or `None` at EOF.
async fn read_head(stream: &mut tokio::net::TcpStream, buf: &mut Vec<u8>) -> Option<usize> {
    loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            return Some(i + 4);
        }
        let mut chunk = [0u8; 4096];
        match stream.read(&mut chunk).await {
            Ok(0) | Err(_) => return None,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

/// A raw upstream that answers every request with `bytes`, closing the
/// connection after each when `close`.
async fn answering(bytes: impl Into<String>, close: bool) -> RawUpstream {
    let bytes = bytes.into();
    raw_upstream(move |_, _| answer(&bytes, close)).await
}

fn answer(bytes: &str, close: bool) -> Script {
    Script {
        answer: bytes.as_bytes().to_vec(),
        close,
    }
}

#[tokio::test]
async fn interim_responses_are_skipped_and_chunked_bodies_relayed_without_their_framing() {
    let up = answering(
            "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\n5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Trailer: t\r\n\r\n",
            false,
    )
    .await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    for _ in 0..2 {
        let res = get(gw.addr, "/api/main/x", &[]).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await, "hello world");
    }
    assert_eq!(
        up.connections(),
        1,
        "the connection was reused after the last chunk"
    );
}

#[tokio::test]
async fn a_body_that_ends_with_the_connection_is_relayed_whole_and_the_connection_not_reused() {
    let up = answering(
        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nall of it, until close",
        true,
    )
    .await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    for _ in 0..2 {
        let res = get(gw.addr, "/api/main/x", &[]).await;
        assert_eq!(res.status(), 200);
        assert_eq!(res.text().await, "all of it, until close");
    }
    assert_eq!(up.connections(), 2);
}

#[tokio::test]
async fn head_requests_and_no_content_answers_carry_no_body_and_keep_the_connection() {
    let up = raw_upstream(|head, _| {
        if head.starts_with("HEAD") {
            answer("HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n", false)
        } else {
            answer("HTTP/1.1 204 No Content\r\n\r\n", false)
        }
    })
    .await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let res = send(
        gw.addr,
        request("HEAD", gw.addr, "/api/main/x")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.header("content-length").as_deref(), Some("1000"));
    let res = get(gw.addr, "/api/main/y", &[]).await;
    assert_eq!(res.status(), 204);
    assert_eq!(res.text().await, "");
    assert_eq!(up.connections(), 1, "no body was waited for on either");
}

#[tokio::test]
async fn malformed_upstream_answers_are_502_e5000_and_never_crash_the_gateway() {
    let cases: Vec<(&str, String)> = vec![
        ("not HTTP", "SSH-2.0-OpenSSH_9.2\r\n\r\n".into()),
        (
            "conflicting lengths",
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello".into(),
        ),
        (
            "bad length",
            "HTTP/1.1 200 OK\r\nContent-Length: -5\r\n\r\n".into(),
        ),
        (
            "unasked protocol switch",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n".into(),
        ),
        (
            "head too large",
            format!(
                "HTTP/1.1 200 OK\r\nX-Big: {}\r\n\r\n",
                "a".repeat(70 * 1024)
            ),
        ),
        ("closed without an answer", String::new()),
        ("half a head", "HTTP/1.1 200 OK\r\nContent-Le".into()),
    ];
    for (name, bytes) in cases {
        let up = answering(bytes, true).await;
        let gw = spawn_gateway(config(&up.uri(), &[])).await;
        let res = get(gw.addr, "/api/main/x", &[]).await;
        assert_eq!(res.status(), 502, "{name}");
        assert_eq!(res.json().await["errorCode"], "E5000", "{name}");
        assert_eq!(get(gw.addr, "/health", &[]).await.status(), 200, "{name}");
    }
}

#[tokio::test]
async fn a_body_cut_short_or_badly_chunked_breaks_the_client_response_off() {
    for bytes in [
        "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\nonly ten b",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\nZZ\r\n",
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
    ] {
        let up = answering(bytes, true).await;
        let gw = spawn_gateway(config(&up.uri(), &[])).await;
        // Raw, because the client may see the head and a broken body, or
        // (when the error comes before hyper flushed the head) nothing.
        let mut client = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
        client
            .write_all(b"GET /api/main/x HTTP/1.1\r\nHost: a\r\n\r\n")
            .await
            .unwrap();
        let mut out = Vec::new();
        tokio::time::timeout(Duration::from_secs(5), client.read_to_end(&mut out))
            .await
            .expect("the gateway closes the client connection")
            .unwrap();
        let out = String::from_utf8_lossy(&out);
        let complete = match out.split_once("\r\n\r\n") {
            None => false,
            Some((head, body)) if head.contains("content-length: 100") => body.len() == 100,
            Some((_, body)) => body.ends_with("0\r\n\r\n"),
        };
        assert!(
            !complete,
            "an incomplete body is not passed off as complete: {bytes:?} -> {out:?}"
        );
        assert_eq!(get(gw.addr, "/health", &[]).await.status(), 200);
    }
}

#[tokio::test]
async fn a_pooled_connection_the_upstream_closed_is_never_reused_and_no_request_is_lost() {
    // Keep-alive in name only: the upstream closes every connection right
    // after its answer, which the gateway sees at the earliest on its next use.
    let up = answering("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", true).await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    for i in 0..20 {
        let res = get(gw.addr, "/api/main/x", &[]).await;
        assert_eq!(res.status(), 200, "request {i}");
        assert_eq!(res.text().await, "ok");
        if i % 2 == 0 {
            tokio::time::sleep(Duration::from_millis(20)).await; // the FIN has arrived
        }
    }
    assert_eq!(up.connections(), 20, "each request on a live connection");
}

#[tokio::test]
async fn a_request_caught_by_the_keep_alive_race_is_retried_once_when_it_is_idempotent() {
    // The upstream takes a second request on a connection and closes it
    // without an answer, as a server whose keep-alive timer fired just then.
    let up = raw_upstream(|_, nth| {
        if nth == 0 {
            answer("HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok", false)
        } else {
            answer("", true)
        }
    })
    .await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    assert_eq!(get(gw.addr, "/api/main/x", &[]).await.status(), 200);
    let res = get(gw.addr, "/api/main/x", &[]).await;
    assert_eq!(res.status(), 200, "a GET is sent again on a new connection");
    assert_eq!(res.text().await, "ok");
    assert_eq!(up.connections(), 2);
    // A POST is not replayed: the upstream may have acted on it.
    let post = |body: &'static str| {
        request("POST", gw.addr, "/api/main/x")
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap()
    };
    let res = send(gw.addr, post("{}")).await;
    assert_eq!(res.status(), 502, "the POST reached a closing connection");
    assert_eq!(up.requests_of("POST"), 1, "and was sent once");
}

#[tokio::test]
async fn an_upstream_answering_before_it_reads_the_body_is_relayed_and_the_connection_closed() {
    let up = answering(
            "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: 20\r\n\r\n{\"detail\":\"no auth\"}",
            false,
    )
    .await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    // The body is still on its way when the answer comes (its first part,
    // larger than what the gateway reads ahead, has gone upstream); the raw
    // upstream reads only the head (no Content-Length: the body is chunked).
    let (tx, body) = channel_body();
    tx.send(Bytes::from(vec![b'x'; 80 * 1024])).await.unwrap();
    let res = send(
        gw.addr,
        request("POST", gw.addr, "/api/main/x").body(body).unwrap(),
    )
    .await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.json().await["detail"], "no auth");
    drop(tx);
    let res = get(gw.addr, "/api/main/x", &[]).await;
    assert_eq!(res.status(), 401);
    assert_eq!(
        up.connections(),
        2,
        "a connection with an unfinished request body is not reused"
    );
}

#[tokio::test]
async fn streamed_request_bodies_are_framed_for_the_upstream() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    // Small enough to be read ahead whole: sent with its exact length.
    let (tx, body) = channel_body();
    let sending = tokio::spawn(async move {
        for piece in ["{\"prompt\":", "\"hi\",", "\"context\":{}}"] {
            tx.send(Bytes::from(piece)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let res = send(
        gw.addr,
        request("POST", gw.addr, "/api/main/x").body(body).unwrap(),
    )
    .await;
    sending.await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = up.requests();
    assert_eq!(&seen[0].body[..], br#"{"prompt":"hi","context":{}}"#);
    assert_eq!(seen[0].headers["content-length"], "28");
    assert!(!seen[0].headers.contains_key("transfer-encoding"));

    // Larger than the read-ahead and of unknown length: chunked.
    let (tx, body) = channel_body();
    let sending = tokio::spawn(async move {
        for piece in [vec![b'a'; 50_000], vec![b'b'; 50_000], vec![b'c'; 10]] {
            tx.send(Bytes::from(piece)).await.unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    let res = send(
        gw.addr,
        request("POST", gw.addr, "/api/main/x").body(body).unwrap(),
    )
    .await;
    sending.await.unwrap();
    assert_eq!(res.status(), 200);
    let seen = up.requests();
    assert_eq!(seen[1].body.len(), 100_010);
    assert_eq!(seen[1].headers["transfer-encoding"], "chunked");
    assert!(!seen[1].headers.contains_key("content-length"));
}

#[tokio::test]
async fn a_client_that_sends_no_body_holds_no_upstream_connection_and_gets_408() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(
        &up.uri(),
        &[("GATEWAY_BODY_READ_TIMEOUT_SECS", "1")],
    ))
    .await;
    let (tx, body) = channel_body();
    let started = std::time::Instant::now();
    let waiting = tokio::spawn(send(
        gw.addr,
        request("POST", gw.addr, "/api/main/x")
            .header("content-length", "100")
            .body(body)
            .unwrap(),
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(up.requests().is_empty() && up.closed.lock().unwrap().is_empty());
    let res = waiting.await.unwrap();
    drop(tx);
    assert_eq!(res.status(), 408);
    assert!(started.elapsed() >= Duration::from_millis(900));
    assert_eq!(res.header("connection").as_deref(), Some("close"));
    assert_eq!(res.json().await["errorCode"], "E1001");
    assert!(up.requests().is_empty(), "nothing reached the upstream");
}

#[tokio::test]
async fn a_flood_of_interim_responses_is_502_and_a_few_are_skipped() {
    let few = "HTTP/1.1 100 Continue\r\n\r\n".repeat(3);
    let up = answering(
        format!("{few}HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        false,
    )
    .await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let res = get(gw.addr, "/api/main/x", &[]).await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.text().await, "ok");

    let flood = "HTTP/1.1 100 Continue\r\n\r\n".repeat(10_000);
    let up = answering(
        format!("{flood}HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok"),
        false,
    )
    .await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let res = get(gw.addr, "/api/main/x", &[]).await;
    assert_eq!(res.status(), 502);
    assert_eq!(res.json().await["errorCode"], "E5000");
}
