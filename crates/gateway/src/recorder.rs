//! The stream recorder: tees the SSE events of every relayed agent stream
//! into the Redis Stream `dwp:agent-task-events`, off the relay path.
//!
//! The relay only clones each chunk (a reference count) into a bounded
//! queue with `try_send`; it never waits. One recorder task parses the
//! chunks per stream (the full WHATWG parser) and writes the events with
//! pipelined `XADD`s. When the queue is full or Redis is down, events are
//! dropped and counted (`gateway_recorder_dropped_total`); the client's
//! stream is never slowed, altered or reordered. An event larger than
//! `GATEWAY_RECORDER_MAX_EVENT_BYTES` is skipped without being held and
//! counted (`gateway_recorder_oversized_total`); the stream is trimmed by
//! `STREAM_MAX_LEN` and `STREAM_MAX_AGE_SECS` on every write.
//!
//! A `hitl` event also records its stream's owner (tenant, user) under the
//! request's session in `hitl:owners:{sessionId}`, in the same pipeline:
//! session ids carry no tenant, and main-service refuses to decide on a
//! session more than one owner has waited on
//! ([`dwp_core::hitl::owners_key`]).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dwp_core::settings::Retention;
use dwp_core::sse::{Event, Parser};
use dwp_core::{hitl, tasks};
use redis::aio::ConnectionManager;
use tokio::sync::{mpsc, oneshot};

use crate::metrics::Metrics;

/// Chunks waiting for the recorder, across all streams.
pub const QUEUE: usize = 16 * 1024;

/// Events written per pipeline at most.
const BATCH: usize = 512;

/// Pause after a partial batch, so that chunks arriving meanwhile are taken
/// in one go instead of each waking the recorder (cheaper for the relays).
const COALESCE: Duration = Duration::from_millis(5);

/// Longest a Redis write may take before its events count as dropped.
const WRITE_TIMEOUT: Duration = Duration::from_secs(1);

/// Who and what a recorded stream belongs to.
#[derive(Debug)]
pub struct TaskMeta {
    /// The task id sent upstream and to the client as `X-DWP-Task-ID`.
    pub task_id: String,
    /// `X-User-ID` (empty when absent).
    pub user_id: String,
    /// `X-Tenant-ID`.
    pub tenant_id: String,
    /// The request path.
    pub path: String,
}

enum Item {
    Chunk(Arc<TaskMeta>, Bytes),
    End(Arc<TaskMeta>, Option<&'static str>),
}

/// The relay's handle on the recorder: cheap to clone, never blocks.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<Item>,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Recorder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Recorder")
    }
}

impl Recorder {
    /// Starts the recorder on a thread of its own (so its parsing and
    /// writing never hold up a worker's connections), writing to
    /// `redis`. The returned receiver completes once every handle is
    /// dropped and the queue is written.
    pub fn start(
        redis: &dwp_core::redis::Target,
        limits: Limits,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, oneshot::Receiver<()>)> {
        let redis = redis.clone();
        let (tx, rx) = mpsc::channel(QUEUE);
        let (done, finished) = oneshot::channel();
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let writer_metrics = metrics.clone();
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || {
                runtime.block_on(write_loop(redis, rx, limits, writer_metrics));
                let _ = done.send(());
            })?;
        Ok((Self { tx, metrics }, finished))
    }

    /// Offers a relayed chunk; drops and counts it when the queue is full.
    pub fn chunk(&self, task: &Arc<TaskMeta>, bytes: &Bytes) {
        if self
            .tx
            .try_send(Item::Chunk(task.clone(), bytes.clone()))
            .is_err()
        {
            self.metrics.recorder_dropped.inc();
        }
    }

    /// The stream is over: the recorder forgets its parser state, and when
    /// the stream did not finish (`broken` says why) records that as a
    /// [`tasks::EVENT_RELAY_BROKEN`] entry.
    pub fn end(&self, task: &Arc<TaskMeta>, broken: Option<&'static str>) {
        if self.tx.try_send(Item::End(task.clone(), broken)).is_err() && broken.is_some() {
            self.metrics.recorder_dropped.inc();
        }
    }
}

/// What the recorder keeps: the largest event, and how much of the stream.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// `GATEWAY_RECORDER_MAX_EVENT_BYTES`: larger events are skipped.
    pub max_event_bytes: usize,
    /// `STREAM_MAX_LEN`, `STREAM_MAX_AGE_SECS`.
    pub retention: Retention,
}

