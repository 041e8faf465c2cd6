//! The inbox: one `hitl_request` row per HITL request main-service has
//! heard of, and `GET /aura/hitl/requests`, the caller's own, newest
//! first, in the task list's page shape.
//!
//! Rows come from two at-least-once consumers and may arrive in any order:
//! the recorded agent streams' `hitl` events (the real agent tells no one
//! else; [`crate::tasks::writer`]) and the request lifecycle stream
//! (created over HTTP, decided, expired; [`crate::audit`]). [`record`]
//! therefore merges: a field already known is kept, the status leaves
//! `pending` once and never returns, and a row is only ever merged with a
//! row of the same owner (tenant and user), so no one can write into
//! another's inbox.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Json;
use axum::extract::{Query, State};
use chrono::{DateTime, FixedOffset};
use dwp_core::Envelope;
use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement, Value as SqlValue};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::publish::Change;
use crate::auth::Caller;
use crate::error::AppError;
use crate::paging::Paging;
use crate::state::AppState;

/// The statuses a request can have.
pub const STATUSES: [&str; 4] = ["pending", "approved", "rejected", "expired"];

/// What is known of one request, from one source.
#[derive(Debug, Clone)]
pub struct RequestRow {
    /// The request id.
    pub request_id: String,
    /// The agent's session, when the source knows it.
    pub session_id: Option<String>,
    /// The task (recorded stream) it belongs to.
    pub task_id: Option<String>,
    /// The owner's tenant.
    pub tenant_id: String,
    /// The owner.
    pub user_id: String,
    /// What the agent wants to do.
    pub action_type: Option<String>,
    /// What the agent says about it.
    pub message: Option<String>,
    /// The tool's arguments.
    pub context: Option<Value>,
    /// `pending`, `approved` or `rejected` (expiry is [`expire`]).
    pub status: &'static str,
    /// When the request was made.
    pub created_at: DateTime<FixedOffset>,
    /// When it expires unless decided.
    pub expires_at: DateTime<FixedOffset>,
    /// Who decided (decided rows).
    pub decided_by: Option<String>,
    /// When (decided rows).
    pub decided_at: Option<DateTime<FixedOffset>>,
    /// Why (rejections).
    pub reason: Option<String>,
}

const UPSERT: &str = "INSERT INTO hitl_request AS r (request_id, session_id, task_id, tenant_id, \
  user_id, action_type, message, context, context_digest, status, created_at, expires_at, \
  decided_by, decided_at, reason) \
VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb, $9, $10, $11, $12, $13, $14, $15) \
ON CONFLICT (request_id) DO UPDATE SET \
  session_id = coalesce(r.session_id, excluded.session_id), \
  task_id = coalesce(r.task_id, excluded.task_id), \
  action_type = coalesce(r.action_type, excluded.action_type), \
  message = coalesce(r.message, excluded.message), \
  context = coalesce(r.context, excluded.context), \
  context_digest = coalesce(r.context_digest, excluded.context_digest), \
  created_at = least(r.created_at, excluded.created_at), \
  expires_at = least(r.expires_at, excluded.expires_at), \
  status = CASE WHEN r.status = 'pending' THEN excluded.status ELSE r.status END, \
  decided_by = CASE WHEN r.status = 'pending' THEN excluded.decided_by ELSE r.decided_by END, \
  decided_at = CASE WHEN r.status = 'pending' THEN excluded.decided_at ELSE r.decided_at END, \
  reason = CASE WHEN r.status = 'pending' THEN excluded.reason ELSE r.reason END, \
  updated_at = now() \
WHERE r.tenant_id = excluded.tenant_id AND r.user_id = excluded.user_id";

/// Merges `row` into `hitl_request` (see the module's rules).
pub async fn record(conn: &impl ConnectionTrait, row: RequestRow) -> Result<(), DbErr> {
    let digest = row
        .context
        .as_ref()
        .map(|c| dwp_core::hitl::context_digest(Some(c)));
    let values: Vec<SqlValue> = vec![
        row.request_id.into(),
        row.session_id.into(),
        row.task_id.into(),
        row.tenant_id.into(),
        row.user_id.into(),
        row.action_type.map(|a| cut(&a, 100)).into(),
        row.message.into(),
        row.context.map(|c| c.to_string()).into(),
        digest.into(),
        row.status.into(),
        row.created_at.into(),
        row.expires_at.into(),
        row.decided_by.into(),
        row.decided_at.into(),
        row.reason.into(),
    ];
    conn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        UPSERT,
        values,
    ))
    .await
    .map(drop)
}

