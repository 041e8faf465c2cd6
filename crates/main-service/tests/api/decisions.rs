//! Approve and reject: the signal on the channel, the stored state, 404/409/400.

use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use serde_json::Value;

use crate::helpers::*;

async fn next_message(pubsub: &mut redis::aio::PubSub, wait: Duration) -> Option<Value> {
    let mut stream = pubsub.on_message();
    let msg = tokio::time::timeout(wait, stream.next()).await.ok()??;
    let payload: String = msg.get_payload().unwrap();
    Some(serde_json::from_str(&payload).unwrap())
}

#[tokio::test]
async fn approval_publishes_the_contract_signal_once_and_records_the_decision() {
    let app = spawn_app().await;
    let (request_id, session_id) = agent_request(Some("user123"), Some("tenant1")).await;
    let mut pubsub = subscribe(&session_id).await;

    let before = now();
    let res = app
        .decide(
            "approve",
            &request_id,
            "user123",
            "tenant1",
            r#"{"userId":"user123"}"#,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["status"], "SUCCESS");
    assert_eq!(res.body["success"], true);
    assert_eq!(res.body["message"], "Request approved successfully");
    assert_eq!(res.body["data"]["requestId"], request_id.as_str());
    assert_eq!(res.body["data"]["sessionId"], session_id.as_str());
    assert_eq!(res.body["data"]["status"], "approved");

    let signal = next_message(&mut pubsub, Duration::from_secs(2))
        .await
        .expect("the agent got the signal");
    let object = signal.as_object().unwrap();
    let mut keys: Vec<&str> = object.keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "action",
            "contextDigest",
            "requestId",
            "sessionId",
            "status",
            "timestamp",
            "type"
        ]
    );
    assert_eq!(signal["type"], "approval");
    assert_eq!(signal["action"], "approve");
    assert_eq!(signal["status"], "approved");
    assert_eq!(signal["requestId"], request_id.as_str());
    assert_eq!(signal["sessionId"], session_id.as_str());
    let ts = signal["timestamp"].as_u64().expect("integer Unix seconds");
    assert!(ts >= before && ts <= now());

    let mut conn = redis().await;
    let stored: String = conn
        .get(format!("hitl:request:{request_id}"))
        .await
        .unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    assert_eq!(stored["status"], "approved");
    assert_eq!(stored["decidedBy"], "user123");
    assert!(stored["decidedAt"].as_str().unwrap().ends_with('Z'));
    assert_eq!(
        stored["context"]["sources"],
        serde_json::json!([]),
        "the agent's JSON is kept as it was"
    );
    let ttl: i64 = conn
        .ttl(format!("hitl:request:{request_id}"))
        .await
        .unwrap();
    assert!(
        ttl > 290 && ttl <= 300,
        "a decided request is kept as long as its signal: {ttl}"
    );
    let stored_signal: String = conn.get(format!("hitl:signal:{session_id}")).await.unwrap();
    assert_eq!(
        serde_json::from_str::<Value>(&stored_signal).unwrap(),
        signal
    );
    let signal_ttl: i64 = conn.ttl(format!("hitl:signal:{session_id}")).await.unwrap();
    assert!(signal_ttl > 290 && signal_ttl <= 300, "{signal_ttl}");

    let again = app
        .decide("reject", &request_id, "user123", "tenant1", "")
        .await;
    assert_eq!(again.status, 409);
    assert_eq!(again.body["errorCode"], "E3001");
    assert_eq!(
        again.body["data"]["status"], "approved",
        "the current state is in data"
    );
    assert!(
        next_message(&mut pubsub, Duration::from_millis(300))
            .await
            .is_none(),
        "no second signal"
    );
}

