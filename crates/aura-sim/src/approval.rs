//! The HITL pause over Redis, as CONTRACT.md section 5 says Aura-Platform
//! does it, weaknesses included, unless a setting asks for more.
//!
//! By default ([`Wait::Agent`], [`SessionIds::Agent`]), like the real agent:
//! the session id is `session_{sub}_{unix seconds}` from the raw token
//! `sub` (two runs of one user in one second share it); the request and
//! the session record are written (`SETEX`, Python's JSON); the `hitl`
//! event is sent; only then does it SUBSCRIBE to `hitl:channel:{sessionId}`,
//! and the first message there is the decision, whatever its `requestId`.
//! It never reads `hitl:signal:{sessionId}`, so a signal published before
//! it subscribed is lost to it, and a lost Redis connection ends the wait.
//!
//! [`Wait::Robust`] subscribes before it announces, reads a stored signal
//! of its own request, and subscribes again after losing Redis;
//! [`SessionIds::Random`] adds a full random suffix to the session id.

use std::time::Duration;

use dwp_core::hitl;
use futures_util::StreamExt;
use serde_json::{Value, json};

use crate::frame::python_json;

/// How a pause ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Approved: the run goes on.
    Approved,
    /// Rejected, with the reason.
    Rejected(String),
    /// No decision in time.
    TimedOut,
    /// The client went away while waiting.
    Gone,
}

/// How session ids are made (`AURA_SIM_SESSION_IDS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionIds {
    /// `agent`: `session_{sub}_{unix seconds}`, as the real agent.
    Agent,
    /// `random`: the sub's plain characters and a random suffix nobody can guess.
    Random,
}

/// How a run waits for its decision (`AURA_SIM_WAIT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wait {
    /// `agent`: subscribe this long after the event, first message wins, no re-read.
    Agent(Duration),
    /// `robust`: subscribe first, read a stored signal, resubscribe after a loss.
    Robust,
}

/// A pending request: what the `hitl` event carries.
#[derive(Debug, Clone)]
pub struct Pending {
    /// `req_` + 12 hex.
    pub request_id: String,
    /// The waiting session.
    pub session_id: String,
}

/// Who the run is for, as written in Redis (`tenantId` may be null).
#[derive(Debug, Clone)]
pub struct Owner<'a> {
    /// The token's `sub`.
    pub user: &'a str,
    /// The token's `tenant_id` or `X-Tenant-ID`.
    pub tenant: Option<&'a str>,
}

pub use dwp_core::envelope::unix_now as now;

/// A new request id on the run's `session_id`.
pub fn next_request(session_id: &str) -> Pending {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    Pending {
        request_id: format!("req_{}", &hex[..12]),
        session_id: session_id.to_owned(),
    }
}

/// The run's session id for `user`.
pub fn session_id(user: &str, style: SessionIds) -> String {
    match style {
        SessionIds::Agent => format!("session_{user}_{}", now()),
        SessionIds::Random => {
            let plain: String = user
                .chars()
                .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
                .take(40)
                .collect();
            format!(
                "session_{plain}_{}_{}",
                now(),
                uuid::Uuid::new_v4().simple()
            )
        }
    }
}

/// Writes the request and the session record, then waits as `wait` says:
/// `announce` sends the `hitl` event (false: the client is gone); the
/// wait ends after `timeout` or when `gone` completes.
#[allow(clippy::too_many_arguments)]
pub async fn pause(
    redis: &dwp_core::redis::Target,
    pending: &Pending,
    owner: &Owner<'_>,
    action: &str,
    context: Value,
    wait: Wait,
    timeout: Duration,
    announce: impl Future<Output = bool>,
    gone: impl Future<Output = ()>,
) -> redis::RedisResult<Outcome> {
    // The primary as it is now (with Sentinel, asked at every run).
    let client = &redis.primary().await?;
    let mut conn = client.get_multiplexed_async_connection().await?;
    write(&mut conn, pending, owner, action, context).await?;
    let deadline = tokio::time::Instant::now() + timeout;
    match wait {
        Wait::Agent(delay) => {
            if !announce.await {
                return Ok(Outcome::Gone);
            }
            tokio::time::sleep(delay).await;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(hitl::channel(&pending.session_id)).await?;
            let mut messages = pubsub.on_message();
            tokio::select! {
                message = messages.next() => match message {
                    Some(m) => Ok(read_signal(&m.get_payload::<String>().unwrap_or_default())),
                    None => Err(redis::RedisError::from((redis::ErrorKind::Io, "Redis connection lost while waiting"))),
                },
                () = tokio::time::sleep_until(deadline) => Ok(Outcome::TimedOut),
                () = gone => Ok(Outcome::Gone),
            }
        }
        Wait::Robust => robust_wait(redis, client, conn, pending, deadline, announce, gone).await,
    }
}

/// `SETEX` of `hitl:request:{requestId}` and `hitl:session:{sessionId}`
/// with the fields and the JSON the real agent writes (`createdAt` is an
/// integer, not a time).
async fn write(
    conn: &mut redis::aio::MultiplexedConnection,
    pending: &Pending,
    owner: &Owner<'_>,
    action: &str,
    context: Value,
) -> redis::RedisResult<()> {
    let created = uuid::Uuid::new_v4().as_u128() % 10_000_000_000;
    let request = json!({
        "requestId": pending.request_id,
        "sessionId": pending.session_id,
        "actionType": action,
        "context": context,
        "status": "pending",
        "userId": owner.user,
        "tenantId": owner.tenant,
        "createdAt": created as u64,
    });
    let session = json!({
        "sessionId": pending.session_id,
        "requestId": pending.request_id,
        "userId": owner.user,
        "tenantId": owner.tenant,
    });
    for (key, value, ttl) in [
        (
            hitl::request_key(&pending.request_id),
            request,
            hitl::REQUEST_TTL_SECS,
        ),
        (
            hitl::session_key(&pending.session_id),
            session,
            hitl::SESSION_TTL_SECS,
        ),
    ] {
        let () = redis::cmd("SETEX")
            .arg(key)
            .arg(ttl)
            .arg(python_json(&value))
            .query_async(conn)
            .await?;
    }
    Ok(())
}

