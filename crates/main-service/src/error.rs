//! The service's one error type. Every variant writes the envelope of
//! CONTRACT.md section 6; 5xx details are logged once and never sent.

use axum::Json;
use axum::response::{IntoResponse, Response};
use dwp_core::token::TokenError;
use dwp_core::{Envelope, ErrorCode};
use http::StatusCode;
use serde_json::Value;

tokio::task_local! {
    /// The trace id of the request this task handles (set by
    /// [`crate::access`]), for the error envelope's `traceId`.
    pub static TRACE_ID: String;
}

/// Everything a request can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AppError {
    /// 400 E1001: invalid input.
    #[error("{0}")]
    BadRequest(String),
    /// 401 E2000 / E2002 / E2003: no, expired or invalid token.
    #[error("{0}")]
    Token(TokenError),
    /// 401 E2000: a required identity header is missing.
    #[error("{0}")]
    Unauthenticated(&'static str),
    /// 401 E2000: wrong username or password (one message for both).
    #[error("{0}")]
    BadCredentials(&'static str),
    /// 403 E2001: the caller is not who the request or the token says.
    #[error("{0}")]
    Forbidden(&'static str),
    /// 404 E1004: no such thing (or not the caller's to see).
    #[error("{0}")]
    NotFound(String),
    /// 405 E1001: the route exists, the method does not.
    #[error("Method not allowed")]
    MethodNotAllowed,
    /// 400 E3002: the task cannot make this move from its current status.
    #[error("{0}")]
    InvalidTransition(String),
    /// 409 E3001: already decided or already exists; `data` is the current state.
    #[error("{message}")]
    Conflict {
        /// What happened.
        message: String,
        /// The current state.
        data: Value,
    },
    /// 413 E1001: the body is too large.
    #[error("Request body too large")]
    PayloadTooLarge,
    /// 413 E1001: one field of the body is larger than its cap.
    #[error("{0}")]
    TooLarge(String),
    /// 429 E1001: too many attempts or pending requests; `Retry-After` says when to retry.
    #[error("{message}")]
    TooManyRequests {
        /// What was refused.
        message: &'static str,
        /// Seconds to wait.
        retry_after: u64,
    },
    /// 503 E5000: the service is busy (every login slot is taken); retry in a second.
    #[error("{0}")]
    Busy(&'static str),
    /// 415 E1001: the body is not JSON.
    #[error("Content-Type must be application/json")]
    UnsupportedMediaType,
    /// 503 E5000: a backing service (Redis, PostgreSQL) is unreachable.
    #[error("{0} is unavailable")]
    Unavailable(&'static str),
    /// 500 E1000: a bug or corrupt data; logged, never sent.
    #[error("Internal error")]
    Internal(String),
}

impl AppError {
    /// The status and code sent for this error.
    pub fn status_and_code(&self) -> (StatusCode, ErrorCode) {
        match self {
            Self::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::E1001),
            Self::Token(e) => (StatusCode::UNAUTHORIZED, e.code()),
            Self::Unauthenticated(_) | Self::BadCredentials(_) => {
                (StatusCode::UNAUTHORIZED, ErrorCode::E2000)
            }
            Self::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::E2001),
            Self::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::E1004),
            Self::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::E1001),
            Self::Conflict { .. } => (StatusCode::CONFLICT, ErrorCode::E3001),
            Self::InvalidTransition(_) => (StatusCode::BAD_REQUEST, ErrorCode::E3002),
            Self::PayloadTooLarge | Self::TooLarge(_) => {
                (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::E1001)
            }
            Self::TooManyRequests { .. } => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::E1001),
            Self::Busy(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::E5000),
            Self::UnsupportedMediaType => (StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::E1001),
            Self::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::E5000),
            Self::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, ErrorCode::E1000),
        }
    }
}

impl From<redis::RedisError> for AppError {
    fn from(e: redis::RedisError) -> Self {
        tracing::warn!(error = %e, "redis call failed");
        Self::Unavailable("Redis")
    }
}

impl From<sea_orm::DbErr> for AppError {
    fn from(e: sea_orm::DbErr) -> Self {
        if is_outage(&e) {
            tracing::warn!(error = %e, "database call failed");
            Self::Unavailable("PostgreSQL")
        } else {
            Self::Internal(e.to_string())
        }
    }
}

impl IntoResponse for AppError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_and_code();
        if let Self::Internal(detail) = &self {
            tracing::error!(%detail, "internal error");
        }
        let message = self.to_string();
        let retry_after = match &self {
            Self::TooManyRequests { retry_after, .. } => Some(*retry_after),
            Self::Busy(_) => Some(1),
            _ => None,
        };
        let data = match self {
            Self::Conflict { data, .. } => Some(data),
            _ => None,
        };
        let mut response = (
            status,
            Json(
                Envelope::error_with(code, message, data)
                    .traced(TRACE_ID.try_with(Clone::clone).ok()),
            ),
        )
            .into_response();
        if let Some(secs) = retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(secs));
        }
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(
                http::header::WWW_AUTHENTICATE,
                http::HeaderValue::from_static("Bearer"),
            );
        }
        response
    }
}

/// Whether a database error means "cannot reach it" rather than "bad query
/// or data".
pub fn is_outage(e: &sea_orm::DbErr) -> bool {
    use sea_orm::sqlx::Error;
    use sea_orm::{DbErr, RuntimeErr};
    match e {
        DbErr::ConnectionAcquire(_) | DbErr::Conn(_) => true,
        DbErr::Exec(RuntimeErr::SqlxError(e)) | DbErr::Query(RuntimeErr::SqlxError(e)) => {
            matches!(
                **e,
                Error::Io(_)
                    | Error::Tls(_)
                    | Error::Protocol(_)
                    | Error::PoolTimedOut
                    | Error::PoolClosed
                    | Error::WorkerCrashed
            ) || e
                .as_database_error()
                .and_then(|d| d.code())
                // 57P01..57P03 admin shutdown / crash shutdown / cannot connect now
                .is_some_and(|code| code.starts_with("57P") || code.starts_with("08"))
        }
        _ => false,
    }
}
