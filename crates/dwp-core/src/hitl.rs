//! Human-in-the-loop schemas and Redis names (CONTRACT.md section 5).

use serde::{Deserialize, Serialize};

/// Seconds a stored request lives (30 min).
pub const REQUEST_TTL_SECS: u64 = 30 * 60;
/// Seconds a session marker lives (60 min).
pub const SESSION_TTL_SECS: u64 = 60 * 60;
/// Seconds a stored signal lives (5 min).
pub const SIGNAL_TTL_SECS: u64 = 5 * 60;
/// The reason sent with a rejection that gives none.
pub const DEFAULT_REJECT_REASON: &str = "User rejected";

/// The Redis Stream every change of a HITL request is appended to in the
/// same atomic step as the change itself (an outbox): created over HTTP
/// ([`RECORD_PENDING`]), decided, expired ([`RECORD_EXPIRED`]).
/// main-service's consumer keeps the `hitl_request` rows (the inbox) and
/// the `hitl_decision` audit from it.
pub const DECISIONS_STREAM: &str = "dwp:hitl-decisions";

/// The sorted set of sessions whose signal nobody has received yet, scored
/// by the Unix second delivery stops (main-service's delivery rule:
/// publish again once the channel has a subscriber).
pub const UNDELIVERED_KEY: &str = "hitl:undelivered";

/// `hitl:owners:{sessionId}`: every owner seen on a session during its
/// lifetime (a hash of [`owner_field`] to the request id it was seen with).
/// Session ids carry no tenant, so two tenants' users of one name can share
/// one; more than one owner here means a decision could reach a run it was
/// not made for, and none is published. The gateway adds the owner of
/// every `hitl` event it relays, main-service the owner of every session it
/// decides on or claims.
pub fn owners_key(session_id: &str) -> String {
    format!("hitl:owners:{session_id}")
}

/// The field of an owner in [`owners_key`]: the tenant's length first, so
/// that no (tenant, user) pair shares a field with another.
pub fn owner_field(tenant: &str, user: &str) -> String {
    format!("{}:{tenant}:{user}", tenant.len())
}

/// Records the owner of a relayed `hitl` event under its session.
/// KEYS: the request. ARGV: the owner field, the owners TTL, the request
/// id. Reads the session id from the stored request (the event does not
/// carry it); returns 1 recorded, 0 no such request or no session in it.
pub const RECORD_OWNER_SCRIPT: &str = r"
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local ok, request = pcall(cjson.decode, raw)
if not ok or type(request) ~= 'table' or type(request.sessionId) ~= 'string' then return 0 end
local owners = 'hitl:owners:' .. request.sessionId
redis.call('HSET', owners, ARGV[1], ARGV[3])
redis.call('EXPIRE', owners, ARGV[2])
return 1
";

/// `hitl:request:{requestId}`.
pub fn request_key(request_id: &str) -> String {
    format!("hitl:request:{request_id}")
}

/// `hitl:session:{sessionId}`.
pub fn session_key(session_id: &str) -> String {
    format!("hitl:session:{session_id}")
}

/// `hitl:signal:{sessionId}`.
pub fn signal_key(session_id: &str) -> String {
    format!("hitl:signal:{session_id}")
}

/// `hitl:channel:{sessionId}`.
pub fn channel(session_id: &str) -> String {
    format!("hitl:channel:{session_id}")
}

/// Longest HITL session or request id accepted, in bytes (an e-mail
/// address of 254 bytes inside `session_{sub}_{unix seconds}` fits).
pub const MAX_ID_BYTES: usize = 512;

/// A session or request id as an agent may store it: 1 to
/// [`MAX_ID_BYTES`] bytes with no control character. The real agent builds
/// session ids from the raw token `sub` (CONTRACT.md section 5), so `@`,
/// spaces, `+` and non-ASCII text are ordinary; Redis keys and channels are
/// binary-safe and nothing here matches keys by pattern, so only what could
/// break a log line or a header (control characters), nothing and the
/// unreasonably long are refused.
pub fn storable_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= MAX_ID_BYTES && !id.chars().any(char::is_control)
}

/// A strict id for our own records (task ids): 1 to 128 characters of
/// `A-Za-z0-9_.:-`, so that no key pattern (`*`, `?`, `[`) can be smuggled
/// through it.
pub fn valid_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 128
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b':' | b'-'))
}

/// The decision a person makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Go ahead.
    Approve,
    /// Do not.
    Reject,
}

