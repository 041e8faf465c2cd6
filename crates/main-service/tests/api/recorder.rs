//! The stream recorder end to end: a real SSE upstream, the real gateway
//! teeing into Redis, main-service's consumer writing `agent_task`.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use dwp_core::tasks;
use main_service::consumer::{Apply, Entry};
use main_service::tasks::writer::TaskWriter;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

/// An agent that answers every request with `events`, one chunk each, 20 ms apart.
async fn sse_upstream(events: Vec<String>) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut socket, _)) = listener.accept().await {
            let events = events.clone();
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut buf = [0u8; 4096];
                while !head.windows(4).any(|w| w == b"\r\n\r\n") {
                    let Ok(n @ 1..) = socket.read(&mut buf).await else {
                        return;
                    };
                    head.extend_from_slice(&buf[..n]);
                }
                let _ = socket
                    .write_all(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\ntransfer-encoding: chunked\r\n\r\n")
                    .await;
                for event in events {
                    let chunk = format!("{:x}\r\n{event}\r\n", event.len());
                    let _ = socket.write_all(chunk.as_bytes()).await;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                let _ = socket.write_all(b"0\r\n\r\n").await;
            });
        }
    });
    addr
}

fn agent_events(request_id: &str) -> Vec<String> {
    let step = |n: u32, id: &str, text: &str| {
        format!(
            "id: {n}\nevent: plan_step\ndata: {}\n\n",
            json!({"type": "plan_step", "data": {"type": "plan_step", "stepId": id, "description": text, "status": "pending", "confidence": 0.8, "timestamp": 1795309470, "metadata": {}}})
        )
    };
    vec![
        format!(
            "id: 1\nevent: start\ndata: {}\n\n",
            json!({"type": "start", "message": "Agent started", "timestamp": 1795309470})
        ),
        step(2, "step-a", "1. Check the branch"),
        step(3, "step-b", "2. Merge it"),
        format!(
            "id: 4\nevent: hitl\ndata: {}\n\n",
            json!({"type": "hitl", "data": {"requestId": request_id, "actionType": "git_merge", "message": "Merge?", "context": {}, "requiresApproval": true}})
        ),
        format!(
            "id: 5\nevent: end\ndata: {}\n\n",
            json!({"type": "end", "message": "Agent finished", "timestamp": 1795309471})
        ),
        "data: [DONE]\n\n".to_owned(),
    ]
}

/// Polls the task through the API until `done` holds (10 s at most).
async fn wait_for_task(
    app: &TestApp,
    task_id: &str,
    user: &str,
    tenant: &str,
    done: impl Fn(&Value) -> bool,
) -> Value {
    let path = format!("/main/agent/tasks/{task_id}");
    app.get_until(&path, user, tenant, done).await
}

