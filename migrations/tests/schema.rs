//! The migrations against a real PostgreSQL, in a fresh database per test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed unwrap is a failed test, and a scenario reads top to bottom"
)]

use migration::{Migrator, MigratorTrait};
use sea_orm_migration::sea_orm::{
    ConnectionTrait, Database, DatabaseConnection, DbBackend, Statement,
};

/// A fresh database (dropped with `_handle`) and a connection to it.
struct FreshDb {
    _handle: testkit::TestDb,
    db: DatabaseConnection,
}

async fn fresh_db() -> FreshDb {
    let handle = testkit::TestDb::create().await;
    FreshDb {
        db: Database::connect(&handle.url).await.unwrap(),
        _handle: handle,
    }
}

impl FreshDb {
    async fn drop(self) {
        self.db.close().await.unwrap();
    }

    async fn rows(&self, sql: &str) -> Vec<Vec<String>> {
        let rows = self
            .db
            .query_all_raw(Statement::from_string(DbBackend::Postgres, sql))
            .await
            .unwrap();
        rows.iter()
            .map(|row| {
                (0..)
                    .map_while(|i| row.try_get_by_index::<Option<String>>(i).ok())
                    .map(|v| v.unwrap_or_default())
                    .collect()
            })
            .collect()
    }
}

#[tokio::test]
async fn agent_task_has_exactly_the_contract_columns_and_indexes() {
    let fresh = fresh_db().await;
    Migrator::up(&fresh.db, None).await.unwrap();

    let columns = fresh
        .rows(
            "SELECT column_name::text, data_type::text, COALESCE(character_maximum_length::text, '') \
             FROM information_schema.columns WHERE table_name = 'agent_task' ORDER BY ordinal_position",
        )
        .await;
    let want = [
        ("id", "bigint", ""),
        ("task_id", "character varying", "36"),
        ("user_id", "character varying", "50"),
        ("tenant_id", "character varying", "50"),
        ("task_type", "character varying", "100"),
        ("status", "character varying", "20"),
        ("progress", "integer", ""),
        ("description", "text", ""),
        ("input_data", "text", ""),
        ("result_data", "text", ""),
        ("plan_steps", "text", ""),
        ("hitl_request_id", "character varying", "100"),
        ("error_message", "text", ""),
        ("started_at", "timestamp with time zone", ""),
        ("completed_at", "timestamp with time zone", ""),
        ("created_at", "timestamp with time zone", ""),
        ("updated_at", "timestamp with time zone", ""),
    ];
    let got: Vec<(&str, &str, &str)> = columns
        .iter()
        .map(|c| (c[0].as_str(), c[1].as_str(), c[2].as_str()))
        .collect();
    assert_eq!(got, want);

    let default = fresh
        .rows("SELECT column_default::text FROM information_schema.columns WHERE table_name = 'agent_task' AND column_name = 'id'")
        .await;
    assert!(
        default[0][0].starts_with("nextval("),
        "id is a bigserial: {default:?}"
    );

    let indexes = fresh
        .rows("SELECT indexdef::text FROM pg_indexes WHERE tablename = 'agent_task'")
        .await;
    let defs: Vec<&str> = indexes.iter().map(|r| r[0].as_str()).collect();
    for column in ["user_id", "tenant_id", "status", "created_at"] {
        assert!(
            defs.iter().any(|d| d.ends_with(&format!("({column})"))),
            "index on {column}: {defs:?}"
        );
    }
    assert!(
        defs.iter()
            .any(|d| d.contains("UNIQUE") && d.ends_with("(task_id)")),
        "{defs:?}"
    );

    let bad = fresh
        .db
        .execute_unprepared("INSERT INTO agent_task (task_id, user_id, tenant_id, task_type, progress) VALUES ('t', 'u', 'x', 'y', 101)")
        .await;
    assert!(bad.is_err(), "progress is checked to 0..100");
    fresh.drop().await;
}

