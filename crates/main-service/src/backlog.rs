//! The gauges read at each scrape of `/metrics`: the request pool's
//! PostgreSQL connections and, per stream this service consumes, its
//! consumer group's pending entries (read, not yet acknowledged) and lag
//! (written, not yet read; `XINFO GROUPS`, Redis 7), the HITL requests
//! waiting for a decision, and the live feeds held open. A Redis that does not answer within its timeout
//! leaves the gauges as they were.
//!
//! Agents write their requests themselves (`hitl:request:*`), so no
//! counter of ours sees them all: the pending ones are counted with `SCAN`
//! and `MGET` in batches, the whole scan bounded by the Redis timeout; a
//! scan that does not finish in time leaves the gauge as it was.

use std::collections::HashMap;

use dwp_core::hitl::DECISIONS_STREAM;
use dwp_core::tasks::EVENTS_STREAM;
use redis::aio::ConnectionManager;

use crate::state::AppState;

/// Reads the gauges into `state.metrics`.
pub async fn read(state: &AppState) {
    let pool = state.db.connection().get_postgres_connection_pool();
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
    state.metrics.pool(pool.size().saturating_sub(idle), idle);
    state.metrics.feeds_open(state.feed.open());
    let Ok(mut conn) = state.store.conn().await else {
        return;
    };
    if let Some(pending) = pending_requests(state, &mut conn).await {
        state.metrics.pending_requests(pending);
    }
    for stream in [DECISIONS_STREAM, EVENTS_STREAM] {
        let groups: Result<Vec<HashMap<String, redis::Value>>, _> = state
            .store
            .bounded(
                redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(stream)
                    .query_async(&mut conn),
            )
            .await;
        let Some(group) = groups.ok().and_then(|groups| {
            groups.into_iter().find(|g| {
                g.get("name").is_some_and(|n| {
                    redis::from_redis_value::<String>(n.clone()).ok().as_deref()
                        == Some(state.config.consumer.group.as_str())
                })
            })
        }) else {
            continue;
        };
        let number = |field: &str| {
            group
                .get(field)
                .and_then(|v| redis::from_redis_value::<i64>(v.clone()).ok())
        };
        // `lag` is nil when Redis cannot tell (after XDEL/XTRIM past the group).
        state.metrics.backlog(
            stream,
            number("pending").unwrap_or(0),
            number("lag").unwrap_or(-1),
        );
    }
}

/// Keys looked at per `SCAN` step.
const SCAN_BATCH: usize = 1000;

/// The `hitl:request:*` whose status is `pending`; `None` when Redis fails
/// or the scan outlasts the Redis timeout.
async fn pending_requests(state: &AppState, conn: &mut ConnectionManager) -> Option<i64> {
    let deadline = tokio::time::Instant::now() + state.store.timeout();
    let (mut cursor, mut pending) = (0u64, 0i64);
    loop {
        let (next, keys): (u64, Vec<Vec<u8>>) = state
            .store
            .bounded(
                redis::cmd("SCAN")
                    .arg(cursor)
                    .arg("MATCH")
                    .arg("hitl:request:*")
                    .arg("COUNT")
                    .arg(SCAN_BATCH)
                    .query_async(conn),
            )
            .await
            .ok()?;
        if !keys.is_empty() {
            let values: Vec<Option<Vec<u8>>> = state
                .store
                .bounded(redis::cmd("MGET").arg(&keys).query_async(conn))
                .await
                .ok()?;
            pending += values.iter().flatten().filter(|v| is_pending(v)).count() as i64;
        }
        if next == 0 {
            return Some(pending);
        }
        if tokio::time::Instant::now() >= deadline {
            tracing::warn!("pending HITL requests: the scan outlasted the Redis timeout");
            return None;
        }
        cursor = next;
    }
}

/// Whether a stored request (as the agent or main-service wrote it) waits.
fn is_pending(raw: &[u8]) -> bool {
    #[derive(serde::Deserialize)]
    struct Status<'a> {
        #[serde(borrow)]
        status: Option<&'a str>,
    }
    serde_json::from_slice::<Status>(raw).is_ok_and(|r| r.status == Some("pending"))
}
