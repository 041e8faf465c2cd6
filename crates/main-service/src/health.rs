//! The contract's health endpoints: `GET /main/health` (live) and
//! `/main/health/ready` (Redis answers; PostgreSQL reported, not required:
//! the decision path needs only Redis), and `GET /main/info`.
//!
//! `/main/health` answers what the old main-service answered, a string in
//! `data` (`ApiResponse<String>`): the web frontend's dashboard, its first
//! page after sign-in, renders `data` as text, and an object there crashes
//! the page. The readiness check keeps its object (probes read the status).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use dwp_core::Envelope;

use crate::error::AppError;
use crate::state::AppState;

/// The routes (on the public and the admin listener).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/main/health", get(health))
        .route("/main/health/ready", get(ready))
}

/// What `/main/health` answers in `data`, as the old main-service did.
pub const LIVE: &str = "Main Service is running";

/// What `/main/info` answers: the service's name, what it is, its port.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Info {
    /// `dwp-main-service`.
    pub service: &'static str,
    /// What it does.
    pub description: &'static str,
    /// The port it listens on, as text (as the old service sent it).
    pub port: String,
}

/// `GET /main/info` (public only).
pub fn info_routes() -> Router<Arc<AppState>> {
    Router::new().route("/main/info", get(info))
}

#[utoipa::path(get, path = "/main/info", tag = "health", responses((status = 200, description = "The service, what it does and its port", body = Envelope<Info>)))]
async fn info(State(state): State<Arc<AppState>>) -> Json<Envelope<Info>> {
    Json(Envelope::success(
        "Main service",
        Info {
            service: "dwp-main-service",
            description: "DWP main service: human-in-the-loop decisions, agent tasks and sign-in",
            port: state.config.port.to_string(),
        },
    ))
}

/// What the readiness route answers.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `UP`: the service and Redis answer.
    pub status: &'static str,
    /// `UP`.
    pub redis: &'static str,
    /// `UP` or `DOWN` (reported, not required).
    pub postgres: &'static str,
}

#[utoipa::path(get, path = "/main/health", tag = "health", responses((status = 200, description = "Live: `data` is the text `Main Service is running`", body = Envelope<String>)))]
async fn health() -> Json<Envelope<&'static str>> {
    Json(Envelope::success("UP", LIVE))
}

#[utoipa::path(get, path = "/main/health/ready", tag = "health", responses((status = 200, description = "Redis answers; PostgreSQL reported", body = Envelope<Health>)))]
async fn ready(State(state): State<Arc<AppState>>) -> Result<Json<Envelope<Health>>, AppError> {
    state.store.ping().await?;
    // The decision path needs only Redis: PostgreSQL is reported, and its
    // routes answer 503 on their own while it is down.
    let postgres = if state.db.ping().await.is_ok() {
        "UP"
    } else {
        "DOWN"
    };
    Ok(Json(Envelope::success(
        "READY",
        Health {
            status: "UP",
            redis: "UP",
            postgres,
        },
    )))
}
