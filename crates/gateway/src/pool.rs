//! The upstream connection pool, on `hyper::client::conn::http1`.
//!
//! One [`Upstream`] per distinct upstream authority, shared by all workers:
//! - at most `GATEWAY_POOL_MAX_CONNECTIONS` connections exist at any time
//!   (a semaphore permit lives inside each connection's task, so it is
//!   released exactly when the connection closes);
//! - idle connections are kept per worker, so that a request, its upstream
//!   connection and its stream stay on one thread; a worker takes another
//!   worker's idle connection only when the budget is spent;
//! - idle connections are closed after `GATEWAY_POOL_IDLE_TIMEOUT_SECS`
//!   (checked on checkout and by a reaper per worker);
//! - a request that could not be written because the pooled connection had
//!   just closed is retried once on a new connection.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::{Request, Response};
use hyper::body::Incoming;
use hyper::client::conn::http1::{Builder, SendRequest};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;

use crate::body::{BodyTooLarge, RequestBody};
use crate::error::GatewayError;

type Sender = SendRequest<RequestBody>;

struct Idle {
    sender: Sender,
    since: Instant,
}

/// The pool of one upstream authority.
pub struct Pool {
    /// The route name used in logs and errors.
    name: &'static str,
    /// `host:port` to connect to.
    authority: String,
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

/// A connection in use; [`Lease::release`] returns it to the pool, dropping
/// it closes the connection.
pub struct Lease {
    sender: Option<Sender>,
    pool: Arc<Pool>,
    worker: usize,
}

impl Lease {
    /// Puts the connection back as idle, once its response is complete.
    pub fn release(mut self) {
        if let Some(sender) = self.sender.take()
            && !sender.is_closed()
        {
            self.pool.idle[self.worker]
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .push(Idle {
                    sender,
                    since: Instant::now(),
                });
            self.pool.returned.notify_one();
        }
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
            authority,
            budget: Arc::new(Semaphore::new(max)),
            idle: (0..workers).map(|_| Mutex::new(Vec::new())).collect(),
            returned: Notify::new(),
            connect_timeout,
            idle_timeout,
        }
    }

    /// The authority requests are sent to (the `Host` of non-Aura routes).
    pub fn authority(&self) -> &str {
        &self.authority
    }

    /// Sends `req` (origin-form URI) on a pooled or new connection.
    pub async fn send(
        self: &Arc<Self>,
        worker: usize,
        mut req: Request<RequestBody>,
    ) -> Result<(Response<Incoming>, Lease), GatewayError> {
        for attempt in 0..2 {
            let mut lease = self.checkout(worker).await?;
            let Some(sender) = lease.sender.as_mut() else {
                continue;
            };
            if sender.ready().await.is_err() {
                continue; // closed while idle: take another one
            }
            match sender.try_send_request(req).await {
                Ok(response) => return Ok((response, lease)),
                Err(mut e) => match e.take_message() {
                    Some(unsent) if attempt == 0 => req = unsent,
                    _ => return Err(self.classify(e.error())),
                },
            }
        }
        Err(GatewayError::UpstreamUnavailable(self.name))
    }

    /// Closes this worker's connections that have been idle too long.
    pub fn reap(&self, worker: usize) {
        let now = Instant::now();
        self.idle[worker]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|i| !i.sender.is_closed() && now - i.since < self.idle_timeout);
    }

    /// Closes all of this worker's idle connections (at shutdown).
    pub fn close_idle(&self, worker: usize) {
        self.idle[worker]
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clear();
    }

    async fn checkout(self: &Arc<Self>, worker: usize) -> Result<Lease, GatewayError> {
        let deadline = Instant::now() + self.connect_timeout;
        loop {
            if let Some(sender) = self.take_idle(worker) {
                return Ok(self.lease(sender, worker));
            }
            if let Ok(permit) = self.budget.clone().try_acquire_owned() {
                // Boxed: connecting is rare, and inline it would make every
                // request's future several times larger.
                return Box::pin(self.connect(permit, worker, deadline)).await;
            }
            let others = (0..self.idle.len()).filter(|w| *w != worker);
            if let Some(sender) = others.filter_map(|w| self.take_idle(w)).next() {
                return Ok(self.lease(sender, worker));
            }
            let returned = self.returned.notified();
            tokio::select! {
                () = returned => {}
                permit = self.budget.clone().acquire_owned() => {
                    let permit = permit.map_err(|_| GatewayError::Internal("pool closed".into()))?;
                    return Box::pin(self.connect(permit, worker, deadline)).await;
                }
                () = tokio::time::sleep_until(deadline) => {
                    tracing::warn!(upstream = self.name, "upstream connection budget exhausted");
                    return Err(GatewayError::UpstreamTimeout(self.name));
                }
            }
        }
    }

    fn lease(self: &Arc<Self>, sender: Sender, worker: usize) -> Lease {
        Lease {
            sender: Some(sender),
            pool: self.clone(),
            worker,
        }
    }

    fn take_idle(&self, worker: usize) -> Option<Sender> {
        let mut idle = self.idle[worker].lock().unwrap_or_else(|p| p.into_inner());
        let now = Instant::now();
        while let Some(entry) = idle.pop() {
            if !entry.sender.is_closed() && now - entry.since < self.idle_timeout {
                return Some(entry.sender);
            }
        }
        None
    }

    async fn connect(
        self: &Arc<Self>,
        permit: OwnedSemaphorePermit,
        worker: usize,
        deadline: Instant,
    ) -> Result<Lease, GatewayError> {
        let stream =
            match tokio::time::timeout_at(deadline, TcpStream::connect(&self.authority)).await {
                Err(_) => return Err(GatewayError::UpstreamTimeout(self.name)),
                Ok(Err(e)) => {
                    tracing::warn!(upstream = self.name, error = %e, "upstream connect failed");
                    return Err(match e.kind() {
                        std::io::ErrorKind::TimedOut => GatewayError::UpstreamTimeout(self.name),
                        _ => GatewayError::UpstreamUnavailable(self.name),
                    });
                }
                Ok(Ok(stream)) => stream,
            };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = Builder::new()
            .writev(false)
            .handshake(TokioIo::new(stream))
            .await
            .map_err(|e| self.classify(&e))?;
        let name = self.name;
        tokio::spawn(async move {
            let _permit = permit; // the budget counts live connections
            if let Err(e) = conn.await {
                tracing::debug!(upstream = name, error = %e, "upstream connection ended with an error");
            }
        });
        Ok(self.lease(sender, worker))
    }

    /// Maps a failed exchange to who caused it.
    fn classify(&self, err: &hyper::Error) -> GatewayError {
        let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
        while let Some(e) = source {
            if let Some(too_large) = e.downcast_ref::<BodyTooLarge>() {
                return GatewayError::PayloadTooLarge(too_large.0);
            }
            source = e.source();
        }
        if err.is_user() {
            // The client's own request body failed (it went away mid-upload).
            return GatewayError::BadRequest("Request body could not be read".into());
        }
        tracing::warn!(upstream = self.name, error = %err, "upstream exchange failed");
        GatewayError::UpstreamUnavailable(self.name)
    }
}
