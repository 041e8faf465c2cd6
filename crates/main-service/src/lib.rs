//! main-service: human-in-the-loop decisions over Redis behind the JWT
//! security check (CONTRACT.md sections 5 to 7), AgentTask persistence on
//! PostgreSQL (section 8), the consumers that turn recorded agent streams
//! and decisions into rows, and login.
//!
//! # Layout
//! - [`config`]: the typed configuration and its loading.
//! - [`error`]: the one error type, written as the envelope.
//! - [`auth`]: the [`auth::Caller`] extractor (token and identity headers).
//! - [`body`]: JSON bodies with errors in the envelope.
//! - [`store`]: the Redis connection (lazy, self-reconnecting, bounded).
//! - [`db`]: the PostgreSQL pool (lazy, bounded) and start-up migrations.
//! - [`entity`]: sea-orm entities of `agent_task`, `hitl_decision`, `app_user`.
//! - [`hitl`]: approve, reject, read and create HITL requests.
//! - [`hub`]: the live HITL feeds this replica holds, by owner.
//! - [`tasks`]: the AgentTask API, its rules, and the stream recorder.
//! - [`access`]: the access line, the request's ids on every log line, latency.
//! - [`audit`]: decisions from the outbox stream into `hitl_decision`.
//! - [`backlog`]: the pool, consumer-backlog and pending-request gauges, read at each scrape.
//! - [`consumer`]: the generic Redis Stream consumer-group loop.
//! - [`consumers`]: its two users (task rows, decision audit) on their thread.
//! - [`state`](mod@state): [`AppState`], what handlers and background tasks share.
//! - [`login`]: `POST /auth/login` and accounts.
//! - [`hashing`]: the password-check slots and the bounded queue before them.
//! - [`signin`]: what the web frontend reads around sign-in (policy, me, menus).
//! - [`throttle`]: login failures counted and locked out in Redis.
//! - [`quota`]: what one user may create per minute (HITL requests, tasks).
//! - [`cli`]: the `main-service user add` command.
//! - [`monitoring`]: page views and events the frontend reports, kept for a while.
//! - [`paging`]: the lists' `page` and `size`.
//! - [`metrics`]: Prometheus metrics and the latency middleware.
//! - [`health`]: the contract's liveness and readiness (`/main/health`).
//! - [`actuator`]: Spring Boot Actuator's health endpoints for the old probes.
//! - [`reply`]: the envelope every route answers with, for the OpenAPI document.
#![forbid(unsafe_code)]

pub mod access;
pub mod actuator;
pub mod audit;
pub mod auth;
pub mod backlog;
pub mod body;
pub mod cli;
pub mod config;
pub mod consumer;
pub mod consumers;
pub mod db;
pub mod entity;
pub mod error;
pub mod hashing;
pub mod health;
pub mod hitl;
pub mod hub;
pub mod login;
pub mod metrics;
pub mod monitoring;
pub mod openapi;
pub mod paging;
pub mod quota;
pub mod reply;
pub mod signin;
pub mod state;
pub mod store;
pub mod tasks;
pub mod throttle;

use std::future::Future;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, State};
use axum::response::IntoResponse;
use axum::routing::get;
use http::header::CONTENT_TYPE;
use http::{HeaderName, HeaderValue, StatusCode};
use tokio::net::TcpListener;
use tokio_util::task::TaskTracker;
use tower::ServiceBuilder;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

pub use config::Config;
use error::AppError;
pub use state::{AppState, state};

/// The whole HTTP application on `state`.
pub fn app(state: Arc<AppState>) -> Router {
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
    Router::new()
        .merge(health::routes())
        .merge(health::info_routes())
        .route("/main/openapi.json", get(openapi::document))
        .merge(hitl::routes())
        .merge(actuator::routes())
        .merge(tasks::routes())
        .merge(login::routes())
        .merge(signin::routes())
        .merge(monitoring::routes())
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            access::record,
        ))
        .layer(layers)
        .with_state(state)
}

/// The admin application (`ADMIN_PORT`): `/metrics` and the health checks,
/// apart from the public port.
pub fn admin_app(state: Arc<AppState>) -> Router {
    Router::new()
        .route("/metrics", get(render_metrics))
        .merge(health::routes())
        .fallback(not_found)
        .with_state(state)
}

/// Serves the application on `listener` (and the admin one on
/// `ADMIN_HOST`:`ADMIN_PORT`) until `shutdown` completes.
pub async fn run(
    listener: TcpListener,
    config: Config,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let admin = match &config.admin {
        Some((host, port)) => Some(TcpListener::bind((host.as_str(), *port)).await.map_err(
            |e| std::io::Error::new(e.kind(), format!("admin listener {host}:{port}: {e}")),
        )?),
        None => None,
    };
    let state = state(config).await?;
    if let Some(admin) = admin {
        tracing::info!(addr = %admin.local_addr()?, "admin listener (/metrics)");
        serve_admin(admin, state.clone());
    }
    serve(listener, state, shutdown).await
}

/// Serves [`admin_app`] on `listener` until the service stops.
pub fn serve_admin(listener: TcpListener, state: Arc<AppState>) {
    let stop = state.stop.clone();
    let limits = http_serve::Limits {
        header_read_timeout: state.config.header_read_timeout,
        grace: std::time::Duration::from_secs(1),
    };
    tokio::spawn(http_serve::serve(
        listener,
        admin_app(state),
        limits,
        async move { stop.cancelled().await },
    ));
}

/// [`run`] on a state the caller built (tests keep it to look inside):
/// starts the migrations and the consumers, serves, and on shutdown stops
/// the consumers and closes the pool.
pub async fn serve(
    listener: TcpListener,
    state: Arc<AppState>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stop = state.stop.clone();
    // Dropped before it finishes (an aborted task): the background work stops too.
    let _stop_on_drop = state.stop.clone().drop_guard();
    let background = TaskTracker::new();
    if state.config.db_auto_migrate {
        let (state, stop) = (state.clone(), stop.clone());
        background.spawn(async move {
            tokio::select! { () = state.db.migrate_until_done() => {}, () = stop.cancelled() => {} }
        });
    }
    background.spawn(hitl::delivery::run(state.clone(), stop.clone()));
    background.spawn(monitoring::store::run_sweeper(state.clone(), stop.clone()));
    background.spawn(hitl::expiry::run(state.clone(), stop.clone()));
    background.spawn(hitl::feed::run(state.clone(), stop.clone()));
    let consumers = if state.config.consumer.enabled {
        Some(consumers::start(state.clone(), stop.clone())?)
    } else {
        None
    };
    background.close();
    tracing::info!(addr = %listener.local_addr()?, "main-service listening");
    let limits = http_serve::Limits {
        header_read_timeout: state.config.header_read_timeout,
        grace: state.config.request_timeout,
    };
    // Open feeds end as the shutdown begins (they never end by themselves).
    let hub = state.feed.clone();
    let shutdown = async move {
        shutdown.await;
        hub.close();
    };
    let served = http_serve::serve(listener, app(state.clone()), limits, shutdown).await;
    // The consumers finish the batch in hand (it is acknowledged only after
    // its commit, so an interrupted one is read again next time).
    stop.cancel();
    state.feed.close();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(5), async {
        background.wait().await;
        if let Some(consumers) = consumers {
            let _ = consumers.await;
        }
    })
    .await;
    state.db.close().await;
    served
}

async fn render_metrics(State(state): State<Arc<AppState>>) -> impl IntoResponse {
    backlog::read(&state).await;
    (
        [(
            CONTENT_TYPE,
            HeaderValue::from_static(dwp_core::metrics::CONTENT_TYPE),
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
