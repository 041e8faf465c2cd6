//! The Bearer check Aura-Platform does: HS256 with `JWT_SECRET`, `sub`
//! required (401 `{"detail": ...}` otherwise), and the token's `tenant_id`
//! must not differ from `X-Tenant-ID` (403).

use axum::Json;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use dwp_core::headers::TENANT_ID;
use dwp_core::token::{Claims, Verifier};
use serde_json::json;

/// A refusal in FastAPI's shape (`WWW-Authenticate: Bearer` on 401).
pub fn detail(status: StatusCode, message: &str) -> Response {
    let mut response = (status, Json(json!({"detail": message}))).into_response();
    if status == StatusCode::UNAUTHORIZED {
        response.headers_mut().insert(
            http::header::WWW_AUTHENTICATE,
            http::HeaderValue::from_static("Bearer"),
        );
    }
    response
}

/// The verified claims, or the status and message that refuse the caller.
pub fn check(verifier: &Verifier, headers: &HeaderMap) -> Result<Claims, (StatusCode, String)> {
    let authorization = headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let claims = verifier
        .verify_header(authorization)
        .map_err(|e| (StatusCode::UNAUTHORIZED, e.to_string()))?;
    let tenant = headers.get(TENANT_ID).and_then(|v| v.to_str().ok());
    if let (Some(token_tenant), Some(header_tenant)) = (claims.tenant_id.as_deref(), tenant)
        && token_tenant != header_tenant
    {
        return Err((StatusCode::FORBIDDEN, "Tenant mismatch".into()));
    }
    Ok(claims)
}
