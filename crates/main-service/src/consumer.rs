//! A Redis Stream consumer-group reader that moves entries into PostgreSQL,
//! at least once, with an [`Apply`] of its user's (the two users and their
//! thread are wired in [`crate::consumers`]).
//!
//! - Entries are read in batches (`XREADGROUP ... >`), applied in one
//!   database transaction, and acknowledged (`XACK`) only after the commit.
//! - At start, and after any failure, the consumer first re-reads its own
//!   pending entries (`XREADGROUP ... 0`), so a restarted replica with the
//!   same `CONSUMER_NAME` finishes what it had read, in order.
//! - Entries left pending by another, crashed consumer for longer than
//!   `CONSUMER_CLAIM_IDLE_MS` are claimed (`XAUTOCLAIM`) and applied here;
//!   a consumer that then holds nothing and has not read for that long is
//!   removed from the group (`XGROUP DELCONSUMER`), so the names of pods
//!   long gone do not pile up.
//! - When PostgreSQL or Redis is down the consumer waits and retries; nothing
//!   is acknowledged, so nothing is lost. An entry that fails on its own while
//!   the database is up (bad data) is copied to `{stream}:dead` with the
//!   reason, then acknowledged, so one bad entry cannot stall the stream.
//!
//! `apply` must be idempotent: applying an entry twice changes nothing.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use redis::Value;
use redis::aio::MultiplexedConnection;
use redis::streams::{StreamAutoClaimReply, StreamReadReply};
use sea_orm::{ConnAcquireErr, DbErr};
use tokio_util::sync::CancellationToken;

use crate::config::ConsumerConfig;
use crate::db::Db;
use crate::error::is_outage;
use crate::metrics::Metrics;

/// How long one `XREADGROUP` blocks waiting for new entries.
const BLOCK: Duration = Duration::from_millis(1000);

/// Pause after a partial batch (entries recorded up to this much later).
const COALESCE: Duration = Duration::from_millis(20);

/// Pause after a failure before trying again.
const BACKOFF: Duration = Duration::from_millis(500);

/// One stream entry: its id and its fields as text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The stream id (`1700000000000-0`).
    pub id: String,
    /// The fields.
    pub fields: HashMap<String, String>,
}

impl Entry {
    /// A field, or `""` when absent.
    pub fn field(&self, name: &str) -> &str {
        self.fields.get(name).map_or("", String::as_str)
    }
}

/// An entry `apply` refused as bad data, with the reason.
pub type Rejected = (String, String);

/// What a stream's entries are applied with.
pub trait Apply: Send + Sync + 'static {
    /// Applies `entries` (in stream order) in one transaction; returns the
    /// entries refused as bad data (they are dead-lettered and acknowledged).
    fn apply(
        &self,
        db: &Db,
        entries: &[Entry],
    ) -> impl Future<Output = Result<Vec<Rejected>, DbErr>> + Send;
}

/// Reads `stream` as `config.name` in `config.group` and applies what it
/// reads with `apply`, until `stop` is cancelled.
pub async fn run(
    redis: &dwp_core::redis::Target,
    db: &Db,
    metrics: &Metrics,
    config: &ConsumerConfig,
    stream: &'static str,
    apply: impl Apply,
    stop: CancellationToken,
) {
    let mut reader = Reader {
        redis,
        conn: None,
        config,
        stream,
    };
    let mut own_pending = true;
    let mut last_claim = Instant::now();
    while !stop.is_cancelled() {
        // Join (or create) the group first, so entries written from now on
        // are kept for it even while the database is still being migrated.
        if let Err(e) = reader.conn().await {
            tracing::warn!(stream, error = %e, "consumer: Redis unavailable; retrying");
            pause(&stop).await;
            continue;
        }
        if !db.is_ready() {
            pause(&stop).await;
            continue;
        }
        let read = if own_pending {
            reader.read("0", None).await
        } else if last_claim.elapsed() >= config.claim_idle / 2 {
            last_claim = Instant::now();
            reader.claim().await
        } else {
            tokio::select! {
                read = reader.read(">", Some(BLOCK)) => read,
                () = stop.cancelled() => break,
            }
        };
        let entries = match read {
            Ok(entries) => entries,
            Err(e) => {
                tracing::warn!(stream, error = %e, "consumer: Redis read failed; retrying");
                reader.conn = None;
                own_pending = true;
                pause(&stop).await;
                continue;
            }
        };
        if entries.is_empty() {
            own_pending = false;
            continue;
        }
        if !batch(&mut reader, db, metrics, &apply, &entries).await {
            own_pending = true;
            pause(&stop).await;
        } else if entries.len() < config.batch {
            // A partial batch: let entries gather for a moment, so a busy
            // stream is committed in fewer, larger transactions (less work
            // for PostgreSQL, beside the requests).
            tokio::select! {
                () = tokio::time::sleep(COALESCE) => {}
                () = stop.cancelled() => {}
            }
        }
    }
}

