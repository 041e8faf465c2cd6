//! HS256 tokens (CONTRACT.md section 7): the claims and their verification.
//!
//! Only HS256 is accepted; `alg: none` and every other algorithm are invalid.
//! `sub` is required and must be free of control characters; `tenant_id`,
//! when present, must be a string; `exp` is required and checked with a small
//! leeway. A token carrying `aud` is accepted unless an audience is configured.

use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};

/// Tokens longer than this are refused before any decoding.
pub const MAX_TOKEN_BYTES: usize = 8 * 1024;

/// Default clock leeway for `exp` and `nbf`, in seconds.
pub const DEFAULT_LEEWAY_SECS: u64 = 30;

/// The claims the system reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    /// The user id.
    pub sub: String,
    /// The tenant id, when the token names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tenant_id: Option<String>,
    /// Issued at, Unix seconds.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub iat: Option<u64>,
    /// Expiry, Unix seconds.
    pub exp: u64,
}

/// Why a token was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TokenError {
    /// No `Authorization: Bearer` header (E2000).
    Missing,
    /// The token verified but is past its `exp` (E2002).
    Expired,
    /// Anything else: bad signature, wrong algorithm, malformed, missing `sub` (E2003).
    Invalid,
}

impl std::fmt::Display for TokenError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Missing => "Authentication required",
            Self::Expired => "Token expired",
            Self::Invalid => "Token invalid",
        })
    }
}

impl std::error::Error for TokenError {}

impl TokenError {
    /// The contract's error code for this refusal.
    pub fn code(self) -> crate::ErrorCode {
        match self {
            Self::Missing => crate::ErrorCode::E2000,
            Self::Expired => crate::ErrorCode::E2002,
            Self::Invalid => crate::ErrorCode::E2003,
        }
    }
}

/// Default longest lifetime (`exp - iat`) a token may have, in seconds.
pub const DEFAULT_MAX_LIFETIME_SECS: u64 = 24 * 3600;

/// Verifies tokens with one shared secret. Build once, use for every request.
///
/// Besides the signature and `exp`/`nbf`, a token is refused when its `iat`
/// lies in the future beyond the leeway, or when it was issued to live
/// longer than the maximum lifetime (without `iat`: when it still has longer
/// than that to live), so a leaked signing of a ten-year token is no key.
#[derive(Clone)]
pub struct Verifier {
    /// Unique to this verifier (and its clones): what a cache of verified
    /// tokens is keyed on, so that another key never meets its entries.
    id: u64,
    key: DecodingKey,
    validation: Validation,
    max_lifetime_secs: u64,
}

impl std::fmt::Debug for Verifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Verifier { key: <redacted> }")
    }
}

impl Verifier {
    /// A verifier for HS256 tokens signed with `secret`; `audience`, when
    /// given, must appear in the token's `aud`.
    pub fn new(secret: &[u8], audience: Option<&str>) -> Self {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.leeway = DEFAULT_LEEWAY_SECS;
        validation.validate_nbf = true;
        match audience {
            Some(aud) => validation.set_audience(&[aud]),
            None => validation.validate_aud = false,
        }
        /// Verifiers made so far in this process.
        static MADE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self {
            id: MADE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1,
            key: DecodingKey::from_secret(secret),
            validation,
            max_lifetime_secs: DEFAULT_MAX_LIFETIME_SECS,
        }
    }

    /// The same verifier with another longest lifetime (`JWT_MAX_LIFETIME_SECS`).
    pub fn with_max_lifetime(mut self, max: std::time::Duration) -> Self {
        self.max_lifetime_secs = max.as_secs();
        self
    }

    /// This verifier's number, never 0: one per [`Verifier::new`] in the
    /// process, shared by its clones (same key, same rules).
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether a token with this `exp` is expired at `now` (Unix seconds),
    /// with the leeway [`Verifier::verify`] gives: for a cache of tokens
    /// that verified, so that a cached one expires when a full check would
    /// refuse it.
    pub fn expired(&self, exp: u64, now: u64) -> bool {
        exp < now.saturating_sub(self.validation.leeway)
    }

    /// Verifies a bare token (without `Bearer `).
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        if token.is_empty() || token.len() > MAX_TOKEN_BYTES {
            return Err(TokenError::Invalid);
        }
        let data = jsonwebtoken::decode::<Claims>(token, &self.key, &self.validation).map_err(
            |e| match e.kind() {
                ErrorKind::ExpiredSignature => TokenError::Expired,
                _ => TokenError::Invalid,
            },
        )?;
        let claims = data.claims;
        let now = crate::envelope::unix_now();
        let lifetime = match claims.iat {
            Some(iat) if iat > now + DEFAULT_LEEWAY_SECS => return Err(TokenError::Invalid),
            Some(iat) => claims.exp.saturating_sub(iat),
            None => claims.exp.saturating_sub(now),
        };
        if lifetime > self.max_lifetime_secs {
            return Err(TokenError::Invalid);
        }
        let clean = |s: &str| !s.is_empty() && !s.chars().any(char::is_control);
        if !clean(&claims.sub) || claims.tenant_id.as_deref().is_some_and(|t| !clean(t)) {
            return Err(TokenError::Invalid);
        }
        Ok(claims)
    }

    /// Verifies the value of an `Authorization` header (`Bearer <token>`).
    pub fn verify_header(&self, authorization: Option<&str>) -> Result<Claims, TokenError> {
        let token = bearer(authorization.ok_or(TokenError::Missing)?).ok_or(TokenError::Missing)?;
        self.verify(token)
    }
}

