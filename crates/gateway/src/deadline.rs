//! Coarse deadlines for the two timeouts every request passes through:
//! reading a request head (`GATEWAY_HEADER_READ_TIMEOUT_SECS`) and waiting
//! for the upstream's response head (`GATEWAY_RESPONSE_TIMEOUT_SECS`).
//!
//! Each worker sweeps its connections every [`TICK`]. Arming or disarming a
//! deadline is one atomic store, without reading the clock: a deadline armed
//! since the last sweep is dated by the next one (it was armed before that
//! sweep, so it is due at most at that sweep's time plus the timeout). Only
//! the sweep reads the clock. A timer of tokio's wheel (or hyper's, a boxed
//! one of the same wheel) would cost a wheel entry inserted and removed and
//! clock reads on every request. A deadline fires at most two sweeps late
//! (about 0.2 s; later only when the worker is that busy) and never early.

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

/// Marks a deadline armed since the last sweep; the low bits hold its
/// timeout in milliseconds until the next sweep dates it.
const UNDATED: u64 = 1 << 63;

/// One deadline: `OFF`, `UNDATED | timeout_ms`, or due at that many
/// milliseconds of the worker's sweep clock.
#[derive(Debug)]
struct Slot(AtomicU64);

impl Slot {
    fn off() -> Self {
        Self(AtomicU64::new(OFF))
    }

    fn arm(&self, timeout: Duration) {
        let ms = u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX);
        self.0.store(UNDATED | ms.min(UNDATED - 2), Relaxed);
    }

    fn disarm(&self) {
        self.0.store(OFF, Relaxed);
    }

    /// The sweep at `now`: dates an undated deadline, and says whether a
    /// dated one has passed.
    fn due(&self, now: u64) -> bool {
        let at = self.0.load(Relaxed);
        if at == OFF {
            return false;
        }
        if at & UNDATED != 0 {
            // Armed before this sweep: due no later than now + timeout. A
            // disarm or re-arm in between wins (the exchange then fails).
            let dated = now.saturating_add(at & !UNDATED).min(UNDATED - 1);
            let _ = self.0.compare_exchange(at, dated, Relaxed, Relaxed);
            return false;
        }
        at <= now
    }
}

/// The deadlines of one client connection. HTTP/1.1 carries one request at
/// a time, so one of each kind is enough.
pub struct Deadlines {
    head_timeout: Duration,
    /// When the request head being read must be complete.
    head: Slot,
    /// When the upstream's response head must have arrived.
    response: Slot,
    /// Set by the sweep when `response` passed.
    expired: AtomicBool,
    /// The request waiting for its response head.
    waker: AtomicWaker,
}

impl Deadlines {
    /// The deadlines of a new connection, armed for its first request head.
    pub fn new(head_timeout: Duration) -> Arc<Self> {
        let deadlines = Arc::new(Self {
            head_timeout,
            head: Slot::off(),
            response: Slot::off(),
            expired: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        });
        deadlines.await_head();
        deadlines
    }

    /// The connection waits for a request head: arms the head deadline.
    pub fn await_head(&self) {
        self.head.arm(self.head_timeout);
    }

    /// A request head was read: disarms the head deadline until the
    /// response has been sent.
    pub fn head_read(&self) {
        self.head.disarm();
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
        self.response.arm(timeout);
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
        self.response.disarm();
        out
    }

    /// One sweep at `now`: wakes a request whose response deadline passed;
    /// true when the head deadline passed (the connection is to be closed).
    fn sweep(&self, now: u64) -> bool {
        if self.response.due(now) {
            self.response.disarm();
            self.expired.store(true, Relaxed);
            self.waker.wake();
        }
        self.head.due(now)
    }
}

/// The connections of one worker, with the handle that closes each, and the
/// worker's sweep clock.
pub struct Sweeper {
    epoch: Instant,
    connections: Vec<(Arc<Deadlines>, AbortHandle)>,
}

impl Default for Sweeper {
    fn default() -> Self {
        Self {
            epoch: Instant::now(),
            connections: Vec::new(),
        }
    }
}

impl Sweeper {
    /// Watches a connection; `close` ends its task.
    pub fn watch(&mut self, deadlines: Arc<Deadlines>, close: AbortHandle) {
        self.connections.push((deadlines, close));
    }

    /// Reads the clock once, closes the connections whose head deadline
    /// passed, wakes the requests whose response deadline passed, dates the
    /// deadlines armed since the last sweep, and forgets the connections
    /// that ended.
    pub fn sweep(&mut self) {
        let now = u64::try_from(self.epoch.elapsed().as_millis())
            .map_or(UNDATED - 1, |ms| ms.min(UNDATED - 1));
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
    #[cfg(test)]
    fn len(&self) -> usize {
        self.connections.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_deadline_is_dated_by_the_next_sweep_and_fires_once_it_passed() {
        let d = Deadlines::new(Duration::from_secs(1));
        assert!(!d.sweep(250), "armed before this sweep: dated 1,250");
        assert!(!d.sweep(1_249));
        assert!(d.sweep(1_250));
        d.head_read();
        assert!(!d.sweep(1_000_000), "disarmed while a request runs");
        d.await_head();
        assert!(!d.sweep(2_000_000), "re-armed: dated again");
        assert!(!d.sweep(2_000_999));
        assert!(d.sweep(2_001_000));
    }

    #[test]
    fn a_timeout_too_large_for_the_clock_never_fires() {
        let d = Deadlines::new(Duration::MAX);
        assert!(!d.sweep(5), "dated at the clock's end");
        assert!(!d.sweep(5), "and stays dated");
        assert!(!d.sweep(1 << 62));
    }

    #[tokio::test]
    async fn a_response_deadline_wakes_the_waiting_request_and_ends_it() {
        let d = Deadlines::new(Duration::from_secs(30));
        let waiting = {
            let d = d.clone();
            tokio::spawn(async move {
                let pending = std::pin::pin!(std::future::pending::<()>());
                d.response_within(Duration::from_millis(500), pending).await
            })
        };
        tokio::task::yield_now().await;
        assert!(!d.sweep(100), "dated 600");
        assert!(!d.sweep(599));
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
        assert_eq!(d.response.0.load(Relaxed), OFF, "disarmed after");
    }

    #[tokio::test]
    async fn the_sweeper_closes_late_connections_and_forgets_ended_ones() {
        let mut sweeper = Sweeper::default();
        let late = Deadlines::new(Duration::from_millis(100));
        let task = tokio::spawn(std::future::pending::<()>());
        sweeper.watch(late.clone(), task.abort_handle());
        let ended = Deadlines::new(Duration::from_secs(30));
        sweeper.watch(ended, tokio::spawn(async {}).abort_handle());
        let busy = Deadlines::new(Duration::from_millis(100));
        busy.head_read();
        sweeper.watch(busy.clone(), tokio::spawn(async {}).abort_handle());
        assert_eq!(sweeper.len(), 3);
        sweeper.sweep(); // dates the late one
        assert_eq!(sweeper.len(), 2, "the ended one is forgotten");
        tokio::time::sleep(TICK * 2).await;
        sweeper.sweep();
        assert!(task.await.unwrap_err().is_cancelled(), "late one closed");
        assert_eq!(sweeper.len(), 1, "only the busy connection is left");
    }
}
