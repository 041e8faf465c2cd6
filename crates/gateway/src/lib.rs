//! The DWP gateway: the single entry point on port 8080, a streaming reverse
//! proxy on raw hyper 1.x.
//!
//! It routes `/api/**` to Aura-Platform or main-service (CONTRACT.md
//! section 2), relays Server-Sent Events as they arrive, checks identity at
//! the edge, answers CORS preflights, and drains open streams on shutdown.
//!
//! # Layout
//! - [`config`]: the typed configuration and its loading.
//! - [`routes`]: the route table and the path rules.
//! - [`edge`]: tenant and token checks before any upstream is called.
//! - [`limits`]: open requests and streams per client address and per user.
//! - [`cors`]: preflights and CORS response headers.
//! - [`forward`]: hop-by-hop and `X-Forwarded-*` header rules.
//! - [`proxy`]: forwarding one request and the response headers.
//! - [`pool`]: the upstream connection pool and its connection budget.
//! - [`client`]: HTTP/1.1 to the upstream, inside the request's own task.
//! - [`h1`]: the upstream side's HTTP/1.1 framing (heads, lengths, chunks).
//! - [`recorder`]: the tee of agent streams into a Redis Stream.
//! - [`body`]: the streamed, size-limited request body and its preview log.
//! - [`relay`]: the streamed response body, heartbeats and the idle timeout.
//! - [`deadline`]: the coarse head-read and response timeouts, swept per worker.
//! - [`access`]: the access-log line and request count per request.
//! - [`admin`]: the admin listener (`/metrics`, `/health`) apart from the public port.
//! - [`metrics`]: Prometheus metrics.
//! - [`error`]: the one error type and its envelope responses.
//! - [`server`]: the accept loop, graceful shutdown and the request handler.
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod body;
pub mod client;
pub mod config;
pub mod cors;
pub mod deadline;
pub mod edge;
pub mod error;
pub mod forward;
pub mod h1;
pub mod limits;
pub mod metrics;
pub mod pool;
pub mod proxy;
pub mod recorder;
pub mod relay;
pub mod routes;
pub mod server;

pub use config::Config;
pub use server::{run, run_with_admin};

/// The error type bodies carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body the gateway sends.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;
