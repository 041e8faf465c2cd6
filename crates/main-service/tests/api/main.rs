//! Integration tests: the real main-service on port 0 against a real Redis
//! and a real PostgreSQL (a fresh database per test).

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed unwrap is a failed test, and a scenario reads top to bottom"
)]

mod helpers;
mod link;

mod audit;
mod decisions;
mod delivery;
mod feed;
mod inbox;
mod login;
mod monitoring;
mod ownership;
mod process;
mod recorder;
mod requests;
mod seams;
mod security;
mod service;
mod signin;
mod takeover;
mod tasks;
