//! `dwp_merge_plan_step(stored, step, max_steps)`: merges one plan step
//! into `agent_task.plan_steps` inside PostgreSQL, so that saving a 4 KiB
//! step of a 200-step plan moves the step, not the plan, between
//! main-service and the database. The step replaces the fields of the step
//! with the same `stepId`, or is appended; a plan that cannot be read as a
//! JSON array counts as empty (as main-service reads it); appending past
//! `max_steps` raises `plan_steps_full` (SQLSTATE `P0001`).

use sea_orm_migration::prelude::*;

/// Creates (or drops) the function.
#[derive(DeriveMigrationName)]
pub struct Migration;

const CREATE: &str = r"
CREATE OR REPLACE FUNCTION dwp_merge_plan_step(stored text, step jsonb, max_steps integer)
RETURNS text LANGUAGE plpgsql IMMUTABLE AS $$
DECLARE
  steps jsonb;
  found boolean;
BEGIN
  BEGIN
    steps := stored::jsonb;
  EXCEPTION WHEN others THEN
    steps := NULL;
  END;
  IF steps IS NULL OR jsonb_typeof(steps) <> 'array' THEN
    steps := '[]'::jsonb;
  END IF;
  SELECT bool_or(e->>'stepId' = step->>'stepId') INTO found FROM jsonb_array_elements(steps) e;
  IF coalesce(found, false) THEN
    SELECT jsonb_agg(CASE WHEN e->>'stepId' = step->>'stepId' THEN e || step ELSE e END ORDER BY i)
      INTO steps FROM jsonb_array_elements(steps) WITH ORDINALITY AS x(e, i);
  ELSE
    IF jsonb_array_length(steps) >= max_steps THEN
      RAISE EXCEPTION 'plan_steps_full';
    END IF;
    steps := steps || jsonb_build_array(step);
  END IF;
  RETURN steps::text;
END
$$";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(CREATE).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP FUNCTION IF EXISTS dwp_merge_plan_step(text, jsonb, integer)")
            .await?;
        Ok(())
    }
}
