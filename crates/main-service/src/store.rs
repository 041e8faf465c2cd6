//! The Redis connection: opened lazily and kept by a connection manager
//! that reconnects by itself, with short timeouts so that an unreachable
//! Redis is a quick 503, never a hung request, and the service needs no
//! restart when Redis comes back.

use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

use crate::error::AppError;

/// The service's Redis handle.
pub struct Store {
    client: redis::Client,
    timeout: Duration,
    manager: OnceCell<ConnectionManager>,
}

impl Store {
    /// A handle for `redis`; nothing connects until the first use.
    pub fn new(
        redis: &dwp_core::redis::Target,
        timeout: Duration,
    ) -> Result<Self, redis::RedisError> {
        Ok(Self {
            client: redis.client()?,
            timeout,
            manager: OnceCell::new(),
        })
    }

    /// A connection (cheap to clone), connecting first if needed.
    pub async fn conn(&self) -> Result<ConnectionManager, AppError> {
        let connect = || async {
            let config = ConnectionManagerConfig::new()
                .set_connection_timeout(Some(self.timeout))
                .set_response_timeout(Some(self.timeout))
                .set_number_of_retries(1)
                .set_max_delay(Duration::from_millis(500));
            tokio::time::timeout(
                self.timeout,
                self.client.get_connection_manager_with_config(config),
            )
            .await
            .map_err(|_| AppError::Unavailable("Redis"))?
            .map_err(AppError::from)
        };
        self.manager.get_or_try_init(connect).await.cloned()
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
        Ok(tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| AppError::Unavailable("Redis"))??)
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
