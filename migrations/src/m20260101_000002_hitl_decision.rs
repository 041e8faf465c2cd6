//! `hitl_decision`: every HITL decision, durable beyond Redis' 30-minute TTL.
//! One row per request (`request_id` is unique), so applying the same audit
//! record twice changes nothing.

use sea_orm_migration::prelude::*;

/// Creates `hitl_decision`.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// The table and its columns.
#[derive(DeriveIden)]
pub enum HitlDecision {
    /// `hitl_decision`
    Table,
    /// bigserial primary key
    Id,
    /// varchar(128), unique
    RequestId,
    /// varchar(128)
    SessionId,
    /// varchar(50)
    TenantId,
    /// varchar(50): the user who decided
    DecidedBy,
    /// varchar(20): approved or rejected
    Decision,
    /// text
    Reason,
    /// timestamptz
    DecidedAt,
    /// text: the request as it was decided (JSON)
    Request,
    /// timestamptz: when the row was written
    RecordedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(HitlDecision::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(HitlDecision::Id)
                            .custom(Alias::new("bigserial"))
                            .not_null()
                            .primary_key(),
                    )
                    .col(
                        ColumnDef::new(HitlDecision::RequestId)
                            .string_len(128)
                            .not_null()
                            .unique_key(),
                    )
                    .col(
                        ColumnDef::new(HitlDecision::SessionId)
                            .string_len(128)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(HitlDecision::TenantId)
                            .string_len(50)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(HitlDecision::DecidedBy)
                            .string_len(50)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(HitlDecision::Decision)
                            .string_len(20)
                            .not_null(),
                    )
                    .col(ColumnDef::new(HitlDecision::Reason).text())
                    .col(
                        ColumnDef::new(HitlDecision::DecidedAt)
                            .timestamp_with_time_zone()
                            .not_null(),
                    )
                    .col(ColumnDef::new(HitlDecision::Request).text().not_null())
                    .col(
                        ColumnDef::new(HitlDecision::RecordedAt)
                            .timestamp_with_time_zone()
                            .not_null()
                            .default(Expr::current_timestamp()),
                    )
                    .to_owned(),
            )
            .await?;
        manager
            .create_index(
                Index::create()
                    .if_not_exists()
                    .name("idx_hitl_decision_tenant_decided_at")
                    .table(HitlDecision::Table)
                    .col(HitlDecision::TenantId)
                    .col(HitlDecision::DecidedAt)
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(HitlDecision::Table).to_owned())
            .await
    }
}
