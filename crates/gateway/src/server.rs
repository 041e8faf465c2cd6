//! The accept loop, the per-request handler and graceful shutdown.
//!
//! On shutdown the listener is dropped at once (new connections are
//! refused), open requests and streams get up to `GATEWAY_SHUTDOWN_GRACE_SECS`
//! to finish, and whatever is still open then is closed.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use dwp_core::headers::REQUEST_ID;
use http::header::{HOST, ORIGIN};
use http::{HeaderValue, Method, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::service::TowerToHyperService;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::access::AccessLog;
use crate::deadline::{Deadlines, Sweeper, TICK};
use crate::error::GatewayError;
use crate::proxy::{self, Peer, Shared, State};
use crate::recorder::Recorder;
use crate::{Config, ResponseBody};

/// Largest request head (line and headers) accepted; larger is 431.
const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Serves the gateway on `listener` until `shutdown` completes, then drains.
///
/// The gateway runs one worker per `GATEWAY_WORKER_THREADS`, nginx-style:
/// the caller's runtime is worker 0 and every other worker is a thread with
/// its own single-threaded runtime and its own idle upstream connections, so
/// that a request, its upstream connection and its stream stay on one thread
/// (no cross-thread wake-ups per event). Worker 0 accepts and hands the
/// connections out round-robin, so every worker carries the same share.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let admin = match &config.admin {
        Some((host, port)) => Some(TcpListener::bind((host.as_str(), *port)).await.map_err(
            |e| std::io::Error::new(e.kind(), format!("admin listener {host}:{port}: {e}")),
        )?),
        None => None,
    };
    run_with_admin(listener, admin, config, shutdown).await
}

/// [`run`] with the admin listener bound by the caller (tests bind port 0).
pub async fn run_with_admin(
    listener: TcpListener,
    admin: Option<TcpListener>,
    config: Config,
    shutdown: impl Future<Output = ()>,
) -> std::io::Result<()> {
    let workers = config.worker_threads;
    let mut shared = Shared::new(config);
    let recorder = if shared.config.recorder_enabled {
        match Recorder::start(
            &shared.config.redis_url,
            shared.config.recorder,
            shared.metrics.clone(),
        ) {
            Ok((handle, task)) => {
                shared.recorder = Some(handle);
                Some(task)
            }
            Err(e) => {
                tracing::warn!(error = %e, "stream recorder not started");
                None
            }
        }
    } else {
        None
    };
    let shared = Arc::new(shared);
    let admin = admin.map(|listener| {
        if let Ok(addr) = listener.local_addr() {
            tracing::info!(%addr, "admin listener (/metrics, /health)");
        }
        tokio::spawn(crate::admin::serve(listener, shared.metrics.clone()))
    });
    let stop = CancellationToken::new();
    let listener = listener.into_std()?;
    tracing::info!(addr = %listener.local_addr()?, workers, "gateway listening");
    if shared.config.jwt_secret.is_none() {
        tracing::warn!(
            "GATEWAY_AUTH=off: no token is checked at the edge and identity headers are trusted as sent (local development only)"
        );
    }
    let local = TcpListener::from_std(listener)?;
    let (peers, inboxes): (Vec<_>, Vec<_>) =
        (1..workers).map(|_| mpsc::unbounded_channel()).unzip();

    let mut finished = Vec::new();
    for (worker, inbox) in (1..workers).zip(inboxes) {
        let (shared, worker_stop) = (shared.clone(), stop.clone());
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        finished.push(done_rx);
        let spawned = std::thread::Builder::new()
            .name(format!("gateway-worker-{worker}"))
            .spawn(move || {
                let result = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .and_then(|rt| {
                        rt.block_on(async {
                            serve(worker, Source::Handed(inbox), shared, worker_stop).await
                        })
                    });
                let _ = done_tx.send(result);
            });
        if let Err(e) = spawned {
            stop.cancel(); // the workers already started stop again
            return Err(e);
        }
    }
    let stop_on_signal = async {
        shutdown.await;
        stop.cancel();
    };
    let source = Source::Listener {
        listener: local,
        peers,
        next: 0,
    };
    let (result, ()) = tokio::join!(serve(0, source, shared, stop.clone()), stop_on_signal);
    for done in finished {
        if let Ok(Err(e)) = done.await {
            tracing::error!(error = %e, "worker failed");
        }
    }
    if let Some(admin) = admin {
        admin.abort();
    }
    if let Some(task) = recorder {
        // Every handle is gone with the workers: the recorder writes what is
        // queued and stops.
        if tokio::time::timeout(Duration::from_secs(2), task)
            .await
            .is_err()
        {
            tracing::warn!("stream recorder did not finish writing in time");
        }
    }
    result
}

