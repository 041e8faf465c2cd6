//! One request's life in the gateway, as named phases over one per-request
//! [`Ctx`] (in the spirit of pingora's `ProxyHttp`):
//!
//! 1. [`handle`]: CORS preflights, then the context (request id, clock),
//!    and the client address's cap (`admit`).
//! 2. `route`: the gateway's own endpoints, or the route table.
//! 3. `edge`: what is refused before any upstream is called: the body
//!    size, the token, the user's caps.
//! 4. `upstream_request`: the typed request the upstream gets (header
//!    rules of [`crate::headers`], the recorder's task id).
//! 5. `send`: the exchange with the upstream within the response deadline.
//! 6. `response_filter`: the response headers the client gets.
//! 7. `relay`: the body, streamed ([`crate::relay`]); the access log
//!    ([`crate::access`]) is written when it ends.
//!
//! Each phase either moves the request on or returns a [`GatewayError`],
//! which [`handle`] turns into the JSON envelope. Phases 2 to 4 are plain
//! functions (`prepare`): `send` is the only await before the relay, so
//! no future carries the client's request across a suspension point.

use std::sync::Arc;
use std::time::Instant;

use dwp_core::headers::{
    ACCEL_BUFFERING, AUTHORIZATION, DWP_CALLER_TYPE, DWP_RESUMABLE, DWP_SOURCE, DWP_TASK_ID,
    LAST_EVENT_ID, REQUEST_ID, TENANT_ID, USER_ID,
};
use http::header::{ACCEPT, CACHE_CONTROL, CONTENT_LENGTH, CONTENT_TYPE, HOST, ORIGIN};
use http::response::Parts;
use http::{HeaderMap, HeaderValue, Method, Request, Response};
use http_body_util::BodyExt;
use hyper::body::Incoming;

use crate::ResponseBody;
use crate::access::AccessLog;
use crate::error::GatewayError;
use crate::headers::{self, Added};
use crate::recorder::{Recorder, TaskMeta};
use crate::relay::{Relay, StreamRules};
use crate::request_body::RequestBody;
use crate::resume;
use crate::routes::{Edge, Resume, Route, Table};
use crate::state::{Peer, Shared, State};
use crate::streams::run;
use crate::tokens::Verified;
use crate::trace::Trace;
use crate::upstream::client::{self, Outgoing, Target, UpstreamBody};

/// What the gateway knows of one request as it moves through the phases.
pub struct Ctx {
    /// `X-Request-ID`: the client's, or a new one; sent upstream and back.
    pub request_id: HeaderValue,
    /// The access-log guard: the line is written when it is dropped.
    pub log: AccessLog,
    /// The verified token, when the route needs one.
    pub claims: Option<Arc<Verified>>,
    /// A stream request ([`is_stream`]).
    pub stream: bool,
    /// The recorder and the task an agent stream is recorded under.
    pub tee: Option<(Recorder, Arc<TaskMeta>)>,
    /// Its place in the W3C trace ([`crate::trace`]).
    pub trace: Trace,
    /// The stream outlives its client ([`crate::streams`]).
    pub resumable: bool,
    /// An HTTP/2 stream: its connection carries others, so its response
    /// timeout is a timer of its own, not the connection's deadline.
    pub h2: bool,
}

