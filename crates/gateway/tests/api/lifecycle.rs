//! The upstream pool, graceful shutdown, and the routing log line.

use std::time::Duration;

use bytes::Bytes;

use crate::helpers::*;

#[tokio::test]
async fn upstream_connections_are_reused_and_closed_when_idle() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(
        &up.uri(),
        &[("GATEWAY_POOL_IDLE_TIMEOUT_SECS", "1")],
    ))
    .await;
    for _ in 0..3 {
        assert_eq!(get(gw.addr, "/api/main/x", &[]).await.status(), 200);
    }
    let peers: Vec<_> = up.requests().iter().map(|s| s.peer).collect();
    assert!(
        peers.iter().all(|p| *p == peers[0]),
        "one kept-alive connection: {peers:?}"
    );
    assert!(
        eventually(Duration::from_secs(4), || up.closed.lock().unwrap().len()
            == 1)
        .await,
        "the idle pooled connection was closed"
    );
}

#[tokio::test]
async fn the_pool_never_exceeds_its_connection_budget() {
    let (up, mut feeds) = feeding_upstream(Some("text/event-stream")).await;
    let gw = spawn_gateway(config(
        &up.uri(),
        &[
            ("GATEWAY_POOL_MAX_CONNECTIONS", "1"),
            ("GATEWAY_CONNECT_TIMEOUT_SECS", "1"),
        ],
    ))
    .await;
    let stream = |addr| {
        request("GET", addr, "/api/main/stream")
            .header("accept", "text/event-stream")
            .body(full(""))
            .unwrap()
    };
    let first = send(gw.addr, stream(gw.addr)).await;
    let feed = feeds.recv().await.unwrap();
    let second = send(gw.addr, stream(gw.addr)).await;
    assert_eq!(
        second.status(),
        504,
        "no second upstream connection while the first is busy"
    );
    assert_eq!(up.requests().len(), 1);
    drop(feed);
    drop(first);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let third = send(gw.addr, stream(gw.addr)).await;
    assert_eq!(
        third.status(),
        200,
        "the budget is released when a stream ends"
    );
}

#[tokio::test]
async fn shutdown_refuses_new_connections_and_lets_open_streams_finish() {
    let (up, mut feeds) = feeding_upstream(Some("text/event-stream")).await;
    let mut gw = spawn_gateway(config(&up.uri(), &[])).await;
    let addr = gw.addr;
    let req = request("POST", addr, "/api/aura/test/stream")
        .header("x-tenant-id", "t")
        .body(full("{}"))
        .unwrap();
    let mut res = send(addr, req).await;
    let feed = feeds.recv().await.unwrap();
    feed.send(Bytes::from("data: 1\n\n")).await.unwrap();
    assert_eq!(
        res.chunk(Duration::from_secs(5)).await.unwrap(),
        "data: 1\n\n"
    );

    let done = gw.shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "new connections are refused"
    );

    feed.send(Bytes::from("data: [DONE]\n\n")).await.unwrap();
    assert_eq!(
        res.chunk(Duration::from_secs(5)).await.unwrap(),
        "data: [DONE]\n\n"
    );
    drop(feed);
    assert!(res.chunk(Duration::from_secs(5)).await.is_none());
    let result = tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("drained");
    assert!(result.unwrap().is_ok());
}

#[tokio::test]
async fn shutdown_closes_what_is_still_open_after_the_grace_period() {
    let (up, mut feeds) = feeding_upstream(Some("text/event-stream")).await;
    let mut gw = spawn_gateway(config(&up.uri(), &[("GATEWAY_SHUTDOWN_GRACE_SECS", "1")])).await;
    let req = request("POST", gw.addr, "/api/aura/test/stream")
        .header("x-tenant-id", "t")
        .body(full("{}"))
        .unwrap();
    let mut res = send(gw.addr, req).await;
    let feed = feeds.recv().await.unwrap();
    let started = std::time::Instant::now();
    let done = gw.shutdown();
    let result = tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("run returned");
    assert!(result.unwrap().is_ok());
    assert!(
        started.elapsed() >= Duration::from_millis(900),
        "waited for the grace period"
    );
    let ended = tokio::time::timeout(
        Duration::from_secs(2),
        http_body_util::BodyExt::frame(res.response.body_mut()),
    )
    .await;
    assert!(
        matches!(ended, Ok(None) | Ok(Some(Err(_)))),
        "the client's stream was closed"
    );
    tokio::time::timeout(Duration::from_secs(2), feed.closed())
        .await
        .expect("upstream released");
}

#[tokio::test]
async fn several_workers_serve_streams_and_shut_down_together() {
    let (up, mut feeds) = feeding_upstream(Some("text/event-stream")).await;
    let mut gw = spawn_gateway(config(&up.uri(), &[("GATEWAY_WORKER_THREADS", "3")])).await;
    let mut streams = Vec::new();
    for _ in 0..12 {
        let req = request("POST", gw.addr, "/api/aura/test/stream")
            .header("x-tenant-id", "t")
            .body(full("{}"))
            .unwrap();
        streams.push(send(gw.addr, req).await);
    }
    let mut senders = Vec::new();
    for _ in 0..12 {
        senders.push(feeds.recv().await.unwrap());
    }
    for (i, tx) in senders.iter().enumerate() {
        tx.send(Bytes::from(format!("data: {i}\n\n")))
            .await
            .unwrap();
    }
    let mut got = Vec::new();
    for res in &mut streams {
        got.push(
            String::from_utf8(res.chunk(Duration::from_secs(5)).await.unwrap().to_vec()).unwrap(),
        );
    }
    got.sort();
    let mut want: Vec<_> = (0..12).map(|i| format!("data: {i}\n\n")).collect();
    want.sort();
    assert_eq!(got, want, "every stream got its own event");
    let metrics = get(gw.admin, "/metrics", &[]).await.text().await;
    assert!(
        metrics.contains("gateway_open_streams 12"),
        "the gauge is shared by all workers: {metrics}"
    );

    let done = gw.shutdown();
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        tokio::net::TcpStream::connect(gw.addr).await.is_err(),
        "every worker stopped accepting"
    );
    drop(senders);
    for mut res in streams {
        assert!(
            res.chunk(Duration::from_secs(5)).await.is_none(),
            "streams finish during the drain"
        );
    }
    let result = tokio::time::timeout(Duration::from_secs(5), done)
        .await
        .expect("all workers drained");
    assert!(result.unwrap().is_ok());
}
