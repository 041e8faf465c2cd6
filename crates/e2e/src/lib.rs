//! The harness of the end-to-end suites (`tests/checklist.rs`,
//! `tests/faults.rs`): the real `gateway`, `main-service` and `aura-sim`
//! binaries (which `cargo build --workspace --bins` puts in the target
//! directory) started as processes on free ports of 127.0.0.1, against real
//! Redis and a fresh PostgreSQL database, and clients that go through the
//! gateway the way the frontend does. `servers` starts private Redis and
//! PostgreSQL instances for the tests that stop and restart them.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed unwrap is a failed test, and a scenario reads top to bottom"
)]
#![forbid(unsafe_code)]

pub mod servers;

use std::net::{SocketAddr, TcpListener};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use http_body_util::BodyExt;
use serde_json::{Value, json};

/// The HS256 secret every process of the stack shares.
pub const SECRET: &str = "e2e-test-secret-0123456789abcdef0123";
/// The password of every account [`Options::users`] creates.
pub const PASSWORD: &str = "e2e-password-1";

pub use testkit::{TestDb, redis_url};

/// `target/<profile>/NAME`, next to this test's own executable.
pub fn binary(name: &str) -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(|deps| deps.parent()).unwrap();
    let path = dir.join(name);
    assert!(
        path.exists(),
        "{} is missing: run `cargo build --workspace --bins` first (make test does)",
        path.display()
    );
    path
}

/// A port of 127.0.0.1 that was free a moment ago.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// The three processes and the database; all stopped and dropped on drop.
pub struct Stack {
    /// The gateway, what clients call.
    pub gateway: SocketAddr,
    /// The gateway's admin listener (`/metrics`).
    pub gateway_admin: SocketAddr,
    /// main-service, for calls that bypass the gateway.
    pub main: SocketAddr,
    /// main-service's admin listener (`/metrics`).
    pub main_admin: SocketAddr,
    /// aura-sim (its `GET /sim/runs` counts the runs it started).
    pub aura: SocketAddr,
    /// The Redis every process uses.
    pub redis_url: String,
    /// The tenant of every account.
    pub tenant: String,
    /// Each account's name in the test and its user id ([`Stack::user`]).
    pub users: Vec<(String, String)>,
    /// The fresh database (`db.name`, `db.url`), dropped after the
    /// processes are stopped.
    pub db: TestDb,
    /// main-service, aura-sim, gateway, in that order.
    pub children: Vec<Child>,
    /// An operator's `PSUBSCRIBE hitl:channel:*`, attached for the stack's
    /// life as the old HITL test guide (step 5) and monitoring tools do:
    /// `PUBLISH` counts it as a receiver, so every suite runs with it.
    pub watcher: tokio::task::JoinHandle<()>,
}

/// Attaches a pattern listener to every HITL channel and reads what it
/// hears until aborted.
async fn watch_channels(redis_url: &str) -> tokio::task::JoinHandle<()> {
    let mut pubsub = redis::Client::open(redis_url)
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub.psubscribe("hitl:channel:*").await.unwrap();
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut messages = pubsub.on_message();
        while messages.next().await.is_some() {}
    })
}

/// Index of each process in [`Stack::children`].
/// main-service.
pub const MAIN: usize = 0;
/// aura-sim.
pub const AURA: usize = 1;
/// The gateway.
pub const GATEWAY: usize = 2;

/// aura-sim's settings for suites that open many runs of one user within
/// a second (which the real agent gives one shared session id) or that
/// stop Redis under waiting runs (which the real agent does not survive):
/// unguessable session ids and a wait that subscribes first, reads the
/// stored signal and subscribes again.
pub const ROBUST_AGENT: &[(&str, &str)] = &[
    ("AURA_SIM_SESSION_IDS", "random"),
    ("AURA_SIM_WAIT", "robust"),
];

