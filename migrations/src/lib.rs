//! The DWP database schema as sea-orm migrations.
//!
//! # Layout
//! - [`m20260101_000001_agent_task`]: `agent_task`, exactly as CONTRACT.md section 8.
//! - [`m20260101_000002_hitl_decision`]: `hitl_decision`, the durable audit of HITL decisions.
//! - [`m20260101_000003_app_user`]: `app_user`, login accounts (argon2id hashes only).
//! - [`m20261202_000004_hitl_decision_ids`]: `hitl_decision`'s ids as wide as an agent's (512).
//! - [`m20261206_000005_plan_step_merge`]: a plan step merged inside PostgreSQL.
//! - [`m20261206_000006_adopt_agent_tasks`]: the old service's `agent_tasks` rows adopted, once.
//! - [`m20261206_000007_monitoring`]: page views and events the frontend reports, and daily counts.
//! - [`m20261206_000008_hitl_request`]: every HITL request heard of, for the inbox.
#![forbid(unsafe_code)]

use std::time::Duration;

pub use sea_orm_migration::prelude::*;
use sea_orm_migration::sea_orm::{
    ConnectOptions, Database, DbBackend, Statement, TransactionTrait,
};

pub mod m20260101_000001_agent_task;
pub mod m20260101_000002_hitl_decision;
pub mod m20260101_000003_app_user;
pub mod m20261202_000004_hitl_decision_ids;
pub mod m20261206_000005_plan_step_merge;
pub mod m20261206_000006_adopt_agent_tasks;
pub mod m20261206_000007_monitoring;
pub mod m20261206_000008_hitl_request;

/// Every migration, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20260101_000001_agent_task::Migration),
            Box::new(m20260101_000002_hitl_decision::Migration),
            Box::new(m20260101_000003_app_user::Migration),
            Box::new(m20261202_000004_hitl_decision_ids::Migration),
            Box::new(m20261206_000005_plan_step_merge::Migration),
            Box::new(m20261206_000006_adopt_agent_tasks::Migration),
            Box::new(m20261206_000007_monitoring::Migration),
            Box::new(m20261206_000008_hitl_request::Migration),
        ]
    }
}

/// The PostgreSQL advisory lock every migrator of this schema holds while it
/// migrates (the bytes of `dwp_migr`).
pub const LOCK_KEY: i64 = 0x6477_705f_6d69_6772;

/// Applies the pending migrations to `url` holding [`LOCK_KEY`], so that
/// processes started at once (replicas, `main-service user add`, a
/// migrate job) migrate one after another instead of racing on the same
/// tables: the others wait, then find nothing left to do. The lock is held
/// by a transaction on a connection of its own and ends with it, also when
/// the process dies.
pub async fn up_locked(url: &str, timeout: Duration) -> Result<(), DbErr> {
    let mut options = ConnectOptions::new(url.to_owned());
    options
        .max_connections(2)
        .min_connections(0)
        .connect_timeout(timeout)
        .acquire_timeout(timeout)
        .sqlx_logging(false);
    let db = Database::connect(options).await?;
    let migrated = async {
        let lock = db.begin().await?;
        lock.execute_raw(Statement::from_string(
            DbBackend::Postgres,
            format!("SELECT pg_advisory_xact_lock({LOCK_KEY})"),
        ))
        .await?;
        let up = Migrator::up(&db, None).await;
        lock.commit().await?;
        up
    }
    .await;
    let _ = db.close().await;
    migrated
}
