//! aura-sim against the real Redis: framing, the token check, and the HITL
//! pause with approval, rejection, timeout and many sessions at once.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed unwrap is a failed test, and a scenario reads top to bottom"
)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde_json::{Value, json};

const SECRET: &str = "aura-sim-test-secret-0123456789abcdef";

use testkit::{person, redis_url};

async fn spawn(hitl_timeout_secs: u64) -> SocketAddr {
    spawn_with(hitl_timeout_secs, &[]).await
}

/// [`spawn`] with extra settings (`AURA_SIM_WAIT`, ...).
async fn spawn_with(hitl_timeout_secs: u64, extra: &[(&str, &str)]) -> SocketAddr {
    let mut env = HashMap::from([
        ("JWT_SECRET".to_string(), SECRET.to_string()),
        ("REDIS_URL".to_string(), redis_url()),
        ("AURA_SIM_EVENT_DELAY_MS".to_string(), "5".to_string()),
        (
            "HITL_TIMEOUT_SECS".to_string(),
            hitl_timeout_secs.to_string(),
        ),
    ]);
    env.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    let config = aura_sim::Config::from_env(&env).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(aura_sim::run(listener, config, std::future::pending()));
    addr
}

fn token(user: &str, tenant: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = dwp_core::token::Claims {
        sub: user.into(),
        tenant_id: Some(tenant.into()),
        iat: Some(now),
        exp: now + 600,
    };
    dwp_core::token::issue(&claims, SECRET.as_bytes())
}

/// An open stream: status, and a body read event by event.
struct Stream {
    status: u16,
    body: testkit::SseBody,
}

impl Stream {
    async fn next(&mut self) -> Option<String> {
        self.body.next().await
    }

    async fn rest(&mut self) -> Vec<String> {
        self.body.rest().await
    }
}

async fn open(addr: SocketAddr, headers: &[(&str, &str)], body: Value) -> Stream {
    let mut headers = headers.to_vec();
    headers.push(("content-type", "application/json"));
    let res = testkit::send(
        addr,
        "POST",
        "/aura/test/stream",
        &headers,
        body.to_string(),
    )
    .await
    .expect("aura-sim answers");
    Stream {
        status: res.status().as_u16(),
        body: testkit::SseBody::new(res.into_body()),
    }
}

async fn open_as(addr: SocketAddr, user: &str, prompt: &str) -> Stream {
    let auth = format!("Bearer {}", token(user, "tenant1"));
    open(
        addr,
        &[
            ("authorization", &auth),
            ("x-tenant-id", "tenant1"),
            ("x-user-id", user),
        ],
        json!({"prompt": prompt, "context": {}}),
    )
    .await
}

/// (id, event, data JSON) of a block, checking the framing byte by byte.
fn parse(block: &str) -> (Option<u64>, Option<String>, String) {
    if block == "data: [DONE]\n\n" {
        return (None, None, "[DONE]".into());
    }
    let lines: Vec<&str> = block.trim_end_matches('\n').split('\n').collect();
    assert_eq!(lines.len(), 3, "id, event, data: {block:?}");
    let id = lines[0]
        .strip_prefix("id: ")
        .expect("id line")
        .parse()
        .unwrap();
    let event = lines[1]
        .strip_prefix("event: ")
        .expect("event line")
        .to_owned();
    let data = lines[2]
        .strip_prefix("data: ")
        .expect("data line")
        .to_owned();
    assert!(
        data.contains("\": ") || data == "{}",
        "json.dumps spacing: {data}"
    );
    (Some(id), Some(event), data)
}

fn kinds(blocks: &[String]) -> Vec<String> {
    blocks
        .iter()
        .map(|b| parse(b).1.unwrap_or_else(|| "[DONE]".into()))
        .collect()
}