/// Marks a still pending request `expired` at `at`.
pub async fn expire(
    conn: &impl ConnectionTrait,
    request_id: &str,
    at: DateTime<FixedOffset>,
) -> Result<(), DbErr> {
    conn.execute_raw(Statement::from_sql_and_values(
        DbBackend::Postgres,
        "UPDATE hitl_request SET status = 'expired', decided_at = $2, updated_at = now() \
         WHERE request_id = $1 AND status = 'pending'",
        [request_id.into(), at.into()],
    ))
    .await
    .map(drop)
}

/// `text` cut to `max` characters.
fn cut(text: &str, max: usize) -> String {
    text.chars().take(max).collect()
}

/// One request in the inbox: what a person needs to decide it.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboxEntry {
    /// The request id (what approve and reject take).
    pub request_id: String,
    /// The agent's session (once known).
    pub session_id: Option<String>,
    /// The task (recorded run) it belongs to.
    pub task_id: Option<String>,
    /// The owner's tenant.
    pub tenant_id: String,
    /// The owner.
    pub user_id: String,
    /// What the agent wants to do.
    pub action_type: Option<String>,
    /// What the agent says about it.
    pub message: Option<String>,
    /// The tool's arguments.
    pub context: Option<Value>,
    /// SHA-256 of the canonical context: send it with the decision to
    /// decide exactly what was shown.
    pub context_digest: Option<String>,
    /// `pending`, `approved`, `rejected` or `expired`.
    pub status: String,
    /// RFC 3339.
    pub created_at: String,
    /// RFC 3339: when it expires unless decided.
    pub expires_at: String,
    /// Who decided.
    pub decided_by: Option<String>,
    /// RFC 3339: when it was decided or expired.
    pub decided_at: Option<String>,
    /// Why (rejections).
    pub reason: Option<String>,
}

/// A page of the caller's requests, newest first (the task list's shape).
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboxPage {
    /// The requests of this page.
    pub content: Vec<InboxEntry>,
    /// Zero-based.
    pub page: u64,
    /// The page size asked for.
    pub size: u64,
    /// Requests in all pages.
    pub total_elements: u64,
    /// Pages of this size.
    pub total_pages: u64,
}

/// The columns of an [`InboxEntry`] as one JSON object per row.
pub const ENTRY_JSON: &str = "json_build_object('requestId', request_id, 'sessionId', session_id, \
  'taskId', task_id, 'tenantId', tenant_id, 'userId', user_id, 'actionType', action_type, \
  'message', message, 'context', context, 'contextDigest', context_digest, 'status', status, \
  'createdAt', to_char(created_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
  'expiresAt', to_char(expires_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
  'decidedBy', decided_by, \
  'decidedAt', to_char(decided_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'), \
  'reason', reason)";

#[utoipa::path(get, path = "/aura/hitl/requests", tag = "hitl", operation_id = "inbox",
    params(("status" = Option<String>, Query, description = "`pending`, `approved`, `rejected` or `expired`; all when absent"),
        ("page" = Option<u32>, Query, description = "Zero-based page"),
        ("size" = Option<u32>, Query, description = "Page size, default 20, at most 100"),
        ("X-User-ID" = String, Header, description = "The caller; must equal the token's `sub`"),
        ("X-Tenant-ID" = String, Header, description = "The tenant; must equal the token's `tenant_id`")),
    responses((status = 200, description = "A page of the caller's own HITL requests, newest first", body = Envelope<InboxPage>)),
    security(("bearer" = [])))]
