//! The AgentTask REST API under `/main/agent/tasks` (CONTRACT.md section 8).
//! A caller sees and changes only its own tasks in its own tenant; anyone
//! else's task is 404, so its existence is not revealed.

use std::collections::HashMap;
use std::sync::Arc;

use axum::extract::{FromRequestParts, Path, Query, State};
use axum::routing::{get, patch, post};
use axum::{Json, Router};
use chrono::{SecondsFormat, Utc};
use dwp_core::Envelope;
use http::StatusCode;
use http::request::Parts;
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseTransaction, DbBackend, EntityTrait,
    IntoActiveModel, Iterable, ModelTrait, PaginatorTrait, QueryFilter, QueryOrder, QuerySelect,
    Statement, TransactionTrait,
};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::lifecycle::{self, Status};
use crate::auth::{Caller, TokenCaller};
use crate::body::JsonBody;
use crate::entity::agent_task::{self, Column, Entity, Model};
use crate::error::AppError;
use crate::paging::Paging;
use crate::reply::Reply;
use crate::state::AppState;

/// The routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/main/agent/tasks", post(create).get(list))
        .route("/main/agent/tasks/{task_id}", get(read))
        .route("/main/agent/tasks/{task_id}/start", post(start))
        .route("/main/agent/tasks/{task_id}/progress", patch(progress))
        .route("/main/agent/tasks/{task_id}/complete", post(complete))
        .route("/main/agent/tasks/{task_id}/fail", post(fail))
        .route("/main/agent/tasks/{task_id}/plan-steps", post(plan_step))
}

/// A task id from the path; one that cannot exist is 404.
pub struct TaskId(pub String);

impl<S: Send + Sync> FromRequestParts<S> for TaskId {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::BadRequest("Invalid task id in path".into()))?;
        if id.len() > 36 || !dwp_core::hitl::valid_id(&id) {
            return Err(not_found(&id));
        }
        Ok(Self(id))
    }
}

/// A task as every task route answers it: RFC 3339 times, `planSteps` as
/// an array; `inputData` and `resultData` as stored (JSON text, or the
/// string given).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    /// The id the task was created with.
    pub task_id: String,
    /// Its owner.
    pub user_id: String,
    /// The owner's tenant.
    pub tenant_id: String,
    /// What kind of task.
    pub task_type: String,
    /// `REQUESTED`, `IN_PROGRESS`, `COMPLETED`, `FAILED` (and what the
    /// recorder saw: `WAITING_APPROVAL`, `CANCELLED`).
    pub status: String,
    /// 0 to 100.
    pub progress: i32,
    /// Free text.
    pub description: Option<String>,
    /// As given at creation.
    pub input_data: Option<String>,
    /// As given at completion.
    pub result_data: Option<String>,
    /// The plan, in order (one task's answers; a page of the list leaves it
    /// out, so a page stays bounded: read the task for its plan).
    #[schema(value_type = Option<Vec<Object>>)]
    #[serde(skip_serializing_if = "Option::is_none")]
    pub plan_steps: Option<Vec<Value>>,
    /// The HITL request the task waits on or waited on last.
    pub hitl_request_id: Option<String>,
    /// Why it failed.
    pub error_message: Option<String>,
    /// RFC 3339.
    pub started_at: Option<String>,
    /// RFC 3339.
    pub completed_at: Option<String>,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339.
    pub updated_at: String,
}

/// The task as the API shows it.
pub fn view(task: &Model) -> TaskView {
    let time = |t: &sea_orm::prelude::DateTimeWithTimeZone| {
        t.with_timezone(&Utc)
            .to_rfc3339_opts(SecondsFormat::Millis, true)
    };
    TaskView {
        task_id: task.task_id.clone(),
        user_id: task.user_id.clone(),
        tenant_id: task.tenant_id.clone(),
        task_type: task.task_type.clone(),
        status: task.status.clone(),
        progress: task.progress,
        description: task.description.clone(),
        input_data: task.input_data.clone(),
        result_data: task.result_data.clone(),
        plan_steps: Some(lifecycle::steps_of(task.plan_steps.as_deref())),
        hitl_request_id: task.hitl_request_id.clone(),
        error_message: task.error_message.clone(),
        started_at: task.started_at.as_ref().map(time),
        completed_at: task.completed_at.as_ref().map(time),
        created_at: time(&task.created_at),
        updated_at: time(&task.updated_at),
    }
}

