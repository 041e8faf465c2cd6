//! The contract's health endpoints: `GET /main/health` (live) and
//! `/main/health/ready` (Redis answers; PostgreSQL reported, not required:
//! the decision path needs only Redis).

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

/// What the health routes answer.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub struct Health {
    /// `UP`: the service answers (and, when ready, Redis does).
    pub status: &'static str,
    /// Ready only: `UP`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub redis: Option<&'static str>,
    /// Ready only: `UP` or `DOWN` (reported, not required).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub postgres: Option<&'static str>,
}

#[utoipa::path(get, path = "/main/health", tag = "health", responses((status = 200, description = "Live", body = Envelope<Health>)))]
async fn health() -> Json<Envelope<Health>> {
    let live = Health {
        status: "UP",
        redis: None,
        postgres: None,
    };
    Json(Envelope::success("UP", live))
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
            redis: Some("UP"),
            postgres: Some(postgres),
        },
    )))
}
