//! A resumable run: a task of the worker that reads the agent's stream to
//! its end whatever its first client does.
//!
//! Each block (an event, at its blank line) gets an `id:` when the agent
//! gave it none (`g{seq}`), then goes to the recorder, the journal and the
//! first client, in that order and never waiting: a client that does not
//! keep up, or goes away, is let go and the run goes on. With no client
//! left, it goes on for `GATEWAY_STREAM_DETACH_SECS` after the last
//! follower anywhere was seen, then closes the agent's stream. A stop
//! closes it at once and ends every follower with an `error` event
//! (`Cancelled`) and `[DONE]`.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use dwp_core::sse::{Block, Blocks};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::journal::Item;
use super::{ChannelBody, Streams};
use crate::BoxError;
use crate::limits::Held;
use crate::recorder::{Recorder, TaskMeta};
use crate::upstream::client::UpstreamBody;

/// Blocks the first client may have waiting before it is let go.
const LOCAL_BUFFER: usize = 256;

/// The cancellation a stop sends to the followers: an `error` event, then `[DONE]`.
pub const CANCELLED_EVENT: &str = "event: error\ndata: {\"type\":\"error\",\"error\":\"Stopped by the user\",\"errorType\":\"Cancelled\"}\n\n";

/// The stream's last block.
pub const DONE_EVENT: &str = "data: [DONE]\n\n";

/// What followers get when the gateway reading the run stops under it.
pub const GATEWAY_STOPPED_EVENT: &str = "event: error\ndata: {\"type\":\"error\",\"error\":\"The gateway reading this run stopped\",\"errorType\":\"GatewayStopped\"}\n\n";

/// What a run is started with.
pub struct Start {
    /// The task id (`X-DWP-Task-ID`).
    pub task: Arc<str>,
    /// The journal's meta fields (owner, route, content type).
    pub meta: Vec<(&'static str, String)>,
    /// The agent's response body.
    pub upstream: UpstreamBody,
    /// The recorder and the task it records under.
    pub tee: Option<(Recorder, Arc<TaskMeta>)>,
    /// The caps' slots the run keeps until it ends (route share, user, stream).
    pub held: Held,
    /// The route's idle timeout.
    pub idle: Duration,
    /// The largest block held before it is handed out cut.
    pub max_block: usize,
}

/// How a run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum End {
    Complete,
    UpstreamError,
    IdleTimeout,
    Detached,
    Cancelled,
    /// The gateway stopped with the run still going (its task dropped).
    GatewayStopped,
}

impl End {
    /// The journal's end entry.
    fn reason(self) -> &'static str {
        match self {
            Self::Complete => "complete",
            Self::UpstreamError => "upstream-error",
            Self::IdleTimeout => "idle-timeout",
            Self::Detached => "detached",
            Self::Cancelled => "cancelled",
            Self::GatewayStopped => "gateway-stopped",
        }
    }

    /// What the recorder notes when the stream did not finish by itself.
    fn broken(self) -> Option<&'static str> {
        match self {
            // A stop's `error` event says it, and so does a stopping gateway's.
            Self::Complete | Self::Cancelled | Self::GatewayStopped => None,
            Self::UpstreamError => Some("The agent broke the stream off"),
            Self::IdleTimeout => Some("The agent was silent past the idle timeout"),
            Self::Detached => Some("No client followed the stream for GATEWAY_STREAM_DETACH_SECS"),
        }
    }
}

/// Starts the run on this worker; the first client's body is returned.
pub fn start(streams: &Streams, start: Start) -> ChannelBody {
    let (tx, body) = ChannelBody::new(LOCAL_BUFFER);
    let mut meta = start.meta;
    meta.push(("gateway", streams.gateway_id.to_string()));
    streams.journal.push(Item::Start {
        task: start.task.clone(),
        meta,
    });
    let stop = streams.register(&start.task);
    let run = Run {
        streams: streams.clone(),
        task: start.task,
        tee: start.tee,
        seq: 0,
        lost: false,
        local: Some(tx),
        finished: false,
    };
    tokio::spawn(run.go(
        start.upstream,
        stop,
        start.held,
        start.idle,
        start.max_block,
    ));
    body
}

struct Run {
    streams: Streams,
    task: Arc<str>,
    tee: Option<(Recorder, Arc<TaskMeta>)>,
    seq: u64,
    lost: bool,
    local: Option<mpsc::Sender<Result<Bytes, BoxError>>>,
    /// The end is journaled and recorded.
    finished: bool,
}

impl Drop for Run {
    /// A run dropped before its end (its worker's runtime stopped with the
    /// gateway): its followers get an `error` event and `[DONE]`, the
    /// journal its end, the task its failure.
    fn drop(&mut self) {
        if !self.finished {
            self.finish(End::GatewayStopped);
        }
    }
}

