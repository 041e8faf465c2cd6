//! sea-orm entities of the tables the `migration` crate creates, in the
//! shape `sea-orm-cli generate entity` writes.

pub mod agent_task;
pub mod app_user;
pub mod hitl_decision;
