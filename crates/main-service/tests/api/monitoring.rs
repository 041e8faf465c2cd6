//! The frontend's monitoring calls: what is stored (who, from where, a
//! daily count per page and tenant), what is refused and how, the caps per
//! sender and address, and the sweep by age.

use sea_orm::{ConnectionTrait, DbBackend, Statement};
use serde_json::{Value, json};

use crate::helpers::*;

const PAGE_VIEW: &str = "/monitoring/page-view";
const EVENT: &str = "/monitoring/event";

/// The rows of `sql` (a query with one row per result) as JSON.
async fn rows(app: &TestApp, sql: &str) -> Vec<Value> {
    let conn = app.db.as_ref().unwrap().connect().await;
    let wrapped = format!("SELECT coalesce(json_agg(r), '[]')::text AS rows FROM ({sql}) r");
    let row = conn
        .query_one_raw(Statement::from_string(DbBackend::Postgres, wrapped))
        .await
        .unwrap()
        .unwrap();
    let text: String = row.try_get("", "rows").unwrap();
    serde_json::from_str(&text).unwrap()
}

/// A report from `addr` (sent as the gateway would: `X-Forwarded-For`)
/// with `headers` besides.
async fn report(
    app: &TestApp,
    path: &str,
    addr: &str,
    headers: &[(&str, &str)],
    body: &Value,
) -> Reply {
    let mut all = vec![
        ("content-type", "application/json"),
        ("x-forwarded-for", addr),
    ];
    all.extend_from_slice(headers);
    app.send("POST", path, &all, &body.to_string()).await
}

/// Waits out the last seconds of a minute, so that a test of the
/// per-minute caps never straddles two windows.
async fn start_of_a_minute() {
    let second = now() % 60;
    if second > 50 {
        tokio::time::sleep(std::time::Duration::from_secs(61 - second)).await;
    }
}

