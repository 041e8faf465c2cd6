//! Resumable agent streams through the real binaries: a paused run whose
//! client drops is resumed (GET and POST forms) on another gateway replica
//! with exactly the missed events, the agent called once; two followers; a
//! stop from the other replica; a stream without the opt-in still cancels
//! the agent within a second.

#![allow(clippy::unwrap_used, clippy::expect_used, reason = "test code")]

use std::time::{Duration, Instant};

use e2e::{Gateway, Stack, call, kind};
use serde_json::Value;

/// `GET /sim/runs` at aura-sim: (started, cancelled).
async fn runs(stack: &Stack) -> (u64, u64) {
    let (_, text, _) = call(stack.aura, "GET", "/sim/runs", &[], "").await;
    let runs: Value = serde_json::from_str(&text).unwrap();
    (
        runs["started"].as_u64().unwrap(),
        runs["cancelled"].as_u64().unwrap(),
    )
}

/// A second gateway replica in front of the same agent, main-service and Redis.
async fn replica(stack: &Stack) -> Gateway {
    replica_on(stack, &stack.redis_url).await
}

/// [`replica`] with its Redis at `redis_url`.
async fn replica_on(stack: &Stack, redis_url: &str) -> Gateway {
    let main = format!("http://{}", stack.main);
    Gateway::start(
        stack.aura,
        &[
            ("GATEWAY_AUTH", "on"),
            ("JWT_SECRET", e2e::SECRET),
            ("REDIS_URL", redis_url),
            ("MAIN_SERVICE_URI", &main),
        ],
    )
    .await
}

/// An agent stream request through `gateway` with `extra` headers.
async fn open(
    gateway: std::net::SocketAddr,
    stack: &Stack,
    token: &str,
    user: &str,
    prompt: &str,
    extra: &[(&str, &str)],
) -> (u16, Option<String>, testkit::SseBody) {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("content-type", "application/json"),
        ("accept", "text/event-stream"),
        ("x-tenant-id", stack.tenant.as_str()),
        ("x-user-id", user),
        ("authorization", auth.as_str()),
    ];
    headers.extend_from_slice(extra);
    let body = serde_json::json!({"prompt": prompt}).to_string();
    let res = testkit::send(gateway, "POST", "/api/aura/test/stream", &headers, body)
        .await
        .unwrap();
    let task = res
        .headers()
        .get("x-dwp-task-id")
        .map(|v| v.to_str().unwrap().to_owned());
    (
        res.status().as_u16(),
        task,
        testkit::SseBody::new(res.into_body()),
    )
}

/// `GET /api/streams/{task}` through `gateway`, from after `last`.
async fn follow(
    gateway: std::net::SocketAddr,
    token: &str,
    task: &str,
    last: Option<&str>,
) -> (u16, testkit::SseBody) {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("accept", "text/event-stream"),
    ];
    if let Some(last) = last {
        headers.push(("last-event-id", last));
    }
    let res = testkit::send(
        gateway,
        "GET",
        &format!("/api/streams/{task}"),
        &headers,
        String::new(),
    )
    .await
    .unwrap();
    (
        res.status().as_u16(),
        testkit::SseBody::new(res.into_body()),
    )
}

/// The blocks up to and including the first `hitl` event.
async fn until_hitl(body: &mut testkit::SseBody) -> Vec<String> {
    let mut seen = Vec::new();
    loop {
        let block = body.next().await.expect("a hitl event before the end");
        seen.push(block.clone());
        if kind(&block) == "hitl" {
            return seen;
        }
    }
}

fn id_of(block: &str) -> &str {
    block
        .lines()
        .find_map(|l| l.strip_prefix("id: "))
        .expect("every event of a resumable stream has an id")
}

fn request_id(block: &str) -> String {
    let data = block
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap();
    let data: Value = serde_json::from_str(data).unwrap();
    data["data"]["requestId"].as_str().unwrap().to_owned()
}

