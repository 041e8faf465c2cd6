//! Forwarding one request: route, edge checks, the upstream request, the
//! upstream response, and the error mapping.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use dwp_core::headers::{
    ACCEL_BUFFERING, AUTHORIZATION, DWP_CALLER_TYPE, DWP_SOURCE, LAST_EVENT_ID, REQUEST_ID,
    TENANT_ID, USER_ID,
};
use dwp_core::token::Verifier;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, Response, Uri};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioTimer};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::ResponseBody;
use crate::access::AccessLog;
use crate::body::{BodyTooLarge, RequestBody};
use crate::config::Config;
use crate::error::GatewayError;
use crate::forward;
use crate::metrics::{Metrics, RouteLabel};
use crate::relay::{Relay, StreamRules};
use crate::routes::{self, Route, STRIPPED_PREFIX, Upstream};

/// What all workers share: configuration, metrics, the token verifier and
/// the per-upstream connection budgets.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    verifier: Option<Verifier>,
    /// One connection budget per distinct upstream authority.
    budgets: HashMap<Upstream, Arc<Semaphore>>,
}

/// One worker's state: the shared part and the worker's own upstream pool
/// (its connections live on the worker's thread).
pub struct State {
    /// What all workers share.
    pub shared: Arc<Shared>,
    client: Client<HttpConnector, RequestBody>,
}

impl State {
    /// A worker's upstream pool; call it on the worker's runtime.
    pub fn new(shared: Arc<Shared>) -> Self {
        let config = &shared.config;
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(config.connect_timeout));
        connector.set_nodelay(true);
        connector.set_keepalive(Some(std::time::Duration::from_secs(60)));
        let client = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(config.pool_idle_timeout)
            .pool_max_idle_per_host(config.pool_max_connections)
            .build(connector);
        Self { shared, client }
    }
}

impl Shared {
    /// Builds the budgets and the token verifier.
    pub fn new(config: Config) -> Self {
        let mut by_authority: HashMap<String, Arc<Semaphore>> = HashMap::new();
        let mut budgets = HashMap::new();
        for upstream in [Upstream::Aura, Upstream::Main, Upstream::Auth] {
            let key = base(&config, upstream)
                .authority()
                .map(|a| a.to_string())
                .unwrap_or_default();
            let budget = by_authority
                .entry(key)
                .or_insert_with(|| Arc::new(Semaphore::new(config.pool_max_connections)))
                .clone();
            budgets.insert(upstream, budget);
        }
        let verifier = config
            .jwt_secret
            .as_ref()
            .map(|s| Verifier::new(s.as_bytes(), None));
        Self {
            config,
            metrics: Arc::new(Metrics::default()),
            verifier,
            budgets,
        }
    }
}

fn base(config: &Config, upstream: Upstream) -> &Uri {
    match upstream {
        Upstream::Aura => &config.aura_uri,
        Upstream::Main => &config.main_uri,
        Upstream::Auth => &config.auth_uri,
    }
}

/// A stream request: `Accept` has `text/event-stream`, or the path has `/stream`.
pub fn is_stream(headers: &HeaderMap, path: &str) -> bool {
    path.contains("/stream")
        || headers
            .get_all(ACCEPT)
            .iter()
            .any(|v| v.to_str().is_ok_and(|v| v.contains("text/event-stream")))
}