async fn write_loop(
    redis: dwp_core::redis::Target,
    mut rx: mpsc::Receiver<Item>,
    limits: Limits,
    metrics: Arc<Metrics>,
) {
    let mut conn: Option<ConnectionManager> = None;
    let mut parsers: HashMap<String, Parser> = HashMap::new();
    let mut items = Vec::with_capacity(BATCH);
    let mut events: Vec<(Arc<TaskMeta>, Event)> = Vec::new();
    while let received @ 1.. = rx.recv_many(&mut items, BATCH).await {
        for item in items.drain(..) {
            match item {
                Item::Chunk(task, bytes) => {
                    let mut parsed = Vec::new();
                    let parser = parsers
                        .entry(task.task_id.clone())
                        .or_insert_with(|| Parser::with_max_event(limits.max_event_bytes));
                    parser.feed_into(&bytes, &mut parsed);
                    let oversized = parser.take_oversized();
                    if oversized > 0 {
                        tracing::warn!(
                            task = task.task_id,
                            "recorder: an event over the size cap was not recorded"
                        );
                        metrics.recorder_oversized.inc_by(oversized);
                    }
                    events.extend(parsed.into_iter().map(|e| (task.clone(), e)));
                }
                Item::End(task, broken) => {
                    parsers.remove(&task.task_id);
                    if let Some(reason) = broken {
                        let data = serde_json::json!({"type": tasks::EVENT_RELAY_BROKEN, "reason": reason});
                        let event = Event {
                            event: Some(tasks::EVENT_RELAY_BROKEN.into()),
                            data: data.to_string(),
                            ..Event::default()
                        };
                        events.push((task, event));
                    }
                }
            }
        }
        if events.is_empty() {
            continue;
        }
        let count = events.len() as u64;
        match write(&redis, &mut conn, &events, &limits.retention).await {
            Ok(()) => {
                metrics.recorder_events.inc_by(count);
            }
            Err(e) => {
                tracing::warn!(error = %e, dropped = count, "recorder: events not written");
                metrics.recorder_dropped.inc_by(count);
                conn = None; // reconnect on the next batch
            }
        }
        events.clear();
        if received < BATCH {
            tokio::time::sleep(COALESCE).await;
        }
    }
}

/// The `requestId` of a `hitl` event (`data.data.requestId`, or a flat
/// `data.requestId`), when it is one main-service could decide.
fn hitl_request_id(event: &Event) -> Option<String> {
    if event.event_type() != "hitl" {
        return None;
    }
    let data: serde_json::Value = serde_json::from_str(&event.data).ok()?;
    let id = data
        .get("data")
        .and_then(|d| d.get("requestId"))
        .or_else(|| data.get("requestId"))?
        .as_str()?;
    hitl::storable_id(id).then(|| id.to_owned())
}

async fn write(
    redis: &dwp_core::redis::Target,
    conn: &mut Option<ConnectionManager>,
    events: &[(Arc<TaskMeta>, Event)],
    retention: &Retention,
) -> Result<(), String> {
    if conn.is_none() {
        // Asked for at every reconnection: with Sentinel, the primary
        // may have moved since the last connection failed.
        *conn = Some(redis.writer(WRITE_TIMEOUT).await?);
    }
    let Some(manager) = conn.as_mut() else {
        return Err("no connection".into());
    };
    let mut pipe = redis::pipe();
    for (task, event) in events {
        pipe.cmd("XADD")
            .arg(tasks::EVENTS_STREAM)
            .arg("MAXLEN")
            .arg("~")
            .arg(retention.max_len)
            .arg("*")
            .arg(tasks::FIELD_TASK_ID)
            .arg(&task.task_id)
            .arg(tasks::FIELD_USER_ID)
            .arg(&task.user_id)
            .arg(tasks::FIELD_TENANT_ID)
            .arg(&task.tenant_id)
            .arg(tasks::FIELD_PATH)
            .arg(&task.path)
            .arg(tasks::FIELD_EVENT_ID)
            .arg(event.id.as_deref().unwrap_or(""))
            .arg(tasks::FIELD_EVENT_TYPE)
            .arg(event.event_type())
            .arg(tasks::FIELD_DATA)
            .arg(&event.data)
            .ignore();
    }
    for (task, event) in events {
        if let Some(request_id) = hitl_request_id(event)
            && !task.user_id.is_empty()
        {
            pipe.cmd("EVAL")
                .arg(hitl::RECORD_OWNER_SCRIPT)
                .arg(1)
                .arg(hitl::request_key(&request_id))
                .arg(hitl::owner_field(&task.tenant_id, &task.user_id))
                .arg(hitl::SESSION_TTL_SECS)
                .arg(&request_id)
                .ignore();
        }
    }
    pipe.cmd("XTRIM")
        .arg(tasks::EVENTS_STREAM)
        .arg("MINID")
        .arg("~")
        .arg(retention.min_id())
        .ignore();
    tokio::time::timeout(WRITE_TIMEOUT, pipe.query_async::<()>(manager))
        .await
        .map_err(|_| "write timed out".to_owned())?
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(kind: &str, data: &str) -> Event {
        Event {
            event: Some(kind.into()),
            data: data.into(),
            ..Event::default()
        }
    }

    #[test]
    fn only_hitl_events_with_a_usable_request_id_name_one() {
        let wrapped = r#"{"type":"hitl","data":{"requestId":"req_142b79eadced"}}"#;
        assert_eq!(
            hitl_request_id(&event("hitl", wrapped)).as_deref(),
            Some("req_142b79eadced")
        );
        let flat = r#"{"type":"hitl","requestId":"req_1"}"#;
        assert_eq!(
            hitl_request_id(&event("hitl", flat)).as_deref(),
            Some("req_1")
        );
        assert_eq!(hitl_request_id(&event("content", wrapped)), None);
        assert_eq!(hitl_request_id(&event("hitl", "not json")), None);
        assert_eq!(
            hitl_request_id(&event("hitl", r#"{"data":{"requestId":"a\nb"}}"#)),
            None
        );
    }
}