/// Applies and acknowledges one batch; false when it must be read again
/// (the database or Redis failed).
async fn batch(
    reader: &mut Reader<'_>,
    db: &Db,
    metrics: &Metrics,
    apply: &impl Apply,
    entries: &[Entry],
) -> bool {
    let stream = reader.stream;
    let started = Instant::now();
    let rejected = match settle(db, apply, entries).await {
        Ok(rejected) => rejected,
        Err(e) => {
            tracing::warn!(stream, error = %e, "consumer: database unavailable; retrying");
            return false;
        }
    };
    let applied = started.elapsed();
    let finished = reader.finish(entries, &rejected).await;
    tracing::debug!(
        stream,
        entries = entries.len(),
        apply_us = applied.as_micros() as u64,
        ack_us = (started.elapsed() - applied).as_micros() as u64,
        "consumer: batch"
    );
    if let Err(e) = finished {
        tracing::warn!(stream, error = %e, "consumer: XACK failed; will re-read");
        reader.conn = None;
        return false;
    }
    metrics.consumed(stream, entries.len() - rejected.len(), rejected.len());
    true
}

/// Applies a batch; when it fails while the database is up, applies its
/// entries one by one and rejects those that still fail.
async fn settle(db: &Db, apply: &impl Apply, entries: &[Entry]) -> Result<Vec<Rejected>, DbErr> {
    match bounded(db, apply, entries).await {
        Ok(rejected) => Ok(rejected),
        Err(e) if is_outage(&e) || db.ping().await.is_err() => Err(e),
        Err(e) => {
            tracing::warn!(error = %e, "consumer: batch refused; applying its entries one by one");
            let mut rejected = Vec::new();
            for entry in entries {
                match bounded(db, apply, std::slice::from_ref(entry)).await {
                    Ok(mut r) => rejected.append(&mut r),
                    Err(e) if is_outage(&e) => return Err(e),
                    Err(e) => rejected.push((entry.id.clone(), e.to_string())),
                }
            }
            Ok(rejected)
        }
    }
}

/// One `apply`, given up (as an outage) when the database hangs.
async fn bounded(db: &Db, apply: &impl Apply, entries: &[Entry]) -> Result<Vec<Rejected>, DbErr> {
    tokio::time::timeout(db.timeout() * 10, apply.apply(db, entries))
        .await
        .unwrap_or(Err(DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)))
}

/// Waits a back-off, or until `stop`.
pub async fn pause(stop: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(BACKOFF) => {}
        () = stop.cancelled() => {}
    }
}

struct Reader<'a> {
    /// Asked for the primary at every (re)connection (Sentinel).
    redis: &'a dwp_core::redis::Target,
    /// A connection of its own: `XREADGROUP BLOCK` would hold up other
    /// commands on a shared multiplexed connection.
    conn: Option<MultiplexedConnection>,
    config: &'a ConsumerConfig,
    stream: &'static str,
}

