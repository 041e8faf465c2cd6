//! Human-in-the-loop decisions (CONTRACT.md section 5).
//!
//! A decision reads `hitl:request:{requestId}`, then in one Lua script
//! checks the stored value is still what was read, writes the decided
//! request (keeping its TTL), stores the signal under
//! `hitl:signal:{sessionId}` and publishes it on `hitl:channel:{sessionId}`.
//! Two people deciding at once: one script wins, the other finds the request
//! decided and gets 409 with its current state; one signal is sent. The same
//! script appends the decision to the `dwp:hitl-decisions` stream (the audit
//! outbox), so no decision can exist without its audit record.
//!
//! Only the owner decides: the request's owner and its session's owner
//! must agree and be the caller ([`session`]); the script also checks the
//! session record is unchanged, so an owner cannot be swapped in between.
//!
//! # Layout
//! - [`session`]: owners of sessions and requests, and the rule that joins them.
//! - [`create`]: `POST /aura/hitl/requests`, which claims its session.
//! - [`delivery`]: signals published again until an agent receives one.
//! - [`inbox`]: the `hitl_request` rows and `GET /aura/hitl/requests`.
//! - [`expiry`]: requests not decided in time become `expired`.
//! - [`publish`]: each change of a request appended to the feed streams.
//! - [`feed`]: `GET /aura/hitl/events`, the caller's requests live.
//!
//! The same person sending the same decision again (a double click, a
//! retry) gets 200 with `alreadyProcessed: true` and no second signal; a
//! different decision on a decided request is 409.

pub mod create;
pub mod delivery;
pub mod expiry;
pub mod feed;
pub mod inbox;
pub mod publish;
pub mod session;

use std::sync::{Arc, LazyLock};

use axum::extract::{FromRequestParts, Path, State};
use axum::routing::{get, post};
use axum::{Json, Router};
use dwp_core::Envelope;
use dwp_core::envelope::{rfc3339, unix_now};
use dwp_core::hitl::{self, Decision, DecisionRecord, Signal, StoredRequest};
use http::request::Parts;
use redis::AsyncCommands;
use redis::aio::ConnectionManager;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::body::JsonBody;
use crate::error::AppError;
use crate::reply::Reply;
use crate::state::AppState;
use session::Owner;

/// Compare-and-set of the request, signal store and publish, atomically.
/// KEYS: request, signal, decision stream, session, pending set,
/// undelivered set, the session's owners, the owner's parked set.
/// ARGV: the request as read, the decided request, the signal, the
/// channel, the signal TTL, the stream's length cap, the session as read,
/// the request id, the stream's oldest id kept, now, the session id, the
/// owner's field, the owners' TTL, the parked cap, then the audit entry's
/// fields. A decided request is kept as long as its signal (5 min, for
/// repeats and conflicts), no longer. Returns 0 changed under us, 1 decided and received, 2 decided
/// and queued for delivery ([`delivery`]); and without deciding: -1 more
/// than one run waits on the channel, -2 the session has had more than one
/// owner, -3 the owner has too many decisions parked.
///
/// "Received" is the channel's own subscribers (`PUBSUB NUMSUB`), never
/// `PUBLISH`'s count, which includes pattern listeners such as an
/// operator's `PSUBSCRIBE hitl:channel:*`.
static DECIDE: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('GET', KEYS[4]) ~= ARGV[7] then return 0 end
redis.call('HSET', KEYS[7], ARGV[12], ARGV[8])
redis.call('EXPIRE', KEYS[7], ARGV[13])
if redis.call('HLEN', KEYS[7]) > 1 then return -2 end
local listeners = redis.call('PUBSUB', 'NUMSUB', ARGV[4])[2]
if listeners > 1 then return -1 end
local now = tonumber(ARGV[10])
if listeners == 0 then
  redis.call('ZREMRANGEBYSCORE', KEYS[8], '-inf', now)
  for _, s in ipairs(redis.call('ZRANGE', KEYS[8], 0, -1)) do
    if not redis.call('ZSCORE', KEYS[6], s) then redis.call('ZREM', KEYS[8], s) end
  end
  if redis.call('ZCARD', KEYS[8]) >= tonumber(ARGV[14]) then return -3 end
