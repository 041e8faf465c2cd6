//! Login and `main-service user add`.

use std::io::Write;
use std::process::{Command, Stdio};

use dwp_core::token::Verifier;
use sea_orm::{ConnectionTrait, DbBackend, Statement};

use crate::helpers::*;

/// A user with `password` in a tenant of its own, and the app on its database.
async fn app_with_user(password: &str, extra: &[(&str, &str)]) -> (TestApp, String) {
    let db = TestDb::create().await;
    let tenant = unique("tenant");
    let (ok, out) = user_add(&db, &tenant, "alice", password);
    assert!(ok, "{out}");
    (spawn_app_in(db, extra).await, tenant)
}

async fn attempt(app: &TestApp, tenant: &str, user: &str, password: &str, from: &str) -> Reply {
    let body = serde_json::json!({"username": user, "password": password, "tenantId": tenant});
    app.send(
        "POST",
        "/auth/login",
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", from),
        ],
        &body.to_string(),
    )
    .await
}

#[tokio::test]
async fn repeated_failures_lock_the_account_with_a_growing_back_off_and_success_resets_it() {
    let (app, tenant) = app_with_user("right-password", &[("LOGIN_LOCKOUT_SECS", "1")]).await;
    let from = "203.0.113.10";
    for n in 1..=5 {
        let res = attempt(&app, &tenant, "alice", "wrong", from).await;
        assert_eq!(res.status, 401, "failure {n}: {}", res.text);
    }
    // Locked: even the right password waits, before any hashing.
    let res = attempt(&app, &tenant, "alice", "right-password", from).await;
    assert_eq!(res.status, 429, "{}", res.text);
    assert_eq!(res.body["errorCode"], "E1001");
    assert_eq!(res.headers["retry-after"], "1");
    // Another address gets the same lock: it is the account's.
    let res = attempt(&app, &tenant, "alice", "right-password", "203.0.113.11").await;
    assert_eq!(res.status, 429);
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    // One more failure: the lock doubles.
    assert_eq!(
        attempt(&app, &tenant, "alice", "wrong", from).await.status,
        401
    );
    let res = attempt(&app, &tenant, "alice", "right-password", from).await;
    assert_eq!(res.status, 429);
    assert_eq!(res.headers["retry-after"], "2", "back-off grows");
    tokio::time::sleep(std::time::Duration::from_millis(2100)).await;
    let res = attempt(&app, &tenant, "alice", "right-password", from).await;
    assert_eq!(res.status, 200, "{}", res.text);
    // The success forgot the failures: one wrong password is a plain 401 again.
    assert_eq!(
        attempt(&app, &tenant, "alice", "wrong", from).await.status,
        401
    );
    assert_eq!(
        attempt(&app, &tenant, "alice", "right-password", from)
            .await
            .status,
        200
    );
}

#[tokio::test]
async fn one_address_guessing_at_many_accounts_is_locked_out_others_are_not() {
    let (app, tenant) =
        app_with_user("right-password", &[("LOGIN_MAX_FAILURES_PER_CLIENT", "3")]).await;
    let guesser = format!("198.18.{}.{}", rand_octet(), rand_octet());
    for user in ["bob", "carol", "dave"] {
        assert_eq!(
            attempt(&app, &tenant, user, "guess", &guesser).await.status,
            401
        );
    }
    let res = attempt(&app, &tenant, "erin", "guess", &guesser).await;
    assert_eq!(res.status, 429, "{}", res.text);
    assert!(res.headers.contains_key("retry-after"));
    let res = attempt(&app, &tenant, "alice", "right-password", "198.19.0.1").await;
    assert_eq!(res.status, 200, "another address logs in: {}", res.text);
}

fn rand_octet() -> u8 {
    uuid::Uuid::new_v4().as_bytes()[0]
}

#[tokio::test]
async fn a_login_rush_waits_its_turn_and_every_user_signs_in() {
    // Three slots (the default), nineteen users at once; the wait is long
    // enough for a loaded test machine.
    let (app, tenant) = app_with_user("right-password", &[("LOGIN_QUEUE_WAIT_SECS", "60")]).await;
    let tries = (0..19).map(|i| {
        let (app, tenant) = (&app, &tenant);
        async move {
            attempt(
                app,
                tenant,
                "alice",
                "right-password",
                &format!("192.0.2.{i}"),
            )
            .await
        }
    });
    let replies = futures_util::future::join_all(tries).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert!(statuses.iter().all(|s| *s == 200), "{statuses:?}");
}

#[tokio::test]
async fn logins_past_the_queue_or_its_wait_are_503_and_long_passwords_400() {
    let (app, tenant) = app_with_user(
        "right-password",
        &[("LOGIN_HASH_MEMORY_MIB", "19"), ("LOGIN_QUEUE_MAX", "0")],
    )
    .await;
    let tries = (0..12).map(|i| {
        let (app, tenant) = (&app, &tenant);
        async move { attempt(app, tenant, &format!("nobody{i}"), "x", "192.0.2.50").await }
    });
    let replies = futures_util::future::join_all(tries).await;
    let statuses: Vec<u16> = replies.iter().map(|r| r.status).collect();
    assert!(
        statuses.iter().all(|s| *s == 401 || *s == 503),
        "{statuses:?}"
    );
    let busy = replies
        .iter()
        .find(|r| r.status == 503)
        .expect("one slot for twelve");
    assert_eq!(busy.headers["retry-after"], "1");
    assert_eq!(busy.body["errorCode"], "E5000");
    let long = "p".repeat(1025);
    let res = attempt(&app, &tenant, "alice", &long, "192.0.2.51").await;
    assert_eq!(res.status, 400, "{}", res.text);
}

/// Runs `main-service user add` against `db` with `password` on stdin.
pub(crate) fn user_add(
    db: &TestDb,
    tenant: &str,
    username: &str,
    password: &str,
) -> (bool, String) {
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
    // What login could never take back is refused, not stored.
    for (name, password, why) in [
        ("twolines", "first-line\nsecond-line", "one line"),
        ("toolong", &"p".repeat(1025), "1024 bytes"),
        ("alice ", "s3cret-pass", "start or end"),
        ("al*ce", "s3cret-pass", "may not hold"),
        ("pаypal", "s3cret-pass", "scripts"),
    ] {
        let (added, out) = user_add(&db, "tenant1", name, password);
        assert!(!added && out.contains(why), "{name:?}: {out}");
    }

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

    // Its fixed names recur on every run: no account lock here (the locks
    // have tests of their own, in tenants of their own).
    let app = spawn_app_in(
        db,
        &[("JWT_TTL_SECS", "900"), ("LOGIN_MAX_FAILURES", "1000000")],
    )
    .await;
    let login = |body: &'static str| {
        let app = &app;
        async move {
            app.send(
                "POST",
                "/auth/login",
                &[
                    ("content-type", "application/json"),
                    // An address of its own: failures elsewhere do not lock it.
                    ("x-forwarded-for", "198.51.100.7"),
                ],
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
