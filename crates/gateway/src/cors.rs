//! CORS: preflights are answered here (the upstream is never called; the
//! real Aura-Platform answers OPTIONS with 401), and the CORS headers are
//! set once on every response, replacing any the upstream sent.

use http::header::{
    ACCESS_CONTROL_ALLOW_CREDENTIALS, ACCESS_CONTROL_ALLOW_HEADERS, ACCESS_CONTROL_ALLOW_METHODS,
    ACCESS_CONTROL_ALLOW_ORIGIN, ACCESS_CONTROL_EXPOSE_HEADERS, ACCESS_CONTROL_MAX_AGE,
    ACCESS_CONTROL_REQUEST_HEADERS, ACCESS_CONTROL_REQUEST_METHOD, ORIGIN, VARY,
};
use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode};

use crate::ResponseBody;
use crate::config::Cors;
use crate::error::{GatewayError, full};

/// Headers a browser script may read from our responses.
const EXPOSED: &str = "X-Request-ID, X-DWP-Task-ID";

impl Cors {
    fn allows(&self, origin: &str) -> bool {
        self.allowed_origins.iter().any(|o| o == "*" || o == origin)
    }

    /// Answers a CORS preflight, or `None` when `req` is not one.
    pub fn preflight<B>(&self, req: &Request<B>) -> Option<Response<ResponseBody>> {
        if req.method() != Method::OPTIONS {
            return None;
        }
        let origin = req.headers().get(ORIGIN)?.to_str().ok()?;
        let method = req.headers().get(ACCESS_CONTROL_REQUEST_METHOD)?;
        let method_allowed =
            Method::from_bytes(method.as_bytes()).is_ok_and(|m| self.allowed_methods.contains(&m));
        if !self.allows(origin) || !method_allowed {
            return Some(GatewayError::Forbidden("CORS request not allowed").into_response());
        }
        let mut response = Response::new(full(""));
        *response.status_mut() = StatusCode::OK;
        let h = response.headers_mut();
        self.allow_origin(h, origin);
        let methods: Vec<&str> = self.allowed_methods.iter().map(Method::as_str).collect();
        insert(h, ACCESS_CONTROL_ALLOW_METHODS, &methods.join(","));
        let headers = if self.allowed_headers.trim() == "*" {
            req.headers()
                .get(ACCESS_CONTROL_REQUEST_HEADERS)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("*")
        } else {
            &self.allowed_headers
        };
        insert(h, ACCESS_CONTROL_ALLOW_HEADERS, headers);
        insert(h, ACCESS_CONTROL_MAX_AGE, &self.max_age_secs.to_string());
        h.append(
            VARY,
            HeaderValue::from_static(
                "Origin, Access-Control-Request-Method, Access-Control-Request-Headers",
            ),
        );
        Some(response)
    }

    /// Replaces the CORS headers of a response for a request from `origin`.
    pub fn apply(&self, origin: Option<&HeaderValue>, headers: &mut HeaderMap) {
        // One pass over the names instead of six lookups: most responses have none.
        let upstream_cors: Vec<http::HeaderName> = headers
            .keys()
            .filter(|name| name.as_str().starts_with("access-control-"))
            .cloned()
            .collect();
        for name in upstream_cors {
            headers.remove(name);
        }
        let Some(origin) = origin.and_then(|o| o.to_str().ok()) else {
            return;
        };
        if self.allows(origin) {
            self.allow_origin(headers, origin);
            insert(headers, ACCESS_CONTROL_EXPOSE_HEADERS, EXPOSED);
            headers.append(VARY, HeaderValue::from_static("Origin"));
        }
    }

    fn allow_origin(&self, h: &mut HeaderMap, origin: &str) {
        insert(h, ACCESS_CONTROL_ALLOW_ORIGIN, origin);
        if self.allow_credentials {
            h.insert(
                ACCESS_CONTROL_ALLOW_CREDENTIALS,
                HeaderValue::from_static("true"),
            );
        }
    }
}

fn insert(h: &mut HeaderMap, name: http::HeaderName, value: &str) {
    if let Ok(value) = HeaderValue::from_str(value) {
        h.insert(name, value);
    }
}
