//! What the web frontend's pages report: `POST /monitoring/page-view` on
//! every page and `POST /monitoring/event` on menu clicks and actions
//! (through the gateway `/api/monitoring/**`), collected as the old auth
//! server did and answered `{"accepted": true, "success": true}` (the old
//! server's field and the one the frontend's types name).
//!
//! Public, as before: a page reports before and after sign-in. The tenant
//! is `X-Tenant-ID`, else the token's; the user is the token's `sub` when a
//! valid token comes with the report (a body's `userId` is never believed),
//! and a report with an expired or invalid token is kept as anonymous
//! rather than refused, so a page whose sign-in lapsed never sees a 401
//! from its analytics. A valid token of another tenant than `X-Tenant-ID`
//! is 403.
//!
//! Bounded: 8 KiB a body (413), text fields cut to their columns as the
//! old server did, `metadata` an object of at most 4 KiB (413);
//! `MONITORING_MAX_PER_MINUTE_PER_USER` reports a minute per user (per
//! address without a token) and `MONITORING_MAX_PER_MINUTE_PER_ADDRESS`
//! per address (429 with `Retry-After`); rows older than
//! `MONITORING_RETENTION_DAYS` are removed ([`store::run_sweeper`]).

pub mod store;

use std::sync::Arc;

use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::routing::post;
use axum::{Json, Router};
use dwp_core::Envelope;
use dwp_core::headers::TENANT_ID;
use dwp_core::hitl::owner_field;
use http::request::Parts;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::body::JsonBody;
use crate::error::AppError;
use crate::quota::{self, Kind};
use crate::state::AppState;
use crate::throttle::ClientAddr;

/// The largest report body.
pub const MAX_BODY_BYTES: usize = 8 * 1024;

/// The largest `metadata`, as JSON text.
pub const MAX_METADATA_BYTES: usize = 4 * 1024;

/// The routes.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new()
        .route("/monitoring/page-view", post(page_view))
        .route("/monitoring/event", post(event))
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
}

/// Who sent a report, and from where.
#[derive(Debug, Clone)]
pub struct Reporter {
    /// `X-Tenant-ID`, else the token's tenant.
    pub tenant_id: String,
    /// The token's `sub` when a valid token came; `None`: anonymous.
    pub user_id: Option<String>,
    /// The client address ([`ClientAddr`]).
    pub client_addr: String,
    /// `User-Agent`, cut to 500 characters.
    pub user_agent: Option<String>,
}

impl FromRequestParts<Arc<AppState>> for Reporter {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, AppError> {
        let ClientAddr(addr) = ClientAddr::from_request_parts(parts, state).await?;
        let text = |name| {
            parts
                .headers
                .get(name)
                .and_then(|v| v.to_str().ok())
                .map(str::trim)
                .filter(|v| !v.is_empty())
        };
        let claims = text(http::header::AUTHORIZATION)
            .and_then(|auth| state.verifier.verify_header(Some(auth)).ok())
            .and_then(|c| c.tenant_id.map(|tenant| (c.sub, tenant)));
        let tenant_id = match (text(TENANT_ID), &claims) {
            (Some(header), Some((_, token))) if header != token => {
                return Err(AppError::Forbidden("X-Tenant-ID does not match the token"));
            }
            (Some(header), _) => header.to_owned(),
            (None, Some((_, token))) => token.clone(),
            (None, None) => {
                return Err(AppError::BadRequest(
                    "X-Tenant-ID header is required".into(),
                ));
            }
        };
        if tenant_id.len() > 50 || tenant_id.chars().any(char::is_control) {
            return Err(AppError::BadRequest(
                "X-Tenant-ID must be at most 50 bytes of text".into(),
            ));
        }
        Ok(Self {
            tenant_id,
            user_id: claims.map(|(user, _)| user),
            client_addr: cut(&addr, 64),
            user_agent: text(http::header::USER_AGENT).map(|ua| cut(ua, 500)),
        })
    }
}

impl Reporter {
    /// Counts this report against the sender's and the address's minute.
    async fn spend(&self, state: &AppState) -> Result<(), AppError> {
        let limits = &state.config.monitoring;
        let address = format!("addr:{}", self.client_addr);
        let sender = match &self.user_id {
            Some(user) => owner_field(&self.tenant_id, user),
            None => address.clone(),
        };
        quota::spend_as(&state.store, &sender, Kind::Monitoring, limits.per_user).await?;
        quota::spend_as(
            &state.store,
            &address,
            Kind::MonitoringAddress,
            limits.per_address,
        )
        .await
    }
}

/// A page view as the frontend sends it (`userId` is ignored).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PageView {
    /// The page's path (required, cut to 500 characters).
    pub path: Option<String>,
    /// The menu the page belongs to; the daily count's key when given, else the path.
    pub menu_key: Option<String>,
    /// The page's title (200).
    pub title: Option<String>,
    /// The browser's visitor id (255).
    pub visitor_id: Option<String>,
    /// `desktop`, `mobile`, ... (50).
    pub device: Option<String>,
    /// The page before (500).
    pub referrer: Option<String>,
    /// Anything else: an object of at most 4 KiB.
    pub metadata: Option<Value>,
}

/// An event (a click, an action) as the frontend sends it (`userId` is ignored).
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Event {
    /// What was acted on, e.g. `menu.ai-workspace` (required, 255).
    pub resource_key: Option<String>,
    /// `VIEW`, `CLICK`, `EXECUTE`, ... (stored upper-case, 50); this or `eventType` is required.
    pub action: Option<String>,
    /// The older name of `action`, used when `action` is absent.
    pub event_type: Option<String>,
    /// A label, e.g. the menu's name (200).
    pub label: Option<String>,
    /// The page's path (500).
    pub path: Option<String>,
    /// The browser's visitor id (255).
    pub visitor_id: Option<String>,
    /// Anything else: an object of at most 4 KiB.
    pub metadata: Option<Value>,
}