/// What the phases before [`send`] end in.
enum Prepared {
    /// The request for an upstream, to be sent.
    Upstream(&'static Route, Box<Outgoing>),
    /// A response of the gateway's own (`/health`).
    Own(Response<ResponseBody>),
    /// A call on a resumable stream, for this owner ([`crate::resume`]).
    Stream(resume::Call, String),
}

/// Handles one request: preflight, the phases, the error envelope, and the
/// headers every response gets (CORS, `X-Request-ID`).
pub async fn handle(state: &State, req: Request<Incoming>, peer: &Peer) -> Response<ResponseBody> {
    let request_id = request_id(req.headers());
    let cors = &state.shared.config.cors;
    if let Some(mut preflight) = cors.preflight(&req) {
        // Logged like every request (route `preflight`): 200 allowed, 403
        // a refused origin or method, so an operator sees why a browser
        // call never left the browser.
        let mut log = AccessLog::new(
            state.shared.metrics.clone(),
            req.method().clone(),
            req.uri().path(),
            request_id.clone(),
            Trace::from_headers(req.headers()),
        );
        log.route = "preflight";
        log.finish(preflight.status().as_u16(), 0);
        preflight.headers_mut().insert(REQUEST_ID, request_id);
        return preflight;
    }
    let origin = req.headers().get(ORIGIN).cloned();
    let trace = Trace::from_headers(req.headers());
    let mut ctx = Ctx {
        log: AccessLog::new(
            state.shared.metrics.clone(),
            req.method().clone(),
            req.uri().path(),
            request_id.clone(),
            trace,
        ),
        trace,
        request_id,
        claims: None,
        stream: false,
        tee: None,
        resumable: false,
        h2: req.version() == http::Version::HTTP_2,
    };
    let request_id = ctx.request_id.clone();
    // The phases before `send` are synchronous: only the exchange is a
    // future, so the request is not carried in one across an await.
    let mut response = match prepare(state, &mut ctx, req, peer) {
        Ok(Prepared::Upstream(route, outgoing)) => {
            // Boxed: the exchange's future is most of a request's state,
            // and every move of the request's future would copy it.
            match Box::pin(send(state, route, peer, ctx.h2, outgoing)).await {
                Ok(response) => relay(&state.shared, ctx, route, response),
                Err(e) => traced_error(ctx, e),
            }
        }
        Ok(Prepared::Own(response)) => own(ctx, response),
        Ok(Prepared::Stream(call, owner)) => {
            let Ctx { log, trace, .. } = ctx;
            // Boxed: the resume path's Redis calls would otherwise make
            // every request's future as large as theirs.
            match Box::pin(resume::answer(&state.shared, call, &owner, log)).await {
                Ok(response) => response,
                Err((mut log, e)) => {
                    let response = e.into_traced_response(Some(trace.trace_id_hex()));
                    log.finish(response.status().as_u16(), 0);
                    response
                }
            }
        }
        Err(e) => traced_error(ctx, e),
    };
    cors.apply(origin.as_ref(), response.headers_mut());
    response.headers_mut().insert(REQUEST_ID, request_id);
    response
}

/// The phases from routing to the request the upstream gets.
fn prepare(
    state: &State,
    ctx: &mut Ctx,
    req: Request<Incoming>,
    peer: &Peer,
) -> Result<Prepared, GatewayError> {
    let shared = &*state.shared;
    admit(shared, peer, req.headers(), &mut ctx.log.held)?;
    if let Some(call) = resume::Call::parse(req.method(), req.uri().path(), req.headers())? {
        ctx.log.route = "streams";
        ctx.claims = crate::edge::check(
            Edge::Token,
            req.headers(),
            shared.tokens.as_ref(),
            state.worker,
        )?;
        let owner = resume::owner(ctx.claims.as_deref(), req.headers());
        if !call.stop {
            user_cap(shared, ctx, crate::limits::user_key(&owner), true)?;
        }
        return Ok(Prepared::Stream(call, owner));
    }
    let Some(route) = route(ctx, &shared.config.routes, &req)? else {
        return Ok(Prepared::Own(crate::admin::health()));
    };
    edge(state, ctx, route, req.headers())?;
    // The stream request sent again with the task id it was given: a resume.
    if ctx.stream
        && route.policy.resume != Resume::Off
        && shared.streams.is_some()
        && let Some(call) = resume::Call::again(route.name, req.headers())
    {
        return Ok(Prepared::Stream(
            call?,
            resume::owner(ctx.claims.as_deref(), req.headers()),
        ));
    }
    let outgoing = upstream_request(shared, ctx, route, peer, req);
    Ok(Prepared::Upstream(route, outgoing))
}

/// The client's `X-Request-ID` when it is usable, else a new one.
fn request_id(headers: &HeaderMap) -> HeaderValue {
    headers
        .get(REQUEST_ID)
        .filter(|v| !v.is_empty() && v.len() <= 128)
        .cloned()
        .unwrap_or_else(|| {
            let mut buf = [0u8; uuid::fmt::Hyphenated::LENGTH];
            let id = crate::ids::request_id(&mut buf);
            HeaderValue::from_str(id).unwrap_or(HeaderValue::from_static("-"))
        })
}

/// Phase 2: the route of a request; `None` for the gateway's own `/health`.
fn route(
    ctx: &mut Ctx,
    table: &Table,
    req: &Request<Incoming>,
) -> Result<Option<&'static Route>, GatewayError> {
    let path = req.uri().path();
    if req.method() == Method::GET && path == "/health" {
        ctx.log.route = "gateway";
        return Ok(None);
    }
    if req.headers().get_all(HOST).iter().count() > 1 {
        return Err(GatewayError::BadRequest("More than one Host header".into()));
    }
    let route = match table.find(path) {
        Ok(Some((route, _))) => route,
        Ok(None) => return Err(GatewayError::NotFound(path.to_owned())),
        Err(_) => {
            return Err(GatewayError::BadRequest(
                "Path has dot segments or encoded separators".into(),
            ));
        }
    };
    ctx.log.route = route.name;
    ctx.stream = is_stream(req.headers(), path);
    Ok(Some(route))
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

/// Phase 1, after the preflight: 429 on a connection its client address
/// had no room for, whatever it asks; behind trusted proxies, 429 when the
/// address they appended has too many requests open.
fn admit(
    shared: &Shared,
    peer: &Peer,
    headers: &HeaderMap,
    held: &mut crate::limits::Held,
) -> Result<(), GatewayError> {
    if peer.over_limit {
        shared.metrics.limited.inc();
        return Err(GatewayError::TooManyRequests(
            "Too many open connections from this address",
        ));
    }
    let hops = shared.config.forwarded_hops;
    if hops > 0 {
        let client = headers::forwarded_client(headers, hops).map_or_else(
            || String::from_utf8_lossy(peer.ip.as_bytes()).into_owned(),
            str::to_owned,
        );
        if let Err(e) = shared.limits.forwarded(&client, held) {
            shared.metrics.limited.inc();
            return Err(e);
        }
    }
    Ok(())
}

/// Phase 3: what is refused once the route is known and before an upstream
/// is called. The claims and the user's slots go into `ctx`.
fn edge(
    state: &State,
    ctx: &mut Ctx,
    route: &'static Route,
    headers: &HeaderMap,
) -> Result<(), GatewayError> {
    let shared = &*state.shared;
    if let Some(len) = headers.get(CONTENT_LENGTH) {
        let len: u64 = len
            .to_str()
            .ok()
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| GatewayError::BadRequest("Content-Length is not a number".into()))?;
        if len > route.policy.max_body_bytes {
            return Err(GatewayError::PayloadTooLarge(route.policy.max_body_bytes));
        }
    }
    ctx.claims = crate::edge::check(
        route.policy.edge,
        headers,
        shared.tokens.as_ref(),
        state.worker,
    )?;
    if let Err(e) = shared
        .limits
        .route(route.index, route.name, &mut ctx.log.held)
    {
        shared.metrics.limited.inc();
        return Err(e);
    }
    // Keyed on (tenant, user): the same name in another tenant is another user.
    if let Some(verified) = &ctx.claims {
        let owner = verified.owner_key;
        user_cap(shared, ctx, owner, ctx.stream && route.policy.stream_cap)?;
    }
    Ok(())
}

