//! Checks made at the edge, before any upstream is called, so that a bad
//! request never opens a five-minute stream.
//!
//! - `/api/aura/**` needs `X-Tenant-ID` (400; [`Edge::TenantAndToken`]).
//! - `/api/aura/**`, `/api/main/**` and an operator's routes unless they
//!   say `token_check = false` need a valid HS256 Bearer token
//!   (401) whose `sub` equals `X-User-ID` and whose `tenant_id` equals
//!   `X-Tenant-ID` when those headers are sent (403). `/api/auth/**`, `/api/monitoring/**`
//!   and the gateway's own endpoints are exempt. Only `GATEWAY_AUTH=off` (local
//!   development) turns this off; the gateway does not start without
//!   `JWT_SECRET` otherwise.
//!
//! The verified claims are returned: who the request is (the token's
//! `sub`, never a header) for the recorder and the per-user caps. A token
//! checked before on the same worker is answered from its cache
//! ([`crate::tokens`]).

use std::sync::Arc;

use dwp_core::headers::{AUTHORIZATION, TENANT_ID, USER_ID};
use http::{HeaderMap, HeaderValue};

use crate::error::GatewayError;
use crate::headers;
use crate::routes::Edge;
use crate::tokens::{Tokens, Verified};

/// Runs the edge checks `edge` names (a route's policy) for a request on
/// `worker`; returns the token's claims when one was checked.
pub fn check(
    edge: Edge,
    headers: &HeaderMap,
    tokens: Option<&Tokens>,
    worker: usize,
) -> Result<Option<Arc<Verified>>, GatewayError> {
    let [tenant, user, authorization] =
        headers::first_of(headers, [&TENANT_ID, &USER_ID, &AUTHORIZATION]);
    let tenant = text(tenant, &TENANT_ID)?;
    if edge == Edge::TenantAndToken && tenant.is_none_or(str::is_empty) {
        return Err(GatewayError::BadRequest(
            "X-Tenant-ID header is required".into(),
        ));
    }
    let needs_token = edge != Edge::Open;
    let Some(tokens) = tokens.filter(|_| needs_token) else {
        return Ok(None);
    };
    let verified = tokens
        .verify_header(worker, authorization.map(HeaderValue::as_bytes))
        .map_err(GatewayError::Token)?;
    let claims = &verified.claims;
    if let Some(user) = text(user, &USER_ID)?
        && user != claims.sub
    {
        return Err(GatewayError::Forbidden(
            "X-User-ID does not match the token",
        ));
    }
    if let Some(tenant) = tenant
        && claims.tenant_id.as_deref() != Some(tenant)
    {
        return Err(GatewayError::Forbidden(
            "X-Tenant-ID does not match the token",
        ));
    }
    Ok(Some(verified))
}

/// A header's value as text; one that is not visible ASCII is a bad request.
fn text<'a>(
    value: Option<&'a HeaderValue>,
    name: &http::HeaderName,
) -> Result<Option<&'a str>, GatewayError> {
    value
        .map(|v| {
            v.to_str()
                .map(str::trim)
                .map_err(|_| GatewayError::BadRequest(format!("{name} header is not valid text")))
        })
        .transpose()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::contract_default;
    use dwp_core::token::{Claims, Verifier, issue};
    use http::HeaderValue;

    const SECRET: &str = "edge-secret-edge-secret-edge-secret!";

    fn token(sub: &str, tenant: Option<&str>) -> String {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs();
        let claims = Claims {
            sub: sub.into(),
            tenant_id: tenant.map(Into::into),
            iat: Some(now),
            exp: now + 60,
        };
        format!("Bearer {}", issue(&claims, SECRET.as_bytes()))
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        pairs
            .iter()
            .map(|(k, v)| {
                (
                    http::HeaderName::from_static(k),
                    HeaderValue::from_str(v).unwrap(),
                )
            })
            .collect()
    }

    fn status(route: &str, h: &HeaderMap, secret: bool) -> u16 {
        let tokens = Tokens::new(Verifier::new(SECRET.as_bytes(), None), 1, 100);
        let routes = contract_default().routes;
        match check(
            routes.iter().find(|r| r.name == route).unwrap().policy.edge,
            h,
            secret.then_some(&tokens),
            0,
        ) {
            Ok(_) => 200,
            Err(e) => e.status().as_u16(),
        }
    }

    #[test]
    fn tenant_is_required_on_aura_routes_only() {
        let none = HeaderMap::new();
        assert_eq!(status("aura-hitl", &none, false), 400, "aura-hitl");
        assert_eq!(status("aura-hitl-events", &none, false), 400, "the feed");
        assert_eq!(status("aura", &none, false), 400, "aura");
        assert_eq!(status("main", &none, false), 200, "main");
        assert_eq!(status("auth", &none, false), 200, "auth");
        assert_eq!(status("monitoring", &none, false), 200, "monitoring");
    }

    #[test]
    fn tokens_are_checked_when_a_secret_is_set() {
        let good = token("user123", Some("tenant1"));
        let ok = headers(&[
            ("authorization", &good),
            ("x-tenant-id", "tenant1"),
            ("x-user-id", "user123"),
        ]);
        assert_eq!(status("aura", &ok, true), 200);
        let missing = headers(&[("x-tenant-id", "tenant1")]);
        assert_eq!(status("aura", &missing, true), 401);
        assert_eq!(
            status("main", &HeaderMap::new(), true),
            401,
            "main needs a token"
        );
        assert_eq!(
            status("auth", &HeaderMap::new(), true),
            200,
            "auth is exempt"
        );
        assert_eq!(
            status("monitoring", &HeaderMap::new(), true),
            200,
            "the pages' reports are exempt"
        );
        let other_user = headers(&[
            ("authorization", &good),
            ("x-tenant-id", "tenant1"),
            ("x-user-id", "eve"),
        ]);
        assert_eq!(status("aura", &other_user, true), 403);
        let other_tenant = headers(&[("authorization", &good), ("x-tenant-id", "tenant2")]);
        assert_eq!(status("aura", &other_tenant, true), 403);
        let garbage = headers(&[
            ("authorization", "Bearer a.b.c"),
            ("x-tenant-id", "tenant1"),
        ]);
        assert_eq!(status("aura", &garbage, true), 401);
    }
}
