//! The DWP wire contract, shared by every process of the workspace.
//!
//! Everything here is a *contract*: names and shapes that the real
//! Aura-Platform and the web frontend already speak (see `CONTRACT.md`).
//! No server and no I/O, except the start-up every binary shares
//! (feature `service`).
//!
//! # Layout
//! - [`headers`]: the header names of CONTRACT.md section 3.
//! - `metrics` (feature `metrics`): process and build families, the `/metrics` encoding.
//! - `otel` (feature `otel`): one span per request exported over OTLP/HTTP when configured.
//! - `redis` (feature `redis`): the Redis target (URL, TLS CA) and its client.
//! - [`trace`]: W3C `traceparent` read and written.
//! - [`settings`]: the one settings reader (feature `settings`), `Secret`, the Redis URL, redaction.
//! - `service` (feature `service`): the start-up every binary shares.
//! - [`sse`]: an incremental Server-Sent Events parser (WHATWG rules) and encoder.
//! - [`events`]: the agent's SSE event types (CONTRACT.md section 4).
//! - [`envelope`]: the JSON response envelope and error codes (section 6).
//! - [`hitl`]: human-in-the-loop requests, signals, the decision record, Redis keys and TTLs (section 5).
//! - [`tasks`]: the agent-task event stream the gateway records into.
//! - [`token`] (feature `jwt`): HS256 claims and their verification (section 7).
#![forbid(unsafe_code)]

pub mod envelope;
pub mod events;
pub mod headers;
pub mod hitl;
#[cfg(feature = "metrics")]
pub mod metrics;
#[cfg(feature = "otel")]
pub mod otel;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "service")]
pub mod service;
pub mod settings;
pub mod sse;
pub mod tasks;
#[cfg(feature = "jwt")]
pub mod token;
pub mod trace;

pub use envelope::{Envelope, ErrorCode};
