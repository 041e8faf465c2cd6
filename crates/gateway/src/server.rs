//! The accept loop, the per-request handler and graceful shutdown.
//!
//! On shutdown the listener is dropped at once (new connections are
//! refused), open requests and streams get up to `GATEWAY_SHUTDOWN_GRACE_SECS`
//! to finish, and whatever is still open then is closed.

use std::convert::Infallible;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use http::Version;
use http::header::HOST;
use http::{HeaderValue, Request, Response};
use hyper::body::Incoming;
use hyper::server::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use hyper_util::server::graceful::Watcher;
use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio::task::JoinSet;
use tokio::time::MissedTickBehavior;
use tokio_util::sync::CancellationToken;

use crate::proxy;
use crate::recorder::Recorder;
use crate::state::{Peer, Shared, State};
use crate::upstream::deadline::{Deadlines, Sweeper, TICK};
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
    let tls = match &config.tls {
        Some(files) => Some(crate::tls::acceptor(files).map_err(std::io::Error::other)?),
        None => None,
    };
    let mut shared = Shared::new(config);
    shared.tls = tls;
    let recorder = start_recorder(&mut shared);
    let journal = start_streams(&mut shared);
    let streams = shared.streams.clone();
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
    let (peers, finished) = spawn_workers(workers, &shared, &stop)?;
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
    if let Some(streams) = streams {
        // The runs still going end now (those of the other workers ended
        // with their runtimes), and the journal is written out.
        streams.stop_all();
    }
    if let Some(task) = journal {
        // The runs are gone with the workers: the journal writes what is
        // queued and stops.
        if tokio::time::timeout(Duration::from_secs(5), task)
            .await
            .is_err()
        {
            tracing::warn!("stream journal did not finish writing in time");
        }
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

/// A writer started on a thread of its own, and the task to await on
/// shutdown.
type Started<T> = std::io::Result<(T, tokio::sync::oneshot::Receiver<()>)>;

/// Its handle, or `None` and a warning that it did not start.
fn handle<T>(what: &str, started: Started<T>) -> Option<(T, tokio::sync::oneshot::Receiver<()>)> {
    started
        .inspect_err(|e| tracing::warn!(error = %e, "{what} not started"))
        .ok()
}

/// Starts the stream recorder when it is enabled; its writing task is
/// returned, to be awaited on shutdown.
fn start_recorder(shared: &mut Shared) -> Option<tokio::sync::oneshot::Receiver<()>> {
    if !shared.config.recorder_enabled {
        return None;
    }
    let config = &shared.config;
    let started = Recorder::start(&config.redis, config.recorder, shared.metrics.clone());
    let (recorder, task) = handle("stream recorder", started)?;
    shared.recorder = Some(recorder);
    Some(task)
}

/// Starts resumable streams (journal, tail, stop listener) beside the
/// recorder; the journal's task is returned, to be awaited on shutdown.
fn start_streams(shared: &mut Shared) -> Option<tokio::sync::oneshot::Receiver<()>> {
    shared.recorder.as_ref()?;
    let config = &shared.config;
    let started =
        crate::streams::Streams::start(&config.redis, config.streams, shared.metrics.clone());
    let (streams, task) = handle("resumable streams", started)?;
    shared.streams = Some(streams);
    Some(task)
}

/// What the other workers are handed and what says they finished.
type Workers = (
    Vec<mpsc::UnboundedSender<Handed>>,
    Vec<tokio::sync::oneshot::Receiver<std::io::Result<()>>>,
);

/// Starts workers 1.. as threads, each with its own single-threaded runtime.
fn spawn_workers(
    workers: usize,
    shared: &Arc<Shared>,
    stop: &CancellationToken,
) -> std::io::Result<Workers> {
    let mut peers = Vec::new();
    let mut finished = Vec::new();
    for worker in 1..workers {
        let (peer, inbox) = mpsc::unbounded_channel();
        peers.push(peer);
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
    Ok((peers, finished))
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
    let pools = shared.pools();
    let reaper = spawn_reaper(&shared, worker, pools.clone());
    let state = Arc::new(State { shared, worker });
    let mut conns = Connections::default();
    loop {
        let (stream, remote) = tokio::select! {
            next = source.next() => match next {
                Some(pair) => pair,
                None => break,
            },
            // Finished connections are reaped as they end.
            Some(_) = conns.tasks.join_next(), if !conns.tasks.is_empty() => continue,
            _ = conns.tick.tick() => {
                conns.sweeper.sweep();
                continue;
            }
            () = stop.cancelled() => break,
        };
        conns.open(&state, stream, remote);
    }
    drop(source); // new connections are refused from now on
    conns.drain(grace).await;
    reaper.abort();
    pools.iter().for_each(|pool| pool.close_idle(worker));
    Ok(())
}

/// Closes this worker's idle upstream connections once they are too old.
fn spawn_reaper(
    shared: &Shared,
    worker: usize,
    pools: Vec<Arc<crate::upstream::pool::Pool>>,
) -> tokio::task::JoinHandle<()> {
    let every = (shared.config.pool_idle_timeout / 2)
        .clamp(Duration::from_millis(100), Duration::from_secs(5));
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        loop {
            tick.tick().await;
            pools.iter().for_each(|pool| pool.reap(worker));
        }
    })
}

