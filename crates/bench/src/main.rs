//! `dwp-bench`: the tools behind `scripts/bench/`.
//!
//! - `dwp-bench backend PORT`: a small HTTP/1.1 server. Any path containing
//!   `/stream` answers Server-Sent Events: `?events=N&interval_ms=M` sends N
//!   events carrying the send time (`data: {"t":<unix ns>}`) then
//!   `data: [DONE]`; `events=0` holds the stream open and silent. Every other
//!   path answers a small JSON body.
//! - `dwp-bench streams ADDR PATH COUNT HOLD_SECS`: opens COUNT streams,
//!   waits until each has its response head, prints `open COUNT`, holds
//!   them for HOLD_SECS, then closes them.
//! - `dwp-bench latency ADDR PATH STREAMS`: reads STREAMS concurrent streams
//!   to the end and prints the p50 / p99 / max of receive time minus the
//!   event's send time, in microseconds.
//! - `dwp-bench sequential ADDR PATH COUNT`: sends COUNT GETs one after
//!   the other on one keep-alive connection, each read to the end of its
//!   Content-Length body (the load of `scripts/bench/instructions.sh`).
//! - `dwp-bench tokens SECRET COUNT`: prints COUNT lines `user<TAB>token`,
//!   one valid HS256 token (an hour to live, tenant `1`) per user: the
//!   identities the load tools send.
//! - `dwp-bench hitl ADDR REDIS_URL SECRET DECISIONS CLIENTS [RATE]`: see [`hitl`].
//! - `dwp-bench feed GATEWAY SECRET FEEDS RATE SECONDS [APPROVE_AFTER_MS]`: see [`feed`].
//! - `dwp-bench resume GATEWAY EVENTS RESUMES`: see [`resume`].
//!
//! `BENCH_HEADER` (`Name: value`) is added to the stream requests of
//! `streams` and `latency` (`X-DWP-Resumable: true` for resumable ones).
//! `BENCH_TOKENS` (a file of `tokens`' lines) makes `streams`, `latency`
//! and `sequential` send the identity headers a signed-in frontend sends
//! (`Authorization`, `X-Tenant-ID: 1`, `X-User-ID`), one user after the
//! other.
#![forbid(unsafe_code)]

mod feed;
mod hitl;
mod resume;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::{Request, Response};
use http_body::Frame;
use http_body_util::{BodyExt, Full, combinators::BoxBody};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

type Body = BoxBody<Bytes, Infallible>;

fn now_ns() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

const USAGE: &str = "usage: dwp-bench backend PORT | streams ADDR PATH COUNT HOLD_SECS | latency ADDR PATH STREAMS | sequential ADDR PATH COUNT | hitl ADDR REDIS_URL SECRET DECISIONS CLIENTS [RATE] | feed GATEWAY SECRET FEEDS RATE SECONDS [APPROVE_AFTER_MS] | resume GATEWAY EVENTS RESUMES | tokens SECRET COUNT";

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(2)
}

fn arg<T: std::str::FromStr>(args: &[String], i: usize) -> T {
    args.get(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or_else(|| usage())
}

#[tokio::main]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.get(1).map(String::as_str) {
        Some("--help" | "-h") => {
            println!("{USAGE}\n(the tools behind scripts/bench/; see their scripts)")
        }
        Some("--version" | "-V") => println!("dwp-bench {}", env!("CARGO_PKG_VERSION")),
        Some("backend") => backend(arg(&args, 2)).await,
        Some("streams") => {
            streams(
                arg(&args, 2),
                &arg::<String>(&args, 3),
                arg(&args, 4),
                arg(&args, 5),
            )
            .await
        }
        Some("latency") => latency(arg(&args, 2), &arg::<String>(&args, 3), arg(&args, 4)).await,
        Some("sequential") => {
            if let Err(e) = sequential(arg(&args, 2), &arg::<String>(&args, 3), arg(&args, 4)).await
            {
                eprintln!("sequential: {e}");
                std::process::exit(1);
            }
        }
        Some("hitl") => {
            let bench = hitl::Bench {
                addr: arg(&args, 2),
                redis_url: arg(&args, 3),
                secret: arg(&args, 4),
                decisions: arg(&args, 5),
                clients: arg(&args, 6),
                rate: args.get(7).and_then(|r| r.parse().ok()).unwrap_or(0),
            };
            if let Err(e) = hitl::run(bench).await {
                eprintln!("hitl: {e}");
                std::process::exit(1);
            }
        }
        Some("feed") => {
            let bench = feed::Bench {
                addr: arg(&args, 2),
                secret: arg(&args, 3),
                feeds: arg(&args, 4),
                rate: arg(&args, 5),
                seconds: arg(&args, 6),
                approve_after: std::time::Duration::from_millis(
                    args.get(7).and_then(|r| r.parse().ok()).unwrap_or(1000),
                ),
            };
            if let Err(e) = feed::run(bench).await {
                eprintln!("feed: {e}");
                std::process::exit(1);
            }
        }
        Some("resume") => {
            if let Err(e) = resume::run(arg(&args, 2), arg(&args, 3), arg(&args, 4)).await {
                eprintln!("resume: {e}");
                std::process::exit(1);
            }
        }
        Some("tokens") => tokens(&arg::<String>(&args, 2), arg(&args, 3)),
        _ => usage(),
    }
}

