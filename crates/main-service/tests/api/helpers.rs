//! The real service on port 0 against the real Redis, and a client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use http_body_util::BodyExt;
use std::sync::Arc;

use main_service::{AppState, Config};
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub(crate) const SECRET: &str = "main-service-test-secret-0123456789";

pub(crate) use testkit::{TestDb, admin_database_url, redis_url};

/// The test configuration: a consumer group of its own that starts at the
/// stream's end, so parallel tests never take each other's entries.
/// For tests of the Redis side only: no migrations, no consumers.
pub(crate) fn config(redis_url: &str) -> Config {
    config_with(
        redis_url,
        &admin_database_url(),
        &[("DB_AUTO_MIGRATE", "false"), ("CONSUMERS_ENABLED", "false")],
    )
}

pub(crate) fn config_with(redis_url: &str, database_url: &str, extra: &[(&str, &str)]) -> Config {
    let mut env = HashMap::from([
        ("JWT_SECRET".to_string(), SECRET.to_string()),
        ("REDIS_URL".to_string(), redis_url.to_string()),
        ("DATABASE_URL".to_string(), database_url.to_string()),
        ("MAIN_MAX_BODY_BYTES".to_string(), "4096".to_string()),
        ("CONSUMER_GROUP".to_string(), unique("group")),
        ("CONSUMER_NAME".to_string(), unique("consumer")),
        ("CONSUMER_GROUP_START".to_string(), "$".to_string()),
        ("CONSUMER_CLAIM_IDLE_MS".to_string(), "1000".to_string()),
        // Every test calls from 127.0.0.1: the per-address lock has its own
        // test, with an address of its own.
        (
            "LOGIN_MAX_FAILURES_PER_CLIENT".to_string(),
            "1000000".to_string(),
        ),
    ]);
    for (k, v) in extra {
        env.insert(k.to_string(), v.to_string());
    }
    Config::from_sources(None, env).unwrap()
}

/// An HTTP client of one address.
pub(crate) struct Client {
    pub addr: SocketAddr,
}

pub(crate) struct TestApp {
    pub client: Client,
    /// The admin listener (`/metrics`).
    pub admin: Client,
    pub state: Arc<AppState>,
    pub db: Option<TestDb>,
    /// Set by [`TestApp::stop`]: the group outlives this app (a test
    /// starts another replica in it).
    keep_group: bool,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
        // Each test has a consumer group of its own: remove it with the test.
        if self.state.config.consumer.enabled && !self.keep_group {
            // Stop the consumers first, or one might create the group again.
            self.state.stop.cancel();
            let (url, group) = (
                self.state.config.redis.url.clone(),
                self.state.config.consumer.group.clone(),
            );
            let _ = std::thread::spawn(move || {
                std::thread::sleep(std::time::Duration::from_millis(100));
                testkit::destroy_groups(&url, &group);
            })
            .join();
        }
    }
}

/// The service against the real Redis and a fresh, migrated database.
pub(crate) async fn spawn_app() -> TestApp {
    spawn_app_in(TestDb::create().await, &[]).await
}