/// The client connections of one worker.
struct Connections {
    graceful: GracefulShutdown,
    /// The connection tasks, aborted if they outlast the grace period (an
    /// abort costs nothing per poll, unlike a cancellation future beside each).
    tasks: JoinSet<()>,
    /// The head-read and response deadlines of this worker's connections.
    sweeper: Sweeper,
    /// When the sweeper sweeps.
    tick: tokio::time::Interval,
}

impl Default for Connections {
    fn default() -> Self {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
        Self {
            graceful: GracefulShutdown::new(),
            tasks: JoinSet::new(),
            sweeper: Sweeper::default(),
            tick,
        }
    }
}

impl Connections {
    /// Serves a new client connection in its own task: HTTP/1.1, or
    /// HTTP/2 (ALPN `h2` under TLS, prior knowledge in cleartext).
    fn open(&mut self, state: &Arc<State>, stream: TcpStream, remote: SocketAddr) {
        let _ = stream.set_nodelay(true);
        let config = &state.shared.config;
        let ip = HeaderValue::from_str(&remote.ip().to_string())
            .unwrap_or(HeaderValue::from_static("unknown"));
        // The head deadline also bounds the TLS handshake and the first
        // request of an HTTP/2 connection.
        let deadlines = Deadlines::with_write(
            config.header_read_timeout,
            config.response_timeout,
            config.write_idle_timeout,
        );
        // Counted per connection, not per request: an HTTP/1.1 connection
        // carries one request at a time, so this caps the address's open
        // requests too, at no cost per request on a kept-alive connection
        // (an HTTP/2 connection carries at most GATEWAY_H2_MAX_STREAMS).
        // Behind trusted proxies every client shares their address: the cap
        // then counts requests by the address they appended (proxy::admit).
        let client = if config.forwarded_hops > 0 {
            Ok(None)
        } else {
            state.shared.limits.client(remote.ip())
        };
        let peer = Arc::new(Peer {
            ip,
            https: state.shared.tls.is_some(),
            deadlines: deadlines.clone(),
            over_limit: client.is_err(),
            client_slot: client.ok().flatten(),
        });
        let service = service(state.clone(), peer);
        let protocols = Protocols {
            h2c: config.h2c,
            h2_max_streams: config.h2_max_streams,
            write_idle: config.write_idle_timeout,
        };
        let watcher = self.graceful.watcher();
        // One task future per kind of connection: a plain connection's task
        // never carries a TLS stream's space.
        let ended = move |served: Result<(), crate::BoxError>| {
            if let Err(e) = served {
                tracing::debug!(error = %e, %remote, "connection ended with an error");
            }
        };
        let close = match state.shared.tls.clone() {
            None if protocols.h2c => self.tasks.spawn(async move {
                ended(protocols.h1_or_h2c(stream, service, watcher).await);
            }),
            None => self.tasks.spawn(async move {
                ended(protocols.h1(stream, service, watcher).await);
            }),
            Some(acceptor) => self.tasks.spawn(async move {
                let tls = match acceptor.accept(stream).await {
                    Ok(tls) => tls,
                    Err(e) => {
                        tracing::debug!(error = %e, %remote, "TLS handshake failed");
                        return;
                    }
                };
                if tls.get_ref().1.alpn_protocol() == Some(b"h2".as_slice()) {
                    ended(protocols.h2(tls, service, watcher).await);
                } else {
                    ended(protocols.h1(tls, service, watcher).await);
                }
            }),
        };
        self.sweeper.watch(deadlines, close);
    }

    /// Lets the open requests finish for up to `grace`, then closes the rest.
    async fn drain(self, grace: Duration) {
        tracing::info!(
            grace_secs = grace.as_secs(),
            "shutting down: draining open requests"
        );
        let Self {
            graceful,
            mut tasks,
            mut sweeper,
            mut tick,
        } = self;
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
    }
}

/// What the service answers a request with: boxed, so that hyper's
/// per-connection slot for the in-flight future stays small on a
/// connection that streams for minutes.
type Answer = std::pin::Pin<Box<dyn Future<Output = Result<Response<Sent>, Infallible>> + Send>>;

