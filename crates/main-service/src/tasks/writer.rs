//! Recorded agent streams → `agent_task` rows. The gateway tees every SSE
//! event it relays into `dwp:agent-task-events`; the consumer hands them here
//! in stream order, a batch at a time, and this keeps one row per task:
//!
//! - the first event creates the row, `IN_PROGRESS`;
//! - `plan_step` and `plan_step_update` add or update a step in `plan_steps`
//!   (by `stepId`), and move `progress` to the share of completed steps;
//! - `hitl` sets `hitl_request_id` and adds the request to the caller's
//!   inbox (`hitl_request`, [`crate::hitl::inbox`]);
//! - `end` or `[DONE]` completes it (progress 100); `error` or `failed`
//!   fails it with the message, and so does the gateway's
//!   `dwp.relay_broken` entry (a stream that ended without finishing).
//!
//! Events only move a task forward, and steps merge by id, so applying an
//! entry again (a redelivery after a crash) changes nothing.

use std::collections::HashMap;
use std::sync::Arc;

use chrono::Utc;
use dwp_core::events::EventType;
use dwp_core::tasks;
use sea_orm::prelude::DateTimeWithTimeZone;
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseTransaction, DbErr, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set, TransactionTrait,
};
use serde_json::{Map, Value};

use super::lifecycle::{self, Status};
use crate::consumer::{Apply, Entry, Rejected};
use crate::db::{Db, INSERT_CHUNK};
use crate::entity::agent_task::{self, Column, Entity, Model};
use crate::hitl::inbox::{self, RequestRow};
use crate::hitl::publish::Publisher;

/// `task_type` of rows made from recorded streams.
pub const STREAM_TASK_TYPE: &str = "AGENT_STREAM";

/// Applies `dwp:agent-task-events` entries.
#[derive(Clone)]
pub struct TaskWriter {
    /// `HITL_EXPIRY_SECS`: when a recorded `hitl` event's request expires.
    pub expiry: std::time::Duration,
    /// Announces the inbox rows it writes on the live feed (none: not announced).
    pub feed: Option<Arc<Publisher>>,
}

impl Default for TaskWriter {
    fn default() -> Self {
        Self {
            expiry: std::time::Duration::from_secs(300),
            feed: None,
        }
    }
}

impl Apply for TaskWriter {
    async fn apply(&self, db: &Db, entries: &[Entry]) -> Result<Vec<Rejected>, DbErr> {
        let mut rejected = Vec::new();
        let mut order: Vec<&str> = Vec::new();
        let mut groups: HashMap<&str, Vec<&Entry>> = HashMap::new();
        for entry in entries {
            if let Err(why) = check(entry) {
                rejected.push((entry.id.clone(), why.into()));
                continue;
            }
            let task_id = entry.field(tasks::FIELD_TASK_ID);
            groups
                .entry(task_id)
                .or_insert_with(|| {
                    order.push(task_id);
                    Vec::new()
                })
                .push(entry);
        }
        if order.is_empty() {
            return Ok(rejected);
        }
        let txn = db.connection().begin().await?;
        let now = Utc::now().fixed_offset();
        let mut rows = lock_rows(&txn, &order, &groups, now).await?;
        let mut inbox_rows = Vec::new();
        for task_id in order {
            let events = &groups[task_id];
            let task = rows
                .remove(task_id)
                .ok_or_else(|| DbErr::RecordNotFound(task_id.to_owned()))?;
            let first = events[0];
            if task.user_id != first.field(tasks::FIELD_USER_ID)
                || task.tenant_id != first.field(tasks::FIELD_TENANT_ID)
            {
                for e in events {
                    rejected.push((e.id.clone(), "the task belongs to another user".into()));
                }
                continue;
            }
            // The plan is parsed and written once per task and batch, not per event.
            let mut next = task.clone();
            let mut steps = lifecycle::steps_of(next.plan_steps.as_deref());
            let mut steps_changed = false;
            for event in events {
                // Parsed once, for the task and the inbox.
                let parsed = parsed(event);
                steps_changed |= apply_event(&mut next, &mut steps, event, parsed.as_ref(), now);
                if let Some(request) = parsed.as_ref().and_then(|p| self.inbox_row(event, p)) {
                    inbox_rows.push(request);
                }
            }
            if steps_changed {
                next.plan_steps = Some(Value::Array(steps).to_string());
            }
            if next != task {
                next.updated_at = now;
                agent_task::full_update(next).update(&txn).await?;
            }
        }
        // In request-id order, as the audit consumer writes them: two
        // batches never wait on each other's rows in opposite orders.
        inbox_rows.sort_by(|a, b| a.request_id.cmp(&b.request_id));
        let requests: Vec<String> = inbox_rows.iter().map(|r| r.request_id.clone()).collect();
        for row in inbox_rows {
            inbox::record(&txn, row).await?;
        }
        let changes = match &self.feed {
            Some(_) if !requests.is_empty() => inbox::current(&txn, &requests).await?,
            _ => Vec::new(),
        };
        txn.commit().await?;
        if let Some(feed) = &self.feed {
            feed.publish(&changes).await?;
        }
        Ok(rejected)
    }
}