/// A page of the caller's tasks, newest first.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskPage {
    /// The tasks of this page.
    pub content: Vec<TaskView>,
    /// Zero-based.
    pub page: u64,
    /// The page size asked for.
    pub size: u64,
    /// Tasks in all pages.
    pub total_elements: u64,
    /// Pages of this size.
    pub total_pages: u64,
}

fn not_found(id: &str) -> AppError {
    AppError::NotFound(format!("Task {id} not found"))
}

/// Any JSON as stored text: a string as it is, anything else serialised.
fn as_text(value: Option<Value>) -> Option<String> {
    match value? {
        Value::Null => None,
        Value::String(s) => Some(s),
        other => Some(other.to_string()),
    }
}

/// Longest `description` and `errorMessage` accepted.
pub const MAX_TEXT_BYTES: usize = 4 * 1024;
/// Largest `inputData` and `resultData` accepted, as JSON.
pub const MAX_DATA_BYTES: usize = 16 * 1024;
/// Largest plan step accepted, as JSON, and most steps a plan holds.
pub const MAX_STEP_BYTES: usize = 4 * 1024;
/// Most plan steps a task holds.
pub const MAX_STEPS: usize = 200;

/// 413 when `field` is over `max` bytes.
fn capped(field: &str, len: usize, max: usize) -> Result<(), AppError> {
    if len > max {
        return Err(AppError::TooLarge(format!(
            "{field} is larger than {max} bytes"
        )));
    }
    Ok(())
}

/// The JSON length of an optional value.
fn json_len(value: Option<&Value>) -> usize {
    value.map_or(0, |v| v.to_string().len())
}

/// Body of `POST /main/agent/tasks`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewTask {
    /// At most 100 characters, not blank.
    #[schema(min_length = 1, max_length = 100)]
    pub task_type: String,
    /// Free text, at most 4 KiB.
    pub description: Option<String>,
    /// Any JSON, at most 16 KiB.
    pub input_data: Option<Value>,
}

#[utoipa::path(post, path = "/main/agent/tasks", tag = "tasks", operation_id = "create_task", request_body = NewTask,
    responses((status = 201, description = "Created: the task", body = Envelope<TaskView>), (status = 429, description = "Too many tasks created this minute, or held, by this user (E1001); `Retry-After` says when", body = Reply)), security(("bearer" = [])))]
async fn create(
    State(state): State<Arc<AppState>>,
    TokenCaller(caller): TokenCaller,
    JsonBody(body): JsonBody<NewTask>,
) -> Result<(StatusCode, Json<Envelope<TaskView>>), AppError> {
    let task_type = body.task_type.trim().to_owned();
    if task_type.is_empty() || task_type.chars().count() > 100 {
        return Err(AppError::BadRequest(
            "taskType is 1 to 100 characters, not blank".into(),
        ));
    }
    if caller.user_id.len() > 50 || caller.tenant_id.len() > 50 {
        return Err(AppError::BadRequest(
            "user and tenant ids are at most 50 characters".into(),
        ));
    }
    capped(
        "description",
        body.description.as_ref().map_or(0, String::len),
        MAX_TEXT_BYTES,
    )?;
    capped(
        "inputData",
        json_len(body.input_data.as_ref()),
        MAX_DATA_BYTES,
    )?;
    let now = Utc::now().fixed_offset();
    let task = agent_task::ActiveModel {
        task_id: sea_orm::Set(uuid::Uuid::new_v4().to_string()),
        user_id: sea_orm::Set(caller.user_id.clone()),
        tenant_id: sea_orm::Set(caller.tenant_id.clone()),
        task_type: sea_orm::Set(task_type),
        status: sea_orm::Set(Status::Requested.as_str().into()),
        progress: sea_orm::Set(0),
        description: sea_orm::Set(body.description),
        input_data: sea_orm::Set(as_text(body.input_data)),
        plan_steps: sea_orm::Set(Some("[]".into())),
        created_at: sea_orm::Set(now),
        updated_at: sea_orm::Set(now),
        ..Default::default()
    };
    crate::quota::spend(
        &state.store,
        &caller,
        crate::quota::Kind::Tasks,
        state.config.tasks_max_creates_per_minute,
    )
    .await?;
    let db = state.db.conn()?;
    let held = state
        .db
        .bounded(
            Entity::find()
                .filter(Column::TenantId.eq(&caller.tenant_id))
                .filter(Column::UserId.eq(&caller.user_id))
                .count(db),
        )
        .await?;
    if held >= state.config.tasks_max_per_user {
        return Err(AppError::TooManyRequests {
            message: "This user holds as many tasks as one may (TASKS_MAX_PER_USER)",
            retry_after: 3600,
        });
    }
    let task = state.db.bounded(task.insert(db)).await?;
    tracing::info!(
        task_id = task.task_id,
        task_type = task.task_type,
        "task created"
    );
    Ok((
        StatusCode::CREATED,
        Json(Envelope::success("Task created", view(&task))),
    ))
}