/// Waits until `hitl:channel:{session_id}` has `n` subscribers (the agent
/// subscribes only after it sent the `hitl` event).
pub async fn wait_for_listeners(redis_url: &str, session_id: &str, n: i64) {
    let mut conn = redis::Client::open(redis_url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(5);
    loop {
        let (_, count): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(dwp_core::hitl::channel(session_id))
            .query_async(&mut conn)
            .await
            .unwrap();
        if count >= n {
            return;
        }
        assert!(Instant::now() < deadline, "{count} of {n} listeners");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

/// How to start a [`Stack`].
#[derive(Default)]
pub struct Options<'a> {
    /// Accounts created (password [`PASSWORD`]), by the names the test
    /// uses; each gets a user id of its own ([`Stack::user`]).
    pub users: &'a [&'a str],
    /// Their tenant (`tenant1` when not given).
    pub tenant: Option<&'a str>,
    /// Extra environment of the gateway.
    pub gateway_env: &'a [(&'a str, &'a str)],
    /// Extra environment of aura-sim.
    pub aura_env: &'a [(&'a str, &'a str)],
    /// Extra environment of main-service.
    pub main_env: &'a [(&'a str, &'a str)],
    /// Another Redis than `TEST_REDIS_URL`.
    pub redis_url: Option<String>,
    /// How the three processes reach Redis instead of `REDIS_URL`
    /// (`REDIS_SENTINELS`, ...); `redis_url` stays the test's own view.
    pub redis_env: &'a [(&'a str, &'a str)],
    /// Another PostgreSQL server (its admin URL) than `TEST_DATABASE_URL`.
    pub admin_url: Option<String>,
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.watcher.abort();
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        testkit::destroy_groups(&self.redis_url, &format!("e2e-{}", self.db.name));
        // The database goes when `db` is dropped, after this.
    }
}

/// Processes started by [`Stack::start`] before the stack holds them.
struct Started(Vec<Child>);

impl Started {
    fn spawn(&mut self, cmd: &mut Command) {
        let child = cmd.spawn().unwrap_or_else(|e| {
            panic!(
                "{:?}: {e} (build it first: cargo build --workspace --bins)",
                cmd.get_program()
            )
        });
        self.0.push(child);
    }
}