impl TaskWriter {
    /// The inbox row of a recorded `hitl` event: the request the agent
    /// told only its own stream about, owned by the stream's caller.
    fn inbox_row(&self, entry: &Entry, (kind, event): &Parsed) -> Option<RequestRow> {
        if *kind != EventType::Hitl {
            return None;
        }
        let inner = payload(event);
        let text = |name: &str| inner.get(name).and_then(Value::as_str).map(pg_text);
        let request_id = text("requestId").filter(|id| dwp_core::hitl::storable_id(id))?;
        // The stream id's first part is the Unix millisecond it was recorded.
        let millis: i64 = entry.id.split('-').next()?.parse().ok()?;
        let created_at = chrono::DateTime::from_timestamp_millis(millis)?.fixed_offset();
        let expiry = chrono::Duration::from_std(self.expiry).ok()?;
        Some(RequestRow {
            request_id,
            session_id: text("sessionId").filter(|id| dwp_core::hitl::storable_id(id)),
            task_id: Some(entry.field(tasks::FIELD_TASK_ID).to_owned()),
            tenant_id: entry.field(tasks::FIELD_TENANT_ID).to_owned(),
            user_id: entry.field(tasks::FIELD_USER_ID).to_owned(),
            action_type: text("actionType"),
            message: text("message"),
            // A context with U+0000 cannot be jsonb: the row goes without it.
            context: inner
                .get("context")
                .filter(|c| !c.to_string().contains("\\u0000"))
                .cloned(),
            status: "pending",
            created_at,
            expires_at: created_at.checked_add_signed(expiry)?,
            decided_by: None,
            decided_at: None,
            reason: None,
        })
    }
}

/// Every task of the batch: creates the missing rows, then locks them all
/// (a few statements, whatever the number of tasks); by task id.
async fn lock_rows(
    txn: &DatabaseTransaction,
    order: &[&str],
    groups: &HashMap<&str, Vec<&Entry>>,
    now: DateTimeWithTimeZone,
) -> Result<HashMap<String, Model>, DbErr> {
    let mut new_rows = Vec::with_capacity(order.len());
    for id in order {
        new_rows.push(new_row(groups[id][0], now));
    }
    let mut new_rows = new_rows.into_iter().peekable();
    while new_rows.peek().is_some() {
        Entity::insert_many(new_rows.by_ref().take(INSERT_CHUNK))
            .on_conflict(OnConflict::column(Column::TaskId).do_nothing().to_owned())
            .exec_without_returning(txn)
            .await?;
    }
    let rows = Entity::find()
        .filter(Column::TaskId.is_in(order.iter().copied()))
        .order_by_asc(Column::Id)
        .lock_exclusive()
        .all(txn)
        .await?;
    Ok(rows.into_iter().map(|t| (t.task_id.clone(), t)).collect())
}

/// A recorded event's kind and JSON object.
pub type Parsed = (EventType, Map<String, Value>);

/// The entry's event, parsed (`None`: not a JSON object).
fn parsed(entry: &Entry) -> Option<Parsed> {
    let Ok(Value::Object(event)) = serde_json::from_str::<Value>(entry.field(tasks::FIELD_DATA))
    else {
        return None;
    };
    let name = match entry.field(tasks::FIELD_EVENT_TYPE) {
        "" | "message" => event.get("type").and_then(Value::as_str).unwrap_or(""),
        name => name,
    };
    Some((EventType::parse(name), event))
}

/// Wrapped events carry their payload in `data` (the frontend's `data.data || data`).
fn payload(event: &Map<String, Value>) -> &Map<String, Value> {
    event
        .get("data")
        .and_then(Value::as_object)
        .unwrap_or(event)
}

