//! `POST /aura/hitl/requests`: an agent that cannot write Redis itself
//! stores a pending request over HTTP.
//!
//! The session is claimed for the caller atomically: a session nobody has
//! recorded is claimed with `SET NX`; one recorded for someone else is 403;
//! one of the caller's own gets the new request id and a fresh TTL, but
//! only if it did not change since it was read. Each user has at most
//! `HITL_MAX_PENDING_PER_USER` requests created this way pending at once,
//! counted in a sorted set (`hitl:pending:…`, scored by expiry) that the
//! decision script also leaves.

use std::sync::{Arc, LazyLock};

use axum::Json;
use axum::extract::State;
use dwp_core::Envelope;
use dwp_core::envelope::{rfc3339, unix_now};
use dwp_core::hitl::{self, DecisionRecord, SessionRecord, StoredRequest};
use http::StatusCode;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use super::session::{self, Owner};
use super::{ID_RULE, MAX_ACTION_TYPE_BYTES, MAX_CONTEXT_BYTES, pending_key};
use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::AppError;
use crate::reply::Reply;
use crate::state::AppState;

/// Claims (or refreshes) the session, checks the pending cap, stores the
/// request, records the caller among the session's owners, and appends the
/// new request to the lifecycle stream (the inbox's row).
/// Returns 1 stored, 0 the request id is taken, -1 the session changed
/// under us (read again), -2 too many pending.
static CLAIM: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local current = redis.call('GET', KEYS[2])
if ARGV[6] == '1' then
  if current then return -1 end
elseif current ~= ARGV[5] then
  return -1
end
local now = tonumber(ARGV[8])
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now)
if redis.call('ZCARD', KEYS[3]) >= tonumber(ARGV[7]) then return -2 end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) then return 0 end
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[4])
redis.call('ZADD', KEYS[3], now + tonumber(ARGV[2]), ARGV[9])
redis.call('EXPIRE', KEYS[3], ARGV[2])
redis.call('HSET', KEYS[4], ARGV[10], ARGV[9])
redis.call('EXPIRE', KEYS[4], ARGV[4])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[11], '*', unpack(ARGV, 13))
redis.call('XTRIM', KEYS[5], 'MINID', '~', ARGV[12])
return 1
",
    )
});

/// How often a create re-reads a session that changed under it.
const ATTEMPTS: usize = 8;

/// Body of `POST /aura/hitl/requests`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct NewRequest {
    /// Generated as `req_` + 12 hex when absent.
    pub request_id: Option<String>,
    /// The waiting agent's session; it must be unclaimed or the caller's.
    #[schema(min_length = 1)]
    pub session_id: String,
    /// What the agent wants to do: not blank, at most 100 bytes.
    #[schema(min_length = 1, max_length = 100)]
    pub action_type: String,
    /// Anything the person needs to decide (at most 16 KiB as JSON).
    pub context: Option<Value>,
    /// Defaults to the caller; must be the caller when given.
    pub user_id: Option<String>,
    /// Defaults to the caller's tenant; must be it when given.
    pub tenant_id: Option<String>,
}

/// What a create answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Created {
    /// The stored request's id (generated when the body had none).
    pub request_id: String,
    /// Its session, now claimed by the caller.
    pub session_id: String,
}

#[utoipa::path(post, path = "/aura/hitl/requests", tag = "hitl", operation_id = "create_request", params(("X-User-ID" = String, Header, description = "The caller; must equal the token's `sub`"), ("X-Tenant-ID" = String, Header, description = "The tenant; must equal the token's `tenant_id`")), request_body = NewRequest,
    responses((status = 201, description = "Stored", body = Envelope<Created>), (status = 403, description = "The session belongs to someone else (E2001)", body = Reply), (status = 409, description = "The id is taken (E3001)", body = Reply), (status = 413, description = "The context is too large (E1001)", body = Reply), (status = 429, description = "Too many pending requests (E1001)", body = Reply)), security(("bearer" = [])))]
pub(super) async fn create(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    JsonBody(body): JsonBody<NewRequest>,
) -> Result<(StatusCode, Json<Envelope<Created>>), AppError> {
    let request = checked(&caller, body)?;
    crate::quota::spend(
        &state.store,
        &caller,
        crate::quota::Kind::HitlRequests,
        state.config.hitl_max_creates_per_minute,
    )
    .await?;
    let (request_id, session_id) = (request.request_id.clone(), request.session_id.clone());
    match claim(&state, &caller, request).await? {
        1 => Ok((
            StatusCode::CREATED,
            Json(Envelope::success(
                "HITL request created",
                Created {
                    request_id,
                    session_id,
                },
            )),
        )),
        0 => Err(AppError::Conflict {
            message: format!("HITL request {request_id} already exists"),
            data: Value::Null,
        }),
        _ => Err(AppError::TooManyRequests {
            message: "Too many pending HITL requests for this user",
            retry_after: 60,
        }),
    }
}