impl Drop for Started {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// The stack with accounts for `users`.
pub async fn start(users: &[&str]) -> Stack {
    Stack::start(Options {
        users,
        ..Options::default()
    })
    .await
}

/// [`start`] with extra variables for the gateway.
pub async fn start_with(users: &[&str], gateway_env: &[(&str, &str)]) -> Stack {
    Stack::start(Options {
        users,
        gateway_env,
        ..Options::default()
    })
    .await
}

impl Stack {
    /// Creates the database and the accounts, starts the three processes and
    /// waits until each is ready and main-service's consumer group exists.
    pub async fn start(options: Options<'_>) -> Stack {
        let Options {
            users,
            gateway_env,
            aura_env,
            main_env,
            redis_url,
            redis_env,
            admin_url,
            tenant,
        } = options;
        let tenant = tenant.unwrap_or("tenant1").to_owned();
        // Session ids are built from the user id and the second (as the
        // real agent does), and suites run at once on one Redis: every
        // stack has users of its own.
        let users: Vec<(String, String)> = users
            .iter()
            .map(|name| ((*name).to_owned(), testkit::person(name)))
            .collect();
        let redis_url = redis_url.unwrap_or_else(testkit::redis_url);
        let admin_url = admin_url.unwrap_or_else(testkit::admin_database_url);
        let db = TestDb::create_on(&admin_url, "e2e").await;
        let (db_name, db_url) = (db.name.clone(), db.url.clone());
        for (_, user) in &users {
            add_account(&db_url, &tenant, user);
        }
        let (main, aura, gateway) = (free_port(), free_port(), free_port());
        let (main_admin, gateway_admin) = (free_port(), free_port());
        let common = |cmd: &mut Command| {
            if redis_env.is_empty() {
                cmd.env("REDIS_URL", &redis_url);
            } else {
                cmd.env_remove("REDIS_URL")
                    .env_remove("REDIS_HOST")
                    .env_remove("REDIS_PORT");
            }
            // Both listeners on 127.0.0.1, where free_port looked: an admin
            // listener on 0.0.0.0 also collides with any socket of the port
            // on 127.0.0.1 (a client's, a parallel test's).
            cmd.env("JWT_SECRET", SECRET)
                .envs(redis_env.iter().copied())
                .env("SERVER_HOST", "127.0.0.1")
                .env("ADMIN_HOST", "127.0.0.1")
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null());
        };
        // Killed if start-up fails half-way (a binary missing): a panic
        // here must not leave the processes already started running.
        let mut children = Started(Vec::new());
        let mut cmd = Command::new(binary("main-service"));
        common(&mut cmd);
        cmd.env("SERVER_PORT", main.to_string())
            .env("ADMIN_PORT", main_admin.to_string())
            .env("DATABASE_URL", &db_url)
            .env("CONSUMER_GROUP", format!("e2e-{db_name}"))
            .env("CONSUMER_GROUP_START", "$")
            .envs(main_env.iter().copied());
        children.spawn(&mut cmd);
        let mut cmd = Command::new(binary("aura-sim"));
        common(&mut cmd);
        cmd.env("SERVER_PORT", aura.to_string())
            .env("AURA_SIM_EVENT_DELAY_MS", "10")
            .envs(aura_env.iter().copied());
        children.spawn(&mut cmd);
        let mut cmd = Command::new(binary("gateway"));
        common(&mut cmd);
        // The suites open many streams as one user from one address; the
        // caps have their own tests (crates/gateway/tests/api/security.rs).
        cmd.env("GATEWAY_MAX_REQUESTS_PER_CLIENT", "0")
            .env("GATEWAY_MAX_STREAMS_PER_USER", "0")
            .env("GATEWAY_MAX_REQUESTS_PER_USER", "0")
            .env("ADMIN_PORT", gateway_admin.to_string())
            .envs(gateway_env.iter().copied())
            .env("SERVER_PORT", gateway.to_string())
            .env("AURA_PLATFORM_URI", format!("http://127.0.0.1:{aura}"))
            .env("MAIN_SERVICE_URI", format!("http://127.0.0.1:{main}"));
        children.spawn(&mut cmd);
        let watcher = watch_channels(&redis_url).await;
        let stack = Stack {
            watcher,
            gateway: ([127, 0, 0, 1], gateway).into(),
            gateway_admin: ([127, 0, 0, 1], gateway_admin).into(),
            main: ([127, 0, 0, 1], main).into(),
            main_admin: ([127, 0, 0, 1], main_admin).into(),
            aura: ([127, 0, 0, 1], aura).into(),
            redis_url,
            tenant,
            users,
            db,
            children: std::mem::take(&mut children.0),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        for (port, path, expect) in [
            (main, "/main/health/ready", "\"postgres\":\"UP\""),
            (aura, "/health", "healthy"),
            (gateway, "/health", ""),
        ] {
            loop {
                let addr: SocketAddr = ([127, 0, 0, 1], port).into();
                if let Ok(Some(reply)) = tokio::time::timeout(
                    Duration::from_secs(2),
                    try_call(addr, "GET", path, &[], ""),
                )
                .await
                    && reply.0 == 200
                    && reply.1.contains(expect)
                {
                    break;
                }
                assert!(
                    Instant::now() < deadline,
                    "{path} on {port} never became ready"
                );
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
        // The consumer group starts at the stream's end: wait until it exists.
        let mut conn = redis::Client::open(stack.redis_url.as_str())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap();
        loop {
            let groups: redis::RedisResult<redis::Value> = redis::cmd("XINFO")
                .arg("GROUPS")
                .arg(dwp_core::tasks::EVENTS_STREAM)
                .query_async(&mut conn)
                .await;
            if format!("{groups:?}").contains(&format!("e2e-{}", stack.db.name)) {
                break;
            }
            assert!(Instant::now() < deadline, "consumer group never created");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        stack
    }
}

impl Stack {
    /// Starts another main-service on the stack's database and Redis, in
    /// the same consumer group under a name of its own (a second replica);
    /// its address once it is ready. It is stopped with the stack.
    pub async fn add_main_replica(&mut self) -> SocketAddr {
        let port = free_port();
        let mut cmd = Command::new(binary("main-service"));
        cmd.env("REDIS_URL", &self.redis_url)
            .env("JWT_SECRET", SECRET)
            .env("SERVER_HOST", "127.0.0.1")
            .env("RUST_LOG", "warn")
            .env("SERVER_PORT", port.to_string())
            .env("ADMIN_PORT", "off")
            .env("DATABASE_URL", &self.db.url)
            .env("CONSUMER_GROUP", format!("e2e-{}", self.db.name))
            .env("CONSUMER_NAME", format!("replica-{port}"))
            .stdout(Stdio::null());
        let mut started = Started(Vec::new());
        started.spawn(&mut cmd);
        self.children.append(&mut started.0);
        let addr: SocketAddr = ([127, 0, 0, 1], port).into();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some((200, body, _)) = try_call(addr, "GET", "/main/health/ready", &[], "").await
                && body.contains("\"postgres\":\"UP\"")
            {
                return addr;
            }
            assert!(Instant::now() < deadline, "the replica never became ready");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

/// An open HITL feed (`GET /aura/hitl/events`), read event by event.
pub struct Feed {
    body: testkit::SseBody,
}

/// One event of a [`Feed`].
pub use testkit::SseEvent as FeedEvent;

impl Feed {
    /// Opens `user`'s feed of `tenant` at `addr` (the gateway, path
    /// `/api/aura/hitl/events`, or a main-service, `/aura/hitl/events`),
    /// after `last` when given.
    pub async fn open(
        addr: SocketAddr,
        path: &str,
        tenant: &str,
        token: &str,
        user: &str,
        last: Option<&str>,
    ) -> Feed {
        let res = testkit::open_feed(addr, path, tenant, token, user, last)
            .await
            .expect("the feed answers");
        assert_eq!(res.status(), 200, "the feed opens");
        Feed {
            body: testkit::SseBody::new(res.into_body()),
        }
    }

    /// The next event (20 s of silence at most).
    pub async fn next(&mut self) -> FeedEvent {
        FeedEvent::parse(&self.body.next().await.expect("a feed event"))
    }
}

/// Creates the account `user` of `tenant` (password [`PASSWORD`]) with
/// `main-service user add`, in the database at `db_url`.
pub fn add_account(db_url: &str, tenant: &str, user: &str) {
    let mut add = Command::new(binary("main-service"))
        .args([
            "user",
            "add",
            "--tenant",
            tenant,
            "--username",
            user,
            "--password-stdin",
        ])
        .env("DATABASE_URL", db_url)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    use std::io::Write;
    add.stdin
        .take()
        .unwrap()
        .write_all(PASSWORD.as_bytes())
        .unwrap();
    assert!(add.wait().unwrap().success(), "user add {user}");
}

/// A gateway process alone, in front of an agent the test brings itself;
/// killed on drop.
pub struct Gateway {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its admin listener (`/metrics`).
    pub admin: SocketAddr,
    /// The process.
    pub child: Child,
}

impl Gateway {
    /// Starts the gateway with `AURA_PLATFORM_URI` at `aura` and no token
    /// check, and waits for `/health`.
    pub async fn start(aura: SocketAddr, env: &[(&str, &str)]) -> Gateway {
        let (port, admin) = (free_port(), free_port());
        let child = Command::new(binary("gateway"))
            .env("SERVER_HOST", "127.0.0.1")
            .env("SERVER_PORT", port.to_string())
            .env("AURA_PLATFORM_URI", format!("http://{aura}"))
            .env("RUST_LOG", "warn")
            .env("GATEWAY_AUTH", "off")
            .env("GATEWAY_MAX_REQUESTS_PER_CLIENT", "0")
            .env("ADMIN_HOST", "127.0.0.1")
            .env("ADMIN_PORT", admin.to_string())
            .envs(env.iter().copied())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let gateway = Gateway {
            addr: ([127, 0, 0, 1], port).into(),
            admin: ([127, 0, 0, 1], admin).into(),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        while try_call(gateway.addr, "GET", "/health", &[], "")
            .await
            .is_none()
        {
            assert!(Instant::now() < deadline, "the gateway never became ready");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        gateway
    }

    /// Resident memory, in KiB (`VmRSS`).
    pub fn rss_kib(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    /// Open file descriptors.
    pub fn open_fds(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.child.id()))
            .unwrap()
            .count()
    }

    /// A sample of `/metrics` (`name` without labels).
    pub async fn metric(&self, name: &str) -> Option<f64> {
        let (_, text, _) = call(self.admin, "GET", "/metrics", &[], "").await;
        let prefix = format!("{name} ");
        text.lines()
            .find_map(|l| l.strip_prefix(prefix.as_str()))
            .and_then(|v| v.trim().parse().ok())
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One HTTP/1.1 request; (status, body, headers).
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> (u16, String, http::HeaderMap) {
    try_call(addr, method, path, headers, body)
        .await
        .expect("the server answers")
}

/// [`call`], `None` when the server cannot be reached or the exchange fails.
pub async fn try_call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Option<(u16, String, http::HeaderMap)> {
    let res = testkit::send(addr, method, path, headers, body.to_owned()).await?;
    let (status, headers) = (res.status().as_u16(), res.headers().clone());
    let bytes = res.into_body().collect().await.ok()?.to_bytes();
    Some((
        status,
        String::from_utf8_lossy(&bytes).into_owned(),
        headers,
    ))
}

impl Stack {
    /// The user id of the account the test calls `name`.
    pub fn user(&self, name: &str) -> String {
        self.users
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, id)| id.clone())
            .unwrap_or_else(|| panic!("no account {name:?} in this stack"))
    }

    /// `POST /api/auth/login` through the gateway; the access token. Like a
    /// client, it waits out a 503 (every password-check slot busy) for the
    /// `Retry-After` it is given, a few times.
    pub async fn login(&self, user: &str) -> String {
        self.login_in(&self.tenant, user).await
    }

    /// [`Stack::login`] to an account of `tenant`.
    pub async fn login_in(&self, tenant: &str, user: &str) -> String {
        let body = json!({"username": user, "password": PASSWORD, "tenantId": tenant}).to_string();
        let mut tries = 0;
        let (status, text) = loop {
            let (status, text, headers) = call(
                self.gateway,
                "POST",
                "/api/auth/login",
                &[("content-type", "application/json")],
                &body,
            )
            .await;
            tries += 1;
            if status != 503 || tries == 20 {
                break (status, text);
            }
            let wait = headers
                .get("retry-after")
                .and_then(|v| v.to_str().ok())
                .and_then(|v| v.parse().ok())
                .unwrap_or(1);
            tokio::time::sleep(Duration::from_secs(wait)).await;
        };
        assert_eq!(status, 200, "{text}");
        let reply: Value = serde_json::from_str(&text).unwrap();
        reply["data"]["accessToken"].as_str().unwrap().to_owned()
    }

    /// A JSON call through the gateway with `user`'s token and identity headers.
    pub async fn as_user(
        &self,
        token: &str,
        user: &str,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, Value) {
        self.in_tenant(&self.tenant, token, user, method, path, body)
            .await
    }

    /// [`Stack::as_user`] for a user of `tenant`.
    pub async fn in_tenant(
        &self,
        tenant: &str,
        token: &str,
        user: &str,
        method: &str,
        path: &str,
        body: &str,
    ) -> (u16, Value) {
        let auth = format!("Bearer {token}");
        let headers = [
            ("authorization", auth.as_str()),
            ("x-tenant-id", tenant),
            ("x-user-id", user),
            ("content-type", "application/json"),
        ];
        let (status, text, _) = call(self.gateway, method, path, &headers, body).await;
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// `POST /api/aura/hitl/approve/{request_id}` through the gateway.
    pub async fn approve(&self, token: &str, user: &str, request_id: &str) -> (u16, Value) {
        let path = format!("/api/aura/hitl/approve/{request_id}");
        self.as_user(token, user, "POST", &path, "").await
    }

    /// Opens an agent stream through the gateway.
    pub async fn stream(&self, token: Option<&str>, user: &str, prompt: &str) -> Stream {
        Stream::open_in(self.gateway, &self.tenant, token, user, prompt).await
    }
}

/// An open agent stream, read event block by event block.
pub struct Stream {
    /// The response status.
    pub status: u16,
    /// `X-DWP-Task-ID`, the recorded task.
    pub task_id: Option<String>,
    body: testkit::SseBody,
}

impl Stream {
    /// Opens an agent stream of tenant `tenant1` through the gateway at `gateway`.
    pub async fn open(
        gateway: SocketAddr,
        token: Option<&str>,
        user: &str,
        prompt: &str,
    ) -> Stream {
        Self::open_in(gateway, "tenant1", token, user, prompt).await
    }

    /// [`Stream::open`] in `tenant`.
    pub async fn open_in(
        gateway: SocketAddr,
        tenant: &str,
        token: Option<&str>,
        user: &str,
        prompt: &str,
    ) -> Stream {
        let auth = token.map(|t| format!("Bearer {t}"));
        let mut headers = vec![
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
            ("x-tenant-id", tenant),
            ("x-user-id", user),
            ("x-dwp-source", "FRONTEND"),
            ("x-dwp-caller-type", "USER"),
            ("last-event-id", "0"),
        ];
        if let Some(auth) = &auth {
            headers.push(("authorization", auth));
        }
        let body = json!({"prompt": prompt, "context": {"from": "e2e"}}).to_string();
        let res = testkit::send(gateway, "POST", "/api/aura/test/stream", &headers, body)
            .await
            .expect("the gateway answers");
        let task_id = res
            .headers()
            .get("x-dwp-task-id")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        Stream {
            status: res.status().as_u16(),
            task_id,
            body: testkit::SseBody::new(res.into_body()),
        }
    }
    /// The next event block, skipping the gateway's `: keep-alive` comments.
    pub async fn next(&mut self) -> Option<String> {
        self.body.next().await
    }

    /// Every remaining event block until the stream ends.
    pub async fn rest(&mut self) -> Vec<String> {
        self.body.rest().await
    }

    /// Events up to and including `hitl`; returns them and the requestId.
    pub async fn until_hitl(&mut self) -> (Vec<String>, String) {
        let mut seen = Vec::new();
        while let Some(block) = self.next().await {
            seen.push(block.clone());
            if kind(&block) == "hitl" {
                let data: Value = serde_json::from_str(data_of(&block)).unwrap();
                return (seen, data["data"]["requestId"].as_str().unwrap().to_owned());
            }
        }
        panic!("no hitl event in {seen:?}");
    }
}

/// The events of a run without a risky step (`summarise my inbox`).
pub const PLAIN_RUN: [&str; 7] = [
    "start",
    "thought",
    "plan_step",
    "plan_step",
    "content",
    "end",
    "[DONE]",
];

/// What an approved run sends after its `hitl` event.
pub const AFTER_APPROVAL: [&str; 5] = [
    "tool_execution",
    "tool_execution",
    "content",
    "end",
    "[DONE]",
];

/// The event type of a block (`[DONE]` for the terminator, with or
/// without the `id:` a resumable stream gives it).
pub fn kind(block: &str) -> String {
    if block.lines().any(|l| l == "data: [DONE]") {
        return "[DONE]".into();
    }
    block
        .lines()
        .find_map(|l| l.strip_prefix("event: "))
        .unwrap_or("")
        .to_owned()
}

/// The `data:` of a block.
pub fn data_of(block: &str) -> &str {
    block
        .lines()
        .find_map(|l| l.strip_prefix("data: "))
        .unwrap_or("")
}

/// [`kind`] of each block.
pub fn kinds(blocks: &[String]) -> Vec<String> {
    blocks.iter().map(|b| kind(b)).collect()
}

/// A token with this header and these claims, signed with `secret` by HS256
/// whatever the header says (how forgers try it).
pub fn forge(header: Value, claims: Value, secret: &[u8]) -> String {
    use base64::Engine;
    let b64 = |v: &Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let message = format!("{}.{}", b64(&header), b64(&claims));
    let key = jsonwebtoken::EncodingKey::from_secret(secret);
    let signature =
        jsonwebtoken::crypto::sign(message.as_bytes(), &key, jsonwebtoken::Algorithm::HS256)
            .unwrap();
    format!("{message}.{signature}")
}
