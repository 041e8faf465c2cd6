//! What a request can reach: the state all workers share, one worker's
//! view of it, and what is known of the client connection.

use std::collections::HashMap;
use std::sync::Arc;

use dwp_core::token::Verifier;
use http::HeaderValue;
use prometheus_client::metrics::histogram::Histogram;

use crate::config::Config;
use crate::limits::Limits;
use crate::metrics::{Metrics, RouteLabel};
use crate::recorder::Recorder;
use crate::routes::Upstream;
use crate::tokens::Tokens;
use crate::upstream::deadline::Deadlines;
use crate::upstream::pool::Pool;

/// What all workers share: configuration, metrics, the token verifier and
/// the upstream pools.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    /// The edge's token check and its caches; `None` only with `GATEWAY_AUTH=off`.
    pub tokens: Option<Tokens>,
    /// The pool of each upstream service, in the route table's order;
    /// services with the same authority share one (auth and main by default).
    pools: Vec<Arc<Pool>>,
    /// The upstream response-time histogram of each route, in table order.
    pub upstream_seconds: Vec<Histogram>,
    /// The stream recorder, when enabled and started.
    pub recorder: Option<Recorder>,
    /// Resumable streams, started with the recorder.
    pub streams: Option<crate::streams::Streams>,
    /// TLS at the edge, when configured.
    pub tls: Option<tokio_rustls::TlsAcceptor>,
    /// Open requests and streams per client address and user.
    pub limits: Arc<Limits>,
}

/// One worker's view: the shared part and the worker's index, which selects
/// its own idle upstream connections.
pub struct State {
    /// What all workers share.
    pub shared: Arc<Shared>,
    /// This worker's index.
    pub worker: usize,
}

/// What a request knows of the client connection it came on.
pub struct Peer {
    /// The client's address, for `X-Forwarded-For`.
    pub ip: HeaderValue,
    /// The connection is TLS (`X-Forwarded-Proto: https`).
    pub https: bool,
    /// The address had no room for this connection: its requests are 429.
    pub over_limit: bool,
    /// The connection's slot in its address's count, given back when it closes.
    pub client_slot: Option<crate::limits::Slot>,
    /// The connection's head-read and response deadlines.
    pub deadlines: Arc<Deadlines>,
}

/// Each route's cap of open requests: `GATEWAY_ROUTE_MAX_POOL_PERCENT` of
/// its pool when another route shares that pool (of at least two), else
/// none (0).
fn route_caps(config: &Config, pools: &[Arc<Pool>]) -> Vec<usize> {
    let routes = config.routes.routes;
    let pool_of = |r: &crate::routes::Route| &pools[r.upstream.0];
    routes
        .iter()
        .map(|route| {
            let shared = routes.iter().any(|other| {
                other.index != route.index && Arc::ptr_eq(pool_of(other), pool_of(route))
            });
            // A pool of one cannot be shared out.
            if !shared || config.route_max_pool_percent >= 100 || config.pool_max_connections < 2 {
                return 0;
            }
            (config.pool_max_connections * config.route_max_pool_percent / 100).max(1)
        })
        .collect()
}

impl Shared {
    /// Builds the pools and the token verifier.
    pub fn new(config: Config) -> Self {
        let mut by_authority: HashMap<String, Arc<Pool>> = HashMap::new();
        let mut pools = Vec::new();
        for service in config.routes.services {
            let name = service.name;
            let authority = service
                .uri
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let pool = by_authority
                .entry(authority.clone())
                .or_insert_with(|| {
                    Arc::new(Pool::new(
                        name,
                        authority,
                        config.pool_max_connections,
                        config.worker_threads,
                        config.connect_timeout,
                        config.pool_idle_timeout,
                    ))
                })
                .clone();
            pools.push(pool);
        }
        let tokens = config.jwt_secret.as_ref().map(|s| {
            let verifier =
                Verifier::new(s.as_bytes(), None).with_max_lifetime(config.jwt_max_lifetime);
            Tokens::new(verifier, config.worker_threads, config.token_cache_size)
        });
        let metrics = Arc::new(Metrics::default());
        let upstream_seconds = config
            .routes
            .routes
            .iter()
            .map(|r| {
                metrics
                    .upstream_seconds
                    .get_or_create(&RouteLabel { route: r.name })
                    .clone()
            })
            .collect();
        let limits = Arc::new(
            Limits::new(
                config.max_requests_per_client,
                config.max_requests_per_user,
                config.max_streams_per_user,
            )
            .with_route_caps(route_caps(&config, &pools)),
        );
        Self {
            config,
            metrics,
            tokens,
            pools,
            upstream_seconds,
            recorder: None,
            streams: None,
            tls: None,
            limits,
        }
    }

    /// The pool of `upstream`.
    pub fn pool(&self, upstream: Upstream) -> &Arc<Pool> {
        &self.pools[upstream.0]
    }

    /// Every distinct pool once.
    pub fn pools(&self) -> Vec<Arc<Pool>> {
        let mut out: Vec<Arc<Pool>> = Vec::new();
        for pool in &self.pools {
            if !out.iter().any(|p| Arc::ptr_eq(p, pool)) {
                out.push(pool.clone());
            }
        }
        out
    }
}
