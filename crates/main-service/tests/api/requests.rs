//! Reading requests and signals, and creating a request over HTTP.

use redis::AsyncCommands;
use serde_json::Value;

use crate::helpers::*;

fn caller() -> (String, [(&'static str, &'static str); 3]) {
    (
        bearer("user123", "tenant1"),
        [
            ("x-tenant-id", "tenant1"),
            ("x-user-id", "user123"),
            ("content-type", "application/json"),
        ],
    )
}

#[tokio::test]
async fn the_stored_request_and_signal_can_be_read() {
    let app = spawn_app().await;
    let (auth, rest) = caller();
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend(rest);
    let (request_id, session_id) = agent_request(Some("user123"), Some("tenant1")).await;

    let res = app
        .send(
            "GET",
            &format!("/aura/hitl/requests/{request_id}"),
            &headers,
            "",
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body["data"]["requestId"], request_id.as_str());
    assert_eq!(res.body["data"]["actionType"], "git_merge");

    let res = app
        .send(
            "GET",
            &format!("/aura/hitl/signals/{session_id}"),
            &headers,
            "",
        )
        .await;
    assert_eq!(res.status, 200);
    assert_eq!(res.body["data"], Value::Null, "no decision yet");

    app.decide("approve", &request_id, "user123", "tenant1", "")
        .await;
    let res = app
        .send(
            "GET",
            &format!("/aura/hitl/signals/{session_id}"),
            &headers,
            "",
        )
        .await;
    assert_eq!(res.body["data"]["type"], "approval");

    let res = app
        .send(
            "GET",
            &format!("/aura/hitl/requests/{}", unique("req")),
            &headers,
            "",
        )
        .await;
    assert_eq!(res.status, 404);
}

#[tokio::test]
async fn an_agent_can_create_a_request_over_http() {
    let app = spawn_app().await;
    let (auth, rest) = caller();
    let mut headers = vec![("authorization", auth.as_str())];
    headers.extend(rest);
    let session_id = unique("session");
    let body = format!(
        r#"{{"sessionId":"{session_id}","actionType":"email_delete","context":{{"count":3}}}}"#
    );
    let res = app
        .send("POST", "/aura/hitl/requests", &headers, &body)
        .await;
    assert_eq!(res.status, 201, "{}", res.text);
    let request_id = res.body["data"]["requestId"].as_str().unwrap().to_owned();
    assert!(
        request_id.starts_with("req_") && request_id.len() == 16,
        "{request_id}"
    );
    assert!(request_id[4..].chars().all(|c| c.is_ascii_hexdigit()));
    assert_eq!(res.body["data"]["sessionId"], session_id.as_str());

    let mut conn = redis().await;
    let stored: String = conn
        .get(format!("hitl:request:{request_id}"))
        .await
        .unwrap();
    let stored: Value = serde_json::from_str(&stored).unwrap();
    for field in [
        "requestId",
        "sessionId",
        "actionType",
        "context",
        "status",
        "userId",
        "tenantId",
        "createdAt",
    ] {
        assert!(stored.get(field).is_some(), "{field} stored");
    }
    assert_eq!(stored["status"], "pending");
    assert_eq!(stored["userId"], "user123");
    let ttl: i64 = conn
        .ttl(format!("hitl:request:{request_id}"))
        .await
        .unwrap();
    assert!(ttl > 1790 && ttl <= 1800);
    let session_ttl: i64 = conn
        .ttl(format!("hitl:session:{session_id}"))
        .await
        .unwrap();
    assert!(session_ttl > 3590 && session_ttl <= 3600);

    let fixed =
        format!(r#"{{"requestId":"{request_id}","sessionId":"{session_id}","actionType":"x"}}"#);
    let res = app
        .send("POST", "/aura/hitl/requests", &headers, &fixed)
        .await;
    assert_eq!(res.status, 409, "an existing request is not overwritten");

    let res = app
        .send(
            "POST",
            "/aura/hitl/requests",
            &headers,
            r#"{"actionType":"x"}"#,
        )
        .await;
    assert_eq!(res.status, 400, "sessionId is required");
    let res = app
        .send(
            "POST",
            "/aura/hitl/requests",
            &headers,
            &format!(r#"{{"sessionId":"{session_id}","actionType":"x","userId":"alice"}}"#),
        )
        .await;
    assert_eq!(res.status, 403, "not on behalf of another user");
}
