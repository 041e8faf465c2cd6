//! The journal: every block of every resumable stream, written to the
//! task's Redis Stream in order and without loss while Redis is up.
//!
//! The run hands blocks over an unbounded queue and never waits for
//! Redis. The writer takes what is queued, writes it with one script call
//! per task (entry ids `0-{seq}`, so that a batch written again after a
//! timeout adds nothing), and on an error keeps the batch and tries again,
//! backing off up to a second. Only when more than
//! `GATEWAY_STREAM_JOURNAL_MAX_BYTES` wait unwritten (Redis down for a
//! long time) are further blocks dropped, and their task's journal marked
//! `lost`, so that a resume answers 503 instead of replaying a gap.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use bytes::Bytes;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::keys;
use crate::metrics::Metrics;

/// Longest a write may take before it counts as failed (and is retried).
const WRITE_TIMEOUT: Duration = Duration::from_secs(2);

/// Items taken per write at most.
const BATCH: usize = 1024;

/// Appends one task's entries: skips those at or below the stream's last
/// id (a batch written again), records the agent's ids, sets the state and
/// the meta fields, and keeps every key for `ARGV[1]` seconds.
/// ARGV: ttl, n, then n × (seq, field, value, agent id), state, then meta
/// field/value pairs.
const APPEND_SCRIPT: &str = r"
local last = 0
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if top[1] then last = tonumber(string.match(top[1][1], '%-(%d+)$')) end
local n = tonumber(ARGV[2])
for i = 0, n - 1 do
  local seq = tonumber(ARGV[3 + i * 4])
  if seq > last then
    redis.call('XADD', KEYS[1], '0-' .. seq, ARGV[4 + i * 4], ARGV[5 + i * 4])
    if ARGV[6 + i * 4] ~= '' then redis.call('HSET', KEYS[2], ARGV[6 + i * 4], seq) end
    last = seq
  end
end
local at = 3 + n * 4
if ARGV[at] ~= '' then redis.call('HSET', KEYS[3], 'state', ARGV[at]) end
for j = at + 1, #ARGV, 2 do redis.call('HSET', KEYS[3], ARGV[j], ARGV[j + 1]) end
for k = 1, 3 do
  if redis.call('EXISTS', KEYS[k]) == 1 then redis.call('EXPIRE', KEYS[k], ARGV[1]) end
end
return last
";

/// One thing to write.
#[derive(Debug)]
pub enum Item {
    /// A run began: its meta fields (owner, route, content type).
    Start {
        /// The task id.
        task: Arc<str>,
        /// Field/value pairs of `dwp:stream:{task}:meta`.
        meta: Vec<(&'static str, String)>,
    },
    /// A block as its clients get it.
    Block {
        /// The task id.
        task: Arc<str>,
        /// Its place in the stream, from 1.
        seq: u64,
        /// The bytes.
        bytes: Bytes,
        /// The agent's `id:` of the block, when it had one.
        id: Option<String>,
    },
    /// A block of the task was dropped: its journal has a gap.
    Lost {
        /// The task id.
        task: Arc<str>,
    },
    /// The run ended (`reason`: `complete`, `cancelled`, ...).
    End {
        /// The task id.
        task: Arc<str>,
        /// The end entry's place: after the last block.
        seq: u64,
        /// Why it ended.
        reason: &'static str,
    },
}

impl Item {
    fn task(&self) -> &Arc<str> {
        match self {
            Self::Start { task, .. }
            | Self::Block { task, .. }
            | Self::Lost { task }
            | Self::End { task, .. } => task,
        }
    }

    fn size(&self) -> usize {
        match self {
            Self::Block { bytes, .. } => bytes.len() + 64,
            _ => 64,
        }
    }
}

/// The runs' handle on the writer: never blocks.
#[derive(Clone, Debug)]
pub struct Journal {
    tx: mpsc::UnboundedSender<Item>,
    queued: Arc<AtomicUsize>,
    max_bytes: usize,
    metrics: Arc<Metrics>,
}

impl Journal {
    /// The handle and the receiving end for [`write_loop`].
    pub fn new(max_bytes: usize, metrics: Arc<Metrics>) -> (Self, Receiver) {
        let (tx, rx) = mpsc::unbounded_channel();
        let queued = Arc::new(AtomicUsize::new(0));
        let journal = Self {
            tx,
            queued: queued.clone(),
            max_bytes,
            metrics,
        };
        (journal, Receiver { rx, queued })
    }