#[utoipa::path(get, path = "/main/agent/tasks/{task_id}", tag = "tasks", params(("task_id" = String, Path, description = "The task id")),
    responses((status = 200, description = "The task", body = Envelope<TaskView>)), security(("bearer" = [])))]
async fn read(
    State(state): State<Arc<AppState>>,
    TokenCaller(caller): TokenCaller,
    TaskId(id): TaskId,
) -> Result<Json<Envelope<TaskView>>, AppError> {
    let task = state
        .db
        .bounded(owned(&caller, &id).one(state.db.conn()?))
        .await?
        .ok_or_else(|| not_found(&id))?;
    Ok(Json(Envelope::success("Task", view(&task))))
}

/// The caller's task `id`, as a query.
fn owned(caller: &Caller, id: &str) -> sea_orm::Select<Entity> {
    Entity::find()
        .filter(Column::TaskId.eq(id))
        .filter(Column::UserId.eq(&caller.user_id))
        .filter(Column::TenantId.eq(&caller.tenant_id))
}

#[utoipa::path(get, path = "/main/agent/tasks", tag = "tasks",
    params(("page" = Option<u32>, Query, description = "Zero-based page"), ("size" = Option<u32>, Query, description = "Page size, default 20, at most 100")),
    responses((status = 200, description = "A page of the caller's tasks, newest first", body = Envelope<TaskPage>)), security(("bearer" = [])))]
async fn list(
    State(state): State<Arc<AppState>>,
    TokenCaller(caller): TokenCaller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Envelope<TaskPage>>, AppError> {
    let paging = Paging::from_query(&query)?;
    let (page, size) = (paging.page, paging.size);
    // Without the plans (up to 800 KiB each): a page holds at most
    // size x (4 + 16 + 16 + 4 KiB) of task fields.
    let pages = Entity::find()
        .select_only()
        .columns(Column::iter().filter(|c| !matches!(c, Column::PlanSteps)))
        .column_as(Expr::cust("NULL::text"), "plan_steps")
        .filter(Column::UserId.eq(&caller.user_id))
        .filter(Column::TenantId.eq(&caller.tenant_id))
        .order_by_desc(Column::CreatedAt)
        .order_by_desc(Column::Id)
        .paginate(state.db.conn()?, size);
    let total = state.db.bounded(pages.num_items()).await?;
    // PostgreSQL's OFFSET is a bigint: a page beyond it is past the end.
    let tasks = if paging.offset().is_some() {
        state.db.bounded(pages.fetch_page(page)).await?
    } else {
        Vec::new()
    };
    Ok(Json(Envelope::success(
        "Tasks",
        TaskPage {
            content: tasks
                .iter()
                .map(|task| TaskView {
                    plan_steps: None,
                    ..view(task)
                })
                .collect(),
            page,
            size,
            total_elements: total,
            total_pages: total.div_ceil(size),
        },
    )))
}

/// Runs `change` on the caller's task `id`, locked, in one transaction;
/// `change` refuses (and nothing is written) or edits the task.
async fn change(
    state: &AppState,
    caller: &Caller,
    id: &str,
    what: &str,
    change: impl FnOnce(&mut Model) -> Result<(), AppError> + Send,
) -> Result<Json<Envelope<TaskView>>, AppError> {
    let db = state.db.conn()?;
    let txn: DatabaseTransaction = state.db.bounded(db.begin()).await?;
    let mut task = state
        .db
        .bounded(owned(caller, id).lock_exclusive().one(&txn))
        .await?
        .ok_or_else(|| not_found(id))?;
    let before = task.clone();
    change(&mut task)?;
    task.updated_at = Utc::now().fixed_offset();
    // Only the columns that changed are written: a progress update never
    // rewrites the plan.
    let mut changed = before.clone().into_active_model();
    for column in Column::iter() {
        let value = task.get(column);
        if before.get(column) != value {
            changed.set(column, value);
        }
    }
    let task = state.db.bounded(changed.update(&txn)).await?;
    state.db.bounded(txn.commit()).await?;
    tracing::info!(task_id = id, status = task.status, "task {what}");
    Ok(Json(Envelope::success(format!("Task {what}"), view(&task))))
}

/// 400 E3002 unless the task may move to `to`.
fn move_to(task: &mut Model, to: Status) -> Result<(), AppError> {
    let from = Status::parse(&task.status);
    if !from.may_move_to(to) {
        return Err(AppError::InvalidTransition(format!(
            "A {} task cannot become {}",
            from.as_str(),
            to.as_str()
        )));
    }
    let now = Utc::now().fixed_offset();
    task.status = to.as_str().into();
    match to {
        Status::InProgress => task.started_at = Some(now),
        _ => task.completed_at = Some(now),
    }
    Ok(())
}

#[utoipa::path(post, path = "/main/agent/tasks/{task_id}/start", tag = "tasks", params(("task_id" = String, Path, description = "The task id")),
    responses((status = 200, description = "REQUESTED → IN_PROGRESS", body = Envelope<TaskView>)), security(("bearer" = [])))]
