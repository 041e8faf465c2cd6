//! The DWP gateway: the single entry point on port 8080, a streaming reverse
//! proxy on raw hyper 1.x.
//!
//! It routes `/api/**` to Aura-Platform or main-service (CONTRACT.md
//! section 2), relays Server-Sent Events as they arrive, checks identity at
//! the edge, answers CORS preflights, and drains open streams on shutdown.
//!
//! # Layout
//! One request passes through the phases of [`proxy`] (route, edge checks,
//! upstream request, send, response filter, relay, log) over one
//! per-request [`proxy::Ctx`].
//! - [`server`]: the workers, the accept loop and graceful shutdown; HTTP/1.1 and HTTP/2.
//! - [`tls`]: TLS at the edge (rustls), ALPN `h2` and `http/1.1`.
//! - [`proxy`]: the request's phases and its context.
//! - [`state`]: what all workers share, one worker's view, the client connection.
//! - [`config`]: the typed configuration and its loading.
//! - [`routes`]: the route table and the path rules.
//! - [`policy`]: what each route does: edge check, recording, resumability, timeouts.
//! - [`edge`]: tenant and token checks before any upstream is called.
//! - [`limits`]: open requests and streams per client address and per user.
//! - [`cors`]: preflights and CORS response headers.
//! - [`headers`]: hop-by-hop and `X-Forwarded-*` header rules, on typed maps.
//! - [`h1`]: the HTTP/1.1 wire to upstreams: request heads, response heads, chunks.
//! - [`upstream`]: the upstream client, its pool and the coarse deadlines.
//! - [`request_body`]: the streamed, size-limited request body and its preview log.
//! - [`relay`]: the streamed response body, heartbeats and the idle timeout.
//! - [`recorder`]: the tee of agent streams into a Redis Stream.
//! - [`streams`]: resumable runs, their journal, followers and stops.
//! - [`resume`]: `/api/streams/**` and the stream request sent again: follow, stop.
//! - [`access`]: the access-log line and request count per request.
//! - [`admin`]: the admin listener (`/metrics`, `/health`) apart from the public port.
//! - [`metrics`]: Prometheus metrics.
//! - [`error`]: the one error type and its envelope responses.
#![forbid(unsafe_code)]

pub mod access;
pub mod admin;
pub mod config;
pub mod cors;
pub mod edge;
pub mod error;
pub mod h1;
pub mod headers;
pub mod ids;
pub mod limits;
pub mod metrics;
pub mod policy;
pub mod proxy;
pub mod recorder;
pub mod relay;
pub mod request_body;
pub mod resume;
pub mod routes;
pub mod server;
pub mod state;
pub mod streams;
pub mod tls;
pub mod tokens;
pub mod trace;
pub mod upstream;

pub use config::Config;
pub use server::{run, run_with_admin};

/// The error type bodies carry.
pub type BoxError = Box<dyn std::error::Error + Send + Sync>;

/// Every response body the gateway sends.
pub type ResponseBody = http_body_util::combinators::UnsyncBoxBody<bytes::Bytes, BoxError>;
