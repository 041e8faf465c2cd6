//! Request bodies: JSON with errors in the envelope, never axum's plain text.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{FromRequest, Request};
use http::header::CONTENT_TYPE;
use serde::de::DeserializeOwned;

use crate::error::AppError;

/// A JSON body of type `T`, whose fields say which are required. An empty
/// body reads as `{}` (the frontend may send none with an approval): a
/// type whose fields are all optional takes it, one with a required field
/// answers 400 naming the field. Anything else must be `application/json`
/// and parse.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

impl<S, T> FromRequest<S> for JsonBody<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
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
        let empty = bytes.iter().all(u8::is_ascii_whitespace);
        if !empty && !is_json {
            return Err(AppError::UnsupportedMediaType);
        }
        let text: &[u8] = if empty { b"{}" } else { &bytes };
        let parsed: T = serde_json::from_slice(text).map_err(|e| {
            AppError::BadRequest(if e.is_data() {
                format!("Invalid request body: {e}")
            } else {
                format!("Malformed JSON: {e}")
            })
        })?;
        // PostgreSQL text cannot hold U+0000: refuse it here for every body
        // rather than fail (500) where it would be stored.
        if has_nul_escape(&bytes) {
            return Err(AppError::BadRequest(
                "Strings may not contain U+0000".into(),
            ));
        }
        Ok(Self(parsed))
    }
}

/// Whether valid JSON `bytes` hold U+0000 in a string or key. JSON can only
/// write it as the escape `\u0000` (a raw control character is invalid), and
/// outside strings there are no backslashes, so one pass over the escapes
/// is enough.
fn has_nul_escape(bytes: &[u8]) -> bool {
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if bytes.get(i + 1) == Some(&b'u') && bytes.get(i + 2..i + 6) == Some(b"0000") {
                return true;
            }
            i += 2; // the escaped character, whatever it is
        } else {
            i += 1;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::has_nul_escape;

    #[test]
    fn only_an_escaped_nul_counts() {
        assert!(has_nul_escape(br#"{"a":"x\u0000y"}"#));
        assert!(has_nul_escape(br#"{"\u0000":1}"#));
        assert!(
            !has_nul_escape(br#"{"a":"x\\u0000y"}"#),
            "an escaped backslash, then text"
        );
        assert!(has_nul_escape(br#"{"a":"\u0001 \u00000"}"#));
        assert!(!has_nul_escape(br#"{"a":"\u0001 \u1000"}"#));
        assert!(!has_nul_escape(br#"{"a":"u0000","b":"\n"}"#));
    }
}
