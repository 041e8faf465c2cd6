//! `dwp-bench hitl ADDR REDIS_URL SECRET DECISIONS CLIENTS [RATE]`: decisions per
//! second through main-service, and the time from sending an approve call to
//! the agent's subscriber receiving the signal.
//!
//! It writes DECISIONS pending requests the way Aura-Platform does (each in
//! its own session), subscribes to all their channels with one pattern
//! subscription, then CLIENTS clients (one keep-alive connection each)
//! approve them, each its own requests: as fast as they can, or, with RATE
//! (decisions per second, overall), decision `i` sent at `i / RATE` seconds
//! after the start (the latency at a given load rather than at saturation).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use futures_util::StreamExt;
use http::Request;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;

fn pct(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

type Times = Arc<Mutex<HashMap<String, Instant>>>;

/// What one benchmark run needs: where, who, how many.
pub(crate) struct Bench {
    /// main-service's address.
    pub addr: SocketAddr,
    /// Redis, where the requests are written and the signals heard.
    pub redis_url: String,
    /// The token secret.
    pub secret: String,
    /// How many decisions.
    pub decisions: usize,
    /// How many clients send them.
    pub clients: usize,
    /// Decisions per second overall (0: as fast as they can).
    pub rate: u64,
}

/// The agent side: when each request's first signal arrived, and how many
/// signals each got (exactly one is right).
#[derive(Default, Clone)]
struct Heard {
    received: Times,
    deliveries: Arc<Mutex<HashMap<String, u32>>>,
}

impl Heard {
    fn note(&self, id: &str, at: Instant) {
        self.received
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_owned())
            .or_insert(at);
        *self
            .deliveries
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(id.to_owned())
            .or_default() += 1;
    }
}

/// Runs the benchmark and prints one summary line.
pub(crate) async fn run(bench: Bench) -> Result<(), String> {
    let run_id = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let client =
        redis::Client::open(bench.redis_url.as_str()).map_err(|e| format!("Redis URL: {e}"))?;
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .map_err(|e| format!("Redis: {e}"))?;
    write_requests(&mut conn, &run_id, bench.decisions).await?;
    let heard = Heard::default();
    let (stop_listening, stopped) = tokio::sync::oneshot::channel::<()>();
    let listener = listen(&client, &run_id, heard.clone(), stopped).await?;
    let sent: Times = Arc::default();
    let (ok, mut http, elapsed) = approve_all(&bench, &run_id, &sent).await;
    // Signals still on their way, and any second delivery, arrive by then.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_listening.send(());
    let _ = listener.await;
    let deliveries = heard.deliveries.lock().unwrap_or_else(|p| p.into_inner());
    let twice = deliveries.values().filter(|n| **n > 1).count();
    let missing = (0..bench.decisions)
        .filter(|i| !deliveries.contains_key(&format!("req_b{run_id}_{i}")))
        .count();

    let sent = sent.lock().unwrap_or_else(|p| p.into_inner());
    let received = heard.received.lock().unwrap_or_else(|p| p.into_inner());
    let mut to_signal: Vec<u64> = sent
        .iter()
        .filter_map(|(id, t0)| {
            received
                .get(id)
                .map(|t1| t1.duration_since(*t0).as_micros() as u64)
        })
        .collect();
    to_signal.sort_unstable();
    http.sort_unstable();
    if to_signal.is_empty() || http.is_empty() {
        println!("decisions_ok {ok} signals 0 missing {missing} delivered_twice {twice}");
        return Ok(());
    }
    println!(
        "decisions_ok {ok} signals {} missing {missing} delivered_twice {twice} decisions_per_s {:.0} approve_to_signal_p50_us {} p99_us {} http_p50_us {} http_p99_us {}",
        to_signal.len(),
        ok as f64 / elapsed.as_secs_f64(),
        pct(&to_signal, 0.50),
        pct(&to_signal, 0.99),
        pct(&http, 0.50),
        pct(&http, 0.99),
    );
    Ok(())
}

/// Writes the pending requests the way Aura-Platform does, each in its own
/// session.
async fn write_requests(
    conn: &mut redis::aio::MultiplexedConnection,
    run_id: &str,
    decisions: usize,
) -> Result<(), String> {
    let mut pipe = redis::pipe();
    for i in 0..decisions {
        let (request_id, session_id) =
            (format!("req_b{run_id}_{i}"), format!("bench_{run_id}_{i}"));
        let request = serde_json::json!({
            "requestId": request_id, "sessionId": session_id, "actionType": "bench",
            "context": {}, "status": "pending", "userId": "bench-user", "tenantId": "bench-tenant",
            "createdAt": "2026-01-01T00:00:00Z",
        });
        pipe.cmd("SET")
            .arg(format!("hitl:request:{request_id}"))
            .arg(request.to_string())
            .arg("EX")
            .arg(600)
            .ignore();
    }
    pipe.query_async::<()>(conn)
        .await
        .map_err(|e| format!("writing the requests: {e}"))
}

