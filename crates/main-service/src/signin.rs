//! What the web frontend reads to show its sign-in page and, once signed
//! in, the AI workspace (CONTRACT.md section 9), served for the built-in
//! accounts in the shapes the old auth server gave.
//!
//! `GET /auth/policy` and `GET /auth/idp` are public: they ignore any
//! token sent with them, so a stale one cannot break the sign-in page.
//! `GET /auth/me`, `/auth/permissions` and `/auth/menus/tree` need a
//! token; the identity headers may be left out (the frontend sends no
//! `X-User-ID` here) but must agree when sent. Every account may view the
//! AI workspace (where approvals happen) and nothing else is offered:
//! only local login, no SSO, no MFA.

use std::sync::Arc;

use axum::routing::get;
use axum::{Json, Router};
use dwp_core::Envelope;
use dwp_core::headers::TENANT_ID;
use http::HeaderMap;
use serde_json::{Value, json};

use crate::auth::TokenCaller;
use crate::reply::Reply;
use crate::state::AppState;

/// The one menu and permission every account has.
const AI_WORKSPACE: &str = "menu.ai-workspace";

/// The routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/auth/policy", get(policy))
        .route("/auth/idp", get(idp))
        .route("/auth/me", get(me))
        .route("/auth/permissions", get(permissions))
        .route("/auth/menus/tree", get(menus))
}

#[utoipa::path(get, path = "/auth/policy", tag = "auth", params(("X-Tenant-ID" = Option<String>, Header, description = "The tenant asked about (`DEFAULT_TENANT_ID` when absent)")),
    responses((status = 200, description = "How this tenant signs in: local login only", body = Reply)))]
async fn policy(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    headers: HeaderMap,
) -> Json<Envelope<Value>> {
    let tenant = headers
        .get(TENANT_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 50)
        .unwrap_or(&state.config.default_tenant);
    Json(Envelope::success(
        "Login policy",
        json!({
            "tenantId": tenant,
            "defaultLoginType": "LOCAL",
            "allowedLoginTypes": ["LOCAL"],
            "localLoginEnabled": true,
            "ssoLoginEnabled": false,
            "ssoProviderKey": null,
            "requireMfa": false,
        }),
    ))
}

#[utoipa::path(get, path = "/auth/idp", tag = "auth",
    responses((status = 200, description = "The identity providers for SSO: none", body = Reply)))]
async fn idp() -> Json<Envelope<Value>> {
    Json(Envelope::success("Identity providers", json!([])))
}

#[utoipa::path(get, path = "/auth/me", tag = "auth", params(("X-Tenant-ID" = Option<String>, Header, description = "When sent, must equal the token's `tenant_id`")),
    responses((status = 200, description = "The signed-in user", body = Reply), (status = 401, description = "No valid token", body = Reply)), security(("bearer" = [])))]
async fn me(TokenCaller(caller): TokenCaller) -> Json<Envelope<Value>> {
    // A login name that is an e-mail address is also the address.
    let email = caller.user_id.contains('@').then(|| caller.user_id.clone());
    Json(Envelope::success(
        "Current user",
        json!({
            "userId": caller.user_id,
            "username": caller.user_id,
            "displayName": caller.user_id,
            "email": email,
            "tenantId": caller.tenant_id,
            "roles": ["USER"],
        }),
    ))
}

#[utoipa::path(get, path = "/auth/permissions", tag = "auth", params(("X-Tenant-ID" = Option<String>, Header, description = "When sent, must equal the token's `tenant_id`")),
    responses((status = 200, description = "What the user may see: the AI workspace", body = Reply), (status = 401, description = "No valid token", body = Reply)), security(("bearer" = [])))]
async fn permissions(_caller: TokenCaller) -> Json<Envelope<Value>> {
    Json(Envelope::success(
        "Permissions",
        json!([{
            "resourceType": "MENU",
            "resourceKey": AI_WORKSPACE,
            "permissionCode": "VIEW",
            "effect": "ALLOW",
        }]),
    ))
}

#[utoipa::path(get, path = "/auth/menus/tree", tag = "auth", params(("X-Tenant-ID" = Option<String>, Header, description = "When sent, must equal the token's `tenant_id`")),
    responses((status = 200, description = "The user's menu: the AI workspace", body = Reply), (status = 401, description = "No valid token", body = Reply)), security(("bearer" = [])))]
async fn menus(_caller: TokenCaller) -> Json<Envelope<Value>> {
    Json(Envelope::success(
        "Menu",
        json!({"menus": [{
            "menuKey": AI_WORKSPACE,
            "menuName": "AI Workspace",
            "path": "/ai-workspace",
            "icon": "solar:smartphone-2-bold",
            "group": "APPS",
            "sortOrder": 30,
            "children": [],
        }]}),
    ))
}
