//! The live tail: one reader per gateway follows the journals its
//! followers wait on, with one blocking `XREAD` over all of them, and hands
//! each new entry to the followers of its task.
//!
//! A follower joins with the seq it has seen; it gets every later entry,
//! in order, until the end entry. A follower that does not take what it is
//! given (its channel full) is dropped: its client resumes again.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::Value;
use redis::streams::StreamReadReply;
use tokio::sync::{Notify, mpsc};

use super::keys;

/// How long one `XREAD` waits; a follower that joins meanwhile is read
/// from the next one.
const BLOCK: Duration = Duration::from_millis(200);

/// Entries per journal per read at most.
const COUNT: usize = 256;

/// Entries a follower may have waiting.
const FOLLOWER_BUFFER: usize = 1024;

/// Ends the journal of a run whose gateway stopped saying it is alive (it
/// crashed): an `error` event (`GatewayStopped`), `[DONE]` and the end,
/// after the last entry, once (the state leaves `running`).
/// KEYS: stream, meta, ids. ARGV: retention seconds, the error event's
/// text, `[DONE]`'s.
const ORPHAN_SCRIPT: &str = r"
if redis.call('HGET', KEYS[2], 'state') ~= 'running' then return 0 end
local gateway = redis.call('HGET', KEYS[2], 'gateway')
if not gateway or redis.call('EXISTS', 'dwp:gateway:' .. gateway .. ':alive') == 1 then return 0 end
local last = 0
local top = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
if top[1] then last = tonumber(string.match(top[1][1], '%-(%d+)$')) end
local lf = string.char(10)
redis.call('XADD', KEYS[1], '0-' .. (last + 1), 'b', 'id: g' .. (last + 1) .. lf .. ARGV[2])
redis.call('XADD', KEYS[1], '0-' .. (last + 2), 'b', 'id: g' .. (last + 2) .. lf .. ARGV[3])
redis.call('XADD', KEYS[1], '0-' .. (last + 3), 'e', 'gateway-lost')
redis.call('HSET', KEYS[2], 'state', 'ended')
for k = 1, 3 do
  if redis.call('EXISTS', KEYS[k]) == 1 then redis.call('EXPIRE', KEYS[k], ARGV[1]) end
end
return 1
";

/// One journal entry.
#[derive(Debug, Clone)]
pub enum Entry {
    /// A block and its seq.
    Block(u64, Bytes),
    /// The run ended, and why.
    End(String),
}

impl Entry {
    /// An entry as `XRANGE`/`XREAD` return it: its id `0-{seq}`, its field.
    pub fn parse(id: &str, map: &HashMap<String, Value>) -> Option<(u64, Self)> {
        let seq = id.strip_prefix("0-")?.parse().ok()?;
        let bytes = |v: &Value| match v {
            Value::BulkString(b) => Some(Bytes::copy_from_slice(b)),
            Value::SimpleString(s) => Some(Bytes::copy_from_slice(s.as_bytes())),
            _ => None,
        };
        if let Some(b) = map.get("b").and_then(bytes) {
            return Some((seq, Self::Block(seq, b)));
        }
        let end = map.get("e").and_then(bytes)?;
        Some((seq, Self::End(String::from_utf8_lossy(&end).into_owned())))
    }
}

struct Follower {
    id: u64,
    after: u64,
    tx: mpsc::Sender<Entry>,
}

#[derive(Default)]
struct Inner {
    followers: Mutex<HashMap<Arc<str>, Vec<Follower>>>,
    wake: Notify,
    next_id: AtomicU64,
}

/// The followers' handle on the tail reader.
#[derive(Clone)]
pub struct Tail {
    inner: Arc<Inner>,
}

/// A follower's place in the tail; leaving it drops the follower.
pub struct Following {
    inner: Arc<Inner>,
    task: Arc<str>,
    id: u64,
}

impl Drop for Following {
    fn drop(&mut self) {
        if let Ok(mut followers) = self.inner.followers.lock()
            && let Some(list) = followers.get_mut(&self.task)
        {
            list.retain(|f| f.id != self.id);
            if list.is_empty() {
                followers.remove(&self.task);
            }
        }
    }
}

impl Tail {
    /// The handle, and the reader to run (on the streams thread).
    /// `seen` is how long a follower's mark holds (the runs' detach time).
    /// `retention` is how long a journal is kept after its run.
    pub fn new(
        redis: dwp_core::redis::Target,
        seen: Duration,
        retention: Duration,
    ) -> (Self, impl std::future::Future<Output = ()> + Send) {
        let inner = Arc::new(Inner::default());
        (
            Self {
                inner: inner.clone(),
            },
            read_loop(redis, inner, Marks { seen, retention }),
        )
    }

    /// Follows `task` from after `seq`: its entries arrive on the receiver.
    pub fn follow(&self, task: Arc<str>, seq: u64) -> (mpsc::Receiver<Entry>, Following) {
        let (tx, rx) = mpsc::channel(FOLLOWER_BUFFER);
        let id = self.inner.next_id.fetch_add(1, Relaxed);
        if let Ok(mut followers) = self.inner.followers.lock() {
            followers
                .entry(task.clone())
                .or_default()
                .push(Follower { id, after: seq, tx });
        }
        self.inner.wake.notify_one();
        let following = Following {
            inner: self.inner.clone(),
            task,
            id,
        };
        (rx, following)
    }
}

