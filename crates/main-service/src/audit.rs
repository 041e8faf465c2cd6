//! The request lifecycle stream (`dwp:hitl-decisions`) → the
//! `hitl_decision` audit and the `hitl_request` inbox rows.
//!
//! Every change of a HITL request is appended to the stream in the same
//! atomic step as the change (an outbox): a request created over HTTP
//! (`pending`), a decision (`approved`, `rejected`), an expiry
//! (`expired`, decided by `system`). So a decision never waits for, or
//! fails because of, PostgreSQL; the consumer writes the rows, and after a
//! database outage it catches up. One audit row per request: an entry
//! applied twice is inserted once, and the inbox merge is idempotent.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, FixedOffset};
use dwp_core::hitl::{DecisionRecord, MAX_ID_BYTES, RECORD_EXPIRED, RECORD_PENDING};
use sea_orm::sea_query::OnConflict;
use sea_orm::{DatabaseTransaction, DbErr, EntityTrait, Set, TransactionTrait};
use serde_json::{Map, Value};

use crate::consumer::{Apply, Entry, Rejected};
use crate::db::Db;
use crate::entity::hitl_decision::{self, Column, Entity};
use crate::hitl::inbox::{self, RequestRow};
use crate::hitl::publish::Publisher;

/// Applies `dwp:hitl-decisions` entries.
pub struct Audit {
    /// `HITL_EXPIRY_SECS`: a request expires this long after it was made.
    pub expiry: Duration,
    /// Announces each request's new status on the live feed.
    pub feed: Option<Arc<Publisher>>,
}

impl Apply for Audit {
    async fn apply(&self, db: &Db, entries: &[Entry]) -> Result<Vec<Rejected>, DbErr> {
        let mut rejected = Vec::new();
        let txn = db.connection().begin().await?;
        let mut changes = Vec::with_capacity(entries.len());
        for entry in entries {
            match self.apply_one(&txn, entry).await? {
                Ok(change) => changes.push(change),
                Err(why) => rejected.push((entry.id.clone(), why.to_owned())),
            }
        }
        // Rows are locked in one order (by request id, stable) in every
        // transaction that writes them (the task writer does the same), so
        // two consumers' batches never deadlock on each other.
        changes.sort_by(|a, b| a.request_id().cmp(b.request_id()));
        // The requests to announce: every one the batch touched.
        let requests: Vec<String> = changes.iter().map(|c| c.request_id().to_owned()).collect();
        for change in changes {
            match change {
                InboxChange::Record(row) => inbox::record(&txn, *row).await?,
                InboxChange::Expire(id, at) => inbox::expire(&txn, &id, at).await?,
            }
        }
        let Some(feed) = &self.feed else {
            txn.commit().await?;
            return Ok(rejected);
        };
        let changes = inbox::current(&txn, &requests).await?;
        txn.commit().await?;
        feed.publish(&changes).await?;
        Ok(rejected)
    }
}

impl Audit {
    /// One entry's audit row; its inbox change is returned, to be applied
    /// in request order. `Ok(Err(why))` when it is bad data.
    async fn apply_one(
        &self,
        txn: &DatabaseTransaction,
        entry: &Entry,
    ) -> Result<Result<InboxChange, &'static str>, DbErr> {
        let record = DecisionRecord::read(|name| entry.field(name));
        let checked = match check(&record) {
            Ok(checked) => checked,
            Err(why) => return Ok(Err(why)),
        };
        if record.decision != RECORD_PENDING {
            Entity::insert(audit_row(&record, checked.at))
                .on_conflict(
                    OnConflict::column(Column::RequestId)
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(txn)
                .await?;
        }
        Ok(Ok(if record.decision == RECORD_EXPIRED {
            InboxChange::Expire(record.request_id.to_owned(), checked.at)
        } else {
            InboxChange::Record(Box::new(self.inbox_row(&record, checked)))
        }))
    }

