//! AgentTask (CONTRACT.md section 8): the REST API, the rules of a task's
//! life, and the writer that turns recorded agent streams into task rows.
//!
//! # Layout
//! - [`api`]: the routes under `/main/agent/tasks`.
//! - [`lifecycle`]: status moves and plan-step merging (no I/O).
//! - [`writer`]: `dwp:agent-task-events` entries → `agent_task` rows.

pub mod api;
pub mod lifecycle;
pub mod writer;

pub use api::routes;
