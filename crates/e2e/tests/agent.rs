//! The stack against an agent that behaves like the real Aura-Platform
//! (aura-sim's default): session ids from the raw token `sub` (an e-mail
//! address with a space here), a numeric tenant, a subscription that comes
//! only after the `hitl` event, the first message taken whatever it says,
//! and (asked for here) the second approval the real agent asks for.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed unwrap is a failed test, and a scenario reads top to bottom"
)]

use std::time::Duration;

use e2e::*;
use serde_json::Value;

/// The stored request's session id.
async fn session_of(stack: &Stack, token: &str, user: &str, request_id: &str) -> String {
    let (status, request) = stack
        .as_user(
            token,
            user,
            "GET",
            &format!("/api/aura/hitl/requests/{request_id}"),
            "",
        )
        .await;
    assert_eq!(status, 200, "{request}");
    request["data"]["sessionId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn an_approval_made_before_the_agent_listens_reaches_it_once_and_the_second_ask_waits() {
    let stack = Stack::start(Options {
        users: &["alice"],
        tenant: Some("1"),
        // Long enough that every approval below is decided before it listens.
        aura_env: &[
            ("AURA_SIM_SUBSCRIBE_DELAY_MS", "400"),
            ("AURA_SIM_ASK_TWICE", "true"),
        ],
        ..Options::default()
    })
    .await;
    let alice = stack.user("alice");
    assert!(alice.contains('@') && alice.contains(' '), "{alice}");
    let token = stack.login(&alice).await;
    let mut stream = stack.stream(Some(&token), &alice, "merge feature/x").await;
    let (_, first) = stream.until_hitl().await;
    let (status, reply) = stack.approve(&token, &alice, &first).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(reply["data"]["delivered"], false, "{reply}");
    let session_id = session_of(&stack, &token, &alice, &first).await;
    assert!(
        session_id.starts_with(&format!("session_{alice}_")),
        "{session_id}"
    );

    // Delivered once it listened: the agent resumes and asks again on the
    // same session. Had the first signal been sent twice, that second
    // wait would end at once.
    let (_, second) = stream.until_hitl().await;
    assert_ne!(first, second);
    assert_eq!(
        session_of(&stack, &token, &alice, &second).await,
        session_id
    );
    let nothing = tokio::time::timeout(Duration::from_millis(1500), stream.next()).await;
    assert!(
        nothing.is_err(),
        "the second ask resumed by itself: {nothing:?}"
    );

    let (status, reply) = stack.approve(&token, &alice, &second).await;
    assert_eq!(status, 200, "{reply}");
    assert_eq!(kinds(&stream.rest().await), AFTER_APPROVAL);
    let (_, metrics, _) = call(stack.main_admin, "GET", "/metrics", &[], "").await;
    assert!(
        metrics.contains("main_hitl_signal_deliveries_total{result=\"queued\"} 1")
            && metrics.contains("main_hitl_signal_deliveries_total{result=\"at_once\"} 1"),
        "{metrics}"
    );
}

#[tokio::test]
async fn a_rejection_made_at_once_ends_the_run_and_a_repeat_is_answered_not_refused() {
    let stack = Stack::start(Options {
        users: &["bob"],
        tenant: Some("1"),
        ..Options::default()
    })
    .await;
    let bob = stack.user("bob");
    let token = stack.login(&bob).await;
    let mut stream = stack
        .stream(Some(&token), &bob, "delete the old mail")
        .await;
    let (_, request_id) = stream.until_hitl().await;
    let path = format!("/api/aura/hitl/reject/{request_id}");
    let body = r#"{"reason":"Keep it"}"#;
    let (status, reply) = stack.as_user(&token, &bob, "POST", &path, body).await;
    assert_eq!(status, 200, "{reply}");
    // A double click.
    let (status, again) = stack.as_user(&token, &bob, "POST", &path, body).await;
    assert_eq!(
        (status, &again["data"]["alreadyProcessed"]),
        (200, &Value::Bool(true))
    );
    let rest = stream.rest().await;
    assert_eq!(kinds(&rest), ["error", "[DONE]"]);
    let error: Value = serde_json::from_str(data_of(&rest[0])).unwrap();
    assert_eq!(
        (error["errorType"].as_str(), error["error"].as_str()),
        (Some("RejectionError"), Some("Keep it"))
    );
}