/// The user's caps of open requests and (when `stream`) streams; `owner`
/// is the user's [`crate::limits::user_key`].
fn user_cap(shared: &Shared, ctx: &mut Ctx, owner: u64, stream: bool) -> Result<(), GatewayError> {
    shared
        .limits
        .user(owner, stream, &mut ctx.log.held)
        .inspect_err(|_| {
            shared.metrics.limited.inc();
        })
}

/// Phase 4: the request as the upstream gets it. Only typed headers are
/// edited here; the head is encoded by [`crate::h1`] when it is sent.
fn upstream_request(
    shared: &Shared,
    ctx: &mut Ctx,
    route: &'static Route,
    peer: &Peer,
    req: Request<Incoming>,
) -> Box<Outgoing> {
    let (parts, body) = req.into_parts();
    if route.policy.agent_log {
        log_routing(parts.uri.path(), &parts.headers);
    }
    let mut headers = parts.headers;
    let mut added = Added::default();
    headers::strip_hop_by_hop(&mut headers);
    let correlation = ctx.trace.propagate(&mut headers);
    added.trace(ctx.trace, correlation);
    headers::add_caller_defaults(&mut headers, &mut added);
    headers::add_forwarded(
        &mut headers,
        &peer.ip,
        route.stripped,
        shared.config.forwarded_hops,
        &mut added,
    );
    if peer.https {
        headers::https_proto(&mut headers, shared.config.forwarded_hops, &mut added);
    }
    if (!route.policy.preserve_host || !headers.contains_key(HOST))
        && let Some(host) = shared.pool(route.upstream).host()
    {
        // Only routes that say so keep the browser's Host (PreserveHostHeader:
        // the Aura route).
        headers.insert(HOST, host.clone());
    }
    headers.insert(REQUEST_ID, ctx.request_id.clone());
    if ctx.stream && route.policy.record {
        let claims = ctx.claims.as_deref().map(|v| &v.claims);
        ctx.tee = tee(shared, claims, &mut headers, parts.uri.path());
        ctx.resumable = ctx.tee.is_some()
            && shared.streams.is_some()
            && match route.policy.resume {
                Resume::Off => false,
                Resume::Always => true,
                Resume::OptIn => headers
                    .get(DWP_RESUMABLE)
                    .is_some_and(|v| v.as_bytes().eq_ignore_ascii_case(b"true")),
            };
    }
    let preview = route.policy.agent_log && parts.method == Method::POST;
    let base = shared.config.routes.service(route.upstream).uri.path();
    // Boxed: it is moved through the phases into the exchange's future,
    // and a copy of its ~800 bytes at each move costs more than the
    // allocation.
    Box::new(Outgoing {
        body: RequestBody::new(
            body,
            route.policy.max_body_bytes,
            preview,
            shared.config.body_read_timeout,
        )
        .with_min_rate(shared.config.body_min_rate),
        method: parts.method,
        target: Target {
            base: base.trim_end_matches('/'),
            uri: parts.uri,
            stripped: route.stripped.len(),
        },
        headers,
        added,
    })
}

