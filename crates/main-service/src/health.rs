//! The contract's health endpoints: `GET /main/health` (live) and
//! `/main/health/ready` (Redis answers; PostgreSQL reported, not required:
//! the decision path needs only Redis).

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use dwp_core::Envelope;

use crate::error::AppError;
use crate::reply::Reply;
use crate::state::AppState;

/// The routes (on the public and the admin listener).
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/main/health", get(health))
        .route("/main/health/ready", get(ready))
}

#[utoipa::path(get, path = "/main/health", tag = "health", responses((status = 200, description = "Live", body = Reply)))]
async fn health() -> Json<Envelope<serde_json::Value>> {
    Json(Envelope::success("UP", serde_json::json!({"status": "UP"})))
}

#[utoipa::path(get, path = "/main/health/ready", tag = "health", responses((status = 200, description = "Redis answers; PostgreSQL reported", body = Reply)))]
async fn ready(
    State(state): State<Arc<AppState>>,
) -> Result<Json<Envelope<serde_json::Value>>, AppError> {
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
        serde_json::json!({"status": "UP", "redis": "UP", "postgres": postgres}),
    )))
}
