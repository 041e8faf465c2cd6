//! Delivery of a decision the agent was not yet listening for.
//!
//! The real agent sends the `hitl` event first and SUBSCRIBEs afterwards,
//! takes the first message on its channel and never reads the stored
//! signal (CONTRACT.md section 5): a signal published before it subscribed
//! is lost to it. So the decision script looks at `PUBLISH`'s receiver
//! count; when nobody received the signal it adds the session to
//! [`hitl::UNDELIVERED_KEY`], scored by when delivery stops (the stored
//! signal's lifetime, or the request's if that ends sooner). This loop
//! watches those channels (`PUBSUB NUMSUB`, every
//! [`RETRY_EVERY`] while any wait) and publishes the stored signal again,
//! in a script that removes the entry in the same step, as soon as a
//! channel has a subscriber: the first publish that reaches someone is the
//! only one, across every replica. A session that moved on to another
//! request (its record names another `requestId`) or whose signal expired
//! is dropped, never delivered to a later wait; so is one whose channel
//! has more than one subscriber (two runs share the session id) or whose
//! session has had more than one owner ([`hitl::owners_key`]).
//!
//! "A subscriber" is the channel's own (`PUBSUB NUMSUB`): an operator's
//! `PSUBSCRIBE hitl:channel:*` is not an agent, though `PUBLISH` counts it.
//! Each round looks at every waiting session, [`BATCH`] at a time, so no
//! number of others' entries delays one; each owner has at most
//! `HITL_MAX_UNDELIVERED_PER_USER` waiting (the decision script's cap).

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use dwp_core::envelope::unix_now;
use dwp_core::hitl;
use tokio_util::sync::CancellationToken;

use crate::error::AppError;
use crate::state::AppState;

/// How often channels with an undelivered signal are looked at.
pub const RETRY_EVERY: Duration = Duration::from_millis(10);

/// How often the set is looked at when this replica knows of nothing
/// waiting (another replica may have queued something and stopped).
const IDLE_SCAN_EVERY: Duration = Duration::from_secs(1);

/// Sessions looked at per `PUBSUB NUMSUB`.
pub const BATCH: usize = 500;

/// Publishes the stored signal if the entry is still due, and removes the
/// entry when it reached someone, expired or was superseded.
/// KEYS: the undelivered set, the signal, the session, the session's
/// owners. ARGV: the session id, the channel, now. Returns 1 delivered,
/// 0 nobody listening yet, -1 gone already, -2 expired, -3 superseded,
/// -4 shared (several subscribers or owners).
static DELIVER: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local due = redis.call('ZSCORE', KEYS[1], ARGV[1])
if not due then return -1 end
local signal = redis.call('GET', KEYS[2])
if (not signal) or tonumber(due) < tonumber(ARGV[3]) then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return -2
end
local session = redis.call('GET', KEYS[3])
if session then
  local ok, s = pcall(cjson.decode, session)
  local fine, g = pcall(cjson.decode, signal)
  if ok and fine and type(s) == 'table' and type(g) == 'table'
     and type(s.requestId) == 'string' and s.requestId ~= g.requestId then
    redis.call('ZREM', KEYS[1], ARGV[1])
    return -3
  end
end
if redis.call('HLEN', KEYS[4]) > 1 then
  redis.call('ZREM', KEYS[1], ARGV[1])
  return -4
end
local listeners = redis.call('PUBSUB', 'NUMSUB', ARGV[2])[2]
if listeners == 0 then return 0 end
redis.call('ZREM', KEYS[1], ARGV[1])
if listeners > 1 then return -4 end
redis.call('PUBLISH', ARGV[2], signal)
return 1
",
    )
});

/// Runs until `stop`: a round at once when [`AppState::undelivered`] is
/// notified, then every [`RETRY_EVERY`] while anything waits.
pub async fn run(state: Arc<AppState>, stop: CancellationToken) {
    let mut waiting = true; // look once at start-up
    loop {
        let pause = if waiting {
            RETRY_EVERY
        } else {
            IDLE_SCAN_EVERY
        };
        tokio::select! {
            () = stop.cancelled() => return,
            () = state.undelivered.notified() => {}
            () = tokio::time::sleep(pause) => {}
        }
        waiting = match round(&state).await {
            Ok(left) => left > 0,
            Err(e) => {
                tracing::warn!(error = %e, "HITL delivery round failed; trying again");
                false
            }
        };
    }
}

/// One look at every waiting session, [`BATCH`] at a time; returns how
/// many still wait.
async fn round(state: &AppState) -> Result<usize, AppError> {
    let mut conn = state.store.conn().await?;
    let now = unix_now();
    let (mut offset, mut left) = (0, 0);
    loop {
        let sessions: Vec<(String, f64)> = state
            .store
            .bounded(
                redis::cmd("ZRANGE")
                    .arg(hitl::UNDELIVERED_KEY)
                    .arg(offset)
                    .arg(offset + BATCH - 1)
                    .arg("WITHSCORES")
                    .query_async(&mut conn),
            )
            .await?;
        let seen = sessions.len();
        // Entries removed in this batch shift the rest down: the next
        // batch starts after the ones that stay.
        let waiting = batch(state, &mut conn, &sessions, now).await?;
        left += waiting;
        offset += waiting;
        if seen < BATCH {
            return Ok(left);
        }
    }
}

/// Looks at one batch of waiting sessions; returns how many still wait.
async fn batch(
    state: &AppState,
    conn: &mut redis::aio::ConnectionManager,
    sessions: &[(String, f64)],
    now: u64,
) -> Result<usize, AppError> {
    if sessions.is_empty() {
        return Ok(0);
    }
    let mut numsub = redis::cmd("PUBSUB");
    numsub.arg("NUMSUB");
    for (session, _) in sessions {
        numsub.arg(hitl::channel(session));
    }
    // Channel, count, channel, count, ...
    let counts: Vec<redis::Value> = state.store.bounded(numsub.query_async(conn)).await?;
    let mut left = 0;
    for ((session, due), count) in sessions.iter().zip(counts.chunks(2)) {
        let listened = matches!(count.get(1), Some(redis::Value::Int(n)) if *n > 0);
        // Nobody listening and not due to expire: nothing to do yet.
        if !listened && *due >= now as f64 {
            left += 1;
            continue;
        }
        let result: i64 = state
            .store
            .bounded(
                DELIVER
                    .key(hitl::UNDELIVERED_KEY)
                    .key(hitl::signal_key(session))
                    .key(hitl::session_key(session))
                    .key(hitl::owners_key(session))
                    .arg(session)
                    .arg(hitl::channel(session))
                    .arg(now)
                    .invoke_async(conn),
            )
            .await?;
        match result {
            1 => {
                state.metrics.delivery("late");
                tracing::info!(session_id = session, "HITL signal delivered late");
            }
            0 => left += 1,
            -2 => {
                state.metrics.delivery("expired");
                tracing::warn!(
                    session_id = session,
                    "HITL signal never delivered: no agent subscribed in time"
                );
            }
            -3 => state.metrics.delivery("superseded"),
            -4 => {
                state.metrics.delivery("shared");
                tracing::warn!(
                    session_id = session,
                    "HITL signal not delivered: more than one run or owner on the session"
                );
            }
            _ => {}
        }
    }
    Ok(left)
}
