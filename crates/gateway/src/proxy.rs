//! Forwarding one request: route, edge checks, the upstream request, the
//! upstream response, and the error mapping.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use dwp_core::headers::{
    ACCEL_BUFFERING, AUTHORIZATION, DWP_CALLER_TYPE, DWP_SOURCE, DWP_TASK_ID, LAST_EVENT_ID,
    REQUEST_ID, TENANT_ID, USER_ID,
};
use dwp_core::token::Verifier;
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HOST};
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::ResponseBody;
use crate::access::AccessLog;
use crate::body::RequestBody;
use crate::client::{self, Outgoing};
use crate::config::Config;
use crate::deadline::Deadlines;
use crate::error::GatewayError;
use crate::forward;
use crate::h1;
use crate::limits::Limits;
use crate::metrics::{Metrics, RouteLabel};
use crate::pool::Pool;
use crate::recorder::{Recorder, TaskMeta};
use crate::relay::{Relay, StreamRules};
use crate::routes::{Route, Table, Upstream};
use prometheus_client::metrics::histogram::Histogram;

/// What all workers share: configuration, metrics, the token verifier and
/// the upstream pools.
pub struct Shared {
    /// The configuration.
    pub config: Config,
    /// The metrics.
    pub metrics: Arc<Metrics>,
    verifier: Option<Verifier>,
    /// The pool of each upstream service, in the route table's order;
    /// services with the same authority share one (auth and main by default).
    pools: Vec<Arc<Pool>>,
    /// The upstream response-time histogram of each route, in table order.
    upstream_seconds: Vec<Histogram>,
    /// The stream recorder, when enabled and started.
    pub recorder: Option<Recorder>,
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
    /// The address had no room for this connection: its requests are 429.
    pub over_limit: bool,
    /// The connection's slot in its address's count, given back when it closes.
    pub client_slot: Option<crate::limits::Slot>,
    /// The connection's head-read and response deadlines.
    pub deadlines: Arc<Deadlines>,
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
        let verifier = config
            .jwt_secret
            .as_ref()
            .map(|s| Verifier::new(s.as_bytes(), None).with_max_lifetime(config.jwt_max_lifetime));
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
        let limits = Arc::new(Limits::new(
            config.max_requests_per_client,
            config.max_requests_per_user,
            config.max_streams_per_user,
        ));
        Self {
            config,
            metrics,
            verifier,
            pools,
            upstream_seconds,
            recorder: None,
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

/// A stream request: `Accept` has `text/event-stream`, or the path has `/stream`.
pub fn is_stream(headers: &HeaderMap, path: &str) -> bool {
    // A plain scan: these are short, and a substring searcher costs more to
    // set up than the search itself.
    fn has(haystack: &[u8], needle: &[u8]) -> bool {
        haystack.windows(needle.len()).any(|w| w == needle)
    }
    has(path.as_bytes(), b"/stream")
        || headers
            .get_all(ACCEPT)
            .iter()
            .any(|v| has(v.as_bytes(), b"text/event-stream"))
}

/// Forwards a routed request and returns the upstream's response, relayed.
pub async fn forward(
    state: &State,
    route: &'static Route,
    upstream_path: &str,
    req: Request<Incoming>,
    peer: &Peer,
    request_id: &HeaderValue,
    log: &mut Option<AccessLog>,
) -> Result<Response<ResponseBody>, GatewayError> {
    let shared = &state.shared;
    let (parts, body) = req.into_parts();
    if let Some(len) = parts.headers.get(CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| GatewayError::BadRequest("Content-Length is not a number".into()))?;
        if len > shared.config.max_body_bytes {
            return Err(GatewayError::PayloadTooLarge(shared.config.max_body_bytes));
        }
    }
    let claims = crate::edge::check(route, &parts.headers, shared.verifier.as_ref())?;

    let stream = is_stream(&parts.headers, parts.uri.path());
    let to_aura = route.agent;
    if let (Some(claims), Some(log)) = (&claims, log.as_mut())
        && let Err(e) = shared
            .limits
            .user(&claims.sub, stream && to_aura, &mut log.held)
    {
        shared.metrics.limited.inc();
        return Err(e);
    }
    if to_aura {
        log_routing(parts.uri.path(), &parts.headers);
    }

    let pool = shared.pool(route.upstream);
    let base_path = shared
        .config
        .routes
        .service(route.upstream)
        .uri
        .path()
        .trim_end_matches('/');
    let mut headers = parts.headers;
    // The head is written here, from the request line on; the header map
    // follows in `client::exchange`. Base path and the client's path and
    // query were all validated as URI parts, so the joined target is one too.
    let target_len = upstream_path.len() + parts.uri.query().map_or(0, |q| q.len() + 1);
    let mut head = Vec::with_capacity(256 + headers.len() * 48 + target_len);
    h1::encode_request_line(
        &mut head,
        &parts.method,
        &[base_path, upstream_path],
        parts.uri.query(),
    );
    // Room for what is added below, so that the map grows once at most.
    headers.reserve(8);
    forward::strip_hop_by_hop(&mut headers);
    forward::add_caller_defaults(&mut headers, &mut head);
    forward::add_forwarded(&mut headers, &peer.ip, route.stripped, &mut head);
    if (!route.preserve_host || !headers.contains_key(HOST))
        && let Some(host) = pool.host()
    {
        // Only routes that say so keep the browser's Host (PreserveHostHeader:
        // the Aura route).
        headers.insert(HOST, host.clone());
    }
    headers.insert(REQUEST_ID, request_id.clone());
    // Agent streams are recorded under a task id the agent and the client both get.
    let tee = match &shared.recorder {
        Some(recorder) if stream && to_aura => {
            let task_id = uuid::Uuid::new_v4().to_string();
            if let Ok(value) = HeaderValue::from_str(&task_id) {
                headers.insert(DWP_TASK_ID, value);
            }
            let text = |name: http::HeaderName| {
                headers
                    .get(name)
                    .and_then(|v: &HeaderValue| v.to_str().ok())
                    .unwrap_or("")
                    .to_owned()
            };
            // Who the stream is recorded for: the verified token, never a
            // header a client could set (the headers only with GATEWAY_AUTH=off).
            let meta = TaskMeta {
                task_id,
                user_id: claims
                    .as_ref()
                    .map_or_else(|| text(USER_ID), |c| c.sub.clone()),
                tenant_id: claims
                    .as_ref()
                    .and_then(|c| c.tenant_id.clone())
                    .unwrap_or_else(|| text(TENANT_ID)),
                path: parts.uri.path().to_owned(),
            };
            Some((recorder.clone(), Arc::new(meta)))
        }
        _ => None,
    };

    let preview = to_aura && parts.method == Method::POST;
    let outgoing = Outgoing {
        method: parts.method,
        head,
        headers,
        body: RequestBody::new(
            body,
            shared.config.max_body_bytes,
            preview,
            shared.config.body_read_timeout,
        ),
    };

    let started = Instant::now();
    let exchange = std::pin::pin!(client::exchange(pool, state.worker, outgoing));
    let sent = peer
        .deadlines
        .response_within(shared.config.response_timeout, exchange)
        .await;
    if let Some(histogram) = shared.upstream_seconds.get(route.index) {
        histogram.observe(started.elapsed().as_secs_f64());
    }
    let response = match sent {
        None => return Err(GatewayError::UpstreamTimeout(route.name)),
        Some(result) => result?,
    };

    let (mut parts, body) = response.into_parts();
    forward::strip_hop_by_hop(&mut parts.headers);
    if let Some((_, meta)) = &tee
        && let Ok(value) = HeaderValue::from_str(&meta.task_id)
    {
        parts.headers.insert(DWP_TASK_ID, value);
    }
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
        idle_timeout: shared.config.stream_idle_timeout,
        heartbeat: shared.config.sse_heartbeat,
    });
    let mut log = log
        .take()
        .ok_or_else(|| GatewayError::Internal("access log taken twice".into()))?;
    log.status = parts.status.as_u16();
    let tee = tee.filter(|_| sse); // only event streams are recorded
    let relay = Relay::new(body, rules, sse, log, tee);
    Ok(Response::from_parts(parts, relay.boxed_unsync()))
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
pub fn route<'p>(table: &Table, path: &'p str) -> Result<(&'static Route, &'p str), GatewayError> {
    match table.find(path) {
        Ok(Some(found)) => Ok(found),
        Ok(None) => Err(GatewayError::NotFound(path.to_owned())),
        Err(_) => Err(GatewayError::BadRequest(
            "Path has dot segments or encoded separators".into(),
        )),
    }
}
