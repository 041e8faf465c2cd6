//! The PostgreSQL connection: a sea-orm pool that connects lazily, so the
//! service (and its HITL routes, which need only Redis) starts while the
//! database is down, and heals by itself when it comes back. Pool acquire is
//! bounded, so a request that cannot reach the database is a 503 within
//! `DB_TIMEOUT_MS`, never a hung request.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use sea_orm::{ConnectOptions, ConnectionTrait, Database, DatabaseConnection, DbErr};

use crate::config::Config;
use crate::error::AppError;

/// Rows per multi-row `INSERT`. Fixed-size chunks repeat the same statement
/// text, so PostgreSQL and sqlx's statement cache prepare it once instead of
/// once per batch size (a 200-row insert prepared anew each time was most
/// of a batch's cost).
pub const INSERT_CHUNK: usize = 32;

/// The service's database handle.
pub struct Db {
    conn: DatabaseConnection,
    url: String,
    timeout: Duration,
    ready: AtomicBool,
}

impl Db {
    /// A pool for `config.database_url`; nothing connects until first use.
    /// With `DB_AUTO_MIGRATE=false` the schema is taken as ready at once.
    pub async fn new(config: &Config) -> Result<Self, DbErr> {
        let mut options = ConnectOptions::new(config.database_url.clone());
        options
            .connect_lazy(true)
            .max_connections(config.db_max_connections)
            .min_connections(0)
            .connect_timeout(config.db_timeout)
            .acquire_timeout(config.db_timeout)
            .sqlx_logging(false);
        Ok(Self {
            conn: Database::connect(options).await?,
            url: config.database_url.clone(),
            timeout: config.db_timeout,
            ready: AtomicBool::new(!config.db_auto_migrate),
        })
    }

    /// Applies the pending migrations, retrying every second until the
    /// database answers; the schema is ready afterwards.
    pub async fn migrate_until_done(&self) {
        let mut logged = false;
        loop {
            match migration::up_locked(&self.url, self.timeout.max(Duration::from_secs(5))).await {
                Ok(()) => {
                    tracing::info!("database migrations applied");
                    self.ready.store(true, Ordering::Release);
                    return;
                }
                Err(e) => {
                    if !logged {
                        tracing::warn!(error = %e, "database not migrated yet; retrying every second");
                        logged = true;
                    }
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
    }

    /// Whether the schema is in place (migrated or declared so).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Acquire)
    }

    /// The connection, once the schema is ready (503 before).
    pub fn conn(&self) -> Result<&DatabaseConnection, AppError> {
        if self.is_ready() {
            Ok(&self.conn)
        } else {
            Err(AppError::Unavailable("PostgreSQL"))
        }
    }

    /// The connect and acquire timeout.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The connection for background work that has checked [`Db::is_ready`].
    pub fn connection(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// A database call bounded by the timeout (503 past it).
    pub async fn bounded<T>(
        &self,
        call: impl Future<Output = Result<T, DbErr>>,
    ) -> Result<T, AppError> {
        tokio::time::timeout(self.timeout, call)
            .await
            .map_err(|_| AppError::Unavailable("PostgreSQL"))?
            .map_err(AppError::from)
    }

    /// `SELECT 1`, for the readiness probe and to tell an outage from bad data.
    pub async fn ping(&self) -> Result<(), AppError> {
        self.bounded(self.conn()?.execute_unprepared("SELECT 1"))
            .await
            .map(drop)
    }

    /// Closes the pool (shutdown).
    pub async fn close(&self) {
        let _ = self.conn.clone().close().await;
    }
}
