//! The HITL pause, exactly as CONTRACT.md section 5 describes Aura-Platform
//! doing it: write `hitl:request:{requestId}` (30 min) and
//! `hitl:session:{sessionId}` (60 min), SUBSCRIBE to
//! `hitl:channel:{sessionId}`, then check `hitl:signal:{sessionId}` (a
//! decision that came before the subscription is not lost), announce the
//! request (the `hitl` SSE event), and wait for the signal.

use std::time::Duration;

use dwp_core::hitl;
use futures_util::StreamExt;
use serde_json::{Value, json};

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

/// A pending request: what the `hitl` event carries.
#[derive(Debug, Clone)]
pub struct Pending {
    /// `req_` + 12 hex.
    pub request_id: String,
    /// The waiting session.
    pub session_id: String,
}

pub use dwp_core::envelope::unix_now as now;

/// A new request id and a session id for `user`.
pub fn ids(user: Option<&str>) -> Pending {
    let hex = uuid::Uuid::new_v4().simple().to_string();
    let user: String = user
        .unwrap_or("anonymous")
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'))
        .take(40)
        .collect();
    Pending {
        request_id: format!("req_{}", &hex[..12]),
        // A full-width random suffix: a session id nobody can guess.
        session_id: format!("session_{user}_{}_{}", now(), uuid::Uuid::new_v4().simple()),
    }
}

/// Writes the request, subscribes, checks for an early signal, runs
/// `announce` (which sends the `hitl` event), and waits up to `timeout` or
/// until `gone` completes.
#[allow(clippy::too_many_arguments)]
pub async fn pause(
    client: &redis::Client,
    pending: &Pending,
    user: Option<&str>,
    tenant: Option<&str>,
    action: &str,
    context: Value,
    timeout: Duration,
    announce: impl Future<Output = bool>,
    gone: impl Future<Output = ()>,
) -> redis::RedisResult<Outcome> {
    let mut conn = client.get_multiplexed_async_connection().await?;
    let created = chrono_like_now();
    let request = json!({
        "requestId": pending.request_id,
        "sessionId": pending.session_id,
        "actionType": action,
        "context": context,
        "status": "pending",
        "userId": user,
        "tenantId": tenant,
        "createdAt": created,
    });
    let session = json!({"sessionId": pending.session_id, "userId": user, "tenantId": tenant, "createdAt": created});
    let () = redis::cmd("SET")
        .arg(hitl::request_key(&pending.request_id))
        .arg(request.to_string())
        .arg("EX")
        .arg(hitl::REQUEST_TTL_SECS)
        .query_async(&mut conn)
        .await?;
    let () = redis::cmd("SET")
        .arg(hitl::session_key(&pending.session_id))
        .arg(session.to_string())
        .arg("EX")
        .arg(hitl::SESSION_TTL_SECS)
        .query_async(&mut conn)
        .await?;
    let (mut pubsub, early) = subscribe(client, &mut conn, pending).await?;
    if !announce.await {
        return Ok(Outcome::Gone);
    }
    if let Some(signal) = early {
        return Ok(read_signal(&signal));
    }
    let deadline = tokio::time::Instant::now() + timeout;
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
                    let mut conn = client.get_multiplexed_async_connection().await?;
                    subscribe(client, &mut conn, pending).await
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

/// SUBSCRIBE to the session's channel, then the early-signal check of
/// section 5: a decision stored before the subscription (or, after Redis
/// was lost, while the agent was cut off) is not missed.
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
    Ok((pubsub, signal))
}

/// Aura-Platform reads `type` (`rejection` rejects, anything else approves)
/// and `reason`.
pub fn read_signal(raw: &str) -> Outcome {
    let signal: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
    match signal.get("type").and_then(Value::as_str) {
        Some("rejection") => Outcome::Rejected(
            signal
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("User rejected")
                .to_owned(),
        ),
        _ => Outcome::Approved,
    }
}

/// `createdAt` like the agent writes it (ISO 8601, seconds, no zone).
fn chrono_like_now() -> String {
    let stamp = dwp_core::envelope::rfc3339(now());
    stamp.trim_end_matches('Z').to_owned()
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
            Outcome::Rejected("User rejected".into())
        );
        let p = ids(Some("user 123/../x"));
        assert!(
            hitl::valid_id(&p.session_id) && hitl::valid_id(&p.request_id),
            "{p:?}"
        );
        assert_eq!(p.request_id.len(), 16);
    }
}
