//! Requests not decided in time become `expired`: no request stays
//! `pending` forever, in the inbox or in Redis.
//!
//! Every [`SWEEP_EVERY`], each replica looks for inbox rows still pending
//! past their `expiresAt` (`HITL_EXPIRY_SECS` after they were made, the
//! real agent's wait). For each, one script compares the stored request
//! with what was read and, still pending, marks it `expired` (keeping its
//! TTL, so deciding it now answers 404 "expired") and appends the expiry
//! to the lifecycle stream, whose consumer updates the row and the audit.
//! A request Redis no longer holds is expired the same way; one Redis
//! already holds as decided is merged into its row at once (its decision
//! entry may still be on its way, or lost to the stream's trim).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use dwp_core::envelope::{rfc3339, unix_now};
use dwp_core::hitl::{self, DecisionRecord, EXPIRED_BY, RECORD_EXPIRED};
use redis::AsyncCommands;
use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use super::inbox::{self, RequestRow};
use super::pending_key;
use crate::error::AppError;
use crate::state::AppState;

/// How often due requests are looked for.
pub const SWEEP_EVERY: Duration = Duration::from_secs(1);

/// Due requests handled per round.
const BATCH: u64 = 200;

/// Marks the request expired if it is still what was read, leaves the
/// owner's pending set, appends the expiry to the lifecycle stream.
/// KEYS: request, stream, pending set. ARGV: the request as read (empty:
/// absent), the expired request, the stream's cap, its oldest id kept, the
/// request id, then the entry's fields. Returns 1 expired, 0 changed.
static EXPIRE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '' then
  if current then return 0 end
else
  if current ~= ARGV[1] then return 0 end
  redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
end
redis.call('ZREM', KEYS[3], ARGV[5])
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[3], '*', unpack(ARGV, 6))
redis.call('XTRIM', KEYS[2], 'MINID', '~', ARGV[4])
return 1
",
    )
});

/// A due row.
struct Due {
    request_id: String,
    session_id: Option<String>,
    tenant_id: String,
    user_id: String,
}

/// Sweeps every [`SWEEP_EVERY`] until `stop`.
pub async fn run(state: Arc<AppState>, stop: CancellationToken) {
    let mut logged = false;
    loop {
        if state.db.is_ready() {
            match sweep(&state).await {
                Ok(_) => logged = false,
                Err(e) if !logged => {
                    tracing::warn!(error = %e, "HITL expiry: sweep failed; retrying every second");
                    logged = true;
                }
                Err(_) => {}
            }
        }
        tokio::select! {
            () = tokio::time::sleep(SWEEP_EVERY) => {}
            () = stop.cancelled() => return,
        }
    }
}

/// One round: expires what is due; returns how many were expired.
pub async fn sweep(state: &AppState) -> Result<usize, AppError> {
    let conn = state.db.conn()?;
    let rows = state
        .db
        .bounded(conn.query_all_raw(Statement::from_string(
            DbBackend::Postgres,
            format!(
                "SELECT request_id, session_id, tenant_id, user_id FROM hitl_request \
                 WHERE status = 'pending' AND expires_at <= now() ORDER BY expires_at LIMIT {BATCH}"
            ),
        )))
        .await?;
    let mut expired = 0;
    for row in rows {
        let get = |name: &str| row.try_get::<Option<String>>("", name).ok().flatten();
        let due = Due {
            request_id: get("request_id").unwrap_or_default(),
            session_id: get("session_id"),
            tenant_id: get("tenant_id").unwrap_or_default(),
            user_id: get("user_id").unwrap_or_default(),
        };
        if expire_one(state, &due).await? {
            expired += 1;
        }
    }
    Ok(expired)
}

/// Expires one due request in Redis (and so, through the stream, in the
/// inbox); true when it did.
async fn expire_one(state: &AppState, due: &Due) -> Result<bool, AppError> {
    let mut conn = state.store.conn().await?;
    let key = hitl::request_key(&due.request_id);
    let raw: Option<String> = state.store.bounded(conn.get(&key)).await?;
    let mut stored: Map<String, Value> = match raw.as_deref().map(serde_json::from_str) {
        Some(Ok(Value::Object(map))) => map,
        _ => Map::new(),
    };
    let status = stored
        .get("status")
        .and_then(Value::as_str)
        .unwrap_or("pending");
    if matches!(status, "approved" | "rejected") {
        // Decided in Redis: the row learns it now, whatever became of the entry.
        merge_decided(state, due, &stored).await?;
        return Ok(false);
    }
    if status != "pending" {
        return Ok(false);
    }
    let now = unix_now();
    let reason = format!(
        "Not decided within {} s",
        state.config.hitl_expiry.as_secs()
    );
    stored.insert("status".into(), RECORD_EXPIRED.into());
    stored.insert("expiredAt".into(), rfc3339(now).into());
    let updated = serde_json::to_string(&stored).map_err(|e| AppError::Internal(e.to_string()))?;
    stored.remove("context");
    let audited = serde_json::to_string(&stored).map_err(|e| AppError::Internal(e.to_string()))?;
    let session_id = stored
        .get("sessionId")
        .and_then(Value::as_str)
        .map(str::to_owned)
        .or_else(|| due.session_id.clone())
        .filter(|s| hitl::storable_id(s))
        .unwrap_or_else(|| "unknown".into());
    let decided_at = rfc3339(now);
    let record = DecisionRecord {
        request_id: &due.request_id,
        session_id: &session_id,
        tenant_id: &due.tenant_id,
        decided_by: EXPIRED_BY,
        decision: RECORD_EXPIRED,
        reason: &reason,
        decided_at: &decided_at,
        request: &audited,
    };
    let mut script = EXPIRE.prepare_invoke();
    script
        .key(&key)
        .key(hitl::DECISIONS_STREAM)
        .key(pending_key(&due.tenant_id, &due.user_id))
        .arg(raw.as_deref().unwrap_or(""))
        .arg(&updated)
        .arg(state.config.streams.max_len)
        .arg(state.config.streams.min_id())
        .arg(&due.request_id);
    for (name, value) in record.fields() {
        script.arg(name).arg(value);
    }
    let done: i64 = state.store.bounded(script.invoke_async(&mut conn)).await?;
    Ok(done == 1)
}

/// Merges a decision Redis holds into the request's row.
async fn merge_decided(
    state: &AppState,
    due: &Due,
    stored: &Map<String, Value>,
) -> Result<(), AppError> {
    let text = |name: &str| stored.get(name).and_then(Value::as_str).map(str::to_owned);
    let decided_at = text("decidedAt")
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .unwrap_or_else(|| chrono::Utc::now().fixed_offset());
    let now = chrono::Utc::now().fixed_offset();
    let row = RequestRow {
        request_id: due.request_id.clone(),
        session_id: text("sessionId"),
        task_id: None,
        tenant_id: due.tenant_id.clone(),
        user_id: due.user_id.clone(),
        action_type: None,
        message: None,
        context: None,
        status: if text("status").as_deref() == Some("approved") {
            "approved"
        } else {
            "rejected"
        },
        created_at: now,
        expires_at: now,
        decided_by: text("decidedBy"),
        decided_at: Some(decided_at),
        reason: text("reason"),
    };
    state.db.bounded(inbox::record(state.db.conn()?, row)).await
}
