//! The Redis connection: opened lazily and kept by a connection manager
//! that reconnects by itself, with short timeouts so that an unreachable
//! Redis is a quick 503, never a hung request, and the service needs no
//! restart when Redis comes back. With Sentinel, a call that fails the way
//! a moved primary makes calls fail ([`Target::moved`]) drops the
//! connection, and the next call asks the sentinels for the primary again.
//!
//! With `REDIS_MIN_REPLICAS` above 0, a decision is acknowledged only once
//! that many replicas hold it (`WAIT` after the write, at most half the
//! Redis timeout; 503 when they do not confirm), so a failover right after
//! the answer cannot lose it. `WAIT` blocks the connection that wrote, so
//! those writes have a connection of their own ([`Store::durable_conn`]).

use std::time::Duration;

use dwp_core::redis::Target;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

use crate::error::AppError;

/// The service's Redis handle.
pub struct Store {
    target: Target,
    timeout: Duration,
    /// Replicas that must hold a decision before it is acknowledged.
    min_replicas: u32,
    /// The connection; `None` until the first call and after a moved
    /// primary. Held while connecting, so that one caller connects.
    manager: Mutex<Option<ConnectionManager>>,
    /// The connection of the writes followed by `WAIT`.
    durable: Mutex<Option<ConnectionManager>>,
}

impl Store {
    /// A handle for `redis`; nothing connects until the first use.
    pub fn new(redis: &Target, timeout: Duration, min_replicas: u32) -> Self {
        Self {
            target: redis.clone(),
            timeout,
            min_replicas,
            manager: Mutex::new(None),
            durable: Mutex::new(None),
        }
    }

    /// A connection (cheap to clone), connecting first if needed.
    pub async fn conn(&self) -> Result<ConnectionManager, AppError> {
        self.connect(&self.manager).await
    }

    /// The connection for a write that [`Store::replicated`] follows: the
    /// shared one when no replica is waited for.
    pub async fn durable_conn(&self) -> Result<ConnectionManager, AppError> {
        match self.min_replicas {
            0 => self.conn().await,
            _ => self.connect(&self.durable).await,
        }
    }

    /// Waits until `REDIS_MIN_REPLICAS` replicas hold what `conn` (from
    /// [`Store::durable_conn`]) wrote; 503 when they do not in time.
    pub async fn replicated(&self, conn: &mut ConnectionManager) -> Result<(), AppError> {
        if self.min_replicas == 0 {
            return Ok(());
        }
        let wait_ms = (self.timeout / 2).as_millis() as u64;
        let acked: u32 = self
            .bounded(
                redis::cmd("WAIT")
                    .arg(self.min_replicas)
                    .arg(wait_ms.max(1))
                    .query_async(conn),
            )
            .await?;
        if acked < self.min_replicas {
            tracing::warn!(
                acked,
                wanted = self.min_replicas,
                "Redis: a decision was not confirmed by enough replicas"
            );
            return Err(AppError::Unavailable("Redis replication"));
        }
        Ok(())
    }

    async fn connect(
        &self,
        slot: &Mutex<Option<ConnectionManager>>,
    ) -> Result<ConnectionManager, AppError> {
        let mut manager = slot.lock().await;
        if let Some(manager) = &*manager {
            return Ok(manager.clone());
        }
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(Some(self.timeout))
            .set_response_timeout(Some(self.timeout))
            .set_number_of_retries(1)
            .set_max_delay(Duration::from_millis(500));
        let connect = async {
            let client = self.target.primary().await?;
            client.get_connection_manager_with_config(config).await
        };
        let connected = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| AppError::Unavailable("Redis"))??;
        *manager = Some(connected.clone());
        Ok(connected)
    }

    /// Drops the connection when `error` says the primary may have moved.
    async fn check<T>(&self, result: redis::RedisResult<T>) -> redis::RedisResult<T> {
        if let Err(e) = &result
            && self.target.moved(e)
        {
            tracing::warn!(error = %e, "Redis: the primary may have moved; asking the sentinels again");
            self.forget().await;
        }
        result
    }

    /// Drops both connections: the next call connects to the primary anew.
    async fn forget(&self) {
        *self.manager.lock().await = None;
        *self.durable.lock().await = None;
    }

    /// The longest a Redis call may take before the request gives up.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// A Redis call bounded by the store's timeout (503 past it).
    pub async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, AppError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(result) => Ok(self.check(result).await?),
            Err(_) => {
                if self.target.sentinel.is_some() {
                    self.forget().await;
                }
                Err(AppError::Unavailable("Redis"))
            }
        }
    }

    /// `PING`, for the readiness probe.
    pub async fn ping(&self) -> Result<(), AppError> {
        let mut conn = self.conn().await?;
        let _: String = self
            .bounded(redis::cmd("PING").query_async(&mut conn))
            .await?;
        Ok(())
    }
}

/// A connection of its own for a reader that blocks (`XREAD BLOCK`,
/// `XREADGROUP BLOCK`), which would hold up other commands on a shared
/// multiplexed connection; its replies may take `block` and a margin.
pub async fn blocking_conn(
    redis: &Target,
    block: Duration,
) -> redis::RedisResult<redis::aio::MultiplexedConnection> {
    let settings = redis::AsyncConnectionConfig::new()
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(block + Duration::from_secs(2)));
    let primary = tokio::time::timeout(Duration::from_secs(2), redis.primary())
        .await
        .map_err(|_| std::io::Error::from(std::io::ErrorKind::TimedOut))??;
    primary
        .get_multiplexed_async_connection_with_config(&settings)
        .await
}