pub(super) async fn list(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Query(query): Query<HashMap<String, String>>,
) -> Result<Json<Envelope<InboxPage>>, AppError> {
    let paging = Paging::from_query(&query)?;
    let (page, size) = (paging.page, paging.size);
    let status = match query.get("status").map(|s| s.trim()) {
        None | Some("") => None,
        Some(s) if STATUSES.contains(&s) => Some(s.to_owned()),
        Some(_) => {
            return Err(AppError::BadRequest(
                "status must be pending, approved, rejected or expired".into(),
            ));
        }
    };
    let offset = paging.offset();
    let sql = format!(
        "SELECT (SELECT count(*) FROM hitl_request WHERE tenant_id = $1 AND user_id = $2 \
           AND ($3::text IS NULL OR status = $3)) AS total, \
         (SELECT coalesce(json_agg(e ORDER BY n), '[]')::text FROM \
           (SELECT {ENTRY_JSON} AS e, row_number() OVER (ORDER BY created_at DESC, seq DESC) AS n \
            FROM hitl_request WHERE tenant_id = $1 AND user_id = $2 \
              AND ($3::text IS NULL OR status = $3) \
            ORDER BY created_at DESC, seq DESC LIMIT $4 OFFSET $5) p) AS content"
    );
    let values: Vec<SqlValue> = vec![
        caller.tenant_id.clone().into(),
        caller.user_id.clone().into(),
        status.into(),
        i64::try_from(size).unwrap_or(100).into(),
        offset.unwrap_or(i64::MAX).into(),
    ];
    let conn = state.db.conn()?;
    let row = state
        .db
        .bounded(conn.query_one_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            values,
        )))
        .await?
        .ok_or_else(|| AppError::Internal("the inbox query returned no row".into()))?;
    let total: i64 = row
        .try_get("", "total")
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let content: String = row
        .try_get("", "content")
        .map_err(|e| AppError::Internal(e.to_string()))?;
    let content: Vec<InboxEntry> =
        serde_json::from_str(&content).map_err(|e| AppError::Internal(e.to_string()))?;
    let total = u64::try_from(total).unwrap_or(0);
    Ok(Json(Envelope::success(
        "HITL requests",
        InboxPage {
            content,
            page,
            size,
            total_elements: total,
            total_pages: total.div_ceil(size),
        },
    )))
}

/// The current state of the requests `ids` (those with a row), to announce
/// on the live feed ([`super::publish`]).
pub async fn current(conn: &impl ConnectionTrait, ids: &[String]) -> Result<Vec<Change>, DbErr> {
    let mut ids: Vec<&String> = ids.iter().collect();
    ids.sort_unstable();
    ids.dedup();
    let mut changes = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(1000) {
        let marks: Vec<String> = (1..=chunk.len()).map(|i| format!("${i}")).collect();
        let sql = format!(
            "SELECT tenant_id, user_id, request_id, status, {ENTRY_JSON}::text AS entry \
             FROM hitl_request WHERE request_id IN ({}) ORDER BY seq",
            marks.join(", ")
        );
        let values: Vec<SqlValue> = chunk.iter().map(|id| (*id).clone().into()).collect();
        let rows = conn
            .query_all_raw(Statement::from_sql_and_values(
                DbBackend::Postgres,
                sql,
                values,
            ))
            .await?;
        for row in rows {
            let text = |name: &str| row.try_get::<String>("", name);
            changes.push(Change::new(
                &text("tenant_id")?,
                &text("user_id")?,
                text("request_id")?,
                text("status")?,
                text("entry")?,
            ));
        }
    }
    Ok(changes)
}

/// Most pending requests a feed's first events list.
pub const MAX_PENDING_LISTED: i64 = 1000;

/// The caller's pending requests (id, inbox entry as JSON), oldest first:
/// what a feed starts with.
pub async fn pending(
    conn: &impl ConnectionTrait,
    tenant: &str,
    user: &str,
) -> Result<Vec<(String, String)>, DbErr> {
    let sql = format!(
        "SELECT request_id, {ENTRY_JSON}::text AS entry FROM hitl_request \
         WHERE tenant_id = $1 AND user_id = $2 AND status = 'pending' \
         ORDER BY created_at, seq LIMIT $3"
    );
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(
            DbBackend::Postgres,
            sql,
            [tenant.into(), user.into(), MAX_PENDING_LISTED.into()],
        ))
        .await?;
    rows.iter()
        .map(|row| Ok((row.try_get("", "request_id")?, row.try_get("", "entry")?)))
        .collect()
}