/// The per-request service of one connection.
fn service(state: Arc<State>, peer: Arc<Peer>) -> impl Serve + Clone {
    hyper::service::service_fn(move |mut req: Request<Incoming>| {
        let (state, peer) = (state.clone(), peer.clone());
        let h2 = req.version() == Version::HTTP_2;
        if h2 && !req.headers().contains_key(HOST) {
            // HTTP/2 names the authority in `:authority`; the phases (and
            // the upstream) read `Host`.
            if let Some(host) = req
                .uri()
                .authority()
                .and_then(|a| HeaderValue::from_str(a.as_str()).ok())
            {
                req.headers_mut().insert(HOST, host);
            }
        }
        Box::pin(async move {
            peer.deadlines.head.disarm();
            let response = proxy::handle(&state, req, &peer).await;
            let write_idle = state.shared.config.write_idle_timeout;
            Ok::<_, Infallible>(
                response.map(|body| Sent::new(body, peer, h2.then_some(write_idle))),
            )
        })
            as std::pin::Pin<Box<dyn Future<Output = Result<Response<Sent>, Infallible>> + Send>>
    })
}

/// How a connection may speak.
#[derive(Debug, Clone, Copy)]
struct Protocols {
    h2c: bool,
    h2_max_streams: u32,
    write_idle: Duration,
}

/// What [`Protocols`] serves: a connection's I/O and its service.
trait Io: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static> Io for T {}

/// The service of a connection, as hyper takes it.
trait Serve:
    hyper::service::Service<
        Request<Incoming>,
        Response = Response<Sent>,
        Error = Infallible,
        Future = Answer,
    > + Send
    + 'static
{
}
impl<
    T: hyper::service::Service<
            Request<Incoming>,
            Response = Response<Sent>,
            Error = Infallible,
            Future = Answer,
        > + Send
        + 'static,
> Serve for T
{
}

/// Sets HTTP/2's limits of [`Protocols`] on a builder: hyper's own and
/// hyper-util's `auto` one have the same methods but no common trait.
macro_rules! h2_limits {
    ($builder:expr, $protocols:expr) => {
        $builder
            .timer(TokioTimer::new())
            .max_concurrent_streams($protocols.h2_max_streams)
            .max_header_list_size(MAX_HEAD_BYTES as u32)
            .max_pending_accept_reset_streams(20)
            .max_local_error_reset_streams(1024)
            .keep_alive_interval(Some($protocols.ping()))
            .keep_alive_timeout($protocols.ping())
    };
}

impl Protocols {
    /// HTTP/1.1 only (hyper's own connection, no version sniffing).
    async fn h1(
        self,
        io: impl Io,
        service: impl Serve,
        watcher: Watcher,
    ) -> Result<(), crate::BoxError> {
        // No hyper timer: the head-read timeout is the sweeper's.
        let conn = http1::Builder::new()
            .header_read_timeout(None)
            .writev(false)
            .max_header_size(MAX_HEAD_BYTES)
            .serve_connection(TokioIo::new(io), service);
        Ok(watcher.watch(conn).await?)
    }

    /// HTTP/2 only (ALPN chose it).
    async fn h2(
        self,
        io: impl Io,
        service: impl Serve,
        watcher: Watcher,
    ) -> Result<(), crate::BoxError> {
        let mut builder = http2::Builder::new(TokioExecutor::new());
        self.h2_limits(&mut builder);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        Ok(watcher.watch(conn).await?)
    }

    /// HTTP/1.1, or HTTP/2 when the connection starts with its preface
    /// (prior knowledge, `GATEWAY_H2C`).
    async fn h1_or_h2c(
        self,
        io: impl Io,
        service: impl Serve,
        watcher: Watcher,
    ) -> Result<(), crate::BoxError> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .header_read_timeout(None)
            .writev(false)
            // The read buffer bounds the request head: past it, 431.
            .max_buf_size(MAX_HEAD_BYTES);
        h2_limits!(builder.http2(), self);
        let conn = builder.serve_connection(TokioIo::new(io), service);
        watcher.watch(conn).await
    }

    /// HTTP/2's own limits: concurrent streams, header list size, reset
    /// floods (rapid reset, CVE-2023-44487, and its cousins: a client that
    /// keeps resetting streams, or making the server reset them, is sent
    /// GOAWAY), and pings that find a dead peer.
    fn h2_limits(self, builder: &mut http2::Builder<TokioExecutor>) {
        h2_limits!(builder, self);
    }

    /// How often an HTTP/2 connection is pinged, and how long a ping may
    /// go unanswered.
    fn ping(self) -> Duration {
        self.write_idle.min(Duration::from_secs(20))
    }
}