    /// The inbox's view of a created or decided request.
    fn inbox_row(&self, record: &DecisionRecord<'_>, checked: Checked) -> RequestRow {
        let request = checked.request;
        let text = |name: &str| request.get(name).and_then(Value::as_str).map(str::to_owned);
        let pending = record.decision == RECORD_PENDING;
        // A request created over HTTP has an RFC 3339 `createdAt`; the
        // real agent writes an integer, so a decision's time stands in.
        let created_at = text("createdAt")
            .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
            .unwrap_or(checked.at);
        let expiry = chrono::Duration::from_std(self.expiry).unwrap_or(chrono::Duration::MAX);
        RequestRow {
            request_id: record.request_id.to_owned(),
            session_id: Some(record.session_id.to_owned()),
            task_id: text("taskId").filter(|t| t.chars().count() <= 128),
            tenant_id: record.tenant_id.to_owned(),
            // Only the owner decides: the decider is the owner.
            user_id: record.decided_by.to_owned(),
            action_type: text("actionType"),
            message: text("message"),
            context: request.get("context").cloned(),
            status: match record.decision {
                "approved" => "approved",
                "rejected" => "rejected",
                _ => "pending",
            },
            created_at,
            expires_at: created_at.checked_add_signed(expiry).unwrap_or(created_at),
            decided_by: (!pending).then(|| record.decided_by.to_owned()),
            decided_at: (!pending).then_some(checked.at),
            reason: (!record.reason.is_empty()).then(|| record.reason.to_owned()),
        }
    }
}

/// What an entry changes in the inbox.
enum InboxChange {
    /// A created or decided request.
    Record(Box<RequestRow>),
    /// A request expired at that time.
    Expire(String, DateTime<FixedOffset>),
}

impl InboxChange {
    fn request_id(&self) -> &str {
        match self {
            Self::Record(row) => &row.request_id,
            Self::Expire(id, _) => id,
        }
    }
}

/// What [`check`] read from a record.
struct Checked {
    /// `decidedAt`.
    at: DateTime<FixedOffset>,
    /// The stored request the record carries.
    request: Map<String, Value>,
}

/// Checks the record's fields fit the columns.
fn check(record: &DecisionRecord<'_>) -> Result<Checked, &'static str> {
    let fits = |value: &str, max: usize| !value.is_empty() && value.chars().count() <= max;
    if !(fits(record.request_id, MAX_ID_BYTES)
        && fits(record.session_id, MAX_ID_BYTES)
        && fits(record.tenant_id, 50)
        && fits(record.decided_by, 50)
        && fits(record.decision, 20))
    {
        return Err("a required field is missing or too long");
    }
    if ![RECORD_PENDING, "approved", "rejected", RECORD_EXPIRED].contains(&record.decision) {
        return Err("decision is not pending, approved, rejected or expired");
    }
    let at = DateTime::parse_from_rfc3339(record.decided_at)
        .map_err(|_| "decidedAt is not an RFC 3339 time")?;
    let request = match serde_json::from_str(record.request) {
        Ok(Value::Object(map)) => map,
        _ => Map::new(),
    };
    Ok(Checked { at, request })
}

fn audit_row(record: &DecisionRecord<'_>, at: DateTime<FixedOffset>) -> hitl_decision::ActiveModel {
    hitl_decision::ActiveModel {
        request_id: Set(record.request_id.to_owned()),
        session_id: Set(record.session_id.to_owned()),
        tenant_id: Set(record.tenant_id.to_owned()),
        decided_by: Set(record.decided_by.to_owned()),
        decision: Set(record.decision.to_owned()),
        reason: Set((!record.reason.is_empty()).then(|| record.reason.to_owned())),
        decided_at: Set(at),
        request: Set(record.request.to_owned()),
        recorded_at: Set(chrono::Utc::now().fixed_offset()),
        ..Default::default()
    }
}
