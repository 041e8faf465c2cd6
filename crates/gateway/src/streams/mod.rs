//! Resumable agent streams: a run that outlives its client, a journal any
//! gateway replica can replay, followers on any device, a stop from
//! anywhere.
//!
//! - A recorded stream request on a route whose policy allows it, with
//!   `X-DWP-Resumable: true` (or on a route that is always resumable),
//!   becomes a [`run`]: a task of the worker that reads the agent whatever
//!   its client does, splits the stream into blocks at event boundaries,
//!   gives an event without an `id:` one of its own (`g{seq}`), and hands
//!   each block to its first client (never waiting for Redis) and to the
//!   [`journal`] (lossless while Redis is up). When its client goes away
//!   it goes on for `GATEWAY_STREAM_DETACH_SECS` past the last follower.
//! - A resume ([`follow`]): `GET /api/streams/{taskId}` or the stream
//!   request again with `X-DWP-Task-ID`, on any replica, by the task's
//!   owner: the blocks after `Last-Event-ID` from the journal, then the
//!   live ones from it too, until the end entry. The agent is not called.
//! - `POST /api/streams/{taskId}/stop`: published to every replica
//!   ([`STOP_CHANNEL`]); the one reading the run ends it with an `error`
//!   event (`Cancelled`) and `[DONE]`, which every follower gets.
//!
//! Redis keys per task (see [`keys`]): the journal stream, its meta hash
//! (owner, route, state), the agent's ids, and the followers' mark.

pub mod follow;
pub mod journal;
pub mod run;
pub mod tail;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures_util::StreamExt;
use http_body::{Body, Frame};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::BoxError;
use crate::metrics::Metrics;

/// A body fed by a run or a follower, block by block; an error breaks the
/// response off (the client then resumes).
pub struct ChannelBody {
    rx: mpsc::Receiver<Result<Bytes, BoxError>>,
}

impl ChannelBody {
    /// The body and the sender that feeds it, `buffer` blocks deep.
    pub fn new(buffer: usize) -> (mpsc::Sender<Result<Bytes, BoxError>>, Self) {
        let (tx, rx) = mpsc::channel(buffer);
        (tx, Self { rx })
    }
}

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        self.rx
            .poll_recv(cx)
            .map(|item| item.map(|r| r.map(Frame::data)))
    }
}

/// The channel stops are published on; every gateway listens.
pub const STOP_CHANNEL: &str = "dwp:streams:stop";

/// The Redis keys of one task's journal.
pub mod keys {
    /// The blocks: entries `0-{seq}` with `b` (bytes) or `e` (the end).
    pub fn stream(task: &str) -> String {
        format!("dwp:stream:{task}")
    }
    /// `owner`, `route`, `type` (content type), `state` (running, ended, lost).
    pub fn meta(task: &str) -> String {
        format!("dwp:stream:{task}:meta")
    }
    /// The agent's event ids → their seq.
    pub fn ids(task: &str) -> String {
        format!("dwp:stream:{task}:ids")
    }
    /// Set by followers while they follow, so the run is not ended.
    pub fn seen(task: &str) -> String {
        format!("dwp:stream:{task}:seen")
    }
    /// Kept by a gateway while it runs (its runs' `gateway` in the meta).
    pub fn alive(gateway: &str) -> String {
        format!("dwp:gateway:{gateway}:alive")
    }
}

/// How often a gateway says it is alive, and how long that holds: a run
/// whose gateway has not said so for [`ALIVE_FOR`] is ended by its
/// followers' gateways (the one reading it crashed).
pub const ALIVE_EVERY: Duration = Duration::from_secs(2);

/// See [`ALIVE_EVERY`].
pub const ALIVE_FOR: Duration = Duration::from_secs(10);

/// The settings of resumable streams.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// `GATEWAY_STREAM_DETACH_SECS` (300): how long a run goes on with no follower.
    pub detach: Duration,
    /// `GATEWAY_STREAM_RETENTION_SECS` (3600): how long a journal is kept after its run.
    pub retention: Duration,
    /// `GATEWAY_STREAM_JOURNAL_MAX_BYTES` (64 MiB): unwritten blocks held while Redis is away.
    pub journal_max_bytes: usize,
}

/// What the proxy and the runs share: the journal, the runs of this
/// gateway (for stops), the tail reader, Redis for resumes.
#[derive(Clone)]
pub struct Streams {
    /// The journal writer's handle.
    pub journal: journal::Journal,
    /// The live tail every follower of this gateway reads.
    pub tail: tail::Tail,
    /// The runs this gateway reads, by task id.
    runs: Arc<Mutex<HashMap<Arc<str>, CancellationToken>>>,
    /// Redis, for resumes and stops.
    target: dwp_core::redis::Target,
    /// Their connection (multiplexed), opened when first needed.
    conn: Arc<tokio::sync::OnceCell<redis::aio::ConnectionManager>>,
    /// The settings.
    pub settings: Settings,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// Cancelled when the gateway stops: every run still going ends.
    stopping: CancellationToken,
    /// This gateway process, in its runs' meta (`gateway`).
    pub gateway_id: Arc<str>,
}

impl std::fmt::Debug for Streams {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Streams")
    }
}

