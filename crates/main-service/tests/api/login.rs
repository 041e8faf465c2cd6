//! Login and `main-service user add`.

use std::io::Write;
use std::process::{Command, Stdio};

use dwp_core::token::Verifier;
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::helpers::*;

/// Runs `main-service user add` against `db` with `password` on stdin.
fn user_add(db: &TestDb, tenant: &str, username: &str, password: &str) -> (bool, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_main-service"))
        .args([
            "user",
            "add",
            "--tenant",
            tenant,
            "--username",
            username,
            "--password-stdin",
        ])
        .env("DATABASE_URL", &db.url)
        .env_remove("JWT_SECRET")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(format!("{password}\n").as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn a_user_added_on_the_command_line_logs_in() {
    let db = TestDb::create().await;
    // The command applies the migrations itself (the database is empty).
    let (ok, out) = user_add(&db, "tenant1", "user123", "s3cret-pass");
    assert!(ok, "{out}");
    let (again, out) = user_add(&db, "tenant1", "user123", "other-pass");
    assert!(!again && out.contains("already exists"), "{out}");
    let (short, out) = user_add(&db, "tenant1", "shorty", "short");
    assert!(!short && out.contains("at least 8"), "{out}");

    let conn = db.connect().await;
    let row = conn
        .query_one_raw(Statement::from_string(
            DbBackend::Postgres,
            "SELECT password_hash FROM app_user WHERE username = 'user123'",
        ))
        .await
        .unwrap()
        .unwrap();
    let hash: String = row.try_get("", "password_hash").unwrap();
    assert!(
        hash.starts_with("$argon2id$") && !hash.contains("s3cret"),
        "{hash}"
    );
    conn.close().await.unwrap();

    let app = spawn_app_in(db, &[("JWT_TTL_SECS", "900")]).await;
    let login = |body: &'static str| {
        let app = &app;
        async move {
            app.send(
                "POST",
                "/auth/login",
                &[("content-type", "application/json")],
                body,
            )
            .await
        }
    };
    let good =
        login(r#"{"username":"user123","password":"s3cret-pass","tenantId":"tenant1"}"#).await;
    assert_eq!(good.status, 200, "{}", good.text);
    assert_eq!(good.body["data"]["tokenType"], "Bearer");
    assert_eq!(good.body["data"]["expiresIn"], 900);
    let token = good.body["data"]["accessToken"].as_str().unwrap();
    let claims = Verifier::new(SECRET.as_bytes(), None)
        .verify(token)
        .unwrap();
    assert_eq!(
        (claims.sub.as_str(), claims.tenant_id.as_deref()),
        ("user123", Some("tenant1"))
    );
    assert_eq!(claims.exp - claims.iat.unwrap(), 900);
    // The token works on the rest of the API.
    let tasks = app
        .send(
            "GET",
            "/main/agent/tasks",
            &[("authorization", &format!("Bearer {token}"))],
            "",
        )
        .await;
    assert_eq!(tasks.status, 200, "{}", tasks.text);

    let wrong_password =
        login(r#"{"username":"user123","password":"nope-nope","tenantId":"tenant1"}"#).await;
    let wrong_user =
        login(r#"{"username":"nobody","password":"s3cret-pass","tenantId":"tenant1"}"#).await;
    let wrong_tenant =
        login(r#"{"username":"user123","password":"s3cret-pass","tenantId":"tenant2"}"#).await;
    for reply in [&wrong_password, &wrong_user, &wrong_tenant] {
        assert_eq!(
            (reply.status, reply.body["errorCode"].as_str()),
            (401, Some("E2000"))
        );
        assert_eq!(
            reply.body["message"], wrong_password.body["message"],
            "one message for all"
        );
    }
    let missing = login(r#"{"username":"user123"}"#).await;
    assert_eq!(
        (missing.status, missing.body["errorCode"].as_str()),
        (400, Some("E1001"))
    );
}