/// The agent side: one pattern subscription on the run's channels.
async fn listen(
    client: &redis::Client,
    run_id: &str,
    heard: Heard,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) -> Result<tokio::task::JoinHandle<()>, String> {
    let mut pubsub = client
        .get_async_pubsub()
        .await
        .map_err(|e| format!("subscriber: {e}"))?;
    pubsub
        .psubscribe(format!("hitl:channel:bench_{run_id}_*"))
        .await
        .map_err(|e| format!("psubscribe: {e}"))?;
    Ok(tokio::spawn(async move {
        let mut messages = pubsub.on_message();
        loop {
            let msg = tokio::select! {
                msg = messages.next() => msg,
                _ = &mut stopped => return,
            };
            let Some(msg) = msg else { return };
            let now = Instant::now();
            let payload: String = msg.get_payload().unwrap_or_default();
            let signal: serde_json::Value = serde_json::from_str(&payload).unwrap_or_default();
            if let Some(id) = signal["requestId"].as_str() {
                heard.note(id, now);
            }
        }
    }))
}

/// Every client connects, then approves its own share of the requests.
/// Answers the approvals that succeeded, every call's time (microseconds)
/// and how long the whole took.
async fn approve_all(bench: &Bench, run_id: &str, sent: &Times) -> (usize, Vec<u64>, Duration) {
    let now_secs = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let claims = dwp_core::token::Claims {
        sub: "bench-user".into(),
        tenant_id: Some("bench-tenant".into()),
        iat: Some(now_secs),
        exp: now_secs + 3600,
    };
    let token = format!(
        "Bearer {}",
        dwp_core::token::issue(&claims, bench.secret.as_bytes())
    );
    // Every client connects first; the clock starts when all are connected,
    // so that a thousand handshakes are not counted as decision latency.
    let connected = Arc::new(tokio::sync::Barrier::new(bench.clients + 1));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..bench.clients {
        let client = Client {
            addr: bench.addr,
            token: token.clone(),
            run_id: run_id.to_owned(),
            sent: sent.clone(),
        };
        let connected = connected.clone();
        let (decisions, clients, rate) = (bench.decisions, bench.clients, bench.rate);
        workers.spawn(async move {
            let Some(mut sender) = client.connect().await else {
                connected.wait().await;
                return (0, Vec::new());
            };
            connected.wait().await;
            let started = Instant::now();
            let (mut ok, mut http) = (0usize, Vec::new());
            for i in (worker..decisions).step_by(clients) {
                if rate > 0 {
                    let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let Some((success, micros)) = client.approve(&mut sender, i).await else {
                    break;
                };
                http.push(micros);
                ok += usize::from(success);
            }
            (ok, http)
        });
    }
    connected.wait().await;
    let started = Instant::now();
    let (mut ok, mut http) = (0, Vec::new());
    while let Some(Ok((n, samples))) = workers.join_next().await {
        ok += n;
        http.extend(samples);
    }
    (ok, http, started.elapsed())
}

/// One approving client.
struct Client {
    addr: SocketAddr,
    token: String,
    run_id: String,
    sent: Times,
}

type Sender = hyper::client::conn::http1::SendRequest<Empty<Bytes>>;

impl Client {
    async fn connect(&self) -> Option<Sender> {
        let stream = match tokio::net::TcpStream::connect(self.addr).await {
            Ok(stream) => stream,
            Err(e) => {
                eprintln!("main-service at {}: {e}", self.addr);
                return None;
            }
        };
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .ok()?;
        tokio::spawn(conn);
        Some(sender)
    }

    /// Approves request `i`: whether it succeeded and how long it took.
    async fn approve(&self, sender: &mut Sender, i: usize) -> Option<(bool, u64)> {
        let request_id = format!("req_b{}_{i}", self.run_id);
        let req = Request::post(format!("/aura/hitl/approve/{request_id}"))
            .header("host", self.addr.to_string())
            .header("authorization", &self.token)
            .header("x-tenant-id", "bench-tenant")
            .header("x-user-id", "bench-user")
            .body(Empty::<Bytes>::new())
            .ok()?;
        let t0 = Instant::now();
        self.sent
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(request_id, t0);
        let res = sender.send_request(req).await.ok()?;
        let status = res.status();
        let _ = res.into_body().collect().await;
        Some((status.is_success(), t0.elapsed().as_micros() as u64))
    }
}