    /// Queues `item`; false when it was dropped (the queue holds more than
    /// its cap: Redis has been unreachable for a long time).
    pub fn push(&self, item: Item) -> bool {
        let size = item.size();
        if let Item::Block { task, .. } = &item
            && self.queued.load(Relaxed) + size > self.max_bytes
        {
            self.metrics.journal_lost.inc();
            let task = task.clone();
            self.queued
                .fetch_add(Item::Lost { task: task.clone() }.size(), Relaxed);
            let _ = self.tx.send(Item::Lost { task });
            return false;
        }
        self.queued.fetch_add(size, Relaxed);
        self.tx.send(item).is_ok()
    }
}

/// The writer's end of the queue.
#[derive(Debug)]
pub struct Receiver {
    rx: mpsc::UnboundedReceiver<Item>,
    queued: Arc<AtomicUsize>,
}

/// How long journals are kept.
#[derive(Debug, Clone, Copy)]
pub struct Retention {
    /// While the run goes on (refreshed by every write).
    pub running: Duration,
    /// After it ended (`GATEWAY_STREAM_RETENTION_SECS`).
    pub ended: Duration,
}

/// Writes queued items until every [`Journal`] handle is gone.
pub async fn write_loop(redis: dwp_core::redis::Target, mut rx: Receiver, retention: Retention) {
    let mut conn: Option<ConnectionManager> = None;
    let mut batch: Vec<Item> = Vec::new();
    let mut lost: HashSet<Arc<str>> = HashSet::new();
    let mut backoff = Duration::from_millis(50);
    loop {
        if batch.is_empty() {
            if rx.rx.recv_many(&mut batch, BATCH).await == 0 {
                return;
            }
        } else {
            while batch.len() < BATCH * 4 {
                match rx.rx.try_recv() {
                    Ok(item) => batch.push(item),
                    Err(_) => break,
                }
            }
        }
        match write(&redis, &mut conn, &batch, &mut lost, retention).await {
            Ok(()) => {
                for item in &batch {
                    if let Item::End { task, .. } = item {
                        lost.remove(task);
                    }
                }
                let size: usize = batch.iter().map(Item::size).sum();
                rx.queued.fetch_sub(size, Relaxed);
                batch.clear();
                backoff = Duration::from_millis(50);
            }
            Err(e) => {
                tracing::warn!(error = %e, queued = batch.len(), "stream journal: not written, trying again");
                conn = None;
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(1));
            }
        }
    }
}

/// One task's part of a batch, as the script's arguments.
#[derive(Default)]
struct TaskArgs<'a> {
    entries: Vec<(u64, &'static str, &'a [u8], &'a str)>,
    state: &'static str,
    meta: Vec<(&'static str, &'a str)>,
    ended: bool,
}

async fn write(
    redis: &dwp_core::redis::Target,
    conn: &mut Option<ConnectionManager>,
    batch: &[Item],
    lost: &mut HashSet<Arc<str>>,
    retention: Retention,
) -> Result<(), String> {
    let mut order: Vec<&Arc<str>> = Vec::new();
    let mut tasks: HashMap<&Arc<str>, TaskArgs<'_>> = HashMap::new();
    for item in batch {
        let task = item.task();
        let args = tasks.entry(task).or_insert_with(|| {
            order.push(task);
            TaskArgs::default()
        });
        match item {
            Item::Start { meta, .. } => {
                args.state = "running";
                args.meta.extend(meta.iter().map(|(k, v)| (*k, v.as_str())));
            }
            Item::Block { seq, bytes, id, .. } => {
                args.entries
                    .push((*seq, "b", bytes, id.as_deref().unwrap_or("")))
            }
            Item::Lost { task } => {
                lost.insert((*task).clone());
            }
            Item::End { seq, reason, .. } => {
                args.entries.push((*seq, "e", reason.as_bytes(), ""));
                args.state = "ended";
                args.ended = true;
            }
        }
    }
    let mut pipe = redis::pipe();
    for task in order {
        let args = &tasks[task];
        let state = if lost.contains(task) {
            "lost"
        } else {
            args.state
        };
        let ttl = if args.ended {
            retention.ended
        } else {
            retention.running
        };
        let cmd = pipe
            .cmd("EVAL")
            .arg(APPEND_SCRIPT)
            .arg(3)
            .arg(keys::stream(task))
            .arg(keys::ids(task))
            .arg(keys::meta(task))
            .arg(ttl.as_secs().max(1))
            .arg(args.entries.len());
        for (seq, field, value, id) in &args.entries {
            cmd.arg(*seq).arg(*field).arg(*value).arg(*id);
        }
        cmd.arg(state);
        for (k, v) in &args.meta {
            cmd.arg(*k).arg(*v);
        }
        cmd.ignore();
    }
    let manager = connect(redis, conn).await?;
    tokio::time::timeout(WRITE_TIMEOUT, pipe.query_async::<()>(manager))
        .await
        .map_err(|_| "write timed out".to_owned())?
        .map_err(|e| e.to_string())
}

/// The writer's connection, opened again after a failure.
async fn connect<'c>(
    redis: &dwp_core::redis::Target,
    conn: &'c mut Option<ConnectionManager>,
) -> Result<&'c mut ConnectionManager, String> {
    if conn.is_none() {
        *conn = Some(redis.writer(WRITE_TIMEOUT).await?);
    }
    conn.as_mut().ok_or_else(|| "no connection".to_owned())
}