end
redis.call('SET', KEYS[1], ARGV[2], 'KEEPTTL')
local kept = redis.call('TTL', KEYS[1])
if kept < 0 or kept > tonumber(ARGV[5]) then redis.call('EXPIRE', KEYS[1], ARGV[5]) end
redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[5])
local result = 1
if listeners == 1 then
  redis.call('PUBLISH', ARGV[4], ARGV[3])
  redis.call('ZREM', KEYS[6], ARGV[11])
else
  local window = tonumber(ARGV[5])
  local left = redis.call('TTL', KEYS[1])
  if left > 0 and left < window then window = left end
  redis.call('ZADD', KEYS[6], now + window, ARGV[11])
  redis.call('ZADD', KEYS[8], now + window, ARGV[11])
  redis.call('EXPIRE', KEYS[8], window)
  result = 2
end
redis.call('ZREM', KEYS[5], ARGV[8])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', unpack(ARGV, 15))
redis.call('XTRIM', KEYS[3], 'MINID', '~', ARGV[9])
return result
",
    )
});

/// The sorted set of sessions whose decision by one owner waits for its
/// agent to listen (scored by when delivery stops): capped per owner by
/// `HITL_MAX_UNDELIVERED_PER_USER`, so no one can fill the delivery loop.
pub fn parked_key(tenant: &str, user: &str) -> String {
    format!("hitl:parked:{}", hitl::owner_field(tenant, user))
}

/// Longest `actionType` accepted (the `task_type` column's width).
pub const MAX_ACTION_TYPE_BYTES: usize = 100;
/// Largest `context` accepted, as JSON.
pub const MAX_CONTEXT_BYTES: usize = 16 * 1024;
/// Longest rejection `reason` accepted.
pub const MAX_REASON_BYTES: usize = 2 * 1024;

/// The sorted set of a user's pending requests created over HTTP (the
/// tenant's length first, so that no tenant and user pair shares a key with another).
pub fn pending_key(tenant: &str, user: &str) -> String {
    format!("hitl:pending:{}:{tenant}:{user}", tenant.len())
}

/// What a HITL id must be, for error messages.
pub const ID_RULE: &str = "Ids are 1 to 512 bytes with no control characters";

/// How often a decision re-reads a request that changed under it.
const ATTEMPTS: usize = 8;

/// The HITL routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/aura/hitl/approve/{id}", post(approve))
        .route("/aura/hitl/reject/{id}", post(reject))
        .route("/aura/hitl/approve/", post(empty_id))
        .route("/aura/hitl/reject/", post(empty_id))
        .route("/aura/hitl/requests", post(create::create).get(inbox::list))
        .route("/aura/hitl/requests/{id}", get(read_request))
        .route("/aura/hitl/signals/{id}", get(read_signal))
        .route("/aura/hitl/events", get(feed::events))
}

/// A path id: 1 to 512 bytes without control characters (400 otherwise;
/// [`hitl::storable_id`]).
pub struct Id(pub String);

impl<S: Send + Sync> FromRequestParts<S> for Id {
    type Rejection = AppError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, AppError> {
        let Path(id) = Path::<String>::from_request_parts(parts, state)
            .await
            .map_err(|_| AppError::BadRequest("Invalid id in path".into()))?;
        if !hitl::storable_id(&id) {
            return Err(AppError::BadRequest(ID_RULE.into()));
        }
        Ok(Self(id))
    }
}

/// An empty id is bad input (400), not an unknown route.
async fn empty_id() -> AppError {
    AppError::BadRequest("requestId is empty".into())
}

/// Body of approve and reject.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DecisionBody {
    /// Must be the caller when given.
    pub user_id: Option<String>,
    /// Why (rejections).
    pub reason: Option<String>,
    /// The `contextDigest` the person was shown (the inbox's and the
    /// feed's): when given and the stored context's differs, 409 and
    /// nothing is decided.
    pub context_digest: Option<String>,
}

#[utoipa::path(post, path = "/aura/hitl/approve/{id}", tag = "hitl", params(("id" = String, Path, description = "The request id (1 to 512 bytes, no control characters)"), ("X-User-ID" = String, Header, description = "The caller; must equal the token's `sub`"), ("X-Tenant-ID" = String, Header, description = "The tenant; must equal the token's `tenant_id`")), request_body(content = Option<DecisionBody>, description = "Optional"),
    responses((status = 200, description = "Approved: the signal is stored and published", body = Envelope<DecisionAnswer>), (status = 409, description = "Already decided (E3001), or no decision can reach only its own run (a shared session or channel, or a newer request awaited)", body = Reply), (status = 429, description = "Too many of this user's decisions wait for their agents (E1001)", body = Reply)), security(("bearer" = [])))]
