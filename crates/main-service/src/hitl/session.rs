//! Who a HITL session and its requests belong to (CONTRACT.md section 5).
//!
//! The agent records a session's owner in `hitl:session:{sessionId}`
//! (`userId`, `tenantId`), and a request's in `hitl:request:{requestId}`.
//! Ids are compared by their canonical text: a JSON number `1` is the
//! string `"1"` (the Java backend's agents wrote numbers); `null` or absent
//! means "not recorded". A decision is made only when the request's owner
//! and the session's owner are the same and the caller is that owner, so a
//! request someone planted on another person's session can never reach that
//! person's agent.
//!
//! An owner part that is not recorded is never a wildcard: a request or
//! session whose agent wrote a null (or no) `userId` or `tenantId` belongs
//! to no one anyone can prove, so nobody reads or decides it (403). Through
//! the gateway the real agent always records both (the token's `sub` and
//! `tenant_id`, which the edge check ties to `X-User-ID`/`X-Tenant-ID`).

use dwp_core::hitl;
use redis::aio::ConnectionManager;
use serde_json::{Map, Value};

use crate::auth::Caller;
use crate::error::AppError;
use crate::store::Store;

/// The recorded owner of a session or a request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owner {
    /// The user id, when recorded.
    pub user: Option<String>,
    /// The tenant id, when recorded.
    pub tenant: Option<String>,
}

impl Owner {
    /// The owner recorded in a stored request or session.
    pub fn of(record: &Map<String, Value>) -> Self {
        Self {
            user: id_text(record.get("userId")),
            tenant: id_text(record.get("tenantId")),
        }
    }

    /// The caller's own identity, as an owner.
    pub fn caller(caller: &Caller) -> Self {
        Self {
            user: Some(caller.user_id.clone()),
            tenant: Some(caller.tenant_id.clone()),
        }
    }

    /// 403 unless both parts are recorded and are the caller's.
    pub fn admits(&self, caller: &Caller) -> Result<(), AppError> {
        if self.user.is_none() || self.tenant.is_none() {
            return Err(AppError::Forbidden(
                "This request has no recorded owner (userId and tenantId)",
            ));
        }
        if self
            .tenant
            .as_deref()
            .is_some_and(|t| t != caller.tenant_id)
        {
            return Err(AppError::Forbidden(
                "This request belongs to another tenant",
            ));
        }
        if self.user.as_deref().is_some_and(|u| u != caller.user_id) {
            return Err(AppError::Forbidden("This request belongs to another user"));
        }
        Ok(())
    }

    /// Its field in `hitl:owners:{sessionId}` ([`hitl::owner_field`]).
    pub fn field(&self) -> String {
        hitl::owner_field(
            self.tenant.as_deref().unwrap_or(""),
            self.user.as_deref().unwrap_or(""),
        )
    }
}

/// An id as text: a string as it is, a number in its JSON form, anything
/// else (null, absent, objects) as not recorded.
pub fn id_text(value: Option<&Value>) -> Option<String> {
    match value? {
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        _ => None,
    }
}

/// A session record as read from Redis.
#[derive(Debug)]
pub struct Session {
    /// The stored value, byte for byte (the decision script checks it is unchanged).
    pub raw: String,
    /// Its recorded owner.
    pub owner: Owner,
    /// The request it names (the agent's latest wait on it), when recorded.
    pub request_id: Option<String>,
}

/// Reads `hitl:session:{sessionId}`. A value that is not a JSON object has
/// no owner anyone can prove, so it is refused (403), never a 500.
pub async fn read(
    store: &Store,
    conn: &mut ConnectionManager,
    session_id: &str,
) -> Result<Option<Session>, AppError> {
    let raw: Option<String> = store
        .bounded(
            redis::cmd("GET")
                .arg(hitl::session_key(session_id))
                .query_async(conn),
        )
        .await?;
    let Some(raw) = raw else {
        return Ok(None);
    };
    let record: Map<String, Value> = serde_json::from_str(&raw)
        .map_err(|_| AppError::Forbidden("The session's owner cannot be read"))?;
    Ok(Some(Session {
        owner: Owner::of(&record),
        request_id: record
            .get("requestId")
            .and_then(Value::as_str)
            .map(str::to_owned),
        raw,
    }))
}

/// 403 unless the session exists, has the request's owner, and admits the caller.
pub fn check(session: Option<&Session>, request: &Owner, caller: &Caller) -> Result<(), AppError> {
    let session = session.ok_or(AppError::Forbidden(
        "The request's session has no recorded owner",
    ))?;
    if session.owner != *request {
        return Err(AppError::Forbidden(
            "The request does not belong to its session's owner",
        ));
    }
    session.owner.admits(caller)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn owner(v: Value) -> Owner {
        Owner::of(v.as_object().unwrap())
    }

    fn caller(user: &str, tenant: &str) -> Caller {
        Caller {
            user_id: user.into(),
            tenant_id: tenant.into(),
        }
    }

    #[test]
    fn numbers_and_strings_are_the_same_id_and_null_is_unrecorded() {
        assert_eq!(
            owner(json!({"userId": "7", "tenantId": 1})),
            owner(json!({"userId": 7, "tenantId": "1"}))
        );
        let unrecorded = owner(json!({"userId": null}));
        assert_eq!((&unrecorded.user, &unrecorded.tenant), (&None, &None));
        assert!(
            unrecorded.admits(&caller("alice", "1")).is_err(),
            "an unrecorded owner is nobody's, not everybody's"
        );
        let no_tenant = owner(json!({"userId": "alice", "tenantId": null}));
        assert!(no_tenant.admits(&caller("alice", "1")).is_err());
        let numeric = owner(json!({"userId": "alice", "tenantId": 999}));
        assert!(numeric.admits(&caller("alice", "999")).is_ok());
        assert!(
            numeric.admits(&caller("alice", "1")).is_err(),
            "a numeric tenant is checked, not skipped"
        );
    }

    #[test]
    fn a_request_is_decided_only_when_it_session_and_caller_agree() {
        let alice = owner(json!({"userId": "alice", "tenantId": "t1"}));
        let eve = owner(json!({"userId": "eve", "tenantId": "t2"}));
        let session = |o: &Owner| Session {
            raw: String::new(),
            owner: o.clone(),
            request_id: None,
        };
        assert!(check(Some(&session(&alice)), &alice, &caller("alice", "t1")).is_ok());
        // Eve's request planted on Alice's session, decided by Eve.
        assert!(check(Some(&session(&alice)), &eve, &caller("eve", "t2")).is_err());
        // Alice's own request, decided by Eve.
        assert!(check(Some(&session(&alice)), &alice, &caller("eve", "t2")).is_err());
        assert!(check(None, &alice, &caller("alice", "t1")).is_err());
    }
}
