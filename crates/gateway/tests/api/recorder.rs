//! The stream recorder: agent streams are teed into `dwp:agent-task-events`
//! under a task id, without touching what the client receives.

use std::time::Duration;

use bytes::Bytes;

use crate::helpers::*;

fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

const EVENTS: [&str; 6] = [
    "id: 1\nevent: start\ndata: {\"type\": \"start\", \"message\": \"Agent started\", \"timestamp\": 1795309470}\n\n",
    "id: 4\nevent: plan_step\ndata: {\"type\": \"plan_step\", \"data\": {\"stepId\": \"s1\", \"description\": \"1. look\", \"status\": \"pending\"}}\n\n",
    "id: 5\nevent: plan_step\ndata: {\"type\": \"plan_step\", \"data\": {\"stepId\": \"s2\", \"description\": \"2. merge\", \"status\": \"pending\"}}\n\n",
    "id: 8\nevent: hitl\ndata: {\"type\": \"hitl\", \"data\": {\"requestId\": \"req_142b79eadced\", \"actionType\": \"git_merge\"}}\n\n",
    "id: 14\nevent: end\ndata: {\"type\": \"end\", \"message\": \"Agent finished\", \"timestamp\": 1795309470}\n\n",
    "data: [DONE]\n\n",
];

async fn relay_one_stream(
    gw: &TestGateway,
    feeds: &mut tokio::sync::mpsc::Receiver<tokio::sync::mpsc::Sender<Bytes>>,
) -> (String, String) {
    let req = request("POST", gw.addr, "/api/aura/test/stream")
        .header("x-tenant-id", "tenant1")
        .header("x-user-id", "user123")
        .body(full(r#"{"prompt":"merge it","context":{}}"#))
        .unwrap();
    let mut res = send(gw.addr, req).await;
    let task_id = res
        .header("x-dwp-task-id")
        .expect("the client gets the task id");
    let feed = feeds.recv().await.unwrap();
    let mut received = Vec::new();
    for event in EVENTS {
        // Split every event in two writes: the recorder must not care.
        let (a, b) = event.split_at(event.len() / 2);
        feed.send(Bytes::from(a.to_owned())).await.unwrap();
        feed.send(Bytes::from(b.to_owned())).await.unwrap();
    }
    drop(feed);
    while let Some(chunk) = res.chunk(Duration::from_secs(5)).await {
        received.extend_from_slice(&chunk);
    }
    (task_id, String::from_utf8(received).unwrap())
}

/// An SSE upstream fed by the test, and a gateway in front of it with the
/// recorder writing to `redis_url`.
async fn recording_gateway(
    redis_url: &str,
) -> (
    Upstream,
    tokio::sync::mpsc::Receiver<tokio::sync::mpsc::Sender<bytes::Bytes>>,
    TestGateway,
) {
    let (up, feeds) = feeding_upstream(Some("text/event-stream")).await;
    let gw = spawn_gateway(config(
        &up.uri(),
        &[
            ("GATEWAY_RECORDER_ENABLED", "true"),
            ("REDIS_URL", redis_url),
        ],
    ))
    .await;
    (up, feeds, gw)
}

#[tokio::test]
async fn agent_events_are_recorded_under_the_task_id_and_relayed_unchanged() {
    let (up, mut feeds, gw) = recording_gateway(&redis_url()).await;
    let (task_id, received) = relay_one_stream(&gw, &mut feeds).await;
    assert_eq!(
        received,
        EVENTS.concat(),
        "the client's bytes are untouched"
    );
    assert_eq!(
        up.requests()[0].headers["x-dwp-task-id"],
        task_id.as_str(),
        "the agent gets the same id"
    );

    let mine = recorded(&task_id, EVENTS.len()).await;
    assert_eq!(
        mine.len(),
        EVENTS.len(),
        "every event recorded once: {mine:?}"
    );
    let types: Vec<&str> = mine.iter().map(|f| f["eventType"].as_str()).collect();
    assert_eq!(
        types,
        ["start", "plan_step", "plan_step", "hitl", "end", "message"]
    );
    let ids: Vec<&str> = mine.iter().map(|f| f["eventId"].as_str()).collect();
    assert_eq!(ids, ["1", "4", "5", "8", "14", ""]);
    assert!(mine[1]["data"].contains("\"stepId\": \"s1\""));
    assert_eq!(mine[5]["data"], "[DONE]");
    for fields in &mine {
        assert_eq!(fields["userId"], "user123");
        assert_eq!(fields["tenantId"], "tenant1");
        assert_eq!(fields["path"], "/api/aura/test/stream");
    }
}

/// The entries recorded under `task_id`, once there are `expected` of them
/// (or what there is after 2.5 s).
async fn recorded(
    task_id: &str,
    expected: usize,
) -> Vec<std::collections::HashMap<String, String>> {
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut mine: Vec<std::collections::HashMap<String, String>> = Vec::new();
    for _ in 0..50 {
        let entries: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
            .arg(dwp_core::tasks::EVENTS_STREAM)
            .arg("+")
            .arg("-")
            .arg("COUNT")
            .arg(500)
            .query_async(&mut conn)
            .await
            .unwrap();
        mine = entries
            .ids
            .iter()
            .rev()
            .map(|entry| {
                entry
                    .map
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            redis::from_redis_value::<String>(v.clone()).unwrap(),
                        )
                    })
                    .collect::<std::collections::HashMap<_, _>>()
            })
            .filter(|fields| fields.get("taskId").map(String::as_str) == Some(task_id))
            .collect();
        if mine.len() == expected {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    mine
}

#[tokio::test]
async fn a_stream_that_ends_without_finishing_is_recorded_as_broken() {
    let (_up, mut feeds, gw) = recording_gateway(&redis_url()).await;
    let req = request("POST", gw.addr, "/api/aura/test/stream")
        .header("x-tenant-id", "tenant1")
        .header("x-user-id", "user123")
        .body(full(r#"{"prompt":"merge it","context":{}}"#))
        .unwrap();
    let mut res = send(gw.addr, req).await;
    let task_id = res.header("x-dwp-task-id").unwrap();
    let feed = feeds.recv().await.unwrap();
    feed.send(Bytes::from(EVENTS[0])).await.unwrap();
    assert!(res.chunk(Duration::from_secs(5)).await.is_some());
    // The client leaves mid-run.
    drop(res);
    let mine = recorded(&task_id, 2).await;
    let types: Vec<&str> = mine.iter().map(|f| f["eventType"].as_str()).collect();
    assert_eq!(types, ["start", dwp_core::tasks::EVENT_RELAY_BROKEN]);
    let data: serde_json::Value = serde_json::from_str(&mine[1]["data"]).unwrap();
    assert_eq!(
        data["reason"],
        "The client went away before the agent finished"
    );
    drop(feed);
}

#[tokio::test]
async fn with_redis_down_the_stream_is_unaffected_and_the_drops_are_counted() {
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (_up, mut feeds, gw) = recording_gateway(&format!("redis://{dead}")).await;
    let started = std::time::Instant::now();
    let (_, received) = relay_one_stream(&gw, &mut feeds).await;
    assert_eq!(received, EVENTS.concat());
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "not slowed: {:?}",
        started.elapsed()
    );
    let mut dropped = 0;
    for _ in 0..60 {
        let metrics = get(gw.admin, "/metrics", &[]).await.text().await;
        dropped = metrics
            .lines()
            .find_map(|l| l.strip_prefix("gateway_recorder_dropped_total "))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0);
        if dropped == EVENTS.len() as u64 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        dropped,
        EVENTS.len() as u64,
        "every unwritten event is counted"
    );
}

#[tokio::test]
async fn only_agent_event_streams_get_a_task_id() {
    let (up, mut feeds, gw) = recording_gateway(&redis_url()).await;
    let req = request("GET", gw.addr, "/api/main/stream")
        .header("accept", "text/event-stream")
        .body(full(""))
        .unwrap();
    let res = send(gw.addr, req).await;
    drop(feeds.recv().await);
    assert_eq!(
        res.header("x-dwp-task-id"),
        None,
        "main-service streams are not agent runs"
    );
    assert!(!up.requests()[0].headers.contains_key("x-dwp-task-id"));
}

#[tokio::test]
async fn a_recorded_stream_carries_the_tokens_user_not_a_header() {
    let (up, mut feeds) = feeding_upstream(Some("text/event-stream")).await;
    let gw = spawn_gateway(config(
        &up.uri(),
        &[
            ("GATEWAY_RECORDER_ENABLED", "true"),
            ("REDIS_URL", &redis_url()),
            ("JWT_SECRET", SECRET),
        ],
    ))
    .await;
    // No X-User-ID: the recorder takes the user from the verified token.
    let req = request("POST", gw.addr, "/api/aura/test/stream")
        .header(
            "authorization",
            format!("Bearer {}", token("alice", "tenant7", 600)),
        )
        .header("x-tenant-id", "tenant7")
        .body(full(r#"{"prompt":"hi","context":{}}"#))
        .unwrap();
    let mut res = send(gw.addr, req).await;
    assert_eq!(res.status(), 200);
    let task_id = res.header("x-dwp-task-id").unwrap();
    let feed = feeds.recv().await.unwrap();
    feed.send(Bytes::from(EVENTS[0])).await.unwrap();
    drop(feed);
    while res.chunk(Duration::from_secs(5)).await.is_some() {}
    let mine = recorded(&task_id, 1).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    assert_eq!(mine[0]["userId"], "alice");
    assert_eq!(mine[0]["tenantId"], "tenant7");
}

#[tokio::test]
async fn a_relayed_hitl_event_records_its_streams_owner_under_the_session() {
    let (_up, mut feeds, gw) = recording_gateway(&redis_url()).await;
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let suffix = uuid::Uuid::new_v4().simple().to_string();
    let (request_id, session_id) = (format!("req_{suffix}"), format!("session_user123_{suffix}"));
    // What the agent writes before it sends its `hitl` event.
    let () = redis::cmd("SET")
        .arg(dwp_core::hitl::request_key(&request_id))
        .arg(serde_json::json!({"requestId": request_id, "sessionId": session_id, "userId": "user123", "tenantId": "tenant1", "status": "pending"}).to_string())
        .arg("EX")
        .arg(60)
        .query_async(&mut conn)
        .await
        .unwrap();
    let req = request("POST", gw.addr, "/api/aura/test/stream")
        .header("x-tenant-id", "tenant1")
        .header("x-user-id", "user123")
        .body(full(r#"{"prompt":"merge it","context":{}}"#))
        .unwrap();
    let mut res = send(gw.addr, req).await;
    let feed = feeds.recv().await.unwrap();
    let hitl = format!(
        "id: 8\nevent: hitl\ndata: {{\"type\": \"hitl\", \"data\": {{\"requestId\": \"{request_id}\"}}}}\n\n"
    );
    feed.send(Bytes::from(hitl)).await.unwrap();
    assert!(res.chunk(Duration::from_secs(5)).await.is_some());
    let owners_key = dwp_core::hitl::owners_key(&session_id);
    let mut owners: std::collections::HashMap<String, String> = Default::default();
    for _ in 0..50 {
        owners = redis::cmd("HGETALL")
            .arg(&owners_key)
            .query_async(&mut conn)
            .await
            .unwrap();
        if !owners.is_empty() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        owners,
        std::collections::HashMap::from([(
            dwp_core::hitl::owner_field("tenant1", "user123"),
            request_id.clone()
        )])
    );
    let ttl: i64 = redis::cmd("TTL")
        .arg(&owners_key)
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(ttl > 3000, "lives as long as the session: {ttl}");
    drop(feed);
}