#[tokio::test]
async fn rejection_carries_the_reason_or_the_default() {
    let app = spawn_app().await;
    for (body, reason) in [
        (
            r#"{"userId":"user123","reason":"Not on a Friday"}"#,
            "Not on a Friday",
        ),
        ("", "User rejected"),
    ] {
        let (request_id, session_id) = agent_request(Some("user123"), Some("tenant1")).await;
        let mut pubsub = subscribe(&session_id).await;
        let res = app
            .decide("reject", &request_id, "user123", "tenant1", body)
            .await;
        assert_eq!(res.status, 200, "{}", res.text);
        assert_eq!(res.body["message"], "Request rejected successfully");
        assert_eq!(res.body["data"]["status"], "rejected");
        let signal = next_message(&mut pubsub, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(signal["type"], "rejection");
        assert_eq!(signal["action"], "reject");
        assert_eq!(signal["status"], "rejected");
        assert_eq!(signal["reason"], reason);
    }
}

#[tokio::test]
async fn an_absent_request_is_404_never_500() {
    let app = spawn_app().await;
    let res = app
        .decide("approve", &unique("req"), "user123", "tenant1", "")
        .await;
    assert_eq!(res.status, 404);
    assert_eq!(res.body["errorCode"], "E1004");
    assert_eq!(res.body["success"], false);
}

#[tokio::test]
async fn request_ids_that_are_empty_too_long_or_hold_control_characters_are_400() {
    let app = spawn_app().await;
    let long = "a".repeat(513);
    for id in ["", "a%0Ab", "a%00b", "a%1Bb", "a%7Fb", long.as_str()] {
        let res = app.decide("approve", id, "user123", "tenant1", "").await;
        assert_eq!(res.status, 400, "{id}: {}", res.text);
        assert_eq!(res.body["errorCode"], "E1001");
    }
    // Printable text is an id like any other: unknown here, so 404.
    for id in [
        "req_*",
        "req_%3F",
        "%5Bab%5D",
        "a%20b",
        "alice%40corp.example",
    ] {
        let res = app.decide("approve", id, "user123", "tenant1", "").await;
        assert_eq!(res.status, 404, "{id}: {}", res.text);
    }
}

#[tokio::test]
async fn the_same_decision_again_is_200_already_processed_and_sends_nothing() {
    let app = spawn_app().await;
    let (request_id, session_id) = agent_request(Some("user123"), Some("tenant1")).await;
    let mut pubsub = subscribe(&session_id).await;
    let first = app
        .decide(
            "reject",
            &request_id,
            "user123",
            "tenant1",
            r#"{"reason":"no"}"#,
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    assert!(first.body["data"].get("alreadyProcessed").is_none());
    assert!(
        next_message(&mut pubsub, Duration::from_secs(2))
            .await
            .is_some()
    );
    // A double click, or a retry after a lost answer.
    let again = app
        .decide("reject", &request_id, "user123", "tenant1", "")
        .await;
    assert_eq!(again.status, 200, "{}", again.text);
    assert_eq!(again.body["success"], true);
    assert_eq!(again.body["data"]["alreadyProcessed"], true);
    assert_eq!(again.body["data"]["status"], "rejected");
    assert_eq!(
        again.body["data"]["reason"], "no",
        "the state as first decided"
    );
    assert_eq!(again.body["data"]["requestId"], request_id.as_str());
    let other = app
        .decide("approve", &request_id, "user123", "tenant1", "")
        .await;
    assert_eq!(
        (other.status, other.body["errorCode"].as_str()),
        (409, Some("E3001"))
    );
    assert_eq!(other.body["data"]["status"], "rejected");
    assert!(
        next_message(&mut pubsub, Duration::from_millis(300))
            .await
            .is_none(),
        "no second signal"
    );
    assert_eq!(audit_entries(&request_id).await.len(), 1);
}

#[tokio::test]
async fn fifty_concurrent_decisions_give_one_200_and_one_signal() {
    let app = std::sync::Arc::new(spawn_app().await);
    let (request_id, session_id) = agent_request(Some("user123"), Some("tenant1")).await;
    let mut pubsub = subscribe(&session_id).await;
    let mut calls = tokio::task::JoinSet::new();
    for i in 0..50 {
        let (app, request_id) = (app.clone(), request_id.clone());
        let action = if i % 2 == 0 { "approve" } else { "reject" };
        calls.spawn(async move {
            let res = app
                .decide(action, &request_id, "user123", "tenant1", "")
                .await;
            let repeated = res.body["data"]["alreadyProcessed"] == true;
            (action, res.status, repeated)
        });
    }
    let mut answers = Vec::new();
    while let Some(answer) = calls.join_next().await {
        answers.push(answer.unwrap());
    }
    let decided: Vec<_> = answers
        .iter()
        .filter(|(_, status, repeated)| *status == 200 && !repeated)
        .collect();
    assert_eq!(decided.len(), 1, "{answers:?}");
    let winner = decided[0].0;
    // The same decision again is a repeat (200); the other one is 409.
    for (action, status, repeated) in &answers {
        if *action == winner {
            assert_eq!(*status, 200, "{answers:?}");
        } else {
            assert_eq!((*status, *repeated), (409, false), "{answers:?}");
        }
    }
    assert_eq!(answers.iter().filter(|a| a.2).count(), 24, "{answers:?}");
    assert!(
        next_message(&mut pubsub, Duration::from_secs(2))
            .await
            .is_some()
    );
    assert!(
        next_message(&mut pubsub, Duration::from_millis(500))
            .await
            .is_none(),
        "exactly one message"
    );
}

/// The audit entries of one request in `dwp:hitl-decisions`.
async fn audit_entries(request_id: &str) -> Vec<std::collections::HashMap<String, String>> {
    let mut conn = redis().await;
    let reply: redis::streams::StreamRangeReply = redis::cmd("XREVRANGE")
        .arg(dwp_core::hitl::DECISIONS_STREAM)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(2000)
        .query_async(&mut conn)
        .await
        .unwrap();
    reply
        .ids
        .iter()
        .map(|e| {
            e.map
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        redis::from_redis_value::<String>(v.clone()).unwrap(),
                    )
                })
                .collect::<std::collections::HashMap<_, _>>()
        })
        .filter(|f| f.get("requestId").map(String::as_str) == Some(request_id))
        .collect()
}

#[tokio::test]
async fn every_decision_leaves_one_audit_entry_in_the_same_atomic_step() {
    let app = spawn_app().await;
    let (request_id, session_id) = agent_request(Some("user123"), Some("tenant1")).await;
    let res = app
        .decide(
            "reject",
            &request_id,
            "user123",
            "tenant1",
            r#"{"reason":"too risky"}"#,
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
    let again = app
        .decide("approve", &request_id, "user123", "tenant1", "")
        .await;
    assert_eq!(again.status, 409);

    let entries = audit_entries(&request_id).await;
    assert_eq!(
        entries.len(),
        1,
        "one decision, one audit entry: {entries:?}"
    );
    let entry = &entries[0];
    assert_eq!(entry["sessionId"], session_id);
    assert_eq!(entry["tenantId"], "tenant1");
    assert_eq!(entry["decidedBy"], "user123");
    assert_eq!(entry["decision"], "rejected");
    assert_eq!(entry["reason"], "too risky");
    assert!(entry["decidedAt"].ends_with('Z'));
    let request: Value = serde_json::from_str(&entry["request"]).unwrap();
    assert_eq!(
        request["status"], "rejected",
        "the request as it was decided"
    );
    assert_eq!(request["actionType"], "git_merge");
}