/// The service on `db` with extra variables; waits until it is migrated.
pub(crate) async fn spawn_app_in(db: TestDb, extra: &[(&str, &str)]) -> TestApp {
    let mut app = spawn_app_with(config_with(&redis_url(), &db.url, extra)).await;
    app.db = Some(db);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while !app.state.db.is_ready() {
        assert!(
            std::time::Instant::now() < deadline,
            "migrations did not finish"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if app.state.config.consumer.enabled {
        // The groups start at the streams' end: wait until they exist.
        let mut conn = redis().await;
        for stream in [
            dwp_core::tasks::EVENTS_STREAM,
            dwp_core::hitl::DECISIONS_STREAM,
        ] {
            loop {
                let groups: redis::RedisResult<Vec<redis::Value>> = redis::cmd("XINFO")
                    .arg("GROUPS")
                    .arg(stream)
                    .query_async(&mut conn)
                    .await;
                let listed = format!("{groups:?}");
                if listed.contains(&app.state.config.consumer.group) {
                    break;
                }
                assert!(
                    std::time::Instant::now() < deadline,
                    "consumer group never created"
                );
                tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            }
        }
    }
    app
}

pub(crate) async fn spawn_app_with(config: Config) -> TestApp {
    static LOGS: std::sync::Once = std::sync::Once::new();
    LOGS.call_once(|| {
        // RUST_LOG=debug cargo test ... shows the service's logs.
        if let Ok(filter) = tracing_subscriber::EnvFilter::try_from_env("RUST_LOG") {
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_test_writer()
                .init();
        }
    });
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let state = main_service::state(config).await.unwrap();
    let admin = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let admin_addr = admin.local_addr().unwrap();
    main_service::serve_admin(admin, state.clone());
    let task = tokio::spawn(main_service::serve(listener, state.clone(), async {
        let _ = stopped.await;
    }));
    TestApp {
        client: Client { addr },
        admin: Client { addr: admin_addr },
        state,
        db: None,
        keep_group: false,
        stop: Some(stop),
        task,
    }
}

impl TestApp {
    /// Stops the service and waits for it (consumers stopped, pool closed).
    pub(crate) async fn stop(mut self) -> Option<TestDb> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
        self.keep_group = true;
        self.db.take()
    }
}

pub(crate) struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl std::ops::Deref for TestApp {
    type Target = Client;

    fn deref(&self) -> &Client {
        &self.client
    }
}

impl Client {
    pub(crate) async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let res = testkit::send(self.addr, method, path, headers, body.to_owned())
            .await
            .expect("the service answers");
        let status = res.status().as_u16();
        let headers = res.headers().clone();
        let bytes = res.into_body().collect().await.unwrap().to_bytes();
        let text = String::from_utf8_lossy(&bytes).into_owned();
        Reply {
            status,
            headers,
            body: serde_json::from_str(&text).unwrap_or(Value::Null),
            text,
        }
    }

    /// A call by `user` of `tenant` with a good token and JSON body.
    pub(crate) async fn as_user(
        &self,
        method: &str,
        path: &str,
        user: &str,
        tenant: &str,
        body: &str,
    ) -> Reply {
        let auth = bearer(user, tenant);
        let headers = [
            ("authorization", auth.as_str()),
            ("x-tenant-id", tenant),
            ("x-user-id", user),
            ("content-type", "application/json"),
        ];
        self.send(method, path, &headers, body).await
    }

    /// `GET path` by `user` of `tenant` until it answers 200 and `done`
    /// holds for its `data` (10 s at most); that `data`.
    pub(crate) async fn get_until(
        &self,
        path: &str,
        user: &str,
        tenant: &str,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let reply = self.as_user("GET", path, user, tenant, "").await;
            if reply.status == 200 && done(&reply.body["data"]) {
                return reply.body["data"].clone();
            }
            assert!(
                std::time::Instant::now() < deadline,
                "{path} never got there: {}",
                reply.text
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }

    /// A decision by `user` of `tenant` with a good token.
    pub(crate) async fn decide(
        &self,
        action: &str,
        request_id: &str,
        user: &str,
        tenant: &str,
        body: &str,
    ) -> Reply {
        let path = format!("/aura/hitl/{action}/{request_id}");
        self.as_user("POST", &path, user, tenant, body).await
    }
}

pub(crate) fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub(crate) fn bearer(user: &str, tenant: &str) -> String {
    let claims = dwp_core::token::Claims {
        sub: user.into(),
        tenant_id: Some(tenant.into()),
        iat: Some(now()),
        exp: now() + 600,
    };
    format!(
        "Bearer {}",
        dwp_core::token::issue(&claims, SECRET.as_bytes())
    )
}

pub(crate) fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

pub(crate) async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Writes a pending request the way Aura-Platform does; returns (requestId, sessionId).
pub(crate) async fn agent_request(user: Option<&str>, tenant: Option<&str>) -> (String, String) {
    agent_request_at(&redis_url(), user, tenant).await
}

/// [`agent_request`] for `user123` of `tenant1`, in the Redis at `url`.
pub(crate) async fn agent_request_in(url: &str) -> (String, String) {
    agent_request_at(url, Some("user123"), Some("tenant1")).await
}

async fn agent_request_at(url: &str, user: Option<&str>, tenant: Option<&str>) -> (String, String) {
    let request_id = unique("req");
    let session_id = unique("session");
    agent_writes(url, &request_id, &session_id, json!(user), json!(tenant)).await;
    (request_id, session_id)
}

/// Writes `hitl:request:{request_id}` and `hitl:session:{session_id}` as
/// the real agent does, owners as given (strings, numbers or null).
pub(crate) async fn agent_writes(
    url: &str,
    request_id: &str,
    session_id: &str,
    user: Value,
    tenant: Value,
) {
    let request = json!({
        "requestId": request_id,
        "sessionId": session_id,
        "actionType": "git_merge",
        "context": {"branch": "feature/x", "sources": []},
        "status": "pending",
        "userId": user,
        "tenantId": tenant,
        "createdAt": 1795309470,
    });
    let session = json!({
        "sessionId": session_id,
        "requestId": request_id,
        "userId": user,
        "tenantId": tenant,
    });
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    for (key, value, ttl) in [
        (format!("hitl:request:{request_id}"), request, 1800),
        (format!("hitl:session:{session_id}"), session, 3600),
    ] {
        let () = redis::cmd("SET")
            .arg(key)
            .arg(value.to_string())
            .arg("EX")
            .arg(ttl)
            .query_async(&mut conn)
            .await
            .unwrap();
    }
}

/// Subscribes to the session's channel like the agent; returns the message stream.
pub(crate) async fn subscribe(session_id: &str) -> redis::aio::PubSub {
    let mut pubsub = redis::Client::open(redis_url())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub
        .subscribe(format!("hitl:channel:{session_id}"))
        .await
        .unwrap();
    pubsub
}
