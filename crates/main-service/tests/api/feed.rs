//! The live feed (`GET /aura/hitl/events`): the caller's pending requests
//! on connect, then new, decided and expired ones as they happen, on every
//! device and replica, resumable with `Last-Event-ID`.

use std::time::Duration;

use http_body_util::BodyExt;
use main_service::hitl::publish::{Change, Publisher, owner_stream};
use main_service::store::Store;
use serde_json::{Value, json};
use testkit::SseBody;

use crate::helpers::*;

const EVENTS: &str = "/aura/hitl/events";

type Seen = testkit::SseEvent;

struct Feed {
    body: SseBody,
}

impl Feed {
    /// The next event (20 s at most).
    async fn next(&mut self) -> Seen {
        Seen::parse(&self.body.next().await.expect("a feed event"))
    }

    /// The next `n` events.
    async fn take(&mut self, n: usize) -> Vec<Seen> {
        let mut seen = Vec::with_capacity(n);
        for _ in 0..n {
            seen.push(self.next().await);
        }
        seen
    }
}

/// Opens `user`'s feed on `client`, after `last` when given.
async fn open(client: &Client, user: &str, tenant: &str, last: Option<&str>) -> Feed {
    let response = try_open(client, user, tenant, last).await;
    assert_eq!(response.status(), 200);
    assert_eq!(
        response.headers()["content-type"],
        "text/event-stream",
        "an event stream"
    );
    Feed {
        body: SseBody::new(response.into_body()),
    }
}

async fn try_open(
    client: &Client,
    user: &str,
    tenant: &str,
    last: Option<&str>,
) -> hyper::Response<hyper::body::Incoming> {
    let token = bearer(user, tenant);
    let token = token.strip_prefix("Bearer ").unwrap_or(&token);
    testkit::open_feed(client.addr, EVENTS, tenant, token, user, last)
        .await
        .expect("the feed answers")
}

/// Creates a request over HTTP for `user` of `tenant`; its id.
async fn create(app: &TestApp, user: &str, tenant: &str) -> String {
    let body = json!({"sessionId": unique("session"), "actionType": "delete_mail", "context": {"ids": [1, 2, 3]}});
    let reply = app
        .as_user(
            "POST",
            "/aura/hitl/requests",
            user,
            tenant,
            &body.to_string(),
        )
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["data"]["requestId"].as_str().unwrap().to_owned()
}

/// Waits until the inbox of `user` lists `n` pending requests.
async fn pending(app: &TestApp, user: &str, tenant: &str, n: u64) {
    app.get_until("/aura/hitl/requests?status=pending", user, tenant, |p| {
        p["totalElements"] == n
    })
    .await;
}

#[tokio::test]
async fn every_device_of_the_owner_sees_requests_come_and_go_and_no_one_else_does() {
    let app = spawn_app().await;
    let (alice, bob, tenant, other) = (unique("alice"), unique("bob"), unique("t"), unique("t"));
    let first = create(&app, &alice, &tenant).await;
    pending(&app, &alice, &tenant, 1).await;

    let mut laptop = open(&app, &alice, &tenant, None).await;
    let mut phone = open(&app, &alice, &tenant, None).await;
    // The same user name in another tenant, and another user of the tenant.
    let mut namesake = open(&app, &alice, &other, None).await;
    let mut bobs = open(&app, &bob, &tenant, None).await;
    for feed in [&mut laptop, &mut phone] {
        let listed = feed.next().await;
        assert_eq!(
            (listed.event.as_str(), listed.request()),
            ("hitl_pending", first.as_str())
        );
        assert!(!listed.id.is_empty(), "every event has an id");
        // (`message` comes with the agent's own requests, not with the API's.)
        for field in [
            "actionType",
            "context",
            "contextDigest",
            "createdAt",
            "expiresAt",
        ] {
            assert!(!listed.data[field].is_null(), "{field}: {}", listed.data);
        }
        assert_eq!(listed.data["status"], "pending");
    }

    let second = create(&app, &alice, &tenant).await;
    for feed in [&mut laptop, &mut phone] {
        let new = feed.next().await;
        assert_eq!(
            (
                new.event.as_str(),
                new.request(),
                new.data["status"].as_str()
            ),
            ("hitl_request", second.as_str(), Some("pending"))
        );
        assert_eq!(new.data["actionType"], "delete_mail");
    }
    // Approved from the phone: the laptop sees it closed.
    let reply = app.decide("approve", &second, &alice, &tenant, "").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    for feed in [&mut laptop, &mut phone] {
        let decided = feed.next().await;
        assert_eq!(
            (decided.event.as_str(), decided.request()),
            ("hitl_decided", second.as_str())
        );
        assert_eq!(
            (&decided.data["status"], &decided.data["decidedBy"]),
            (&json!("approved"), &json!(alice))
        );
    }

    // The others saw none of it: their first events are their own.
    let theirs = create(&app, &alice, &other).await;
    let namesakes = namesake.next().await;
    assert_eq!(
        (namesakes.event.as_str(), namesakes.request()),
        ("hitl_request", theirs.as_str())
    );
    let bobs_own = create(&app, &bob, &tenant).await;
    assert_eq!(bobs.next().await.request(), bobs_own);
}

