//! The AgentTask REST API (CONTRACT.md section 8) against a fresh database.

use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::helpers::*;
use crate::link::{Link, postgres_addr};

const BASE: &str = "/main/agent/tasks";

async fn create(app: &TestApp, user: &str, tenant: &str, body: Value) -> Value {
    let reply = app
        .as_user("POST", BASE, user, tenant, &body.to_string())
        .await;
    assert_eq!(reply.status, 201, "{}", reply.text);
    reply.body["data"].clone()
}

#[tokio::test]
async fn a_task_is_created_read_and_hidden_from_everyone_else() {
    let app = spawn_app().await;
    let task = create(
        &app,
        "user123",
        "tenant1",
        json!({"taskType": "EMAIL_ANALYSIS", "description": "Read the inbox", "inputData": {"folder": "inbox"}}),
    )
    .await;
    let id = task["taskId"].as_str().unwrap();
    assert_eq!(id.len(), 36);
    assert_eq!(task["status"], "REQUESTED");
    assert_eq!(task["progress"], 0);
    assert_eq!(task["userId"], "user123");
    assert_eq!(task["tenantId"], "tenant1");
    assert_eq!(task["inputData"], r#"{"folder":"inbox"}"#);
    assert_eq!(task["planSteps"], json!([]));
    assert!(task["createdAt"].as_str().unwrap().ends_with('Z'));

    let read = app
        .as_user("GET", &format!("{BASE}/{id}"), "user123", "tenant1", "")
        .await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["data"], task);
    assert_eq!(read.body["success"], true);

    for (user, tenant) in [("someone", "tenant1"), ("user123", "tenant2")] {
        let other = app
            .as_user("GET", &format!("{BASE}/{id}"), user, tenant, "")
            .await;
        assert_eq!(other.status, 404, "{user}/{tenant}");
        assert_eq!(other.body["errorCode"], "E1004");
        let start = app
            .as_user("POST", &format!("{BASE}/{id}/start"), user, tenant, "")
            .await;
        assert_eq!(start.status, 404);
    }
    let missing = app
        .as_user(
            "GET",
            &format!("{BASE}/{}", uuid::Uuid::new_v4()),
            "user123",
            "tenant1",
            "",
        )
        .await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn a_task_moves_only_along_the_lifecycle() {
    let app = spawn_app().await;
    let call = |method: &'static str, path: String, body: Value| {
        let app = &app;
        async move {
            app.as_user(method, &path, "u1", "t1", &body.to_string())
                .await
        }
    };
    let id = create(&app, "u1", "t1", json!({"taskType": "GIT_MERGE"})).await["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let at = |action: &str| format!("{BASE}/{id}/{action}");

    // REQUESTED: no progress, no completion, no failure.
    for (method, action, body) in [
        ("PATCH", "progress", json!({"progress": 10})),
        ("POST", "complete", json!({})),
        ("POST", "fail", json!({"errorMessage": "x"})),
    ] {
        let reply = call(method, at(action), body).await;
        assert_eq!(
            (reply.status, reply.body["errorCode"].as_str()),
            (400, Some("E3002")),
            "{action}"
        );
    }

    let started = call("POST", at("start"), json!({})).await;
    assert_eq!(started.status, 200);
    assert_eq!(started.body["data"]["status"], "IN_PROGRESS");
    assert!(started.body["data"]["startedAt"].is_string());
    assert_eq!(
        call("POST", at("start"), json!({})).await.body["errorCode"],
        "E3002"
    );

    let progressed = call(
        "PATCH",
        at("progress"),
        json!({"progress": 30, "description": "analysing"}),
    )
    .await;
    assert_eq!(progressed.status, 200);
    assert_eq!(progressed.body["data"]["progress"], 30);
    assert_eq!(progressed.body["data"]["description"], "analysing");
    for bad in [-1, 101, 150] {
        let reply = call("PATCH", at("progress"), json!({"progress": bad})).await;
        assert_eq!(
            (reply.status, reply.body["errorCode"].as_str()),
            (400, Some("E3002")),
            "{bad}"
        );
    }
    let missing = call("PATCH", at("progress"), json!({})).await;
    assert_eq!(
        (missing.status, missing.body["errorCode"].as_str()),
        (400, Some("E1001"))
    );
    let unchanged = call("GET", format!("{BASE}/{id}"), json!(null)).await;
    assert_eq!(unchanged.body["data"]["progress"], 30);

    let no_message = call("POST", at("fail"), json!({})).await;
    assert_eq!(
        (no_message.status, no_message.body["errorCode"].as_str()),
        (400, Some("E1001"))
    );

    let done = call(
        "POST",
        at("complete"),
        json!({"resultData": {"merged": true}}),
    )
    .await;
    assert_eq!(done.status, 200);
    assert_eq!(done.body["data"]["status"], "COMPLETED");
    assert_eq!(done.body["data"]["progress"], 100);
    assert_eq!(done.body["data"]["resultData"], r#"{"merged":true}"#);
    assert!(done.body["data"]["completedAt"].is_string());

    for (method, action, body) in [
        ("POST", "start", json!({})),
        ("POST", "complete", json!({})),
        ("POST", "fail", json!({"errorMessage": "late"})),
        ("PATCH", "progress", json!({"progress": 50})),
        ("POST", "plan-steps", json!({"description": "late step"})),
    ] {
        let reply = call(method, at(action), body).await;
        assert_eq!(
            (reply.status, reply.body["errorCode"].as_str()),
            (400, Some("E3002")),
            "{action}"
        );
    }
    let after = call("GET", format!("{BASE}/{id}"), json!(null)).await;
    assert_eq!(
        after.body["data"], done.body["data"],
        "refused moves changed nothing"
    );
}

#[tokio::test]
async fn a_failed_task_keeps_its_message() {
    let app = spawn_app().await;
    let id = create(&app, "u1", "t1", json!({"taskType": "MAIL_DELETE"})).await["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    app.as_user("POST", &format!("{BASE}/{id}/start"), "u1", "t1", "")
        .await;
    let failed = app
        .as_user(
            "POST",
            &format!("{BASE}/{id}/fail"),
            "u1",
            "t1",
            r#"{"errorMessage":"mailbox locked"}"#,
        )
        .await;
    assert_eq!(failed.status, 200);
    assert_eq!(failed.body["data"]["status"], "FAILED");
    assert_eq!(failed.body["data"]["errorMessage"], "mailbox locked");
}

#[tokio::test]
async fn plan_steps_are_added_and_updated_by_step_id() {
    let app = spawn_app().await;
    let id = create(&app, "u1", "t1", json!({"taskType": "PLAN"})).await["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("{BASE}/{id}/plan-steps");
    let first = app
        .as_user(
            "POST",
            &path,
            "u1",
            "t1",
            r#"{"stepId":"s1","description":"1. read","status":"pending"}"#,
        )
        .await;
    assert_eq!(first.status, 200, "{}", first.text);
    let second = app
        .as_user("POST", &path, "u1", "t1", r#"{"description":"2. answer"}"#)
        .await;
    assert_eq!(second.body["data"]["planStepCount"], 2, "{}", second.text);
    let generated = second.body["data"]["step"]["stepId"]
        .as_str()
        .unwrap()
        .to_owned();
    let updated = app
        .as_user(
            "POST",
            &path,
            "u1",
            "t1",
            r#"{"stepId":"s1","status":"completed"}"#,
        )
        .await;
    assert_eq!(updated.body["data"]["planStepCount"], 2, "{}", updated.text);
    assert_eq!(
        updated.body["data"]["step"],
        json!({"stepId": "s1", "status": "completed"}),
        "the step as sent, not the plan"
    );
    let task = app
        .as_user("GET", &format!("{BASE}/{id}"), "u1", "t1", "")
        .await;
    assert_eq!(
        task.body["data"]["planSteps"],
        json!([
            {"stepId": "s1", "description": "1. read", "status": "completed"},
            {"stepId": generated, "description": "2. answer"}
        ])
    );
    for bad in ["[1,2]", "{}", r#"{"stepId": 5}"#] {
        let reply = app.as_user("POST", &path, "u1", "t1", bad).await;
        assert_eq!(
            (reply.status, reply.body["errorCode"].as_str()),
            (400, Some("E1001")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn the_list_is_the_callers_own_newest_first_with_pages() {
    let app = spawn_app().await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            create(&app, "lister", "t1", json!({"taskType": format!("T{n}")})).await["taskId"]
                .clone(),
        );
    }
    create(&app, "other", "t1", json!({"taskType": "X"})).await;
    create(&app, "lister", "t2", json!({"taskType": "Y"})).await;

    let page = app
        .as_user("GET", &format!("{BASE}?page=0&size=2"), "lister", "t1", "")
        .await;
    assert_eq!(page.status, 200);
    let data = &page.body["data"];
    assert_eq!(
        (data["totalElements"].as_u64(), data["totalPages"].as_u64()),
        (Some(5), Some(3))
    );
    let content: Vec<_> = data["content"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["taskId"].clone())
        .collect();
    assert_eq!(content, [ids[4].clone(), ids[3].clone()]);
    let last = app
        .as_user("GET", &format!("{BASE}?page=2&size=2"), "lister", "t1", "")
        .await;
    assert_eq!(last.body["data"]["content"][0]["taskId"], ids[0]);
    let default = app.as_user("GET", BASE, "lister", "t1", "").await;
    assert_eq!(
        (
            default.body["data"]["page"].as_u64(),
            default.body["data"]["size"].as_u64()
        ),
        (Some(0), Some(20))
    );
    let clamped = app
        .as_user("GET", &format!("{BASE}?size=1000"), "lister", "t1", "")
        .await;
    assert_eq!(clamped.body["data"]["size"], 100);
    // Past the end, up to pages no OFFSET can address: empty, never an error.
    for far in [
        "page=3&size=2",
        "page=461168601842738791",
        "page=18446744073709551615",
    ] {
        let reply = app
            .as_user("GET", &format!("{BASE}?{far}"), "lister", "t1", "")
            .await;
        assert_eq!(reply.status, 200, "{far}");
        assert_eq!(reply.body["data"]["content"], json!([]), "{far}");
        assert_eq!(reply.body["data"]["totalElements"], 5, "{far}");
    }
    for bad in ["page=-1", "size=0", "page=x", "page=18446744073709551616"] {
        let reply = app
            .as_user("GET", &format!("{BASE}?{bad}"), "lister", "t1", "")
            .await;
        assert_eq!(
            (reply.status, reply.body["errorCode"].as_str()),
            (400, Some("E1001")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn every_route_needs_a_valid_token_and_matching_headers() {
    let app = spawn_app().await;
    let none = app.send("GET", BASE, &[], "").await;
    assert_eq!(
        (none.status, none.body["errorCode"].as_str()),
        (401, Some("E2000"))
    );
    let forged = app
        .send(
            "POST",
            BASE,
            &[
                ("authorization", "Bearer a.b.c"),
                ("content-type", "application/json"),
            ],
            r#"{"taskType":"X"}"#,
        )
        .await;
    assert_eq!(
        (forged.status, forged.body["errorCode"].as_str()),
        (401, Some("E2003"))
    );
    // The headers may be left out, but must agree with the token when sent.
    let auth = bearer("u1", "t1");
    let bare = app
        .send(
            "POST",
            BASE,
            &[
                ("authorization", &auth),
                ("content-type", "application/json"),
            ],
            r#"{"taskType":"X"}"#,
        )
        .await;
    assert_eq!(bare.status, 201, "{}", bare.text);
    assert_eq!(bare.body["data"]["userId"], "u1");
    let lying = app
        .send(
            "GET",
            BASE,
            &[("authorization", &auth), ("x-tenant-id", "t2")],
            "",
        )
        .await;
    assert_eq!(
        (lying.status, lying.body["errorCode"].as_str()),
        (403, Some("E2001"))
    );
    let no_type = app
        .as_user("POST", BASE, "u1", "t1", r#"{"description":"x"}"#)
        .await;
    assert_eq!(
        (no_type.status, no_type.body["errorCode"].as_str()),
        (400, Some("E1001"))
    );
    let long = app
        .as_user(
            "POST",
            BASE,
            "u1",
            "t1",
            &json!({"taskType": "x".repeat(101)}).to_string(),
        )
        .await;
    assert_eq!(long.status, 400);
}

#[tokio::test]
async fn postgres_down_is_a_quick_503_and_the_routes_heal_without_a_restart() {
    let db = TestDb::create().await;
    let link = Link::start(postgres_addr()).await;
    let app = spawn_app_in(db.via(link.url(&db.url)), &[]).await;
    let created = create(&app, "u1", "t1", json!({"taskType": "X"})).await;
    let id = created["taskId"].as_str().unwrap();

    link.cut();
    for path in [format!("{BASE}/{id}"), BASE.to_owned()] {
        let started = Instant::now();
        let reply = app.as_user("GET", &path, "u1", "t1", "").await;
        assert_eq!(
            (reply.status, reply.body["errorCode"].as_str()),
            (503, Some("E5000")),
            "{}",
            reply.text
        );
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{:?}",
            started.elapsed()
        );
    }
    // HITL needs only Redis: readiness stays up and says PostgreSQL is down.
    let ready = app.send("GET", "/main/health/ready", &[], "").await;
    assert_eq!(
        (ready.status, ready.body["data"]["postgres"].as_str()),
        (200, Some("DOWN"))
    );

    link.restore();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let reply = app
            .as_user("GET", &format!("{BASE}/{id}"), "u1", "t1", "")
            .await;
        if reply.status == 200 {
            assert_eq!(reply.body["data"]["taskId"], id);
            break;
        }
        assert!(Instant::now() < deadline, "not healed: {}", reply.text);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    drop(app);
    drop(db);
}

#[tokio::test]
async fn task_fields_past_their_caps_are_413_before_anything_is_stored() {
    let app = spawn_app_in(
        TestDb::create().await,
        &[("MAIN_MAX_BODY_BYTES", "1048576")],
    )
    .await;
    for (body, field) in [
        (
            json!({"taskType": "t", "description": "d".repeat(5000)}),
            "description",
        ),
        (
            json!({"taskType": "t", "inputData": {"blob": "x".repeat(20_000)}}),
            "inputData",
        ),
    ] {
        let res = app
            .as_user(
                "POST",
                "/main/agent/tasks",
                "user123",
                "tenant1",
                &body.to_string(),
            )
            .await;
        assert_eq!(res.status, 413, "{}", res.text);
        assert!(res.text.contains(field), "{}", res.text);
    }
    let ok = json!({"taskType": "t", "description": "d".repeat(4000), "inputData": {"blob": "x".repeat(10_000)}});
    let res = app
        .as_user(
            "POST",
            "/main/agent/tasks",
            "user123",
            "tenant1",
            &ok.to_string(),
        )
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let id = res.body["data"]["taskId"].as_str().unwrap().to_owned();
    let step = json!({"description": "s".repeat(5000)}).to_string();
    let res = app
        .as_user(
            "POST",
            &format!("/main/agent/tasks/{id}/plan-steps"),
            "user123",
            "tenant1",
            &step,
        )
        .await;
    assert_eq!(res.status, 413, "{}", res.text);
}

#[tokio::test]
async fn a_step_of_a_long_plan_answers_the_step_and_a_page_leaves_plans_out() {
    let app = spawn_app().await;
    let user = "planner";
    let id = create(&app, user, "t1", json!({"taskType": "PLAN"})).await["taskId"]
        .as_str()
        .unwrap()
        .to_owned();
    let path = format!("{BASE}/{id}/plan-steps");
    let step =
        |n: usize| json!({"stepId": format!("s{n}"), "description": "x".repeat(3900)}).to_string();
    for n in 0..200 {
        let res = app.as_user("POST", &path, user, "t1", &step(n)).await;
        assert_eq!(res.status, 200, "{n}: {}", res.text);
        assert!(
            res.text.len() < 8 * 1024,
            "step {n} answered {} bytes",
            res.text.len()
        );
        assert_eq!(res.body["data"]["planStepCount"], n as u64 + 1);
    }
    // A full plan takes no new step, but its steps still change.
    let res = app.as_user("POST", &path, user, "t1", &step(200)).await;
    assert_eq!(res.status, 413, "{}", res.text);
    let res = app
        .as_user(
            "POST",
            &path,
            user,
            "t1",
            r#"{"stepId":"s7","status":"done"}"#,
        )
        .await;
    assert_eq!(res.body["data"]["planStepCount"], 200, "{}", res.text);
    // The task holds its plan; a page of the list does not.
    let task = app
        .as_user("GET", &format!("{BASE}/{id}"), user, "t1", "")
        .await;
    let steps = task.body["data"]["planSteps"].as_array().unwrap();
    assert_eq!(steps.len(), 200);
    assert_eq!(steps[7]["status"], "done");
    assert_eq!(steps[7]["description"], "x".repeat(3900));
    let page = app.as_user("GET", BASE, user, "t1", "").await;
    assert_eq!(page.body["data"]["content"][0]["taskId"], id.as_str());
    assert!(page.body["data"]["content"][0].get("planSteps").is_none());
    assert!(page.text.len() < 8 * 1024, "{} bytes", page.text.len());
    // A plan stored as text that is no JSON array counts as empty.
    use sea_orm::ConnectionTrait;
    let conn = app.db.as_ref().unwrap().connect().await;
    conn.execute_unprepared(&format!(
        "UPDATE agent_task SET plan_steps = 'not json' WHERE task_id = '{id}'"
    ))
    .await
    .unwrap();
    conn.close().await.unwrap();
    let res = app.as_user("POST", &path, user, "t1", &step(0)).await;
    assert_eq!(res.body["data"]["planStepCount"], 1, "{}", res.text);
}
