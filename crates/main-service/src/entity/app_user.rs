//! `app_user`: login accounts.

use sea_orm::entity::prelude::*;

/// One account; the username is unique per tenant.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "app_user")]
pub struct Model {
    /// bigserial
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The tenant.
    pub tenant_id: String,
    /// The login name (the token's `sub`).
    pub username: String,
    /// An argon2id PHC string; never the password.
    pub password_hash: String,
    /// Created.
    pub created_at: DateTimeWithTimeZone,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
