//! Request bodies: JSON with errors in the envelope, never axum's plain text.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::error::AppError;

/// A JSON body. An empty body is `T::default()` (the frontend may send none
/// with an approval); anything else must be `application/json` and parse.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = AppError;

    async fn from_request(req: Request, state: &S) -> Result<Self, AppError> {
        let is_json = req
            .headers()
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| {
                v.trim_start()
                    .to_ascii_lowercase()
                    .starts_with("application/json")
            });
        let bytes = Bytes::from_request(req, state).await.map_err(|e| match e {
            BytesRejection::FailedToBufferBody(inner)
                if inner.status() == http::StatusCode::PAYLOAD_TOO_LARGE =>
            {
                AppError::PayloadTooLarge
            }
            other => AppError::BadRequest(format!("Request body could not be read: {other}")),
        })?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(Self(T::default()));
        }
        if !is_json {
            return Err(AppError::UnsupportedMediaType);
        }
        let value: serde_json::Value = serde_json::from_slice(&bytes)
            .map_err(|e| AppError::BadRequest(format!("Malformed JSON: {e}")))?;
        // PostgreSQL text cannot hold U+0000: refuse it here for every body
        // rather than fail (500) where it would be stored.
        if has_nul(&value) {
            return Err(AppError::BadRequest(
                "Strings may not contain U+0000".into(),
            ));
        }
        T::deserialize(value)
            .map(Self)
            .map_err(|e| AppError::BadRequest(format!("Malformed JSON: {e}")))
    }
}

/// Whether a string or a key anywhere in `value` holds U+0000.
fn has_nul(value: &Value) -> bool {
    match value {
        Value::String(s) => s.contains('\0'),
        Value::Array(items) => items.iter().any(has_nul),
        Value::Object(map) => map.iter().any(|(k, v)| k.contains('\0') || has_nul(v)),
        _ => false,
    }
}