async fn approve(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Id(id): Id,
    JsonBody(body): JsonBody<DecisionBody>,
) -> Result<Json<Envelope<DecisionAnswer>>, AppError> {
    decide(&state, &caller, &id, Decision::Approve, body).await
}

#[utoipa::path(post, path = "/aura/hitl/reject/{id}", tag = "hitl", params(("id" = String, Path, description = "The request id (1 to 512 bytes, no control characters)"), ("X-User-ID" = String, Header, description = "The caller; must equal the token's `sub`"), ("X-Tenant-ID" = String, Header, description = "The tenant; must equal the token's `tenant_id`")), request_body(content = Option<DecisionBody>, description = "Optional"),
    responses((status = 200, description = "Rejected: the signal is stored and published", body = Envelope<DecisionAnswer>), (status = 409, description = "Already decided (E3001), or no decision can reach only its own run (a shared session or channel, or a newer request awaited)", body = Reply), (status = 429, description = "Too many of this user's decisions wait for their agents (E1001)", body = Reply)), security(("bearer" = [])))]
async fn reject(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Id(id): Id,
    JsonBody(body): JsonBody<DecisionBody>,
) -> Result<Json<Envelope<DecisionAnswer>>, AppError> {
    decide(&state, &caller, &id, Decision::Reject, body).await
}

async fn decide(
    state: &AppState,
    caller: &Caller,
    id: &str,
    decision: Decision,
    body: DecisionBody,
) -> Result<Json<Envelope<DecisionAnswer>>, AppError> {
    caller.must_be(body.user_id.as_deref())?;
    if body
        .reason
        .as_ref()
        .is_some_and(|r| r.len() > MAX_REASON_BYTES)
    {
        return Err(AppError::BadRequest(format!(
            "reason is longer than {MAX_REASON_BYTES} bytes"
        )));
    }
    let outcome = tokio::time::timeout(
        // Well inside the two seconds a caller may wait for a 503.
        state.store.timeout() * 3 / 2,
        decide_once(
            state,
            caller,
            id,
            decision,
            body.reason,
            body.context_digest.as_deref(),
        ),
    )
    .await
    .unwrap_or(Err(AppError::Unavailable("Redis")));
    let label = match &outcome {
        Ok(Decided::Repeated(_)) => "repeated",
        Ok(_) => decision.status(),
        Err(AppError::Conflict { .. }) => "conflict",
        Err(AppError::NotFound(_)) => "not_found",
        Err(AppError::Forbidden(_)) => "forbidden",
        Err(AppError::Unavailable(_)) => "unavailable",
        Err(_) => "error",
    };
    state.metrics.decision(label);
    let verb = match decision {
        Decision::Approve => "approved",
        Decision::Reject => "rejected",
    };
    match outcome? {
        Decided::Now {
            session_id,
            delivered,
        } => {
            tracing::info!(
                request_id = id,
                session_id,
                status = decision.status(),
                delivered,
                user = caller.user_id,
                "hitl decision"
            );
            if delivered {
                state.metrics.delivery("at_once");
            } else {
                state.metrics.delivery("queued");
                state.undelivered.notify_one();
            }
            Ok(Json(Envelope::success(
                format!("Request {verb} successfully"),
                DecisionAnswer::Now(Outcome {
                    request_id: id.to_owned(),
                    session_id,
                    status: decision.status(),
                    delivered,
                }),
            )))
        }
        Decided::Repeated(mut request) => {
            request.remove("alreadyProcessed");
            Ok(Json(Envelope::success(
                format!("Request was already {verb}"),
                DecisionAnswer::Repeated(Repeated {
                    already_processed: true,
                    request,
                }),
            )))
        }
    }
}

/// What a decision answers: what it did now, or (`alreadyProcessed`) the
/// stored request the caller had already decided the same way.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum DecisionAnswer {
    /// Decided by this call.
    Now(Outcome),
    /// Decided before, the same way by the same person.
    Repeated(Repeated),
}

/// The stored request, decided before by the caller the same way.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Repeated {
    /// Always true.
    pub already_processed: bool,
    /// The stored request's fields (CONTRACT.md section 5).
    #[serde(flatten)]
    pub request: Map<String, Value>,
}

