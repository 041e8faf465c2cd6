//! One client must not starve the others, through the real binaries:
//! anonymous logins that send a fast start and trickle the rest, and
//! readers that never read a large task list, against a small pool.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed unwrap is a failed test, and a scenario reads top to bottom"
)]

use std::time::{Duration, Instant};

use e2e::*;
use serde_json::json;
use tokio::io::AsyncWriteExt;

#[tokio::test]
async fn slow_login_bodies_never_hold_the_pool_approvals_need() {
    let stack = Stack::start(Options {
        users: &["alice"],
        gateway_env: &[("GATEWAY_POOL_MAX_CONNECTIONS", "8")],
        ..Options::default()
    })
    .await;
    let alice = stack.user("alice");
    let token = stack.login(&alice).await;
    // Twenty anonymous logins announce a megabyte, send 65 KiB at once and
    // trickle the rest.
    let mut slow = Vec::new();
    for _ in 0..20 {
        let mut conn = tokio::net::TcpStream::connect(stack.gateway).await.unwrap();
        conn.write_all(
            b"POST /api/auth/login HTTP/1.1\r\nHost: gw\r\nContent-Type: application/json\r\nContent-Length: 1000000\r\n\r\n",
        )
        .await
        .unwrap();
        conn.write_all(&vec![b' '; 65 * 1024]).await.unwrap();
        slow.push(conn);
    }
    let trickle = tokio::spawn(async move {
        for _ in 0..100 {
            for conn in &mut slow {
                let _ = conn.write_all(b" ").await;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    // Meanwhile a user's task list and approvals go through at once.
    let started = Instant::now();
    for _ in 0..5 {
        let (status, reply) = stack
            .as_user(&token, &alice, "GET", "/api/main/agent/tasks", "")
            .await;
        assert_eq!(status, 200, "{reply}");
        let (status, reply) = stack.approve(&token, &alice, "req_000000000000").await;
        assert_eq!(status, 404, "answered, not starved: {reply}");
    }
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
    trickle.abort();
}

#[tokio::test]
async fn readers_that_stop_reading_a_large_task_list_are_cut_off_and_free_the_pool() {
    let stack = Stack::start(Options {
        users: &["bob"],
        gateway_env: &[
            ("GATEWAY_POOL_MAX_CONNECTIONS", "4"),
            ("GATEWAY_ROUTE_MAX_POOL_PERCENT", "100"),
            ("GATEWAY_WRITE_IDLE_TIMEOUT_SECS", "2"),
            ("GATEWAY_CONNECT_TIMEOUT_SECS", "3"),
        ],
        ..Options::default()
    })
    .await;
    let bob = stack.user("bob");
    let token = stack.login(&bob).await;
    // A page of 100 tasks of about 36 KiB each: 3.6 MiB of JSON, more than
    // the sockets on the way hold.
    let body = json!({
        "taskType": "report",
        "description": "d".repeat(4000),
        "inputData": {"text": "i".repeat(16_000)},
    })
    .to_string();
    let result = json!({"resultData": {"text": "r".repeat(16_000)}}).to_string();
    for _ in 0..100 {
        let (status, reply) = stack
            .as_user(&token, &bob, "POST", "/api/main/agent/tasks", &body)
            .await;
        assert_eq!(status, 201, "{reply}");
        let task = reply["data"]["taskId"].as_str().unwrap().to_owned();
        for (step, body) in [("start", "{}"), ("complete", result.as_str())] {
            let path = format!("/api/main/agent/tasks/{task}/{step}");
            let (status, reply) = stack.as_user(&token, &bob, "POST", &path, body).await;
            assert_eq!(status, 200, "{reply}");
        }
    }
    // Four readers ask for the page and never read it, with a small window.
    let request = format!(
        "GET /api/main/agent/tasks?size=100 HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer {token}\r\nX-Tenant-ID: {}\r\nX-User-ID: {bob}\r\n\r\n",
        stack.tenant
    );
    let mut stalled = Vec::new();
    for _ in 0..4 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut conn = socket.connect(stack.gateway).await.unwrap();
        conn.write_all(request.as_bytes()).await.unwrap();
        stalled.push(conn);
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    // Someone else's calls still get an upstream connection.
    let started = Instant::now();
    let (status, reply) = stack.approve(&token, &bob, "req_000000000000").await;
    assert_eq!(status, 404, "{reply}");
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(stalled);
}
