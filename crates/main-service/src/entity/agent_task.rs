//! `agent_task` (CONTRACT.md section 8).

use sea_orm::entity::prelude::*;

/// One agent run as the frontend shows it.
#[derive(Clone, Debug, PartialEq, Eq, DeriveEntityModel)]
#[sea_orm(table_name = "agent_task")]
pub struct Model {
    /// bigserial
    #[sea_orm(primary_key)]
    pub id: i64,
    /// The public id (a UUID; the gateway's `X-DWP-Task-ID` for recorded streams).
    #[sea_orm(unique)]
    pub task_id: String,
    /// Owner.
    pub user_id: String,
    /// Owner's tenant.
    pub tenant_id: String,
    /// What kind of task.
    pub task_type: String,
    /// `REQUESTED`, `IN_PROGRESS`, `COMPLETED` or `FAILED`.
    pub status: String,
    /// 0..100.
    pub progress: i32,
    /// Free text.
    #[sea_orm(column_type = "Text", nullable)]
    pub description: Option<String>,
    /// The task's input as text.
    #[sea_orm(column_type = "Text", nullable)]
    pub input_data: Option<String>,
    /// The task's result as text.
    #[sea_orm(column_type = "Text", nullable)]
    pub result_data: Option<String>,
    /// A JSON array of plan steps.
    #[sea_orm(column_type = "Text", nullable)]
    pub plan_steps: Option<String>,
    /// The HITL request the run waited on.
    pub hitl_request_id: Option<String>,
    /// Why it failed.
    #[sea_orm(column_type = "Text", nullable)]
    pub error_message: Option<String>,
    /// When it moved to `IN_PROGRESS`.
    pub started_at: Option<DateTimeWithTimeZone>,
    /// When it moved to `COMPLETED` or `FAILED`.
    pub completed_at: Option<DateTimeWithTimeZone>,
    /// Created.
    pub created_at: DateTimeWithTimeZone,
    /// Last changed.
    pub updated_at: DateTimeWithTimeZone,
}

/// No relations.
#[derive(Copy, Clone, Debug, EnumIter, DeriveRelation)]
pub enum Relation {}

impl ActiveModelBehavior for ActiveModel {}

/// An update that writes every column of `model` to the row with its id.
pub fn full_update(model: Model) -> ActiveModel {
    let id = model.id;
    let mut active = ActiveModel::from(model).reset_all();
    active.id = sea_orm::ActiveValue::Unchanged(id);
    active
}