/// The request to store, from a body whose every field is checked.
fn checked(caller: &Caller, body: NewRequest) -> Result<StoredRequest, AppError> {
    caller.must_be(body.user_id.as_deref())?;
    if body
        .tenant_id
        .as_deref()
        .is_some_and(|t| t != caller.tenant_id)
    {
        return Err(AppError::Forbidden("tenantId does not match the token"));
    }
    let session_id = body.session_id;
    if !hitl::storable_id(&session_id) {
        return Err(AppError::BadRequest(format!("sessionId: {ID_RULE}")));
    }
    let action_type = body.action_type;
    if action_type.trim().is_empty() {
        return Err(AppError::BadRequest("actionType may not be blank".into()));
    }
    if action_type.len() > MAX_ACTION_TYPE_BYTES {
        return Err(AppError::BadRequest(format!(
            "actionType is longer than {MAX_ACTION_TYPE_BYTES} bytes"
        )));
    }
    let context = body.context.unwrap_or_else(|| json!({}));
    if context.to_string().len() > MAX_CONTEXT_BYTES {
        return Err(AppError::TooLarge(format!(
            "context is larger than {MAX_CONTEXT_BYTES} bytes"
        )));
    }
    let request_id = match body.request_id {
        Some(id) if hitl::storable_id(&id) => id,
        Some(_) => return Err(AppError::BadRequest(format!("requestId: {ID_RULE}"))),
        None => format!("req_{}", &uuid::Uuid::new_v4().simple().to_string()[..12]),
    };
    Ok(StoredRequest {
        request_id,
        session_id,
        action_type,
        context,
        status: "pending".into(),
        user_id: caller.user_id.clone(),
        tenant_id: caller.tenant_id.clone(),
        created_at: rfc3339(unix_now()),
    })
}

/// Stores `request` and claims its session for the caller, atomically:
/// 1 stored, 0 the id is taken, -2 too many pending. A session that changed
/// between the read and the script is read again, a few times.
async fn claim(state: &AppState, caller: &Caller, request: StoredRequest) -> Result<i64, AppError> {
    let record = SessionRecord {
        session_id: request.session_id.clone(),
        request_id: request.request_id.clone(),
        user_id: caller.user_id.clone(),
        tenant_id: caller.tenant_id.clone(),
        created_at: request.created_at.clone(),
    };
    let (record, stored) = (json(&record)?, json(&request)?);
    let (request_id, session_id) = (&request.request_id, &request.session_id);
    let created = DecisionRecord {
        request_id,
        session_id,
        tenant_id: &caller.tenant_id,
        decided_by: &caller.user_id,
        decision: hitl::RECORD_PENDING,
        reason: "",
        decided_at: &request.created_at,
        request: &stored,
    };
    let mut conn = state.store.conn().await?;
    let me = Owner::caller(caller);
    for _ in 0..ATTEMPTS {
        let current = session::read(&state.store, &mut conn, session_id).await?;
        if let Some(current) = &current
            && current.owner != me
        {
            return Err(AppError::Forbidden("This session belongs to someone else"));
        }
        let mut script = CLAIM.prepare_invoke();
        script
            .key(hitl::request_key(request_id))
            .key(hitl::session_key(session_id))
            .key(pending_key(&caller.tenant_id, &caller.user_id))
            .arg(&stored)
            .arg(hitl::REQUEST_TTL_SECS)
            .arg(&record)
            .arg(hitl::SESSION_TTL_SECS)
            .arg(current.as_ref().map_or("", |s| s.raw.as_str()))
            .arg(if current.is_none() { "1" } else { "0" })
            .arg(state.config.hitl_max_pending_per_user)
            .arg(unix_now())
            .arg(request_id)
            .key(hitl::owners_key(session_id))
            .arg(me.field())
            .key(hitl::DECISIONS_STREAM)
            .arg(state.config.streams.max_len)
            .arg(state.config.streams.min_id());
        for (name, value) in created.fields() {
            script.arg(name).arg(value);
        }
        let outcome: i64 = state.store.bounded(script.invoke_async(&mut conn)).await?;
        if matches!(outcome, 1 | 0 | -2) {
            return Ok(outcome);
        }
    }
    Err(AppError::Unavailable("Redis"))
}

/// A contract record as its JSON text.
fn json<T: serde::Serialize>(record: &T) -> Result<String, AppError> {
    serde_json::to_string(record).map_err(|e| AppError::Internal(e.to_string()))
}
