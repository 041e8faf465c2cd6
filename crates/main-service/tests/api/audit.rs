//! The decision audit: every decision becomes one `hitl_decision` row, even
//! when PostgreSQL was down while it was made.

use std::time::{Duration, Instant};

use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::helpers::*;
use crate::link::{Link, postgres_addr};

/// (decision, decided_by, tenant, reason, session) rows for `request_id`.
async fn rows(
    db: &TestDb,
    request_id: &str,
) -> Vec<(String, String, String, Option<String>, String)> {
    let conn = db.connect().await;
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "SELECT decision, decided_by, tenant_id, reason, session_id, request FROM hitl_decision WHERE request_id = $1",
            [request_id.into()],
        ))
        .await
        .unwrap();
    let out = rows
        .iter()
        .map(|r| {
            let request: String = r.try_get("", "request").unwrap();
            assert!(
                request.contains(request_id),
                "the request as decided is kept"
            );
            (
                r.try_get("", "decision").unwrap(),
                r.try_get("", "decided_by").unwrap(),
                r.try_get("", "tenant_id").unwrap(),
                r.try_get("", "reason").unwrap(),
                r.try_get("", "session_id").unwrap(),
            )
        })
        .collect();
    conn.close().await.unwrap();
    out
}

async fn wait_for_rows(
    db: &TestDb,
    request_id: &str,
) -> Vec<(String, String, String, Option<String>, String)> {
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let found = rows(db, request_id).await;
        if !found.is_empty() {
            return found;
        }
        assert!(Instant::now() < deadline, "no audit row for {request_id}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn every_decision_leaves_one_audit_row() {
    let app = spawn_app().await;
    let (approved, session_a) = agent_request(Some("user123"), Some("tenant1")).await;
    let (rejected, _) = agent_request(Some("user123"), Some("tenant1")).await;
    assert_eq!(
        app.decide("approve", &approved, "user123", "tenant1", "")
            .await
            .status,
        200
    );
    let reply = app
        .decide(
            "reject",
            &rejected,
            "user123",
            "tenant1",
            r#"{"reason":"too risky"}"#,
        )
        .await;
    assert_eq!(reply.status, 200);
    // A refused second decision adds nothing.
    assert_eq!(
        app.decide("reject", &approved, "user123", "tenant1", "")
            .await
            .status,
        409
    );

    let db = app.db.as_ref().unwrap();
    assert_eq!(
        wait_for_rows(db, &approved).await,
        [(
            "approved".into(),
            "user123".into(),
            "tenant1".into(),
            None,
            session_a
        )]
    );
    let rejected_rows = wait_for_rows(db, &rejected).await;
    assert_eq!(rejected_rows.len(), 1);
    assert_eq!(
        (rejected_rows[0].0.as_str(), rejected_rows[0].3.as_deref()),
        ("rejected", Some("too risky"))
    );
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(rows(db, &approved).await.len(), 1);
}

#[tokio::test]
async fn a_decision_made_while_postgres_is_down_is_audited_once_it_is_back() {
    let db = TestDb::create().await;
    let link = Link::start(postgres_addr()).await;
    let app = spawn_app_in(db.via(link.url(&db.url)), &[]).await;

    link.cut();
    let (request_id, session_id) = agent_request(Some("user123"), Some("tenant1")).await;
    let started = Instant::now();
    let reply = app
        .decide("approve", &request_id, "user123", "tenant1", "")
        .await;
    assert_eq!(
        reply.status, 200,
        "the decision does not wait for PostgreSQL: {}",
        reply.text
    );
    assert!(
        started.elapsed() < Duration::from_millis(500),
        "{:?}",
        started.elapsed()
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert!(
        rows(&db, &request_id).await.is_empty(),
        "not written while the link is cut"
    );

    link.restore();
    let found = wait_for_rows(&db, &request_id).await;
    assert_eq!(
        found,
        [(
            "approved".into(),
            "user123".into(),
            "tenant1".into(),
            None,
            session_id
        )]
    );
    drop(app);
}

#[tokio::test]
async fn a_decision_on_the_longest_session_id_an_agent_may_store_is_audited() {
    let app = spawn_app().await;
    // The real agent's session id for an e-mail address, padded to 512
    // bytes, the most an id may have (the first schema had room for 128).
    let user = "alice.kim@corp.example";
    let prefix = format!("session_{user}_{}_", unique("1795309470"));
    let session_id = format!("{prefix}{}", "x".repeat(512 - prefix.len()));
    assert_eq!(session_id.len(), dwp_core::hitl::MAX_ID_BYTES);
    let request_id = unique("req");
    agent_writes(
        &redis_url(),
        &request_id,
        &session_id,
        serde_json::json!(user),
        serde_json::json!("1"),
    )
    .await;
    let res = app.decide("approve", &request_id, user, "1", "").await;
    assert_eq!(res.status, 200, "{}", res.text);
    let rows = wait_for_rows(app.db.as_ref().unwrap(), &request_id).await;
    assert_eq!(rows[0].4, session_id);
}
