//! Real servers on port 0: the gateway itself, upstreams that record what
//! reaches them, and a client on its own connection per request.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use gateway::Config;
use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

pub(crate) type TestBody = UnsyncBoxBody<Bytes, Infallible>;
pub(crate) const SECRET: &str = "test-secret-test-secret-test-secret-42";

pub(crate) fn full(bytes: impl Into<Bytes>) -> TestBody {
    Full::new(bytes.into()).boxed_unsync()
}

/// A body fed from a channel: the test decides when each chunk goes out.
pub(crate) struct ChanBody(pub mpsc::Receiver<Bytes>);

impl Body for ChanBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

/// A streamed body and the sender that feeds it.
pub(crate) fn channel_body() -> (mpsc::Sender<Bytes>, TestBody) {
    let (tx, rx) = mpsc::channel(16);
    (tx, ChanBody(rx).boxed_unsync())
}

/// What an upstream saw of one request.
#[derive(Debug, Clone)]
pub(crate) struct Seen {
    pub uri: http::Uri,
    pub headers: HeaderMap,
    pub body: Bytes,
    pub peer: SocketAddr,
}

/// A real HTTP/1.1 upstream on port 0.
pub(crate) struct Upstream {
    pub addr: SocketAddr,
    pub seen: Arc<Mutex<Vec<Seen>>>,
    pub closed: Arc<Mutex<Vec<SocketAddr>>>,
    task: JoinHandle<()>,
}

impl Drop for Upstream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Upstream {
    pub(crate) fn uri(&self) -> String {
        format!("http://{}", self.addr)
    }
    pub(crate) fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

type Handler =
    Arc<dyn Fn(Seen) -> Pin<Box<dyn Future<Output = Response<TestBody>> + Send>> + Send + Sync>;

/// An upstream whose handler gets the whole request (body read first).
pub(crate) async fn upstream<F, Fut>(handler: F) -> Upstream
where
    F: Fn(Seen) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Response<TestBody>> + Send + 'static,
{
    let handler: Handler = Arc::new(move |seen| Box::pin(handler(seen)));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let seen = Arc::new(Mutex::new(Vec::new()));
    let closed = Arc::new(Mutex::new(Vec::new()));
    let (seen2, closed2) = (seen.clone(), closed.clone());
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, peer)) = listener.accept().await else {
                return;
            };
            let (handler, seen, closed) = (handler.clone(), seen2.clone(), closed2.clone());
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    let (handler, seen) = (handler.clone(), seen.clone());
                    async move {
                        let (parts, body) = req.into_parts();
                        let body = body
                            .collect()
                            .await
                            .map(|b| b.to_bytes())
                            .unwrap_or_default();
                        let record = Seen {
                            uri: parts.uri,
                            headers: parts.headers,
                            body,
                            peer,
                        };
                        seen.lock().unwrap().push(record.clone());
                        Ok::<_, Infallible>(handler(record).await)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                closed.lock().unwrap().push(peer);
            });
        }
    });
    Upstream {
        addr,
        seen,
        closed,
        task,
    }
}

/// An upstream answering 200 with a JSON echo of the path.
pub(crate) async fn echo_upstream() -> Upstream {
    upstream(|seen: Seen| async move {
        let body = serde_json::json!({"path": seen.uri.to_string()}).to_string();
        Response::builder()
            .header("content-type", "application/json")
            .body(full(body))
            .unwrap()
    })
    .await
}

/// A running gateway; dropping it shuts it down.
pub(crate) struct TestGateway {
    pub addr: SocketAddr,
    /// The admin listener (`/metrics`).
    pub admin: SocketAddr,
    shutdown: Option<oneshot::Sender<()>>,
    pub task: Option<JoinHandle<std::io::Result<()>>>,
}

