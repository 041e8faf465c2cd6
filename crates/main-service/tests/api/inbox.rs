//! The inbox (`GET /aura/hitl/requests`): every request, from HTTP and
//! from recorded `hitl` events, in its owner's inbox only; decisions and
//! expiry show; a decision must match the context that was shown.

use dwp_core::tasks;
use serde_json::{Value, json};

use crate::helpers::*;

const INBOX: &str = "/aura/hitl/requests";

/// The caller's inbox with `query`, until `done` holds for it (10 s).
async fn inbox_until(
    app: &TestApp,
    user: &str,
    tenant: &str,
    query: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    app.get_until(&format!("{INBOX}{query}"), user, tenant, done)
        .await
}

/// Creates a request over HTTP for `user` of `tenant`; its id.
async fn create(app: &TestApp, user: &str, tenant: &str, context: &Value) -> String {
    let body =
        json!({"sessionId": unique("session"), "actionType": "delete_mail", "context": context});
    let reply = app
        .as_user("POST", INBOX, user, tenant, &body.to_string())
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["data"]["requestId"].as_str().unwrap().to_owned()
}

fn ids(page: &Value) -> Vec<&str> {
    page["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["requestId"].as_str().unwrap())
        .collect()
}

#[tokio::test]
async fn requests_are_in_their_owners_inbox_only_and_decisions_show() {
    let app = spawn_app().await;
    let (alice, tenant, other) = (unique("alice"), unique("t"), unique("t"));
    let bob = unique("bob");
    let context = json!({"to": "boss@example.com", "ids": [1, 2]});
    let first = create(&app, &alice, &tenant, &context).await;
    let second = create(&app, &alice, &tenant, &json!({"n": 2})).await;
    // The same user name in another tenant is another user; so is bob.
    let namesake = create(&app, &alice, &other, &json!({})).await;
    let bobs = create(&app, &bob, &tenant, &json!({})).await;

    let page = inbox_until(&app, &alice, &tenant, "?status=pending", |p| {
        p["totalElements"] == 2
    })
    .await;
    assert_eq!(
        ids(&page),
        [second.as_str(), first.as_str()],
        "newest first"
    );
    let entry = &page["content"][1];
    assert_eq!(entry["actionType"], "delete_mail");
    assert_eq!(entry["context"], context);
    assert_eq!(
        entry["contextDigest"],
        dwp_core::hitl::context_digest(Some(&context))
    );
    assert_eq!(
        (&entry["status"], &entry["userId"]),
        (&json!("pending"), &json!(alice))
    );
    assert!(entry["sessionId"].is_string(), "{entry}");
    let created =
        chrono::DateTime::parse_from_rfc3339(entry["createdAt"].as_str().unwrap()).unwrap();
    let expires =
        chrono::DateTime::parse_from_rfc3339(entry["expiresAt"].as_str().unwrap()).unwrap();
    assert_eq!((expires - created).num_seconds(), 300, "{entry}");
    assert_eq!(
        (&page["page"], &page["size"], &page["totalPages"]),
        (&json!(0), &json!(20), &json!(1))
    );
    let namesakes = inbox_until(&app, &alice, &other, "", |p| p["totalElements"] == 1).await;
    assert_eq!(ids(&namesakes), [namesake.as_str()]);
    let bobs_page = inbox_until(&app, &bob, &tenant, "", |p| p["totalElements"] == 1).await;
    assert_eq!(ids(&bobs_page), [bobs.as_str()]);

    // Decided on one device, it shows as decided everywhere.
    let reply = app
        .decide("reject", &first, &alice, &tenant, r#"{"reason":"not now"}"#)
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let rejected = inbox_until(&app, &alice, &tenant, "?status=rejected", |p| {
        p["totalElements"] == 1
    })
    .await;
    let entry = &rejected["content"][0];
    assert_eq!(
        (&entry["requestId"], &entry["decidedBy"], &entry["reason"]),
        (&json!(first), &json!(alice), &json!("not now"))
    );
    assert!(entry["decidedAt"].is_string(), "{entry}");
    assert_eq!(
        entry["context"], context,
        "the decision keeps what was asked"
    );
    let all = inbox_until(&app, &alice, &tenant, "?size=1&page=1", |p| {
        p["totalElements"] == 2
    })
    .await;
    assert_eq!(
        (ids(&all), &all["totalPages"]),
        (vec![first.as_str()], &json!(2))
    );

    for (query, says) in [
        ("?status=done", "status must be"),
        ("?size=0", "size must be at least 1"),
        ("?page=-1", "page must be"),
    ] {
        let reply = app
            .as_user("GET", &format!("{INBOX}{query}"), &alice, &tenant, "")
            .await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.text);
        assert!(
            reply.body["message"].as_str().unwrap().contains(says),
            "{}",
            reply.text
        );
    }
    let far = app
        .as_user(
            "GET",
            &format!("{INBOX}?page=999999999999999999"),
            &alice,
            &tenant,
            "",
        )
        .await;
    assert_eq!(
        (far.status, far.body["data"]["content"].clone()),
        (200, json!([])),
        "{}",
        far.text
    );
    let anonymous = app.send("GET", INBOX, &[], "").await;
    assert_eq!(anonymous.status, 401);
}

#[tokio::test]
async fn a_request_the_agent_told_only_its_stream_reaches_the_inbox() {
    let app = spawn_app().await;
    let (alice, task_id, request_id) = (
        unique("alice"),
        uuid::Uuid::new_v4().to_string(),
        unique("req"),
    );
    let context = json!({"branch": "main"});
    let hitl = json!({"type": "hitl", "data": {"requestId": request_id, "actionType": "merge",
        "message": "Approve merge?", "context": context, "requiresApproval": true}});
    let mut conn = redis().await;
    for (n, (kind, data)) in [("start", json!({"type": "start"})), ("hitl", hitl)]
        .into_iter()
        .enumerate()
    {
        let fields: Vec<(&str, String)> = vec![
            (tasks::FIELD_TASK_ID, task_id.clone()),
            (tasks::FIELD_USER_ID, alice.clone()),
            (tasks::FIELD_TENANT_ID, "tenant1".into()),
            (tasks::FIELD_PATH, "/api/aura/test/stream".into()),
            (tasks::FIELD_EVENT_ID, (n + 1).to_string()),
            (tasks::FIELD_EVENT_TYPE, kind.into()),
            (tasks::FIELD_DATA, data.to_string()),
        ];
        let _: String = redis::cmd("XADD")
            .arg(tasks::EVENTS_STREAM)
            .arg("*")
            .arg(fields)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let page = inbox_until(&app, &alice, "tenant1", "?status=pending", |p| {
        p["totalElements"] == 1
    })
    .await;
    let entry = &page["content"][0];
    assert_eq!(entry["requestId"], request_id.as_str());
    assert_eq!(entry["taskId"], task_id.as_str());
    assert_eq!(entry["message"], "Approve merge?");
    assert_eq!(entry["actionType"], "merge");
    assert_eq!(
        entry["contextDigest"],
        dwp_core::hitl::context_digest(Some(&context))
    );
    // Someone else of the same tenant sees nothing of it.
    let other = app
        .as_user("GET", INBOX, &unique("bob"), "tenant1", "")
        .await;
    assert_eq!(other.body["data"]["totalElements"], 0, "{}", other.text);
}

#[tokio::test]
async fn a_request_left_alone_expires_and_deciding_it_says_so() {
    let db = TestDb::create().await;
    let app = spawn_app_in(db, &[("HITL_EXPIRY_SECS", "1")]).await;
    let (alice, tenant) = (unique("alice"), unique("t"));
    let id = create(&app, &alice, &tenant, &json!({"x": 1})).await;
    let page = inbox_until(&app, &alice, &tenant, "?status=expired", |p| {
        p["totalElements"] == 1
    })
    .await;
    assert_eq!(ids(&page), [id.as_str()]);
    assert!(page["content"][0]["decidedAt"].is_string(), "{page}");
    let reply = app.decide("approve", &id, &alice, &tenant, "").await;
    assert_eq!(
        (reply.status, reply.body["errorCode"].as_str()),
        (404, Some("E1004")),
        "{}",
        reply.text
    );
    assert!(
        reply.body["message"].as_str().unwrap().contains("expired"),
        "{}",
        reply.text
    );
    // The audit has it.
    let conn = app.db.as_ref().unwrap().connect().await;
    let row = sea_orm::ConnectionTrait::query_one_raw(
        &conn,
        sea_orm::Statement::from_sql_and_values(
            sea_orm::DbBackend::Postgres,
            "SELECT decision, decided_by FROM hitl_decision WHERE request_id = $1",
            [id.clone().into()],
        ),
    )
    .await
    .unwrap()
    .expect("an audit row");
    let decision: String = row.try_get("", "decision").unwrap();
    let by: String = row.try_get("", "decided_by").unwrap();
    assert_eq!((decision.as_str(), by.as_str()), ("expired", "system"));
}

#[tokio::test]
async fn a_decision_on_another_context_than_the_one_shown_is_refused() {
    let app = spawn_app().await;
    let (alice, tenant) = (unique("alice"), unique("t"));
    let context = json!({"to": "boss@example.com"});
    let id = create(&app, &alice, &tenant, &context).await;
    let digest = dwp_core::hitl::context_digest(Some(&context));
    let stale = dwp_core::hitl::context_digest(Some(&json!({"to": "someone@else"})));
    let reply = app
        .decide(
            "approve",
            &id,
            &alice,
            &tenant,
            &json!({"contextDigest": stale}).to_string(),
        )
        .await;
    assert_eq!(
        (reply.status, reply.body["errorCode"].as_str()),
        (409, Some("E3001")),
        "{}",
        reply.text
    );
    assert_eq!(reply.body["data"]["contextDigest"], digest.as_str());
    let stored = app
        .as_user("GET", &format!("{INBOX}/{id}"), &alice, &tenant, "")
        .await;
    assert_eq!(
        stored.body["data"]["status"], "pending",
        "nothing was decided"
    );

    let reply = app
        .decide(
            "approve",
            &id,
            &alice,
            &tenant,
            &json!({"contextDigest": digest.to_uppercase()}).to_string(),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    let session = reply.body["data"]["sessionId"].as_str().unwrap().to_owned();
    let signal = app
        .as_user(
            "GET",
            &format!("/aura/hitl/signals/{session}"),
            &alice,
            &tenant,
            "",
        )
        .await;
    assert_eq!(
        signal.body["data"]["contextDigest"],
        digest.as_str(),
        "{}",
        signal.text
    );
}

#[tokio::test]
async fn the_two_consumers_writing_the_same_requests_in_opposite_orders_never_deadlock() {
    use main_service::audit::Audit;
    use main_service::consumer::{Apply, Entry};
    use main_service::tasks::writer::TaskWriter;

    let app = spawn_app_in(TestDb::create().await, &[("CONSUMERS_ENABLED", "false")]).await;
    let (user, task_id) = (unique("u"), uuid::Uuid::new_v4().to_string());
    let ids: Vec<String> = (0..300).map(|i| format!("req_{i:04}_{user}")).collect();
    // The agent's stream tells them newest first, the decisions come oldest first.
    let hitl: Vec<(&str, Value)> = ids
        .iter()
        .rev()
        .map(|id| {
            (
                "hitl",
                json!({"type": "hitl", "data": {"requestId": id, "actionType": "a"}}),
            )
        })
        .collect();
    let recorded = crate::recorder::entries(&task_id, &user, &hitl);
    let at = chrono::Utc::now().to_rfc3339();
    let decisions: Vec<Entry> = ids
        .iter()
        .enumerate()
        .map(|(n, id)| {
            let record = dwp_core::hitl::DecisionRecord {
                request_id: id,
                session_id: "s",
                tenant_id: "tenant1",
                decided_by: &user,
                decision: "approved",
                reason: "",
                decided_at: &at,
                request: "{}",
            };
            Entry {
                id: format!("1-{n}"),
                fields: record
                    .fields()
                    .into_iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
            }
        })
        .collect();
    let (writer, audit) = (
        TaskWriter::default(),
        Audit {
            expiry: std::time::Duration::from_secs(300),
            feed: None,
        },
    );
    writer.apply(&app.state.db, &recorded).await.unwrap();
    for _ in 0..3 {
        let (written, audited) = tokio::join!(
            writer.apply(&app.state.db, &recorded),
            audit.apply(&app.state.db, &decisions)
        );
        written.expect("the task writer's batch commits");
        audited.expect("the audit's batch commits");
    }
    let approved = inbox_until(&app, &user, "tenant1", "?status=approved", |p| {
        p["totalElements"] == 300
    })
    .await;
    assert_eq!(approved["totalElements"], 300);
}
