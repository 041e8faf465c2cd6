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

/// One coarse deadline, the face every timeout of the request path uses:
/// [`arm`](Self::arm) it, [`disarm`](Self::disarm) it, or run a future
/// [`within`](Self::within) it. Only a [`Sweeper`] fires it.
#[derive(Debug)]
pub struct Deadline {
    timeout: Duration,
    slot: Slot,
    /// Set by the sweep when the deadline passed.
    expired: AtomicBool,
    /// The future waiting [`within`](Self::within) it.
    waker: AtomicWaker,
}

impl Deadline {
    /// A deadline `timeout` after each arming, not armed yet.
    pub fn new(timeout: Duration) -> Self {
        Self {
            timeout,
            slot: Slot::off(),
            expired: AtomicBool::new(false),
            waker: AtomicWaker::new(),
        }
    }

    /// Arms it: it passes `timeout` from now (dated by the next sweep).
    pub fn arm(&self) {
        self.arm_for(self.timeout);
    }

    /// Arms it for `timeout` instead of its own (a route's timeout).
    pub fn arm_for(&self, timeout: Duration) {
        self.expired.store(false, Relaxed);
        self.slot.arm(timeout);
    }

    /// Disarms it.
    pub fn disarm(&self) {
        self.slot.disarm();
    }

    /// Runs `future` with the deadline armed until it completes or the
    /// deadline passes; `None` when it passed. The caller pins `future`, so
    /// that it is stored once, in the caller's state.
    pub async fn within<F: Future>(&self, future: Pin<&mut F>) -> Option<F::Output> {
        self.within_for(self.timeout, future).await
    }

