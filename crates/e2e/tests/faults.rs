//! What the stack survives: Redis and PostgreSQL stopped and restarted under
//! the running processes. Each test starts private servers of its own
//! ([`e2e::servers`]), so stopping them disturbs no other test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed unwrap is a failed test, and a scenario reads top to bottom"
)]

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::servers::{PrivatePostgres, PrivateRedis, SENTINEL_MASTER, SentinelGroup};
use e2e::*;
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};

fn assert_alive(stack: &mut Stack) {
    for (n, child) in stack.children.iter_mut().enumerate() {
        assert!(
            child.try_wait().unwrap().is_none(),
            "process {n} exited during the outage"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_stops_and_restarts_while_50_streams_wait_and_decisions_are_made() {
    let mut redis = PrivateRedis::start();
    let mut stack = Stack::start(Options {
        users: &["fay"],
        redis_url: Some(redis.url()),
        aura_env: ROBUST_AGENT,
        ..Options::default()
    })
    .await;
    let fay = stack.user("fay");
    let token = stack.login(&fay).await;
    let streams = paused_runs(&stack, &token, &fay, 50, "delete the old mail").await;
    let ids: Vec<String> = streams.iter().map(|(_, id)| id.clone()).collect();

    // One decider approves the runs one after another through the gateway,
    // retrying while the answer is 503 (a retry whose first answer was lost
    // with the connection finds it made: 200 alreadyProcessed).
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let decider = tokio::spawn(approve_all(
        stack.gateway,
        token.clone(),
        fay.clone(),
        ids,
        acknowledged.clone(),
    ));

    while acknowledged.load(Ordering::SeqCst) < 15 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    tokio::task::block_in_place(|| redis.stop());
    let stopped = Instant::now();
    let acknowledged_before = acknowledged.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (status, body, _) = call(stack.main, "GET", "/main/health/ready", &[], "").await;
    assert_eq!(status, 503, "readiness during the outage: {body}");
    let (status, _, _) = call(stack.gateway, "GET", "/health", &[], "").await;
    assert_eq!(status, 200, "the gateway stays live");
    assert_alive(&mut stack);
    assert!(
        acknowledged.load(Ordering::SeqCst) <= acknowledged_before + 1,
        "decisions acknowledged while Redis was down"
    );
    tokio::time::sleep(Duration::from_secs(1)).await;
    tokio::task::block_in_place(|| redis.restart());
    let outage = stopped.elapsed();

    let refusals = tokio::time::timeout(Duration::from_secs(30), decider)
        .await
        .expect("every decision is made once Redis is back")
        .unwrap();
    assert_eq!(acknowledged.load(Ordering::SeqCst), 50);
    assert!(
        !refusals.is_empty(),
        "no decision was refused: the outage was missed"
    );
    let slowest = refusals.iter().max().unwrap();
    eprintln!(
        "Redis down {outage:?}: {} calls refused with 503, slowest {slowest:?}; {} decisions acknowledged before the stop",
        refusals.len(),
        acknowledged_before
    );
    assert!(
        *slowest < Duration::from_secs(2),
        "a 503 took {slowest:?} (outage {outage:?})"
    );

    // Every acknowledged decision was delivered: each run resumes to its end.
    for (mut stream, request_id) in streams {
        let rest = stream.rest().await;
        assert_eq!(kinds(&rest), AFTER_APPROVAL, "{request_id}");
    }
    assert_alive(&mut stack);

    // And the stack works as before, without a restart of our services.
    let (status, body, _) = call(stack.main, "GET", "/main/health/ready", &[], "").await;
    assert_eq!(status, 200, "{body}");
    let mut stream = stack.stream(Some(&token), &fay, "merge it").await;
    let (_, request_id) = stream.until_hitl().await;
    let (status, _) = stack.approve(&token, &fay, &request_id).await;
    assert_eq!(status, 200);
    assert_eq!(kinds(&stream.rest().await), AFTER_APPROVAL);
}

/// `n` runs of `user` opened through the gateway, each paused at its HITL
/// request: (stream, request id).
async fn paused_runs(
    stack: &Stack,
    token: &str,
    user: &str,
    n: usize,
    prompt: &str,
) -> Vec<(Stream, String)> {
    let mut streams = Vec::new();
    for _ in 0..n {
        let mut stream = stack.stream(Some(token), user, prompt).await;
        let (_, request_id) = stream.until_hitl().await;
        streams.push((stream, request_id));
    }
    streams
}

/// Approves `ids` one after another through the gateway, retrying every
/// 100 ms while the answer is 503; returns how long each 503 took.
///
/// A 429 is waited out for its `Retry-After`, as a client would: right
/// after Redis comes back, the decisions can outrun the agents' new
/// subscriptions, and past `HITL_MAX_UNDELIVERED_PER_USER` parked ones
/// the service asks the caller to come back (the decision is not made, so
/// nothing acknowledged is lost).
async fn approve_all(
    gateway: std::net::SocketAddr,
    token: String,
    user: String,
    ids: Vec<String>,
    acknowledged: Arc<AtomicUsize>,
) -> Vec<Duration> {
    let auth = format!("Bearer {token}");
    let headers = [
        ("authorization", auth.as_str()),
        ("x-tenant-id", "tenant1"),
        ("x-user-id", user.as_str()),
    ];
    let mut refusals = Vec::new();
    for id in ids {
        loop {
            let path = format!("/api/aura/hitl/approve/{id}");
            let sent = Instant::now();
            let (status, body, answer) = call(gateway, "POST", &path, &headers, "").await;
            match status {
                200 => {
                    acknowledged.fetch_add(1, Ordering::SeqCst);
                    break;
                }
                503 => {
                    assert!(body.contains("\"success\":false"), "{body}");
                    refusals.push(sent.elapsed());
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                429 => {
                    assert!(body.contains("\"errorCode\":\"E1001\""), "{body}");
                    let wait = answer
                        .get("retry-after")
                        .and_then(|v| v.to_str().ok()?.parse::<u64>().ok())
                        .unwrap_or_else(|| panic!("{id}: a 429 without Retry-After"));
                    eprintln!("{id}: 429, retrying after {wait} s");
                    tokio::time::sleep(Duration::from_secs(wait)).await;
                }
                other => panic!("{id}: {other} {body}"),
            }
        }
    }
    refusals
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_redis_primary_dies_mid_decisions_and_sentinel_fails_over_losing_nothing() {
    let mut group = SentinelGroup::start();
    let sentinels = group.sentinels();
    let first_primary = group.primary.port();
    let redis_env = [
        ("REDIS_SENTINELS", sentinels.as_str()),
        ("REDIS_SENTINEL_MASTER", SENTINEL_MASTER),
        // An acknowledged decision is on the replica too.
        ("REDIS_MIN_REPLICAS", "1"),
    ];
    let mut stack = Stack::start(Options {
        users: &["gus"],
        redis_url: Some(group.primary.url()),
        redis_env: &redis_env,
        aura_env: ROBUST_AGENT,
        ..Options::default()
    })
    .await;
    let gus = stack.user("gus");
    let token = stack.login(&gus).await;
    let streams = paused_runs(&stack, &token, &gus, 30, "merge the branch").await;
    let ids: Vec<String> = streams.iter().map(|(_, id)| id.clone()).collect();
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let decider = tokio::spawn(approve_all(
        stack.gateway,
        token.clone(),
        gus.clone(),
        ids.clone(),
        acknowledged.clone(),
    ));
    while acknowledged.load(Ordering::SeqCst) < 10 {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The primary crashes mid-decisions: no shutdown, no last sync.
    tokio::task::block_in_place(|| group.primary.kill());
    let killed = Instant::now();
    let deadline = killed + Duration::from_secs(30);
    while group.primary_port() == Some(first_primary) {
        assert!(Instant::now() < deadline, "the sentinel never failed over");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let failover = killed.elapsed();
    assert_eq!(group.primary_port(), Some(group.replica.port()));
    // The dead node comes back and the sentinel makes it the new primary's
    // replica: decisions are acknowledged again once it holds them.
    tokio::task::block_in_place(|| group.primary.restart());
    let refusals = tokio::time::timeout(Duration::from_secs(60), decider)
        .await
        .expect("every decision is acknowledged after the fail-over")
        .unwrap();
    assert!(
        !refusals.is_empty(),
        "no decision was refused: the fail-over was missed"
    );
    eprintln!(
        "fail-over after {failover:?}; {} calls refused with 503 meanwhile, slowest {:?}",
        refusals.len(),
        refusals.iter().max()
    );

    // Delivered: every run resumes, once, to its end.
    for (mut stream, request_id) in streams {
        let rest = stream.rest().await;
        assert_eq!(kinds(&rest), AFTER_APPROVAL, "{request_id}");
    }
    // Audited once: one row per decision, none missing.
    let listed = ids
        .iter()
        .map(|id| format!("'{id}'"))
        .collect::<Vec<_>>()
        .join(",");
    let sql = format!(
        "SELECT count(*) FROM hitl_decision WHERE request_id IN ({listed}) AND decision = 'approved'"
    );
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let rows = count(&stack.db.url, &sql).await;
        if rows == ids.len() as i64 {
            break;
        }
        assert!(rows < ids.len() as i64, "a decision audited twice: {rows}");
        assert!(Instant::now() < deadline, "{rows} of {} audited", ids.len());
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let total = count(&stack.db.url, "SELECT count(*) FROM hitl_decision").await;
    assert_eq!(total, ids.len() as i64, "one audit row per decision");
    assert_alive(&mut stack);

    // The services found the new primary by themselves: a new run works.
    let mut stream = stack.stream(Some(&token), &gus, "merge it too").await;
    let (_, request_id) = stream.until_hitl().await;
    let (status, body) = stack.approve(&token, &gus, &request_id).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(kinds(&stream.rest().await), AFTER_APPROVAL);
}

async fn count(db_url: &str, sql: &str) -> i64 {
    let db = Database::connect(db_url).await.unwrap();
    let row = db
        .query_one_raw(Statement::from_string(DbBackend::Postgres, sql))
        .await
        .unwrap()
        .unwrap();
    let n = row.try_get_by_index::<i64>(0).unwrap();
    db.close().await.unwrap();
    n
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_stops_and_restarts_while_streams_are_recorded_and_nothing_is_lost() {
    let postgres = PrivatePostgres::start();
    let mut stack = Stack::start(Options {
        users: &["gus"],
        aura_env: ROBUST_AGENT,
        admin_url: Some(postgres.admin_url()),
        ..Options::default()
    })
    .await;
    let gus = stack.user("gus");
    let token = stack.login(&gus).await;
    let mut waiting = Vec::new();
    let mut task_ids = HashSet::new();
    for _ in 0..20 {
        let mut stream = stack.stream(Some(&token), &gus, "merge the branch").await;
        task_ids.insert(stream.task_id.clone().unwrap());
        let (_, request_id) = stream.until_hitl().await;
        waiting.push((stream, request_id));
    }

    tokio::task::block_in_place(|| postgres.stop());

    // With the database gone the streams, the decisions and new runs go on.
    for (mut stream, request_id) in waiting {
        let (status, body) = stack.approve(&token, &gus, &request_id).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(kinds(&stream.rest().await), AFTER_APPROVAL, "{request_id}");
    }
    for _ in 0..10 {
        let mut stream = stack.stream(Some(&token), &gus, "summarise my inbox").await;
        task_ids.insert(stream.task_id.clone().unwrap());
        assert_eq!(kinds(&stream.rest().await), PLAIN_RUN);
    }
    let (status, body, _) = call(stack.main, "GET", "/main/health/ready", &[], "").await;
    assert_eq!(status, 200, "readiness needs Redis only: {body}");
    assert!(body.contains("\"postgres\":\"DOWN\""), "{body}");
    assert_alive(&mut stack);

    tokio::task::block_in_place(|| postgres.restart());
    let restarted = Instant::now();

    // Once it is back, every run is a COMPLETED row with both plan steps and
    // every decision has its audit row.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let completed = count(
            &stack.db.url,
            "SELECT count(*) FROM agent_task WHERE status = 'COMPLETED' \
             AND jsonb_array_length(plan_steps::jsonb) = 2",
        )
        .await;
        let decisions = count(&stack.db.url, "SELECT count(*) FROM hitl_decision").await;
        if completed == 30 && decisions == 20 {
            eprintln!(
                "PostgreSQL back: 30 runs and 20 decisions made during the outage recorded {:?} after the restart",
                restarted.elapsed()
            );
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart: {completed} of 30 runs recorded, {decisions} of 20 decisions"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = count(
        &stack.db.url,
        &format!(
            "SELECT count(*) FROM agent_task WHERE task_id IN ({})",
            task_ids
                .iter()
                .map(|id| format!("'{id}'"))
                .collect::<Vec<_>>()
                .join(",")
        ),
    )
    .await;
    assert_eq!(listed, 30, "the rows are the runs the clients saw");
    assert_alive(&mut stack);
}

/// An agent that answers every stream with one event and then stays silent
/// for ever; `open` counts the TCP connections it holds.
async fn endless_agent() -> (std::net::SocketAddr, Arc<AtomicUsize>) {
    use bytes::Bytes;
    use futures_util::StreamExt;
    use http_body_util::StreamBody;
    use hyper::body::Frame;
    use hyper_util::rt::TokioIo;

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let open = Arc::new(AtomicUsize::new(0));
    let counter = open.clone();
    tokio::spawn(async move {
        while let Ok((tcp, _)) = listener.accept().await {
            counter.fetch_add(1, Ordering::SeqCst);
            let counter = counter.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(|_req| async {
                    let first = Frame::data(Bytes::from_static(
                        b"id: 1\nevent: start\ndata: {\"type\": \"start\"}\n\n",
                    ));
                    let events = futures_util::stream::once(async move {
                        Ok::<_, std::convert::Infallible>(first)
                    })
                    .chain(futures_util::stream::pending());
                    http::Response::builder()
                        .header("content-type", "text/event-stream")
                        .body(StreamBody::new(events))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tcp), service)
                    .await;
                counter.fetch_sub(1, Ordering::SeqCst);
            });
        }
    });
    (addr, open)
}

/// Opens `n` streams through the gateway and reads the first event of each.
async fn open_streams(gateway: std::net::SocketAddr, n: usize) -> Vec<Stream> {
    futures_util::future::join_all((0..n).map(|i| async move {
        let mut stream = Stream::open(gateway, None, &format!("user{i}"), "hello").await;
        assert_eq!(stream.status, 200);
        let first = stream.next().await.expect("the first event");
        assert_eq!(kind(&first), "start");
        stream
    }))
    .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_clients_leave_mid_stream_and_the_gateway_lets_go_of_everything() {
    let _ = rlimit::increase_nofile_limit(u64::MAX);
    let (agent, open) = endless_agent().await;
    // Above the default of 500 connections per upstream.
    let gateway = Gateway::start(agent, &[("GATEWAY_POOL_MAX_CONNECTIONS", "2000")]).await;

    // Warm-up: one round of 100, so that the baseline has the runtime's and
    // the allocator's steady state rather than a cold process.
    drop(open_streams(gateway.addr, 100).await);
    settle(&gateway, &open).await;
    let (rss_before, fds_before) = (gateway.rss_kib(), gateway.open_fds());

    let streams = open_streams(gateway.addr, 1000).await;
    assert_eq!(open.load(Ordering::SeqCst), 1000);
    assert_eq!(gateway.metric("gateway_open_streams").await, Some(1000.0));
    let rss_peak = gateway.rss_kib();

    drop(streams);
    let left = Instant::now();
    let released = settle(&gateway, &open).await;
    assert!(
        released < Duration::from_secs(5),
        "the agent saw every connection closed after {released:?}"
    );

    // Memory back within 10 % of where it started (the allocator hands
    // freed pages back on its decay timer).
    let deadline = left + Duration::from_secs(30);
    let rss_after = loop {
        let rss = gateway.rss_kib();
        if rss * 10 <= rss_before * 11 || Instant::now() > deadline {
            break rss;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    };
    let fds_after = gateway.open_fds();
    eprintln!(
        "1,000 clients left: all agent connections closed in {released:?}; \
         RSS {rss_before} KiB before, {rss_peak} KiB with 1,000 streams, {rss_after} KiB after ({:.1} %); \
         fds {fds_before} before, {fds_after} after",
        (rss_after as f64 / rss_before as f64 - 1.0) * 100.0
    );
    assert!(
        rss_after * 10 <= rss_before * 11,
        "RSS {rss_after} KiB after, {rss_before} KiB before"
    );
    assert!(
        fds_after <= fds_before,
        "fds {fds_after} after, {fds_before} before"
    );
}

/// Waits until the agent holds no connection and the gateway's gauge is 0;
/// how long that took.
async fn settle(gateway: &Gateway, open: &AtomicUsize) -> Duration {
    let started = Instant::now();
    loop {
        if open.load(Ordering::SeqCst) == 0
            && gateway.metric("gateway_open_streams").await == Some(0.0)
        {
            return started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(30),
            "{} agent connections still open",
            open.load(Ordering::SeqCst)
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
