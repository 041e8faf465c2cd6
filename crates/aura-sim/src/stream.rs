//! `POST /aura/test/stream`: one scripted agent run as Server-Sent Events.
//!
//! start → thought → two plan steps → (risky prompt: the HITL pause, then
//! tool_execution running and success, or a rejection, or a timeout) →
//! content → end → `[DONE]`. The run stops as soon as the client goes away.

use std::convert::Infallible;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use dwp_core::events::{AgentEvent, EventType};
use dwp_core::headers::{DWP_CALLER_TYPE, DWP_SOURCE, LAST_EVENT_ID, TENANT_ID, USER_ID};
use serde_json::{Value, json};
use std::sync::atomic::Ordering::Relaxed;
use tokio::sync::mpsc;

use crate::AppState;
use crate::approval::{self, Outcome, now};
use crate::auth::{self, detail};
use crate::frame;

/// The action a prompt asks for, when it is risky.
pub fn risky_action(prompt: &str) -> Option<&'static str> {
    let p = prompt.to_lowercase();
    if p.contains("merge") {
        Some("git_merge")
    } else if p.contains("delete") || p.contains("삭제") {
        Some("email_delete")
    } else if p.contains("send") {
        Some("email_send")
    } else {
        None
    }
}

/// The handler.
pub async fn stream(
    State(state): State<Arc<AppState>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let claims = match auth::check(&state.verifier, &headers) {
        Ok(claims) => claims,
        Err((status, message)) => return detail(status, &message),
    };
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let Some(prompt) = request
        .get("prompt")
        .and_then(Value::as_str)
        .filter(|p| !p.trim().is_empty())
        .map(str::to_owned)
    else {
        let mut response = detail(StatusCode::UNPROCESSABLE_ENTITY, "");
        *response.body_mut() = Body::from(
            json!({"detail": [{"loc": ["body", "prompt"], "msg": "prompt is required and must not be empty", "type": "value_error"}]})
                .to_string(),
        );
        return response;
    };
    let header = |name| {
        headers
            .get(&name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let received = json!({
        "tenantId": header(TENANT_ID),
        "userId": header(USER_ID),
        "source": header(DWP_SOURCE),
        "callerType": header(DWP_CALLER_TYPE),
        "lastEventId": header(LAST_EVENT_ID),
    });
    // As the real agent: the user is the token's; an X-User-ID that says
    // otherwise is an `error` event, not an HTTP error.
    let user_mismatch = header(USER_ID).is_some_and(|u| u != claims.sub);
    let tenant = header(TENANT_ID).or(claims.tenant_id);
    // It keeps no event log: a resumed stream is the whole run again, its
    // ids counting on from the one given.
    let first_id = header(LAST_EVENT_ID)
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let (tx, rx) = mpsc::channel::<String>(16);
    tokio::spawn(run(
        state,
        Run {
            prompt,
            received,
            user: claims.sub,
            tenant,
            context: request.get("context").cloned(),
            user_mismatch,
            first_id,
        },
        tx,
    ));
    let body = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv()
            .await
            .map(|frame| (Ok::<_, Infallible>(Bytes::from(frame)), rx))
    });
    Response::builder()
        .header(
            http::header::CONTENT_TYPE,
            "text/event-stream; charset=utf-8",
        )
        .header(http::header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(body))
        .unwrap_or_default()
}

/// Counts the run as cancelled when it ends with its client gone.
struct Counted {
    state: Arc<AppState>,
    tx: mpsc::Sender<String>,
}

impl Drop for Counted {
    fn drop(&mut self) {
        if self.tx.is_closed() {
            self.state.runs.cancelled.fetch_add(1, Relaxed);
        }
    }
}

struct Run {
    prompt: String,
    received: Value,
    user: String,
    tenant: Option<String>,
    context: Option<Value>,
    /// `X-User-ID` is not the token's `sub`.
    user_mismatch: bool,
    /// The first event's id less one (`Last-Event-ID`, else 0).
    first_id: u64,
}

struct Sender {
    tx: mpsc::Sender<String>,
    next_id: u64,
    delay: std::time::Duration,
}

impl Sender {
    /// Sends one event, named by its type; false once the client is gone.
    async fn send(&mut self, event: AgentEvent) -> bool {
        self.next_id += 1;
        if self
            .tx
            .send(frame::event(
                self.next_id,
                event.event_type.as_str(),
                &event.raw,
            ))
            .await
            .is_err()
        {
            return false;
        }
        tokio::time::sleep(self.delay).await;
        true
    }

    async fn done(&mut self) {
        let _ = self.tx.send(frame::DONE.to_owned()).await;
    }
}

/// A wrapped event as the real agent writes it: the payload starts with
/// the type and ends with a `timestamp` and an empty `metadata`.
fn wrapped(kind: EventType, mut fields: Value) -> AgentEvent {
    if let Value::Object(fields) = &mut fields {
        fields.insert("timestamp".into(), now().into());
        fields.insert("metadata".into(), json!({}));
    }
    let payload = AgentEvent::typed_payload(&kind, fields);
    AgentEvent::wrapped(kind, payload)
}