/// Entries that cannot become a row (ids too long for the columns).
fn check(entry: &Entry) -> Result<(), &'static str> {
    let task_id = entry.field(tasks::FIELD_TASK_ID);
    if task_id.len() > 36 || !dwp_core::hitl::valid_id(task_id) {
        return Err("taskId missing or not a task id");
    }
    if entry.field(tasks::FIELD_USER_ID).len() > 50
        || entry.field(tasks::FIELD_TENANT_ID).len() > 50
    {
        return Err("userId or tenantId longer than 50 characters");
    }
    Ok(())
}

fn new_row(first: &Entry, now: DateTimeWithTimeZone) -> agent_task::ActiveModel {
    let path: String = first.field(tasks::FIELD_PATH).chars().take(200).collect();
    agent_task::ActiveModel {
        task_id: Set(first.field(tasks::FIELD_TASK_ID).into()),
        user_id: Set(first.field(tasks::FIELD_USER_ID).into()),
        tenant_id: Set(first.field(tasks::FIELD_TENANT_ID).into()),
        task_type: Set(STREAM_TASK_TYPE.into()),
        status: Set(Status::InProgress.as_str().into()),
        progress: Set(0),
        description: Set(Some(format!("Agent stream {path}"))),
        plan_steps: Set(Some("[]".into())),
        started_at: Set(Some(now)),
        created_at: Set(now),
        updated_at: Set(now),
        ..Default::default()
    }
}

/// One recorded SSE event's effect on its task and its plan `steps` (the
/// parsed `plan_steps`), given the entry and its event as [`Parsed`] (the
/// caller parses it once); returns whether the steps changed.
pub fn apply_event(
    task: &mut Model,
    steps: &mut Vec<Value>,
    entry: &Entry,
    parsed: Option<&Parsed>,
    now: DateTimeWithTimeZone,
) -> bool {
    if entry.field(tasks::FIELD_DATA).trim() == "[DONE]" {
        finish(task, Status::Completed, None, now);
        return false;
    }
    let Some((kind, event)) = parsed else {
        return false; // not JSON: nothing to record beyond the row itself
    };
    let inner = payload(event);
    match kind {
        EventType::PlanStep | EventType::PlanStepUpdate => {
            if !lifecycle::merge_step(steps, inner.clone(), true) {
                return false;
            }
            let done = steps
                .iter()
                .filter(|s| {
                    matches!(
                        s.get("status").and_then(Value::as_str),
                        Some("completed" | "done" | "success")
                    )
                })
                .count();
            if !Status::parse(&task.status).is_terminal() && !steps.is_empty() {
                let share = (done * 100 / steps.len()).min(99) as i32;
                task.progress = task.progress.max(share);
            }
            return true;
        }
        EventType::Hitl => {
            if let Some(id) = inner.get("requestId").and_then(Value::as_str)
                && id.len() <= 100
            {
                task.hitl_request_id = Some(pg_text(id));
            }
        }
        EventType::End => finish(task, Status::Completed, None, now),
        EventType::Other(other) if other == tasks::EVENT_RELAY_BROKEN => {
            let reason = event
                .get("reason")
                .and_then(Value::as_str)
                .unwrap_or("The stream broke off");
            finish(task, Status::Failed, Some(reason.to_owned()), now);
        }
        EventType::Error | EventType::Failed => {
            let message = ["error", "message"]
                .iter()
                .find_map(|k| {
                    event
                        .get(*k)
                        .or_else(|| inner.get(*k))
                        .and_then(Value::as_str)
                })
                .unwrap_or(kind.as_str());
            finish(task, Status::Failed, Some(pg_text(message)), now);
        }
        _ => {}
    }
    false
}

/// PostgreSQL text cannot hold U+0000; an agent's message may (JSON allows
/// `\u0000`). It becomes U+FFFD rather than costing the whole entry.
fn pg_text(s: &str) -> String {
    s.replace('\0', "\u{FFFD}")
}

fn finish(task: &mut Model, to: Status, message: Option<String>, now: DateTimeWithTimeZone) {
    let current = Status::parse(&task.status);
    if !current.is_terminal() {
        task.status = to.as_str().into();
        task.completed_at = Some(now);
        if to == Status::Completed {
            task.progress = 100;
        }
    }
    if Status::parse(&task.status) == Status::Failed && task.error_message.is_none() {
        task.error_message = message;
    }
}