/// The token of a `Bearer` authorization value (scheme case-insensitive).
pub fn bearer(value: &str) -> Option<&str> {
    let (scheme, token) = value.trim().split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

/// Signs `claims` with HS256 (for login and for tests).
pub fn issue(claims: &Claims, secret: &[u8]) -> String {
    jsonwebtoken::encode(
        &Header::new(Algorithm::HS256),
        claims,
        &EncodingKey::from_secret(secret),
    )
    // HS256 signing of a serialisable struct does not fail.
    .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"0123456789abcdef0123456789abcdef";

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn claims() -> Claims {
        Claims {
            sub: "user123".into(),
            tenant_id: Some("tenant1".into()),
            iat: Some(now()),
            exp: now() + 600,
        }
    }

    #[test]
    fn expired_agrees_with_the_full_check() {
        let v = Verifier::new(SECRET, None);
        let leeway = DEFAULT_LEEWAY_SECS;
        for (exp, refused) in [(now() - leeway - 2, true), (now() - leeway + 2, false)] {
            let token = issue(
                &Claims {
                    iat: Some(exp - 60),
                    exp,
                    ..claims()
                },
                SECRET,
            );
            assert_eq!(v.verify(&token).is_err(), refused, "exp {exp}");
            assert_eq!(v.expired(exp, now()), refused, "exp {exp}");
        }
        assert_ne!(
            v.id(),
            Verifier::new(SECRET, None).id(),
            "one id per verifier"
        );
        assert_eq!(v.id(), v.clone().id(), "clones share it");
    }

    #[test]
    fn a_good_token_verifies() {
        let v = Verifier::new(SECRET, None);
        let token = issue(&claims(), SECRET);
        assert_eq!(
            v.verify_header(Some(&format!("Bearer {token}"))),
            Ok(claims())
        );
    }

    #[test]
    fn refusals_have_the_right_kind() {
        let v = Verifier::new(SECRET, None);
        assert_eq!(v.verify_header(None), Err(TokenError::Missing));
        assert_eq!(v.verify_header(Some("Basic abc")), Err(TokenError::Missing));
        let expired = Claims {
            exp: now() - 3600,
            ..claims()
        };
        assert_eq!(v.verify(&issue(&expired, SECRET)), Err(TokenError::Expired));
        let wrong = issue(&claims(), b"another-secret-another-secret-xx");
        assert_eq!(v.verify(&wrong), Err(TokenError::Invalid));
        let control = Claims {
            sub: "us\ner".into(),
            ..claims()
        };
        assert_eq!(v.verify(&issue(&control, SECRET)), Err(TokenError::Invalid));
        assert_eq!(v.verify("a.b.c"), Err(TokenError::Invalid));
        assert_eq!(
            v.verify(&"x".repeat(MAX_TOKEN_BYTES + 1)),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn a_token_from_the_future_or_living_too_long_is_refused() {
        let v = Verifier::new(SECRET, None);
        let future = Claims {
            iat: Some(now() + 3600),
            exp: now() + 7200,
            ..claims()
        };
        assert_eq!(v.verify(&issue(&future, SECRET)), Err(TokenError::Invalid));
        let skewed = Claims {
            iat: Some(now() + 5),
            ..claims()
        };
        assert!(
            v.verify(&issue(&skewed, SECRET)).is_ok(),
            "within the leeway"
        );
        let ten_years = Claims {
            exp: now() + 10 * 365 * 86400,
            ..claims()
        };
        assert_eq!(
            v.verify(&issue(&ten_years, SECRET)),
            Err(TokenError::Invalid)
        );
        let no_iat = Claims {
            iat: None,
            exp: now() + 2 * 86400,
            ..claims()
        };
        assert_eq!(v.verify(&issue(&no_iat, SECRET)), Err(TokenError::Invalid));
        let short =
            Verifier::new(SECRET, None).with_max_lifetime(std::time::Duration::from_secs(60));
        assert_eq!(
            short.verify(&issue(&claims(), SECRET)),
            Err(TokenError::Invalid)
        );
        assert!(v.verify(&issue(&claims(), SECRET)).is_ok());
    }

    #[test]
    fn aud_is_accepted_unless_an_audience_is_configured() {
        #[derive(Serialize)]
        struct WithAud<'a> {
            sub: &'a str,
            exp: u64,
            aud: &'a str,
        }
        let token = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &WithAud {
                sub: "u",
                exp: now() + 60,
                aud: "dwp",
            },
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert!(Verifier::new(SECRET, None).verify(&token).is_ok());
        assert!(Verifier::new(SECRET, Some("dwp")).verify(&token).is_ok());
        assert_eq!(
            Verifier::new(SECRET, Some("other")).verify(&token),
            Err(TokenError::Invalid)
        );
    }

    #[test]
    fn alg_none_and_other_algorithms_are_invalid() {
        use base64_free::url_b64;
        let v = Verifier::new(SECRET, None);
        let body = url_b64(&serde_json::to_vec(&claims()).unwrap());
        let none = format!("{}.{body}.", url_b64(br#"{"alg":"none","typ":"JWT"}"#));
        assert_eq!(v.verify(&none), Err(TokenError::Invalid));
        let hs512 = jsonwebtoken::encode(
            &Header::new(Algorithm::HS512),
            &claims(),
            &EncodingKey::from_secret(SECRET),
        )
        .unwrap();
        assert_eq!(v.verify(&hs512), Err(TokenError::Invalid));
    }

    mod base64_free {
        /// Unpadded base64url, enough to forge test tokens.
        pub(super) fn url_b64(bytes: &[u8]) -> String {
            const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
            let mut out = String::new();
            for chunk in bytes.chunks(3) {
                let n = chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b))
                    << (8 * (3 - chunk.len()));
                for i in 0..=chunk.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                }
            }
            out
        }
    }
}