impl Decision {
    /// `approve` / `reject` (the signal's `action`).
    pub fn action(self) -> &'static str {
        match self {
            Self::Approve => "approve",
            Self::Reject => "reject",
        }
    }

    /// `approved` / `rejected` (the request's and the signal's `status`).
    pub fn status(self) -> &'static str {
        match self {
            Self::Approve => "approved",
            Self::Reject => "rejected",
        }
    }

    /// `approval` / `rejection` (the signal's `type`, which Aura-Platform reads).
    pub fn signal_type(self) -> &'static str {
        match self {
            Self::Approve => "approval",
            Self::Reject => "rejection",
        }
    }
}

/// A HITL request as main-service stores it under `hitl:request:{requestId}`
/// (CONTRACT.md section 5). Readers take ids as JSON values: an agent's
/// own records may carry numbers.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StoredRequest {
    /// The request.
    pub request_id: String,
    /// The waiting agent's session.
    pub session_id: String,
    /// What the agent wants to do.
    pub action_type: String,
    /// What the person needs to decide.
    pub context: serde_json::Value,
    /// `pending` until decided.
    pub status: String,
    /// Who the request is for.
    pub user_id: String,
    /// Their tenant.
    pub tenant_id: String,
    /// RFC 3339.
    pub created_at: String,
}

/// A session's owner record under `hitl:session:{sessionId}`, as
/// main-service claims it for a request created through the API.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct SessionRecord {
    /// The session.
    pub session_id: String,
    /// The request that claimed it.
    pub request_id: String,
    /// The owner.
    pub user_id: String,
    /// The owner's tenant.
    pub tenant_id: String,
    /// RFC 3339.
    pub created_at: String,
}

/// One entry of the decision stream `dwp:hitl-decisions`: the outbox the
/// decision script appends to in the same atomic step as the decision, and
/// the audit consumer turns into a `hitl_decision` row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DecisionRecord<'a> {
    /// The decided request.
    pub request_id: &'a str,
    /// Its session.
    pub session_id: &'a str,
    /// The decider's tenant.
    pub tenant_id: &'a str,
    /// Who decided (the token's `sub`).
    pub decided_by: &'a str,
    /// `approved` or `rejected`.
    pub decision: &'a str,
    /// Rejections: why; empty otherwise.
    pub reason: &'a str,
    /// RFC 3339.
    pub decided_at: &'a str,
    /// The request as stored after the decision (JSON).
    pub request: &'a str,
}

impl<'a> DecisionRecord<'a> {
    /// The stream field names, in the order [`fields`](Self::fields) gives them.
    pub const NAMES: [&'static str; 8] = [
        "requestId",
        "sessionId",
        "tenantId",
        "decidedBy",
        "decision",
        "reason",
        "decidedAt",
        "request",
    ];

    /// The entry's fields as name and value pairs, for `XADD`.
    pub fn fields(&self) -> [(&'static str, &'a str); 8] {
        let values = [
            self.request_id,
            self.session_id,
            self.tenant_id,
            self.decided_by,
            self.decision,
            self.reason,
            self.decided_at,
            self.request,
        ];
        let mut out = [("", ""); 8];
        for (i, value) in values.into_iter().enumerate() {
            out[i] = (Self::NAMES[i], value);
        }
        out
    }

    /// The record of an entry whose fields `field` reads (missing ones are empty).
    pub fn read(field: impl Fn(&'static str) -> &'a str) -> Self {
        let [
            request_id,
            session_id,
            tenant_id,
            decided_by,
            decision,
            reason,
            decided_at,
            request,
        ] = Self::NAMES.map(field);
        Self {
            request_id,
            session_id,
            tenant_id,
            decided_by,
            decision,
            reason,
            decided_at,
            request,
        }
    }
}

/// The signal published on `hitl:channel:{sessionId}` and stored under
/// `hitl:signal:{sessionId}`.
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Signal {
    /// `approval` or `rejection`.
    #[serde(rename = "type")]
    pub signal_type: String,
    /// `approve` or `reject`.
    pub action: String,
    /// `approved` or `rejected`.
    pub status: String,
    /// The decided request.
    pub request_id: String,
    /// The waiting agent's session.
    pub session_id: String,
    /// Rejections only: why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    /// Unix seconds.
    pub timestamp: u64,
    /// [`context_digest`] of the request's `context` as it was decided, so
    /// an agent can check that what it runs is what was approved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_digest: Option<String>,
}

impl Signal {
    /// The signal for `decision` on a request of `session_id`.
    pub fn new(
        decision: Decision,
        request_id: &str,
        session_id: &str,
        reason: Option<String>,
        timestamp: u64,
    ) -> Self {
        Self {
            signal_type: decision.signal_type().into(),
            action: decision.action().into(),
            status: decision.status().into(),
            request_id: request_id.into(),
            session_id: session_id.into(),
            reason: match decision {
                Decision::Approve => None,
                Decision::Reject => Some(reason.unwrap_or_else(|| DEFAULT_REJECT_REASON.into())),
            },
            timestamp,
            context_digest: None,
        }
    }
}

/// The SHA-256, as 64 lower-case hex digits, of `context` in canonical
/// JSON: no whitespace, object keys sorted by their UTF-8 bytes at every
/// depth, strings and numbers written as serde_json writes them. Two
/// contexts with the same content and another key order or spacing have
/// the same digest; an absent context digests as `null`.
pub fn context_digest(context: Option<&serde_json::Value>) -> String {
    use sha2::{Digest, Sha256};
    let mut text = String::new();
    canonical(context.unwrap_or(&serde_json::Value::Null), &mut text);
    Sha256::digest(text.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Appends the canonical JSON of `value` to `out`.
fn canonical(value: &serde_json::Value, out: &mut String) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                canonical(item, out);
            }
            out.push(']');
        }
        scalar => out.push_str(&scalar.to_string()),
    }
}

