//! `hitl_request`: every HITL request main-service has heard of, one row
//! each, for the inbox (`GET /aura/hitl/requests`): from the recorded
//! agent streams' `hitl` events and the request lifecycle stream (created
//! over HTTP, decided, expired). The owner is who the request is for;
//! `status` moves from `pending` once, to `approved`, `rejected` or
//! `expired`. `seq` orders rows made in the same instant by when they
//! were first heard of.

use sea_orm_migration::prelude::*;

/// Creates (or drops) the table.
#[derive(DeriveMigrationName)]
pub struct Migration;

const CREATE: &str = r"
CREATE TABLE hitl_request (
  request_id varchar(512) PRIMARY KEY,
  seq bigserial NOT NULL,
  session_id varchar(512),
  task_id varchar(128),
  tenant_id varchar(50) NOT NULL,
  user_id varchar(255) NOT NULL,
  action_type varchar(100),
  message text,
  context jsonb,
  context_digest char(64),
  status varchar(20) NOT NULL,
  created_at timestamptz NOT NULL,
  expires_at timestamptz NOT NULL,
  decided_by varchar(255),
  decided_at timestamptz,
  reason text,
  updated_at timestamptz NOT NULL DEFAULT now(),
  CONSTRAINT hitl_request_status CHECK (status IN ('pending', 'approved', 'rejected', 'expired'))
);
CREATE INDEX idx_hitl_request_owner ON hitl_request (tenant_id, user_id, created_at DESC, seq DESC);
CREATE INDEX idx_hitl_request_due ON hitl_request (expires_at) WHERE status = 'pending';
";

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager.get_connection().execute_unprepared(CREATE).await?;
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .get_connection()
            .execute_unprepared("DROP TABLE IF EXISTS hitl_request")
            .await?;
        Ok(())
    }
}