    /// [`within`](Self::within) `timeout` instead of its own (a route's).
    pub async fn within_for<F: Future>(
        &self,
        timeout: Duration,
        mut future: Pin<&mut F>,
    ) -> Option<F::Output> {
        self.arm_for(timeout);
        let out = std::future::poll_fn(|cx| {
            if let Poll::Ready(out) = future.as_mut().poll(cx) {
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
        self.disarm();
        out
    }

    /// One sweep at `now`: true when the deadline passed, and then it is
    /// disarmed and whatever waits [`within`](Self::within) it is woken.
    fn sweep(&self, now: u64) -> bool {
        if !self.slot.due(now) {
            return false;
        }
        self.slot.disarm();
        self.expired.store(true, Relaxed);
        self.waker.wake();
        true
    }
}

/// The deadlines of one client connection. HTTP/1.1 carries one request at
/// a time, so one of each kind is enough.
#[derive(Debug)]
pub struct Deadlines {
    /// When the request head being read must be complete
    /// (`GATEWAY_HEADER_READ_TIMEOUT_SECS`); when it passes, the sweeper
    /// closes the connection.
    pub head: Deadline,
    /// When the upstream's response head must have arrived
    /// (`GATEWAY_RESPONSE_TIMEOUT_SECS`).
    pub response: Deadline,
    /// When the client must have taken the response frame last handed to
    /// the connection (`GATEWAY_WRITE_IDLE_TIMEOUT_SECS`): armed with each
    /// frame, disarmed when the connection asks for the next one; when it
    /// passes, the sweeper closes the connection, which frees the upstream
    /// connection its response holds.
    pub write: Deadline,
}

impl Deadlines {
    /// The deadlines of a new connection, armed for its first request head.
    pub fn new(head_timeout: Duration, response_timeout: Duration) -> Arc<Self> {
        Self::with_write(head_timeout, response_timeout, Duration::MAX)
    }

    /// [`Deadlines::new`] with a write idle timeout.
    pub fn with_write(
        head_timeout: Duration,
        response_timeout: Duration,
        write_timeout: Duration,
    ) -> Arc<Self> {
        let deadlines = Arc::new(Self {
            head: Deadline::new(head_timeout),
            response: Deadline::new(response_timeout),
            write: Deadline::new(write_timeout),
        });
        deadlines.head.arm();
        deadlines
    }

    /// One sweep at `now`: true when the head or the write deadline passed
    /// (the connection is to be closed).
    fn sweep(&self, now: u64) -> bool {
        self.response.sweep(now);
        let stalled = self.write.sweep(now);
        self.head.sweep(now) || stalled
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
            if close.is_finished() {
                return false; // the connection and its requests are gone
            }
            if deadlines.sweep(now) {
                tracing::debug!(
                    "request head not complete, or response not read, in time: connection closed"
                );
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

    const LONG: Duration = Duration::from_secs(30);

    #[test]
    fn a_deadline_is_dated_by_the_next_sweep_and_fires_once_it_passed() {
        let d = Deadlines::new(Duration::from_secs(1), LONG);
        assert!(!d.sweep(250), "armed before this sweep: dated 1,250");
        assert!(!d.sweep(1_249));
        assert!(d.sweep(1_250));
        d.head.disarm();
        assert!(!d.sweep(1_000_000), "disarmed while a request runs");
        d.head.arm();
        assert!(!d.sweep(2_000_000), "re-armed: dated again");
        assert!(!d.sweep(2_000_999));
        assert!(d.sweep(2_001_000));
    }

    #[test]
    fn a_response_frame_left_unread_closes_the_connection() {
        let d = Deadlines::with_write(LONG, LONG, Duration::from_secs(1));
        d.head.disarm();
        d.write.arm();
        assert!(!d.sweep(0), "dated 1,000");
        d.write.disarm(); // the client took it; the next frame is handed over
        d.write.arm();
        assert!(!d.sweep(900), "re-armed: dated 1,900");
        assert!(!d.sweep(1_899));
        assert!(d.sweep(1_900), "the client stopped reading");
    }

    #[test]
    fn a_timeout_too_large_for_the_clock_never_fires() {
        let d = Deadlines::new(Duration::MAX, LONG);
        assert!(!d.sweep(5), "dated at the clock's end");
        assert!(!d.sweep(5), "and stays dated");
        assert!(!d.sweep(1 << 62));
    }

    #[tokio::test]
    async fn a_response_deadline_wakes_the_waiting_request_and_ends_it() {
        let d = Deadlines::new(LONG, Duration::from_millis(500));
        let waiting = {
            let d = d.clone();
            tokio::spawn(async move {
                let pending = std::pin::pin!(std::future::pending::<()>());
                d.response.within(pending).await
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
            d.response.within(std::pin::pin!(async { 7 })).await,
            Some(7),
            "a ready exchange is not timed out"
        );
        assert_eq!(d.response.slot.0.load(Relaxed), OFF, "disarmed after");
    }

    #[tokio::test]
    async fn the_sweeper_closes_late_connections_and_forgets_ended_ones() {
        let mut sweeper = Sweeper::default();
        let late = Deadlines::new(Duration::from_millis(100), LONG);
        let task = tokio::spawn(std::future::pending::<()>());
        sweeper.watch(late.clone(), task.abort_handle());
        let ended = tokio::spawn(async {});
        sweeper.watch(Deadlines::new(LONG, LONG), ended.abort_handle());
        ended.await.unwrap();
        let busy = Deadlines::new(Duration::from_millis(100), LONG);
        busy.head.disarm();
        let running = tokio::spawn(std::future::pending::<()>());
        sweeper.watch(busy.clone(), running.abort_handle());
        assert_eq!(sweeper.len(), 3);
        sweeper.sweep(); // dates the late one
        assert_eq!(sweeper.len(), 2, "the ended one is forgotten");
        tokio::time::sleep(TICK * 2).await;
        sweeper.sweep();
        assert!(task.await.unwrap_err().is_cancelled(), "late one closed");
        assert_eq!(sweeper.len(), 1, "only the busy connection is left");
        running.abort();
    }
}
