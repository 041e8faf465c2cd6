//! What the live feed ([`super::feed`]) is made of: every change of a
//! request's status, appended to Redis Streams by the two consumers that
//! write the inbox rows, after their commit.
//!
//! One script appends each change to two streams at once:
//! - `hitl:feed:user:{owner}`, the owner's own, kept for
//!   `HITL_FEED_RETENTION_SECS` (an hour): what a feed reconnecting with
//!   `Last-Event-ID` is replayed from; its entry ids are the feed's `id:`;
//! - `hitl:feed:all`, every owner's, short (the newest [`ALL_MAX_LEN`]):
//!   what each main-service replica reads to wake the feeds it holds, so a
//!   decision made on one replica reaches a feed held on another.
//!
//! Publishing is idempotent: `hitl:feed:status:{requestId}` remembers the
//! status last published, so a consumer applying an entry again (at least
//! once) or two consumers publishing the same request add nothing, and a
//! late `pending` never follows a decision. So the consumers publish the
//! request's current status every time they touch it, and acknowledge
//! their entries only after it is published: nothing committed goes
//! unannounced, even when Redis fails between the commit and the append.
//!
//! The feed never listens on `hitl:channel:*`: nothing here can count as
//! an agent receiving a decision.

use std::sync::LazyLock;
use std::time::Duration;

use dwp_core::envelope::unix_now;
use dwp_core::hitl::owner_field;
use sea_orm::{ConnAcquireErr, DbErr};

use crate::store::Store;

/// Every owner's changes, for the replicas' readers.
pub const ALL_STREAM: &str = "hitl:feed:all";

/// About how many entries [`ALL_STREAM`] keeps (minutes of changes at a
/// hundred pausing runs a second; a reader behind by more resumes feeds
/// from their owners' streams).
pub const ALL_MAX_LEN: u64 = 20_000;

/// The owner's own stream of changes.
pub fn owner_stream(owner: &str) -> String {
    format!("hitl:feed:user:{owner}")
}

fn status_key(request_id: &str) -> String {
    format!("hitl:feed:status:{request_id}")
}

/// The feed event a status is announced with.
pub fn event_name(status: &str) -> &'static str {
    match status {
        "pending" => "hitl_request",
        "expired" => "hitl_expired",
        _ => "hitl_decided",
    }
}

/// One request as it is now, to announce.
#[derive(Debug, Clone)]
pub struct Change {
    /// The owner's field ([`owner_field`]).
    pub owner: String,
    /// The request id.
    pub request_id: String,
    /// Its status now.
    pub status: String,
    /// The inbox entry, as JSON (the event's `data`).
    pub entry: String,
}

impl Change {
    /// The change of the request owned by `tenant` and `user`.
    pub fn new(
        tenant: &str,
        user: &str,
        request_id: String,
        status: String,
        entry: String,
    ) -> Self {
        Self {
            owner: owner_field(tenant, user),
            request_id,
            status,
            entry,
        }
    }
}

/// KEYS: the status key, the owner's stream, the shared stream. ARGV: the
/// status, the event name, the entry, the owner's oldest id kept, the
/// retention in seconds, the owner, the shared stream's length cap, the
/// request id.
/// Returns the owner stream's new id, or false when already announced.
static PUBLISH: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local last = redis.call('GET', KEYS[1])
if last == ARGV[1] then return false end
if last and last ~= 'pending' and ARGV[1] == 'pending' then return false end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[5])
local id = redis.call('XADD', KEYS[2], 'MINID', '~', ARGV[4], '*', 'event', ARGV[2], 'data', ARGV[3])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[7], '*', 'owner', ARGV[6], 'id', id, 'event', ARGV[2], 'request', ARGV[8], 'data', ARGV[3])
return id
",
    )
});

/// Appends changes to the feed streams; the consumers hold one each.
pub struct Publisher {
    store: Store,
    retention: Duration,
}

impl Publisher {
    /// A publisher on its own Redis connection (the consumers' thread).
    pub fn new(store: Store, retention: Duration) -> Self {
        Self { store, retention }
    }

    /// Announces each change (those already announced add nothing). A
    /// failure is an outage to the consumer: its batch is read again.
    pub async fn publish(&self, changes: &[Change]) -> Result<(), DbErr> {
        if changes.is_empty() {
            return Ok(());
        }
        let retention = self.retention.as_secs().max(1);
        let oldest = format!("{}-0", unix_now().saturating_sub(retention) * 1000);
        let mut conn = self.store.conn().await.map_err(|_| outage())?;
        for change in changes {
            let mut call = PUBLISH.prepare_invoke();
            call.key(status_key(&change.request_id))
                .key(owner_stream(&change.owner))
                .key(ALL_STREAM)
                .arg(&change.status)
                .arg(event_name(&change.status))
                .arg(&change.entry)
                .arg(&oldest)
                .arg(retention)
                .arg(&change.owner)
                .arg(ALL_MAX_LEN)
                .arg(&change.request_id);
            // Loads the script first when Redis does not have it yet.
            self.store
                .bounded(call.invoke_async::<redis::Value>(&mut conn))
                .await
                .map_err(|_| outage())?;
        }
        Ok(())
    }
}

/// What a Redis failure is to the consumer loop: an outage (retry the
/// batch), never bad data.
fn outage() -> DbErr {
    DbErr::ConnectionAcquire(ConnAcquireErr::Timeout)
}
