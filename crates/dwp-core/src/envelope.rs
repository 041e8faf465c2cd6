//! The JSON response envelope and the error codes of CONTRACT.md section 6.
//!
//! Every JSON response of the gateway and main-service, errors included, is
//! `{"status","success","message","data","errorCode"?,"timestamp"}`.

use std::time::{SystemTime, UNIX_EPOCH};

use http::StatusCode;
use serde::{Deserialize, Serialize};

/// An error code and the HTTP status it is always sent with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum ErrorCode {
    /// 500: internal error (details logged, never sent).
    E1000,
    /// 400: invalid input.
    E1001,
    /// 404: not found.
    E1004,
    /// 401: authentication required.
    E2000,
    /// 403: forbidden (user or tenant mismatch).
    E2001,
    /// 401: token expired.
    E2002,
    /// 401: token invalid.
    E2003,
    /// 409: already exists / already decided.
    E3001,
    /// 400: invalid state transition.
    E3002,
    /// 502: upstream unavailable.
    E5000,
    /// 504: upstream timeout.
    E5001,
}

impl ErrorCode {
    /// The code as sent in `errorCode`, for example `"E2001"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::E1000 => "E1000",
            Self::E1001 => "E1001",
            Self::E1004 => "E1004",
            Self::E2000 => "E2000",
            Self::E2001 => "E2001",
            Self::E2002 => "E2002",
            Self::E2003 => "E2003",
            Self::E3001 => "E3001",
            Self::E3002 => "E3002",
            Self::E5000 => "E5000",
            Self::E5001 => "E5001",
        }
    }

    /// The HTTP status that goes with the code.
    pub fn status(self) -> StatusCode {
        match self {
            Self::E1000 => StatusCode::INTERNAL_SERVER_ERROR,
            Self::E1001 | Self::E3002 => StatusCode::BAD_REQUEST,
            Self::E1004 => StatusCode::NOT_FOUND,
            Self::E2000 | Self::E2002 | Self::E2003 => StatusCode::UNAUTHORIZED,
            Self::E2001 => StatusCode::FORBIDDEN,
            Self::E3001 => StatusCode::CONFLICT,
            Self::E5000 => StatusCode::BAD_GATEWAY,
            Self::E5001 => StatusCode::GATEWAY_TIMEOUT,
        }
    }
}

/// `"SUCCESS"` or `"ERROR"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "UPPERCASE")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub enum Status {
    /// The call succeeded.
    Success,
    /// The call failed; `errorCode` says why.
    Error,
}

/// The response envelope.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Envelope<T> {
    /// `SUCCESS` or `ERROR`.
    pub status: Status,
    /// `true` exactly when `status` is `SUCCESS`.
    pub success: bool,
    /// A human-readable message.
    pub message: String,
    /// The payload (`null` on most errors).
    pub data: Option<T>,
    /// The error code, on errors only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_code: Option<ErrorCode>,
    /// When the response was made, RFC 3339 in UTC.
    pub timestamp: String,
    /// The W3C trace id of the request, on errors (`traceId`), so that a
    /// client's report leads to the log lines of every hop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trace_id: Option<String>,
}

impl<T> Envelope<T> {
    /// A success envelope carrying `data`.
    pub fn success(message: impl Into<String>, data: T) -> Self {
        Self {
            status: Status::Success,
            success: true,
            message: message.into(),
            data: Some(data),
            error_code: None,
            timestamp: now_rfc3339(),
            trace_id: None,
        }
    }

    /// An error envelope with optional `data` (for example the current state on a 409).
    pub fn error_with(code: ErrorCode, message: impl Into<String>, data: Option<T>) -> Self {
        Self {
            status: Status::Error,
            success: false,
            message: message.into(),
            data,
            error_code: Some(code),
            timestamp: now_rfc3339(),
            trace_id: None,
        }
    }

    /// The same envelope carrying the request's trace id.
    #[must_use]
    pub fn traced(mut self, trace_id: Option<String>) -> Self {
        self.trace_id = trace_id;
        self
    }
}

impl Envelope<()> {
    /// An error envelope with `data: null`.
    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Self::error_with(code, message, None)
    }
}

impl<T: Serialize> Envelope<T> {
    /// The envelope as JSON bytes.
    pub fn to_json(&self) -> Vec<u8> {
        // Serialising plain strings, options and a `Serialize` payload cannot fail
        // unless the payload's own impl does; fall back to a fixed internal error.
        serde_json::to_vec(self).unwrap_or_else(|_| {
            br#"{"status":"ERROR","success":false,"message":"Internal error","data":null,"errorCode":"E1000"}"#
                .to_vec()
        })
    }
}

/// The current time as RFC 3339 in UTC with second precision, for example
/// `2026-01-16T10:00:00Z`.
pub fn now_rfc3339() -> String {
    rfc3339(unix_now())
}

/// The current time in Unix seconds (0 if the clock is before 1970).
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Formats Unix seconds as RFC 3339 in UTC (`YYYY-MM-DDTHH:MM:SSZ`).
pub fn rfc3339(unix_secs: u64) -> String {
    let days = (unix_secs / 86_400) as i64;
    let rem = unix_secs % 86_400;
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}Z",
        rem / 3_600,
        rem % 3_600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_map_to_the_contract_statuses() {
        let table = [
            (ErrorCode::E1000, 500),
            (ErrorCode::E1001, 400),
            (ErrorCode::E1004, 404),
            (ErrorCode::E2000, 401),
            (ErrorCode::E2001, 403),
            (ErrorCode::E2002, 401),
            (ErrorCode::E2003, 401),
            (ErrorCode::E3001, 409),
            (ErrorCode::E3002, 400),
            (ErrorCode::E5000, 502),
            (ErrorCode::E5001, 504),
        ];
        for (code, status) in table {
            assert_eq!(code.status().as_u16(), status, "{code:?}");
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }

    #[test]
    fn error_envelope_has_the_contract_fields() {
        let v: serde_json::Value =
            serde_json::from_slice(&Envelope::error(ErrorCode::E2001, "Forbidden").to_json())
                .unwrap();
        assert_eq!(v["status"], "ERROR");
        assert_eq!(v["success"], false);
        assert_eq!(v["message"], "Forbidden");
        assert_eq!(v["data"], serde_json::Value::Null);
        assert_eq!(v["errorCode"], "E2001");
        assert!(v["timestamp"].as_str().unwrap().ends_with('Z'));
    }

    #[test]
    fn success_envelope_omits_the_error_code() {
        let v: serde_json::Value =
            serde_json::from_slice(&Envelope::success("ok", serde_json::json!({"a": 1})).to_json())
                .unwrap();
        assert_eq!(v["status"], "SUCCESS");
        assert_eq!(v["success"], true);
        assert_eq!(v["data"]["a"], 1);
        assert!(v.get("errorCode").is_none());
    }

    #[test]
    fn rfc3339_formats_known_instants() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_768_557_600), "2026-01-16T10:00:00Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(4_102_444_799), "2099-12-31T23:59:59Z");
    }
}
