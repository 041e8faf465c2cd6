//! `dwp-bench feed GATEWAY SECRET FEEDS RATE SECONDS [APPROVE_AFTER_MS]`: the time from an
//! agent's `hitl` event to the `hitl_request` event on its owner's open
//! feed, through the gateway, under load.
//!
//! FEEDS users (one tenant) each open their feed
//! (`GET /api/aura/hitl/events`, token and identity headers as the
//! frontend sends them); once all are open, RATE agent runs a second, for
//! SECONDS, each by the next user in turn, ask the agent for a risky step
//! (`POST /api/aura/test/stream`); each run is read until its `hitl`
//! event, approved through the gateway APPROVE_AFTER_MS later (1000: a
//! person reading it), and read to its end. The latency
//! of a request is when its `hitl_request` reached the owner's feed minus
//! when its `hitl` event reached the run's client. Prints one line of
//! `name value` pairs.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;

/// What one run of the benchmark needs.
pub(crate) struct Bench {
    /// The gateway.
    pub addr: SocketAddr,
    /// The token secret.
    pub secret: String,
    /// Open feeds (one user each).
    pub feeds: usize,
    /// Agent runs started per second.
    pub rate: u64,
    /// For how long.
    pub seconds: u64,
    /// How long after its `hitl` event a run is approved (a person reading it).
    pub approve_after: Duration,
}

const TENANT: &str = "bench-tenant";

/// When a request's `hitl` event reached its run, and its `hitl_request` its feed.
#[derive(Default, Clone, Copy)]
struct Stamps {
    hitl: Option<Instant>,
    feed: Option<Instant>,
}

type Seen = Arc<Mutex<HashMap<String, Stamps>>>;

fn note(seen: &Seen, request: &str, feed: bool) {
    let now = Instant::now();
    let mut seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    let stamps = seen.entry(request.to_owned()).or_default();
    let slot = if feed {
        &mut stamps.feed
    } else {
        &mut stamps.hitl
    };
    slot.get_or_insert(now);
}

/// The `requestId` in an event block's data.
fn request_id(block: &str) -> Option<String> {
    let data = block.lines().find_map(|l| l.strip_prefix("data:"))?;
    let value: serde_json::Value = serde_json::from_str(data.trim()).ok()?;
    let id = value["requestId"]
        .as_str()
        .or_else(|| value["data"]["requestId"].as_str())?;
    Some(id.to_owned())
}

fn event_name(block: &str) -> &str {
    block
        .lines()
        .find_map(|l| l.strip_prefix("event:"))
        .map_or("", str::trim)
}

struct User {
    id: String,
    bearer: String,
}

/// Sends one request on a new connection; the response.
async fn send(
    addr: SocketAddr,
    method: &str,
    path: &str,
    user: &User,
    body: &str,
) -> Result<hyper::Response<Incoming>, String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("{addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .map_err(|e| e.to_string())?;
    tokio::spawn(conn);
    let req = Request::builder()
        .method(method)
        .uri(path)
        .header("host", addr.to_string())
        .header("authorization", &user.bearer)
        .header("x-tenant-id", TENANT)
        .header("x-user-id", &user.id)
        .header("accept", "text/event-stream")
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(body.to_owned())))
        .map_err(|e| e.to_string())?;
    sender.send_request(req).await.map_err(|e| e.to_string())
}

/// Reads event blocks from `body`, calling `each` until it returns false
/// or the body ends.
async fn blocks(body: &mut Incoming, mut each: impl FnMut(&str) -> bool) {
    let mut buffer = String::new();
    while let Some(Ok(frame)) = body.frame().await {
        let Ok(data) = frame.into_data() else {
            continue;
        };
        buffer.push_str(&String::from_utf8_lossy(&data));
        while let Some(end) = buffer.find("\n\n") {
            let block: String = buffer.drain(..end + 2).collect();
            if !block.starts_with(':') && !each(&block) {
                return;
            }
        }
    }
}

