//! Coarse deadlines for the two timeouts every request passes through:
//! reading a request head (`GATEWAY_HEADER_READ_TIMEOUT_SECS`) and waiting
//! for the upstream's response head (`GATEWAY_RESPONSE_TIMEOUT_SECS`).
//!
//! Each worker sweeps its connections every [`TICK`]. Arming or disarming a
//! deadline is one atomic store against the worker's coarse clock, where a
//! timer of tokio's wheel (or hyper's, a boxed one of the same wheel) costs
//! a wheel entry inserted and removed and clock reads on every request. The
//! timeouts are seconds long; a deadline that fires up to two ticks late
//! changes nothing a client can tell, and one never fires early.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};
use std::task::Poll;
use std::time::{Duration, Instant};

use futures_util::task::AtomicWaker;
use tokio::task::AbortHandle;

/// How often a worker sweeps its connections' deadlines.
pub const TICK: Duration = Duration::from_millis(100);

/// A deadline that is not armed.
const OFF: u64 = u64::MAX;

/// A worker's coarse clock: milliseconds since the worker started, advanced
/// on every sweep.
pub struct Clock {
    epoch: Instant,
    now_ms: AtomicU64,
}

impl Clock {
    /// A clock at zero.
    pub fn new() -> Arc<Self> {
        Arc::new(Self {
            epoch: Instant::now(),
            now_ms: AtomicU64::new(0),
        })
    }

    /// The time of the last sweep.
    fn now(&self) -> u64 {
        self.now_ms.load(Relaxed)
    }

    /// Reads the real clock once, for a sweep.
    fn advance(&self) -> u64 {
        let now = millis(self.epoch.elapsed());
        self.now_ms.store(now, Relaxed);
        now
    }
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(OFF - 1)
}

/// The deadlines of one client connection. HTTP/1.1 carries one request at
/// a time, so one of each kind is enough.
pub struct Deadlines {
    clock: Arc<Clock>,
    head_timeout_ms: u64,
    /// When the request head being read must be complete.
    head: AtomicU64,
    /// When the upstream's response head must have arrived.
    response: AtomicU64,
    /// Set by the sweep when `response` passed.
    expired: AtomicBool,
    /// The request waiting for its response head.
    waker: AtomicWaker,
}

impl Deadlines {
    /// The deadlines of a new connection, armed for its first request head.
    pub fn new(clock: Arc<Clock>, head_timeout: Duration) -> Arc<Self> {
        let deadlines = Arc::new(Self {
            clock,
            head_timeout_ms: millis(head_timeout),
            head: AtomicU64::new(OFF),
            response: AtomicU64::new(OFF),
            expired: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        deadlines.await_head();
        deadlines
    }

    /// The connection waits for a request head: arms the head deadline.
    pub fn await_head(&self) {
        let at = self.clock.now().saturating_add(self.head_timeout_ms);
        self.head.store(at, Relaxed);
    }

    /// A request head was read: disarms the head deadline until the
    /// response has been sent.
    pub fn head_read(&self) {
        self.head.store(OFF, Relaxed);
    }

    /// Runs `exchange` until it completes or `timeout` passes; `None` when
    /// it timed out. The caller pins `exchange`, so that the future is
    /// stored once, in the caller's state.
    pub async fn response_within<F: Future>(
        &self,
        timeout: Duration,
        mut exchange: Pin<&mut F>,
    ) -> Option<F::Output> {
        self.expired.store(false, Relaxed);
        let at = self.clock.now().saturating_add(millis(timeout));
        self.response.store(at, Relaxed);
        let out = std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = exchange.as_mut().poll(cx) {
                return Poll::Ready(Some(out));
            }
            self.waker.register(cx.waker());
            if self.expired.load(Relaxed) {
                Poll::Ready(None)
            } else {
                Poll::Pending
            }
        })
        .await;
        self.response.store(OFF, Relaxed);
        out
    }

    /// One sweep at `now`: wakes a request whose response deadline passed;
    /// true when the head deadline passed (the connection is to be closed).
    /// A deadline passed when a whole tick has gone by since it: the clock
    /// it was armed against may have been a tick old.
    fn sweep(&self, now: u64) -> bool {
        let slack = millis(TICK);
        let response = self.response.load(Relaxed);
        if response != OFF && response.saturating_add(slack) <= now {
            self.response.store(OFF, Relaxed);
            self.expired.store(true, Relaxed);
            self.waker.wake();
        }
        let head = self.head.load(Relaxed);
        head != OFF && head.saturating_add(slack) <= now
    }
}

