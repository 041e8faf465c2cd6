//! What the test suites of main-service, aura-sim and e2e share: where the
//! test Redis and PostgreSQL are, a fresh database per test (dropped with
//! its handle), clean-up of a test's consumer groups, one HTTP/1.1 request
//! on a fresh connection, and an SSE response read event block by event
//! block.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed unwrap is a failed test, and a scenario reads top to bottom"
)]
#![forbid(unsafe_code)]

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

/// The Redis the tests use (`TEST_REDIS_URL`, default the local one).
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// A user id of one test's own, shaped like those the real agent meets:
/// an e-mail address with a space (`alice 1a2b3c4d5e6f@corp.example`).
/// The agent builds session ids from the user id and the second, so tests
/// running at once must never share a user.
pub fn person(name: &str) -> String {
    let tag = uuid::Uuid::new_v4().simple().to_string();
    format!("{name} {}@corp.example", &tag[..12])
}

/// A database whose role may create databases (`TEST_DATABASE_URL`; by
/// default the contract's role, which `scripts/services.sh` creates with
/// CREATEDB).
pub fn admin_database_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://dwp_user:dwp_password@127.0.0.1:5432/dwp_main".into())
}

/// A fresh, empty database with a random name, dropped (`WITH (FORCE)`)
/// when the handle is dropped.
pub struct TestDb {
    /// The database's name.
    pub name: String,
    /// Its URL.
    pub url: String,
    admin_url: String,
}

impl TestDb {
    /// A fresh database on the server of [`admin_database_url`].
    pub async fn create() -> Self {
        Self::create_on(&admin_database_url(), "test").await
    }

    /// A fresh database named `{prefix}_{random}` on the server `admin_url`
    /// points to.
    pub async fn create_on(admin_url: &str, prefix: &str) -> Self {
        use sea_orm::ConnectionTrait;
        let name = format!("{prefix}_{}", uuid::Uuid::new_v4().simple());
        let admin = sea_orm::Database::connect(admin_url)
            .await
            .expect("PostgreSQL is up (make services)");
        admin
            .execute_unprepared(&format!("CREATE DATABASE {name}"))
            .await
            .unwrap();
        admin.close().await.unwrap();
        let base = admin_url
            .rsplit_once('/')
            .expect("the admin URL names a database")
            .0;
        Self {
            url: format!("{base}/{name}"),
            name,
            admin_url: admin_url.to_owned(),
        }
    }

    /// A connection to it.
    pub async fn connect(&self) -> sea_orm::DatabaseConnection {
        sea_orm::Database::connect(&self.url).await.unwrap()
    }

    /// The same database reached through `url` (a TCP link in between, say);
    /// dropping either handle drops the database.
    pub fn via(&self, url: String) -> Self {
        Self {
            name: self.name.clone(),
            url,
            admin_url: self.admin_url.clone(),
        }
    }
}

impl Drop for TestDb {
    fn drop(&mut self) {
        let (name, admin_url) = (self.name.clone(), self.admin_url.clone());
        // Drop cannot await: a thread with its own runtime does the DROP.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                use sea_orm::ConnectionTrait;
                let connect = sea_orm::Database::connect(admin_url);
                if let Ok(Ok(admin)) = tokio::time::timeout(Duration::from_secs(5), connect).await {
                    let _ = admin
                        .execute_unprepared(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
                        .await;
                    let _ = admin.close().await;
                }
            });
        })
        .join();
    }
}

/// Removes consumer group `group` from both streams main-service reads.
pub fn destroy_groups(redis_url: &str, group: &str) {
    let Ok(mut conn) = redis::Client::open(redis_url).and_then(|c| c.get_connection()) else {
        return;
    };
    for stream in [
        dwp_core::tasks::EVENTS_STREAM,
        dwp_core::hitl::DECISIONS_STREAM,
    ] {
        let _: redis::RedisResult<i64> = redis::cmd("XGROUP")
            .arg("DESTROY")
            .arg(stream)
            .arg(group)
            .query(&mut conn);
    }
}

/// One HTTP/1.1 request on a new connection to `addr` (`Host` is `addr`
/// unless `headers` name one); `None` when the connection or the exchange
/// fails.
pub async fn send(
    addr: std::net::SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<Bytes>,
) -> Option<hyper::Response<hyper::body::Incoming>> {
    let tcp = tokio::net::TcpStream::connect(addr).await.ok()?;
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(tcp))
        .await
        .ok()?;
    tokio::spawn(conn);
    let mut req = http::Request::builder().method(method).uri(path);
    if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
        req = req.header("host", addr.to_string());
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let req = req.body(Full::new(body.into())).ok()?;
    sender.send_request(req).await.ok()
}

/// `GET path` (a HITL feed) at `addr` as `user` of `tenant` with
/// `token`, the headers the frontend sends, and `Last-Event-ID: last`
/// when given.
pub async fn open_feed(
    addr: std::net::SocketAddr,
    path: &str,
    tenant: &str,
    token: &str,
    user: &str,
    last: Option<&str>,
) -> Option<hyper::Response<hyper::body::Incoming>> {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("x-tenant-id", tenant),
        ("x-user-id", user),
        ("accept", "text/event-stream"),
    ];
    if let Some(last) = last {
        headers.push(("last-event-id", last));
    }
    send(addr, "GET", path, &headers, Bytes::new()).await
}