/// An accepted connection on its way to a worker.
type Handed = (std::net::TcpStream, SocketAddr);

/// Where a worker's connections come from.
enum Source {
    /// Worker 0: the listening socket, and the other workers to share with.
    Listener {
        listener: TcpListener,
        peers: Vec<mpsc::UnboundedSender<Handed>>,
        next: usize,
    },
    /// Every other worker: what worker 0 hands over.
    Handed(mpsc::UnboundedReceiver<Handed>),
}

impl Source {
    /// The next connection for this worker; `None` once there are no more.
    async fn next(&mut self) -> Option<(TcpStream, SocketAddr)> {
        loop {
            match self {
                Self::Listener {
                    listener,
                    peers,
                    next,
                } => {
                    let (stream, remote) = match listener.accept().await {
                        Ok(pair) => pair,
                        Err(e) => {
                            // Out of file descriptors and the like: wait, do not spin or exit.
                            tracing::warn!(error = %e, "accept failed");
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            continue;
                        }
                    };
                    *next = (*next + 1) % (peers.len() + 1);
                    if *next == 0 {
                        return Some((stream, remote));
                    }
                    // The peer's runtime registers the socket with its own reactor.
                    if let Ok(stream) = stream.into_std() {
                        let _ = peers[*next - 1].send((stream, remote));
                    }
                }
                Self::Handed(inbox) => {
                    let (stream, remote) = inbox.recv().await?;
                    match TcpStream::from_std(stream) {
                        Ok(stream) => return Some((stream, remote)),
                        Err(e) => tracing::warn!(error = %e, "handed-over connection lost"),
                    }
                }
            }
        }
    }
}

/// One worker: serves its connections until `stop`, then drains for the grace period.
async fn serve(
    worker: usize,
    mut source: Source,
    shared: Arc<Shared>,
    stop: CancellationToken,
) -> std::io::Result<()> {
    let grace = shared.config.shutdown_grace;
    let header_read_timeout = shared.config.header_read_timeout;
    let pools = shared.pools();
    let reaper = tokio::spawn({
        let pools = pools.clone();
        let every = (shared.config.pool_idle_timeout / 2)
            .clamp(Duration::from_millis(100), Duration::from_secs(5));
        async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tick.tick().await;
                pools.iter().for_each(|pool| pool.reap(worker));
            }
        }
    });
    let state = Arc::new(State { shared, worker });
    let graceful = GracefulShutdown::new();
    // The connection tasks, aborted if they outlast the grace period (an
    // abort costs nothing per poll, unlike a cancellation future beside each).
    let mut tasks = JoinSet::new();
    // The head-read and response deadlines of this worker's connections.
    let mut sweeper = Sweeper::default();
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);

    loop {
        let (stream, remote) = tokio::select! {
            next = source.next() => match next {
                Some(pair) => pair,
                None => break,
            },
            // Finished connections are reaped as they end.
            Some(_) = tasks.join_next(), if !tasks.is_empty() => continue,
            _ = tick.tick() => {
                sweeper.sweep();
                continue;
            }
            () = stop.cancelled() => break,
        };
        let _ = stream.set_nodelay(true);
        let state = state.clone();
        let ip = HeaderValue::from_str(&remote.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        let deadlines = Deadlines::new(header_read_timeout);
        // Counted per connection, not per request: an HTTP/1.1 connection
        // carries one request at a time, so this caps the address's open
        // requests too, at no cost per request on a kept-alive connection.
        let client = state.shared.limits.client(remote.ip());
        let peer = Arc::new(Peer {
            ip,
            deadlines: deadlines.clone(),
            over_limit: client.is_err(),
            client_slot: client.ok().flatten(),
        });
        let service = tower::service_fn(move |req: Request<Incoming>| {
            let (state, peer) = (state.clone(), peer.clone());
            // Boxed, so that hyper's per-connection slot for the in-flight
            // future stays small on a connection that streams for minutes.
            Box::pin(async move {
                peer.deadlines.head_read();
                let response = handle(&state, req, &peer).await;
                Ok::<_, Infallible>(response.map(|body| Sent { body, peer }))
            })
                as std::pin::Pin<
                    Box<dyn Future<Output = Result<Response<Sent>, Infallible>> + Send>,
                >
        });
        // No hyper timer: the head-read timeout is the sweeper's.
        let conn = http1::Builder::new()
            .header_read_timeout(None)
            .writev(false)
            .max_header_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(stream), TowerToHyperService::new(service));
        let conn = graceful.watch(conn);
        let close = tasks.spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, %remote, "connection ended with an error");
            }
        });
        sweeper.watch(deadlines, close);
    }

    drop(source); // new connections are refused from now on
    tracing::info!(
        grace_secs = grace.as_secs(),
        "shutting down: draining open requests"
    );
    // The deadlines still hold while the open requests finish.
    let sweeping = async {
        loop {
            tick.tick().await;
            sweeper.sweep();
        }
    };
    tokio::select! {
        () = graceful.shutdown() => tracing::info!("all connections drained"),
        () = tokio::time::sleep(grace) => {
            tracing::warn!("grace period over: closing the remaining connections");
            tasks.abort_all();
        }
        () = sweeping => {}
    }
    while tasks.join_next().await.is_some() {}
    reaper.abort();
    pools.iter().for_each(|pool| pool.close_idle(worker));
    Ok(())
}

