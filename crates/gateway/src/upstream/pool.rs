//! The upstream connection pool: plain TCP connections that [`crate::upstream::client`]
//! speaks HTTP/1.1 on, inside the task of the request that holds them.
//!
//! One [`Pool`] per distinct upstream authority, shared by all workers:
//! - at most `GATEWAY_POOL_MAX_CONNECTIONS` connections exist at any time
//!   (a semaphore permit lives inside each [`Conn`], so it is released
//!   exactly when the connection is closed);
//! - idle connections are kept per worker, so that a request, its upstream
//!   connection and its stream stay on one thread; a worker takes another
//!   worker's idle connection only when the budget is spent;
//! - an idle connection the upstream has closed (or sent stray bytes on) is
//!   dropped when it is next looked at, never handed out;
//! - idle connections are closed after `GATEWAY_POOL_IDLE_TIMEOUT_SECS`
//!   (checked on checkout and by a reaper per worker).

use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::BytesMut;
use http::HeaderValue;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::error::GatewayError;

/// Read buffer reserved per read on an upstream connection.
pub const READ_BUFFER: usize = 8 * 1024;

/// Largest read buffer an idle connection keeps.
const MAX_KEPT_BUFFER: usize = 4 * READ_BUFFER;

/// One upstream connection in use. Dropping it closes the connection;
/// [`Conn::release`] returns it to its pool.
pub struct Conn {
    /// The socket.
    pub io: TcpStream,
    /// Bytes read and not yet used.
    pub buf: BytesMut,
    /// True when it served a request before (a stale keep-alive may be closed
    /// by the upstream just as a request is written: such a request may be retried).
    pub reused: bool,
    pool: Arc<Pool>,
    worker: usize,
    _permit: OwnedSemaphorePermit,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("upstream", &self.pool.name)
            .field("reused", &self.reused)
            .finish_non_exhaustive()
    }
}

impl Conn {
    /// Puts the connection back as idle; only call it once a response has
    /// been read to its end and nothing else was received.
    pub fn release(mut self) {
        if !self.buf.is_empty() {
            return; // stray bytes after a response: the connection is unusable
        }
        // The read buffer is kept for the next response (allocating it anew
        // per request costs more than the whole exchange's parsing), unless
        // a large response made it grow.
        if self.buf.capacity() > MAX_KEPT_BUFFER {
            self.buf = BytesMut::new();
        }
        self.reused = true;
        let pool = self.pool.clone();
        pool.idle[self.worker]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(Idle {
                conn: self,
                since: Instant::now(),
            });
        pool.returned.notify_one();
    }

    /// The pool's route name, for logs and errors.
    pub fn upstream(&self) -> &'static str {
        self.pool.name
    }

    /// False when the upstream closed the idle connection or sent bytes on it.
    /// Costs no system call unless the socket has become readable.
    fn is_usable(&self) -> bool {
        let mut probe = [0u8; 1];
        matches!(self.io.try_read(&mut probe), Err(e) if e.kind() == std::io::ErrorKind::WouldBlock)
    }
}

struct Idle {
    conn: Conn,
    since: Instant,
}

impl Idle {
    /// Idle for less than `timeout` and still open, with nothing received.
    fn fresh(&self, now: Instant, timeout: Duration) -> bool {
        now - self.since < timeout && self.conn.is_usable()
    }
}

/// The pool of one upstream authority.
pub struct Pool {
    /// The route name used in logs and errors.
    name: &'static str,
    /// `host:port` to connect to.
    authority: String,
    /// The same, as the `Host` of requests that do not keep the client's.
    host: Option<HeaderValue>,
    budget: Arc<Semaphore>,
    idle: Vec<Mutex<Vec<Idle>>>,
    returned: Notify,
    connect_timeout: Duration,
    idle_timeout: Duration,
}

impl std::fmt::Debug for Pool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pool")
            .field("authority", &self.authority)
            .field("free", &self.budget.available_permits())
            .finish_non_exhaustive()
    }
}

impl Pool {
    /// A pool for `authority` with `max` connections shared by `workers` workers.
    pub fn new(
        name: &'static str,
        authority: String,
        max: usize,
        workers: usize,
        connect_timeout: Duration,
        idle_timeout: Duration,
    ) -> Self {
        Self {
            name,
            host: HeaderValue::from_str(&authority).ok(),
            authority,
            budget: Arc::new(Semaphore::new(max)),
            idle: (0..workers).map(|_| Mutex::new(Vec::new())).collect(),
            returned: Notify::new(),
            connect_timeout,
            idle_timeout,
        }
    }

