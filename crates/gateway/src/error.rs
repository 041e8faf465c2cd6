//! The gateway's one error type. Each variant says who caused it, and maps
//! to one status and one envelope (pingora's `ErrorSource` idea).

use bytes::Bytes;
use dwp_core::token::TokenError;
use dwp_core::{Envelope, ErrorCode};
use http::{HeaderValue, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};

use crate::ResponseBody;

/// Everything that can go wrong in front of, or instead of, the upstream.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// 404 E1004: no route for this path.
    #[error("No route for {0}")]
    NotFound(String),
    /// 400 E1001: the client sent something unusable.
    #[error("{0}")]
    BadRequest(String),
    /// 401 (E2000 / E2002 / E2003): the token is missing, expired or invalid.
    #[error("{0}")]
    Token(TokenError),
    /// 403 E2001: the token does not match the identity headers, or the origin is not allowed.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 413 E1001: the request body is over `GATEWAY_MAX_BODY_BYTES`.
    #[error("Request body exceeds {0} bytes")]
    PayloadTooLarge(u64),
    /// 408 E1001: the request body did not arrive within
    /// `GATEWAY_BODY_READ_TIMEOUT_SECS`.
    #[error("Request body not received in time")]
    RequestTimeout,
    /// 429 E1001: this client or user has too many requests or streams open.
    #[error("{0}")]
    TooManyRequests(&'static str),
    /// 503 E5000: this route's share of its upstream's connections is all
    /// in use (`GATEWAY_ROUTE_MAX_POOL_PERCENT`); retry in a second.
    #[error("Route {0} is busy: retry shortly")]
    RouteBusy(&'static str),
    /// 502 E5000: the upstream refused or dropped the connection.
    #[error("Upstream {0} is unavailable")]
    UpstreamUnavailable(&'static str),
    /// 504 E5001: the upstream did not connect or answer in time.
    #[error("Upstream {0} timed out")]
    UpstreamTimeout(&'static str),
    /// 404 E1004: no resumable stream of this id (or none of the caller's).
    #[error("No resumable stream {0}")]
    NoStream(String),
    /// 409 E3001: the request does not fit the stream's state.
    #[error("{0}")]
    Conflict(&'static str),
    /// 503 E5000: a part the request needs is away (Redis for a resume).
    #[error("{0}")]
    Unavailable(&'static str),
    /// 500 E1000: a bug on our side; the detail is logged, never sent.
    #[error("Internal error")]
    Internal(String),
}

impl GatewayError {
    /// The HTTP status.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::PayloadTooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
            Self::TooManyRequests(_) => StatusCode::TOO_MANY_REQUESTS,
            Self::RouteBusy(_) | Self::Unavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
            other => other.code().status(),
        }
    }

    /// The envelope's error code.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::NotFound(_) | Self::NoStream(_) => ErrorCode::E1004,
            Self::Conflict(_) => ErrorCode::E3001,
            Self::BadRequest(_)
            | Self::PayloadTooLarge(_)
            | Self::RequestTimeout
            | Self::TooManyRequests(_) => ErrorCode::E1001,
            Self::Token(e) => e.code(),
            Self::Forbidden(_) => ErrorCode::E2001,
            Self::UpstreamUnavailable(_) | Self::RouteBusy(_) | Self::Unavailable(_) => {
                ErrorCode::E5000
            }
            Self::UpstreamTimeout(_) => ErrorCode::E5001,
            Self::Internal(_) => ErrorCode::E1000,
        }
    }

    /// The response the client gets.
    pub fn into_response(self) -> Response<ResponseBody> {
        self.into_traced_response(None)
    }

    /// The error envelope of a request in trace `trace_id` (`traceId`).
    pub fn into_traced_response(self, trace_id: Option<String>) -> Response<ResponseBody> {
        if let Self::Internal(detail) = &self {
            tracing::error!(%detail, trace_id = trace_id.as_deref().unwrap_or("-"), "internal gateway error");
        }
        let mut response = json_response(
            self.status(),
            Envelope::error(self.code(), self.to_string())
                .traced(trace_id)
                .to_json(),
        );
        // After bad framing or a refused body, the bytes that follow on the
        // connection cannot be trusted to start a request: close it.
        if matches!(
            self,
            Self::BadRequest(_) | Self::PayloadTooLarge(_) | Self::RequestTimeout
        ) {
            response
                .headers_mut()
                .insert(header::CONNECTION, HeaderValue::from_static("close"));
        }
        if matches!(self, Self::TooManyRequests(_) | Self::RouteBusy(_)) {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        if matches!(self, Self::Token(_)) {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// A JSON response with the given status and body.
pub fn json_response(status: StatusCode, body: Vec<u8>) -> Response<ResponseBody> {
    let mut response = Response::new(full(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    response
}

/// A complete in-memory body.
pub fn full(bytes: impl Into<Bytes>) -> ResponseBody {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}