/// A decision made by this call.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Outcome {
    /// The decided request.
    pub request_id: String,
    /// Its session.
    pub session_id: String,
    /// `approved` or `rejected`.
    pub status: &'static str,
    /// Whether an agent received the signal at once; when not, it is
    /// published again as soon as one listens.
    pub delivered: bool,
}

/// What a decision did.
enum Decided {
    /// Decided now; `delivered` when an agent received the signal at once.
    Now { session_id: String, delivered: bool },
    /// The caller had already made this same decision: the stored request.
    Repeated(Map<String, Value>),
}

async fn decide_once(
    state: &AppState,
    caller: &Caller,
    id: &str,
    decision: Decision,
    reason: Option<String>,
    shown_digest: Option<&str>,
) -> Result<Decided, AppError> {
    let mut conn = state.store.durable_conn().await?;
    for _ in 0..ATTEMPTS {
        let (raw, mut stored, owner) =
            match read_pending(state, &mut conn, id, caller, decision).await? {
                Read::Pending(raw, stored, owner) => (raw, stored, owner),
                Read::Done(done) => return Ok(done),
            };
        let session_id = session_of(&stored, id)?;
        let digest = hitl::context_digest(stored.get("context"));
        if let Some(shown) = shown_digest
            && !shown.trim().eq_ignore_ascii_case(&digest)
        {
            return Err(AppError::Conflict {
                message: format!(
                    "HITL request {id}: contextDigest does not match its context; \
                     decide what it asks now (data.contextDigest)"
                ),
                data: serde_json::json!({ "contextDigest": digest }),
            });
        }
        let session = session::read(&state.store, &mut conn, &session_id).await?;
        session::check(session.as_ref(), &owner, caller)?;
        superseded(session.as_ref(), id)?;
        let timestamp = unix_now();
        let mut signal = Signal::new(decision, id, &session_id, reason.clone(), timestamp);
        signal.context_digest = Some(digest);
        let decided_at = rfc3339(timestamp);
        mark_decided(
            &mut stored,
            decision,
            caller,
            &decided_at,
            signal.reason.as_deref(),
        );
        let updated = to_json(&stored)?;
        let audited = to_json(&audited(&stored))?;
        let record = DecisionRecord {
            request_id: id,
            session_id: &session_id,
            tenant_id: &caller.tenant_id,
            decided_by: &caller.user_id,
            decision: decision.status(),
            reason: signal.reason.as_deref().unwrap_or(""),
            decided_at: &decided_at,
            request: &audited,
        };
        let script = decide_script(
            state,
            id,
            &Applying {
                raw: &raw,
                updated: &updated,
                signal: &to_json(&signal)?,
                session_id: &session_id,
                session: session.as_ref(),
                owner: &owner,
                timestamp,
                record: &record,
            },
        );
        let applied: i64 = state.store.bounded(script.invoke_async(&mut conn)).await?;
        if let Some(delivered) = applied_outcome(applied, id, &session_id)? {
            state.store.replicated(&mut conn).await?;
            return Ok(Decided::Now {
                session_id,
                delivered,
            });
        }
        // Changed between our read and the script: read again.
    }
    Err(AppError::Unavailable("Redis"))
}

/// What the [`DECIDE`] script's answer means: `Some(delivered)` decided,
/// `None` read again, or the refusal.
fn applied_outcome(applied: i64, id: &str, session_id: &str) -> Result<Option<bool>, AppError> {
    match applied {
        1 | 2 => Ok(Some(applied == 1)),
        -1 => Err(undeliverable(
            id,
            session_id,
            "more than one run waits on it",
        )),
        -2 => Err(undeliverable(
            id,
            session_id,
            "more than one user (or tenant) has had a run on it",
        )),
        -3 => Err(AppError::TooManyRequests {
            message: "Too many of this user's decisions wait for their agents to listen",
            retry_after: 5,
        }),
        _ => Ok(None),
    }
}

/// What one decision writes, for [`decide_script`].
struct Applying<'a> {
    raw: &'a str,
    updated: &'a str,
    signal: &'a str,
    session_id: &'a str,
    session: Option<&'a session::Session>,
    owner: &'a Owner,
    timestamp: u64,
    record: &'a DecisionRecord<'a>,
}

