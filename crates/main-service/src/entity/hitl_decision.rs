//! `hitl_decision`: the durable audit of every HITL decision.

use sea_orm::entity::prelude::*;

/// One decision, written from the `dwp:hitl-decisions` outbox.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "hitl_decision")]
pub struct Model {
    /// bigserial
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The decided request (unique: one decision per request).
    #[sea_orm(unique)]
    pub request_id: String,
    /// The agent session that waited.
    pub session_id: String,
    /// The decider's tenant.
    pub tenant_id: String,
    /// The user who decided.
    pub decided_by: String,
    /// `approved` or `rejected`.
    pub decision: String,
    /// The reason given (rejections).
    #[sea_orm(column_type = "Text", nullable)]
    pub reason: Option<String>,
    /// When it was decided.
    pub decided_at: DateTimeWithTimeZone,
    /// The request as it was decided (JSON).
    #[sea_orm(column_type = "Text")]
    pub request: String,
    /// When this row was written.
    pub recorded_at: DateTimeWithTimeZone,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}
