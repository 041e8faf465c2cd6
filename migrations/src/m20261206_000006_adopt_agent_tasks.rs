//! Takes over the old main-service's task history. The old service kept
//! its tasks in `agent_tasks` (plural; Flyway `V2`, `V3` adding
//! `created_by`/`updated_by` bigint); pointed at that database, every row
//! of it is copied into `agent_task`, once (this migration is recorded like
//! any other, and the migrator's advisory lock keeps replicas from running
//! it side by side). On a database without `agent_tasks` it only creates
//! the (empty) provenance table.
//!
//! - `agent_task_origin` keeps, per adopted task, what `agent_task` has no
//!   column for: the old row's `id`, `created_by`, `updated_by`, and when
//!   it was adopted. A task of ours has no row there (that is how a switch
//!   back tells the tasks created after the switch, docs/DEPLOY.md).
//! - The old table, its Flyway history (`flyway_schema_history`) and its
//!   indexes are left exactly as they were: the old service can be started
//!   on the database again.
//! - The old columns are `timestamp` without a zone, written by a JVM in
//!   UTC; they are read as UTC (a `timestamptz` column is taken as it is).
//!   A `progress` outside 0..100 is clamped into it (`agent_task` checks
//!   it); a `task_id` that `agent_task` already has keeps our row.

use sea_orm_migration::prelude::*;

/// Creates `agent_task_origin` and adopts `agent_tasks` when present.
#[derive(DeriveMigrationName)]
pub struct Migration;

const ORIGIN: &str = r"
CREATE TABLE IF NOT EXISTS agent_task_origin (
  task_id varchar(36) PRIMARY KEY,
  old_id bigint,
  created_by bigint,
  updated_by bigint,
  adopted_at timestamptz NOT NULL DEFAULT now()
)";

/// One statement: built from the old table's columns as they are (a `V2`
/// database has no `created_by`), so it runs on any version of it.
const ADOPT: &str = r"
DO $$
DECLARE
  has_col text[];
  by_col text;
  upd_col text;
  t_started text;
  t_completed text;
  t_created text;
  t_updated text;
  adopted bigint;
BEGIN
  IF to_regclass('agent_tasks') IS NULL THEN
    RETURN;
  END IF;
  SELECT array_agg(column_name::text || ':' || data_type::text) INTO has_col
    FROM information_schema.columns
   WHERE table_schema = current_schema() AND table_name = 'agent_tasks';
  by_col := CASE WHEN EXISTS (SELECT 1 FROM unnest(has_col) c WHERE c LIKE 'created_by:%')
                 THEN 'o.created_by::bigint' ELSE 'NULL::bigint' END;
  upd_col := CASE WHEN EXISTS (SELECT 1 FROM unnest(has_col) c WHERE c LIKE 'updated_by:%')
                  THEN 'o.updated_by::bigint' ELSE 'NULL::bigint' END;
  t_started := CASE WHEN 'started_at:timestamp without time zone' = ANY(has_col)
                    THEN 'o.started_at AT TIME ZONE ''UTC''' ELSE 'o.started_at' END;
  t_completed := CASE WHEN 'completed_at:timestamp without time zone' = ANY(has_col)
                      THEN 'o.completed_at AT TIME ZONE ''UTC''' ELSE 'o.completed_at' END;
  t_created := CASE WHEN 'created_at:timestamp without time zone' = ANY(has_col)
                    THEN 'o.created_at AT TIME ZONE ''UTC''' ELSE 'o.created_at' END;
  t_updated := CASE WHEN 'updated_at:timestamp without time zone' = ANY(has_col)
                    THEN 'o.updated_at AT TIME ZONE ''UTC''' ELSE 'o.updated_at' END;
  EXECUTE format($f$
    WITH copied AS (
      INSERT INTO agent_task (task_id, user_id, tenant_id, task_type, status, progress,
                              description, input_data, result_data, plan_steps,
                              hitl_request_id, error_message, started_at, completed_at,
                              created_at, updated_at)
      SELECT o.task_id, o.user_id, o.tenant_id, o.task_type, o.status,
             LEAST(GREATEST(COALESCE(o.progress, 0), 0), 100),
             o.description, o.input_data, o.result_data, o.plan_steps,
             o.hitl_request_id, o.error_message, %s, %s,
             COALESCE(%s, now()), COALESCE(%s, now())
        FROM agent_tasks o
       ORDER BY o.id
      ON CONFLICT (task_id) DO NOTHING
      RETURNING task_id
    )
    INSERT INTO agent_task_origin (task_id, old_id, created_by, updated_by)
    SELECT o.task_id, o.id, %s, %s
      FROM agent_tasks o JOIN copied c ON c.task_id = o.task_id
    ON CONFLICT (task_id) DO NOTHING
  $f$, t_started, t_completed, t_created, t_updated, by_col, upd_col);
  GET DIAGNOSTICS adopted = ROW_COUNT;
  RAISE NOTICE 'adopted % task(s) of agent_tasks into agent_task', adopted;
END
$$";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        let db = manager.get_connection();
        db.execute_unprepared(ORIGIN).await?;
        db.execute_unprepared(ADOPT).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        // The adopted rows stay in `agent_task` (they may have moved on
        // since); only the provenance goes. `agent_tasks` was never changed.
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS agent_task_origin")
            .await?;
        Ok(())
    }
}
