//! The decision audit: `dwp:hitl-decisions` entries → `hitl_decision` rows.
//!
//! The HITL decision script appends the audit record to the stream in the
//! same atomic step as the decision (an outbox), so a decision never waits
//! for, or fails because of, PostgreSQL; the consumer writes the rows, and
//! after a database outage it catches up. One row per request: an entry
//! applied twice is inserted once.

use chrono::DateTime;
use dwp_core::hitl::{DecisionRecord, MAX_ID_BYTES};
use sea_orm::sea_query::OnConflict;
use sea_orm::{DbErr, EntityTrait, Set, TransactionTrait};

use crate::consumer::{Apply, Entry, Rejected};
use crate::db::{Db, INSERT_CHUNK};
use crate::entity::hitl_decision::{self, Column, Entity};

/// Applies `dwp:hitl-decisions` entries.
pub struct Audit;

impl Apply for Audit {
    async fn apply(&self, db: &Db, entries: &[Entry]) -> Result<Vec<Rejected>, DbErr> {
        let mut rejected = Vec::new();
        let mut rows = Vec::new();
        for entry in entries {
            match row(entry) {
                Ok(row) => rows.push(row),
                Err(why) => rejected.push((entry.id.clone(), why.to_owned())),
            }
        }
        let mut rows = rows.into_iter().peekable();
        let txn = db.connection().begin().await?;
        while rows.peek().is_some() {
            Entity::insert_many(rows.by_ref().take(INSERT_CHUNK))
                .on_conflict(
                    OnConflict::column(Column::RequestId)
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(rejected)
    }
}

fn row(entry: &Entry) -> Result<hitl_decision::ActiveModel, &'static str> {
    let record = DecisionRecord::read(|name| entry.field(name));
    // The column widths, in characters as PostgreSQL counts them.
    let text = |value: &str, max: usize| {
        (!value.is_empty() && value.chars().count() <= max)
            .then(|| value.to_owned())
            .ok_or("a required field is missing or too long")
    };
    let decided_at = DateTime::parse_from_rfc3339(record.decided_at)
        .map_err(|_| "decidedAt is not an RFC 3339 time")?;
    Ok(hitl_decision::ActiveModel {
        request_id: Set(text(record.request_id, MAX_ID_BYTES)?),
        session_id: Set(text(record.session_id, MAX_ID_BYTES)?),
        tenant_id: Set(text(record.tenant_id, 50)?),
        decided_by: Set(text(record.decided_by, 50)?),
        decision: Set(text(record.decision, 20)?),
        reason: Set((!record.reason.is_empty()).then(|| record.reason.to_owned())),
        decided_at: Set(decided_at),
        request: Set(record.request.to_owned()),
        recorded_at: Set(chrono::Utc::now().fixed_offset()),
        ..Default::default()
    })
}