#[tokio::test]
async fn a_stream_relayed_by_the_gateway_becomes_one_completed_task() {
    let app = spawn_app().await;
    let request_id = unique("req");
    let agent = sse_upstream(agent_events(&request_id)).await;
    let env: HashMap<String, String> = [
        ("SERVER_PORT", "0"),
        ("AURA_PLATFORM_URI", &format!("http://{agent}")),
        ("MAIN_SERVICE_URI", &format!("http://{}", app.addr)),
        ("REDIS_URL", &redis_url()),
        ("JWT_SECRET", SECRET),
        ("GATEWAY_WORKER_THREADS", "1"),
        ("GATEWAY_RECORDER_ENABLED", "true"),
        ("ADMIN_PORT", "off"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    let config = gateway::Config::from_sources(None, env).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway_addr = listener.local_addr().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(gateway::run(listener, config, async {
        let _ = stopped.await;
    }));

    let client = Client { addr: gateway_addr };
    let user = unique("u");
    let reply = client
        .as_user(
            "POST",
            "/api/aura/test/stream",
            &user,
            "tenant1",
            r#"{"prompt":"merge feature/x","context":{}}"#,
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.text);
    assert!(reply.text.ends_with("data: [DONE]\n\n"), "{}", reply.text);
    let task_id = reply.headers["x-dwp-task-id"].to_str().unwrap().to_owned();

    let task = wait_for_task(&app, &task_id, &user, "tenant1", |t| {
        t["status"] == "COMPLETED"
    })
    .await;
    assert_eq!(task["progress"], 100);
    assert_eq!(task["hitlRequestId"], request_id.as_str());
    assert_eq!(task["taskType"], "AGENT_STREAM");
    let steps: Vec<_> = task["planSteps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["stepId"].clone(), s["description"].clone()))
        .collect();
    assert_eq!(
        steps,
        [
            (json!("step-a"), json!("1. Check the branch")),
            (json!("step-b"), json!("2. Merge it"))
        ]
    );
    let all = app
        .as_user("GET", "/main/agent/tasks", &user, "tenant1", "")
        .await;
    assert_eq!(
        all.body["data"]["totalElements"], 1,
        "one row for the stream"
    );

    let _ = stop.send(());
    let _ = gateway.await;
}

/// Entries for `task_id` the way the gateway's recorder writes them.
pub(crate) fn recorded(
    task_id: &str,
    user: &str,
    events: &[(&str, Value)],
) -> Vec<Vec<(String, String)>> {
    events
        .iter()
        .enumerate()
        .map(|(n, (kind, data))| {
            vec![
                (tasks::FIELD_TASK_ID.into(), task_id.into()),
                (tasks::FIELD_USER_ID.into(), user.into()),
                (tasks::FIELD_TENANT_ID.into(), "tenant1".into()),
                (tasks::FIELD_PATH.into(), "/api/aura/test/stream".into()),
                (tasks::FIELD_EVENT_ID.into(), (n + 1).to_string()),
                (tasks::FIELD_EVENT_TYPE.into(), kind.to_string()),
                (
                    tasks::FIELD_DATA.into(),
                    if data.is_string() {
                        data.as_str().unwrap().to_owned()
                    } else {
                        data.to_string()
                    },
                ),
            ]
        })
        .collect()
}

/// [`recorded`] entries as the consumer hands them to the recorder.
pub(crate) fn entries(task_id: &str, user: &str, events: &[(&str, Value)]) -> Vec<Entry> {
    recorded(task_id, user, events)
        .into_iter()
        .enumerate()
        .map(|(n, fields)| Entry {
            id: format!("1-{n}"),
            fields: fields.into_iter().collect(),
        })
        .collect()
}

fn run_events() -> Vec<(&'static str, Value)> {
    vec![
        (
            "start",
            json!({"type": "start", "message": "Agent started"}),
        ),
        (
            "plan_step",
            json!({"type": "plan_step", "data": {"stepId": "a", "description": "1. one", "status": "pending"}}),
        ),
        (
            "plan_step",
            json!({"type": "plan_step", "data": {"stepId": "b", "description": "2. two", "status": "pending"}}),
        ),
        (
            "plan_step_update",
            json!({"type": "plan_step_update", "data": {"stepId": "a", "status": "completed"}}),
        ),
        (
            "error",
            json!({"type": "error", "error": "User rejected", "errorType": "RejectionError"}),
        ),
        ("message", json!("[DONE]")),
    ]
}

#[tokio::test]
async fn entries_read_by_a_consumer_that_died_are_claimed_and_applied_once() {
    // A first service creates the group, then stops.
    let app = spawn_app().await;
    let group = app.state.config.consumer.group.clone();
    let db = app.stop().await.unwrap();

    // Its events arrive, and a consumer reads them and dies before XACK.
    let task_id = uuid::Uuid::new_v4().to_string();
    let user = unique("u");
    let mut conn = redis().await;
    for fields in recorded(&task_id, &user, &run_events()) {
        let _: String = redis::cmd("XADD")
            .arg(tasks::EVENTS_STREAM)
            .arg("*")
            .arg(fields)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
    let read: redis::streams::StreamReadReply = redis::cmd("XREADGROUP")
        .arg("GROUP")
        .arg(&group)
        .arg("crashed")
        .arg("COUNT")
        .arg(1000)
        .arg("STREAMS")
        .arg(tasks::EVENTS_STREAM)
        .arg(">")
        .query_async(&mut conn)
        .await
        .unwrap();
    let ours = read.keys[0]
        .ids
        .iter()
        .filter(|e| {
            e.map.get(tasks::FIELD_TASK_ID)
                == Some(&redis::Value::BulkString(task_id.clone().into_bytes()))
        })
        .count();
    assert_eq!(ours, 6, "the dead consumer holds our six entries");

    // A new replica (another name, same group) claims them once they are idle.
    let app = spawn_app_in(db, &[("CONSUMER_GROUP", &group)]).await;
    let task = wait_for_task(&app, &task_id, &user, "tenant1", |t| {
        t["status"] == "FAILED"
    })
    .await;
    assert_eq!(task["errorMessage"], "User rejected");
    assert_eq!(
        task["planSteps"],
        json!([{"stepId": "a", "description": "1. one", "status": "completed"}, {"stepId": "b", "description": "2. two", "status": "pending"}])
    );
    assert_eq!(task["progress"], 50, "one of two steps done when it failed");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let summary: Vec<redis::Value> = redis::cmd("XPENDING")
            .arg(tasks::EVENTS_STREAM)
            .arg(&group)
            .query_async(&mut conn)
            .await
            .unwrap();
        if summary.first() == Some(&redis::Value::Int(0)) {
            break;
        }
        assert!(Instant::now() < deadline, "entries still pending");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // The dead consumer, holding nothing now, is removed from the group.
    loop {
        let info: redis::streams::StreamInfoConsumersReply = redis::cmd("XINFO")
            .arg("CONSUMERS")
            .arg(tasks::EVENTS_STREAM)
            .arg(&group)
            .query_async(&mut conn)
            .await
            .unwrap();
        let names: Vec<&str> = info.consumers.iter().map(|c| c.name.as_str()).collect();
        if !names.contains(&"crashed") {
            assert!(
                names.contains(&app.state.config.consumer.name.as_str()),
                "the live consumer stays: {names:?}"
            );
            break;
        }
        assert!(Instant::now() < deadline, "dead consumer kept: {names:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn read_task(app: &TestApp, task_id: &str) -> Value {
    let path = format!("/main/agent/tasks/{task_id}");
    app.as_user("GET", &path, "u1", "tenant1", "").await.body["data"].clone()
}

#[tokio::test]
async fn applying_the_same_entries_again_changes_nothing() {
    let app = spawn_app_in(TestDb::create().await, &[("CONSUMERS_ENABLED", "false")]).await;
    let task_id = uuid::Uuid::new_v4().to_string();
    let entries = entries(&task_id, "u1", &run_events());
    // In two batches, then everything again, then one entry alone.
    TaskWriter::default()
        .apply(&app.state.db, &entries[..3])
        .await
        .unwrap();
    TaskWriter::default()
        .apply(&app.state.db, &entries[3..])
        .await
        .unwrap();
    let once = read_task(&app, &task_id).await;
    assert_eq!(once["status"], "FAILED");
    assert!(
        TaskWriter::default()
            .apply(&app.state.db, &entries)
            .await
            .unwrap()
            .is_empty()
    );
    TaskWriter::default()
        .apply(&app.state.db, &entries[1..2])
        .await
        .unwrap();
    let twice = read_task(&app, &task_id).await;
    assert_eq!(once, twice, "not even updatedAt moved");

    // Entries that cannot be a row are refused, not retried forever.
    let mut bad = entries[0].clone();
    bad.fields
        .insert(tasks::FIELD_TASK_ID.into(), "x".repeat(40));
    let refused = TaskWriter::default()
        .apply(&app.state.db, &[bad])
        .await
        .unwrap();
    assert_eq!(refused.len(), 1);
}

#[tokio::test]
async fn a_stream_the_gateway_saw_break_off_fails_its_task() {
    let app = spawn_app_in(TestDb::create().await, &[("CONSUMERS_ENABLED", "false")]).await;
    let task_id = uuid::Uuid::new_v4().to_string();
    let broken =
        json!({"type": tasks::EVENT_RELAY_BROKEN, "reason": "The agent broke the stream off"});
    let events = [
        run_events()[0].clone(),
        run_events()[1].clone(),
        (tasks::EVENT_RELAY_BROKEN, broken),
    ];
    let entries = entries(&task_id, "u1", &events);
    TaskWriter::default()
        .apply(&app.state.db, &entries)
        .await
        .unwrap();
    let task = read_task(&app, &task_id).await;
    assert_eq!(task["status"], "FAILED");
    assert_eq!(task["errorMessage"], "The agent broke the stream off");
    assert_eq!(task["planSteps"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn an_agent_message_with_a_nul_character_is_recorded_not_refused() {
    let app = spawn_app_in(TestDb::create().await, &[("CONSUMERS_ENABLED", "false")]).await;
    let task_id = uuid::Uuid::new_v4().to_string();
    let events = [
        ("start", json!({"type": "start"})),
        (
            "hitl",
            json!({"type": "hitl", "data": {"requestId": "req_\u{0}1"}}),
        ),
        (
            "error",
            json!({"type": "error", "error": "bad\u{0}byte", "errorType": "X"}),
        ),
    ];
    let entries = entries(&task_id, "u1", &events);
    let refused = TaskWriter::default()
        .apply(&app.state.db, &entries)
        .await
        .unwrap();
    assert!(refused.is_empty(), "{refused:?}");
    let task = read_task(&app, &task_id).await;
    assert_eq!(task["status"], "FAILED");
    assert_eq!(task["errorMessage"], "bad\u{FFFD}byte");
    assert_eq!(task["hitlRequestId"], "req_\u{FFFD}1");
}