/// The tenant of the benchmark's users: the frontend's constant.
const TENANT: &str = "1";

/// Prints `count` users, each with a token signed with `secret`.
fn tokens(secret: &str, count: usize) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let mut out = String::new();
    for i in 0..count {
        let claims = dwp_core::token::Claims {
            sub: format!("bench-user-{i}"),
            tenant_id: Some(TENANT.into()),
            iat: Some(now),
            exp: now + 3600,
        };
        let token = dwp_core::token::issue(&claims, secret.as_bytes());
        out.push_str(&format!("{}\t{token}\n", claims.sub));
    }
    print!("{out}");
}

/// The identity header lines of the users in `BENCH_TOKENS` (none without
/// it), each `Authorization: …\r\nX-Tenant-ID: 1\r\nX-User-ID: …\r\n`.
fn identities() -> Vec<String> {
    let Ok(file) = std::env::var("BENCH_TOKENS") else {
        return Vec::new();
    };
    let text = std::fs::read_to_string(&file).unwrap_or_else(|e| {
        eprintln!("BENCH_TOKENS {file}: {e}");
        std::process::exit(2)
    });
    text.lines()
        .filter_map(|line| line.split_once('\t'))
        .map(|(user, token)| {
            format!(
                "Authorization: Bearer {token}\r\nX-Tenant-ID: {TENANT}\r\nX-User-ID: {user}\r\n"
            )
        })
        .collect()
}

/// The identity lines of the `i`th request (empty without `BENCH_TOKENS`).
fn identity(all: &[String], i: usize) -> &str {
    if all.is_empty() {
        ""
    } else {
        &all[i % all.len()]
    }
}

async fn backend(port: u16) {
    let listener = TcpListener::bind(("127.0.0.1", port))
        .await
        .unwrap_or_else(|e| {
            eprintln!("backend: cannot listen on {port}: {e}");
            std::process::exit(1)
        });
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        tokio::spawn(async move {
            let service = hyper::service::service_fn(|req: Request<Incoming>| async move {
                Ok::<_, Infallible>(answer(req))
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

fn answer(req: Request<Incoming>) -> Response<Body> {
    if !req.uri().path().contains("/stream") {
        return Response::builder()
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(b"{\"ok\":true,\"service\":\"bench\"}")).boxed())
            .unwrap_or_default();
    }
    let query = req.uri().query().unwrap_or("");
    let param = |name: &str| {
        query
            .split('&')
            .find_map(|kv| kv.strip_prefix(name)?.strip_prefix('='))
            .and_then(|v| v.parse::<u64>().ok())
            .unwrap_or(0)
    };
    let (events, interval) = (param("events"), Duration::from_millis(param("interval_ms")));
    let (tx, rx) = tokio::sync::mpsc::channel::<Bytes>(4);
    tokio::spawn(async move {
        if events == 0 {
            tx.closed().await; // idle until the client goes
            return;
        }
        // A random phase per stream, so that streams do not send in lockstep.
        let phase = (now_ns() % interval.as_nanos().max(1)) as u64;
        tokio::time::sleep(Duration::from_nanos(phase)).await;
        for id in 1..=events {
            tokio::time::sleep(interval).await;
            let event = format!("id: {id}\nevent: content\ndata: {{\"t\":{}}}\n\n", now_ns());
            if tx.send(Bytes::from(event)).await.is_err() {
                return;
            }
        }
        let _ = tx.send(Bytes::from_static(b"data: [DONE]\n\n")).await;
    });
    Response::builder()
        .header("content-type", "text/event-stream")
        .header("cache-control", "no-cache")
        .body(ChannelBody(rx).boxed())
        .unwrap_or_default()
}

/// A response body fed by a channel.
struct ChannelBody(tokio::sync::mpsc::Receiver<Bytes>);

impl http_body::Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0.poll_recv(cx).map(|b| b.map(|b| Ok(Frame::data(b))))
    }
}

fn head(addr: SocketAddr, path: &str, extra: &str) -> String {
    let body = r#"{"prompt":"hi","context":{}}"#;
    let extra = if extra.is_empty() || extra.ends_with('\n') {
        extra.to_owned()
    } else {
        format!("{extra}\r\n")
    };
    let tenant = if extra.contains("X-Tenant-ID:") {
        ""
    } else {
        "X-Tenant-ID: bench\r\n"
    };
    format!(
        "POST {path} HTTP/1.1\r\nHost: {addr}\r\n{tenant}Accept: text/event-stream\r\nContent-Type: application/json\r\n{extra}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
}

/// Opens a stream (as the `i`th user of `ids`) and returns it once its
/// response head has arrived.
async fn open(
    addr: SocketAddr,
    path: &str,
    ids: &[String],
    i: usize,
) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let mut extra = identity(ids, i).to_owned();
    if let Ok(header) = std::env::var("BENCH_HEADER") {
        extra.push_str(&header);
        extra.push_str("\r\n");
    }
    open_with(addr, path, &extra).await
}

/// [`open`] with an `extra` header line (`Name: value`, or empty).
pub(crate) async fn open_with(
    addr: SocketAddr,
    path: &str,
    extra: &str,
) -> std::io::Result<(TcpStream, Vec<u8>)> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(head(addr, path, extra).as_bytes()).await?;
    let mut buf = Vec::with_capacity(1024);
    let mut chunk = [0u8; 1024];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    if !buf.starts_with(b"HTTP/1.1 200") {
        return Err(std::io::Error::other(
            String::from_utf8_lossy(&buf[..buf.len().min(200)]).into_owned(),
        ));
    }
    Ok((stream, buf))
}