/// The connections of one worker, with the handle that closes each.
#[derive(Default)]
pub struct Sweeper {
    connections: Vec<(Arc<Deadlines>, AbortHandle)>,
}

impl Sweeper {
    /// Watches a connection; `close` ends its task.
    pub fn watch(&mut self, deadlines: Arc<Deadlines>, close: AbortHandle) {
        self.connections.push((deadlines, close));
    }

    /// Advances `clock`, closes the connections whose head deadline passed,
    /// wakes the requests whose response deadline passed, and forgets the
    /// connections that ended.
    pub fn sweep(&mut self, clock: &Clock) {
        let now = clock.advance();
        self.connections.retain(|(deadlines, close)| {
            // Only the sweeper holds it: the connection and its requests are gone.
            if Arc::strong_count(deadlines) == 1 {
                return false;
            }
            if deadlines.sweep(now) {
                tracing::debug!("request head not complete in time: connection closed");
                close.abort();
                return false;
            }
            true
        });
    }

    /// How many connections are watched.
    pub fn len(&self) -> usize {
        self.connections.len()
    }

    /// True when no connection is watched.
    pub fn is_empty(&self) -> bool {
        self.connections.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(clock: &Clock, ms: u64) {
        clock.now_ms.store(ms, Relaxed);
    }

    #[test]
    fn a_head_deadline_fires_a_tick_after_it_passed_and_never_while_disarmed() {
        let clock = Clock::new();
        let d = Deadlines::new(clock.clone(), Duration::from_secs(1));
        assert!(!d.sweep(1_000), "not before the slack tick");
        assert!(d.sweep(1_100));
        d.head_read();
        assert!(!d.sweep(1_000_000), "disarmed while a request runs");
        at(&clock, 5_000);
        d.await_head();
        assert!(!d.sweep(6_099));
        assert!(d.sweep(6_100));
    }

    #[tokio::test]
    async fn a_response_deadline_wakes_the_waiting_request_and_ends_it() {
        let clock = Clock::new();
        let d = Deadlines::new(clock.clone(), Duration::from_secs(30));
        let waiting = {
            let d = d.clone();
            tokio::spawn(async move {
                let pending = std::pin::pin!(std::future::pending::<()>());
                d.response_within(Duration::from_millis(500), pending).await
            })
        };
        tokio::task::yield_now().await;
        assert!(!d.sweep(550), "not before the deadline and its slack");
        assert!(!waiting.is_finished());
        assert!(
            !d.sweep(600),
            "the response deadline fires; the head one is 30 s away"
        );
        assert_eq!(waiting.await.unwrap(), None, "timed out");
        assert_eq!(
            d.response_within(Duration::from_millis(500), std::pin::pin!(async { 7 }))
                .await,
            Some(7),
            "a ready exchange is not timed out"
        );
        assert_eq!(d.response.load(Relaxed), OFF, "disarmed after");
    }

    #[tokio::test]
    async fn the_sweeper_closes_late_connections_and_forgets_ended_ones() {
        let clock = Clock::new();
        let mut sweeper = Sweeper::default();
        let late = Deadlines::new(clock.clone(), Duration::from_millis(100));
        let task = tokio::spawn(std::future::pending::<()>());
        sweeper.watch(late.clone(), task.abort_handle());
        let ended = Deadlines::new(clock.clone(), Duration::from_secs(30));
        sweeper.watch(ended, tokio::spawn(async {}).abort_handle());
        let busy = Deadlines::new(clock.clone(), Duration::from_millis(100));
        busy.head_read();
        sweeper.watch(busy.clone(), tokio::spawn(async {}).abort_handle());
        assert_eq!(sweeper.len(), 3);
        tokio::time::sleep(TICK * 3).await;
        sweeper.sweep(&clock);
        assert!(task.await.unwrap_err().is_cancelled(), "late one closed");
        assert_eq!(sweeper.len(), 1, "only the busy connection is left");
        assert!(clock.now() >= 300);
    }
}