/// What the tail reader keeps up beside reading.
#[derive(Debug, Clone, Copy)]
struct Marks {
    /// How long a follower's mark holds.
    seen: Duration,
    /// How long an orphan's journal is kept after it is ended.
    retention: Duration,
}

async fn read_loop(redis: dwp_core::redis::Target, inner: Arc<Inner>, marks: Marks) {
    let mut conn: Option<redis::aio::MultiplexedConnection> = None;
    let mut marked: HashMap<Arc<str>, Instant> = HashMap::new();
    loop {
        let watched: Vec<(Arc<str>, u64)> = match inner.followers.lock() {
            Ok(followers) => followers
                .iter()
                .filter_map(|(task, list)| {
                    Some((task.clone(), list.iter().map(|f| f.after).min()?))
                })
                .collect(),
            Err(_) => return,
        };
        if watched.is_empty() {
            marked.clear();
            inner.wake.notified().await;
            continue;
        }
        if let Err(e) = mark(&mut conn, &watched, &mut marked, marks).await {
            tracing::debug!(error = %e, "stream tail: followers not marked");
        }
        match read(&redis, &mut conn, &watched).await {
            Ok(reply) => deliver(&inner, reply),
            Err(e) => {
                tracing::warn!(error = %e, "stream tail: read failed; retrying");
                conn = None;
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
    }
}

/// Marks the followed tasks as followed (`seen`), each every
/// [`super::ALIVE_EVERY`], so their runs go on while someone follows
/// anywhere, and ends those whose gateway is gone ([`ORPHAN_SCRIPT`]).
async fn mark(
    conn: &mut Option<redis::aio::MultiplexedConnection>,
    watched: &[(Arc<str>, u64)],
    marked: &mut HashMap<Arc<str>, Instant>,
    marks: Marks,
) -> redis::RedisResult<()> {
    let now = Instant::now();
    marked.retain(|task, _| watched.iter().any(|(t, _)| t == task));
    let every = super::ALIVE_EVERY.min(marks.seen / 3);
    let due: Vec<&Arc<str>> = watched
        .iter()
        .map(|(task, _)| task)
        .filter(|task| marked.get(*task).is_none_or(|at| now - *at >= every))
        .collect();
    let Some(c) = conn.as_mut().filter(|_| !due.is_empty()) else {
        return Ok(());
    };
    let mut pipe = redis::pipe();
    for task in &due {
        pipe.cmd("SET")
            .arg(keys::seen(task))
            .arg(1)
            .arg("EX")
            .arg(marks.seen.as_secs().max(1))
            .ignore();
        pipe.cmd("EVAL")
            .arg(ORPHAN_SCRIPT)
            .arg(3)
            .arg(keys::stream(task))
            .arg(keys::meta(task))
            .arg(keys::ids(task))
            .arg(marks.retention.as_secs().max(1))
            .arg(super::run::GATEWAY_STOPPED_EVENT)
            .arg(super::run::DONE_EVENT)
            .ignore();
    }
    pipe.query_async::<()>(c).await?;
    for task in due {
        marked.insert(task.clone(), now);
    }
    Ok(())
}

async fn read(
    redis: &dwp_core::redis::Target,
    conn: &mut Option<redis::aio::MultiplexedConnection>,
    watched: &[(Arc<str>, u64)],
) -> redis::RedisResult<Option<StreamReadReply>> {
    if conn.is_none() {
        let settings = redis::AsyncConnectionConfig::new()
            .set_connection_timeout(Some(Duration::from_secs(1)))
            .set_response_timeout(Some(BLOCK + Duration::from_secs(2)));
        let client = redis.primary().await?;
        *conn = Some(
            client
                .get_multiplexed_async_connection_with_config(&settings)
                .await?,
        );
    }
    let Some(c) = conn.as_mut() else {
        return Ok(None);
    };
    let mut cmd = redis::cmd("XREAD");
    cmd.arg("COUNT")
        .arg(COUNT)
        .arg("BLOCK")
        .arg(BLOCK.as_millis() as u64)
        .arg("STREAMS");
    for (task, _) in watched {
        cmd.arg(keys::stream(task));
    }
    for (_, after) in watched {
        cmd.arg(format!("0-{after}"));
    }
    cmd.query_async(c).await
}

fn deliver(inner: &Inner, reply: Option<StreamReadReply>) {
    let Some(reply) = reply else { return };
    let Ok(mut followers) = inner.followers.lock() else {
        return;
    };
    for key in reply.keys {
        let Some(task) = key.key.strip_prefix("dwp:stream:") else {
            continue;
        };
        let Some(list) = followers.get_mut(task) else {
            continue;
        };
        for entry in &key.ids {
            let Some((seq, parsed)) = Entry::parse(&entry.id, &entry.map) else {
                continue;
            };
            let end = matches!(parsed, Entry::End(_));
            list.retain_mut(|f| {
                if f.after >= seq {
                    return true;
                }
                f.after = seq;
                // A follower that cannot take more is dropped (it resumes).
                f.tx.try_send(parsed.clone()).is_ok() && !end
            });
        }
    }
    followers.retain(|_, list| !list.is_empty());
}