/// A response body on its way to the client: each frame handed to the
/// connection arms the write deadline, and the connection asking for the
/// next one disarms it, so a client that stops reading is cut off after
/// `GATEWAY_WRITE_IDLE_TIMEOUT_SECS` (waiting for the upstream is not
/// counted). When hyper is done with it (sent, or the connection went
/// away), the connection waits for its next request head, and the
/// head-read deadline is armed again.
///
/// An HTTP/2 connection carries many streams, so its deadlines are not the
/// connection's: a stream whose frame stays untaken for the write idle
/// time gives its body up ([`Watched`]), which frees the upstream
/// connection, and hyper resets the stream.
pub struct Sent {
    body: Carried,
    peer: Arc<Peer>,
}

enum Carried {
    /// HTTP/1.1: the connection's deadlines.
    Direct(ResponseBody),
    /// HTTP/2: a watch of its own.
    Watched(Arc<Watched>, Option<tokio::task::JoinHandle<()>>),
}

/// An HTTP/2 stream's body and when it last handed a frame not yet taken.
pub struct Watched {
    body: std::sync::Mutex<Option<ResponseBody>>,
    /// Milliseconds since `epoch` when the frame was handed; 0: none waiting.
    handed: std::sync::atomic::AtomicU64,
    epoch: std::time::Instant,
    timeout: Duration,
}

impl Watched {
    fn now(&self) -> u64 {
        u64::try_from(self.epoch.elapsed().as_millis())
            .unwrap_or(u64::MAX)
            .max(1)
    }

    /// Gives the body up once a handed frame has waited `timeout`.
    async fn watch(self: Arc<Self>) {
        use std::sync::atomic::Ordering::Relaxed;
        let every = (self.timeout / 4).max(Duration::from_millis(100));
        let limit = u64::try_from(self.timeout.as_millis()).unwrap_or(u64::MAX);
        loop {
            tokio::time::sleep(every).await;
            let handed = self.handed.load(Relaxed);
            if handed != 0 && self.now().saturating_sub(handed) >= limit {
                tracing::info!("HTTP/2 stream not read for the write idle timeout: given up");
                let body = self.body.lock().ok().and_then(|mut b| b.take());
                drop(body);
                return;
            }
        }
    }
}

impl Sent {
    /// `write_idle` is `Some` for an HTTP/2 stream.
    fn new(body: ResponseBody, peer: Arc<Peer>, write_idle: Option<Duration>) -> Self {
        let body = match write_idle {
            None => Carried::Direct(body),
            Some(timeout) => Carried::Watched(
                Arc::new(Watched {
                    body: std::sync::Mutex::new(Some(body)),
                    handed: std::sync::atomic::AtomicU64::new(0),
                    epoch: std::time::Instant::now(),
                    timeout,
                }),
                None,
            ),
        };
        Self { body, peer }
    }
}

impl http_body::Body for Sent {
    type Data = bytes::Bytes;
    type Error = crate::BoxError;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<Self::Data>, Self::Error>>> {
        use std::sync::atomic::Ordering::Relaxed;
        let this = &mut *self;
        match &mut this.body {
            Carried::Direct(body) => {
                this.peer.deadlines.write.disarm();
                let polled = std::pin::Pin::new(body).poll_frame(cx);
                if matches!(polled, std::task::Poll::Ready(Some(Ok(_)))) {
                    this.peer.deadlines.write.arm();
                }
                polled
            }
            Carried::Watched(watched, watch) => {
                watched.handed.store(0, Relaxed);
                let Ok(mut guard) = watched.body.lock() else {
                    return std::task::Poll::Ready(Some(Err("stream body lost".into())));
                };
                let Some(body) = guard.as_mut() else {
                    return std::task::Poll::Ready(Some(Err(
                        "the client left the stream unread past the write idle timeout".into(),
                    )));
                };
                let polled = std::pin::Pin::new(body).poll_frame(cx);
                drop(guard);
                if matches!(polled, std::task::Poll::Ready(Some(Ok(_)))) {
                    watched.handed.store(watched.now(), Relaxed);
                    if watch.is_none() {
                        *watch = Some(tokio::spawn(watched.clone().watch()));
                    }
                }
                polled
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        match &self.body {
            Carried::Direct(body) => body.is_end_stream(),
            Carried::Watched(watched, _) => watched
                .body
                .lock()
                // Given up: polled once more, to end the stream with an error.
                .is_ok_and(|b| b.as_ref().is_some_and(http_body::Body::is_end_stream)),
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        match &self.body {
            Carried::Direct(body) => body.size_hint(),
            Carried::Watched(watched, _) => watched
                .body
                .lock()
                .ok()
                .and_then(|b| b.as_ref().map(http_body::Body::size_hint))
                .unwrap_or_default(),
        }
    }
}

impl Drop for Sent {
    fn drop(&mut self) {
        match &mut self.body {
            Carried::Direct(_) => {
                self.peer.deadlines.write.disarm();
                self.peer.deadlines.head.arm();
            }
            Carried::Watched(_, watch) => {
                if let Some(watch) = watch.take() {
                    watch.abort();
                }
            }
        }
    }
}
