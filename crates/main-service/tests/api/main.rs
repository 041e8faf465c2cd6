//! Integration tests: the real main-service on port 0 against a real Redis.

mod helpers;

mod decisions;
mod process;
mod requests;
mod security;
mod service;
