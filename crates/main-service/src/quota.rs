//! What one user (tenant and name) may make per minute: HITL requests
//! through `POST /aura/hitl/requests` (`HITL_MAX_CREATES_PER_MINUTE`),
//! tasks through `POST /main/agent/tasks` (`TASKS_MAX_CREATES_PER_MINUTE`),
//! and monitoring reports (per user or address, and per address).
//! A fixed window per minute in Redis (`quota:{kind}:{owner}:{minute}`,
//! one `INCR` and an expiry); past it, 429 E1001 with `Retry-After` until
//! the next minute. Caps on what is held at once (pending requests, rows)
//! live with their features.

use dwp_core::envelope::unix_now;
use dwp_core::hitl::owner_field;

use crate::auth::Caller;
use crate::error::AppError;
use crate::store::Store;

/// What is counted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// HITL requests created over HTTP.
    HitlRequests,
    /// Tasks created over HTTP.
    Tasks,
    /// Monitoring reports of one user (or one address without a token).
    Monitoring,
    /// Monitoring reports of one address, whoever sends them.
    MonitoringAddress,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Self::HitlRequests => "hitl-requests",
            Self::Tasks => "tasks",
            Self::Monitoring => "monitoring",
            Self::MonitoringAddress => "monitoring-address",
        }
    }

    fn refusal(self) -> &'static str {
        match self {
            Self::HitlRequests => "Too many HITL requests created this minute",
            Self::Tasks => "Too many tasks created this minute",
            Self::Monitoring | Self::MonitoringAddress => "Too many monitoring reports this minute",
        }
    }
}

/// Counts one more of `kind` for `caller` this minute; 429 past `per_minute`.
pub async fn spend(
    store: &Store,
    caller: &Caller,
    kind: Kind,
    per_minute: u64,
) -> Result<(), AppError> {
    let owner = owner_field(&caller.tenant_id, &caller.user_id);
    spend_as(store, &owner, kind, per_minute).await
}

/// [`spend`] for whoever `who` names (an owner field, an address).
pub async fn spend_as(
    store: &Store,
    who: &str,
    kind: Kind,
    per_minute: u64,
) -> Result<(), AppError> {
    let now = unix_now();
    let key = format!("quota:{}:{who}:{}", kind.name(), now / 60);
    let mut conn = store.conn().await?;
    let (used, _): (u64, i64) = store
        .bounded(
            redis::pipe()
                .atomic()
                .incr(&key, 1)
                .expire(&key, 120)
                .query_async(&mut conn),
        )
        .await?;
    if used > per_minute {
        return Err(AppError::TooManyRequests {
            message: kind.refusal(),
            retry_after: 60 - now % 60,
        });
    }
    Ok(())
}
