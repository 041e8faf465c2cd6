//! Taking over from the old system: main-service started on the old
//! main-service's database (its `agent_tasks`, Flyway `V2` + `V3`) shows
//! every old task through the API, and starting again changes nothing.

use sea_orm::ConnectionTrait;
use serde_json::{Value, json};

use crate::helpers::*;

const BASE: &str = "/main/agent/tasks";

/// Flyway's history table of the old main-service after `V1`..`V3`
/// (`agent_tasks` itself is [`testkit::OLD_AGENT_TASKS_V2`], then
/// [`OLD_V3`]).
const OLD_SCHEMA: &str = r"
CREATE TABLE flyway_schema_history (
  installed_rank integer PRIMARY KEY, version varchar(50), description varchar(200) NOT NULL,
  type varchar(20) NOT NULL, script varchar(1000) NOT NULL, checksum integer,
  installed_by varchar(100) NOT NULL, installed_on timestamp NOT NULL DEFAULT now(),
  execution_time integer NOT NULL, success boolean NOT NULL);
INSERT INTO flyway_schema_history VALUES
  (1, '1', 'baseline skeleton', 'SQL', 'V1__baseline_skeleton.sql', 1, 'dwp_user', now(), 5, true),
  (2, '2', 'add agent task tables', 'SQL', 'V2__add_agent_task_tables.sql', 2, 'dwp_user', now(), 9, true),
  (3, '3', 'add agent task audit columns', 'SQL', 'V3__add_agent_task_audit_columns.sql', 3, 'dwp_user', now(), 4, true);
";

/// Then `V2`'s indexes and `V3`.
const OLD_V3: &str = r"
CREATE INDEX idx_agent_tasks_user_id ON agent_tasks(user_id);
CREATE INDEX idx_agent_tasks_tenant_id ON agent_tasks(tenant_id);
ALTER TABLE agent_tasks ADD COLUMN created_by bigint;
ALTER TABLE agent_tasks ADD COLUMN updated_by bigint;
";

/// Old rows: several users, two tenants (one user name in both), every
/// status the old service wrote, plan steps, and a progress the old
/// service never checked.
fn old_rows() -> Vec<Value> {
    let steps = json!([
        {"stepId": "s1", "description": "read the mail", "status": "completed"},
        {"stepId": "s2", "description": "delete it", "status": "pending"}
    ]);
    let row = |task: &str, user: &str, tenant: &str, status: &str, progress: i32| {
        json!({"task_id": task, "user_id": user, "tenant_id": tenant, "task_type": "mail_cleanup",
               "status": status, "progress": progress})
    };
    let mut rows = vec![
        row("old-task-1", "alice", "1", "REQUESTED", 0),
        row("old-task-2", "alice", "1", "IN_PROGRESS", 40),
        row("old-task-3", "alice", "2", "COMPLETED", 100),
        row("old-task-4", "bob", "1", "FAILED", 70),
        row("old-task-5", "bob", "1", "WAITING_APPROVAL", 50),
        row("old-task-6", "carol", "2", "COMPLETED", 150),
    ];
    rows[1]["plan_steps"] = Value::String(steps.to_string());
    rows[1]["description"] = json!("halfway");
    rows[1]["input_data"] = json!("{\"prompt\":\"clean my inbox\"}");
    rows[1]["started_at"] = json!("2026-01-20 09:00:00");
    rows[2]["result_data"] = json!("{\"deleted\":3}");
    rows[2]["completed_at"] = json!("2026-01-21 10:30:00.250");
    rows[3]["error_message"] = json!("mail server down");
    rows[4]["hitl_request_id"] = json!("req_old_5");
    rows
}

async fn build_old_database(db: &TestDb) {
    let conn = db.connect().await;
    conn.execute_unprepared(OLD_SCHEMA).await.unwrap();
    conn.execute_unprepared(testkit::OLD_AGENT_TASKS_V2)
        .await
        .unwrap();
    conn.execute_unprepared(OLD_V3).await.unwrap();
    for (n, row) in old_rows().iter().enumerate() {
        let text = |k: &str| {
            row[k].as_str().map_or("NULL".to_owned(), |v| {
                format!("'{}'", v.replace('\'', "''"))
            })
        };
        let sql = format!(
            "INSERT INTO agent_tasks (task_id, user_id, tenant_id, task_type, status, progress, description, \
             input_data, result_data, plan_steps, hitl_request_id, error_message, started_at, completed_at, \
             created_at, updated_at, created_by, updated_by) VALUES ({}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, {}, \
             {}, {}, '2026-01-1{n} 08:00:00', '2026-01-1{n} 08:05:00', {}, 7)",
            text("task_id"),
            text("user_id"),
            text("tenant_id"),
            text("task_type"),
            text("status"),
            row["progress"],
            text("description"),
            text("input_data"),
            text("result_data"),
            text("plan_steps"),
            text("hitl_request_id"),
            text("error_message"),
            text("started_at"),
            text("completed_at"),
            100 + n,
        );
        conn.execute_unprepared(&sql).await.unwrap();
    }
    conn.close().await.unwrap();
}

async fn count(db: &TestDb, sql: &str) -> i64 {
    let conn = db.connect().await;
    let row = conn
        .query_one_raw(sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            sql,
        ))
        .await
        .unwrap()
        .unwrap();
    let n = row.try_get_by_index::<i64>(0).unwrap();
    conn.close().await.unwrap();
    n
}

