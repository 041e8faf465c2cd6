//! The security check of CONTRACT.md section 7, as an extractor: a handler
//! that takes a [`Caller`] only runs for a verified caller.
//!
//! `Authorization: Bearer` must verify (HS256, `sub` required, not expired
//! beyond the leeway: 401 E2000/E2002/E2003); `X-Tenant-ID` and `X-User-ID`
//! are required (401 E2000); the token's `tenant_id` must equal `X-Tenant-ID`
//! and its `sub` must equal `X-User-ID` (403 E2001).

use std::sync::Arc;

use axum::extract::FromRequestParts;
use dwp_core::headers::{TENANT_ID, USER_ID};
use http::request::Parts;

use crate::error::AppError;
use crate::state::AppState;

/// A verified caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The user id (`sub`, equal to `X-User-ID`).
    pub user_id: String,
    /// The tenant id (`tenant_id`, equal to `X-Tenant-ID`).
    pub tenant_id: String,
}

impl Caller {
    /// 403 unless `user_id` (a body's `userId`), when given, is the caller.
    pub fn must_be(&self, user_id: Option<&str>) -> Result<(), AppError> {
        match user_id {
            Some(user) if user != self.user_id => {
                Err(AppError::Forbidden("userId does not match the token"))
            }
            _ => Ok(()),
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, AppError> {
        identify(parts, state, true)
    }
}

/// A verified caller of the AgentTask API: the token says who it is; the
/// identity headers may be left out, but when sent they must agree (403),
/// and the token must name a tenant (403).
#[derive(Debug, Clone)]
pub struct TokenCaller(pub Caller);

impl FromRequestParts<Arc<AppState>> for TokenCaller {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, AppError> {
        identify(parts, state, false).map(Self)
    }
}

fn identify(parts: &Parts, state: &AppState, headers_required: bool) -> Result<Caller, AppError> {
    let authorization = parts
        .headers
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok());
    let claims = state
        .verifier
        .verify_header(authorization)
        .map_err(AppError::Token)?;
    let header = |name, missing| {
        let value = parts
            .headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .filter(|v| !v.is_empty());
        match value {
            None if headers_required => Err(AppError::Unauthenticated(missing)),
            value => Ok(value),
        }
    };
    let tenant = header(TENANT_ID, "X-Tenant-ID header is required")?;
    let user = header(USER_ID, "X-User-ID header is required")?;
    let Some(tenant_id) = claims.tenant_id else {
        return Err(AppError::Forbidden("The token names no tenant"));
    };
    if tenant.is_some_and(|t| t != tenant_id) {
        return Err(AppError::Forbidden("X-Tenant-ID does not match the token"));
    }
    if user.is_some_and(|u| u != claims.sub) {
        return Err(AppError::Forbidden("X-User-ID does not match the token"));
    }
    Ok(Caller {
        user_id: claims.sub,
        tenant_id,
    })
}
