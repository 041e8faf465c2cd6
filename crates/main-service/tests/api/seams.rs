//! Decisions that could reach a run they were not made for are refused:
//! two tenants' users of one name on one session id (the real agent's
//! `session_{sub}_{second}`), two runs on one channel, a decision on an
//! older request of a session that moved on. And delivery is counted by
//! the channel's own subscribers: an operator's `PSUBSCRIBE hitl:channel:*`
//! is not an agent. Each owner's parked decisions are capped, and no number
//! of them delays another owner's late delivery.

use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::helpers::*;

async fn first(pubsub: &mut redis::aio::PubSub, wait: Duration) -> Option<Value> {
    let message = tokio::time::timeout(wait, pubsub.on_message().next())
        .await
        .ok()??;
    Some(serde_json::from_str(&message.get_payload::<String>().unwrap()).unwrap())
}

/// What the gateway does when it relays a `hitl` event of `user`@`tenant`.
async fn gateway_saw_hitl(request_id: &str, user: &str, tenant: &str) {
    let recorded: i64 = redis::cmd("EVAL")
        .arg(dwp_core::hitl::RECORD_OWNER_SCRIPT)
        .arg(1)
        .arg(dwp_core::hitl::request_key(request_id))
        .arg(dwp_core::hitl::owner_field(tenant, user))
        .arg(3600)
        .arg(request_id)
        .query_async(&mut redis().await)
        .await
        .unwrap();
    assert_eq!(recorded, 1);
}

async fn status_of(request_id: &str) -> Value {
    let raw: String = redis()
        .await
        .get(dwp_core::hitl::request_key(request_id))
        .await
        .unwrap();
    serde_json::from_str::<Value>(&raw).unwrap()["status"].clone()
}

#[tokio::test]
async fn another_tenants_user_of_the_same_name_cannot_approve_on_a_shared_session() {
    let app = spawn_app().await;
    let user = unique("admin");
    // The same second, the same `sub`: the real agent's session id is one.
    let session_id = format!("session_{user}_1795309470");
    let (victim, attacker) = (unique("req"), unique("req"));
    agent_writes(&redis_url(), &victim, &session_id, json!(user), json!("1")).await;
    gateway_saw_hitl(&victim, &user, "1").await;
    let mut victims_agent = subscribe(&session_id).await;
    // The attacker's agent overwrites the session's owner record.
    agent_writes(
        &redis_url(),
        &attacker,
        &session_id,
        json!(user),
        json!("2"),
    )
    .await;
    gateway_saw_hitl(&attacker, &user, "2").await;

    let res = app.decide("approve", &attacker, &user, "2", "").await;
    assert_eq!(
        (res.status, res.body["errorCode"].as_str()),
        (409, Some("E3001")),
        "{}",
        res.text
    );
    assert!(res.text.contains("shared"), "{}", res.text);
    assert!(
        first(&mut victims_agent, Duration::from_millis(500))
            .await
            .is_none(),
        "nothing reaches the victim's run"
    );
    assert_eq!(status_of(&attacker).await, "pending");
    assert_eq!(status_of(&victim).await, "pending");
    // The victim's own decision cannot name a run only: refused too.
    let res = app.decide("approve", &victim, &user, "1", "").await;
    assert_eq!(
        res.status, 403,
        "the session now names another owner: {}",
        res.text
    );
}

#[tokio::test]
async fn with_two_runs_listening_on_one_channel_nothing_is_published() {
    let app = spawn_app().await;
    let user = unique("bob");
    let session_id = format!("session_{user}_1795309470");
    let (older, newer) = (unique("req"), unique("req"));
    agent_writes(&redis_url(), &older, &session_id, json!(user), json!("1")).await;
    let mut one = subscribe(&session_id).await;
    agent_writes(&redis_url(), &newer, &session_id, json!(user), json!("1")).await;
    let mut two = subscribe(&session_id).await;
    let res = app.decide("approve", &newer, &user, "1", "").await;
    assert_eq!(res.status, 409, "{}", res.text);
    assert!(res.text.contains("more than one run"), "{}", res.text);
    assert!(first(&mut one, Duration::from_millis(300)).await.is_none());
    assert!(first(&mut two, Duration::from_millis(100)).await.is_none());
    assert_eq!(status_of(&newer).await, "pending");
    // Once one run is gone, the decision goes to the one left.
    drop(one);
    tokio::time::sleep(Duration::from_millis(100)).await;
    let res = app.decide("approve", &newer, &user, "1", "").await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["data"]["delivered"], true);
    assert_eq!(
        first(&mut two, Duration::from_secs(2)).await.unwrap()["requestId"],
        newer.as_str()
    );
}