#[tokio::test]
async fn a_paused_run_whose_client_drops_is_resumed_on_another_replica_and_the_agent_runs_once() {
    let stack = Stack::start(e2e::Options {
        users: &["rosa"],
        ..e2e::Options::default()
    })
    .await;
    let other = replica(&stack).await;
    let rosa = stack.user("rosa");
    let token = stack.login(&rosa).await;
    let (before, _) = runs(&stack).await;

    let (status, task, mut laptop) = open(
        stack.gateway,
        &stack,
        &token,
        &rosa,
        "merge the release branch",
        &[("x-dwp-resumable", "true")],
    )
    .await;
    assert_eq!(status, 200);
    let task = task.unwrap();
    let seen = until_hitl(&mut laptop).await;
    let hitl = seen.last().unwrap().clone();
    drop(laptop); // the lid closes while the run waits for approval

    let (status, _) = stack.approve(&token, &rosa, &request_id(&hitl)).await;
    assert_eq!(status, 200, "approved while nobody follows the stream");

    // GET form on the other replica, from the hitl event on.
    let (status, mut phone) = follow(other.addr, &token, &task, Some(id_of(&hitl))).await;
    assert_eq!(status, 200);
    let resumed = phone.rest().await;
    assert_eq!(kind(resumed.last().unwrap()), "[DONE]", "{resumed:?}");
    assert!(resumed.iter().any(|b| kind(b) == "end"), "{resumed:?}");
    assert!(
        !resumed.contains(&hitl),
        "nothing before the last id is sent again"
    );

    // POST form, from the start: everything the laptop saw, then the rest.
    let (status, _, mut tablet) = open(
        stack.gateway,
        &stack,
        &token,
        &rosa,
        "merge the release branch",
        &[("x-dwp-task-id", &task)],
    )
    .await;
    assert_eq!(status, 200);
    let whole = tablet.rest().await;
    assert_eq!(
        whole[..seen.len()],
        seen[..],
        "byte for byte what the first client saw"
    );
    assert_eq!(whole[seen.len()..], resumed[..]);

    let (after, _) = runs(&stack).await;
    assert_eq!(after - before, 1, "the agent was called once");
}

