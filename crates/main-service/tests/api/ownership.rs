//! A session belongs to its owner: nobody creates a request on it, decides
//! for it, or reads its signal but the owner the agent recorded, and ids
//! are compared as text whether they were stored as strings or numbers.

use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use serde_json::json;

use crate::helpers::*;

/// True when a message arrives on the subscription within `wait`.
async fn heard(pubsub: &mut redis::aio::PubSub, wait: Duration) -> bool {
    tokio::time::timeout(wait, pubsub.on_message().next())
        .await
        .is_ok()
}

/// Writes a session record the way the agent does.
async fn agent_session(session_id: &str, owner: serde_json::Value) {
    let mut conn = redis().await;
    let () = conn
        .set_ex(
            format!("hitl:session:{session_id}"),
            owner.to_string(),
            3600,
        )
        .await
        .unwrap();
}

/// `POST /aura/hitl/requests` on `session_id` by `user` of `tenant`.
async fn create_on(app: &TestApp, user: &str, tenant: &str, session_id: &str) -> Reply {
    let body = json!({"sessionId": session_id, "actionType": "email_delete"}).to_string();
    app.as_user("POST", "/aura/hitl/requests", user, tenant, &body)
        .await
}

#[tokio::test]
async fn a_request_on_someone_elses_session_is_refused_and_nothing_reaches_their_agent() {
    let app = spawn_app().await;
    let (_, victim_session) = agent_request(Some("alice"), Some("tenant1")).await;
    let mut victim = subscribe(&victim_session).await;

    let res = create_on(&app, "mallory", "tenant999", &victim_session).await;
    assert_eq!(res.status, 403, "{}", res.text);
    assert_eq!(res.body["errorCode"], "E2001");
    assert!(!heard(&mut victim, Duration::from_millis(300)).await);
    let mut conn = redis().await;
    let record: String = conn
        .get(format!("hitl:session:{victim_session}"))
        .await
        .unwrap();
    assert_eq!(
        serde_json::from_str::<serde_json::Value>(&record).unwrap()["userId"],
        "alice",
        "the session still names its owner"
    );
}

#[tokio::test]
async fn a_request_planted_before_the_agent_claims_its_session_is_never_delivered() {
    let app = spawn_app().await;
    // Mallory guesses the id of a session Alice's agent has not written yet.
    let session_id = unique("session_alice");
    let res = create_on(&app, "mallory", "tenant999", &session_id).await;
    assert_eq!(res.status, 201, "{}", res.text);
    let planted = res.body["data"]["requestId"].as_str().unwrap().to_owned();
    // Then Alice's agent starts its run and records the session as hers.
    agent_session(
        &session_id,
        json!({"sessionId": session_id, "userId": "alice", "tenantId": "tenant1"}),
    )
    .await;
    let mut agent = subscribe(&session_id).await;
    let res = app
        .decide("approve", &planted, "mallory", "tenant999", "")
        .await;
    assert_eq!(res.status, 403, "{}", res.text);
    assert!(!heard(&mut agent, Duration::from_millis(300)).await);
    let res = app
        .as_user(
            "GET",
            &format!("/aura/hitl/signals/{session_id}"),
            "mallory",
            "tenant999",
            "",
        )
        .await;
    assert_eq!(res.status, 403, "only the owner reads the signal");
}

#[tokio::test]
async fn creating_claims_the_session_once_and_its_owner_may_add_more() {
    let app = spawn_app().await;
    let session_id = unique("session");
    let first = create_on(&app, "bob", "tenant1", &session_id).await;
    assert_eq!(first.status, 201);
    let again = create_on(&app, "bob", "tenant1", &session_id).await;
    assert_eq!(again.status, 201, "the owner adds a second request");
    let other = create_on(&app, "carol", "tenant1", &session_id).await;
    assert_eq!(other.status, 403, "another user of the same tenant may not");
    // Bob decides his own request; his subscriber hears it.
    let mut agent = subscribe(&session_id).await;
    let id = again.body["data"]["requestId"].as_str().unwrap();
    assert_eq!(
        app.decide("approve", id, "bob", "tenant1", "").await.status,
        200
    );
    assert!(heard(&mut agent, Duration::from_secs(2)).await);
}

#[tokio::test]
async fn ids_stored_as_numbers_are_compared_as_text() {
    let app = spawn_app().await;
    let request_id = unique("req");
    let session_id = unique("session");
    let mut conn = redis().await;
    let request = json!({"requestId": request_id, "sessionId": session_id, "actionType": "x",
        "context": {}, "status": "pending", "userId": 42, "tenantId": 999, "createdAt": 1});
    let () = conn
        .set_ex(
            format!("hitl:request:{request_id}"),
            request.to_string(),
            1800,
        )
        .await
        .unwrap();
    agent_session(&session_id, json!({"userId": 42, "tenantId": 999})).await;
    let res = app.decide("approve", &request_id, "42", "1", "").await;
    assert_eq!(
        res.status, 403,
        "tenant 1 does not decide tenant 999: {}",
        res.text
    );
    let res = app.decide("approve", &request_id, "42", "999", "").await;
    assert_eq!(res.status, 200, "{}", res.text);
}

#[tokio::test]
async fn a_session_with_no_record_or_an_unreadable_one_is_refused_not_500() {
    let app = spawn_app().await;
    let (request_id, session_id) = agent_request(Some("user123"), Some("tenant1")).await;
    let mut conn = redis().await;
    let () = conn
        .set_ex(format!("hitl:session:{session_id}"), "not json", 3600)
        .await
        .unwrap();
    let res = app
        .decide("approve", &request_id, "user123", "tenant1", "")
        .await;
    assert_eq!(res.status, 403, "{}", res.text);
    let _: () = conn
        .del(format!("hitl:session:{session_id}"))
        .await
        .unwrap();
    let res = app
        .decide("approve", &request_id, "user123", "tenant1", "")
        .await;
    assert_eq!(res.status, 403, "{}", res.text);
    let res = app
        .as_user(
            "GET",
            &format!("/aura/hitl/signals/{session_id}"),
            "user123",
            "tenant1",
            "",
        )
        .await;
    assert_eq!(res.status, 404);
}