    /// The authority requests are sent to, as a `Host` header value.
    pub fn host(&self) -> Option<&HeaderValue> {
        self.host.as_ref()
    }

    /// The route name used in logs and errors.
    pub fn name(&self) -> &'static str {
        self.name
    }

    /// An idle connection of this worker, a new one, or (when the budget is
    /// spent) another worker's idle one; waits for one to be returned up to
    /// the connect timeout (then 504).
    pub async fn checkout(self: &Arc<Self>, worker: usize) -> Result<Conn, GatewayError> {
        match self.take_idle(worker) {
            Some(conn) => Ok(conn),
            // Boxed: connecting and waiting are rare, and inline they would
            // make every request's future larger.
            None => Box::pin(self.connect_or_wait(worker)).await,
        }
    }

    async fn connect_or_wait(self: &Arc<Self>, worker: usize) -> Result<Conn, GatewayError> {
        let deadline = Instant::now() + self.connect_timeout;
        loop {
            if let Some(conn) = self.take_idle(worker) {
                return Ok(conn);
            }
            if let Ok(permit) = self.budget.clone().try_acquire_owned() {
                return self.connect(permit, worker, deadline).await;
            }
            let others = (0..self.idle.len()).filter(|w| *w != worker);
            if let Some(conn) = others.filter_map(|w| self.take_idle(w)).next() {
                return Ok(self.adopt(conn, worker));
            }
            let returned = self.returned.notified();
            tokio::select! {
                () = returned => {}
                permit = self.budget.clone().acquire_owned() => {
                    let permit = permit.map_err(|_| GatewayError::Internal("pool closed".into()))?;
                    return self.connect(permit, worker, deadline).await;
                }
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(upstream = self.name, "upstream connection budget exhausted");
                    return Err(GatewayError::UpstreamTimeout(self.name));
                }
            }
        }
    }

    /// A new connection, never a pooled one (for the retry of a request whose
    /// pooled connection turned out to be closed).
    pub async fn connect_new(self: &Arc<Self>, worker: usize) -> Result<Conn, GatewayError> {
        let deadline = Instant::now() + self.connect_timeout;
        let permit = tokio::time::timeout_at(deadline, self.budget.clone().acquire_owned())
            .await
            .map_err(|_| GatewayError::UpstreamTimeout(self.name))?
            .map_err(|_| GatewayError::Internal("pool closed".into()))?;
        Box::pin(self.connect(permit, worker, deadline)).await
    }

    /// Closes this worker's connections that have been idle too long or that
    /// the upstream has closed.
    pub fn reap(&self, worker: usize) {
        let now = Instant::now();
        self.idle[worker]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|i| i.fresh(now, self.idle_timeout));
    }

    /// Closes all of this worker's idle connections (at shutdown).
    pub fn close_idle(&self, worker: usize) {
        self.idle[worker]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    /// A connection from another worker's list now belongs to `worker`.
    fn adopt(&self, mut conn: Conn, worker: usize) -> Conn {
        conn.worker = worker;
        conn
    }

    fn take_idle(&self, worker: usize) -> Option<Conn> {
        let mut idle = self.idle[worker].lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while let Some(entry) = idle.pop() {
            if entry.fresh(now, self.idle_timeout) {
                return Some(entry.conn);
            }
        }
        None
    }

    async fn connect(
        self: &Arc<Self>,
        permit: OwnedSemaphorePermit,
        worker: usize,
        deadline: Instant,
    ) -> Result<Conn, GatewayError> {
        let io = match tokio::time::timeout_at(deadline, TcpStream::connect(&self.authority)).await
        {
            Err(_) => return Err(GatewayError::UpstreamTimeout(self.name)),
            Ok(Err(e)) => {
                tracing::warn!(upstream = self.name, error = %e, "upstream connect failed");
                return Err(match e.kind() {
                    std::io::ErrorKind::TimedOut => GatewayError::UpstreamTimeout(self.name),
                    _ => GatewayError::UpstreamUnavailable(self.name),
                });
            }
            Ok(Ok(io)) => io,
        };
        let _ = io.set_nodelay(true);
        Ok(Conn {
            io,
            buf: BytesMut::new(),
            reused: false,
            pool: self.clone(),
            worker,
            _permit: permit,
        })
    }
}