/// What every run sends first: start, a thought and two plan steps.
fn opening(run: &Run, action: Option<&str>) -> [AgentEvent; 4] {
    let steps = [
        "1. Understand what is asked".to_owned(),
        match action {
            Some(a) => format!("2. Run {a} after approval"),
            None => "2. Answer".to_owned(),
        },
    ];
    let start = json!({"message": "Agent started", "timestamp": now(), "received": run.received});
    let step = |description: &str| {
        wrapped(
            EventType::PlanStep,
            json!({"stepId": uuid::Uuid::new_v4().to_string(), "description": description, "status": "pending", "confidence": 0.8}),
        )
    };
    [
        AgentEvent::flat(EventType::Start, start),
        wrapped(
            EventType::Thought,
            json!({"thoughtType": "analysis", "content": format!("Analysing: {}", run.prompt), "sources": []}),
        ),
        step(&steps[0]),
        step(&steps[1]),
    ]
}

/// The approved tool's `running` or `success` event, made when it is sent.
fn tool_event(action: &str, status: &str) -> AgentEvent {
    let result = if status == "success" {
        json!(format!("{action} done"))
    } else {
        Value::Null
    };
    wrapped(
        EventType::ToolExecution,
        json!({"toolName": action, "toolArgs": {}, "status": status, "result": result, "error": null, "requiresApproval": true}),
    )
}

async fn run(state: Arc<AppState>, run: Run, tx: mpsc::Sender<String>) {
    state.runs.started.fetch_add(1, Relaxed);
    let _counted = Counted {
        state: state.clone(),
        tx: tx.clone(),
    };
    let mut out = Sender {
        tx,
        next_id: run.first_id,
        delay: state.config.event_delay,
    };
    if run.user_mismatch {
        let error = AgentEvent::flat(
            EventType::Error,
            json!({"error": "User ID mismatch", "errorType": "AuthorizationError"}),
        );
        if out.send(error).await {
            out.done().await;
        }
        return;
    }
    let action = risky_action(&run.prompt);
    for event in opening(&run, action) {
        if !out.send(event).await {
            return;
        }
    }
    if let Some(action) = action {
        let context = run.context.clone().unwrap_or_else(|| json!({}));
        let owner = approval::Owner {
            user: &run.user,
            tenant: run.tenant.as_deref(),
        };
        if !pause_for(&state, &mut out, &owner, action, context).await {
            return;
        }
        for status in ["running", "success"] {
            if !out.send(tool_event(action, status)).await {
                return;
            }
        }
    }
    let content = wrapped(
        EventType::Content,
        json!({"content": format!("Done: {}", run.prompt), "chunk": false}),
    );
    let end = AgentEvent::flat(
        EventType::End,
        json!({"message": "Agent finished", "timestamp": now()}),
    );
    if out.send(content).await && out.send(end).await {
        out.done().await;
    }
}

/// The HITL pause of one tool call: asks (twice when `AURA_SIM_ASK_TWICE`,
/// as the real agent), and on anything but an approval sends what the real
/// agent sends and ends the stream. True when the run goes on.
async fn pause_for(
    state: &AppState,
    out: &mut Sender,
    owner: &approval::Owner<'_>,
    action: &str,
    context: Value,
) -> bool {
    let config = &state.config;
    let session_id = approval::session_id(owner.user, config.session_ids);
    let asks = if config.ask_twice { 2 } else { 1 };
    for _ in 0..asks {
        let pending = approval::next_request(&session_id);
        let hitl_event = AgentEvent::wrapped(
            EventType::Hitl,
            json!({
                "requestId": pending.request_id,
                "actionType": action,
                "message": format!("Approve {action}?"),
                "context": context,
                "requiresApproval": true,
            }),
        );
        let closed = out.tx.clone();
        // `announce` needs the sender; it is handed back after the pause.
        let mut announcer = Sender {
            tx: out.tx.clone(),
            next_id: out.next_id,
            delay: out.delay,
        };
        let outcome = approval::pause(
            &state.redis,
            &pending,
            owner,
            action,
            context.clone(),
            config.wait,
            config.hitl_timeout,
            async { announcer.send(hitl_event).await },
            async move { closed.closed().await },
        )
        .await;
        out.next_id = announcer.next_id;
        let outcome = outcome.unwrap_or_else(|e| {
            tracing::warn!(error = %e, "HITL pause failed (Redis)");
            Outcome::Rejected(format!("Approval unavailable: {e}"))
        });
        tracing::info!(
            request_id = pending.request_id,
            ?outcome,
            "HITL pause ended"
        );
        match outcome {
            Outcome::Approved => {}
            Outcome::Gone => return false,
            Outcome::Rejected(reason) => {
                let error = AgentEvent::flat(
                    EventType::Error,
                    json!({"error": reason, "errorType": "RejectionError", "timestamp": now()}),
                );
                if out.send(error).await {
                    out.done().await;
                }
                return false;
            }
            Outcome::TimedOut => {
                timed_out(out, &pending, config.hitl_timeout.as_secs()).await;
                return false;
            }
        }
    }
    true
}

/// What the real agent sends when nobody decided in time.
async fn timed_out(out: &mut Sender, pending: &approval::Pending, secs: u64) {
    let message = "The task was cancelled: no decision in time";
    let failed = json!({"message": message, "error": "HITL approval timeout", "errorType": "TimeoutError", "requestId": pending.request_id, "sessionId": pending.session_id, "timestamp": now()});
    let error = json!({"error": message, "errorType": "TimeoutError", "message": format!("No decision within {secs} s")});
    let end = json!({"message": "Stopped by the approval timeout", "status": "failed", "timestamp": now()});
    let _ = out.send(AgentEvent::flat(EventType::Failed, failed)).await
        && out.send(AgentEvent::flat(EventType::Error, error)).await
        && out.send(AgentEvent::flat(EventType::End, end)).await;
    out.done().await;
}