#[tokio::test]
async fn decisions_and_users_are_unique_where_it_matters_and_migrating_twice_is_harmless() {
    let fresh = fresh_db().await;
    Migrator::up(&fresh.db, None).await.unwrap();
    Migrator::up(&fresh.db, None).await.unwrap();
    let tables = fresh
        .rows("SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'public' ORDER BY 1")
        .await;
    let names: Vec<&str> = tables.iter().map(|r| r[0].as_str()).collect();
    for table in ["agent_task", "app_user", "hitl_decision"] {
        assert!(names.contains(&table), "{table} in {names:?}");
    }
    let insert = "INSERT INTO hitl_decision (request_id, session_id, tenant_id, decided_by, decision, decided_at, request) \
                  VALUES ('req_1', 's', 't', 'u', 'approved', now(), '{}')";
    fresh.db.execute_unprepared(insert).await.unwrap();
    assert!(
        fresh.db.execute_unprepared(insert).await.is_err(),
        "one decision per request"
    );

    let user = "INSERT INTO app_user (tenant_id, username, password_hash) VALUES ('tenant1', 'user123', 'x')";
    fresh.db.execute_unprepared(user).await.unwrap();
    assert!(
        fresh.db.execute_unprepared(user).await.is_err(),
        "username unique per tenant"
    );
    fresh
        .db
        .execute_unprepared("INSERT INTO app_user (tenant_id, username, password_hash) VALUES ('tenant2', 'user123', 'x')")
        .await
        .expect("the same username in another tenant");
    fresh.drop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_migrators_at_once_on_an_empty_database_all_succeed() {
    let handle = testkit::TestDb::create().await;
    let runs = (0..8).map(|_| {
        let url = handle.url.clone();
        tokio::spawn(
            async move { migration::up_locked(&url, std::time::Duration::from_secs(10)).await },
        )
    });
    for run in futures_util::future::join_all(runs).await {
        run.unwrap()
            .expect("every migrator succeeds, one after another");
    }
    let db = Database::connect(&handle.url).await.unwrap();
    let applied = db
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT count(*) FROM seaql_migrations",
        ))
        .await
        .unwrap()
        .unwrap()
        .try_get_by_index::<i64>(0)
        .unwrap();
    assert_eq!(applied as usize, Migrator::migrations().len());
    db.close().await.unwrap();
}

/// Two rows of the old service's `agent_tasks` as its Flyway `V2` left it
/// (no `created_by`/`updated_by` yet).
const OLD_V2_ROWS: &str = r"
INSERT INTO agent_tasks (task_id, user_id, tenant_id, task_type, status, description)
  VALUES ('shared-id', 'old', '1', 'x', 'COMPLETED', 'the old one'),
         ('only-old', 'old', '1', 'x', 'FAILED', 'old only');
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_v2_database_is_adopted_once_by_eight_migrators_and_our_rows_win() {
    let fresh = fresh_db().await;
    // Ours first (the migrations before the adoption), with a task whose
    // id the old table also has.
    Migrator::up(&fresh.db, Some(5)).await.unwrap();
    fresh
        .db
        .execute_unprepared("INSERT INTO agent_task (task_id, user_id, tenant_id, task_type, description) VALUES ('shared-id', 'new', '1', 'x', 'ours')")
        .await
        .unwrap();
    fresh
        .db
        .execute_unprepared(testkit::OLD_AGENT_TASKS_V2)
        .await
        .unwrap();
    fresh.db.execute_unprepared(OLD_V2_ROWS).await.unwrap();
    let url = fresh._handle.url.clone();
    let runs = (0..8).map(|_| {
        let url = url.clone();
        tokio::spawn(
            async move { migration::up_locked(&url, std::time::Duration::from_secs(10)).await },
        )
    });
    for run in futures_util::future::join_all(runs).await {
        run.unwrap().expect("every migrator succeeds");
    }
    let rows = fresh
        .rows("SELECT task_id::text, user_id::text, description FROM agent_task ORDER BY task_id")
        .await;
    assert_eq!(
        rows,
        [
            ["only-old", "old", "old only"],
            ["shared-id", "new", "ours"]
        ],
        "adopted once; a task id we have keeps our row"
    );
    let origin = fresh
        .rows("SELECT task_id::text, COALESCE(created_by::text, 'none') FROM agent_task_origin")
        .await;
    assert_eq!(origin, [["only-old", "none"]]);
    fresh.drop().await;
}

#[tokio::test]
async fn without_an_old_table_the_adoption_only_makes_its_provenance_table() {
    let fresh = fresh_db().await;
    Migrator::up(&fresh.db, None).await.unwrap();
    let tables = fresh
        .rows("SELECT count(*)::text FROM agent_task_origin UNION ALL SELECT count(*)::text FROM agent_task")
        .await;
    assert_eq!(tables, [["0"], ["0"]]);
    fresh.drop().await;
}