/// [`Wait::Robust`]: subscribed before the event, a stored signal of this
/// request counts, and a lost connection is followed by a new subscription.
async fn robust_wait(
    redis: &dwp_core::redis::Target,
    client: &redis::Client,
    mut conn: redis::aio::MultiplexedConnection,
    pending: &Pending,
    deadline: tokio::time::Instant,
    announce: impl Future<Output = bool>,
    gone: impl Future<Output = ()>,
) -> redis::RedisResult<Outcome> {
    let (mut pubsub, early) = subscribe(client, &mut conn, pending).await?;
    if !announce.await {
        return Ok(Outcome::Gone);
    }
    if let Some(signal) = early {
        return Ok(read_signal(&signal));
    }
    tokio::pin!(gone);
    loop {
        let mut messages = pubsub.on_message();
        tokio::select! {
            // `None`: the connection to Redis was lost (a restart, a
            // fail-over); subscribe again below and look for a signal stored
            // meanwhile.
            message = messages.next() => if let Some(m) = message {
                return Ok(read_signal(&m.get_payload::<String>().unwrap_or_default()));
            },
            () = tokio::time::sleep_until(deadline) => return Ok(Outcome::TimedOut),
            () = &mut gone => return Ok(Outcome::Gone),
        }
        drop(messages);
        loop {
            tokio::select! {
                again = async {
                    // After a fail-over the primary is another node.
                    let client = redis.primary().await?;
                    let mut conn = client.get_multiplexed_async_connection().await?;
                    subscribe(&client, &mut conn, pending).await
                } => match again {
                    Ok((_, Some(signal))) => return Ok(read_signal(&signal)),
                    Ok((fresh, None)) => {
                        pubsub = fresh;
                        break;
                    }
                    Err(e) => {
                        tracing::warn!(request_id = %pending.request_id, "Redis lost while waiting for a decision: {e}");
                        tokio::time::sleep(RESUBSCRIBE_EVERY).await;
                    }
                },
                () = tokio::time::sleep_until(deadline) => return Ok(Outcome::TimedOut),
                () = &mut gone => return Ok(Outcome::Gone),
            }
        }
    }
}

/// How often a waiting run tries to reach Redis again after losing it.
const RESUBSCRIBE_EVERY: Duration = Duration::from_millis(200);

/// SUBSCRIBE to the session's channel, then look for a signal of this
/// request stored before the subscription (or while the run was cut off).
async fn subscribe(
    client: &redis::Client,
    conn: &mut redis::aio::MultiplexedConnection,
    pending: &Pending,
) -> redis::RedisResult<(redis::aio::PubSub, Option<String>)> {
    let mut pubsub = client.get_async_pubsub().await?;
    pubsub.subscribe(hitl::channel(&pending.session_id)).await?;
    let signal: Option<String> = redis::cmd("GET")
        .arg(hitl::signal_key(&pending.session_id))
        .query_async(conn)
        .await?;
    // A signal of an earlier request on the same session is not this one's.
    let mine = signal.filter(|raw| {
        serde_json::from_str::<Value>(raw)
            .ok()
            .and_then(|s| {
                s.get("requestId")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .is_some_and(|id| id == pending.request_id)
    });
    Ok((pubsub, mine))
}

/// Aura-Platform reads `type` (`rejection` rejects, anything else approves)
/// and `reason` (`Request rejected` when absent).
pub fn read_signal(raw: &str) -> Outcome {
    let signal: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
    match signal.get("type").and_then(Value::as_str) {
        Some("rejection") => Outcome::Rejected(
            signal
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("Request rejected")
                .to_owned(),
        ),
        _ => Outcome::Approved,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signals_are_read_like_aura_platform_reads_them() {
        assert_eq!(
            read_signal(r#"{"type":"approval","action":"approve"}"#),
            Outcome::Approved
        );
        assert_eq!(
            read_signal(r#"{"type":"rejection","reason":"too risky"}"#),
            Outcome::Rejected("too risky".into())
        );
        assert_eq!(
            read_signal(r#"{"type":"rejection"}"#),
            Outcome::Rejected("Request rejected".into())
        );
        assert_eq!(read_signal(r#"{"type":"whatever"}"#), Outcome::Approved);
    }

    #[test]
    fn session_ids_are_the_agents_or_unguessable() {
        let user = "alice kim@corp.example";
        let before = now();
        let agent = session_id(user, SessionIds::Agent);
        let seconds: u64 = agent
            .strip_prefix(&format!("session_{user}_"))
            .and_then(|s| s.parse().ok())
            .unwrap();
        assert!(seconds >= before && seconds <= now(), "{agent}");
        let random = session_id(user, SessionIds::Random);
        assert!(hitl::valid_id(&random), "{random}");
        assert_eq!(random.rsplit('_').next().map(str::len), Some(32));
        let p = next_request(&agent);
        assert_eq!((p.request_id.len(), p.session_id), (16, agent));
    }
}