#[tokio::test]
async fn reports_are_stored_with_who_sent_them_and_counted_per_page_and_day() {
    let app = spawn_app().await;
    let (alice, tenant) = (unique("alice"), unique("t"));
    let auth = bearer(&alice, &tenant);
    let signed_in = [
        ("authorization", auth.as_str()),
        ("x-tenant-id", tenant.as_str()),
        ("user-agent", "Mozilla/5.0 test"),
    ];
    let view = json!({"path": "/ai-workspace", "menuKey": "menu.ai-workspace", "title": "AI",
        "visitorId": "v-1", "device": "desktop", "referrer": "/", "userId": "mallory"});
    let answer = report(&app, PAGE_VIEW, "10.1.1.1", &signed_in, &view).await;
    assert_eq!(answer.status, 200, "{}", answer.text);
    assert_eq!(answer.body["status"], "SUCCESS");
    assert_eq!(
        answer.body["data"],
        json!({"accepted": true, "success": true})
    );

    // Before sign-in: the tenant from the header, no user; the same page
    // in another tenant is counted apart.
    let anonymous = [("x-tenant-id", tenant.as_str())];
    let view2 = json!({"path": "/ai-workspace", "menuKey": "menu.ai-workspace"});
    assert_eq!(
        report(&app, PAGE_VIEW, "10.1.1.2", &anonymous, &view2)
            .await
            .status,
        200
    );
    let other = unique("t");
    let other_tenant = [("x-tenant-id", other.as_str())];
    assert_eq!(
        report(&app, PAGE_VIEW, "10.1.1.2", &other_tenant, &view2)
            .await
            .status,
        200
    );
    // Without a menu key the path is the page.
    let plain = json!({"path": "/sign-in"});
    assert_eq!(
        report(&app, PAGE_VIEW, "10.1.1.2", &anonymous, &plain)
            .await
            .status,
        200
    );

    let event = json!({"resourceKey": "menu.ai-workspace", "action": "click", "label": "AI",
        "path": "/", "visitorId": "v-1", "metadata": {"from": "sidebar"}, "userId": "mallory"});
    assert_eq!(
        report(&app, EVENT, "10.1.1.1", &signed_in, &event)
            .await
            .status,
        200
    );
    let legacy = json!({"resourceKey": "btn.send", "eventType": "execute"});
    assert_eq!(
        report(&app, EVENT, "10.1.1.2", &anonymous, &legacy)
            .await
            .status,
        200
    );

    let views = rows(
        &app,
        &format!(
            "SELECT tenant_id, user_id, visitor_id, path, page_key, title, device, referrer, \
         client_addr, user_agent, created_at > now() - interval '1 minute' AS recent \
         FROM monitoring_page_view WHERE tenant_id = '{tenant}' ORDER BY id"
        ),
    )
    .await;
    assert_eq!(views.len(), 3);
    assert_eq!(
        views[0],
        json!({"tenant_id": tenant, "user_id": alice, "visitor_id": "v-1",
        "path": "/ai-workspace", "page_key": "menu.ai-workspace", "title": "AI", "device": "desktop",
        "referrer": "/", "client_addr": "10.1.1.1", "user_agent": "Mozilla/5.0 test", "recent": true})
    );
    assert_eq!(
        views[1]["user_id"],
        Value::Null,
        "no token, no user: the body's userId is never believed"
    );
    assert_eq!(views[1]["client_addr"], "10.1.1.2");
    assert_eq!(views[2]["page_key"], "/sign-in");

    let daily = rows(&app, &format!(
        "SELECT tenant_id, page_key, views, day = (now() AT TIME ZONE 'UTC')::date AS today \
         FROM monitoring_page_daily WHERE tenant_id IN ('{tenant}', '{other}') ORDER BY tenant_id = '{other}', page_key"
    )).await;
    assert_eq!(
        daily,
        json!([
            {"tenant_id": tenant, "page_key": "/sign-in", "views": 1, "today": true},
            {"tenant_id": tenant, "page_key": "menu.ai-workspace", "views": 2, "today": true},
            {"tenant_id": other, "page_key": "menu.ai-workspace", "views": 1, "today": true},
        ])
        .as_array()
        .unwrap()
        .clone()
    );

    let events = rows(
        &app,
        &format!(
            "SELECT user_id, resource_key, action, label, path, visitor_id, metadata, client_addr \
         FROM monitoring_event WHERE tenant_id = '{tenant}' ORDER BY id"
        ),
    )
    .await;
    assert_eq!(
        events,
        vec![
            json!({"user_id": alice, "resource_key": "menu.ai-workspace", "action": "CLICK", "label": "AI",
            "path": "/", "visitor_id": "v-1", "metadata": {"from": "sidebar"}, "client_addr": "10.1.1.1"}),
            json!({"user_id": null, "resource_key": "btn.send", "action": "EXECUTE", "label": null,
            "path": null, "visitor_id": null, "metadata": null, "client_addr": "10.1.1.2"}),
        ]
    );
}

