//! The delivery rule: an agent that subscribes only after the decision
//! (the real one does) still gets the signal, exactly once; a session that
//! moved on to another request never gets a stale one. And the ids the
//! real agent writes (an e-mail address and a space in the session id, a
//! numeric tenant) are ids like any other.

use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use serde_json::{Value, json};

use crate::helpers::*;

/// The first message on the subscription within `wait`.
async fn first(pubsub: &mut redis::aio::PubSub, wait: Duration) -> Option<Value> {
    let message = tokio::time::timeout(wait, pubsub.on_message().next())
        .await
        .ok()??;
    Some(serde_json::from_str(&message.get_payload::<String>().unwrap()).unwrap())
}

/// A session id as the real agent builds it for `user`, unique per test.
fn agent_session_id(user: &str) -> String {
    format!("session_{user}_{}", unique("1795309470"))
}

async fn undelivered(session_id: &str) -> Option<f64> {
    redis()
        .await
        .zscore(dwp_core::hitl::UNDELIVERED_KEY, session_id)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_decision_made_before_the_agent_subscribes_reaches_it_once_it_does() {
    let app = spawn_app().await;
    let user = format!("{} kim@corp.example", unique("alice"));
    let session_id = agent_session_id(&user);
    let request_id = unique("req");
    // The Java backend's agents stored the tenant as a number.
    agent_writes(
        &redis_url(),
        &request_id,
        &session_id,
        json!(user),
        json!(1),
    )
    .await;

    let res = app.decide("approve", &request_id, &user, "1", "").await;
    assert_eq!(res.status, 200, "{}", res.text);
    assert_eq!(res.body["data"]["sessionId"], session_id.as_str());
    assert_eq!(
        res.body["data"]["delivered"], false,
        "nobody was listening yet"
    );
    assert!(undelivered(&session_id).await.is_some());

    // The agent subscribes some milliseconds after the decision.
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut agent = subscribe(&session_id).await;
    let signal = first(&mut agent, Duration::from_secs(2))
        .await
        .expect("delivered once the agent listens");
    assert_eq!(
        (signal["type"].as_str(), signal["requestId"].as_str()),
        (Some("approval"), Some(request_id.as_str()))
    );
    assert!(undelivered(&session_id).await.is_none());
    // Exactly once: neither the same agent nor a later subscriber hears it again.
    let mut later = subscribe(&session_id).await;
    assert!(
        first(&mut agent, Duration::from_millis(300))
            .await
            .is_none()
    );
    assert!(
        first(&mut later, Duration::from_millis(100))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_decision_someone_hears_at_once_says_delivered_and_is_not_sent_again() {
    let app = spawn_app().await;
    let (request_id, session_id) = agent_request(Some("user123"), Some("tenant1")).await;
    let mut agent = subscribe(&session_id).await;
    let res = app
        .decide("reject", &request_id, "user123", "tenant1", "")
        .await;
    assert_eq!(res.body["data"]["delivered"], true, "{}", res.text);
    assert!(first(&mut agent, Duration::from_secs(2)).await.is_some());
    assert!(undelivered(&session_id).await.is_none());
    let mut later = subscribe(&session_id).await;
    assert!(
        first(&mut later, Duration::from_millis(300))
            .await
            .is_none()
    );
}

#[tokio::test]
async fn a_session_that_moved_on_to_another_request_never_gets_the_old_signal() {
    let app = spawn_app().await;
    let user = unique("bob@corp.example");
    let session_id = agent_session_id(&user);
    let (first_id, second_id) = (unique("req"), unique("req"));
    agent_writes(
        &redis_url(),
        &first_id,
        &session_id,
        json!(user),
        json!("1"),
    )
    .await;
    let res = app.decide("approve", &first_id, &user, "1", "").await;
    assert_eq!(res.body["data"]["delivered"], false, "{}", res.text);
    // The agent asks again on the same session before it ever listened.
    agent_writes(
        &redis_url(),
        &second_id,
        &session_id,
        json!(user),
        json!("1"),
    )
    .await;
    let mut agent = subscribe(&session_id).await;
    assert!(
        first(&mut agent, Duration::from_millis(500))
            .await
            .is_none(),
        "the first request's approval is not the second's"
    );
    assert!(undelivered(&session_id).await.is_none());
    // The second request's own decision arrives.
    let res = app.decide("reject", &second_id, &user, "1", "").await;
    assert_eq!(res.body["data"]["delivered"], true, "{}", res.text);
    let signal = first(&mut agent, Duration::from_secs(2)).await.unwrap();
    assert_eq!(signal["requestId"], second_id.as_str());
}

#[tokio::test]
async fn a_signal_nobody_subscribes_for_is_dropped_when_it_expires() {
    let app = spawn_app().await;
    let (request_id, session_id) = agent_request(Some("user123"), Some("tenant1")).await;
    let res = app
        .decide("approve", &request_id, "user123", "tenant1", "")
        .await;
    assert_eq!(res.body["data"]["delivered"], false, "{}", res.text);
    // As if the five minutes of delivery were over.
    let () = redis()
        .await
        .zadd(dwp_core::hitl::UNDELIVERED_KEY, &session_id, 1)
        .await
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(3);
    while undelivered(&session_id).await.is_some() {
        assert!(std::time::Instant::now() < deadline, "never dropped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let mut agent = subscribe(&session_id).await;
    assert!(
        first(&mut agent, Duration::from_millis(300))
            .await
            .is_none()
    );
}