impl Run {
    async fn go(
        mut self,
        mut upstream: UpstreamBody,
        stop: CancellationToken,
        held: Held,
        idle: Duration,
        max_block: usize,
    ) {
        let metrics = self.streams.metrics.clone();
        metrics.resumable_runs.inc();
        let (end, detached) = self.read(&mut upstream, &stop, idle, max_block).await;
        drop(upstream); // closes the agent's connection now
        self.finish(end);
        if detached {
            metrics.detached_runs.dec();
        }
        metrics.resumable_runs.dec();
        drop(held);
    }

    /// Reads the agent until its stream ends, a stop, its idle timeout, or
    /// no follower for the detach time; says how, and whether it was
    /// detached (counted in the gauge) at the end.
    async fn read(
        &mut self,
        upstream: &mut UpstreamBody,
        stop: &CancellationToken,
        idle: Duration,
        max_block: usize,
    ) -> (End, bool) {
        let detach = self.streams.settings.detach;
        let mut blocks = Blocks::new(max_block);
        let mut out = Vec::new();
        let mut last_read = Instant::now();
        let mut detached_since: Option<Instant> = None;
        let end = loop {
            let local = self.local.clone();
            let gone = async move {
                match local {
                    Some(tx) => tx.closed().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = stop.cancelled() => break End::Cancelled,
                () = self.streams.stopping() => break End::GatewayStopped,
                frame = upstream.frame() => match frame {
                    Some(Ok(frame)) => {
                        last_read = Instant::now();
                        if let Ok(data) = frame.into_data() {
                            blocks.feed(&data, &mut out);
                            out.drain(..).for_each(|block| self.emit(block));
                        }
                    }
                    None => {
                        if let Some(rest) = blocks.rest() {
                            self.emit(rest);
                        }
                        break End::Complete;
                    }
                    Some(Err(e)) => {
                        tracing::warn!(error = %e, task = %self.task, "agent broke a resumable stream off");
                        break End::UpstreamError;
                    }
                },
                () = gone => {}
                () = tokio::time::sleep_until(last_read + idle) => break End::IdleTimeout,
                () = sleep_until_some(detached_since.map(|at| at + detach)) => {
                    if !self.followed_elsewhere().await {
                        break End::Detached;
                    }
                    detached_since = Some(Instant::now());
                }
            }
            if self.local.as_ref().is_some_and(mpsc::Sender::is_closed) {
                self.local = None;
            }
            if self.local.is_none() && detached_since.is_none() {
                self.streams.metrics.detached_runs.inc();
                detached_since = Some(Instant::now());
            }
        };
        (end, detached_since.is_some())
    }

    /// The end: a stop's `error` and `[DONE]`, a broken stream broken off
    /// for the first client too, the journal's end entry, the recorder's.
    fn finish(&mut self, end: End) {
        self.finished = true;
        let last = match end {
            End::Cancelled => Some(CANCELLED_EVENT),
            End::GatewayStopped => Some(GATEWAY_STOPPED_EVENT),
            _ => None,
        };
        if let Some(last) = last {
            let mut out = Vec::new();
            for text in [last, DONE_EVENT] {
                Blocks::new(usize::MAX).feed(text.as_bytes(), &mut out);
            }
            out.into_iter().for_each(|block| self.emit(block));
        }
        if end == End::UpstreamError
            && let Some(tx) = &self.local
        {
            let _ = tx.try_send(Err("the agent broke the stream off".into()));
        }
        self.streams.journal.push(Item::End {
            task: self.task.clone(),
            seq: self.seq + 1,
            reason: end.reason(),
        });
        if let Some((recorder, meta)) = &self.tee {
            recorder.end(meta, end.broken());
        }
        self.streams.unregister(&self.task);
    }

    /// One block to the recorder, the journal and the first client.
    fn emit(&mut self, block: Block) {
        self.seq += 1;
        let bytes = if block.has_data && block.id.is_none() {
            let mut with_id = format!("id: g{}\n", self.seq).into_bytes();
            with_id.extend_from_slice(&block.bytes);
            Bytes::from(with_id)
        } else {
            Bytes::from(block.bytes)
        };
        if let Some((recorder, meta)) = &self.tee {
            recorder.chunk(meta, &bytes);
        }
        if !self.lost {
            self.lost = !self.streams.journal.push(Item::Block {
                task: self.task.clone(),
                seq: self.seq,
                bytes: bytes.clone(),
                id: block.id,
            });
        }
        if let Some(tx) = &self.local
            && tx.try_send(Ok(bytes)).is_err()
        {
            // Gone, or not keeping up: it resumes from the journal.
            self.local = None;
        }
    }

    /// Whether a follower on any gateway was seen within the detach time.
    async fn followed_elsewhere(&self) -> bool {
        let Ok(mut conn) = self.streams.conn().await else {
            return false;
        };
        let seen: redis::RedisResult<bool> = redis::cmd("EXISTS")
            .arg(super::keys::seen(&self.task))
            .query_async(&mut conn)
            .await;
        seen.unwrap_or(false)
    }
}

async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}