/// Forwards a routed request and returns the upstream's response, relayed.
pub async fn forward(
    state: &State,
    route: &'static Route,
    upstream_path: &str,
    req: Request<Incoming>,
    remote: SocketAddr,
    request_id: &HeaderValue,
    log: &mut Option<AccessLog>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let (parts, body) = req.into_parts();
    if let Some(len) = parts.headers.get(CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| GatewayError::BadRequest("Content-Length is not a number".into()))?;
        if len > state.shared.config.max_body_bytes {
            return Err(GatewayError::PayloadTooLarge(
                state.shared.config.max_body_bytes,
            ));
        }
    }
    crate::edge::check(route, &parts.headers, state.shared.verifier.as_ref())?;

    let stream = is_stream(&parts.headers, parts.uri.path());
    let to_aura = route.upstream == Upstream::Aura;
    if to_aura {
        log_routing(parts.uri.path(), &parts.headers);
    }

    let base = base(&state.shared.config, route.upstream);
    let mut target = format!(
        "http://{}{}{}",
        base.authority().map(|a| a.as_str()).unwrap_or_default(),
        base.path().trim_end_matches('/'),
        upstream_path
    );
    if let Some(query) = parts.uri.query() {
        target.push('?');
        target.push_str(query);
    }
    let uri: Uri = target
        .parse()
        .map_err(|_| GatewayError::BadRequest("Request target is not valid".into()))?;

    let mut headers = parts.headers;
    let host = headers
        .get(HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    forward::strip_hop_by_hop(&mut headers);
    forward::append_forwarded(&mut headers, remote.ip(), host.as_deref(), STRIPPED_PREFIX);
    if !to_aura {
        headers.remove(HOST); // the client sets the upstream's own authority
    }
    headers.insert(REQUEST_ID, request_id.clone());

    let preview = to_aura && parts.method == Method::POST;
    let mut upstream_req = Request::new(RequestBody::new(
        body,
        state.shared.config.max_body_bytes,
        preview,
    ));
    *upstream_req.method_mut() = parts.method;
    *upstream_req.uri_mut() = uri;
    *upstream_req.headers_mut() = headers;

    let permit = acquire(state, route).await?;
    let started = Instant::now();
    let sent = tokio::time::timeout(
        state.shared.config.response_timeout,
        state.client.request(upstream_req),
    )
    .await;
    state
        .shared
        .metrics
        .upstream_seconds
        .get_or_create(&RouteLabel { route: route.name })
        .observe(started.elapsed().as_secs_f64());
    let response = match sent {
        Err(_) => return Err(GatewayError::UpstreamTimeout(route.name)),
        Ok(Err(e)) => return Err(classify(&e, route.name)),
        Ok(Ok(response)) => response,
    };

    let (mut parts, body) = response.into_parts();
    forward::strip_hop_by_hop(&mut parts.headers);
    let mut sse = false;
    if stream {
        let h = &mut parts.headers;
        if !h.contains_key(CONTENT_TYPE) {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
        }
        if !h.contains_key(CACHE_CONTROL) {
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        }
        h.insert(ACCEL_BUFFERING, HeaderValue::from_static("no"));
        sse = h
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if sse {
            h.remove(CONTENT_LENGTH); // heartbeats add bytes
        }
    }
    let rules = stream.then_some(StreamRules {
        idle_timeout: state.shared.config.stream_idle_timeout,
        heartbeat: state.shared.config.sse_heartbeat,
    });
    let mut log = log
        .take()
        .ok_or_else(|| GatewayError::Internal("access log taken twice".into()))?;
    log.status = parts.status.as_u16();
    let relay = Relay::new(
        body,
        rules,
        sse,
        log,
        state.shared.metrics.clone(),
        Some(permit),
    );
    Ok(Response::from_parts(parts, relay.boxed_unsync()))
}

/// Waits up to the connect timeout for a place in the upstream's connection budget.
async fn acquire(state: &State, route: &Route) -> Result<OwnedSemaphorePermit, GatewayError> {
    let budget = state.shared.budgets[&route.upstream].clone();
    match tokio::time::timeout(state.shared.config.connect_timeout, budget.acquire_owned()).await {
        Ok(Ok(permit)) => Ok(permit),
        Ok(Err(_)) => Err(GatewayError::Internal("connection budget closed".into())),
        Err(_) => {
            tracing::warn!(route = route.name, "upstream connection budget exhausted");
            Err(GatewayError::UpstreamTimeout(route.name))
        }
    }
}

/// Maps a client error to who caused it.
fn classify(err: &hyper_util::client::legacy::Error, upstream: &'static str) -> GatewayError {
    let mut source: Option<&(dyn std::error::Error + 'static)> = Some(err);
    let mut timed_out = false;
    while let Some(e) = source {
        if let Some(too_large) = e.downcast_ref::<BodyTooLarge>() {
            return GatewayError::PayloadTooLarge(too_large.0);
        }
        if e.downcast_ref::<std::io::Error>()
            .is_some_and(|io| io.kind() == std::io::ErrorKind::TimedOut)
        {
            timed_out = true;
        }
        source = e.source();
    }
    tracing::warn!(upstream, error = %err, connect = err.is_connect(), "upstream request failed");
    if timed_out {
        GatewayError::UpstreamTimeout(upstream)
    } else {
        GatewayError::UpstreamUnavailable(upstream)
    }
}

/// The INFO routing line of CONTRACT.md section 3 (never the token itself).
fn log_routing(path: &str, h: &HeaderMap) {
    let value = |name: &http::HeaderName| {
        h.get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("missing")
            .to_owned()
    };
    let auth = if h.contains_key(AUTHORIZATION) {
        "present"
    } else {
        "missing"
    };
    tracing::info!(
        "Routing to Aura-Platform: {path} with headers: Authorization={auth}, X-Tenant-ID={}, X-User-ID={}, X-DWP-Source={}, X-DWP-Caller-Type={}, Last-Event-ID={}",
        value(&TENANT_ID),
        value(&USER_ID),
        value(&DWP_SOURCE),
        value(&DWP_CALLER_TYPE),
        value(&LAST_EVENT_ID),
    );
}

/// Routes a request, or says why it cannot be routed.
pub fn route(path: &str) -> Result<(&'static Route, &str), GatewayError> {
    match routes::find(path) {
        Ok(Some(found)) => Ok(found),
        Ok(None) => Err(GatewayError::NotFound(path.to_owned())),
        Err(_) => Err(GatewayError::BadRequest(
            "Path has dot segments or encoded separators".into(),
        )),
    }
}