impl Streams {
    /// Starts the journal writer, the tail reader and the stop listener on
    /// a thread of their own; the receiver completes once the journal is
    /// written and every handle is gone.
    pub fn start(
        redis: &dwp_core::redis::Target,
        settings: Settings,
        metrics: Arc<Metrics>,
    ) -> std::io::Result<(Self, tokio::sync::oneshot::Receiver<()>)> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let (journal, receiver) =
            journal::Journal::new(settings.journal_max_bytes, metrics.clone());
        let (tail, tail_loop) = tail::Tail::new(redis.clone(), settings.detach, settings.retention);
        let gateway_id: Arc<str> = Arc::from(uuid::Uuid::new_v4().simple().to_string());
        let runs: Arc<Mutex<HashMap<Arc<str>, CancellationToken>>> = Arc::default();
        let (done, finished) = tokio::sync::oneshot::channel();
        let retention = journal::Retention {
            running: settings.retention.max(settings.detach) + settings.detach,
            ended: settings.retention,
        };
        let (target, listen_runs, alive_id) = (redis.clone(), runs.clone(), gateway_id.clone());
        std::thread::Builder::new()
            .name("streams".into())
            .spawn(move || {
                runtime.block_on(async move {
                    let listener = tokio::spawn(listen_for_stops(target.clone(), listen_runs));
                    let tail = tokio::spawn(tail_loop);
                    let alive = tokio::spawn(keep_alive(target.clone(), alive_id));
                    journal::write_loop(target, receiver, retention).await;
                    listener.abort();
                    tail.abort();
                    alive.abort();
                });
                let _ = done.send(());
            })?;
        let streams = Self {
            journal,
            tail,
            runs,
            target: redis.clone(),
            conn: Arc::default(),
            settings,
            metrics,
            stopping: CancellationToken::new(),
            gateway_id,
        };
        Ok((streams, finished))
    }

    /// Registers a run of this gateway; its token is cancelled by a stop.
    pub fn register(&self, task: &Arc<str>) -> CancellationToken {
        let token = CancellationToken::new();
        if let Ok(mut runs) = self.runs.lock() {
            runs.insert(task.clone(), token.clone());
        }
        token
    }

    /// The connection for resumes, stops and the runs' checks; opened on
    /// first use, by the worker that first needs it.
    pub async fn conn(&self) -> redis::RedisResult<redis::aio::ConnectionManager> {
        self.conn
            .get_or_try_init(|| async {
                let config = redis::aio::ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(Duration::from_secs(1)))
                    .set_response_timeout(Some(Duration::from_secs(2)))
                    .set_number_of_retries(1);
                let open = async {
                    let client = self.target.primary().await?;
                    client.get_connection_manager_with_config(config).await
                };
                tokio::time::timeout(Duration::from_secs(2), open)
                    .await
                    .map_err(|_| {
                        redis::RedisError::from(std::io::Error::from(std::io::ErrorKind::TimedOut))
                    })?
            })
            .await
            .cloned()
    }

    /// The gateway stops: every run still going ends now (its followers
    /// get an `error` event and `[DONE]`, the journal its end), so that
    /// the journal can be written out before the process exits.
    pub fn stop_all(&self) {
        self.stopping.cancel();
    }

    /// Completes when [`stop_all`](Self::stop_all) was called.
    pub async fn stopping(&self) {
        self.stopping.cancelled().await;
    }

    /// The run ended.
    pub fn unregister(&self, task: &str) {
        if let Ok(mut runs) = self.runs.lock() {
            runs.remove(task);
        }
    }
}

/// Says every [`ALIVE_EVERY`] that this gateway runs (held [`ALIVE_FOR`]).
async fn keep_alive(redis: dwp_core::redis::Target, gateway: Arc<str>) {
    let key = keys::alive(&gateway);
    let mut conn = None;
    loop {
        if conn.is_none() {
            conn = redis.writer(Duration::from_secs(2)).await.ok();
        }
        if let Some(c) = conn.as_mut() {
            let said: redis::RedisResult<()> = redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("EX")
                .arg(ALIVE_FOR.as_secs())
                .query_async(c)
                .await;
            if said.is_err() {
                conn = None;
            }
        }
        tokio::time::sleep(ALIVE_EVERY).await;
    }
}

/// Listens on [`STOP_CHANNEL`] and cancels the named run when it is here;
/// reconnects after a failure.
async fn listen_for_stops(
    redis: dwp_core::redis::Target,
    runs: Arc<Mutex<HashMap<Arc<str>, CancellationToken>>>,
) {
    loop {
        let subscribed = async {
            let client = redis.primary().await?;
            let mut pubsub = client.get_async_pubsub().await?;
            pubsub.subscribe(STOP_CHANNEL).await?;
            Ok::<_, redis::RedisError>(pubsub)
        };
        match subscribed.await {
            Ok(pubsub) => {
                let mut messages = pubsub.into_on_message();
                while let Some(message) = messages.next().await {
                    let Ok(task) = message.get_payload::<String>() else {
                        continue;
                    };
                    let token = runs.lock().ok().and_then(|r| r.get(task.as_str()).cloned());
                    if let Some(token) = token {
                        tracing::info!(task, "stream stopped by its owner");
                        token.cancel();
                    }
                }
                tracing::warn!("stream stop listener: connection lost, listening again");
            }
            Err(e) => tracing::warn!(error = %e, "stream stop listener: not subscribed"),
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}