/// One agent run by `user`: to its `hitl` event, approved, to its end.
/// Whether it paused.
async fn agent_run(addr: SocketAddr, user: Arc<User>, seen: Seen, approve_after: Duration) -> bool {
    let body = r#"{"prompt":"merge feature/x into main","context":{"from":"bench"}}"#;
    let Ok(res) = send(addr, "POST", "/api/aura/test/stream", &user, body).await else {
        return false;
    };
    if !res.status().is_success() {
        return false;
    }
    let mut body = res.into_body();
    let mut request = None;
    blocks(&mut body, |block| {
        if event_name(block) == "hitl"
            && let Some(id) = request_id(block)
        {
            note(&seen, &id, false);
            request = Some(id);
            return false;
        }
        true
    })
    .await;
    let Some(request) = request else {
        return false;
    };
    tokio::time::sleep(approve_after).await;
    let path = format!("/api/aura/hitl/approve/{request}");
    if let Ok(res) = send(addr, "POST", &path, &user, "").await {
        let _ = res.into_body().collect().await;
    }
    // The rest of the run (the agent goes on once it has the decision).
    while let Some(Ok(_)) = body.frame().await {}
    true
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

/// FEEDS users of the bench tenant, each with a token.
fn users(bench: &Bench) -> Result<Vec<Arc<User>>, String> {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_err(|e| e.to_string())?;
    let tag = format!("{:x}", now.as_nanos());
    Ok((0..bench.feeds.max(1))
        .map(|i| {
            let id = format!("feed{tag}_{i}");
            let claims = dwp_core::token::Claims {
                sub: id.clone(),
                tenant_id: Some(TENANT.into()),
                iat: Some(now.as_secs()),
                exp: now.as_secs() + 3600,
            };
            let bearer = format!(
                "Bearer {}",
                dwp_core::token::issue(&claims, bench.secret.as_bytes())
            );
            Arc::new(User { id, bearer })
        })
        .collect())
}

/// Opens every user's feed and waits until each has its response head;
/// the feeds' readers note each `hitl_request` they see.
async fn open_feeds(
    addr: SocketAddr,
    users: &[Arc<User>],
    seen: &Seen,
) -> Result<tokio::task::JoinSet<()>, String> {
    let (opened_tx, mut opened_rx) = tokio::sync::mpsc::channel::<bool>(users.len());
    let mut feeds = tokio::task::JoinSet::new();
    for user in users {
        let (user, seen, opened) = (user.clone(), seen.clone(), opened_tx.clone());
        feeds.spawn(async move {
            let res = send(addr, "GET", "/api/aura/hitl/events", &user, "").await;
            let Ok(res) = res.map_err(|e| eprintln!("feed: {e}")) else {
                let _ = opened.send(false).await;
                return;
            };
            let ok = res.status().is_success();
            let _ = opened.send(ok).await;
            if !ok {
                eprintln!("feed: {}", res.status());
                return;
            }
            blocks(&mut res.into_body(), |block| {
                if event_name(block) == "hitl_request"
                    && let Some(id) = request_id(block)
                {
                    note(&seen, &id, true);
                }
                true
            })
            .await;
        });
    }
    drop(opened_tx);
    let mut open = 0usize;
    for _ in 0..users.len() {
        match tokio::time::timeout(Duration::from_secs(60), opened_rx.recv()).await {
            Ok(Some(true)) => open += 1,
            Ok(Some(false)) => {}
            _ => break,
        }
    }
    if open < users.len() {
        return Err(format!("only {open} of {} feeds opened", users.len()));
    }
    Ok(feeds)
}

/// Runs the benchmark and prints one summary line.
pub(crate) async fn run(bench: Bench) -> Result<(), String> {
    let users = users(&bench)?;
    let seen: Seen = Arc::default();
    let mut feeds = open_feeds(bench.addr, &users, &seen).await?;

    let total = (bench.rate * bench.seconds) as usize;
    let started = Instant::now();
    let mut runs = tokio::task::JoinSet::new();
    for i in 0..total {
        let due = started + Duration::from_secs_f64(i as f64 / bench.rate.max(1) as f64);
        tokio::time::sleep_until(due.into()).await;
        let user = users[i % users.len()].clone();
        runs.spawn(agent_run(
            bench.addr,
            user,
            seen.clone(),
            bench.approve_after,
        ));
    }
    let mut paused = 0usize;
    while let Some(done) = runs.join_next().await {
        paused += usize::from(done.unwrap_or(false));
    }
    // The last feed events may trail the last runs a little.
    tokio::time::sleep(Duration::from_secs(2)).await;
    feeds.abort_all();

    let seen = seen.lock().unwrap_or_else(|p| p.into_inner());
    let mut micros: Vec<u64> = Vec::new();
    let mut missing = 0usize;
    for stamps in seen.values() {
        match (stamps.hitl, stamps.feed) {
            (Some(hitl), Some(feed)) => {
                micros.push(feed.saturating_duration_since(hitl).as_micros() as u64);
            }
            (Some(_), None) => missing += 1,
            _ => {}
        }
    }
    micros.sort_unstable();
    println!(
        "feeds {} runs {total} paused {paused} measured {} missing {missing} hitl_to_feed_p50_us {} p99_us {} max_us {}",
        users.len(),
        micros.len(),
        pct(&micros, 0.50),
        pct(&micros, 0.99),
        micros.last().copied().unwrap_or(0),
    );
    Ok(())
}