async fn streams(addr: SocketAddr, path: &str, count: usize, hold_secs: u64) {
    let ids = std::sync::Arc::new(identities());
    let mut tasks = tokio::task::JoinSet::new();
    let (done_tx, _) = tokio::sync::broadcast::channel::<()>(1);
    let (open_tx, mut open_rx) = tokio::sync::mpsc::channel::<bool>(count.max(1));
    for i in 0..count {
        let (path, open_tx, mut done) = (path.to_owned(), open_tx.clone(), done_tx.subscribe());
        let ids = ids.clone();
        tasks.spawn(async move {
            if i % 500 == 0 {
                tokio::task::yield_now().await;
            }
            match open(addr, &path, &ids, i).await {
                Ok((stream, _)) => {
                    let _ = open_tx.send(true).await;
                    let _ = done.recv().await;
                    drop(stream);
                }
                Err(e) => {
                    eprintln!("stream failed: {e}");
                    let _ = open_tx.send(false).await;
                }
            }
        });
    }
    let (mut ok, mut failed) = (0, 0);
    while ok + failed < count {
        match open_rx.recv().await {
            Some(true) => ok += 1,
            Some(false) => failed += 1,
            None => break,
        }
    }
    println!("open {ok} failed {failed}");
    tokio::time::sleep(Duration::from_secs(hold_secs)).await;
    let _ = done_tx.send(());
    while tasks.join_next().await.is_some() {}
}

async fn latency(addr: SocketAddr, path: &str, count: usize) {
    let ids = std::sync::Arc::new(identities());
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..count {
        let (path, ids) = (path.to_owned(), ids.clone());
        tasks.spawn(async move {
            let mut samples = Vec::new();
            let Ok((mut stream, mut buf)) = open(addr, &path, &ids, i).await else {
                return samples;
            };
            let mut chunk = [0u8; 4096];
            let mut scanned = 0;
            loop {
                // Every complete `{"t":N}` seen so far is one sample.
                while let Some(pos) = find(&buf[scanned..], b"{\"t\":") {
                    let start = scanned + pos + 5;
                    let Some(end) = buf[start..].iter().position(|b| *b == b'}') else {
                        break;
                    };
                    let sent: u128 = std::str::from_utf8(&buf[start..start + end])
                        .ok()
                        .and_then(|s| s.parse().ok())
                        .unwrap_or(0);
                    samples.push(now_ns().saturating_sub(sent) as u64 / 1000);
                    scanned = start + end;
                }
                if find(&buf[scanned..], b"[DONE]").is_some() {
                    return samples;
                }
                match stream.read(&mut chunk).await {
                    Ok(0) | Err(_) => return samples,
                    Ok(n) => buf.extend_from_slice(&chunk[..n]),
                }
            }
        });
    }
    let mut all = Vec::new();
    while let Some(Ok(samples)) = tasks.join_next().await {
        all.extend(samples);
    }
    all.sort_unstable();
    if all.is_empty() {
        println!("samples 0");
        return;
    }
    let pct = |p: f64| all[((all.len() as f64 * p) as usize).min(all.len() - 1)];
    println!(
        "samples {} p50_us {} p99_us {} max_us {}",
        all.len(),
        pct(0.50),
        pct(0.99),
        all[all.len() - 1]
    );
}

pub(crate) fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// COUNT GETs of PATH, one at a time on one keep-alive connection.
async fn sequential(addr: SocketAddr, path: &str, count: usize) -> std::io::Result<()> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let ids = identities();
    let requests: Vec<String> = (0..ids.len().max(1))
        .map(|i| {
            format!(
                "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: dwp-bench\r\n{}\r\n",
                identity(&ids, i)
            )
        })
        .collect();
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    for i in 0..count {
        stream
            .write_all(requests[i % requests.len()].as_bytes())
            .await?;
        buf.clear();
        loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                if !head.starts_with("http/1.1 200") {
                    return Err(std::io::Error::other(head));
                }
                let length: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| std::io::Error::other("no content-length"))?;
                if buf.len() >= end + 4 + length {
                    break;
                }
            }
            let n = stream.read(&mut chunk).await?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            buf.extend_from_slice(&chunk[..n]);
        }
    }
    Ok(())
}