#[tokio::test]
async fn a_bad_report_gets_a_clear_error_and_a_lapsed_token_counts_as_anonymous() {
    let app = spawn_app().await;
    let (alice, tenant) = (unique("alice"), unique("t"));
    let auth = bearer(&alice, &tenant);
    let anonymous = [("x-tenant-id", tenant.as_str())];
    let view = json!({"path": "/x"});
    for (path, headers, body, status, says) in [
        (
            PAGE_VIEW,
            &[][..],
            view.clone(),
            400,
            "X-Tenant-ID header is required",
        ),
        (
            PAGE_VIEW,
            &anonymous[..],
            json!({"title": "no path"}),
            400,
            "path is required",
        ),
        (
            PAGE_VIEW,
            &anonymous[..],
            json!({"path": "  "}),
            400,
            "path is required",
        ),
        (
            PAGE_VIEW,
            &anonymous[..],
            json!({"path": 7}),
            400,
            "Invalid request body",
        ),
        (
            PAGE_VIEW,
            &anonymous[..],
            json!({"path": "/x", "metadata": [1]}),
            400,
            "metadata must be an object",
        ),
        (
            PAGE_VIEW,
            &anonymous[..],
            json!({"path": "/x", "metadata": {"a": "x".repeat(4100)}}),
            413,
            "metadata is larger than 4 KiB",
        ),
        (
            PAGE_VIEW,
            &anonymous[..],
            json!({"path": "x".repeat(9000)}),
            413,
            "too large",
        ),
        (
            EVENT,
            &anonymous[..],
            json!({"action": "CLICK"}),
            400,
            "resourceKey is required",
        ),
        (
            EVENT,
            &anonymous[..],
            json!({"resourceKey": "a", "action": " "}),
            400,
            "action (or eventType) is required",
        ),
    ] {
        let answer = report(&app, path, "10.2.2.2", headers, &body).await;
        assert_eq!(answer.status, status, "{path} {body:.80}: {}", answer.text);
        assert_eq!(answer.body["status"], "ERROR");
        assert_eq!(answer.body["errorCode"], "E1001");
        assert!(
            answer.body["message"].as_str().unwrap().contains(says),
            "{}",
            answer.text
        );
    }
    let long_tenant = "t".repeat(51);
    let answer = report(
        &app,
        PAGE_VIEW,
        "10.2.2.2",
        &[("x-tenant-id", long_tenant.as_str())],
        &view,
    )
    .await;
    assert_eq!(answer.status, 400, "{}", answer.text);
    let text = app
        .send(
            "POST",
            PAGE_VIEW,
            &[
                ("x-tenant-id", tenant.as_str()),
                ("content-type", "text/plain"),
            ],
            "path=/x",
        )
        .await;
    assert_eq!(text.status, 415, "{}", text.text);
    let broken = app
        .send(
            "POST",
            PAGE_VIEW,
            &[
                ("x-tenant-id", tenant.as_str()),
                ("content-type", "application/json"),
            ],
            "{\"path\":",
        )
        .await;
    assert_eq!(broken.status, 400, "{}", broken.text);

    // A valid token of another tenant than the header: refused.
    let mismatched = [
        ("authorization", auth.as_str()),
        ("x-tenant-id", "someone-else"),
    ];
    let answer = report(&app, PAGE_VIEW, "10.2.2.2", &mismatched, &view).await;
    assert_eq!(
        (answer.status, answer.body["errorCode"].as_str()),
        (403, Some("E2001")),
        "{}",
        answer.text
    );

    // The token alone names the tenant; a forged or expired one is no one.
    let token_only = [("authorization", auth.as_str())];
    assert_eq!(
        report(
            &app,
            PAGE_VIEW,
            "10.2.2.2",
            &token_only,
            &json!({"path": "/token"})
        )
        .await
        .status,
        200
    );
    let forged = format!("{}x", bearer("mallory", &tenant));
    let forged_headers = [
        ("authorization", forged.as_str()),
        ("x-tenant-id", tenant.as_str()),
    ];
    assert_eq!(
        report(
            &app,
            PAGE_VIEW,
            "10.2.2.2",
            &forged_headers,
            &json!({"path": "/forged"})
        )
        .await
        .status,
        200
    );
    // Long text is cut to its column, as the old server did.
    let long = json!({"path": format!("/{}", "가".repeat(700)), "title": "t".repeat(300)});
    assert_eq!(
        report(&app, PAGE_VIEW, "10.2.2.2", &anonymous, &long)
            .await
            .status,
        200
    );

    let stored = rows(
        &app,
        &format!(
            "SELECT user_id, char_length(path) AS path, char_length(title) AS title \
         FROM monitoring_page_view WHERE tenant_id = '{tenant}' ORDER BY id"
        ),
    )
    .await;
    assert_eq!(
        stored,
        vec![
            json!({"user_id": alice, "path": 6, "title": null}),
            json!({"user_id": null, "path": 7, "title": null}),
            json!({"user_id": null, "path": 500, "title": 200}),
        ]
    );
}