async fn start(
    State(state): State<Arc<AppState>>,
    TokenCaller(caller): TokenCaller,
    TaskId(id): TaskId,
) -> Result<Json<Envelope<TaskView>>, AppError> {
    change(&state, &caller, &id, "started", |task| {
        move_to(task, Status::InProgress)
    })
    .await
}

/// Body of `PATCH .../progress`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
pub struct Progress {
    /// 0..100.
    #[schema(minimum = 0, maximum = 100)]
    pub progress: i64,
    /// Replaces the description when given.
    pub description: Option<String>,
}

#[utoipa::path(patch, path = "/main/agent/tasks/{task_id}/progress", tag = "tasks", params(("task_id" = String, Path, description = "The task id")), request_body = Progress,
    responses((status = 200, description = "Progress set", body = Envelope<TaskView>)), security(("bearer" = [])))]
async fn progress(
    State(state): State<Arc<AppState>>,
    TokenCaller(caller): TokenCaller,
    TaskId(id): TaskId,
    JsonBody(body): JsonBody<Progress>,
) -> Result<Json<Envelope<TaskView>>, AppError> {
    let progress = body.progress;
    capped(
        "description",
        body.description.as_ref().map_or(0, String::len),
        MAX_TEXT_BYTES,
    )?;
    change(&state, &caller, &id, "progress updated", move |task| {
        if !(0..=100).contains(&progress) {
            return Err(AppError::InvalidTransition(format!(
                "progress {progress} is outside 0..100"
            )));
        }
        if Status::parse(&task.status) != Status::InProgress {
            return Err(AppError::InvalidTransition(format!(
                "Progress of a {} task cannot change",
                task.status
            )));
        }
        task.progress = progress as i32;
        if body.description.is_some() {
            task.description = body.description;
        }
        Ok(())
    })
    .await
}

/// Body of `POST .../complete`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Completion {
    /// Any JSON.
    pub result_data: Option<Value>,
}

#[utoipa::path(post, path = "/main/agent/tasks/{task_id}/complete", tag = "tasks", params(("task_id" = String, Path, description = "The task id")), request_body = Completion,
    responses((status = 200, description = "IN_PROGRESS → COMPLETED", body = Envelope<TaskView>)), security(("bearer" = [])))]
async fn complete(
    State(state): State<Arc<AppState>>,
    TokenCaller(caller): TokenCaller,
    TaskId(id): TaskId,
    JsonBody(body): JsonBody<Completion>,
) -> Result<Json<Envelope<TaskView>>, AppError> {
    capped(
        "resultData",
        json_len(body.result_data.as_ref()),
        MAX_DATA_BYTES,
    )?;
    change(&state, &caller, &id, "completed", move |task| {
        move_to(task, Status::Completed)?;
        task.progress = 100;
        task.result_data = as_text(body.result_data);
        Ok(())
    })
    .await
}

/// Body of `POST .../fail`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Failure {
    /// Why: not blank, at most 4 KiB.
    #[schema(min_length = 1)]
    pub error_message: String,
}

#[utoipa::path(post, path = "/main/agent/tasks/{task_id}/fail", tag = "tasks", params(("task_id" = String, Path, description = "The task id")), request_body = Failure,
    responses((status = 200, description = "IN_PROGRESS → FAILED", body = Envelope<TaskView>)), security(("bearer" = [])))]
