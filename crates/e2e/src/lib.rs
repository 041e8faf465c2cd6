//! End-to-end tests live in `tests/checklist.rs`; this crate has no code of
//! its own. They start the `gateway`, `main-service` and `aura-sim` binaries
//! that `cargo build --workspace` puts in the target directory.
#![forbid(unsafe_code)]