#[tokio::test]
async fn reports_are_capped_per_sender_and_per_address() {
    let db = TestDb::create().await;
    let app = spawn_app_in(
        db,
        &[
            ("MONITORING_MAX_PER_MINUTE_PER_USER", "3"),
            ("MONITORING_MAX_PER_MINUTE_PER_ADDRESS", "5"),
        ],
    )
    .await;
    start_of_a_minute().await;
    let tenant = unique("t");
    let (alice, bob) = (unique("alice"), unique("bob"));
    let (alice_auth, bob_auth) = (bearer(&alice, &tenant), bearer(&bob, &tenant));
    let as_alice = [("authorization", alice_auth.as_str())];
    let as_bob = [("authorization", bob_auth.as_str())];
    let office = format!("10.3.{}.{}", rand_octet(), rand_octet());
    let view = json!({"path": "/x"});
    let mut statuses = vec![];
    for _ in 0..4 {
        statuses.push(
            report(&app, PAGE_VIEW, &office, &as_alice, &view)
                .await
                .status,
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429], "alice's own minute");
    let refused = report(
        &app,
        EVENT,
        &office,
        &as_alice,
        &json!({"resourceKey": "a", "action": "CLICK"}),
    )
    .await;
    assert_eq!(
        refused.status, 429,
        "page views and events share the minute"
    );
    let wait: u64 = refused.headers["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=60).contains(&wait), "{wait}");
    assert_eq!(
        refused.body["message"],
        "Too many monitoring reports this minute"
    );
    statuses.clear();
    for _ in 0..3 {
        statuses.push(
            report(&app, PAGE_VIEW, &office, &as_bob, &view)
                .await
                .status,
        );
    }
    assert_eq!(
        statuses,
        [200, 200, 429],
        "the office's address has had its five"
    );
    // Another address is another count; anonymous reports count by address.
    let home = format!("10.4.{}.{}", rand_octet(), rand_octet());
    let anonymous = [("x-tenant-id", tenant.as_str())];
    statuses.clear();
    for _ in 0..4 {
        statuses.push(
            report(&app, PAGE_VIEW, &home, &anonymous, &view)
                .await
                .status,
        );
    }
    assert_eq!(statuses, [200, 200, 200, 429]);
    let stored = rows(
        &app,
        &format!("SELECT id FROM monitoring_page_view WHERE tenant_id = '{tenant}'"),
    )
    .await;
    assert_eq!(stored.len(), 3 + 2 + 3, "nothing refused was stored");
}

fn rand_octet() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0].max(1)
}

#[tokio::test]
async fn rows_older_than_the_retention_are_swept_and_newer_ones_kept() {
    let app = spawn_app().await;
    let tenant = unique("t");
    let anonymous = [("x-tenant-id", tenant.as_str())];
    for page in ["/old", "/new"] {
        assert_eq!(
            report(
                &app,
                PAGE_VIEW,
                "10.5.5.5",
                &anonymous,
                &json!({"path": page})
            )
            .await
            .status,
            200
        );
        let event = json!({"resourceKey": page, "action": "VIEW"});
        assert_eq!(
            report(&app, EVENT, "10.5.5.5", &anonymous, &event)
                .await
                .status,
            200
        );
    }
    let conn = app.db.as_ref().unwrap().connect().await;
    for sql in [
        "UPDATE monitoring_page_view SET created_at = now() - interval '31 days' WHERE path = '/old'",
        "UPDATE monitoring_event SET created_at = now() - interval '31 days' WHERE resource_key = '/old'",
        "UPDATE monitoring_page_daily SET day = day - 31 WHERE page_key = '/old'",
        "UPDATE monitoring_page_daily SET day = day - 29 WHERE page_key = '/new'",
    ] {
        conn.execute_unprepared(sql).await.unwrap();
    }
    let removed = main_service::monitoring::store::sweep(&app.state.db, 30)
        .await
        .unwrap();
    assert_eq!(removed, 3);
    let left = rows(
        &app,
        &format!(
            "SELECT path AS key FROM monitoring_page_view WHERE tenant_id = '{tenant}' \
         UNION ALL SELECT resource_key FROM monitoring_event WHERE tenant_id = '{tenant}' \
         UNION ALL SELECT page_key FROM monitoring_page_daily WHERE tenant_id = '{tenant}'"
        ),
    )
    .await;
    assert_eq!(left, vec![json!({"key": "/new"}); 3]);
    assert_eq!(
        main_service::monitoring::store::sweep(&app.state.db, 30)
            .await
            .unwrap(),
        0
    );
}
