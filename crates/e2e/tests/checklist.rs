//! The old team's integration checklist, automated: the real `gateway`,
//! `main-service` and `aura-sim` processes on free ports of 127.0.0.1, real
//! Redis, a fresh PostgreSQL database per test, and clients that go through
//! the gateway the way the frontend does.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed unwrap is a failed test, and a scenario reads top to bottom"
)]

use std::process::Command;
use std::time::{Duration, Instant};

use e2e::*;
use futures_util::StreamExt;
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use serde_json::{Value, json};

#[tokio::test]
async fn a_login_token_opens_the_stream_events_arrive_framed_and_identity_reaches_the_agent() {
    let stack = start(&["alice"]).await;
    let alice = stack.user("alice");
    let token = stack.login(&alice).await;
    let mut stream = stack
        .stream(Some(&token), &alice, "summarise my inbox")
        .await;
    assert_eq!(stream.status, 200);
    assert!(stream.task_id.is_some(), "X-DWP-Task-ID");
    let blocks = stream.rest().await;
    assert_eq!(kinds(&blocks), PLAIN_RUN);
    for (n, block) in blocks[..6].iter().enumerate() {
        let lines: Vec<_> = block.trim_end().split('\n').collect();
        assert_eq!(lines[0], format!("id: {}", n + 1));
        assert!(
            lines[1].starts_with("event: ") && lines[2].starts_with("data: {\"type\": "),
            "{block:?}"
        );
        assert_eq!(lines.len(), 3);
    }
    let start: Value = serde_json::from_str(data_of(&blocks[0])).unwrap();
    assert_eq!(
        start["received"],
        json!({"tenantId": "tenant1", "userId": alice, "source": "FRONTEND", "callerType": "USER", "lastEventId": "0"})
    );
}

#[tokio::test]
async fn a_missing_or_bad_token_is_refused_at_the_edge() {
    let stack = start(&[]).await;
    let missing = stack.stream(None, "alice", "hi").await;
    assert_eq!(missing.status, 401);
    let forged = stack.stream(Some("a.b.c"), "alice", "hi").await;
    assert_eq!(forged.status, 401);
    let (status, body, _) = call(stack.gateway, "GET", "/api/nowhere", &[], "").await;
    assert_eq!(status, 404);
    assert!(body.contains("\"errorCode\":\"E1004\""), "{body}");
}

