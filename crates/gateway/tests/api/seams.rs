//! One client must not starve the others: a body that starts fast and
//! then trickles, a client that stops reading a large answer, one route's
//! clients taking a shared pool, clients behind a trusted proxy sharing
//! its address.

use std::time::Duration;

use bytes::Bytes;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

#[tokio::test]
async fn a_body_that_starts_fast_then_trickles_is_cut_off_and_frees_its_connection() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let (tx, body) = channel_body();
    let started = std::time::Instant::now();
    let waiting = tokio::spawn(send(
        gw.addr,
        request("POST", gw.addr, "/api/auth/login")
            .header("content-length", "1000000")
            .body(body)
            .unwrap(),
    ));
    tx.send(Bytes::from(vec![b' '; 65 * 1024])).await.unwrap();
    let trickle = tokio::spawn(async move {
        while tx.send(Bytes::from_static(b"          ")).await.is_ok() {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let res = tokio::time::timeout(Duration::from_secs(10), waiting)
        .await
        .expect("cut off long before the 60 s body timeout")
        .unwrap();
    trickle.abort();
    assert_eq!(res.status(), 408);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(res.json().await["errorCode"], "E1001");
    assert!(
        eventually(Duration::from_secs(2), || !up
            .closed
            .lock()
            .unwrap()
            .is_empty())
        .await,
        "the upstream connection it held is closed"
    );
}

#[tokio::test]
async fn a_body_that_keeps_the_pace_goes_through() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let (tx, body) = channel_body();
    let total = 65 * 1024 + 20 * 8 * 1024;
    let waiting = tokio::spawn(send(
        gw.addr,
        request("POST", gw.addr, "/api/main/x")
            .header("content-length", total.to_string())
            .body(body)
            .unwrap(),
    ));
    tx.send(Bytes::from(vec![b'a'; 65 * 1024])).await.unwrap();
    for _ in 0..20 {
        // 8 KiB every 100 ms: 80 KiB/s, above the 32 KiB/s floor.
        tokio::time::sleep(Duration::from_millis(100)).await;
        tx.send(Bytes::from(vec![b'b'; 8 * 1024])).await.unwrap();
    }
    let res = waiting.await.unwrap();
    assert_eq!(res.status(), 200);
    assert_eq!(up.requests()[0].body.len(), total);
}

#[tokio::test]
async fn a_client_that_stops_reading_is_cut_off_and_its_upstream_connection_freed() {
    let big = Bytes::from(vec![b'x'; 8 * 1024 * 1024]);
    let up = upstream(move |_| {
        let big = big.clone();
        async move {
            http::Response::builder()
                .header("content-type", "application/json")
                .body(full(big))
                .unwrap()
        }
    })
    .await;
    let gw = spawn_gateway(config(
        &up.uri(),
        &[
            ("GATEWAY_WRITE_IDLE_TIMEOUT_SECS", "1"),
            ("GATEWAY_POOL_MAX_CONNECTIONS", "1"),
        ],
    ))
    .await;
    // Asks for the large answer and never reads it.
    let mut stalled = tokio::net::TcpStream::connect(gw.addr).await.unwrap();
    stalled
        .write_all(b"GET /api/main/tasks HTTP/1.1\r\nHost: gw\r\n\r\n")
        .await
        .unwrap();
    assert!(
        eventually(Duration::from_secs(5), || !up
            .closed
            .lock()
            .unwrap()
            .is_empty())
        .await,
        "the upstream connection is released"
    );
    // The client's connection is closed: reading drains what was buffered, then ends.
    let mut buf = vec![0u8; 1 << 20];
    let drained = tokio::time::timeout(Duration::from_secs(5), async {
        let mut total = 0usize;
        loop {
            match stalled.read(&mut buf).await {
                Ok(0) | Err(_) => return total,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("the connection was closed");
    assert!(drained < 8 * 1024 * 1024, "it never got the whole answer");
    // The pool of one has room again for someone else.
    let res = tokio::time::timeout(Duration::from_secs(5), get(gw.addr, "/api/main/x", &[]))
        .await
        .expect("not starved");
    assert_eq!(res.status(), 200);
}

#[tokio::test]
async fn one_routes_clients_cannot_take_the_whole_pool_other_routes_share() {
    let (up, mut feeds) = feeding_upstream(Some("application/json")).await;
    let gw = spawn_gateway(config(
        &up.uri(),
        &[
            ("GATEWAY_POOL_MAX_CONNECTIONS", "4"),
            ("GATEWAY_ROUTE_MAX_POOL_PERCENT", "50"),
        ],
    ))
    .await;
    let (mut held, mut fed) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        held.push(get(gw.addr, "/api/auth/login", &[]).await);
        fed.push(feeds.recv().await.unwrap());
    }
    let third = get(gw.addr, "/api/auth/login", &[]).await;
    assert_eq!(third.status(), 503);
    assert_eq!(third.header("retry-after").as_deref(), Some("1"));
    assert_eq!(third.json().await["errorCode"], "E5000");
    // Approvals and tasks still get through.
    let main = get(gw.addr, "/api/main/agent/tasks", &[]).await;
    assert_eq!(main.status(), 200);
    let hitl = get(
        gw.addr,
        "/api/aura/hitl/requests/x",
        &[("x-tenant-id", "1"), ("x-user-id", "u")],
    )
    .await;
    assert_eq!(hitl.status(), 200);
}

#[tokio::test]
async fn behind_a_trusted_proxy_the_address_cap_counts_the_address_it_appended() {
    let (up, mut feeds) = feeding_upstream(Some("application/json")).await;
    let gw = spawn_gateway(config(
        &up.uri(),
        &[
            ("GATEWAY_FORWARDED_HOPS", "1"),
            ("GATEWAY_MAX_REQUESTS_PER_CLIENT", "1"),
        ],
    ))
    .await;
    // Every client comes from the proxy's address (here 127.0.0.1).
    let a = get(
        gw.addr,
        "/api/main/x",
        &[("x-forwarded-for", "203.0.113.1")],
    )
    .await;
    let _fa = feeds.recv().await.unwrap();
    let b = get(
        gw.addr,
        "/api/main/x",
        &[("x-forwarded-for", "198.51.100.7, 203.0.113.2")],
    )
    .await;
    let _fb = feeds.recv().await.unwrap();
    assert_eq!((a.status(), b.status()), (200, 200), "two clients, not one");
    // A client forging an earlier entry is still the address the proxy appended.
    let again = get(
        gw.addr,
        "/api/main/x",
        &[("x-forwarded-for", "10.9.9.9, 203.0.113.1")],
    )
    .await;
    assert_eq!(again.status(), 429);
    assert!(
        again.json().await["message"]
            .as_str()
            .unwrap()
            .contains("address")
    );
}