/// The [`DECIDE`] invocation of one decision, its keys and arguments in
/// the script's order.
fn decide_script(state: &AppState, id: &str, a: &Applying<'_>) -> redis::ScriptInvocation<'static> {
    let (tenant, user) = (
        a.owner.tenant.as_deref().unwrap_or(""),
        a.owner.user.as_deref().unwrap_or(""),
    );
    let mut script = DECIDE.prepare_invoke();
    script
        .key(hitl::request_key(id))
        .key(hitl::signal_key(a.session_id))
        .arg(a.raw)
        .arg(a.updated)
        .arg(a.signal)
        .arg(hitl::channel(a.session_id))
        .arg(hitl::SIGNAL_TTL_SECS)
        .key(hitl::DECISIONS_STREAM)
        .key(hitl::session_key(a.session_id))
        .key(pending_key(tenant, user))
        .key(hitl::UNDELIVERED_KEY)
        .arg(state.config.streams.max_len)
        .arg(a.session.map_or("", |s| s.raw.as_str()))
        .arg(id)
        .arg(state.config.streams.min_id())
        .arg(a.timestamp)
        .arg(a.session_id)
        .key(hitl::owners_key(a.session_id))
        .arg(a.owner.field())
        .arg(hitl::SESSION_TTL_SECS)
        .key(parked_key(tenant, user))
        .arg(state.config.hitl_max_undelivered_per_user);
    for (name, value) in a.record.fields() {
        script.arg(name).arg(value);
    }
    script
}

/// What [`read_pending`] found.
enum Read {
    /// Still pending: the stored text, its fields, its owner.
    Pending(String, Map<String, Value>, Owner),
    /// Decided before, the same way by the caller.
    Done(Decided),
}

/// Reads the request and checks the caller may decide it; a repeat of
/// the caller's own decision is [`Read::Done`].
async fn read_pending(
    state: &AppState,
    conn: &mut ConnectionManager,
    id: &str,
    caller: &Caller,
    decision: Decision,
) -> Result<Read, AppError> {
    let raw: Option<String> = state.store.bounded(conn.get(hitl::request_key(id))).await?;
    let raw =
        raw.ok_or_else(|| AppError::NotFound(format!("HITL request {id} not found or expired")))?;
    let stored = parse_request(&raw)?;
    let owner = Owner::of(&stored);
    owner.admits(caller)?;
    if let Some(done) = already_decided(&stored, caller, id, decision)? {
        // A repeat after a 503 from `replicated` is acknowledged only once
        // the replicas hold what this connection wrote.
        state.store.replicated(conn).await?;
        return Ok(Read::Done(done));
    }
    Ok(Read::Pending(raw, stored, owner))
}

/// 409 when the session already waits on a newer request: the agent takes
/// the first message on the channel whatever its `requestId`, so a decision
/// on the older one would answer the newer wait.
fn superseded(session: Option<&session::Session>, id: &str) -> Result<(), AppError> {
    match session.and_then(|s| s.request_id.as_deref()) {
        Some(newer) if newer != id => Err(AppError::Conflict {
            message: format!(
                "HITL request {id} is no longer awaited: its session now waits on {newer}"
            ),
            data: Value::Null,
        }),
        _ => Ok(()),
    }
}

/// 409 for a decision no publish could deliver to its own run only; the
/// request stays pending and nothing is published.
fn undeliverable(id: &str, session_id: &str, why: &str) -> AppError {
    AppError::Conflict {
        message: format!(
            "HITL request {id} cannot be decided safely: its session {session_id} is shared ({why}), \
             so a decision could reach another run; nothing was published"
        ),
        data: Value::Null,
    }
}

/// What the audit keeps of a decided request: everything but its
/// `context` (the tool's arguments, up to 16 KiB, which the agent holds),
/// so a decision appends a bounded entry to the outbox.
fn audited(stored: &Map<String, Value>) -> Map<String, Value> {
    stored
        .iter()
        .filter(|(k, _)| k.as_str() != "context")
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The stored request's fields a decision sets.
fn mark_decided(
    stored: &mut Map<String, Value>,
    decision: Decision,
    caller: &Caller,
    decided_at: &str,
    reason: Option<&str>,
) {
    stored.insert("status".into(), decision.status().into());
    stored.insert("decidedBy".into(), caller.user_id.clone().into());
    stored.insert("decidedAt".into(), decided_at.into());
    if let Some(reason) = reason {
        stored.insert("reason".into(), reason.into());
    }
}

/// The stored request's session id, when it is one that can be used.
fn session_of(stored: &Map<String, Value>, id: &str) -> Result<String, AppError> {
    stored
        .get("sessionId")
        .and_then(Value::as_str)
        .filter(|s| hitl::storable_id(s))
        .map(str::to_owned)
        .ok_or_else(|| AppError::Internal(format!("stored request {id} has no usable sessionId")))
}

/// `Some` when the request is no longer pending: the caller's own same
/// decision repeated, or a conflict with the current state.
fn already_decided(
    stored: &Map<String, Value>,
    caller: &Caller,
    id: &str,
    decision: Decision,
) -> Result<Option<Decided>, AppError> {
    match stored.get("status").and_then(Value::as_str) {
        Some("pending") => Ok(None),
        Some(hitl::RECORD_EXPIRED) => Err(AppError::NotFound(format!(
            "HITL request {id} expired: it was not decided in time, and its agent no longer waits"
        ))),
        Some(status)
            if status == decision.status()
                && stored.get("decidedBy").and_then(Value::as_str)
                    == Some(caller.user_id.as_str()) =>
        {
            Ok(Some(Decided::Repeated(stored.clone())))
        }
        _ => Err(AppError::Conflict {
            message: format!("HITL request {id} was already decided"),
            data: Value::Object(stored.clone()),
        }),
    }
}

/// A value as its JSON text.
fn to_json<T: serde::Serialize>(value: &T) -> Result<String, AppError> {
    serde_json::to_string(value).map_err(|e| AppError::Internal(e.to_string()))
}

fn parse_request(raw: &str) -> Result<Map<String, Value>, AppError> {
    serde_json::from_str(raw)
        .map_err(|e| AppError::Internal(format!("stored HITL request is not a JSON object: {e}")))
}

#[utoipa::path(get, path = "/aura/hitl/requests/{id}", tag = "hitl", params(("id" = String, Path, description = "The request id (1 to 512 bytes, no control characters)"), ("X-User-ID" = String, Header, description = "The caller; must equal the token's `sub`"), ("X-Tenant-ID" = String, Header, description = "The tenant; must equal the token's `tenant_id`")),
    responses((status = 200, description = "The stored request, as its writer stored it (an agent may add fields or write ids as numbers)", body = Envelope<StoredRequest>)), security(("bearer" = [])))]
