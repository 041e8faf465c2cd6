//! The response body on its way to the client.
//!
//! Frames are passed on the moment they arrive, unchanged. For streams the
//! relay also:
//! - ends the response cleanly after `GATEWAY_STREAM_IDLE_TIMEOUT_SECS` of
//!   upstream silence;
//! - for `text/event-stream`, injects `: keep-alive` every
//!   `GATEWAY_SSE_HEARTBEAT_SECS` of silence, only between events (an SSE
//!   boundary tracker follows the relayed bytes to know where events end);
//! - counts itself in the open-streams gauge.
//!
//! The upstream body returns its connection to the pool itself once it has
//! read the last byte. Dropping the relay (hyper does so when the client goes
//! away) drops the upstream body, which closes the upstream connection, and
//! the access-log guard records the disconnect.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use dwp_core::sse::{Boundary, KEEP_ALIVE};
use http_body::{Body, Frame, SizeHint};
use tokio::time::{Instant, Sleep, sleep};

use crate::BoxError;
use crate::access::{AccessLog, Outcome};
use crate::recorder::{Recorder, TaskMeta};
use crate::upstream::client::UpstreamBody;

/// How a stream response is relayed.
#[derive(Debug, Clone, Copy)]
pub struct StreamRules {
    /// End the stream after this much upstream silence.
    pub idle_timeout: Duration,
    /// Inject heartbeats at this interval (SSE responses only).
    pub heartbeat: Option<Duration>,
}

/// A deadline that moves with activity without touching the timer wheel on
/// every chunk: activity only records the time; when the sleep fires early it
/// is re-armed from the last activity.
struct Timer {
    every: Duration,
    last: Instant,
    sleep: Pin<Box<Sleep>>,
}

impl Timer {
    fn new(every: Duration) -> Self {
        Self {
            every,
            last: Instant::now(),
            sleep: Box::pin(sleep(every)),
        }
    }

    fn touch(&mut self, now: Instant) {
        self.last = now;
    }

    /// True when `every` has passed since the last activity (or the last
    /// firing); the timer is then restarted. Registers the waker otherwise.
    fn fired(&mut self, cx: &mut Context<'_>) -> bool {
        loop {
            if self.sleep.as_mut().poll(cx).is_pending() {
                return false;
            }
            let due = self.last + self.every;
            let now = Instant::now();
            if now >= due {
                self.last = now;
                self.sleep.as_mut().reset(now + self.every);
                let _ = self.sleep.as_mut().poll(cx);
                return true;
            }
            self.sleep.as_mut().reset(due);
        }
    }
}

/// A relayed response body: the upstream's, or for resumable streams the
/// blocks a run or a follower hands on.
pub struct Relay<B = UpstreamBody> {
    upstream: B,
    idle: Option<Timer>,
    heartbeat: Option<(Timer, Boundary)>,
    /// The access-log guard; its metrics are the relay's too.
    log: AccessLog,
    stream: bool,
    done: bool,
    /// The recorder and the task this stream is recorded under.
    tee: Option<(Recorder, Arc<TaskMeta>)>,
}

impl<B: Body> Relay<B> {
    /// Relays `upstream`; `rules` is `Some` for stream requests, `sse` says
    /// whether the response is `text/event-stream`.
    pub fn new(
        upstream: B,
        rules: Option<StreamRules>,
        sse: bool,
        log: AccessLog,
        tee: Option<(Recorder, Arc<TaskMeta>)>,
    ) -> Self {
        let stream = rules.is_some();
        if stream {
            log.metrics().open_streams.inc();
        }
        let mut relay = Self {
            upstream,
            idle: rules.map(|r| Timer::new(r.idle_timeout)),
            heartbeat: rules
                .and_then(|r| r.heartbeat)
                .filter(|_| sse)
                .map(|every| (Timer::new(every), Boundary::new())),
            log,
            stream,
            done: false,
            tee,
        };
        if relay.upstream.is_end_stream() {
            relay.end(Outcome::Complete); // an empty body is never polled
        }
        relay
    }

    fn end(&mut self, outcome: Outcome) {
        self.done = true;
        self.log.outcome = outcome;
    }
}

impl<B> Drop for Relay<B> {
    fn drop(&mut self) {
        if self.stream {
            self.log.metrics().open_streams.dec();
        }
        if let Some((recorder, task)) = &self.tee {
            let broken = match self.log.outcome {
                Outcome::Complete => None,
                Outcome::Running => Some("The client went away before the agent finished"),
                Outcome::UpstreamError => Some("The agent broke the stream off"),
                Outcome::IdleTimeout => Some("The agent was silent past the idle timeout"),
            };
            recorder.end(task, broken);
        }
    }
}

impl<B> Body for Relay<B>
where
    B: Body<Data = Bytes> + Unpin,
    B::Error: Into<BoxError> + std::fmt::Display,
{
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if this.done {
            return Poll::Ready(None);
        }
        match Pin::new(&mut this.upstream).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.log.bytes += data.len() as u64;
                    if let Some((recorder, task)) = &this.tee {
                        recorder.chunk(task, data);
                    }
                    if this.idle.is_some() {
                        let now = Instant::now();
                        if let Some(idle) = &mut this.idle {
                            idle.touch(now);
                        }
                        if let Some((timer, boundary)) = &mut this.heartbeat {
                            boundary.feed(data);
                            timer.touch(now);
                        }
                    }
                }
                if this.upstream.is_end_stream() {
                    // hyper stops polling once a known length is sent.
                    this.end(Outcome::Complete);
                }
                return Poll::Ready(Some(Ok(frame)));
            }
            Poll::Ready(None) => {
                this.end(Outcome::Complete);
                return Poll::Ready(None);
            }
            Poll::Ready(Some(Err(e))) => {
                tracing::warn!(error = %e, "upstream broke the response off");
                this.end(Outcome::UpstreamError);
                return Poll::Ready(Some(Err(e.into())));
            }
            Poll::Pending => {}
        }
        if this.idle.as_mut().is_some_and(|idle| idle.fired(cx)) {
            tracing::info!("stream idle timeout: ending the stream");
            this.end(Outcome::IdleTimeout);
            return Poll::Ready(None);
        }
        if let Some((timer, boundary)) = &mut this.heartbeat
            && timer.fired(cx)
            && boundary.is_idle()
        {
            this.log.metrics().heartbeats.inc();
            this.log.bytes += KEEP_ALIVE.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(Bytes::from_static(KEEP_ALIVE)))));
        }
        Poll::Pending
    }

    fn is_end_stream(&self) -> bool {
        self.done || (self.idle.is_none() && self.upstream.is_end_stream())
    }

    fn size_hint(&self) -> SizeHint {
        if self.stream {
            SizeHint::default()
        } else {
            self.upstream.size_hint()
        }
    }
}