#[tokio::test]
async fn the_old_databases_tasks_are_read_back_through_the_api_and_a_second_start_changes_nothing()
{
    let db = TestDb::create().await;
    build_old_database(&db).await;
    let app = spawn_app_in(db, &[]).await;

    for (n, old) in old_rows().iter().enumerate() {
        let (task, user, tenant) = (
            old["task_id"].as_str().unwrap(),
            old["user_id"].as_str().unwrap(),
            old["tenant_id"].as_str().unwrap(),
        );
        let got = app
            .as_user("GET", &format!("{BASE}/{task}"), user, tenant, "")
            .await;
        assert_eq!(got.status, 200, "{task}: {}", got.text);
        let t = &got.body["data"];
        for (api, column) in [
            ("userId", "user_id"),
            ("tenantId", "tenant_id"),
            ("taskType", "task_type"),
            ("status", "status"),
            ("description", "description"),
            ("inputData", "input_data"),
            ("resultData", "result_data"),
            ("hitlRequestId", "hitl_request_id"),
            ("errorMessage", "error_message"),
        ] {
            assert_eq!(t[api], old[column], "{task}.{api}");
        }
        let progress = old["progress"].as_i64().unwrap().min(100);
        assert_eq!(t["progress"], progress, "{task}: clamped into 0..100");
        assert_eq!(
            t["createdAt"],
            format!("2026-01-1{n}T08:00:00.000Z"),
            "{task}: read as UTC"
        );
        assert_eq!(t["updatedAt"], format!("2026-01-1{n}T08:05:00.000Z"));
        let steps: Value = old["plan_steps"]
            .as_str()
            .map_or(json!([]), |s| serde_json::from_str(s).unwrap());
        assert_eq!(t["planSteps"], steps, "{task}");
    }
    let second = &old_rows()[1];
    let shown = app
        .as_user("GET", &format!("{BASE}/old-task-2"), "alice", "1", "")
        .await;
    assert_eq!(shown.body["data"]["startedAt"], "2026-01-20T09:00:00.000Z");
    assert_eq!(second["status"], "IN_PROGRESS");
    let done = app
        .as_user("GET", &format!("{BASE}/old-task-3"), "alice", "2", "")
        .await;
    assert_eq!(done.body["data"]["completedAt"], "2026-01-21T10:30:00.250Z");

    // The list is each caller's own, the same name in another tenant apart.
    let alice_1 = app.as_user("GET", BASE, "alice", "1", "").await;
    assert_eq!(alice_1.body["data"]["totalElements"], 2);
    let bob_in_2 = app
        .as_user("GET", &format!("{BASE}/old-task-4"), "bob", "2", "")
        .await;
    assert_eq!(bob_in_2.status, 404, "another tenant's bob sees nothing");

    // An adopted task lives on: started through our API.
    let started = app
        .as_user(
            "POST",
            &format!("{BASE}/old-task-1/start"),
            "alice",
            "1",
            "",
        )
        .await;
    assert_eq!(started.status, 200, "{}", started.text);

    let group = app.state.config.consumer.group.clone();
    let db = app.stop().await.unwrap();
    testkit::destroy_groups(&redis_url(), &group);
    let old_count = "SELECT count(*) FROM agent_tasks";
    let provenance =
        "SELECT count(*) FROM agent_task_origin WHERE created_by >= 100 AND updated_by = 7";
    assert_eq!(count(&db, old_count).await, 6, "the old table is untouched");
    assert_eq!(
        count(&db, provenance).await,
        6,
        "created_by/updated_by kept"
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM flyway_schema_history").await,
        3
    );

    // A second start: nothing adopted again, nothing reset.
    let app = spawn_app_in(db, &[]).await;
    let list = |user: &'static str, tenant: &'static str| {
        let app = &app;
        async move { app.as_user("GET", BASE, user, tenant, "").await }
    };
    assert_eq!(list("alice", "1").await.body["data"]["totalElements"], 2);
    assert_eq!(list("bob", "1").await.body["data"]["totalElements"], 2);
    let again = app
        .as_user("GET", &format!("{BASE}/old-task-1"), "alice", "1", "")
        .await;
    assert_eq!(again.body["data"]["status"], "IN_PROGRESS", "not reset");
    let created = app
        .as_user("POST", BASE, "alice", "1", r#"{"taskType":"after_switch"}"#)
        .await;
    assert_eq!(created.status, 201, "{}", created.text);
    let db = app.db.as_ref().unwrap();
    assert_eq!(count(db, "SELECT count(*) FROM agent_task").await, 7);

    // Switching back: the old table gets what happened here.
    let conn = db.connect().await;
    let sql = include_str!("../../../../scripts/deploy/switch_back.sql");
    conn.execute_unprepared(sql).await.unwrap();
    conn.close().await.unwrap();
    assert_eq!(count(db, old_count).await, 7, "the new task goes back");
    let moved =
        "SELECT count(*) FROM agent_tasks WHERE task_id = 'old-task-1' AND status = 'IN_PROGRESS'";
    assert_eq!(
        count(db, moved).await,
        1,
        "the adopted task's progress goes back"
    );
}
