//! The real service on port 0 against the real Redis, and a client.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use http::Request;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use main_service::Config;
use serde_json::{Value, json};
use tokio::sync::oneshot;

pub const SECRET: &str = "main-service-test-secret-0123456789";

/// The Redis the tests use (`TEST_REDIS_URL`, default the local one).
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

pub fn config(redis_url: &str) -> Config {
    let env = HashMap::from([
        ("JWT_SECRET".to_string(), SECRET.to_string()),
        ("REDIS_URL".to_string(), redis_url.to_string()),
        ("MAIN_MAX_BODY_BYTES".to_string(), "4096".to_string()),
    ]);
    Config::from_sources(None, env).unwrap()
}

pub struct TestApp {
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        self.task.abort();
    }
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(config(&redis_url())).await
}

pub async fn spawn_app_with(config: Config) -> TestApp {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let task = tokio::spawn(main_service::run(listener, config, async {
        let _ = stopped.await;
    }));
    TestApp {
        addr,
        stop: Some(stop),
        task,
    }
}

pub struct Reply {
    pub status: u16,
    pub headers: http::HeaderMap,
    pub body: Value,
    pub text: String,
}

impl TestApp {
    pub async fn send(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &str,
    ) -> Reply {
        let stream = tokio::net::TcpStream::connect(self.addr).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let mut req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", self.addr.to_string());
        for (k, v) in headers {
            req = req.header(*k, *v);
        }
        let res = sender
            .send_request(req.body(Full::new(Bytes::from(body.to_owned()))).unwrap())
            .await
            .unwrap();
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

    /// A decision by `user` of `tenant` with a good token.
    pub async fn decide(
        &self,
        action: &str,
        request_id: &str,
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
        self.send(
            "POST",
            &format!("/aura/hitl/{action}/{request_id}"),
            &headers,
            body,
        )
        .await
    }
}

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

pub fn bearer(user: &str, tenant: &str) -> String {
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

pub fn unique(prefix: &str) -> String {
    format!("{prefix}_{}", uuid::Uuid::new_v4().simple())
}

pub async fn redis() -> redis::aio::MultiplexedConnection {
    redis::Client::open(redis_url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap()
}

/// Writes a pending request the way Aura-Platform does; returns (requestId, sessionId).
pub async fn agent_request(user: Option<&str>, tenant: Option<&str>) -> (String, String) {
    agent_request_at(&redis_url(), user, tenant).await
}

/// [`agent_request`] for anyone, in the Redis at `url`.
pub async fn agent_request_in(url: &str) -> (String, String) {
    agent_request_at(url, None, None).await
}

async fn agent_request_at(url: &str, user: Option<&str>, tenant: Option<&str>) -> (String, String) {
    let request_id = unique("req");
    let session_id = unique("session");
    let request = json!({
        "requestId": request_id,
        "sessionId": session_id,
        "actionType": "git_merge",
        "context": {"branch": "feature/x", "sources": []},
        "status": "pending",
        "userId": user,
        "tenantId": tenant,
        "createdAt": "2026-01-16T10:00:00",
    });
    let mut conn = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg(format!("hitl:request:{request_id}"))
        .arg(request.to_string())
        .arg("EX")
        .arg(1800)
        .query_async(&mut conn)
        .await
        .unwrap();
    let () = redis::cmd("SET")
        .arg(format!("hitl:session:{session_id}"))
        .arg("{}")
        .arg("EX")
        .arg(3600)
        .query_async(&mut conn)
        .await
        .unwrap();
    (request_id, session_id)
}

/// Subscribes to the session's channel like the agent; returns the message stream.
pub async fn subscribe(session_id: &str) -> redis::aio::PubSub {
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
