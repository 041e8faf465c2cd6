//! Integration tests: a real gateway in front of real upstreams, all on
//! port 0, driven by a real HTTP client.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed unwrap is a failed test, and a scenario reads top to bottom"
)]

mod helpers;

mod edge;
mod errors;
mod headers;
mod http2;
mod lifecycle;
mod logging;
mod process;
mod recorder;
mod resumable;
mod routing;
mod seams;
mod security;
mod streaming;
mod upstream;