/// The `decision` of a lifecycle entry that records a new request.
pub const RECORD_PENDING: &str = "pending";
/// The `decision` of a lifecycle entry that records an expiry.
pub const RECORD_EXPIRED: &str = "expired";
/// The `decidedBy` of an expiry: no person decided.
pub const EXPIRED_BY: &str = "system";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_context_digest_ignores_key_order_and_spacing_only() {
        let a: serde_json::Value =
            serde_json::from_str(r#"{"to":"a@x","n":[1,{"b":2,"a":"é"}]}"#).unwrap();
        let b: serde_json::Value =
            serde_json::from_str(r#"{ "n" : [1, {"a":"é","b":2}], "to":"a@x" }"#).unwrap();
        let c: serde_json::Value =
            serde_json::from_str(r#"{"to":"b@x","n":[1,{"b":2,"a":"é"}]}"#).unwrap();
        assert_eq!(context_digest(Some(&a)), context_digest(Some(&b)));
        assert_ne!(context_digest(Some(&a)), context_digest(Some(&c)));
        assert_eq!(context_digest(Some(&a)).len(), 64);
        // The canonical text is what the digest covers.
        let mut text = String::new();
        canonical(&b, &mut text);
        assert_eq!(text, r#"{"n":[1,{"a":"é","b":2}],"to":"a@x"}"#);
        // sha256("null")
        assert_eq!(
            context_digest(None),
            "74234e98afe7498fb5daf1f36ac2d78acc339464f950703b8c019892f982b90b"
        );
    }

    #[test]
    fn signals_serialise_to_the_contract_json() {
        let a = Signal::new(
            Decision::Approve,
            "req_142b79eadced",
            "session_user123_1795309470",
            None,
            1795309471,
        );
        assert_eq!(
            serde_json::to_string(&a).unwrap(),
            r#"{"type":"approval","action":"approve","status":"approved","requestId":"req_142b79eadced","sessionId":"session_user123_1795309470","timestamp":1795309471}"#
        );
        let r = Signal::new(Decision::Reject, "r", "s", None, 1);
        assert_eq!(
            serde_json::to_string(&r).unwrap(),
            r#"{"type":"rejection","action":"reject","status":"rejected","requestId":"r","sessionId":"s","reason":"User rejected","timestamp":1}"#
        );
    }

    #[test]
    fn ids_with_key_pattern_characters_are_invalid() {
        assert!(valid_id("req_142b79eadced"));
        assert!(valid_id("session_user123_1795309470"));
        assert!(valid_id(&"a".repeat(128)));
        for bad in [
            "",
            "*",
            "req_*",
            "a?b",
            "[ab]",
            "a b",
            "a\nb",
            "é",
            &"a".repeat(129),
        ] {
            assert!(!valid_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn agent_ids_may_be_any_printable_text_of_a_sane_length() {
        for good in [
            "session_alice.kim@corp.example_1795309470",
            "session_alice kim_1795309470",
            "session_a+b_1",
            "session_김철수_1",
            "finance_1_1",
            "*",
            &"a".repeat(MAX_ID_BYTES),
        ] {
            assert!(storable_id(good), "{good:?}");
        }
        for bad in [
            "",
            "a\nb",
            "a\rb",
            "a\0b",
            "a\u{7f}b",
            "a\u{85}b",
            &"a".repeat(MAX_ID_BYTES + 1),
        ] {
            assert!(!storable_id(bad), "{bad:?}");
        }
    }

    #[test]
    fn keys_follow_the_contract() {
        assert_eq!(request_key("r1"), "hitl:request:r1");
        assert_eq!(session_key("s1"), "hitl:session:s1");
        assert_eq!(signal_key("s1"), "hitl:signal:s1");
        assert_eq!(channel("s1"), "hitl:channel:s1");
        assert_eq!(owners_key("s1"), "hitl:owners:s1");
        assert_ne!(owner_field("1:a", "b"), owner_field("1", "a:b"));
    }
}