/// Handles one request: CORS preflight, own endpoints, routing, proxying.
pub async fn handle(state: &State, req: Request<Incoming>, peer: &Peer) -> Response<ResponseBody> {
    let request_id = req
        .headers()
        .get(REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .cloned()
        .unwrap_or_else(|| {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let id = uuid::Uuid::new_v4().hyphenated().encode_lower(&mut buf);
            HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("-"))
        });
    let origin = req.headers().get(ORIGIN).cloned();
    if let Some(mut preflight) = state.shared.config.cors.preflight(&req) {
        preflight.headers_mut().insert(REQUEST_ID, request_id);
        return preflight;
    }
    let mut log = Some(AccessLog::new(
        state.shared.metrics.clone(),
        req.method().clone(),
        req.uri().path(),
        request_id.clone(),
    ));

    let dispatched = match admit(state, peer) {
        Ok(()) => dispatch(state, req, peer, &request_id, &mut log).await,
        Err(e) => Err(e),
    };
    let mut response = dispatched.unwrap_or_else(GatewayError::into_response);
    if let Some(mut log) = log {
        // A response the gateway made itself: complete as soon as it is sent.
        let bytes = http_body::Body::size_hint(response.body())
            .exact()
            .unwrap_or(0);
        log.finish(response.status().as_u16(), bytes);
    }
    state
        .shared
        .config
        .cors
        .apply(origin.as_ref(), response.headers_mut());
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

/// 429 on a connection its client address had no room for.
fn admit(state: &State, peer: &Peer) -> Result<(), GatewayError> {
    if peer.over_limit {
        state.shared.metrics.limited.inc();
        return Err(GatewayError::TooManyRequests(
            "Too many open connections from this address",
        ));
    }
    Ok(())
}

async fn dispatch(
    state: &State,
    req: Request<Incoming>,
    peer: &Peer,
    request_id: &HeaderValue,
    log: &mut Option<AccessLog>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let path = req.uri().path();
    if req.method() == Method::GET && path == "/health" {
        if let Some(log) = log {
            log.route = "gateway";
        }
        return Ok(crate::admin::health());
    }
    if req.headers().get_all(HOST).iter().count() > 1 {
        return Err(GatewayError::BadRequest("More than one Host header".into()));
    }
    let (route, upstream_path) = proxy::route(&state.shared.config.routes, path)?;
    if let Some(log) = log {
        log.route = route.name;
    }
    let upstream_path = upstream_path.to_owned();
    proxy::forward(state, route, &upstream_path, req, peer, request_id, log).await
}

/// A response body on its way to the client: when hyper is done with it
/// (sent, or the connection went away), the connection waits for its next
/// request head, and the head-read deadline is armed again.
pub struct Sent {
    body: ResponseBody,
    peer: Arc<Peer>,
}

impl http_body::Body for Sent {
    type Data = bytes::Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        std::pin::Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.body.size_hint()
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        self.peer.deadlines.await_head();
    }
}
