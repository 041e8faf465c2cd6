//! Resumable streams: a run outlives its client, is resumed on another
//! gateway from its journal, followed by two clients, stopped from anywhere.

use std::time::Duration;

use bytes::Bytes;
use tokio::sync::mpsc;

use crate::helpers::*;

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

const WAIT: Duration = Duration::from_secs(5);

/// Two gateways on one Redis in front of one fed agent.
async fn two_gateways() -> (
    Upstream,
    mpsc::Receiver<mpsc::Sender<Bytes>>,
    TestGateway,
    TestGateway,
) {
    let (up, feeds) = feeding_upstream(Some("text/event-stream")).await;
    let settings = [
        ("GATEWAY_RECORDER_ENABLED", "true"),
        ("REDIS_URL", &redis_url()[..]),
        ("GATEWAY_STREAM_DETACH_SECS", "30"),
    ];
    let gw1 = spawn_gateway(config(&up.uri(), &settings)).await;
    let gw2 = spawn_gateway(config(&up.uri(), &settings)).await;
    (up, feeds, gw1, gw2)
}

fn stream_request(
    gw: &TestGateway,
    user: &str,
    headers: &[(&str, &str)],
) -> http::Request<TestBody> {
    let mut req = request("POST", gw.addr, "/api/aura/test/stream")
        .header("x-tenant-id", "tenant1")
        .header("x-user-id", user);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.body(full(r#"{"prompt":"merge it"}"#)).unwrap()
}

/// `GET /api/streams/{task}` as `user` of tenant1, after `last`.
async fn follow_as(gw: &TestGateway, task: &str, user: &str, last: Option<&str>) -> Sent {
    let mut headers = vec![("x-tenant-id", "tenant1"), ("x-user-id", user)];
    if let Some(last) = last {
        headers.push(("last-event-id", last));
    }
    get(gw.addr, &format!("/api/streams/{task}"), &headers).await
}

/// `POST /api/streams/{task}/stop` as `user` of tenant1: the status.
async fn stop_as(gw: &TestGateway, task: &str, user: &str) -> u16 {
    let stop = request("POST", gw.addr, &format!("/api/streams/{task}/stop"))
        .header("x-tenant-id", "tenant1")
        .header("x-user-id", user)
        .body(full(""))
        .unwrap();
    send(gw.addr, stop).await.status()
}

/// The agent sends `text`.
async fn say(feed: &mpsc::Sender<Bytes>, text: &'static str) {
    feed.send(Bytes::from_static(text.as_bytes()))
        .await
        .unwrap();
}

/// Reads until `want` bytes have arrived (or the stream ends).
async fn read_until(res: &mut Sent, want: &str) -> String {
    let mut got = Vec::new();
    while !String::from_utf8_lossy(&got).contains(want) {
        match res.chunk(WAIT).await {
            Some(chunk) => got.extend_from_slice(&chunk),
            None => break,
        }
    }
    String::from_utf8(got).unwrap()
}

async fn read_to_end(res: &mut Sent) -> String {
    let mut got = Vec::new();
    while let Some(chunk) = res.chunk(WAIT).await {
        got.extend_from_slice(&chunk);
    }
    String::from_utf8(got).unwrap()
}

async fn started(
    gw: &TestGateway,
    feeds: &mut mpsc::Receiver<mpsc::Sender<Bytes>>,
) -> (Sent, String, mpsc::Sender<Bytes>) {
    let res = send(
        gw.addr,
        stream_request(gw, "alice", &[("x-dwp-resumable", "true")]),
    )
    .await;
    assert_eq!(res.status(), 200);
    assert_eq!(res.header("x-dwp-resumable").as_deref(), Some("true"));
    let task = res.header("x-dwp-task-id").expect("a task id");
    let feed = feeds.recv().await.unwrap();
    (res, task, feed)
}

#[tokio::test]
async fn a_dropped_resumable_stream_is_resumed_on_another_gateway_without_calling_the_agent_again()
{
    let (up, mut feeds, gw1, gw2) = two_gateways().await;
    let (mut first, task, feed) = started(&gw1, &mut feeds).await;
    say(&feed, "id: 1\nevent: start\ndata: {\"type\":\"start\"}\n\n").await;
    say(&feed, "event: thought\ndata: {\"type\":\"thought\"}\n\n").await;
    let seen = read_until(&mut first, "thought\"}\n\n").await;
    assert_eq!(
        seen,
        "id: 1\nevent: start\ndata: {\"type\":\"start\"}\n\nid: g2\nevent: thought\ndata: {\"type\":\"thought\"}\n\n",
        "an event without an id gets the gateway's"
    );
    drop(first); // the laptop lid closes
    tokio::time::sleep(Duration::from_millis(300)).await;
    // The run goes on: the agent's stream is still open and read.
    say(&feed, "id: 8\nevent: hitl\ndata: {\"type\":\"hitl\"}\n\n").await;
    say(&feed, ": a comment\n\n").await;

    // Another user cannot follow it; the owner can, on the other gateway.
    let stranger = follow_as(&gw2, &task, "mallory", None).await;
    assert_eq!(stranger.status(), 404);
    let namesake = get(
        gw2.addr,
        &format!("/api/streams/{task}"),
        &[("x-tenant-id", "tenant2"), ("x-user-id", "alice")],
    )
    .await;
    assert_eq!(
        namesake.status(),
        404,
        "the same name in another tenant is another user"
    );

    let mut resumed = follow_as(&gw2, &task, "alice", Some("g2")).await;
    assert_eq!(resumed.status(), 200);
    assert_eq!(
        resumed.header("content-type").as_deref(),
        Some("text/event-stream")
    );
    let missed = read_until(&mut resumed, ": a comment\n\n").await;
    assert_eq!(
        missed, "id: 8\nevent: hitl\ndata: {\"type\":\"hitl\"}\n\n: a comment\n\n",
        "exactly the missed blocks"
    );

    // A second device joins with the POST form, from the start.
    let mut second = send(
        gw1.addr,
        stream_request(&gw1, "alice", &[("x-dwp-task-id", &task)]),
    )
    .await;
    assert_eq!(second.status(), 200);
    let all = read_until(&mut second, ": a comment\n\n").await;
    assert!(all.starts_with("id: 1\nevent: start"), "{all}");

    // Live events reach both, then the end closes both.
    say(&feed, "id: 14\nevent: end\ndata: {\"type\":\"end\"}\n\n").await;
    say(&feed, "data: [DONE]\n\n").await;
    drop(feed);
    let rest = "id: 14\nevent: end\ndata: {\"type\":\"end\"}\n\nid: g6\ndata: [DONE]\n\n";
    assert_eq!(
        read_to_end(&mut resumed)
            .await
            .replace(": keep-alive\n\n", ""),
        rest
    );
    assert!(read_to_end(&mut second).await.ends_with(rest));
    assert_eq!(up.requests().len(), 1, "the agent was called once");

    // After the end a resume replays to the end and closes.
    let mut late = follow_as(&gw1, &task, "alice", Some("8")).await;
    assert_eq!(
        read_to_end(&mut late).await,
        format!(": a comment\n\n{rest}")
    );
    let unknown = follow_as(&gw1, &task, "alice", Some("nope")).await;
    assert_eq!(unknown.status(), 400);
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn a_stop_on_another_gateway_cancels_the_agent_and_ends_every_follower() {
    let (up, mut feeds, gw1, gw2) = two_gateways().await;
    let (mut first, task, feed) = started(&gw1, &mut feeds).await;
    say(&feed, "id: 1\nevent: start\ndata: {}\n\n").await;
    read_until(&mut first, "data: {}\n\n").await;
    let mut follower = follow_as(&gw2, &task, "alice", Some("1")).await;
    assert_eq!(follower.status(), 200);

    assert_eq!(
        stop_as(&gw2, &task, "mallory").await,
        404,
        "only the owner stops it"
    );
    let stopped = std::time::Instant::now();
    assert_eq!(stop_as(&gw2, &task, "alice").await, 202);
    tokio::time::timeout(Duration::from_secs(1), feed.closed())
        .await
        .expect("the agent's stream is closed within a second");
    assert!(stopped.elapsed() < Duration::from_secs(1));
    let cancelled = "event: error\ndata: {\"type\":\"error\",\"error\":\"Stopped by the user\",\"errorType\":\"Cancelled\"}\n\nid: g3\ndata: [DONE]\n\n";
    let tail = read_to_end(&mut follower).await;
    assert!(
        tail.ends_with(cancelled) && tail.starts_with("id: g2\n"),
        "{tail}"
    );
    assert!(read_to_end(&mut first).await.ends_with(cancelled));
    assert_eq!(stop_as(&gw1, &task, "alice").await, 409, "already ended");
    assert_eq!(up.requests().len(), 1);
}

#[tokio::test]
async fn without_the_opt_in_the_client_leaving_still_cancels_the_agent() {
    let (_up, mut feeds, gw1, _gw2) = two_gateways().await;
    let res = send(gw1.addr, stream_request(&gw1, "alice", &[])).await;
    assert_eq!(res.status(), 200);
    assert!(res.header("x-dwp-resumable").is_none());
    let task = res.header("x-dwp-task-id").unwrap();
    let feed = feeds.recv().await.unwrap();
    drop(res);
    tokio::time::timeout(Duration::from_secs(1), feed.closed())
        .await
        .expect("the upstream is cancelled within a second");
    let resume = follow_as(&gw1, &task, "alice", None).await;
    assert_eq!(
        resume.status(),
        404,
        "a stream that was not resumable cannot be resumed"
    );
}

#[tokio::test]
async fn a_gateway_that_stops_ends_its_runs_and_their_followers_elsewhere_hear_why() {
    let (up, mut feeds) = feeding_upstream(Some("text/event-stream")).await;
    let settings = [
        ("GATEWAY_RECORDER_ENABLED", "true"),
        ("REDIS_URL", &redis_url()[..]),
        ("GATEWAY_SHUTDOWN_GRACE_SECS", "1"),
    ];
    let mut gw1 = spawn_gateway(config(&up.uri(), &settings)).await;
    let gw2 = spawn_gateway(config(&up.uri(), &settings)).await;
    let (mut first, task, feed) = started(&gw1, &mut feeds).await;
    say(&feed, "id: 1\nevent: start\ndata: {}\n\n").await;
    read_until(&mut first, "data: {}\n\n").await;
    let mut follower = follow_as(&gw2, &task, "alice", Some("1")).await;
    assert_eq!(follower.status(), 200);
    drop(first);
    tokio::time::timeout(Duration::from_secs(10), gw1.shutdown())
        .await
        .expect("the gateway stops")
        .unwrap()
        .unwrap();
    tokio::time::timeout(Duration::from_secs(1), feed.closed())
        .await
        .expect("the agent's stream is closed");
    let tail = read_to_end(&mut follower).await;
    assert!(
        tail.contains("\"errorType\":\"GatewayStopped\"") && tail.ends_with("data: [DONE]\n\n"),
        "{tail}"
    );
    drop(up);
}

#[tokio::test]
async fn odd_stream_calls_get_clear_answers_and_never_reach_the_agent() {
    let (up, _feeds) = feeding_upstream(Some("text/event-stream")).await;
    let gw = spawn_gateway(config(
        &up.uri(),
        &[
            ("GATEWAY_RECORDER_ENABLED", "true"),
            ("REDIS_URL", &redis_url()[..]),
            ("JWT_SECRET", SECRET),
        ],
    ))
    .await;
    let auth = format!("Bearer {}", token("alice", "tenant1", 60));
    let with_token = [("authorization", auth.as_str())];
    // No token: 401, as on every checked route.
    assert_eq!(get(gw.addr, "/api/streams/abc", &[]).await.status(), 401);
    for path in [
        "/api/streams/a%20b",
        "/api/streams/abc/resume",
        "/api/streams/abc/stop",
        "/api/streams/",
        &format!("/api/streams/{}", "x".repeat(65)),
    ] {
        assert_eq!(
            get(gw.addr, path, &with_token).await.status(),
            404,
            "{path}"
        );
    }
    assert_eq!(
        get(gw.addr, "/api/streams/no-such-task", &with_token)
            .await
            .status(),
        404
    );
    let again = |task: &'static str| {
        request("POST", gw.addr, "/api/aura/test/stream")
            .header("x-tenant-id", "tenant1")
            .header("authorization", auth.as_str())
            .header("accept", "text/event-stream")
            .header("x-dwp-task-id", task)
            .body(full(r#"{"prompt":"merge it"}"#))
            .unwrap()
    };
    assert_eq!(send(gw.addr, again("../etc")).await.status(), 400);
    assert_eq!(send(gw.addr, again("no-such-task")).await.status(), 404);
    assert!(up.requests().is_empty(), "the agent was never called");
}
