//! What the stack survives: Redis and PostgreSQL stopped and restarted under
//! the running processes. Each test starts private servers of its own
//! ([`e2e::servers`]), so stopping them disturbs no other test.

use std::collections::HashSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use e2e::servers::{PrivatePostgres, PrivateRedis};
use e2e::*;
use sea_orm::{ConnectionTrait, Database, DbBackend, Statement};
use tokio::sync::Mutex;

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
        ..Options::default()
    })
    .await;
    let token = stack.login("fay").await;
    let mut streams = Vec::new();
    for _ in 0..50 {
        let mut stream = stack
            .stream(Some(&token), "fay", "delete the old mail")
            .await;
        let (_, request_id) = stream.until_hitl().await;
        streams.push((stream, request_id));
    }
    let ids: Vec<String> = streams.iter().map(|(_, id)| id.clone()).collect();

    // One decider approves the runs one after another through the gateway,
    // retrying every 100 ms while the answer is 503.
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let refusals = Arc::new(Mutex::new(Vec::<Duration>::new()));
    let decider = {
        let (gateway, token) = (stack.gateway, token.clone());
        let (acknowledged, refusals) = (acknowledged.clone(), refusals.clone());
        tokio::spawn(async move {
            let auth = format!("Bearer {token}");
            let headers = [
                ("authorization", auth.as_str()),
                ("x-tenant-id", "tenant1"),
                ("x-user-id", "fay"),
            ];
            let mut outcomes = Vec::new();
            for id in ids {
                let mut refused_before = false;
                loop {
                    let path = format!("/api/aura/hitl/approve/{id}");
                    let sent = Instant::now();
                    let (status, body, _) = call(gateway, "POST", &path, &headers, "").await;
                    match status {
                        200 => {
                            acknowledged.fetch_add(1, Ordering::SeqCst);
                            outcomes.push((id, 200));
                            break;
                        }
                        503 => {
                            assert!(body.contains("\"success\":false"), "{body}");
                            refusals.lock().await.push(sent.elapsed());
                            refused_before = true;
                            tokio::time::sleep(Duration::from_millis(100)).await;
                        }
                        // Stored, but the reply was lost with the connection:
                        // the retry finds the decision already made.
                        409 if refused_before => {
                            outcomes.push((id, 409));
                            break;
                        }
                        other => panic!("{id}: {other} {body}"),
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }
            outcomes
        })
    };

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

    let outcomes = tokio::time::timeout(Duration::from_secs(30), decider)
        .await
        .expect("every decision is made once Redis is back")
        .unwrap();
    assert_eq!(outcomes.len(), 50);
    let refusals = refusals.lock().await.clone();
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
    let mut stream = stack.stream(Some(&token), "fay", "merge it").await;
    let (_, request_id) = stream.until_hitl().await;
    let (status, _) = stack.approve(&token, "fay", &request_id).await;
    assert_eq!(status, 200);
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
        admin_url: Some(postgres.admin_url()),
        ..Options::default()
    })
    .await;
    let token = stack.login("gus").await;
    let mut waiting = Vec::new();
    let mut task_ids = HashSet::new();
    for _ in 0..20 {
        let mut stream = stack.stream(Some(&token), "gus", "merge the branch").await;
        task_ids.insert(stream.task_id.clone().unwrap());
        let (_, request_id) = stream.until_hitl().await;
        waiting.push((stream, request_id));
    }

    tokio::task::block_in_place(|| postgres.stop());

    // With the database gone the streams, the decisions and new runs go on.
    for (mut stream, request_id) in waiting {
        let (status, body) = stack.approve(&token, "gus", &request_id).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(kinds(&stream.rest().await), AFTER_APPROVAL, "{request_id}");
    }
    for _ in 0..10 {
        let mut stream = stack
            .stream(Some(&token), "gus", "summarise my inbox")
            .await;
        task_ids.insert(stream.task_id.clone().unwrap());
        assert_eq!(kinds(&stream.rest().await), PLAIN_RUN);
    }
    let (status, body, _) = call(stack.main, "GET", "/main/health/ready", &[], "").await;
    assert_eq!(status, 200, "readiness needs Redis only: {body}");
    assert!(body.contains("\"postgres\":\"DOWN\""), "{body}");
    assert_alive(&mut stack);

    tokio::task::block_in_place(|| postgres.restart());

    // Once it is back, every run is a COMPLETED row with both plan steps and
    // every decision has its audit row.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let completed = count(
            &stack.db_url,
            "SELECT count(*) FROM agent_task WHERE status = 'COMPLETED' \
             AND jsonb_array_length(plan_steps::jsonb) = 2",
        )
        .await;
        let decisions = count(&stack.db_url, "SELECT count(*) FROM hitl_decision").await;
        if completed == 30 && decisions == 20 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "after the restart: {completed} of 30 runs recorded, {decisions} of 20 decisions"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let listed = count(
        &stack.db_url,
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