async fn fail(
    State(state): State<Arc<AppState>>,
    TokenCaller(caller): TokenCaller,
    TaskId(id): TaskId,
    JsonBody(body): JsonBody<Failure>,
) -> Result<Json<Envelope<TaskView>>, AppError> {
    let message = body.error_message;
    if message.trim().is_empty() {
        return Err(AppError::BadRequest("errorMessage may not be blank".into()));
    }
    capped("errorMessage", message.len(), MAX_TEXT_BYTES)?;
    change(&state, &caller, &id, "failed", move |task| {
        move_to(task, Status::Failed)?;
        task.error_message = Some(message);
        Ok(())
    })
    .await
}

/// What saving a plan step answers: the step as saved and the plan's
/// length, never the whole plan (a 4 KiB step of a 200-step plan would
/// answer 800 KiB).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PlanStepSaved {
    /// The task.
    pub task_id: String,
    /// The step as sent, with its `stepId` (generated when it had none).
    #[schema(value_type = Object)]
    pub step: Map<String, Value>,
    /// Steps in the plan now.
    pub plan_step_count: i64,
}

#[utoipa::path(post, path = "/main/agent/tasks/{task_id}/plan-steps", tag = "tasks", params(("task_id" = String, Path, description = "The task id")), request_body = Object,
    responses((status = 200, description = "Step added, or updated by `stepId`: the step and the plan's length", body = Envelope<PlanStepSaved>)), security(("bearer" = [])))]
async fn plan_step(
    State(state): State<Arc<AppState>>,
    TokenCaller(caller): TokenCaller,
    TaskId(id): TaskId,
    JsonBody(step): JsonBody<Map<String, Value>>,
) -> Result<Json<Envelope<PlanStepSaved>>, AppError> {
    if step.is_empty() {
        return Err(AppError::BadRequest(
            "A plan step is a non-empty JSON object".into(),
        ));
    }
    if step.get("stepId").is_some_and(|s| !s.is_string()) {
        return Err(AppError::BadRequest("stepId must be a string".into()));
    }
    capped(
        "A plan step",
        Value::Object(step.clone()).to_string().len(),
        MAX_STEP_BYTES,
    )?;
    let mut step = step;
    step.entry("stepId")
        .or_insert_with(|| uuid::Uuid::new_v4().to_string().into());
    let count = merge_plan_step(&state, &caller, &id, &step).await?;
    tracing::info!(task_id = id, steps = count, "task plan step saved");
    Ok(Json(Envelope::success(
        "Task plan step saved",
        PlanStepSaved {
            task_id: id,
            step,
            plan_step_count: count,
        },
    )))
}

/// Merges `step` into the caller's task `id` inside PostgreSQL
/// (`dwp_merge_plan_step`, migration 5): only the step travels. Returns
/// the plan's length; 404 someone else's or no task, 400 E3002 a finished
/// one, 413 a plan already at [`MAX_STEPS`].
async fn merge_plan_step(
    state: &AppState,
    caller: &Caller,
    id: &str,
    step: &Map<String, Value>,
) -> Result<i64, AppError> {
    let db = state.db.conn()?;
    let txn: DatabaseTransaction = state.db.bounded(db.begin()).await?;
    let status: Option<String> = state
        .db
        .bounded(
            owned(caller, id)
                .select_only()
                .column(Column::Status)
                .lock_exclusive()
                .into_tuple()
                .one(&txn),
        )
        .await?;
    let status = status.ok_or_else(|| not_found(id))?;
    if Status::parse(&status).is_terminal() {
        return Err(AppError::InvalidTransition(format!(
            "The plan of a {status} task cannot change"
        )));
    }
    let merged = txn
        .query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            "UPDATE agent_task SET plan_steps = dwp_merge_plan_step(plan_steps, $1::jsonb, $2), \
             updated_at = $3 WHERE task_id = $4 AND user_id = $5 AND tenant_id = $6 \
             RETURNING jsonb_array_length(plan_steps::jsonb)::bigint AS steps",
            [
                Value::Object(step.clone()).to_string().into(),
                i32::try_from(MAX_STEPS).unwrap_or(i32::MAX).into(),
                Utc::now().fixed_offset().into(),
                id.into(),
                caller.user_id.clone().into(),
                caller.tenant_id.clone().into(),
            ],
        ))
        .await;
    let row = match merged {
        Err(e) if e.to_string().contains("plan_steps_full") => {
            return Err(AppError::TooLarge(format!(
                "A plan holds at most {MAX_STEPS} steps"
            )));
        }
        other => state.db.bounded(async { other }).await?,
    };
    let count: i64 = row
        .ok_or_else(|| not_found(id))?
        .try_get("", "steps")
        .map_err(|e| AppError::Internal(e.to_string()))?;
    state.db.bounded(txn.commit()).await?;
    Ok(count)
}
