//! The gauges read at each scrape of `/metrics`: the request pool's
//! PostgreSQL connections and, per stream this service consumes, its
//! consumer group's pending entries (read, not yet acknowledged) and lag
//! (written, not yet read; `XINFO GROUPS`, Redis 7). A Redis that does not
//! answer within its timeout leaves the backlog gauges as they were.

use std::collections::HashMap;

use dwp_core::hitl::DECISIONS_STREAM;
use dwp_core::tasks::EVENTS_STREAM;

use crate::state::AppState;

/// Reads the gauges into `state.metrics`.
pub async fn read(state: &AppState) {
    let pool = state.db.connection().get_postgres_connection_pool();
    let idle = u32::try_from(pool.num_idle()).unwrap_or(u32::MAX);
    state.metrics.pool(pool.size().saturating_sub(idle), idle);
    let Ok(mut conn) = state.store.conn().await else {
        return;
    };
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
