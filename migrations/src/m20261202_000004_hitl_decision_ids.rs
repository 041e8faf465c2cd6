//! `hitl_decision.request_id` and `session_id` as wide as the ids an agent
//! may store (`dwp_core::hitl::MAX_ID_BYTES`, 512): the real agent builds
//! session ids from the raw token `sub`, so an e-mail address makes them
//! longer than the first schema's 128, and an audit record must never be
//! refused for its id.

use sea_orm_migration::prelude::*;

use crate::m20260101_000002_hitl_decision::HitlDecision;

/// Widens the two id columns.
#[derive(DeriveMigrationName)]
pub struct Migration;

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        id_width(manager, 512).await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        id_width(manager, 128).await
    }
}

/// Sets both id columns to `varchar(len)`.
async fn id_width(manager: &SchemaManager<'_>, len: u32) -> Result<(), DbErr> {
    manager
        .alter_table(
            Table::alter()
                .table(HitlDecision::Table)
                .modify_column(
                    ColumnDef::new(HitlDecision::RequestId)
                        .string_len(len)
                        .not_null(),
                )
                .modify_column(
                    ColumnDef::new(HitlDecision::SessionId)
                        .string_len(len)
                        .not_null(),
                )
                .to_owned(),
        )
        .await
}