#[tokio::test]
async fn a_decision_on_an_older_request_never_answers_the_newer_wait() {
    let app = spawn_app().await;
    let user = unique("carol");
    let session_id = format!("session_{user}_1795309470");
    let (older, newer) = (unique("req"), unique("req"));
    agent_writes(&redis_url(), &older, &session_id, json!(user), json!("1")).await;
    agent_writes(&redis_url(), &newer, &session_id, json!(user), json!("1")).await;
    let mut agent = subscribe(&session_id).await;
    let res = app.decide("reject", &older, &user, "1", "").await;
    assert_eq!(
        (res.status, res.body["errorCode"].as_str()),
        (409, Some("E3001")),
        "{}",
        res.text
    );
    assert!(
        res.text.contains(&newer),
        "names what it waits on: {}",
        res.text
    );
    assert!(
        first(&mut agent, Duration::from_millis(300))
            .await
            .is_none()
    );
    assert_eq!(status_of(&older).await, "pending");
}

#[tokio::test]
async fn a_pattern_watcher_is_not_an_agent_and_an_early_decision_still_arrives() {
    let app = spawn_app().await;
    let mut watcher = redis::Client::open(redis_url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    watcher.psubscribe("hitl:channel:*").await.unwrap();
    let (request_id, session_id) = agent_request(Some("user123"), Some("tenant1")).await;
    let res = app
        .decide("approve", &request_id, "user123", "tenant1", "")
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(
        res.body["data"]["delivered"], false,
        "the watcher is not the agent: {}",
        res.text
    );
    tokio::time::sleep(Duration::from_millis(30)).await;
    let mut agent = subscribe(&session_id).await;
    let signal = first(&mut agent, Duration::from_secs(2))
        .await
        .expect("redelivered once the agent subscribed");
    assert_eq!(signal["requestId"], request_id.as_str());
}

#[tokio::test]
async fn many_parked_decisions_of_others_do_not_delay_a_late_delivery() {
    let app = spawn_app().await;
    // 600 sessions waiting for agents that never come, due before ours
    // (so first in the set's order); they expire within the test's reach.
    let due = now() + 20;
    let mut conn = redis().await;
    let mut pipe = redis::pipe();
    let prefix = unique("parked");
    for i in 0..600 {
        pipe.zadd(
            dwp_core::hitl::UNDELIVERED_KEY,
            format!("{prefix}_{i}"),
            due,
        )
        .ignore();
    }
    let () = pipe.query_async(&mut conn).await.unwrap();
    let (request_id, session_id) = agent_request(Some("user123"), Some("tenant1")).await;
    let res = app
        .decide("approve", &request_id, "user123", "tenant1", "")
        .await;
    assert_eq!(res.body["data"]["delivered"], false, "{}", res.text);
    let mut agent = subscribe(&session_id).await;
    let signal = first(&mut agent, Duration::from_secs(2)).await;
    // Leave nothing behind for other tests.
    let mut cleanup = redis::pipe();
    for i in 0..600 {
        cleanup
            .zrem(dwp_core::hitl::UNDELIVERED_KEY, format!("{prefix}_{i}"))
            .ignore();
    }
    let () = cleanup.query_async(&mut conn).await.unwrap();
    assert_eq!(signal.expect("delivered")["requestId"], request_id.as_str());
}

#[tokio::test]
async fn one_users_parked_decisions_are_capped() {
    let app = spawn_app_in(
        TestDb::create().await,
        &[("HITL_MAX_UNDELIVERED_PER_USER", "3")],
    )
    .await;
    let user = unique("dave");
    let mut sessions = Vec::new();
    for _ in 0..3 {
        let (request_id, session_id) = agent_request(Some(&user), Some("1")).await;
        let res = app.decide("approve", &request_id, &user, "1", "").await;
        assert_eq!(res.body["data"]["delivered"], false, "{}", res.text);
        sessions.push(session_id);
    }
    let (fourth, _) = agent_request(Some(&user), Some("1")).await;
    let res = app.decide("approve", &fourth, &user, "1", "").await;
    assert_eq!(
        (res.status, res.body["errorCode"].as_str()),
        (429, Some("E1001")),
        "{}",
        res.text
    );
    assert!(res.headers.contains_key("retry-after"));
    assert_eq!(status_of(&fourth).await, "pending");
    // Another user is not held by this one's cap.
    let (theirs, _) = agent_request(Some("user123"), Some("1")).await;
    let res = app.decide("approve", &theirs, "user123", "1", "").await;
    assert_eq!(res.status, 200, "{}", res.text);
    // One delivered frees a place.
    let mut agent = subscribe(&sessions[0]).await;
    assert!(first(&mut agent, Duration::from_secs(2)).await.is_some());
    let res = app.decide("approve", &fourth, &user, "1", "").await;
    assert_eq!(res.status, 200, "{}", res.text);
}

#[tokio::test]
async fn a_decision_keeps_what_the_audit_needs_and_no_longer_than_its_signal() {
    let app = spawn_app().await;
    let (request_id, session_id) = agent_request(Some("user123"), Some("tenant1")).await;
    let mut agent = subscribe(&session_id).await;
    let res = app
        .decide("reject", &request_id, "user123", "tenant1", "")
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert!(first(&mut agent, Duration::from_secs(2)).await.is_some());
    let ttl: i64 = redis()
        .await
        .ttl(dwp_core::hitl::request_key(&request_id))
        .await
        .unwrap();
    assert!(
        (1..=300).contains(&ttl),
        "a decided request stays as long as its signal, not 30 min: {ttl}"
    );
    // The outbox entry: the decision and the request without its context.
    let entries: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(dwp_core::hitl::DECISIONS_STREAM)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(200)
        .query_async(&mut redis().await)
        .await
        .unwrap();
    let entry = entries
        .ids
        .iter()
        .find(|e| {
            e.map
                .get("requestId")
                .map(|v| redis::from_redis_value::<String>(v.clone()).unwrap())
                == Some(request_id.clone())
        })
        .expect("the decision is in the outbox");
    let request: String = redis::from_redis_value(entry.map["request"].clone()).unwrap();
    let request: Value = serde_json::from_str(&request).unwrap();
    assert_eq!(request["status"], "rejected");
    assert_eq!(request["actionType"], "git_merge");
    assert!(request.get("context").is_none(), "{request}");
}

#[tokio::test]
async fn one_user_creates_at_most_so_many_requests_and_tasks_a_minute() {
    let app = spawn_app_in(
        TestDb::create().await,
        &[
            ("HITL_MAX_CREATES_PER_MINUTE", "3"),
            ("TASKS_MAX_CREATES_PER_MINUTE", "2"),
        ],
    )
    .await;
    let user = unique("erin");
    let create = |session: String| {
        serde_json::json!({"sessionId": session, "actionType": "email_send"}).to_string()
    };
    // The window is the clock's minute: start well inside one.
    let into_minute = now() % 60;
    if into_minute > 50 {
        tokio::time::sleep(Duration::from_secs(61 - into_minute)).await;
    }
    let mut statuses = Vec::new();
    for _ in 0..4 {
        let res = app
            .as_user(
                "POST",
                "/aura/hitl/requests",
                &user,
                "1",
                &create(unique("s")),
            )
            .await;
        statuses.push(res.status);
        if res.status == 429 {
            assert!(res.headers.contains_key("retry-after"));
            assert_eq!(res.body["errorCode"], "E1001");
        }
    }
    // A minute's edge may fall between the calls: at most one more.
    assert!(
        statuses.iter().filter(|s| **s == 429).count() >= 1 || statuses == [201; 4],
        "{statuses:?}"
    );
    assert!(
        statuses.iter().filter(|s| **s == 201).count() <= 6,
        "{statuses:?}"
    );
    let other = app
        .as_user(
            "POST",
            "/aura/hitl/requests",
            &user,
            "2",
            &create(unique("s")),
        )
        .await;
    assert_eq!(
        other.status, 201,
        "the same name in another tenant: {}",
        other.text
    );
    let task = r#"{"taskType":"report"}"#;
    let mut tasks = Vec::new();
    for _ in 0..3 {
        tasks.push(
            app.as_user("POST", "/main/agent/tasks", &user, "1", task)
                .await
                .status,
        );
    }
    assert_eq!(tasks, [201, 201, 429]);
}

#[tokio::test]
async fn one_user_holds_at_most_so_many_tasks() {
    let app = spawn_app_in(TestDb::create().await, &[("TASKS_MAX_PER_USER", "2")]).await;
    let user = unique("frank");
    let task = r#"{"taskType":"report"}"#;
    for _ in 0..2 {
        let res = app
            .as_user("POST", "/main/agent/tasks", &user, "1", task)
            .await;
        assert_eq!(res.status, 201, "{}", res.text);
    }
    let res = app
        .as_user("POST", "/main/agent/tasks", &user, "1", task)
        .await;
    assert_eq!(
        (res.status, res.body["errorCode"].as_str()),
        (429, Some("E1001")),
        "{}",
        res.text
    );
    let res = app
        .as_user("POST", "/main/agent/tasks", &user, "2", task)
        .await;
    assert_eq!(res.status, 201, "another tenant's namesake: {}", res.text);
}