#[tokio::test]
async fn two_followers_and_a_stop_from_the_other_replica() {
    let stack = Stack::start(e2e::Options {
        users: &["sven", "ute"],
        ..e2e::Options::default()
    })
    .await;
    let other = replica(&stack).await;
    let sven = stack.user("sven");
    let token = stack.login(&sven).await;
    let (status, task, mut laptop) = open(
        stack.gateway,
        &stack,
        &token,
        &sven,
        "delete the old mails",
        &[("x-dwp-resumable", "true")],
    )
    .await;
    assert_eq!(status, 200);
    let task = task.unwrap();
    let start = laptop.next().await.unwrap();
    let (status, mut phone) = follow(other.addr, &token, &task, Some(id_of(&start))).await;
    assert_eq!(status, 200);
    let ute_token = stack.login(&stack.user("ute")).await;
    let (status, _) = follow(other.addr, &ute_token, &task, None).await;
    assert_eq!(status, 404, "another user's stream is nobody's to follow");

    // Both devices see the run reach its approval.
    for device in [&mut laptop, &mut phone] {
        until_hitl(device).await;
    }
    let cancelled_before_stop = runs(&stack).await.1;
    let auth = format!("Bearer {token}");
    let stopped = Instant::now();
    let (status, _, _) = call(
        other.addr,
        "POST",
        &format!("/api/streams/{task}/stop"),
        &[("authorization", &auth)],
        "",
    )
    .await;
    assert_eq!(status, 202);
    let laptop_rest = laptop.rest().await;
    let phone_rest = phone.rest().await;
    for rest in [&laptop_rest, &phone_rest] {
        assert_eq!(rest.len(), 2, "{rest:?}");
        assert!(rest[0].contains("\"errorType\":\"Cancelled\""), "{rest:?}");
        assert_eq!(kind(&rest[1]), "[DONE]");
    }
    loop {
        if runs(&stack).await.1 > cancelled_before_stop {
            break;
        }
        assert!(
            stopped.elapsed() < Duration::from_secs(1),
            "the agent's run was not cancelled within a second"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The task is FAILED with the stop's reason.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (status, body) = stack
            .as_user(
                &token,
                &sven,
                "GET",
                &format!("/api/main/agent/tasks/{task}"),
                "",
            )
            .await;
        if status == 200 && body["data"]["status"] == "FAILED" {
            assert_eq!(body["data"]["errorMessage"], "Stopped by the user");
            break;
        }
        assert!(Instant::now() < deadline, "task not failed: {body}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn without_the_opt_in_a_client_leaving_cancels_the_agent_within_a_second() {
    let stack = Stack::start(e2e::Options {
        users: &["vera"],
        ..e2e::Options::default()
    })
    .await;
    let vera = stack.user("vera");
    let token = stack.login(&vera).await;
    let (_, cancelled) = runs(&stack).await;
    let (status, _, mut body) = open(
        stack.gateway,
        &stack,
        &token,
        &vera,
        "merge the branch",
        &[],
    )
    .await;
    assert_eq!(status, 200);
    body.next().await.unwrap();
    let left = Instant::now();
    drop(body);
    loop {
        if runs(&stack).await.1 > cancelled {
            break;
        }
        assert!(
            left.elapsed() < Duration::from_secs(1),
            "the agent still runs a second after its client left"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn with_its_redis_away_a_resumable_stream_goes_on_a_resume_is_503_and_nothing_is_lost() {
    let stack = Stack::start(e2e::Options {
        users: &["wim"],
        ..e2e::Options::default()
    })
    .await;
    let wim = stack.user("wim");
    let token = stack.login(&wim).await;
    // A gateway whose journal lives on a Redis of its own, to be stopped.
    let mut journal = e2e::servers::PrivateRedis::start();
    let url = journal.url();
    let gateway = replica_on(&stack, &url).await;
    let (status, task, mut client) = open(
        gateway.addr,
        &stack,
        &token,
        &wim,
        "merge the feature branch",
        &[("x-dwp-resumable", "true")],
    )
    .await;
    assert_eq!(status, 200);
    let task = task.unwrap();
    let mut seen = until_hitl(&mut client).await;
    journal.kill();
    let (status, _) = stack
        .approve(&token, &wim, &request_id(seen.last().unwrap()))
        .await;
    assert_eq!(status, 200);
    let rest = client.rest().await;
    assert_eq!(
        kind(rest.last().unwrap()),
        "[DONE]",
        "the stream went on without Redis: {rest:?}"
    );
    seen.extend(rest);
    let (status, _) = follow(gateway.addr, &token, &task, None).await;
    assert_eq!(status, 503, "a resume needs the journal");

    // Redis back: the journal catches up, and a resume replays it all.
    journal.restart();
    let deadline = Instant::now() + Duration::from_secs(10);
    let replayed = loop {
        let (status, mut body) = follow(gateway.addr, &token, &task, None).await;
        if status == 200 {
            break body.rest().await;
        }
        assert!(Instant::now() < deadline, "never resumable again: {status}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        replayed, seen,
        "every block the client saw is in the journal"
    );
}

#[tokio::test]
async fn when_the_gateway_reading_a_run_crashes_its_followers_elsewhere_are_told() {
    let stack = Stack::start(e2e::Options {
        users: &["kurt"],
        ..e2e::Options::default()
    })
    .await;
    let mut reader = replica(&stack).await;
    let kurt = stack.user("kurt");
    let token = stack.login(&kurt).await;
    let (status, task, mut client) = open(
        reader.addr,
        &stack,
        &token,
        &kurt,
        "merge the hotfix branch",
        &[("x-dwp-resumable", "true")],
    )
    .await;
    assert_eq!(status, 200);
    let task = task.unwrap();
    until_hitl(&mut client).await;
    let (status, mut follower) = follow(stack.gateway, &token, &task, None).await;
    assert_eq!(status, 200);
    until_hitl(&mut follower).await;
    // The gateway reading the run dies without a word (no drain, no end).
    reader.child.kill().unwrap();
    reader.child.wait().unwrap();
    let crashed = Instant::now();
    let rest = tokio::time::timeout(Duration::from_secs(30), follower.rest())
        .await
        .expect("the follower is told within the gateway's alive time");
    assert!(
        rest[0].contains("\"errorType\":\"GatewayStopped\""),
        "{rest:?}"
    );
    assert_eq!(kind(rest.last().unwrap()), "[DONE]");
    assert!(
        crashed.elapsed() < Duration::from_secs(20),
        "{:?}",
        crashed.elapsed()
    );
}
