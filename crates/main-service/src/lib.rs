//! main-service: human-in-the-loop decisions over Redis, behind the JWT
//! security check (CONTRACT.md sections 5 to 7).
//!
//! # Layout
//! - [`config`]: the typed configuration and its loading.
//! - [`error`]: the one error type, written as the envelope.
//! - [`auth`]: the [`auth::Caller`] extractor (token and identity headers).
//! - [`body`]: JSON bodies with errors in the envelope.
//! - [`store`]: the Redis connection (lazy, self-reconnecting, bounded).
//! - [`hitl`]: approve, reject, read and create HITL requests.
//! - [`metrics`]: Prometheus metrics and the latency middleware.
#![forbid(unsafe_code)]

pub mod auth;
pub mod body;
pub mod config;
pub mod error;
pub mod hitl;
pub mod metrics;
pub mod store;

use std::future::Future;
use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, State};
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router};
use dwp_core::Envelope;
use dwp_core::token::Verifier;
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, StatusCode};
use tokio::net::TcpListener;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use config::Config;
use error::AppError;
use metrics::Metrics;
use store::Store;

/// What every handler shares.
pub struct AppState {
    /// The configuration.
    pub config: Config,
    /// Token verification with the shared secret.
    pub verifier: Verifier,
    /// Redis.
    pub store: Store,
    /// Metrics.
    pub metrics: Metrics,
}

/// The whole HTTP application.
pub fn app(config: Config) -> Result<Router, redis::RedisError> {
    let state = Arc::new(AppState {
        verifier: Verifier::new(config.jwt_secret.as_bytes(), config.jwt_audience.as_deref()),
        store: Store::new(&config.redis_url, config.redis_timeout)?,
        metrics: Metrics::default(),
        config,
    });
    let request_id = HeaderName::from_static("x-request-id");
    let layers = ServiceBuilder::new()
        .layer(SetRequestIdLayer::new(request_id.clone(), MakeRequestUuid))
        .layer(TraceLayer::new_for_http())
        .layer(PropagateRequestIdLayer::new(request_id))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            state.config.request_timeout,
        ))
        .layer(DefaultBodyLimit::max(state.config.max_body_bytes));
    Ok(Router::new()
        .route("/main/health", get(health))
        .route("/main/health/ready", get(ready))
        .route("/metrics", get(render_metrics))
        .merge(hitl::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            metrics::record,
        ))
        .layer(layers)
        .with_state(state))
}

/// Serves the application on `listener` until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let app = app(config).map_err(std::io::Error::other)?;
    tracing::info!(addr = %listener.local_addr()?, "main-service listening");
    axum::serve(listener, app)
        .with_graceful_shutdown(shutdown)
        .await
}

async fn health() -> Json<Envelope<serde_json::Value>> {
    Json(Envelope::success("UP", serde_json::json!({"status": "UP"})))
}

async fn ready(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Envelope<serde_json::Value>>, AppError> {
    state.store.ping().await?;
    Ok(Json(Envelope::success(
        "READY",
        serde_json::json!({"status": "UP", "redis": "UP"}),
    )))
}

async fn render_metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics.render(),
    )
}

async fn not_found() -> AppError {
    AppError::NotFound("No route for this path".into())
}

async fn method_not_allowed() -> AppError {
    AppError::MethodNotAllowed
}
