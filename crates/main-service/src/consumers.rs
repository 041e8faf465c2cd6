//! The two stream consumers main-service runs, wired to the generic loop
//! of [`crate::consumer`]: the recorded agent streams
//! (`dwp:agent-task-events` → `agent_task`, [`TaskWriter`]) and the decision
//! outbox (`dwp:hitl-decisions` → `hitl_decision` and `hitl_request`, [`Audit`]).

use std::sync::Arc;

use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::audit::Audit;
use crate::consumer::{pause, run};
use crate::db::Db;
use crate::hitl::publish::Publisher;
use crate::state::AppState;
use crate::store::Store;
use crate::tasks::writer::TaskWriter;

/// Starts both consumers (recorded streams → `agent_task`, decision outbox
/// → `hitl_decision`) on a thread of their own with their own small pool,
/// once the schema is ready: their batches never hold up the request
/// workers. The receiver completes when they have stopped after `stop`.
pub fn start(
    state: Arc<AppState>,
    stop: CancellationToken,
) -> std::io::Result<oneshot::Receiver<()>> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    let (done, finished) = oneshot::channel();
    std::thread::Builder::new()
        .name("consumers".into())
        .spawn(move || {
            runtime.block_on(consume_all(&state, stop));
            let _ = done.send(());
        })?;
    Ok(finished)
}

async fn consume_all(state: &AppState, stop: CancellationToken) {
    let redis = &state.config.redis;
    while !state.db.is_ready() {
        if stop.is_cancelled() {
            return;
        }
        pause(&stop).await;
    }
    let mut config = state.config.clone();
    config.db_auto_migrate = false;
    config.db_max_connections = 2;
    let db = match Db::new(&config).await {
        Ok(db) => db,
        Err(e) => {
            tracing::error!(error = %e, "consumers: no database pool; not started");
            return;
        }
    };
    let consumer = &state.config.consumer;
    // Its own Redis connection, on this thread's runtime.
    let feed = Arc::new(Publisher::new(
        Store::new(redis, state.config.redis_timeout, 0),
        state.config.feed.retention,
    ));
    let events = run(
        redis,
        &db,
        &state.metrics,
        consumer,
        dwp_core::tasks::EVENTS_STREAM,
        TaskWriter {
            expiry: state.config.hitl_expiry,
            feed: Some(feed.clone()),
        },
        stop.clone(),
    );
    let decisions = run(
        redis,
        &db,
        &state.metrics,
        consumer,
        dwp_core::hitl::DECISIONS_STREAM,
        Audit {
            expiry: state.config.hitl_expiry,
            feed: Some(feed),
        },
        stop,
    );
    tokio::join!(events, decisions);
    db.close().await;
}
