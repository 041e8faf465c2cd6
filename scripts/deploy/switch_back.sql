-- Switching back to the old main-service (docs/DEPLOY.md): writes what
-- happened here since the switch into the old service's `agent_tasks`.
-- Tasks created here are added; adopted tasks that moved on here are
-- updated. Run once, with main-service stopped, before the old service
-- starts:  psql "$DATABASE_URL" -v ON_ERROR_STOP=1 -f scripts/deploy/switch_back.sql
-- Times go back as UTC without a zone, as the old service wrote them.
BEGIN;

UPDATE agent_tasks o
   SET status = t.status, progress = t.progress, description = t.description,
       input_data = t.input_data, result_data = t.result_data, plan_steps = t.plan_steps,
       hitl_request_id = t.hitl_request_id, error_message = t.error_message,
       started_at = t.started_at AT TIME ZONE 'UTC',
       completed_at = t.completed_at AT TIME ZONE 'UTC',
       updated_at = t.updated_at AT TIME ZONE 'UTC'
  FROM agent_task t
 WHERE o.task_id = t.task_id
   AND t.updated_at AT TIME ZONE 'UTC' > o.updated_at;

INSERT INTO agent_tasks (task_id, user_id, tenant_id, task_type, status, progress,
                         description, input_data, result_data, plan_steps, hitl_request_id,
                         error_message, started_at, completed_at, created_at, updated_at)
SELECT t.task_id, t.user_id, t.tenant_id, t.task_type, t.status, t.progress,
       t.description, t.input_data, t.result_data, t.plan_steps, t.hitl_request_id,
       t.error_message, t.started_at AT TIME ZONE 'UTC', t.completed_at AT TIME ZONE 'UTC',
       t.created_at AT TIME ZONE 'UTC', t.updated_at AT TIME ZONE 'UTC'
  FROM agent_task t
 WHERE NOT EXISTS (SELECT 1 FROM agent_tasks o WHERE o.task_id = t.task_id)
 ORDER BY t.id;

COMMIT;
