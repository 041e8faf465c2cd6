//! The gateway's own calls on resumable streams ([`crate::streams`]):
//!
//! - `GET /api/streams/{taskId}` (what an `EventSource` can send; it adds
//!   `Last-Event-ID` itself) and the stream request sent again with
//!   `X-DWP-Task-ID`: follow the stream from after `Last-Event-ID`;
//! - `POST /api/streams/{taskId}/stop`: stop the run, wherever it is read.
//!
//! Both need a valid token and name only the caller's own streams.

use dwp_core::Envelope;
use dwp_core::headers::{
    ACCEL_BUFFERING, DWP_RESUMABLE, DWP_TASK_ID, LAST_EVENT_ID, TENANT_ID, USER_ID,
};
use http::header::{CACHE_CONTROL, CONTENT_TYPE};
use http::{HeaderMap, HeaderValue, Method, Response, StatusCode};
use http_body_util::BodyExt;

use crate::ResponseBody;
use crate::access::AccessLog;
use crate::error::{GatewayError, json_response};
use crate::relay::{Relay, StreamRules};
use crate::state::Shared;
use crate::streams::follow;
use crate::tokens::Verified;

/// The path prefix of the calls.
pub const PREFIX: &str = "/api/streams/";

/// One call on a resumable stream.
#[derive(Debug)]
pub struct Call {
    /// The task id.
    pub task: String,
    /// Follow it (from after `Last-Event-ID`), or stop it.
    pub stop: bool,
    /// The route a stream request sent again must match.
    pub route: Option<&'static str>,
    /// `Last-Event-ID`.
    pub last_event_id: Option<String>,
}

impl Call {
    /// A call on `/api/streams/**`: `None` when the path is not one; 404
    /// for a path under it that names no call.
    pub fn parse(
        method: &Method,
        path: &str,
        headers: &HeaderMap,
    ) -> Result<Option<Self>, GatewayError> {
        let Some(rest) = path.strip_prefix(PREFIX) else {
            return Ok(None);
        };
        let (task, stop) = match rest.split_once('/') {
            None => (rest, false),
            Some((task, "stop")) => (task, true),
            Some(_) => return Err(GatewayError::NotFound(path.to_owned())),
        };
        if !is_task_id(task) || (stop && method != Method::POST) || (!stop && method != Method::GET)
        {
            return Err(GatewayError::NotFound(path.to_owned()));
        }
        Ok(Some(Self {
            task: task.to_owned(),
            stop,
            route: None,
            last_event_id: last_event_id(headers),
        }))
    }

    /// A stream request sent again with `X-DWP-Task-ID` on `route`.
    pub fn again(route: &'static str, headers: &HeaderMap) -> Option<Result<Self, GatewayError>> {
        let task = headers.get(DWP_TASK_ID)?;
        let Some(task) = task.to_str().ok().filter(|t| is_task_id(t)) else {
            return Some(Err(GatewayError::BadRequest(
                "X-DWP-Task-ID is not a task id".into(),
            )));
        };
        Some(Ok(Self {
            task: task.to_owned(),
            stop: false,
            route: Some(route),
            last_event_id: last_event_id(headers),
        }))
    }
}

fn is_task_id(text: &str) -> bool {
    !text.is_empty()
        && text.len() <= 64
        && text.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
}

fn last_event_id(headers: &HeaderMap) -> Option<String> {
    headers
        .get(LAST_EVENT_ID)
        .and_then(|v| v.to_str().ok())
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())
}

/// Who the caller is, as streams record their owner: the verified token's
/// tenant and user (the identity headers only with `GATEWAY_AUTH=off`).
pub fn owner(verified: Option<&Verified>, headers: &HeaderMap) -> String {
    let header = |name| {
        headers
            .get(name)
            .and_then(|v: &HeaderValue| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    match verified {
        Some(v) => v.owner.to_string(),
        None => dwp_core::hitl::owner_field(&header(TENANT_ID), &header(USER_ID)),
    }
}

/// Answers `call` for `owner`; on an error the access log comes back with it.
pub async fn answer(
    shared: &Shared,
    call: Call,
    owner: &str,
    mut log: AccessLog,
) -> Result<Response<ResponseBody>, (AccessLog, GatewayError)> {
    let Some(streams) = &shared.streams else {
        return Err((
            log,
            GatewayError::Unavailable(
                "Resumable streams are off here (GATEWAY_RECORDER_ENABLED=false, or Redis was away at start)",
            ),
        ));
    };
    if call.stop {
        if let Err(e) = follow::stop(streams, &call.task, owner).await {
            return Err((log, e));
        }
        let body = Envelope::success(
            "Stopping",
            serde_json::json!({"taskId": call.task, "stopping": true}),
        );
        let response = json_response(StatusCode::ACCEPTED, body.to_json());
        log.finish(202, 0);
        return Ok(response);
    }
    let meta = match follow::owned(streams, &call.task, owner).await {
        Ok(meta) if call.route.is_none_or(|r| r == meta.route) => meta,
        Ok(_) => return Err((log, GatewayError::NoStream(call.task))),
        Err(e) => return Err((log, e)),
    };
    let after =
        match follow::position(streams, &call.task, &meta, call.last_event_id.as_deref()).await {
            Ok(after) => after,
            Err(e) => return Err((log, e)),
        };
    let body = follow::follow(streams, &call.task, after);
    let idle = shared
        .config
        .routes
        .routes
        .iter()
        .find(|r| r.name == meta.route)
        .map_or(std::time::Duration::from_secs(3600), |r| {
            r.policy.idle_timeout
        });
    let rules = StreamRules {
        idle_timeout: idle,
        heartbeat: shared.config.sse_heartbeat,
    };
    let content_type = HeaderValue::from_str(&meta.content_type)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or(HeaderValue::from_static("text/event-stream"));
    log.status = 200;
    let relay = Relay::new(body, Some(rules), true, log, None);
    let mut response = Response::new(relay.boxed_unsync());
    let h = response.headers_mut();
    h.insert(CONTENT_TYPE, content_type);
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(ACCEL_BUFFERING, HeaderValue::from_static("no"));
    h.insert(DWP_RESUMABLE, HeaderValue::from_static("true"));
    if let Ok(task) = HeaderValue::from_str(&call.task) {
        h.insert(DWP_TASK_ID, task);
    }
    Ok(response)
}
