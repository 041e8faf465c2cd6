//! The monitoring rows in PostgreSQL: one statement per report (the row
//! and, for a page view, its daily count, together or not at all), and the
//! sweeper that removes what is older than `MONITORING_RETENTION_DAYS`.

use std::sync::Arc;

use sea_orm::{ConnectionTrait, DbBackend, Statement, Value};
use tokio_util::sync::CancellationToken;

use super::Reporter;
use crate::db::Db;
use crate::error::AppError;
use crate::state::AppState;

/// Rows removed per statement while sweeping, so that a large backlog never
/// holds one long transaction.
const SWEEP_BATCH: u64 = 10_000;

/// A page view, checked and cut.
#[derive(Debug)]
pub struct PageViewRow {
    /// The page's path.
    pub path: String,
    /// The daily count's key (the menu key, else the path).
    pub page_key: String,
    /// The page's title.
    pub title: Option<String>,
    /// The browser's visitor id.
    pub visitor_id: Option<String>,
    /// The device kind.
    pub device: Option<String>,
    /// The page before.
    pub referrer: Option<String>,
    /// An object.
    pub metadata: Option<serde_json::Value>,
}

/// An event, checked and cut.
#[derive(Debug)]
pub struct EventRow {
    /// What was acted on.
    pub resource_key: String,
    /// The action, upper-case.
    pub action: String,
    /// A label.
    pub label: Option<String>,
    /// The page's path.
    pub path: Option<String>,
    /// The browser's visitor id.
    pub visitor_id: Option<String>,
    /// An object.
    pub metadata: Option<serde_json::Value>,
}

const PAGE_VIEW: &str = "WITH v AS (\
  INSERT INTO monitoring_page_view (tenant_id, user_id, client_addr, user_agent, \
    path, page_key, title, visitor_id, device, referrer, metadata) \
  VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11::jsonb) \
  RETURNING tenant_id, page_key, created_at) \
INSERT INTO monitoring_page_daily (tenant_id, day, page_key, views) \
SELECT tenant_id, (created_at AT TIME ZONE 'UTC')::date, page_key, 1 FROM v \
ON CONFLICT (tenant_id, day, page_key) DO UPDATE SET views = monitoring_page_daily.views + 1";

const EVENT: &str = "INSERT INTO monitoring_event (tenant_id, user_id, client_addr, user_agent, \
  resource_key, action, label, path, visitor_id, metadata) \
VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10::jsonb)";

/// Stores a page view and counts it for its page and day (UTC).
pub async fn page_view(db: &Db, who: &Reporter, row: PageViewRow) -> Result<(), AppError> {
    let mut values = sender(who);
    values.extend([
        row.path.into(),
        row.page_key.into(),
        row.title.into(),
        row.visitor_id.into(),
        row.device.into(),
        row.referrer.into(),
        json_text(row.metadata),
    ]);
    execute(db, PAGE_VIEW, values).await
}

/// Stores an event.
pub async fn event(db: &Db, who: &Reporter, row: EventRow) -> Result<(), AppError> {
    let mut values = sender(who);
    values.extend([
        row.resource_key.into(),
        row.action.into(),
        row.label.into(),
        row.path.into(),
        row.visitor_id.into(),
        json_text(row.metadata),
    ]);
    execute(db, EVENT, values).await
}

fn sender(who: &Reporter) -> Vec<Value> {
    vec![
        who.tenant_id.clone().into(),
        who.user_id.clone().into(),
        who.client_addr.clone().into(),
        who.user_agent.clone().into(),
    ]
}

fn json_text(value: Option<serde_json::Value>) -> Value {
    value.map(|v| v.to_string()).into()
}

async fn execute(db: &Db, sql: &str, values: Vec<Value>) -> Result<(), AppError> {
    let statement = Statement::from_sql_and_values(DbBackend::Postgres, sql, values);
    db.bounded(db.conn()?.execute_raw(statement))
        .await
        .map(drop)
}

/// Removes rows and daily counts older than `days`; returns how many.
pub async fn sweep(db: &Db, days: u64) -> Result<u64, AppError> {
    let conn = db.conn()?;
    let mut removed = 0;
    for (table, column, cutoff) in [
        (
            "monitoring_page_view",
            "created_at",
            "now() - make_interval(days => $1)",
        ),
        (
            "monitoring_event",
            "created_at",
            "now() - make_interval(days => $1)",
        ),
        (
            "monitoring_page_daily",
            "day",
            "((now() AT TIME ZONE 'UTC') - make_interval(days => $1))::date",
        ),
    ] {
        // The daily table has no id: its rows are picked by their ctid.
        let sql = format!(
            "DELETE FROM {table} WHERE ctid IN \
             (SELECT ctid FROM {table} WHERE {column} < {cutoff} LIMIT {SWEEP_BATCH})"
        );
        loop {
            let days = i32::try_from(days).unwrap_or(i32::MAX);
            let statement =
                Statement::from_sql_and_values(DbBackend::Postgres, &sql, [days.into()]);
            let done = db
                .bounded(conn.execute_raw(statement))
                .await?
                .rows_affected();
            removed += done;
            if done < SWEEP_BATCH {
                break;
            }
        }
    }
    Ok(removed)
}

/// Sweeps every `MONITORING_SWEEP_SECS` until `stop`; every replica may
/// run it (a row is removed once, whoever gets to it).
pub async fn run_sweeper(state: Arc<AppState>, stop: CancellationToken) {
    let limits = state.config.monitoring.clone();
    loop {
        if state.db.is_ready() {
            match sweep(&state.db, limits.retention_days).await {
                Ok(0) => {}
                Ok(removed) => tracing::info!(removed, "old monitoring rows removed"),
                Err(e) => tracing::warn!(error = %e, "monitoring sweep failed; retrying later"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(limits.sweep_every) => {}
            () = stop.cancelled() => return,
        }
    }
}
