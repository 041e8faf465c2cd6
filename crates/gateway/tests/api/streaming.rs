//! SSE relay: no buffering, SSE headers, heartbeats between events only,
//! idle timeout, client disconnects, request bodies streamed byte-identical.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http::Response;
use tokio::sync::oneshot;

use crate::helpers::*;

const SECS: Duration = Duration::from_secs(5);

fn stream_request(addr: std::net::SocketAddr) -> http::Request<TestBody> {
    request("POST", addr, "/api/aura/test/stream")
        .header("x-tenant-id", "tenant1")
        .header("content-type", "application/json")
        .body(full(r#"{"prompt":"hi","context":{}}"#))
        .unwrap()
}

#[tokio::test]
async fn each_event_reaches_the_client_before_the_upstream_sends_the_next() {
    let (up, mut feeds) = feeding_upstream(Some("text/event-stream")).await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let mut res = send(gw.addr, stream_request(gw.addr)).await;
    let feed = feeds.recv().await.unwrap();

    let events = [
        "id: 1\nevent: start\ndata: {\"type\": \"start\", \"message\": \"Agent started\", \"timestamp\": 1795309470}\n\n",
        "id: 2\nevent: thought\ndata: {\"type\": \"thought\", \"data\": {\"content\": \"...\"}}\n\n",
        "data: [DONE]\n\n",
    ];
    for event in events {
        feed.send(Bytes::from(event)).await.unwrap();
        // The next event is only sent once this one has arrived in full.
        let mut got = Vec::new();
        while got.len() < event.len() {
            got.extend_from_slice(&res.chunk(SECS).await.expect("stream ended early"));
        }
        assert_eq!(String::from_utf8(got).unwrap(), event, "arrived unchanged");
    }
    drop(feed);
    assert!(
        res.chunk(SECS).await.is_none(),
        "the stream ends when the upstream ends"
    );
}

#[tokio::test]
async fn stream_responses_get_sse_headers_when_the_upstream_sets_none() {
    let (up, mut feeds) = feeding_upstream(None).await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let res = send(gw.addr, stream_request(gw.addr)).await;
    drop(feeds.recv().await);
    assert_eq!(
        res.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    assert_eq!(res.header("cache-control").as_deref(), Some("no-cache"));
    assert_eq!(res.header("x-accel-buffering").as_deref(), Some("no"));
}

#[tokio::test]
async fn an_upstream_json_error_on_a_stream_request_stays_json() {
    let up = upstream(|_| async {
        Response::builder()
            .status(422)
            .header("content-type", "application/json")
            .body(full(r#"{"detail":"prompt is required"}"#))
            .unwrap()
    })
    .await;
    let gw = spawn_gateway(config(&up.uri(), &[("GATEWAY_SSE_HEARTBEAT_SECS", "1")])).await;
    let res = send(gw.addr, stream_request(gw.addr)).await;
    assert_eq!(res.status(), 422);
    assert_eq!(
        res.header("content-type").as_deref(),
        Some("application/json")
    );
    assert_eq!(res.text().await, r#"{"detail":"prompt is required"}"#);
}

#[tokio::test]
async fn heartbeats_fill_silence_between_events_and_never_split_one() {
    let (up, mut feeds) = feeding_upstream(Some("text/event-stream")).await;
    let gw = spawn_gateway(config(&up.uri(), &[("GATEWAY_SSE_HEARTBEAT_SECS", "1")])).await;
    let mut res = send(gw.addr, stream_request(gw.addr)).await;
    let feed = feeds.recv().await.unwrap();

    feed.send(Bytes::from("id: 1\nevent: start\ndata: {}\n\n"))
        .await
        .unwrap();
    assert_eq!(
        res.chunk(SECS).await.unwrap(),
        "id: 1\nevent: start\ndata: {}\n\n"
    );
    // Silence between events: heartbeats come.
    assert_eq!(res.chunk(SECS).await.unwrap(), ": keep-alive\n\n");

    // Half an event, then 2.5 s of silence: no heartbeat may land inside it.
    feed.send(Bytes::from("id: 2\nevent: hitl\nda"))
        .await
        .unwrap();
    let mut relayed = Vec::new();
    relayed.extend_from_slice(&res.chunk(SECS).await.unwrap());
    tokio::time::sleep(Duration::from_millis(2500)).await;
    feed.send(Bytes::from("ta: {\"x\": 1}\n\n")).await.unwrap();
    while !relayed.ends_with(b"\n\n") {
        relayed.extend_from_slice(&res.chunk(SECS).await.unwrap());
    }
    assert_eq!(
        String::from_utf8(relayed).unwrap(),
        "id: 2\nevent: hitl\ndata: {\"x\": 1}\n\n"
    );

    let metrics = get(gw.admin, "/metrics", &[]).await.text().await;
    assert!(
        metrics.contains("gateway_sse_heartbeats_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn heartbeat_zero_turns_heartbeats_off() {
    let (up, mut feeds) = feeding_upstream(Some("text/event-stream")).await;
    let gw = spawn_gateway(config(&up.uri(), &[("GATEWAY_SSE_HEARTBEAT_SECS", "0")])).await;
    let mut res = send(gw.addr, stream_request(gw.addr)).await;
    let feed = feeds.recv().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await;
    feed.send(Bytes::from("data: x\n\n")).await.unwrap();
    assert_eq!(
        res.chunk(SECS).await.unwrap(),
        "data: x\n\n",
        "nothing came before the event"
    );
}

#[tokio::test]
async fn a_silent_stream_is_ended_cleanly_at_the_idle_timeout() {
    let (up, mut feeds) = feeding_upstream(Some("text/event-stream")).await;
    let gw = spawn_gateway(config(
        &up.uri(),
        &[
            ("GATEWAY_STREAM_IDLE_TIMEOUT_SECS", "1"),
            ("GATEWAY_SSE_HEARTBEAT_SECS", "0"),
        ],
    ))
    .await;
    let mut res = send(gw.addr, stream_request(gw.addr)).await;
    let feed = feeds.recv().await.unwrap();
    feed.send(Bytes::from("data: a\n\n")).await.unwrap();
    assert_eq!(res.chunk(SECS).await.unwrap(), "data: a\n\n");
    let started = std::time::Instant::now();
    assert!(res.chunk(SECS).await.is_none(), "ended without an error");
    assert!(started.elapsed() >= Duration::from_millis(900));
    tokio::time::timeout(SECS, feed.closed())
        .await
        .expect("upstream released");
}

#[tokio::test]
async fn a_client_that_leaves_mid_stream_makes_the_upstream_see_its_connection_closed() {
    let (up, mut feeds) = feeding_upstream(Some("text/event-stream")).await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let mut res = send(gw.addr, stream_request(gw.addr)).await;
    let feed = feeds.recv().await.unwrap();
    feed.send(Bytes::from("data: a\n\n")).await.unwrap();
    res.chunk(SECS).await.unwrap();

    drop(res); // the browser tab closes
    let started = std::time::Instant::now();
    tokio::time::timeout(Duration::from_secs(1), feed.closed())
        .await
        .expect("upstream stream cancelled within one second");
    assert!(
        eventually(Duration::from_secs(1), || up.closed.lock().unwrap().len()
            == 1)
        .await
    );
    assert!(started.elapsed() < Duration::from_secs(1));

    let metrics = get(gw.admin, "/metrics", &[]).await.text().await;
    assert!(metrics.contains("gateway_open_streams 0"), "{metrics}");
    assert!(
        metrics.contains("gateway_client_disconnects_total 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_client_that_leaves_before_the_response_starts_cancels_the_upstream_request() {
    let (dropped_tx, dropped_rx) = oneshot::channel::<()>();
    let dropped_tx = Arc::new(Mutex::new(Some(dropped_tx)));
    let up = upstream(move |_| {
        let guard = DropSignal(dropped_tx.lock().unwrap().take());
        async move {
            let _guard = guard;
            std::future::pending::<()>().await;
            unreachable!()
        }
    })
    .await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let stream = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    let conn = tokio::spawn(conn);
    let pending = tokio::spawn(async move { sender.send_request(stream_request(gw.addr)).await });
    assert!(
        eventually(SECS, || up.requests().len() == 1).await,
        "request reached the upstream"
    );
    pending.abort();
    conn.abort();
    tokio::time::timeout(Duration::from_secs(1), dropped_rx)
        .await
        .expect("upstream request cancelled within one second")
        .ok();
}

struct DropSignal(Option<oneshot::Sender<()>>);
impl Drop for DropSignal {
    fn drop(&mut self) {
        if let Some(tx) = self.0.take() {
            let _ = tx.send(());
        }
    }
}

#[tokio::test]
async fn a_one_mib_request_body_arrives_byte_identical_with_and_without_content_length() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let body: Vec<u8> = (0..1024 * 1024).map(|i| (i * 31 % 251) as u8).collect();

    let res = send(
        gw.addr,
        request("POST", gw.addr, "/api/main/upload")
            .body(full(body.clone()))
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);

    let (tx, chunked) = channel_body();
    let chunks: Vec<Bytes> = body.chunks(64 * 1024).map(Bytes::copy_from_slice).collect();
    tokio::spawn(async move {
        for c in chunks {
            tx.send(c).await.unwrap();
        }
    });
    let res = send(
        gw.addr,
        request("POST", gw.addr, "/api/main/upload")
            .body(chunked)
            .unwrap(),
    )
    .await;
    assert_eq!(res.status(), 200);

    let seen = up.requests();
    assert_eq!(seen.len(), 2);
    for s in seen {
        assert_eq!(s.body.len(), body.len());
        assert!(s.body == body, "body arrived byte-identical");
    }
}