/// The answer to a report.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub struct Accepted {
    /// Always true (the old auth server's field).
    pub accepted: bool,
    /// Always true (the field the frontend's types name).
    pub success: bool,
}

fn accepted() -> Json<Envelope<Accepted>> {
    Json(Envelope::success(
        "Accepted",
        Accepted {
            accepted: true,
            success: true,
        },
    ))
}

#[utoipa::path(post, path = "/monitoring/page-view", tag = "monitoring", request_body = PageView,
    params(("X-Tenant-ID" = Option<String>, Header, description = "The tenant (else the token's)")),
    responses((status = 200, description = "Stored", body = Envelope<Accepted>),
        (status = 429, description = "Too many reports this minute from this user or address (E1001); `Retry-After` says when", body = crate::reply::Reply)))]
async fn page_view(
    State(state): State<Arc<AppState>>,
    reporter: Reporter,
    JsonBody(body): JsonBody<PageView>,
) -> Result<Json<Envelope<Accepted>>, AppError> {
    let path = required(body.path.as_deref(), "path")?;
    let row = store::PageViewRow {
        path: cut(path, 500),
        page_key: cut(
            body.menu_key
                .as_deref()
                .map(str::trim)
                .filter(|k| !k.is_empty())
                .unwrap_or(path),
            500,
        ),
        title: optional(body.title.as_deref(), 200),
        visitor_id: optional(body.visitor_id.as_deref(), 255),
        device: optional(body.device.as_deref(), 50),
        referrer: optional(body.referrer.as_deref(), 500),
        metadata: metadata(body.metadata)?,
    };
    reporter.spend(&state).await?;
    store::page_view(&state.db, &reporter, row).await?;
    Ok(accepted())
}

#[utoipa::path(post, path = "/monitoring/event", tag = "monitoring", request_body = Event,
    params(("X-Tenant-ID" = Option<String>, Header, description = "The tenant (else the token's)")),
    responses((status = 200, description = "Stored", body = Envelope<Accepted>),
        (status = 429, description = "Too many reports this minute from this user or address (E1001); `Retry-After` says when", body = crate::reply::Reply)))]
async fn event(
    State(state): State<Arc<AppState>>,
    reporter: Reporter,
    JsonBody(body): JsonBody<Event>,
) -> Result<Json<Envelope<Accepted>>, AppError> {
    let resource_key = required(body.resource_key.as_deref(), "resourceKey")?;
    let action = match (body.action.as_deref(), body.event_type.as_deref()) {
        (Some(action), _) if !action.trim().is_empty() => action,
        (_, Some(kind)) if !kind.trim().is_empty() => kind,
        _ => {
            return Err(AppError::BadRequest(
                "action (or eventType) is required".into(),
            ));
        }
    };
    let row = store::EventRow {
        resource_key: cut(resource_key, 255),
        action: cut(action.trim(), 50).to_uppercase(),
        label: optional(body.label.as_deref(), 200),
        path: optional(body.path.as_deref(), 500),
        visitor_id: optional(body.visitor_id.as_deref(), 255),
        metadata: metadata(body.metadata)?,
    };
    reporter.spend(&state).await?;
    store::event(&state.db, &reporter, row).await?;
    Ok(accepted())
}

/// A required text field, trimmed; 400 naming it when absent or blank.
fn required<'a>(value: Option<&'a str>, name: &str) -> Result<&'a str, AppError> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| AppError::BadRequest(format!("{name} is required")))
}

/// An optional text field, trimmed and cut; blank is absent.
fn optional(value: Option<&str>, max_chars: usize) -> Option<String> {
    value
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(|v| cut(v, max_chars))
}

/// `text` cut to `max_chars` characters (never inside one).
fn cut(text: &str, max_chars: usize) -> String {
    match text.char_indices().nth(max_chars) {
        Some((end, _)) => text[..end].to_owned(),
        None => text.to_owned(),
    }
}

/// `metadata`: absent or null, else an object of at most 4 KiB as JSON.
fn metadata(value: Option<Value>) -> Result<Option<Value>, AppError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(object @ Value::Object(_)) => {
            if object.to_string().len() > MAX_METADATA_BYTES {
                return Err(AppError::TooLarge("metadata is larger than 4 KiB".into()));
            }
            Ok(Some(object))
        }
        Some(_) => Err(AppError::BadRequest("metadata must be an object".into())),
    }
}

#[cfg(test)]
mod tests {
    use super::{cut, metadata};
    use serde_json::json;

    #[test]
    fn text_is_cut_between_characters() {
        assert_eq!(cut("abc", 5), "abc");
        assert_eq!(cut("abcdef", 3), "abc");
        assert_eq!(cut("가나다라", 2), "가나");
        assert_eq!(cut("", 0), "");
    }

    #[test]
    fn metadata_is_an_object_of_bounded_size() {
        assert!(metadata(None).unwrap().is_none());
        assert!(metadata(Some(json!(null))).unwrap().is_none());
        assert!(metadata(Some(json!({"a": 1}))).unwrap().is_some());
        assert!(metadata(Some(json!([1]))).is_err());
        assert!(metadata(Some(json!({"a": "x".repeat(5000)}))).is_err());
    }
}