/// An agent stream is recorded under a task id the agent and the client
/// both get (`X-DWP-Task-ID`), for the verified token's user, never for a
/// header a client could set (the headers only with `GATEWAY_AUTH=off`).
fn tee(
    shared: &Shared,
    claims: Option<&dwp_core::token::Claims>,
    headers: &mut HeaderMap,
    path: &str,
) -> Option<(Recorder, Arc<TaskMeta>)> {
    let recorder = shared.recorder.as_ref()?;
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
    let meta = TaskMeta {
        task_id,
        user_id: claims.map_or_else(|| text(USER_ID), |c| c.sub.clone()),
        tenant_id: claims
            .and_then(|c| c.tenant_id.clone())
            .unwrap_or_else(|| text(TENANT_ID)),
        path: path.to_owned(),
    };
    Some((recorder.clone(), Arc::new(meta)))
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

/// Phase 5: the exchange with the upstream, until its response head, within
/// the route's response timeout (`GATEWAY_RESPONSE_TIMEOUT_SECS` unless
/// its entry says otherwise).
async fn send(
    state: &State,
    route: &'static Route,
    peer: &Peer,
    h2: bool,
    outgoing: Box<Outgoing>,
) -> Result<Response<UpstreamBody>, GatewayError> {
    let shared = &state.shared;
    let started = Instant::now();
    let exchange = std::pin::pin!(client::exchange(
        shared.pool(route.upstream),
        state.worker,
        outgoing
    ));
    let timeout = route.policy.response_timeout;
    let sent = if h2 {
        tokio::time::timeout(timeout, exchange).await.ok()
    } else {
        peer.deadlines.response.within_for(timeout, exchange).await
    };
    if let Some(histogram) = shared.upstream_seconds.get(route.index) {
        histogram.observe(started.elapsed().as_secs_f64());
    }
    sent.unwrap_or(Err(GatewayError::UpstreamTimeout(route.name)))
}

/// Phase 6: the headers the client gets: hop-by-hop ones go, the task id
/// is added, streams get the SSE headers. True when the response is an
/// event stream (heartbeats, recording).
fn response_filter(ctx: &Ctx, parts: &mut Parts) -> bool {
    headers::strip_hop_by_hop(&mut parts.headers);
    if let Some((_, meta)) = &ctx.tee
        && let Ok(value) = HeaderValue::from_str(&meta.task_id)
    {
        parts.headers.insert(DWP_TASK_ID, value);
    }
    if !ctx.stream {
        return false;
    }
    let h = &mut parts.headers;
    if !h.contains_key(CONTENT_TYPE) {
        h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
    }
    if !h.contains_key(CACHE_CONTROL) {
        h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    }
    h.insert(ACCEL_BUFFERING, HeaderValue::from_static("no"));
    let sse = h
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("text/event-stream"));
    if sse {
        h.remove(CONTENT_LENGTH); // heartbeats add bytes
    }
    sse
}

