//! Brute-force protection for `POST /auth/login`, in Redis so that every
//! replica shares it.
//!
//! Failures are counted per account (tenant and username) and per client
//! address, each forgotten `LOGIN_FAILURE_WINDOW_SECS` after the last one.
//! From the `LOGIN_MAX_FAILURES`-th failure of an account (or the
//! `LOGIN_MAX_FAILURES_PER_CLIENT`-th of an address) it is locked for
//! `LOGIN_LOCKOUT_SECS`, doubled with every further failure up to
//! `LOGIN_LOCKOUT_MAX_SECS`; while locked, a login is 429 with
//! `Retry-After` before any password is checked. A successful login clears
//! the account's failures (not the address's: one's own account must not
//! reset the count of guesses at others').

use std::net::SocketAddr;
use std::sync::{Arc, LazyLock};

use axum::extract::{ConnectInfo, FromRequestParts};
use http::request::Parts;

use crate::config::LoginLimits;
use crate::error::AppError;
use crate::state::AppState;
use crate::store::Store;

/// Counts a failure for the account and the address; returns the longest
/// lock it set, in seconds (0: none).
static FAILED: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r"
local function bump(fail, lock, max)
  local n = redis.call('INCR', fail)
  redis.call('EXPIRE', fail, ARGV[1])
  if n >= max then
    local secs = math.floor(math.min(tonumber(ARGV[5]), tonumber(ARGV[4]) * 2 ^ (n - max)))
    redis.call('SET', lock, '1', 'EX', secs)
    return secs
  end
  return 0
end
return math.max(bump(KEYS[1], KEYS[2], tonumber(ARGV[2])), bump(KEYS[3], KEYS[4], tonumber(ARGV[3])))
",
    )
});

/// The client address of a request: the entry the trusted proxies
/// (`FORWARDED_HOPS`) appended to `X-Forwarded-For`, else the connection's.
/// Set the hops to the proxies actually in front (the gateway: 1; an
/// Ingress and the gateway: 2): too few and every client shares the
/// proxy's address, too many and a client's own entry is believed.
#[derive(Debug, Clone)]
pub struct ClientAddr(pub String);

impl FromRequestParts<Arc<AppState>> for ClientAddr {
    type Rejection = AppError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &Arc<AppState>,
    ) -> Result<Self, AppError> {
        let hops = state.config.login.forwarded_hops;
        if let Some(client) = dwp_core::headers::forwarded_client(&parts.headers, hops) {
            return Ok(Self(client.to_owned()));
        }
        let peer = parts
            .extensions
            .get::<ConnectInfo<SocketAddr>>()
            .map_or_else(|| "unknown".to_owned(), |c| c.0.ip().to_string());
        Ok(Self(peer))
    }
}

/// The Redis keys of one login attempt.
pub struct Attempt {
    account_failures: String,
    account_lock: String,
    client_failures: String,
    client_lock: String,
}

impl Attempt {
    /// The keys for `username` of `tenant` from `client`.
    pub fn new(tenant: &str, username: &str, client: &ClientAddr) -> Self {
        // The tenant's length first: no pair of tenant and username shares a key.
        let account = format!("{}:{tenant}:{username}", tenant.len());
        Self {
            account_failures: format!("login:failures:account:{account}"),
            account_lock: format!("login:lock:account:{account}"),
            client_failures: format!("login:failures:client:{}", client.0),
            client_lock: format!("login:lock:client:{}", client.0),
        }
    }

    /// 429 while the account or the address is locked.
    pub async fn check(&self, store: &Store) -> Result<(), AppError> {
        let mut conn = store.conn().await?;
        let (account, client): (i64, i64) = store
            .bounded(
                redis::pipe()
                    .cmd("PTTL")
                    .arg(&self.account_lock)
                    .cmd("PTTL")
                    .arg(&self.client_lock)
                    .query_async(&mut conn),
            )
            .await?;
        let wait_ms = account.max(client);
        if wait_ms > 0 {
            return Err(AppError::TooManyRequests {
                message: "Too many failed logins: try again later",
                retry_after: (wait_ms as u64).div_ceil(1000),
            });
        }
        Ok(())
    }

    /// Counts a failure; returns the lock it set, in seconds (0: none).
    pub async fn failed(&self, store: &Store, limits: &LoginLimits) -> Result<u64, AppError> {
        let mut conn = store.conn().await?;
        let window = limits.failure_window.max(limits.lockout_max).as_secs();
        let locked: i64 = store
            .bounded(
                FAILED
                    .key(&self.account_failures)
                    .key(&self.account_lock)
                    .key(&self.client_failures)
                    .key(&self.client_lock)
                    .arg(window)
                    .arg(limits.max_failures.max(1))
                    .arg(limits.max_failures_per_client.max(1))
                    .arg(limits.lockout.as_secs().max(1))
                    .arg(limits.lockout_max.as_secs().max(1))
                    .invoke_async(&mut conn),
            )
            .await?;
        Ok(locked.max(0) as u64)
    }

    /// A successful login forgets the account's failures.
    pub async fn succeeded(&self, store: &Store) -> Result<(), AppError> {
        let mut conn = store.conn().await?;
        let () = store
            .bounded(
                redis::cmd("DEL")
                    .arg(&self.account_failures)
                    .arg(&self.account_lock)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(())
    }
}
