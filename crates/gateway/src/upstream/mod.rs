//! The gateway's own HTTP/1.1 client to its upstreams (Aura-Platform,
//! main-service, the operator's routes).
//!
//! # What it does
//! - [`client::exchange`] sends one [`client::Outgoing`] request inside the
//!   task of the client request that needs it: no connection task, no
//!   channel. It writes the head [`crate::h1::encode_request_head`] makes,
//!   streams the body while it watches for the answer, and returns the
//!   response with a body that reads the socket only as the client takes it.
//! - [`pool::Pool`] keeps idle keep-alive connections per worker and holds
//!   every upstream to `GATEWAY_POOL_MAX_CONNECTIONS`; a connection goes
//!   back only after a clean, complete exchange, never after anything odd
//!   (stray bytes, an early answer, a broken body).
//! - [`deadline`] has the coarse head-read and response deadlines: a
//!   [`deadline::Deadline`] is armed, disarmed, or awaited with a future
//!   ([`deadline::Deadline::within`]); one sweep per worker fires them.
//!
//! # What it does not do
//! - No TLS to upstreams: they are `http://` inside the cluster (the
//!   configuration refuses anything else).
//! - No HTTP/2 and no upgrades (`Upgrade`, `CONNECT`, WebSocket): the
//!   fields are hop-by-hop and are stripped.
//! - No trailers: request trailers are dropped, response trailers are read
//!   past and not relayed.
//! - No retries except one: an idempotent request wholly in memory whose
//!   pooled connection the upstream had just closed (the keep-alive race).
//! - No DNS caching or load balancing: each connect resolves the
//!   authority; a Kubernetes Service balances.

pub mod client;
pub mod deadline;
pub mod pool;
