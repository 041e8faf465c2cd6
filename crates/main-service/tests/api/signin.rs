//! The web frontend's sign-in, as it makes it (CONTRACT.md section 9):
//! tenant `"1"` (or none, or the number 1), then the policy, me,
//! permissions and menu calls with its headers: `X-Tenant-ID: 1`, a token
//! whenever one is stored (a stale one on the public calls too), never
//! `X-User-ID`.

use serde_json::{Value, json};

use crate::helpers::*;
use crate::login::user_add;

const PASSWORD: &str = "frontend-pass-1";

/// An account in tenant "1" and the app on its database.
async fn frontend_app() -> (TestApp, String) {
    let db = TestDb::create().await;
    let user = unique("admin");
    let (ok, out) = user_add(&db, "1", &user, PASSWORD);
    assert!(ok, "{out}");
    (spawn_app_in(db, &[]).await, user)
}

async fn login(app: &TestApp, body: Value) -> Reply {
    app.send(
        "POST",
        "/auth/login",
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", "198.51.100.9"),
        ],
        &body.to_string(),
    )
    .await
}

#[tokio::test]
async fn login_takes_the_tenant_as_a_string_a_number_or_not_at_all() {
    let (app, user) = frontend_app().await;
    for tenant in [json!("1"), json!(1), Value::Null] {
        let mut body = json!({"username": user, "password": PASSWORD});
        if !tenant.is_null() {
            body["tenantId"] = tenant.clone();
        }
        let res = login(&app, body).await;
        assert_eq!(res.status, 200, "{tenant}: {}", res.text);
        let data = &res.body["data"];
        assert_eq!(
            (data["userId"].as_str(), data["tenantId"].as_str()),
            (Some(user.as_str()), Some("1")),
            "{tenant}"
        );
        assert!(
            data["accessToken"]
                .as_str()
                .is_some_and(|t| t.split('.').count() == 3)
        );
    }
    for bad in [json!([1]), json!({"id": 1}), json!(true), json!("")] {
        let res = login(
            &app,
            json!({"username": user, "password": PASSWORD, "tenantId": bad}),
        )
        .await;
        assert_eq!(
            (res.status, res.body["errorCode"].as_str()),
            (400, Some("E1001")),
            "{bad}"
        );
    }
}

#[tokio::test]
async fn the_sign_in_page_and_the_ai_workspace_get_what_the_frontend_reads() {
    let (app, user) = frontend_app().await;
    let res = login(
        &app,
        json!({"username": user, "password": PASSWORD, "tenantId": "1"}),
    )
    .await;
    let token = res.body["data"]["accessToken"].as_str().unwrap().to_owned();
    let bearer = format!("Bearer {token}");
    let frontend = |auth: &str| {
        vec![
            ("content-type".to_owned(), "application/json".to_owned()),
            ("x-tenant-id".to_owned(), "1".to_owned()),
            ("authorization".to_owned(), auth.to_owned()),
        ]
    };
    let get = |path: &'static str, headers: Vec<(String, String)>| {
        let app = &app;
        async move {
            let headers: Vec<(&str, &str)> = headers
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .collect();
            app.send("GET", path, &headers, "").await
        }
    };

    // The public calls, with a stale token and with none.
    for auth in ["Bearer expired.or.forged", ""] {
        let policy = get("/auth/policy", frontend(auth)).await;
        assert_eq!(policy.status, 200, "{}", policy.text);
        let data = &policy.body["data"];
        assert_eq!(data["allowedLoginTypes"], json!(["LOCAL"]));
        assert_eq!(data["defaultLoginType"], "LOCAL");
        assert_eq!(data["tenantId"], "1");
        let idp = get("/auth/idp", frontend(auth)).await;
        assert_eq!((idp.status, &idp.body["data"]), (200, &json!([])));
    }

    // After login: the three calls of one Promise.all, without X-User-ID.
    let me = get("/auth/me", frontend(&bearer)).await;
    assert_eq!(me.status, 200, "{}", me.text);
    assert_eq!(
        (
            me.body["data"]["userId"].as_str(),
            me.body["data"]["tenantId"].as_str()
        ),
        (Some(user.as_str()), Some("1"))
    );
    let permissions = get("/auth/permissions", frontend(&bearer)).await;
    assert_eq!(permissions.status, 200, "{}", permissions.text);
    let allowed = permissions.body["data"].as_array().unwrap();
    assert!(
        allowed
            .iter()
            .any(|p| p["resourceKey"] == "menu.ai-workspace"
                && p["permissionCode"] == "VIEW"
                && p["effect"] == "ALLOW"),
        "{allowed:?}"
    );
    let menus = get("/auth/menus/tree", frontend(&bearer)).await;
    assert_eq!(menus.status, 200, "{}", menus.text);
    let menu = &menus.body["data"]["menus"][0];
    assert_eq!(
        (
            menu["menuKey"].as_str(),
            menu["path"].as_str(),
            menu["menuName"].as_str()
        ),
        (
            Some("menu.ai-workspace"),
            Some("/ai-workspace"),
            Some("AI Workspace")
        )
    );
    assert!(menu["children"].as_array().is_some_and(Vec::is_empty));

    // The private ones need the token, and a tenant that agrees with it.
    for path in ["/auth/me", "/auth/permissions", "/auth/menus/tree"] {
        let none = get(path, frontend("")).await;
        assert_eq!(
            (none.status, none.body["errorCode"].as_str()),
            (401, Some("E2000")),
            "{path}"
        );
        let mut other = frontend(&bearer);
        other[1].1 = "2".into();
        let other = get(path, other).await;
        assert_eq!(
            (other.status, other.body["errorCode"].as_str()),
            (403, Some("E2001")),
            "{path}"
        );
    }
}