async fn read_request(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Id(id): Id,
) -> Result<Json<Envelope<Value>>, AppError> {
    let mut conn = state.store.conn().await?;
    let raw: Option<String> = state
        .store
        .bounded(conn.get(hitl::request_key(&id)))
        .await?;
    let raw =
        raw.ok_or_else(|| AppError::NotFound(format!("HITL request {id} not found or expired")))?;
    let stored = parse_request(&raw)?;
    Owner::of(&stored).admits(&caller)?;
    Ok(Json(Envelope::success(
        "HITL request",
        Value::Object(stored),
    )))
}

#[utoipa::path(get, path = "/aura/hitl/signals/{id}", tag = "hitl", params(("id" = String, Path, description = "The session id"), ("X-User-ID" = String, Header, description = "The caller; must equal the token's `sub`"), ("X-Tenant-ID" = String, Header, description = "The tenant; must equal the token's `tenant_id`")),
    responses((status = 200, description = "The stored signal, or null", body = Envelope<Option<Signal>>), (status = 403, description = "The session is someone else's (E2001)", body = Reply), (status = 404, description = "No such session (E1004)", body = Reply)), security(("bearer" = [])))]
async fn read_signal(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    Id(session_id): Id,
) -> Result<Json<Envelope<Value>>, AppError> {
    let mut conn = state.store.conn().await?;
    // Only the session's owner reads its signal.
    session::read(&state.store, &mut conn, &session_id)
        .await?
        .ok_or_else(|| AppError::NotFound(format!("HITL session {session_id} not found")))?
        .owner
        .admits(&caller)?;
    let raw: Option<String> = state
        .store
        .bounded(conn.get(hitl::signal_key(&session_id)))
        .await?;
    let signal = match raw {
        Some(raw) => serde_json::from_str(&raw).map_err(|e| AppError::Internal(e.to_string()))?,
        None => Value::Null,
    };
    Ok(Json(Envelope::success("HITL signal", signal)))
}
