//! The web frontend's own sequence through the gateway, with its headers
//! (CONTRACT.md section 9): cross-origin from :4200 with credentials,
//! `X-Tenant-ID: 1` always, a token whenever one is stored (a stale one on
//! the public calls too), no `X-User-ID` on the auth calls; then the AI
//! workspace's stream and approval with the user id it read from the token.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed unwrap is a failed test, and a scenario reads top to bottom"
)]

use base64::Engine;
use e2e::*;
use serde_json::{Value, json};

const ORIGIN: &str = "http://localhost:4200";

/// A call as the frontend's fetch makes it; (status, body, headers).
async fn fetch(
    stack: &Stack,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> (u16, Value, http::HeaderMap) {
    let auth = token.map(|t| format!("Bearer {t}"));
    let mut headers = vec![
        ("origin", ORIGIN),
        ("content-type", "application/json"),
        ("x-tenant-id", "1"),
    ];
    if let Some(auth) = &auth {
        headers.push(("authorization", auth));
    }
    let (status, text, headers) = call(stack.gateway, method, path, &headers, body).await;
    let body = serde_json::from_str(&text).unwrap_or(Value::Null);
    (status, body, headers)
}

#[tokio::test]
async fn the_frontend_signs_in_reaches_the_ai_workspace_and_approves() {
    let stack = Stack::start(Options {
        users: &["admin"],
        tenant: Some("1"),
        ..Options::default()
    })
    .await;
    let admin = stack.user("admin");

    // The login's preflight: the exact origin, with credentials.
    let (status, _, headers) = call(
        stack.gateway,
        "OPTIONS",
        "/api/auth/login",
        &[
            ("origin", ORIGIN),
            ("access-control-request-method", "POST"),
            ("access-control-request-headers", "content-type,x-tenant-id"),
        ],
        "",
    )
    .await;
    assert!(status == 200 || status == 204, "{status}");
    assert_eq!(headers["access-control-allow-origin"], ORIGIN);
    assert_eq!(headers["access-control-allow-credentials"], "true");

    // The sign-in page, with yesterday's token still stored.
    let stale = forge(
        json!({"alg": "HS256", "typ": "JWT"}),
        json!({"sub": admin, "tenant_id": "1", "iat": 1, "exp": 2}),
        SECRET.as_bytes(),
    );
    let (status, policy, _) = fetch(&stack, "GET", "/api/auth/policy", Some(&stale), "").await;
    assert_eq!(status, 200, "{policy}");
    assert!(
        policy["data"]["allowedLoginTypes"]
            .as_array()
            .is_some_and(|t| t.contains(&json!("LOCAL")))
    );
    let (status, idp, _) = fetch(&stack, "GET", "/api/auth/idp", Some(&stale), "").await;
    assert_eq!((status, idp["data"].is_array()), (200, true), "{idp}");

    let body = json!({"username": admin, "password": PASSWORD, "tenantId": "1"}).to_string();
    let (status, login, headers) = fetch(&stack, "POST", "/api/auth/login", None, &body).await;
    assert_eq!(status, 200, "{login}");
    assert_eq!(headers["access-control-allow-credentials"], "true");
    let token = login["data"]["accessToken"].as_str().unwrap().to_owned();
    // The frontend decodes the payload with atob (plain base64, no `-` `_`).
    let payload = token.split('.').nth(1).unwrap();
    assert!(!payload.contains(['-', '_']), "{payload}");
    let claims: Value = serde_json::from_slice(
        &base64::engine::general_purpose::STANDARD_NO_PAD
            .decode(payload)
            .unwrap(),
    )
    .unwrap();
    let user_id = claims["sub"].as_str().unwrap().to_owned();
    assert_eq!(user_id, admin);

    // The three calls of one Promise.all, without X-User-ID.
    for path in [
        "/api/auth/me",
        "/api/auth/permissions",
        "/api/auth/menus/tree",
    ] {
        let (status, body, _) = fetch(&stack, "GET", path, Some(&token), "").await;
        assert_eq!(status, 200, "{path}: {body}");
    }
    let (_, permissions, _) = fetch(&stack, "GET", "/api/auth/permissions", Some(&token), "").await;
    assert_eq!(
        permissions["data"][0]["resourceKey"], "menu.ai-workspace",
        "{permissions}"
    );

    // The AI workspace: a stream, its approval, the run's end.
    let mut stream = Stream::open_in(
        stack.gateway,
        "1",
        Some(&token),
        &user_id,
        "delete the old mail",
    )
    .await;
    let (_, request_id) = stream.until_hitl().await;
    let (status, reply) = stack
        .as_user(
            &token,
            &user_id,
            "POST",
            &format!("/api/aura/hitl/approve/{request_id}"),
            &json!({"userId": user_id}).to_string(),
        )
        .await;
    assert_eq!(status, 200, "{reply}");
    // hitl-api.ts: `result.status === 'SUCCESS' || result.success`, then
    // `data` as HitlApprovalResponse.
    assert_eq!(
        (&reply["status"], &reply["success"]),
        (&json!("SUCCESS"), &json!(true))
    );
    assert_eq!(reply["data"]["requestId"], request_id.as_str(), "{reply}");
    assert_eq!(reply["data"]["status"], "approved", "{reply}");
    assert!(reply["data"]["sessionId"].is_string(), "{reply}");
    assert_eq!(kinds(&stream.rest().await), AFTER_APPROVAL);
}

/// What the first page after sign-in and the other pages call, in the
/// shapes the frontend's types (`libs/shared-utils/src/api/`) read, and
/// the calls answered 404 on purpose (docs/ARCHITECTURE.md, "What the
/// frontend calls").
#[tokio::test]
async fn the_pages_calls_get_the_shapes_they_read_or_a_deliberate_404() {
    let stack = Stack::start(Options {
        users: &["admin"],
        tenant: Some("1"),
        ..Options::default()
    })
    .await;
    let token = stack.login(&stack.user("admin")).await;

    // main-api.ts: MainHealthPayload = string, rendered as text by the
    // dashboard's health widget.
    let (status, health, _) = fetch(&stack, "GET", "/api/main/health", Some(&token), "").await;
    assert_eq!(status, 200, "{health}");
    assert_eq!(health["data"], "Main Service is running", "{health}");
    let (status, info, _) = fetch(&stack, "GET", "/api/main/info", Some(&token), "").await;
    assert_eq!(status, 200, "{info}");
    assert!(info["data"]["service"].is_string(), "{info}");

    // monitoring-api.ts, on every page: before sign-in (no token) and
    // after; the user is the token's, whatever the body says.
    let user_id = stack.user("admin");
    let view =
        json!({"path": "/ai-workspace", "menuKey": "menu.ai-workspace", "userId": "mallory"});
    let event = json!({"resourceKey": "menu.ai-workspace", "action": "click", "label": "AI"});
    for (path, body, token) in [
        ("/api/monitoring/page-view", &view, None),
        ("/api/monitoring/page-view", &view, Some(token.as_str())),
        ("/api/monitoring/event", &event, Some(token.as_str())),
    ] {
        let (status, reply, _) = fetch(&stack, "POST", path, token, &body.to_string()).await;
        assert_eq!(status, 200, "{path}: {reply}");
        assert_eq!(reply["data"]["success"], true, "{path}: {reply}");
    }
    let conn = stack.db.connect().await;
    let stored = sea_orm::ConnectionTrait::query_one_raw(
        &conn,
        sea_orm::Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT (SELECT string_agg(coalesce(user_id, '-') || '@' || client_addr, ',' ORDER BY id)              FROM monitoring_page_view) AS views,              (SELECT views FROM monitoring_page_daily WHERE page_key = 'menu.ai-workspace') AS daily,              (SELECT action FROM monitoring_event) AS action",
        ),
    )
    .await
    .unwrap()
    .unwrap();
    let views: String = stored.try_get("", "views").unwrap();
    assert_eq!(views, format!("-@127.0.0.1,{user_id}@127.0.0.1"));
    assert_eq!(stored.try_get::<i64>("", "daily").unwrap(), 2);
    assert_eq!(stored.try_get::<String>("", "action").unwrap(), "CLICK");

    // The old auth server's admin console, and a hook no page uses.
    for path in [
        "/api/admin/users?page=1&size=10",
        "/api/admin/monitoring/summary",
        "/api/agent/chat-stream",
    ] {
        let (status, body, _) = fetch(&stack, "GET", path, Some(&token), "").await;
        assert_eq!(status, 404, "{path}: {body}");
        assert_eq!(body["errorCode"], "E1004", "{path}: the envelope: {body}");
    }
}