#[tokio::test]
async fn approval_through_the_gateway_signals_the_agent_and_the_run_is_recorded() {
    let stack = start(&["bob"]).await;
    let bob = stack.user("bob");
    let token = stack.login(&bob).await;
    let mut stream = stack
        .stream(Some(&token), &bob, "merge feature/x into main")
        .await;
    let task_id = stream.task_id.clone().unwrap();
    let (_, request_id) = stream.until_hitl().await;

    // HITL traffic goes to main-service: the stored request, then a watcher on the channel.
    let (status, request) = stack
        .as_user(
            &token,
            &bob,
            "GET",
            &format!("/api/aura/hitl/requests/{request_id}"),
            "",
        )
        .await;
    assert_eq!(status, 200);
    let session_id = request["data"]["sessionId"].as_str().unwrap().to_owned();
    // The agent first: a signal someone received is not sent again.
    wait_for_listeners(&stack.redis_url, &session_id, 1).await;
    let mut watcher = redis::Client::open(redis_url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    // As an operator watches (a pattern): a second SUBSCRIBE would be a
    // second run on the channel, to which nothing is published.
    watcher
        .psubscribe(format!("hitl:channel:{session_id}"))
        .await
        .unwrap();

    let (status, reply) = stack
        .as_user(
            &token,
            &bob,
            "POST",
            &format!("/api/aura/hitl/approve/{request_id}"),
            &json!({"userId": bob}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    let signal: Value = serde_json::from_str(
        &watcher
            .on_message()
            .next()
            .await
            .unwrap()
            .get_payload::<String>()
            .unwrap(),
    )
    .unwrap();
    let fields: Vec<_> = signal.as_object().unwrap().keys().cloned().collect();
    assert_eq!(
        fields,
        [
            "type",
            "action",
            "status",
            "requestId",
            "sessionId",
            "timestamp",
            "contextDigest"
        ]
    );
    assert_eq!(
        (signal["type"].as_str(), signal["requestId"].as_str()),
        (Some("approval"), Some(request_id.as_str()))
    );

    let rest = stream.rest().await;
    assert_eq!(kinds(&rest), AFTER_APPROVAL);

    let (second, _) = stack
        .as_user(
            &token,
            &bob,
            "POST",
            &format!("/api/aura/hitl/reject/{request_id}"),
            "",
        )
        .await;
    assert_eq!(second, 409);
    let (unknown, body) = stack
        .as_user(
            &token,
            &bob,
            "POST",
            "/api/aura/hitl/approve/req_000000000000",
            "",
        )
        .await;
    assert_eq!((unknown, body["errorCode"].as_str()), (404, Some("E1004")));

    // The streamed run is a COMPLETED agent_task row with its plan steps and request id.
    let deadline = Instant::now() + Duration::from_secs(10);
    let task = loop {
        let (status, task) = stack
            .as_user(
                &token,
                &bob,
                "GET",
                &format!("/api/main/agent/tasks/{task_id}"),
                "",
            )
            .await;
        if status == 200 && task["data"]["status"] == "COMPLETED" {
            break task["data"].clone();
        }
        assert!(Instant::now() < deadline, "not recorded: {task}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(task["hitlRequestId"], request_id.as_str());
    assert_eq!(task["planSteps"].as_array().unwrap().len(), 2);
    let db = Database::connect(&stack.db.url).await.unwrap();
    let columns = db
        .query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT column_name::text FROM information_schema.columns WHERE table_name = 'agent_task' ORDER BY ordinal_position",
        ))
        .await
        .unwrap()
        .iter()
        .map(|r| r.try_get_by_index::<String>(0).unwrap())
        .collect::<Vec<_>>();
    assert_eq!(
        columns,
        [
            "id",
            "task_id",
            "user_id",
            "tenant_id",
            "task_type",
            "status",
            "progress",
            "description",
            "input_data",
            "result_data",
            "plan_steps",
            "hitl_request_id",
            "error_message",
            "started_at",
            "completed_at",
            "created_at",
            "updated_at"
        ]
    );
    db.close().await.unwrap();
}

#[tokio::test]
async fn rejection_ends_the_run_with_rejection_error() {
    let stack = start(&["carol"]).await;
    let carol = stack.user("carol");
    let token = stack.login(&carol).await;
    let mut stream = stack
        .stream(Some(&token), &carol, "delete the old mail")
        .await;
    let (_, request_id) = stream.until_hitl().await;
    let (status, _) = stack
        .as_user(
            &token,
            &carol,
            "POST",
            &format!("/api/aura/hitl/reject/{request_id}"),
            &json!({"userId": carol, "reason": "Keep it"}).to_string(),
        )
        .await;
    assert_eq!(status, 200);
    let rest = stream.rest().await;
    assert_eq!(kinds(&rest), ["error", "[DONE]"]);
    let mut error: Value = serde_json::from_str(data_of(&rest[0])).unwrap();
    assert!(error["timestamp"].is_u64(), "{error}");
    error.as_object_mut().unwrap().remove("timestamp");
    assert_eq!(
        error,
        json!({"type": "error", "error": "Keep it", "errorType": "RejectionError"})
    );
}

#[tokio::test]
async fn twenty_concurrent_users_each_with_their_own_approval_all_finish() {
    let users: Vec<String> = (0..20).map(|n| format!("user{n}")).collect();
    let names: Vec<&str> = users.iter().map(String::as_str).collect();
    let stack = start(&names).await;
    let runs = futures_util::future::join_all(users.iter().map(|name| {
        let stack = &stack;
        async move {
            let user = &stack.user(name);
            let token = stack.login(user).await;
            let mut stream = stack
                .stream(Some(&token), user, "send the weekly report")
                .await;
            let (_, request_id) = stream.until_hitl().await;
            let (status, _) = stack
                .as_user(
                    &token,
                    user,
                    "POST",
                    &format!("/api/aura/hitl/approve/{request_id}"),
                    "",
                )
                .await;
            assert_eq!(status, 200, "{user}");
            kinds(&stream.rest().await)
        }
    }))
    .await;
    for (user, kinds) in users.iter().zip(runs) {
        assert_eq!(kinds, AFTER_APPROVAL, "{user}");
    }
}

#[tokio::test]
async fn forged_and_broken_tokens_are_refused_at_the_edge_and_by_main_service() {
    let stack = start(&[]).await;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let good = json!({"sub": "alice", "tenant_id": "tenant1", "iat": now, "exp": now + 600});
    let hs256 = json!({"alg": "HS256", "typ": "JWT"});
    let secret = SECRET.as_bytes();
    let valid = forge(hs256.clone(), good.clone(), secret);
    let with = |field: &str, value: Value| {
        let mut claims = good.clone();
        claims[field] = value;
        forge(hs256.clone(), claims, secret)
    };
    let alg_none = {
        let signed = forge(json!({"alg": "none", "typ": "JWT"}), good.clone(), secret);
        format!("{}.", signed.rsplit_once('.').unwrap().0)
    };
    let hs512 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS512),
        &good,
        &jsonwebtoken::EncodingKey::from_secret(secret),
    )
    .unwrap();
    let mut no_sub = good.clone();
    no_sub.as_object_mut().unwrap().remove("sub");
    let rs256 = json!({"alg": "RS256", "typ": "JWT"});
    let cases: Vec<(&str, String)> = vec![
        ("alg none", alg_none),
        ("HS512", hs512),
        (
            "RS256 header, HMAC with the secret",
            forge(rs256, good.clone(), secret),
        ),
        (
            "wrong secret",
            forge(
                hs256.clone(),
                good.clone(),
                b"another-secret-another-secret-0123456",
            ),
        ),
        ("truncated", valid[..valid.len() - 6].to_owned()),
        ("not base64", "abc.d$f!.gh#i".to_owned()),
        ("huge", format!("{valid}{}", "A".repeat(20_000))),
        ("expired", with("exp", json!(now - 3600))),
        ("not yet valid", with("nbf", json!(now + 3600))),
        ("missing sub", forge(hs256.clone(), no_sub, secret)),
        ("numeric tenant_id", with("tenant_id", json!(42))),
        (
            "sub with control characters",
            with("sub", json!("ali\u{0}ce\n")),
        ),
        ("empty", String::new()),
    ];
    for (target, path) in [
        (stack.gateway, "/api/main/agent/tasks"),
        (stack.main, "/main/agent/tasks"),
    ] {
        let call_with = |token: String| async move {
            let auth = format!("Bearer {token}");
            let headers = [
                ("authorization", auth.as_str()),
                ("x-tenant-id", "tenant1"),
                ("x-user-id", "alice"),
            ];
            call(target, "GET", path, &headers, "").await
        };
        let (status, body, _) = call_with(valid.clone()).await;
        assert_eq!(
            status, 200,
            "the control case, a valid token on {path}: {body}"
        );
        for (name, token) in &cases {
            let (status, body, _) = call_with(token.clone()).await;
            assert!(
                status == 401 || status == 403,
                "{name} on {path}: {status} {body}"
            );
            let reply: Value = serde_json::from_str(&body)
                .unwrap_or_else(|_| panic!("{name} on {path}: not JSON: {body}"));
            let code = reply["errorCode"].as_str().unwrap_or("");
            assert!(
                ["E2000", "E2001", "E2002", "E2003"].contains(&code),
                "{name} on {path}: {body}"
            );
            assert_eq!(reply["success"], false);
        }
    }
}

#[tokio::test]
async fn when_the_agent_dies_mid_stream_the_client_hears_at_once_and_the_task_fails() {
    let mut stack = start(&["dave"]).await;
    let dave = stack.user("dave");
    let token = stack.login(&dave).await;
    let mut stream = stack
        .stream(Some(&token), &dave, "merge the release branch")
        .await;
    let task_id = stream.task_id.clone().unwrap();
    stream.until_hitl().await;

    // The agent is killed while it waits for the approval.
    stack.children[AURA].kill().unwrap();
    let killed = Instant::now();
    let rest = stream.rest().await;
    eprintln!(
        "agent killed: the client's stream ended {:?} later",
        killed.elapsed()
    );
    assert!(
        killed.elapsed() < Duration::from_secs(1),
        "the stream ended after {:?}",
        killed.elapsed()
    );
    assert!(!kinds(&rest).contains(&"[DONE]".to_owned()), "{rest:?}");

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, task) = stack
            .as_user(
                &token,
                &dave,
                "GET",
                &format!("/api/main/agent/tasks/{task_id}"),
                "",
            )
            .await;
        if status == 200 && task["data"]["status"] == "FAILED" {
            assert_eq!(
                task["data"]["errorMessage"],
                "The agent broke the stream off"
            );
            break;
        }
        assert!(Instant::now() < deadline, "task not failed: {task}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, metrics, _) = call(stack.gateway_admin, "GET", "/metrics", &[], "").await;
    let open = metrics
        .lines()
        .find_map(|l| l.strip_prefix("gateway_open_streams "))
        .unwrap_or("missing");
    assert_eq!(open, "0", "no stream left open in the gateway");
}

#[tokio::test]
async fn sigterm_to_the_gateway_refuses_new_connections_and_lets_100_open_streams_finish() {
    let mut stack = Stack::start(Options {
        users: &["erin"],
        gateway_env: &[("GATEWAY_SHUTDOWN_GRACE_SECS", "20")],
        aura_env: ROBUST_AGENT,
        ..Options::default()
    })
    .await;
    let erin = stack.user("erin");
    let token = stack.login(&erin).await;
    let mut streams = Vec::new();
    for _ in 0..100 {
        let mut stream = stack.stream(Some(&token), &erin, "merge it").await;
        let (_, request_id) = stream.until_hitl().await;
        streams.push((stream, request_id));
    }

    let gateway = stack.gateway;
    let pid = stack.children[GATEWAY].id().to_string();
    assert!(
        Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success()
    );
    let signalled = Instant::now();
    loop {
        if tokio::net::TcpStream::connect(gateway).await.is_err() {
            break;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(1),
            "new connections still accepted"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // The open streams are decided (directly at main-service) and finish through the draining gateway.
    let auth = format!("Bearer {token}");
    let headers = [
        ("authorization", auth.as_str()),
        ("x-tenant-id", "tenant1"),
        ("x-user-id", erin.as_str()),
    ];
    for (_, request_id) in &streams {
        let (status, body, _) = call(
            stack.main,
            "POST",
            &format!("/aura/hitl/approve/{request_id}"),
            &headers,
            "",
        )
        .await;
        assert_eq!(status, 200, "{body}");
    }
    for (mut stream, request_id) in streams {
        let rest = stream.rest().await;
        assert_eq!(kinds(&rest), AFTER_APPROVAL, "{request_id}");
    }
    let exit = loop {
        if let Some(exit) = stack.children[GATEWAY].try_wait().unwrap() {
            break exit;
        }
        assert!(
            signalled.elapsed() < Duration::from_secs(20),
            "the gateway did not exit within its grace time"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(exit.code(), Some(0));
}

#[tokio::test]
async fn an_approval_made_before_the_agent_subscribes_arrives_with_a_pattern_watcher_attached() {
    // The stack's own `PSUBSCRIBE hitl:channel:*` watcher is attached (as
    // the old test guide's step 5 has operators do); the agent subscribes
    // 300 ms after its `hitl` event, and the person is faster.
    let stack = Stack::start(Options {
        users: &["erin"],
        aura_env: &[
            ("AURA_SIM_SUBSCRIBE_DELAY_MS", "300"),
            ("HITL_TIMEOUT_SECS", "5"),
        ],
        ..Options::default()
    })
    .await;
    let erin = stack.user("erin");
    let token = stack.login(&erin).await;
    let mut stream = stack.stream(Some(&token), &erin, "delete my mail").await;
    let (_, request_id) = stream.until_hitl().await;
    let (status, reply) = stack.approve(&token, &erin, &request_id).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(
        reply["data"]["delivered"], false,
        "a watcher is not the agent: {reply}"
    );
    let rest = stream.rest().await;
    assert_eq!(kinds(&rest), AFTER_APPROVAL, "{rest:?}");
}