/// Phase 7: the upstream's body on its way to the client; the access log
/// goes with it and is written when it ends.
fn relay(
    shared: &Shared,
    mut ctx: Ctx,
    route: &'static Route,
    response: Response<UpstreamBody>,
) -> Response<ResponseBody> {
    let (mut parts, body) = response.into_parts();
    let sse = response_filter(&ctx, &mut parts);
    let rules = ctx.stream.then_some(StreamRules {
        idle_timeout: route.policy.idle_timeout,
        heartbeat: shared.config.sse_heartbeat,
    });
    ctx.log.status = parts.status.as_u16();
    if ctx.resumable
        && sse
        && parts.status.is_success()
        && let Some(streams) = &shared.streams
        && let Some((recorder, meta)) = ctx.tee.take()
    {
        parts
            .headers
            .insert(DWP_RESUMABLE, HeaderValue::from_static("true"));
        let content_type = parts
            .headers
            .get(CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("text/event-stream")
            .to_owned();
        let start = run::Start {
            task: Arc::from(meta.task_id.as_str()),
            meta: vec![
                (
                    "owner",
                    dwp_core::hitl::owner_field(&meta.tenant_id, &meta.user_id),
                ),
                ("route", route.name.to_owned()),
                ("type", content_type),
            ],
            upstream: body,
            tee: Some((recorder, meta)),
            held: std::mem::take(&mut ctx.log.held),
            idle: route.policy.idle_timeout,
            max_block: shared.config.recorder.max_event_bytes,
        };
        let blocks = run::start(streams, start);
        let relay = Relay::new(blocks, rules, sse, ctx.log, None);
        return Response::from_parts(parts, relay.boxed_unsync());
    }
    let tee = ctx.tee.filter(|_| sse); // only event streams are recorded
    let relay = Relay::new(body, rules, sse, ctx.log, tee);
    Response::from_parts(parts, relay.boxed_unsync())
}

/// The error envelope of `e`, with the request's trace id.
fn traced_error(ctx: Ctx, e: GatewayError) -> Response<ResponseBody> {
    let response = e.into_traced_response(Some(ctx.trace.trace_id_hex()));
    own(ctx, response)
}

/// A response the gateway made itself (an error, `/health`): logged as
/// complete once it is handed over.
fn own(mut ctx: Ctx, response: Response<ResponseBody>) -> Response<ResponseBody> {
    let bytes = http_body::Body::size_hint(response.body())
        .exact()
        .unwrap_or(0);
    ctx.log.finish(response.status().as_u16(), bytes);
    response
}
