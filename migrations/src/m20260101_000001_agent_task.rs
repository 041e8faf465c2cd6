//! `agent_task` (CONTRACT.md section 8): what the frontend shows of an agent run.

use sea_orm_migration::prelude::*;

/// Creates `agent_task` and its indexes.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// The table and its columns.
#[derive(DeriveIden)]
pub enum AgentTask {
    /// `agent_task`
    Table,
    /// bigserial primary key
    Id,
    /// varchar(36), unique
    TaskId,
    /// varchar(50)
    UserId,
    /// varchar(50)
    TenantId,
    /// varchar(100)
    TaskType,
    /// varchar(20): REQUESTED, IN_PROGRESS, COMPLETED, FAILED
    Status,
    /// int 0..100
    Progress,
    /// text
    Description,
    /// text
    InputData,
    /// text
    ResultData,
    /// text: a JSON array of plan steps
    PlanSteps,
    /// varchar(100)
    HitlRequestId,
    /// text
    ErrorMessage,
    /// timestamptz
    StartedAt,
    /// timestamptz
    CompletedAt,
    /// timestamptz
    CreatedAt,
    /// timestamptz
    UpdatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    #[allow(
        clippy::too_many_lines,
        reason = "a released migration is a record of what ran: never reshaped"
    )]
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AgentTask::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(AgentTask::Id)
                            .custom(Alias::new("bigserial"))
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(AgentTask::TaskId)
                            .string_len(36)
                            .not_null()
                            .unique_key(),
                    )
                    .col(ColumnDef::new(AgentTask::UserId).string_len(50).not_null())
                    .col(
                        ColumnDef::new(AgentTask::TenantId)
                            .string_len(50)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AgentTask::TaskType)
                            .string_len(100)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AgentTask::Status)
                            .string_len(20)
                            .not_null()
                            .default("REQUESTED"),
                    )
                    .col(
                        ColumnDef::new(AgentTask::Progress)
                            .integer()
                            .not_null()
                            .default(0)
                            .check(Expr::col(AgentTask::Progress).between(0, 100)),
                    )
                    .col(ColumnDef::new(AgentTask::Description).text())
                    .col(ColumnDef::new(AgentTask::InputData).text())
                    .col(ColumnDef::new(AgentTask::ResultData).text())
                    .col(ColumnDef::new(AgentTask::PlanSteps).text())
                    .col(ColumnDef::new(AgentTask::HitlRequestId).string_len(100))
                    .col(ColumnDef::new(AgentTask::ErrorMessage).text())
                    .col(ColumnDef::new(AgentTask::StartedAt).timestamp_with_time_zone())
                    .col(ColumnDef::new(AgentTask::CompletedAt).timestamp_with_time_zone())
                    .col(
                        ColumnDef::new(AgentTask::CreatedAt)
                            .timestamp_with_time_zone()
                            .not_null()
                            .default(Expr::current_timestamp()),
                    )
                    .col(
                        ColumnDef::new(AgentTask::UpdatedAt)
                            .timestamp_with_time_zone()
                            .not_null()
                            .default(Expr::current_timestamp()),
                    )
                    .to_owned(),
            )
            .await?;
        for (name, column) in [
            ("idx_agent_task_user_id", AgentTask::UserId),
            ("idx_agent_task_tenant_id", AgentTask::TenantId),
            ("idx_agent_task_status", AgentTask::Status),
            ("idx_agent_task_created_at", AgentTask::CreatedAt),
        ] {
            manager
                .create_index(
                    Index::create()
                        .if_not_exists()
                        .name(name)
                        .table(AgentTask::Table)
                        .col(column)
                        .to_owned(),
                )
                .await?;
        }
        Ok(())
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AgentTask::Table).to_owned())
            .await
    }
}
