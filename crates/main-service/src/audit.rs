//! The decision audit: `dwp:hitl-decisions` entries → `hitl_decision` rows.
//!
//! The HITL decision script appends the audit record to the stream in the
//! same atomic step as the decision (an outbox), so a decision never waits
//! for, or fails because of, PostgreSQL; the consumer writes the rows, and
//! after a database outage it catches up. One row per request: an entry
//! applied twice is inserted once.

use chrono::DateTime;
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
    // The column widths, in characters as PostgreSQL counts them.
    let text = |name: &str, max: usize| {
        let value = entry.field(name);
        (!value.is_empty() && value.chars().count() <= max)
            .then(|| value.to_owned())
            .ok_or("a required field is missing or too long")
    };
    let decided_at = DateTime::parse_from_rfc3339(entry.field("decidedAt"))
        .map_err(|_| "decidedAt is not an RFC 3339 time")?;
    let reason = entry.field("reason");
    Ok(hitl_decision::ActiveModel {
        request_id: Set(text("requestId", dwp_core::hitl::MAX_ID_BYTES)?),
        session_id: Set(text("sessionId", dwp_core::hitl::MAX_ID_BYTES)?),
        tenant_id: Set(text("tenantId", 50)?),
        decided_by: Set(text("decidedBy", 50)?),
        decision: Set(text("decision", 20)?),
        reason: Set((!reason.is_empty()).then(|| reason.to_owned())),
        decided_at: Set(decided_at),
        request: Set(entry.field("request").to_owned()),
        recorded_at: Set(chrono::Utc::now().fixed_offset()),
        ..Default::default()
    })
}
