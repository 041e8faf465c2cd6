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
use serde::Serialize;

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

/// How a tenant signs in.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Policy {
    /// The tenant asked about.
    pub tenant_id: String,
    /// Always `LOCAL`.
    pub default_login_type: &'static str,
    /// Always `["LOCAL"]`.
    pub allowed_login_types: [&'static str; 1],
    /// Always true.
    pub local_login_enabled: bool,
    /// Always false.
    pub sso_login_enabled: bool,
    /// Always null.
    pub sso_provider_key: Option<String>,
    /// Always false.
    pub require_mfa: bool,
}

/// The signed-in user.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    /// The token's `sub`.
    pub user_id: String,
    /// The same.
    pub username: String,
    /// The same.
    pub display_name: String,
    /// The login name when it is an e-mail address.
    pub email: Option<String>,
    /// The token's tenant.
    pub tenant_id: String,
    /// Always `["USER"]`.
    pub roles: [&'static str; 1],
}

/// One permission.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Permission {
    /// `MENU`.
    pub resource_type: &'static str,
    /// The menu key.
    pub resource_key: &'static str,
    /// `VIEW`.
    pub permission_code: &'static str,
    /// `ALLOW`.
    pub effect: &'static str,
}

/// The menu tree.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct MenuTree {
    /// The top-level entries.
    pub menus: Vec<Menu>,
}

/// One menu entry.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Menu {
    /// What permissions name it by.
    pub menu_key: &'static str,
    /// Shown.
    pub menu_name: &'static str,
    /// The frontend's route.
    pub path: &'static str,
    /// An icon name.
    pub icon: &'static str,
    /// The section.
    pub group: &'static str,
    /// Position.
    pub sort_order: u32,
    /// Always empty.
    #[schema(no_recursion)]
    pub children: Vec<Menu>,
}

/// An identity provider for SSO; none are offered.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct IdentityProvider {
    /// The provider's key.
    pub provider_key: String,
}

#[utoipa::path(get, path = "/auth/policy", tag = "auth", params(("X-Tenant-ID" = Option<String>, Header, description = "The tenant asked about (`DEFAULT_TENANT_ID` when absent)")),
    responses((status = 200, description = "How this tenant signs in: local login only", body = Envelope<Policy>)))]
async fn policy(
    axum::extract::State(state): axum::extract::State<Arc<AppState>>,
    headers: HeaderMap,
) -> Json<Envelope<Policy>> {
    let tenant = headers
        .get(TENANT_ID)
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|t| !t.is_empty() && t.len() <= 50)
        .unwrap_or(&state.config.default_tenant);
    Json(Envelope::success(
        "Login policy",
        Policy {
            tenant_id: tenant.to_owned(),
            default_login_type: "LOCAL",
            allowed_login_types: ["LOCAL"],
            local_login_enabled: true,
            sso_login_enabled: false,
            sso_provider_key: None,
            require_mfa: false,
        },
    ))
}

#[utoipa::path(get, path = "/auth/idp", tag = "auth",
    responses((status = 200, description = "The identity providers for SSO: none", body = Envelope<Vec<IdentityProvider>>)))]
async fn idp() -> Json<Envelope<Vec<IdentityProvider>>> {
    Json(Envelope::success("Identity providers", Vec::new()))
}

#[utoipa::path(get, path = "/auth/me", tag = "auth", params(("X-Tenant-ID" = Option<String>, Header, description = "When sent, must equal the token's `tenant_id`")),
    responses((status = 200, description = "The signed-in user", body = Envelope<Me>), (status = 401, description = "No valid token", body = Reply)), security(("bearer" = [])))]
async fn me(TokenCaller(caller): TokenCaller) -> Json<Envelope<Me>> {
    // A login name that is an e-mail address is also the address.
    let email = caller.user_id.contains('@').then(|| caller.user_id.clone());
    Json(Envelope::success(
        "Current user",
        Me {
            user_id: caller.user_id.clone(),
            username: caller.user_id.clone(),
            display_name: caller.user_id,
            email,
            tenant_id: caller.tenant_id,
            roles: ["USER"],
        },
    ))
}

#[utoipa::path(get, path = "/auth/permissions", tag = "auth", params(("X-Tenant-ID" = Option<String>, Header, description = "When sent, must equal the token's `tenant_id`")),
    responses((status = 200, description = "What the user may see: the AI workspace", body = Envelope<Vec<Permission>>), (status = 401, description = "No valid token", body = Reply)), security(("bearer" = [])))]
async fn permissions(_caller: TokenCaller) -> Json<Envelope<Vec<Permission>>> {
    Json(Envelope::success(
        "Permissions",
        vec![Permission {
            resource_type: "MENU",
            resource_key: AI_WORKSPACE,
            permission_code: "VIEW",
            effect: "ALLOW",
        }],
    ))
}

#[utoipa::path(get, path = "/auth/menus/tree", tag = "auth", params(("X-Tenant-ID" = Option<String>, Header, description = "When sent, must equal the token's `tenant_id`")),
    responses((status = 200, description = "The user's menu: the AI workspace", body = Envelope<MenuTree>), (status = 401, description = "No valid token", body = Reply)), security(("bearer" = [])))]
async fn menus(_caller: TokenCaller) -> Json<Envelope<MenuTree>> {
    let workspace = Menu {
        menu_key: AI_WORKSPACE,
        menu_name: "AI Workspace",
        path: "/ai-workspace",
        icon: "solar:smartphone-2-bold",
        group: "APPS",
        sort_order: 30,
        children: Vec::new(),
    };
    Json(Envelope::success(
        "Menu",
        MenuTree {
            menus: vec![workspace],
        },
    ))
}