impl Reader<'_> {
    async fn conn(&mut self) -> redis::RedisResult<MultiplexedConnection> {
        if let Some(conn) = &self.conn {
            return Ok(conn.clone());
        }
        let mut conn = crate::store::blocking_conn(self.redis, BLOCK).await?;
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(self.stream)
            .arg(&self.config.group)
            .arg(&self.config.group_start)
            .arg("MKSTREAM")
            .query_async(&mut conn)
            .await;
        match created {
            Err(e) if e.code() != Some("BUSYGROUP") => return Err(e),
            _ => {}
        }
        self.conn = Some(conn.clone());
        Ok(conn)
    }

    /// `XREADGROUP` from `from` (`0`: own pending; `>`: new entries).
    async fn read(
        &mut self,
        from: &str,
        block: Option<Duration>,
    ) -> redis::RedisResult<Vec<Entry>> {
        let mut conn = self.conn().await?;
        let mut cmd = redis::cmd("XREADGROUP");
        cmd.arg("GROUP")
            .arg(&self.config.group)
            .arg(&self.config.name)
            .arg("COUNT")
            .arg(self.config.batch);
        if let Some(block) = block {
            cmd.arg("BLOCK").arg(block.as_millis() as u64);
        }
        cmd.arg("STREAMS").arg(self.stream).arg(from);
        let reply: Option<StreamReadReply> = cmd.query_async(&mut conn).await?;
        Ok(reply
            .into_iter()
            .flat_map(|r| r.keys)
            .flat_map(|k| k.ids)
            .map(|id| entry(id.id, id.map))
            .collect())
    }

    /// `XAUTOCLAIM`: entries idle at other consumers past the claim time.
    async fn claim(&mut self) -> redis::RedisResult<Vec<Entry>> {
        let mut conn = self.conn().await?;
        let reply: StreamAutoClaimReply = redis::cmd("XAUTOCLAIM")
            .arg(self.stream)
            .arg(&self.config.group)
            .arg(&self.config.name)
            .arg(self.config.claim_idle.as_millis() as u64)
            .arg("0-0")
            .arg("COUNT")
            .arg(self.config.batch)
            .query_async(&mut conn)
            .await?;
        if !reply.claimed.is_empty() {
            tracing::info!(
                stream = self.stream,
                claimed = reply.claimed.len(),
                "consumer: claimed entries left pending by another consumer"
            );
        }
        self.forget_dead(&mut conn).await?;
        Ok(reply
            .claimed
            .into_iter()
            .map(|id| entry(id.id, id.map))
            .collect())
    }

    /// Removes from the group the consumers that hold nothing and have not
    /// read for longer than the claim time: the replicas that are gone (a
    /// pod's name changes with every rollout). A live consumer reads at
    /// least every [`BLOCK`], so it is never idle that long; one removed
    /// anyway is recreated by its next read.
    async fn forget_dead(&mut self, conn: &mut MultiplexedConnection) -> redis::RedisResult<()> {
        let reply: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(self.stream)
            .arg(&self.config.group)
            .query_async(conn)
            .await?;
        let idle = self.config.claim_idle.as_millis();
        for dead in reply
            .consumers
            .iter()
            .filter(|c| c.name != self.config.name && c.pending == 0 && c.idle as u128 >= idle)
        {
            let _: i64 = redis::cmd("XGROUP")
                .arg("DELCONSUMER")
                .arg(self.stream)
                .arg(&self.config.group)
                .arg(&dead.name)
                .query_async(conn)
                .await?;
            tracing::info!(
                stream = self.stream,
                consumer = %dead.name,
                idle_ms = dead.idle,
                "consumer: removed a consumer that is gone"
            );
        }
        Ok(())
    }

    /// Dead-letters the rejected entries, then acknowledges the batch.
    async fn finish(&mut self, entries: &[Entry], rejected: &[Rejected]) -> redis::RedisResult<()> {
        let mut conn = self.conn().await?;
        let mut pipe = redis::pipe();
        pipe.atomic();
        for (id, why) in rejected {
            tracing::warn!(
                stream = self.stream,
                id,
                why,
                "consumer: entry dead-lettered"
            );
            let mut cmd = redis::cmd("XADD");
            cmd.arg(format!("{}:dead", self.stream))
                .arg("MAXLEN")
                .arg("~")
                .arg(self.config.dead_letters.max_len)
                .arg("*")
                .arg("sourceId")
                .arg(id)
                .arg("reason")
                .arg(why);
            if let Some(entry) = entries.iter().find(|e| &e.id == id) {
                for (k, v) in &entry.fields {
                    cmd.arg(k).arg(v);
                }
            }
            pipe.add_command(cmd).ignore();
        }
        if !rejected.is_empty() {
            pipe.cmd("XTRIM")
                .arg(format!("{}:dead", self.stream))
                .arg("MINID")
                .arg("~")
                .arg(self.config.dead_letters.min_id())
                .ignore();
        }
        pipe.cmd("XACK")
            .arg(self.stream)
            .arg(&self.config.group)
            .arg(entries.iter().map(|e| e.id.as_str()).collect::<Vec<_>>())
            .ignore();
        pipe.query_async(&mut conn).await
    }
}

fn entry(id: String, map: HashMap<String, Value>) -> Entry {
    let fields = map
        .into_iter()
        .filter_map(|(k, v)| match v {
            Value::BulkString(bytes) => Some((k, String::from_utf8_lossy(&bytes).into_owned())),
            Value::SimpleString(s) => Some((k, s)),
            Value::Int(n) => Some((k, n.to_string())),
            _ => None,
        })
        .collect();
    Entry { id, fields }
}