#[tokio::test]
async fn a_plain_run_is_framed_like_aura_platform() {
    let addr = spawn(300).await;
    let auth = format!("Bearer {}", token("user123", "tenant1"));
    let mut stream = open(
        addr,
        &[
            ("authorization", &auth),
            ("x-tenant-id", "tenant1"),
            ("x-user-id", "user123"),
            ("x-dwp-source", "FRONTEND"),
            ("last-event-id", "7"),
        ],
        json!({"prompt": "summarise my inbox", "context": {}}),
    )
    .await;
    assert_eq!(stream.status, 200);
    let blocks = stream.rest().await;
    assert_eq!(
        kinds(&blocks),
        [
            "start",
            "thought",
            "plan_step",
            "plan_step",
            "content",
            "end",
            "[DONE]"
        ]
    );
    let ids: Vec<_> = blocks.iter().filter_map(|b| parse(b).0).collect();
    assert_eq!(
        ids,
        [8, 9, 10, 11, 12, 13],
        "counting on from Last-Event-ID"
    );
    let start: Value = serde_json::from_str(&parse(&blocks[0]).2).unwrap();
    assert!(
        parse(&blocks[0])
            .2
            .starts_with(r#"{"type": "start", "message": "Agent started", "timestamp": "#)
    );
    assert_eq!(
        start["received"],
        json!({"tenantId": "tenant1", "userId": "user123", "source": "FRONTEND", "callerType": null, "lastEventId": "7"})
    );
    let step: Value = serde_json::from_str(&parse(&blocks[2]).2).unwrap();
    assert_eq!(
        (step["type"].as_str(), step["data"]["type"].as_str()),
        (Some("plan_step"), Some("plan_step"))
    );
    assert!(step["data"]["stepId"].is_string() && step["data"]["metadata"].is_object());
    let end: Value = serde_json::from_str(&parse(&blocks[5]).2).unwrap();
    assert!(end.get("data").is_none(), "end is flat");
}

#[tokio::test]
async fn the_token_and_the_prompt_are_checked() {
    let addr = spawn(300).await;
    let none = open(addr, &[], json!({"prompt": "hi"})).await;
    assert_eq!(none.status, 401);
    let forged = open(
        addr,
        &[("authorization", "Bearer a.b.c")],
        json!({"prompt": "hi"}),
    )
    .await;
    assert_eq!(forged.status, 401);
    let auth = format!("Bearer {}", token("user123", "tenant1"));
    let other_tenant = open(
        addr,
        &[("authorization", &auth), ("x-tenant-id", "tenant2")],
        json!({"prompt": "hi"}),
    )
    .await;
    assert_eq!(other_tenant.status, 403);
    let body = other_tenant.body.text().await;
    assert!(body.contains("\"detail\""), "{body}");
    for bad in [json!({"context": {}}), json!({"prompt": "  "}), json!("x")] {
        let reply = open(
            addr,
            &[("authorization", &auth), ("x-tenant-id", "tenant1")],
            bad,
        )
        .await;
        assert_eq!(reply.status, 422);
    }
}

/// Reads up to the `hitl` event; returns (requestId, sessionId from Redis).
async fn until_hitl(stream: &mut Stream) -> (String, String) {
    loop {
        let block = stream.next().await.expect("a hitl event");
        if parse(&block).1.as_deref() == Some("hitl") {
            let data: Value = serde_json::from_str(&parse(&block).2).unwrap();
            assert_eq!(data["data"]["requiresApproval"], true);
            let request_id = data["data"]["requestId"].as_str().unwrap().to_owned();
            let mut conn = redis::Client::open(redis_url())
                .unwrap()
                .get_multiplexed_async_connection()
                .await
                .unwrap();
            let raw: String = redis::cmd("GET")
                .arg(format!("hitl:request:{request_id}"))
                .query_async(&mut conn)
                .await
                .unwrap();
            let stored: Value = serde_json::from_str(&raw).unwrap();
            assert_eq!(stored["status"], "pending");
            let ttl: i64 = redis::cmd("TTL")
                .arg(format!("hitl:request:{request_id}"))
                .query_async(&mut conn)
                .await
                .unwrap();
            assert!(ttl > 1700, "{ttl}");
            return (request_id, stored["sessionId"].as_str().unwrap().to_owned());
        }
    }
}

/// Publishes on the session's channel until one subscriber received it
/// (the agent subscribes only after it sent the `hitl` event).
async fn publish(session_id: &str, signal: Value) {
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    loop {
        let receivers: i64 = redis::cmd("PUBLISH")
            .arg(format!("hitl:channel:{session_id}"))
            .arg(signal.to_string())
            .query_async(&mut conn)
            .await
            .unwrap();
        if receivers > 0 {
            assert_eq!(receivers, 1, "one agent per session");
            return;
        }
        assert!(std::time::Instant::now() < deadline, "nobody subscribed");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn an_approval_resumes_the_run_and_a_rejection_ends_it() {
    let addr = spawn(300).await;
    let user = person("user");
    let mut approved = open_as(addr, &user, "merge feature/x into main").await;
    let (request_id, session_id) = until_hitl(&mut approved).await;
    publish(&session_id, json!({"type": "approval", "action": "approve", "status": "approved", "requestId": request_id, "sessionId": session_id, "timestamp": 1})).await;
    let rest = approved.rest().await;
    assert_eq!(
        kinds(&rest),
        [
            "tool_execution",
            "tool_execution",
            "content",
            "end",
            "[DONE]"
        ]
    );
    assert!(
        rest[0].contains(r#""status": "running""#) && rest[1].contains(r#""status": "success""#)
    );

    let mut rejected = open_as(addr, &user, "delete all my mail").await;
    let (request_id, session_id) = until_hitl(&mut rejected).await;
    publish(&session_id, json!({"type": "rejection", "action": "reject", "status": "rejected", "requestId": request_id, "sessionId": session_id, "reason": "not today", "timestamp": 1})).await;
    let rest = rejected.rest().await;
    assert_eq!(kinds(&rest), ["error", "[DONE]"]);
    let mut error: Value = serde_json::from_str(&parse(&rest[0]).2).unwrap();
    assert!(error["timestamp"].as_u64().is_some(), "{error}");
    error.as_object_mut().unwrap().remove("timestamp");
    assert_eq!(
        error,
        json!({"type": "error", "error": "not today", "errorType": "RejectionError"})
    );
}

#[tokio::test]
async fn no_decision_in_time_fails_the_run() {
    let addr = spawn(1).await;
    let mut stream = open_as(addr, &person("user"), "send the report").await;
    let (request_id, session_id) = until_hitl(&mut stream).await;
    let rest = tokio::time::timeout(Duration::from_secs(10), stream.rest())
        .await
        .unwrap();
    assert_eq!(kinds(&rest), ["failed", "error", "end", "[DONE]"]);
    let data = |n: usize| serde_json::from_str::<Value>(&parse(&rest[n]).2).unwrap();
    let (failed, error, end) = (data(0), data(1), data(2));
    assert_eq!(
        (failed["requestId"].as_str(), failed["sessionId"].as_str()),
        (Some(request_id.as_str()), Some(session_id.as_str()))
    );
    assert_eq!(failed["errorType"], "TimeoutError");
    assert_eq!(error["errorType"], "TimeoutError");
    assert_eq!(end["status"], "failed");
}

#[tokio::test]
async fn twenty_sessions_wait_at_once_and_each_resumes_once() {
    let addr = spawn(300).await;
    let mut runs = Vec::new();
    for n in 0..20 {
        let mut stream = open_as(addr, &person(&format!("user{n}")), "merge it").await;
        let (request_id, session_id) = until_hitl(&mut stream).await;
        runs.push((stream, request_id, session_id));
    }
    // Decide in reverse order; odd ones are rejected.
    for (n, (_, request_id, session_id)) in runs.iter().enumerate().rev() {
        let kind = if n % 2 == 0 { "approval" } else { "rejection" };
        publish(
            session_id,
            json!({"type": kind, "requestId": request_id, "sessionId": session_id, "timestamp": 1}),
        )
        .await;
    }
    for (n, (mut stream, _, _)) in runs.into_iter().enumerate() {
        let rest = stream.rest().await;
        let expected: &[&str] = if n % 2 == 0 {
            &[
                "tool_execution",
                "tool_execution",
                "content",
                "end",
                "[DONE]",
            ]
        } else {
            &["error", "[DONE]"]
        };
        assert_eq!(kinds(&rest), expected, "run {n}");
    }
}

#[tokio::test]
async fn an_x_user_id_that_is_not_the_token_is_an_error_event_and_random_session_ids_cannot_be_guessed()
 {
    let addr = spawn_with(30, &[("AURA_SIM_SESSION_IDS", "random")]).await;
    let auth = format!("Bearer {}", token("alice", "tenant1"));
    let mut stream = open(
        addr,
        &[
            ("authorization", &auth),
            ("x-tenant-id", "tenant1"),
            ("x-user-id", "bob"),
        ],
        json!({"prompt": "delete my mail", "context": {}}),
    )
    .await;
    assert_eq!(stream.status, 200);
    let blocks = stream.rest().await;
    assert_eq!(kinds(&blocks), ["error", "[DONE]"], "{blocks:?}");
    let data: Value = serde_json::from_str(&parse(&blocks[0]).2).unwrap();
    assert_eq!(data["errorType"], "AuthorizationError");

    // Asked for, the session id's suffix is a full random id.
    let mut stream = open_as(addr, &person("alice"), "delete my mail").await;
    let (_, session_id) = until_hitl(&mut stream).await;
    let suffix = session_id.rsplit('_').next().unwrap();
    assert_eq!(suffix.len(), 32, "{session_id}");
    assert!(suffix.bytes().all(|b| b.is_ascii_hexdigit()));
}

#[tokio::test]
async fn the_session_is_the_agents_own_and_a_stored_signal_is_never_read() {
    let addr = spawn(1).await;
    let user = person("alice.kim");
    let auth = format!("Bearer {}", token(&user, "1"));
    let before = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut stream = open(
        addr,
        &[
            ("authorization", &auth),
            ("x-tenant-id", "1"),
            ("x-user-id", &user),
        ],
        json!({"prompt": "delete my mail", "context": {}}),
    )
    .await;
    let (request_id, session_id) = until_hitl(&mut stream).await;
    // session_{sub}_{unix seconds}, the sub as it is.
    let seconds: u64 = session_id
        .strip_prefix(&format!("session_{user}_"))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("{session_id}"));
    assert!(seconds >= before && seconds <= before + 2, "{session_id}");
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let get = |key: String| redis::cmd("GET").arg(key).clone();
    let raw: String = get(format!("hitl:session:{session_id}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&raw).unwrap(),
        json!({"sessionId": session_id, "requestId": request_id, "userId": user, "tenantId": "1"})
    );
    let raw: String = get(format!("hitl:request:{request_id}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let stored: Value = serde_json::from_str(&raw).unwrap();
    assert!(stored["createdAt"].is_u64(), "an integer: {stored}");
    // A stored signal without a message on the channel: the real agent never
    // looks, so the run waits out its timeout.
    let signal = json!({"type": "approval", "requestId": request_id, "sessionId": session_id, "timestamp": 1});
    let () = redis::cmd("SET")
        .arg(format!("hitl:signal:{session_id}"))
        .arg(signal.to_string())
        .arg("EX")
        .arg(60)
        .query_async(&mut conn)
        .await
        .unwrap();
    let rest = tokio::time::timeout(Duration::from_secs(10), stream.rest())
        .await
        .unwrap();
    assert_eq!(kinds(&rest), ["failed", "error", "end", "[DONE]"]);
}

#[tokio::test]
async fn robust_waits_subscribe_before_the_event_and_read_their_stored_signal() {
    let addr = spawn_with(30, &[("AURA_SIM_WAIT", "robust")]).await;
    let mut stream = open_as(addr, &person("dan"), "merge it").await;
    let (request_id, session_id) = until_hitl(&mut stream).await;
    let mut conn = redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let numsub: (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(format!("hitl:channel:{session_id}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(numsub.1, 1, "subscribed before it announced the request");
    publish(&session_id, json!({"type": "approval", "requestId": request_id, "sessionId": session_id, "timestamp": 1})).await;
    assert_eq!(kinds(&stream.rest().await)[0], "tool_execution");
}

#[tokio::test]
async fn asked_to_the_agent_asks_twice_on_one_session_and_a_resumed_stream_counts_on() {
    let addr = spawn_with(30, &[("AURA_SIM_ASK_TWICE", "true")]).await;
    let user = person("erin");
    let auth = format!("Bearer {}", token(&user, "tenant1"));
    let mut stream = open(
        addr,
        &[
            ("authorization", &auth),
            ("x-tenant-id", "tenant1"),
            ("x-user-id", &user),
            ("last-event-id", "41"),
        ],
        json!({"prompt": "merge it", "context": {}}),
    )
    .await;
    let first = stream.next().await.unwrap();
    assert_eq!(parse(&first).0, Some(42), "ids count on from Last-Event-ID");
    let (first_id, session_id) = until_hitl(&mut stream).await;
    publish(
        &session_id,
        json!({"type": "approval", "requestId": first_id, "sessionId": session_id, "timestamp": 1}),
    )
    .await;
    let (second_id, second_session) = until_hitl(&mut stream).await;
    assert_ne!(first_id, second_id);
    assert_eq!(second_session, session_id, "the same session, asked again");
    publish(&session_id, json!({"type": "approval", "requestId": second_id, "sessionId": session_id, "timestamp": 1})).await;
    assert_eq!(
        kinds(&stream.rest().await),
        [
            "tool_execution",
            "tool_execution",
            "content",
            "end",
            "[DONE]"
        ]
    );
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_at_the_header_read_timeout() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = spawn_with(300, &[("AURA_SIM_HEADER_READ_TIMEOUT_SECS", "1")]).await;
    let mut conn = tokio::net::TcpStream::connect(addr).await.unwrap();
    conn.write_all(b"GET /health HTTP/1.1\r\nHost: a\r\n\r\n")
        .await
        .unwrap();
    let mut buf = vec![0u8; 4096];
    let n = conn.read(&mut buf).await.unwrap();
    assert!(buf[..n].starts_with(b"HTTP/1.1 200"));
    let closed = tokio::time::timeout(Duration::from_secs(5), async {
        let mut rest = Vec::new();
        let _ = conn.read_to_end(&mut rest).await;
    })
    .await;
    assert!(closed.is_ok(), "the idle connection stayed open");
}
