//! Spring Boot Actuator's health endpoints, so the probes and monitors
//! written for the old Java service keep working: `GET /actuator/health`
//! and `/actuator/health/readiness` answer `{"status":"UP"}` while Redis
//! (which every decision needs) answers, else `{"status":"DOWN"}` with 503;
//! `/actuator/health/liveness` is UP while the process serves. PostgreSQL
//! is reported as a component of `/actuator/health`, not a condition (its
//! routes answer 503 on their own while it is down). These are Actuator's
//! own shapes, not the envelope.

use std::sync::Arc;

use axum::extract::State;
use axum::routing::get;
use axum::{Json, Router};
use http::StatusCode;
use serde_json::{Value, json};

use crate::state::AppState;

/// The routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/actuator/health", get(health))
        .route("/actuator/health/readiness", get(readiness))
        .route("/actuator/health/liveness", get(liveness))
}

fn status(up: bool) -> &'static str {
    if up { "UP" } else { "DOWN" }
}

fn answer(up: bool, body: Value) -> (StatusCode, Json<Value>) {
    let code = if up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

#[utoipa::path(get, path = "/actuator/health", tag = "health", responses((status = 200, description = "`{\"status\":\"UP\",\"components\":...}`: Redis answers"), (status = 503, description = "`{\"status\":\"DOWN\",...}`: Redis does not answer")))]
async fn health(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let redis = state.store.ping().await.is_ok();
    let db = state.db.ping().await.is_ok();
    answer(
        redis,
        json!({"status": status(redis), "components": {
            "redis": {"status": status(redis)},
            "db": {"status": status(db)},
        }}),
    )
}

#[utoipa::path(get, path = "/actuator/health/readiness", tag = "health", responses((status = 200, description = "`{\"status\":\"UP\"}`: Redis answers"), (status = 503, description = "`{\"status\":\"DOWN\"}`")))]
async fn readiness(State(state): State<Arc<AppState>>) -> (StatusCode, Json<Value>) {
    let redis = state.store.ping().await.is_ok();
    answer(redis, json!({"status": status(redis)}))
}

#[utoipa::path(get, path = "/actuator/health/liveness", tag = "health", responses((status = 200, description = "`{\"status\":\"UP\"}`")))]
async fn liveness() -> Json<Value> {
    Json(json!({"status": "UP"}))
}
