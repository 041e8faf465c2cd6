//! The DWP database schema as sea-orm migrations.
//!
//! # Layout
//! - [`m20260101_000001_agent_task`]: `agent_task`, exactly as CONTRACT.md section 8.
//! - [`m20260101_000002_hitl_decision`]: `hitl_decision`, the durable audit of HITL decisions.
//! - [`m20260101_000003_app_user`]: `app_user`, login accounts (argon2id hashes only).
#![forbid(unsafe_code)]

pub use sea_orm_migration::prelude::*;

pub mod m20260101_000001_agent_task;
pub mod m20260101_000002_hitl_decision;
pub mod m20260101_000003_app_user;

/// Every migration, in order.
pub struct Migrator;

#[async_trait::async_trait]
impl MigratorTrait for Migrator {
    fn migrations() -> Vec<Box<dyn MigrationTrait>> {
        vec![
            Box::new(m20260101_000001_agent_task::Migration),
            Box::new(m20260101_000002_hitl_decision::Migration),
            Box::new(m20260101_000003_app_user::Migration),
        ]
    }
}
