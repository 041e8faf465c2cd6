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

/// Runs the benchmark and prints one summary line.
pub async fn run(
    addr: SocketAddr,
    redis_url: &str,
    secret: &str,
    decisions: usize,
    clients: usize,
    rate: u64,
) {
    let run_id = format!(
        "{:x}",
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    );
    let client = redis::Client::open(redis_url).expect("a Redis URL");
    let mut conn = client
        .get_multiplexed_async_connection()
        .await
        .expect("Redis is up");
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
    let () = pipe.query_async(&mut conn).await.expect("requests written");

    // The agent side: one pattern subscription, receive time per request and
    // how many signals each request got (exactly one is right).
    let received: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let deliveries: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let (stop_listening, mut stopped) = tokio::sync::oneshot::channel::<()>();
    let mut pubsub = client.get_async_pubsub().await.expect("subscriber");
    pubsub
        .psubscribe(format!("hitl:channel:bench_{run_id}_*"))
        .await
        .expect("psubscribe");
    let listener = {
        let (received, deliveries) = (received.clone(), deliveries.clone());
        tokio::spawn(async move {
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
                    received
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(id.to_owned())
                        .or_insert(now);
                    *deliveries
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .entry(id.to_owned())
                        .or_default() += 1;
                }
            }
        })
    };

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
        dwp_core::token::issue(&claims, secret.as_bytes())
    );
    let sent: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    // Every client connects first; the clock starts when all are connected,
    // so that a thousand handshakes are not counted as decision latency.
    let connected = Arc::new(tokio::sync::Barrier::new(clients + 1));
    let mut workers = tokio::task::JoinSet::new();
    for worker in 0..clients {
        let (token, sent, run_id) = (token.clone(), sent.clone(), run_id.clone());
        let connected = connected.clone();
        workers.spawn(async move {
            let stream = tokio::net::TcpStream::connect(addr)
                .await
                .expect("main-service is up");
            let _ = stream.set_nodelay(true);
            let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
                .await
                .expect("handshake");
            tokio::spawn(conn);
            connected.wait().await;
            let started = Instant::now();
            let (mut ok, mut http) = (0usize, Vec::new());
            for i in (worker..decisions).step_by(clients) {
                if rate > 0 {
                    let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
                    tokio::time::sleep_until(due.into()).await;
                }
                let request_id = format!("req_b{run_id}_{i}");
                let req = Request::post(format!("/aura/hitl/approve/{request_id}"))
                    .header("host", addr.to_string())
                    .header("authorization", &token)
                    .header("x-tenant-id", "bench-tenant")
                    .header("x-user-id", "bench-user")
                    .body(Empty::<Bytes>::new())
                    .expect("request");
                let t0 = Instant::now();
                sent.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .insert(request_id, t0);
                let Ok(res) = sender.send_request(req).await else {
                    break;
                };
                let status = res.status();
                let _ = res.into_body().collect().await;
                http.push(t0.elapsed().as_micros() as u64);
                if status.is_success() {
                    ok += 1;
                }
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
    let elapsed = started.elapsed();
    // Signals still on their way, and any second delivery, arrive by then.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let _ = stop_listening.send(());
    let _ = listener.await;
    let deliveries = deliveries.lock().unwrap_or_else(|p| p.into_inner());
    let twice = deliveries.values().filter(|n| **n > 1).count();
    let missing = (0..decisions)
        .filter(|i| !deliveries.contains_key(&format!("req_b{run_id}_{i}")))
        .count();

    let sent = sent.lock().unwrap_or_else(|p| p.into_inner());
    let received = received.lock().unwrap_or_else(|p| p.into_inner());
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
        return;
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
}