impl TestGateway {
    /// Starts the graceful shutdown; the task ends when the drain is over.
    pub(crate) fn shutdown(&mut self) -> JoinHandle<std::io::Result<()>> {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        self.task.take().unwrap()
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

/// The configuration the tests start from: every upstream at `upstream`,
/// one worker (on the test's runtime), no stream recorder, and no edge
/// token check unless `extra` sets `JWT_SECRET`.
pub(crate) fn config(upstream: &str, extra: &[(&str, &str)]) -> Config {
    let mut env: HashMap<String, String> = HashMap::from([
        ("AURA_PLATFORM_URI".into(), upstream.into()),
        ("MAIN_SERVICE_URI".into(), upstream.into()),
        ("GATEWAY_WORKER_THREADS".into(), "1".into()),
        ("GATEWAY_RECORDER_ENABLED".into(), "false".into()),
    ]);
    if !extra.iter().any(|(k, _)| *k == "JWT_SECRET") {
        env.insert("GATEWAY_AUTH".into(), "off".into());
    }
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    Config::from_sources(None, env).unwrap()
}

pub(crate) async fn spawn_gateway(config: Config) -> TestGateway {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let admin_listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin = admin_listener.local_addr().unwrap();
    let (tx, rx) = oneshot::channel();
    let task = tokio::spawn(gateway::run_with_admin(
        listener,
        Some(admin_listener),
        config,
        async {
            let _ = rx.await;
        },
    ));
    TestGateway {
        addr,
        admin,
        shutdown: Some(tx),
        task: Some(task),
    }
}

/// A response on its own client connection; dropping it closes the connection.
pub(crate) struct Sent {
    pub response: Response<Incoming>,
    conn: JoinHandle<()>,
}

impl Drop for Sent {
    fn drop(&mut self) {
        self.conn.abort();
    }
}

impl Sent {
    pub(crate) fn status(&self) -> u16 {
        self.response.status().as_u16()
    }
    pub(crate) fn header(&self, name: &str) -> Option<String> {
        self.response
            .headers()
            .get(name)
            .map(|v| v.to_str().unwrap().to_owned())
    }
    /// The next body chunk, within `wait`.
    pub(crate) async fn chunk(&mut self, wait: Duration) -> Option<Bytes> {
        loop {
            let frame = tokio::time::timeout(wait, self.response.body_mut().frame())
                .await
                .expect("no chunk in time")?
                .ok()?;
            if let Ok(data) = frame.into_data() {
                return Some(data);
            }
        }
    }
    pub(crate) async fn text(mut self) -> String {
        let body = self.response.body_mut().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    }
    pub(crate) async fn json(self) -> serde_json::Value {
        serde_json::from_str(&self.text().await).unwrap()
    }
}

/// Sends one request on a fresh connection.
pub(crate) async fn send(addr: SocketAddr, mut req: Request<TestBody>) -> Sent {
    if !req.headers().contains_key("host") {
        req.headers_mut()
            .insert("host", addr.to_string().parse().unwrap());
    }
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    let conn = tokio::spawn(async move {
        let _ = conn.await;
    });
    let response = sender.send_request(req).await.unwrap();
    Sent { response, conn }
}

/// A request builder with the URI pointed at `addr` (`send` adds a Host header when none is set).
pub(crate) fn request(method: &str, addr: SocketAddr, path: &str) -> http::request::Builder {
    Request::builder()
        .method(method)
        .uri(format!("http://{addr}{path}"))
}

pub(crate) async fn get(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Sent {
    let mut req = request("GET", addr, path);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    send(addr, req.body(full("")).unwrap()).await
}

/// A token for `sub` in `tenant`, expiring `ttl` seconds from now (negative: expired).
pub(crate) fn token(sub: &str, tenant: &str, ttl: i64) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64;
    let claims = dwp_core::token::Claims {
        sub: sub.into(),
        tenant_id: Some(tenant.into()),
        iat: Some(now as u64),
        exp: (now + ttl) as u64,
    };
    dwp_core::token::issue(&claims, SECRET.as_bytes())
}

/// Waits until `check` holds, up to `limit`.
pub(crate) async fn eventually(limit: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + limit;
    while tokio::time::Instant::now() < deadline {
        if check() {
            return true;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    check()
}

/// An upstream whose stream responses are fed by the test through the returned receiver.
pub(crate) async fn feeding_upstream(
    content_type: Option<&'static str>,
) -> (Upstream, mpsc::Receiver<mpsc::Sender<Bytes>>) {
    let (feeds_tx, feeds_rx) = mpsc::channel(64);
    let up = upstream(move |_seen| {
        let feeds_tx = feeds_tx.clone();
        async move {
            let (tx, body) = channel_body();
            feeds_tx.send(tx).await.unwrap();
            let mut res = Response::builder();
            if let Some(ct) = content_type {
                res = res.header("content-type", ct);
            }
            res.body(body).unwrap()
        }
    })
    .await;
    (up, feeds_rx)
}