#[tokio::test]
async fn a_feed_reconnecting_with_its_last_event_id_gets_exactly_what_it_missed() {
    let app = spawn_app().await;
    let (alice, tenant) = (unique("alice"), unique("t"));
    let mut feed = open(&app, &alice, &tenant, None).await;
    let first = create(&app, &alice, &tenant).await;
    let seen = feed.next().await;
    assert_eq!(seen.request(), first);
    drop(feed);

    // Missed while away: a new request, and the first one rejected.
    let second = create(&app, &alice, &tenant).await;
    pending(&app, &alice, &tenant, 2).await;
    let reply = app
        .decide("reject", &first, &alice, &tenant, r#"{"reason":"no"}"#)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    pending(&app, &alice, &tenant, 1).await;

    let mut back = open(&app, &alice, &tenant, Some(&seen.id)).await;
    let missed = back.take(2).await;
    let got: Vec<(&str, &str)> = missed
        .iter()
        .map(|s| (s.event.as_str(), s.request()))
        .collect();
    assert_eq!(
        got,
        [
            ("hitl_request", second.as_str()),
            ("hitl_decided", first.as_str())
        ]
    );
    assert_eq!(missed[1].data["reason"], "no");
    assert!(missed[0].id > seen.id && missed[1].id > missed[0].id);
    // Then live, with nothing repeated.
    let third = create(&app, &alice, &tenant).await;
    let live = back.next().await;
    assert_eq!(
        (live.event.as_str(), live.request()),
        ("hitl_request", third.as_str())
    );

    // An id older than what is kept (or not an id) starts over with the list.
    for stale in ["1-0", "yesterday"] {
        let mut again = open(&app, &alice, &tenant, Some(stale)).await;
        let listed = again.take(2).await;
        assert!(
            listed.iter().all(|s| s.event == "hitl_pending"),
            "{listed:?}"
        );
        let mut ids: Vec<&str> = listed.iter().map(Seen::request).collect();
        ids.sort_unstable();
        let mut want = vec![second.as_str(), third.as_str()];
        want.sort_unstable();
        assert_eq!(ids, want);
    }
}

#[tokio::test]
async fn a_decision_on_one_replica_reaches_a_feed_held_by_another() {
    let app = spawn_app().await;
    let db_url = app.db.as_ref().unwrap().url.clone();
    // A second replica on the same database and Redis, without consumers.
    let replica = spawn_app_with(config_with(
        &redis_url(),
        &db_url,
        &[("DB_AUTO_MIGRATE", "false"), ("CONSUMERS_ENABLED", "false")],
    ))
    .await;
    let (alice, tenant) = (unique("alice"), unique("t"));
    let id = create(&app, &alice, &tenant).await;
    pending(&app, &alice, &tenant, 1).await;
    let mut feed = open(&replica, &alice, &tenant, None).await;
    assert_eq!(feed.next().await.event, "hitl_pending");
    let reply = app.decide("approve", &id, &alice, &tenant, "").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let decided = feed.next().await;
    assert_eq!(
        (decided.event.as_str(), decided.request()),
        ("hitl_decided", id.as_str())
    );
}

#[tokio::test]
async fn a_request_left_alone_is_announced_expired() {
    let db = TestDb::create().await;
    let app = spawn_app_in(db, &[("HITL_EXPIRY_SECS", "1")]).await;
    let (alice, tenant) = (unique("alice"), unique("t"));
    let mut feed = open(&app, &alice, &tenant, None).await;
    let id = create(&app, &alice, &tenant).await;
    let events = feed.take(2).await;
    let got: Vec<(&str, &str)> = events
        .iter()
        .map(|s| (s.event.as_str(), s.request()))
        .collect();
    assert_eq!(
        got,
        [("hitl_request", id.as_str()), ("hitl_expired", id.as_str())]
    );
    assert_eq!(events[1].data["status"], "expired");
}

#[tokio::test]
async fn feeds_are_capped_per_user_kept_alive_and_refused_without_a_token() {
    let db = TestDb::create().await;
    let app = spawn_app_in(
        db,
        &[
            ("HITL_FEED_MAX_PER_USER", "1"),
            ("HITL_FEED_HEARTBEAT_SECS", "1"),
        ],
    )
    .await;
    let (alice, tenant) = (unique("alice"), unique("t"));
    let held = try_open(&app, &alice, &tenant, None).await;
    assert_eq!(held.status(), 200);
    let refused = try_open(&app, &alice, &tenant, None).await;
    assert_eq!(refused.status(), 429);
    let text = refused.into_body().collect().await.unwrap().to_bytes();
    let body: Value = serde_json::from_slice(&text).unwrap();
    assert_eq!(body["errorCode"], "E1001", "{body}");
    // Another user is not held back by alice's.
    assert_eq!(
        try_open(&app, &unique("bob"), &tenant, None).await.status(),
        200
    );
    // Silence is filled with comments.
    let mut body = held.into_body();
    let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("a heartbeat within seconds")
        .unwrap()
        .unwrap();
    let data = frame.into_data().unwrap();
    assert_eq!(&data[..], b": keep-alive\n\n");
    // Closing the feed frees its place.
    drop(body);
    let deadline = std::time::Instant::now() + Duration::from_secs(5);
    while try_open(&app, &alice, &tenant, None).await.status() != 200 {
        assert!(
            std::time::Instant::now() < deadline,
            "the place was never freed"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let anonymous = app.send("GET", EVENTS, &[], "").await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn publishing_is_idempotent_and_a_late_pending_never_follows_a_decision() {
    let config = config(&redis_url());
    let publisher = Publisher::new(
        Store::new(&config.redis, Duration::from_secs(1), 0),
        Duration::from_secs(3600),
    );
    let (alice, tenant, request) = (unique("alice"), unique("t"), unique("req"));
    let change = |status: &str| {
        Change::new(
            &tenant,
            &alice,
            request.clone(),
            status.into(),
            json!({"requestId": request, "status": status}).to_string(),
        )
    };
    for status in ["pending", "pending", "approved", "approved", "pending"] {
        publisher.publish(&[change(status)]).await.unwrap();
    }
    let owner = dwp_core::hitl::owner_field(&tenant, &alice);
    let mut conn = redis().await;
    let entries: Vec<(String, Vec<(String, String)>)> = redis::cmd("XRANGE")
        .arg(owner_stream(&owner))
        .arg("-")
        .arg("+")
        .query_async(&mut conn)
        .await
        .unwrap();
    let events: Vec<&str> = entries
        .iter()
        .map(|(_, fields)| {
            fields
                .iter()
                .find(|(k, _)| k == "event")
                .unwrap()
                .1
                .as_str()
        })
        .collect();
    assert_eq!(events, ["hitl_request", "hitl_decided"]);
    let ttl: i64 = redis::cmd("TTL")
        .arg(owner_stream(&owner))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert!(
        (3500..=3600).contains(&ttl),
        "kept for the retention: {ttl}"
    );
}

#[tokio::test]
async fn a_stopping_service_ends_its_feeds_instead_of_waiting_for_them() {
    let app = spawn_app().await;
    let (alice, tenant) = (unique("alice"), unique("t"));
    let held = try_open(&app, &alice, &tenant, None).await;
    assert_eq!(held.status(), 200);
    let metrics = app.admin.send("GET", "/metrics", &[], "").await.text;
    assert!(
        metrics.lines().any(|l| l == "main_hitl_feeds_open 1"),
        "the open feed is counted"
    );
    let started = std::time::Instant::now();
    // The shutdown's grace is MAIN_REQUEST_TIMEOUT_SECS (30): a feed must
    // not hold it.
    let _db = app.stop().await;
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "stopping took {:?}",
        started.elapsed()
    );
    let mut body = held.into_body();
    let ended = tokio::time::timeout(Duration::from_secs(5), async {
        while let Some(Ok(_)) = body.frame().await {}
    })
    .await;
    assert!(ended.is_ok(), "the feed ended");
}

#[tokio::test]
async fn a_feed_ends_at_its_maximum_age_and_resumes_where_it_was() {
    let db = TestDb::create().await;
    let app = spawn_app_in(db, &[("HITL_FEED_MAX_SECS", "1")]).await;
    let (alice, tenant) = (unique("alice"), unique("t"));
    let mut feed = open(&app, &alice, &tenant, None).await;
    let id = create(&app, &alice, &tenant).await;
    let seen = feed.next().await;
    assert_eq!(seen.request(), id);
    let ended = tokio::time::timeout(Duration::from_secs(5), feed.body.next()).await;
    assert!(
        matches!(ended, Ok(None)),
        "the feed ended by itself: {ended:?}"
    );
    // Decided while it was away; back with its last id: that, nothing again.
    let reply = app.decide("approve", &id, &alice, &tenant, "").await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    pending(&app, &alice, &tenant, 0).await;
    let mut back = open(&app, &alice, &tenant, Some(&seen.id)).await;
    let next = back.next().await;
    assert_eq!(
        (next.event.as_str(), next.request()),
        ("hitl_decided", id.as_str())
    );
}

#[tokio::test]
async fn a_request_listed_on_connect_is_not_announced_again_when_its_announcement_comes_late() {
    use main_service::hitl::inbox::{self, RequestRow};

    let app = spawn_app_in(TestDb::create().await, &[("CONSUMERS_ENABLED", "false")]).await;
    let (alice, tenant, id) = (unique("alice"), unique("t"), unique("req"));
    let db = app.state.db.conn().unwrap();
    let now = chrono::Utc::now().fixed_offset();
    let row = |status: &'static str| RequestRow {
        request_id: id.clone(),
        session_id: None,
        task_id: None,
        tenant_id: tenant.clone(),
        user_id: alice.clone(),
        action_type: Some("merge".into()),
        message: None,
        context: None,
        status,
        created_at: now,
        expires_at: now + chrono::Duration::minutes(5),
        decided_by: (status != "pending").then(|| alice.clone()),
        decided_at: (status != "pending").then_some(now),
        reason: None,
    };
    // Committed (as a consumer does), not yet announced: the list has it.
    inbox::record(db, row("pending")).await.unwrap();
    let mut feed = open(&app, &alice, &tenant, None).await;
    let listed = feed.next().await;
    assert_eq!(
        (listed.event.as_str(), listed.request()),
        ("hitl_pending", id.as_str())
    );
    // The consumer's announcement, after the list was read, then a decision.
    let publisher = Publisher::new(
        Store::new(&app.state.config.redis, Duration::from_secs(1), 0),
        Duration::from_secs(3600),
    );
    let ids = [id.clone()];
    publisher
        .publish(&inbox::current(db, &ids).await.unwrap())
        .await
        .unwrap();
    inbox::record(db, row("approved")).await.unwrap();
    publisher
        .publish(&inbox::current(db, &ids).await.unwrap())
        .await
        .unwrap();
    let next = feed.next().await;
    assert_eq!(
        (next.event.as_str(), next.request()),
        ("hitl_decided", id.as_str()),
        "no second announcement of what was listed"
    );
}
