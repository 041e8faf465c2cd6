//! What every handler and background task shares: the configuration,
//! the connections, the metrics and the stop signal.

use std::sync::Arc;

use dwp_core::token::Verifier;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db::Db;
use crate::metrics::Metrics;
use crate::store::Store;

/// What every handler shares.
pub struct AppState {
    /// The configuration.
    pub config: Config,
    /// Token verification with the shared secret.
    pub verifier: Verifier,
    /// Redis.
    pub store: Store,
    /// PostgreSQL.
    pub db: Db,
    /// Metrics.
    pub metrics: Metrics,
    /// Woken when a decision found nobody listening ([`crate::hitl::delivery`]).
    pub undelivered: tokio::sync::Notify,
    /// The password-check slots (`LOGIN_HASH_MEMORY_MIB`) and their queue.
    pub login_slots: crate::hashing::Slots,
    /// The live feeds this replica holds ([`crate::hitl::feed`]).
    pub feed: Arc<crate::hub::Hub>,
    /// Cancelled when the service stops (also when [`crate::serve`] is dropped):
    /// ends the background work, migrations and consumers.
    pub stop: CancellationToken,
}

/// The shared state; nothing connects yet.
pub async fn state(config: Config) -> std::io::Result<Arc<AppState>> {
    Ok(Arc::new(AppState {
        verifier: Verifier::new(config.jwt_secret.as_bytes(), config.jwt_audience.as_deref())
            .with_max_lifetime(config.jwt_max_lifetime),
        store: Store::new(
            &config.redis,
            config.redis_timeout,
            config.redis_min_replicas,
        ),
        db: Db::new(&config).await.map_err(std::io::Error::other)?,
        metrics: Metrics::default(),
        login_slots: crate::hashing::Slots::new(&config.login),
        undelivered: tokio::sync::Notify::new(),
        feed: Arc::default(),
        stop: CancellationToken::new(),
        config,
    }))
}
