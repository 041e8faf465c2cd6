//! `app_user`: login accounts. The username is unique per tenant; only an
//! argon2id hash of the password is ever stored.

use sea_orm_migration::prelude::*;

/// Creates `app_user`.
#[derive(DeriveMigrationName)]
pub struct Migration;

/// The table and its columns.
#[derive(DeriveIden)]
pub enum AppUser {
    /// `app_user`
    Table,
    /// bigserial primary key
    Id,
    /// varchar(50)
    TenantId,
    /// varchar(50), unique with the tenant
    Username,
    /// varchar(255): an argon2id PHC string
    PasswordHash,
    /// timestamptz
    CreatedAt,
}

#[async_trait::async_trait]
impl MigrationTrait for Migration {
    async fn up(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .create_table(
                Table::create()
                    .table(AppUser::Table)
                    .if_not_exists()
                    .col(
                        ColumnDef::new(AppUser::Id)
                            .custom(Alias::new("bigserial"))
                            .not_null()
                            .primary_key(),
                    )
                    .col(ColumnDef::new(AppUser::TenantId).string_len(50).not_null())
                    .col(ColumnDef::new(AppUser::Username).string_len(50).not_null())
                    .col(
                        ColumnDef::new(AppUser::PasswordHash)
                            .string_len(255)
                            .not_null(),
                    )
                    .col(
                        ColumnDef::new(AppUser::CreatedAt)
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
                    .name("uq_app_user_tenant_username")
                    .table(AppUser::Table)
                    .col(AppUser::TenantId)
                    .col(AppUser::Username)
                    .unique()
                    .to_owned(),
            )
            .await
    }

    async fn down(&self, manager: &SchemaManager) -> Result<(), DbErr> {
        manager
            .drop_table(Table::drop().table(AppUser::Table).to_owned())
            .await
    }
}