/// An SSE response body read event block by event block.
pub struct SseBody {
    body: hyper::body::Incoming,
    buffer: String,
}

impl SseBody {
    /// Wraps a response body.
    pub fn new(body: hyper::body::Incoming) -> Self {
        Self {
            body,
            buffer: String::new(),
        }
    }

    /// The next complete block (up to and including the blank line),
    /// skipping comment blocks such as the gateway's `: keep-alive`; `None`
    /// at the end of the body, on an error, or after 20 s of silence.
    pub async fn next(&mut self) -> Option<String> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block: String = self.buffer.drain(..end + 2).collect();
                if block.starts_with(':') {
                    continue;
                }
                return Some(block);
            }
            let frame = tokio::time::timeout(Duration::from_secs(20), self.body.frame())
                .await
                .ok()??
                .ok()?;
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// Whatever is left, as text (for a body that is not an event stream).
    pub async fn text(mut self) -> String {
        while let Some(Ok(frame)) = self.body.frame().await {
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&data));
            }
        }
        self.buffer
    }

    /// Every remaining block until the body ends.
    pub async fn rest(&mut self) -> Vec<String> {
        let mut out = Vec::new();
        while let Some(block) = self.next().await {
            out.push(block);
        }
        out
    }
}

/// One server-sent event: its `id:`, `event:` and `data:` (as JSON; null
/// when it is not JSON).
#[derive(Debug, Clone)]
pub struct SseEvent {
    /// `id:`.
    pub id: String,
    /// `event:`.
    pub event: String,
    /// `data:`, parsed.
    pub data: serde_json::Value,
}

impl SseEvent {
    /// Reads one block as [`SseBody::next`] returns it.
    pub fn parse(block: &str) -> Self {
        let line = |name: &str| {
            block
                .lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap_or("")
                .trim_start()
                .to_owned()
        };
        Self {
            id: line("id:"),
            event: line("event:"),
            data: serde_json::from_str(&line("data:")).unwrap_or(serde_json::Value::Null),
        }
    }

    /// `data.requestId` (the HITL feed's events).
    pub fn request(&self) -> &str {
        self.data["requestId"].as_str().unwrap_or("")
    }
}

/// The old main-service's `agent_tasks` as its Flyway `V2` creates it
/// (timestamps without a zone, no checks; `V3` then adds `created_by` and
/// `updated_by` bigint): the tests of the take-over build it.
pub const OLD_AGENT_TASKS_V2: &str = r"
CREATE TABLE agent_tasks (
  id bigserial PRIMARY KEY, task_id varchar(36) UNIQUE NOT NULL, user_id varchar(50) NOT NULL,
  tenant_id varchar(50) NOT NULL, task_type varchar(100) NOT NULL, status varchar(20) NOT NULL,
  progress integer NOT NULL DEFAULT 0, description text, input_data text, result_data text,
  plan_steps text, hitl_request_id varchar(100), error_message text, started_at timestamp,
  completed_at timestamp, created_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at timestamp NOT NULL DEFAULT CURRENT_TIMESTAMP);
";

/// A self-signed certificate for `localhost` written as `cert.pem` and
/// `key.pem` into a fresh directory (the caller removes it), and its DER
/// form for a client to trust.
pub fn localhost_certificate() -> (
    std::path::PathBuf,
    rustls::pki_types::CertificateDer<'static>,
) {
    let made = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("a certificate for localhost");
    let dir = std::env::temp_dir().join(format!("tls-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    std::fs::write(dir.join("cert.pem"), made.cert.pem()).expect("cert.pem written");
    std::fs::write(dir.join("key.pem"), made.key_pair.serialize_pem()).expect("key.pem written");
    (dir, made.cert.der().clone())
}

/// An HTTP/2 connection over TLS to `addr` as `localhost`, trusting `ca`;
/// panics unless ALPN chose `h2`.
pub async fn h2_over_tls(
    addr: std::net::SocketAddr,
    ca: rustls::pki_types::CertificateDer<'static>,
) -> hyper::client::conn::http2::SendRequest<http_body_util::Full<bytes::Bytes>> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add(ca).expect("the CA is a certificate");
    let provider = std::sync::Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS 1.2 and 1.3")
        .with_root_certificates(roots)
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .expect("the server listens");
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("a name");
    let tls = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config))
        .connect(name, tcp)
        .await
        .expect("the TLS handshake");
    assert_eq!(
        tls.get_ref().1.alpn_protocol(),
        Some(b"h2".as_slice()),
        "ALPN chose h2"
    );
    let (sender, conn) = hyper::client::conn::http2::handshake(
        hyper_util::rt::TokioExecutor::new(),
        hyper_util::rt::TokioIo::new(tls),
    )
    .await
    .expect("the HTTP/2 handshake");
    tokio::spawn(conn);
    sender
}
