//! Approvals that reach people, through the real processes: a run the
//! faithful agent pauses shows up in its owner's inbox and on every feed
//! the owner has open (on any main-service replica), and on no one
//! else's; a decision on one device closes it on the others; a run left
//! alone expires; a feed that reconnects gets exactly what it missed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed unwrap is a failed test, and a scenario reads top to bottom"
)]

use std::time::{Duration, Instant};

use e2e::*;
use serde_json::{Value, json};

const FEED: &str = "/api/aura/hitl/events";

/// `path` through the gateway until `done` holds for its `data` (10 s).
async fn until(
    stack: &Stack,
    token: &str,
    user: &str,
    path: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = stack.as_user(token, user, "GET", path, "").await;
        if status == 200 && done(&body["data"]) {
            return body["data"].clone();
        }
        assert!(Instant::now() < deadline, "{path}: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_paused_run_reaches_every_device_of_its_owner_on_any_replica_and_closes_everywhere() {
    let mut stack = start(&["alice", "bob"]).await;
    let replica = stack.add_main_replica().await;
    let (alice, bob) = (stack.user("alice"), stack.user("bob"));
    let (alice_token, bob_token) = (stack.login(&alice).await, stack.login(&bob).await);
    let tenant = stack.tenant.clone();
    // Alice's laptop through the gateway; her phone on the other replica.
    let mut laptop = Feed::open(stack.gateway, FEED, &tenant, &alice_token, &alice, None).await;
    let mut phone = Feed::open(
        replica,
        "/aura/hitl/events",
        &tenant,
        &alice_token,
        &alice,
        None,
    )
    .await;
    let mut bobs = Feed::open(stack.gateway, FEED, &tenant, &bob_token, &bob, None).await;

    let mut run = stack
        .stream(Some(&alice_token), &alice, "merge feature/x into main")
        .await;
    let task_id = run.task_id.clone().unwrap();
    let (_, request_id) = run.until_hitl().await;
    for feed in [&mut laptop, &mut phone] {
        let new = feed.next().await;
        assert_eq!(
            (new.event.as_str(), new.request()),
            ("hitl_request", request_id.as_str())
        );
        let data = &new.data;
        assert_eq!(
            (&data["taskId"], &data["status"], &data["userId"]),
            (&json!(task_id), &json!("pending"), &json!(alice))
        );
        for field in [
            "actionType",
            "message",
            "context",
            "contextDigest",
            "createdAt",
            "expiresAt",
        ] {
            assert!(!data[field].is_null(), "{field}: {data}");
        }
    }
    let inbox = until(
        &stack,
        &alice_token,
        &alice,
        "/api/aura/hitl/requests?status=pending",
        |p| p["totalElements"] == 1,
    )
    .await;
    assert_eq!(inbox["content"][0]["requestId"], request_id.as_str());

    // Approved from the phone, on the replica that holds the phone's feed.
    let auth = format!("Bearer {alice_token}");
    let (status, body, _) = call(
        replica,
        "POST",
        &format!("/aura/hitl/approve/{request_id}"),
        &[
            ("authorization", &auth),
            ("x-tenant-id", &tenant),
            ("x-user-id", &alice),
        ],
        "",
    )
    .await;
    assert_eq!(status, 200, "{body}");
    for feed in [&mut laptop, &mut phone] {
        let closed = feed.next().await;
        assert_eq!(
            (
                closed.event.as_str(),
                closed.request(),
                closed.data["status"].as_str()
            ),
            ("hitl_decided", request_id.as_str(), Some("approved"))
        );
    }
    // The agent got the decision and finished the run.
    assert_eq!(kinds(&run.rest().await), AFTER_APPROVAL);

    // Bob saw nothing of it: the first event on his feed is his own.
    let mut bobs_run = stack
        .stream(Some(&bob_token), &bob, "merge feature/y into main")
        .await;
    let (_, bobs_request) = bobs_run.until_hitl().await;
    let first = bobs.next().await;
    assert_eq!(
        (first.event.as_str(), first.request()),
        ("hitl_request", bobs_request.as_str())
    );
}

#[tokio::test]
async fn a_run_left_alone_expires_and_a_feed_back_from_a_drop_gets_exactly_what_it_missed() {
    let stack = Stack::start(Options {
        users: &["alice"],
        main_env: &[("HITL_EXPIRY_SECS", "2")],
        ..Options::default()
    })
    .await;
    let alice = stack.user("alice");
    let token = stack.login(&alice).await;
    let tenant = stack.tenant.clone();
    let mut feed = Feed::open(stack.gateway, FEED, &tenant, &token, &alice, None).await;
    let mut run = stack
        .stream(Some(&token), &alice, "merge feature/x into main")
        .await;
    let (_, request_id) = run.until_hitl().await;
    let seen = feed.next().await;
    assert_eq!(
        (seen.event.as_str(), seen.request()),
        ("hitl_request", request_id.as_str())
    );
    // The device drops off; nobody decides.
    drop(feed);
    let expired = until(
        &stack,
        &token,
        &alice,
        "/api/aura/hitl/requests?status=expired",
        |p| p["totalElements"] == 1,
    )
    .await;
    assert_eq!(expired["content"][0]["requestId"], request_id.as_str());
    let (status, body) = stack.approve(&token, &alice, &request_id).await;
    assert_eq!(
        (status, &body["errorCode"]),
        (404, &json!("E1004")),
        "{body}"
    );
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );

    // Back with its last id: exactly the expiry, then live.
    let mut back = Feed::open(stack.gateway, FEED, &tenant, &token, &alice, Some(&seen.id)).await;
    let missed = back.next().await;
    assert_eq!(
        (
            missed.event.as_str(),
            missed.request(),
            missed.data["status"].as_str()
        ),
        ("hitl_expired", request_id.as_str(), Some("expired"))
    );
    drop(run);
    let mut next_run = stack
        .stream(Some(&token), &alice, "merge feature/z into main")
        .await;
    let (_, next_request) = next_run.until_hitl().await;
    let live = back.next().await;
    assert_eq!(
        (live.event.as_str(), live.request()),
        ("hitl_request", next_request.as_str()),
        "nothing repeated, nothing lost"
    );
}
