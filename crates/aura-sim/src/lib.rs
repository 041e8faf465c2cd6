//! aura-sim: a reference agent that speaks Aura-Platform's protocol exactly
//! (CONTRACT.md sections 4 and 5), so the whole flow runs locally and in
//! tests without the real Python agent and its LLM.
//!
//! # Layout
//! - [`config`]: the typed configuration.
//! - [`frame`]: SSE frames and JSON written the way Aura-Platform writes them.
//! - [`auth`]: the Bearer check Aura-Platform does (`{"detail": ...}` errors).
//! - [`stream`]: `POST /aura/test/stream`, the scripted agent run.
//! - [`approval`]: the HITL pause over Redis.
//!
//! `GET /sim/runs` counts runs started and cancelled (a test's view of
//! the agent; the real agent has no such endpoint).
#![forbid(unsafe_code)]

pub mod approval;
pub mod auth;
pub mod config;
pub mod frame;
pub mod stream;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::routing::{get, post};
use dwp_core::token::Verifier;
use tokio::net::TcpListener;

pub use config::Config;

/// What every request shares.
pub struct AppState {
    /// The configuration.
    pub config: Config,
    /// Token verification with `JWT_SECRET`.
    pub verifier: Verifier,
    /// Redis (HITL requests, signals, channels); connected per run.
    pub redis: dwp_core::redis::Target,
    /// Runs started and cancelled, for tests (`GET /sim/runs`).
    pub runs: Runs,
}

/// How many runs began, and how many ended with their client gone: what a
/// test counts at the agent (the real agent has no such endpoint; nothing
/// else differs).
#[derive(Debug, Default)]
pub struct Runs {
    /// Runs started (a stream request that passed the token check).
    pub started: std::sync::atomic::AtomicU64,
    /// Runs that ended because their client went away.
    pub cancelled: std::sync::atomic::AtomicU64,
}

/// The application.
pub fn app(config: Config) -> Router {
    let state = Arc::new(AppState {
        verifier: Verifier::new(config.jwt_secret.as_bytes(), None),
        redis: config.redis.clone(),
        runs: Runs::default(),
        config,
    });
    Router::new()
        .route("/health", get(health))
        .route("/sim/runs", get(runs))
        .route("/aura/test/stream", post(stream::stream))
        .with_state(state)
}

/// Serves on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let limits = http_serve::Limits {
        header_read_timeout: config.header_read_timeout,
        grace: std::time::Duration::from_secs(30),
    };
    let app = app(config);
    tracing::info!(addr = %listener.local_addr()?, "aura-sim listening");
    http_serve::serve(listener, app, limits, shutdown).await
}

async fn runs(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
) -> axum::Json<serde_json::Value> {
    use std::sync::atomic::Ordering::Relaxed;
    axum::Json(serde_json::json!({
        "started": state.runs.started.load(Relaxed),
        "cancelled": state.runs.cancelled.load(Relaxed),
    }))
}

async fn health() -> axum::Json<serde_json::Value> {
    axum::Json(serde_json::json!({"status": "healthy", "service": "aura-sim"}))
}
