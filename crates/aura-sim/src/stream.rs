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
use dwp_core::headers::{DWP_CALLER_TYPE, DWP_SOURCE, LAST_EVENT_ID, TENANT_ID, USER_ID};
use serde_json::{Value, json};
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
    let user = Some(claims.sub);
    let tenant = header(TENANT_ID).or(claims.tenant_id);
    let (tx, rx) = mpsc::channel::<String>(16);
    tokio::spawn(run(
        state,
        Run {
            prompt,
            received,
            user,
            tenant,
            context: request.get("context").cloned(),
            user_mismatch,
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

struct Run {
    prompt: String,
    received: Value,
    user: Option<String>,
    tenant: Option<String>,
    context: Option<Value>,
    /// `X-User-ID` is not the token's `sub`.
    user_mismatch: bool,
}

struct Sender {
    tx: mpsc::Sender<String>,
    next_id: u64,
    delay: std::time::Duration,
}

impl Sender {
    /// Sends one event; false once the client is gone.
    async fn send(&mut self, kind: &str, data: Value) -> bool {
        self.next_id += 1;
        if self
            .tx
            .send(frame::event(self.next_id, kind, &data))
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

fn wrapped(kind: &str, fields: Value) -> Value {
    let mut inner = json!({"type": kind});
    if let (Some(inner), Value::Object(fields)) = (inner.as_object_mut(), fields) {
        inner.extend(fields);
        inner.insert("timestamp".into(), now().into());
        inner.insert("metadata".into(), json!({}));
    }
    json!({"type": kind, "data": inner})
}

async fn run(state: Arc<AppState>, run: Run, tx: mpsc::Sender<String>) {
    let mut out = Sender {
        tx,
        next_id: 0,
        delay: state.config.event_delay,
    };
    if run.user_mismatch {
        let error = json!({"type": "error", "error": "User ID mismatch", "errorType": "AuthorizationError"});
        if out.send("error", error).await {
            out.done().await;
        }
        return;
    }
    let action = risky_action(&run.prompt);
    let steps = [
        "1. Understand what is asked".to_owned(),
        match action {
            Some(a) => format!("2. Run {a} after approval"),
            None => "2. Answer".to_owned(),
        },
    ];
    let script = [
        (
            "start",
            json!({"type": "start", "message": "Agent started", "timestamp": now(), "received": run.received}),
        ),
        (
            "thought",
            wrapped(
                "thought",
                json!({"thoughtType": "analysis", "content": format!("Analysing: {}", run.prompt), "sources": []}),
            ),
        ),
        (
            "plan_step",
            wrapped(
                "plan_step",
                json!({"stepId": uuid::Uuid::new_v4().to_string(), "description": steps[0], "status": "pending", "confidence": 0.8}),
            ),
        ),
        (
            "plan_step",
            wrapped(
                "plan_step",
                json!({"stepId": uuid::Uuid::new_v4().to_string(), "description": steps[1], "status": "pending", "confidence": 0.8}),
            ),
        ),
    ];
    for (kind, data) in script {
        if !out.send(kind, data).await {
            return;
        }
    }
    if let Some(action) = action {
        let pending = approval::ids(run.user.as_deref());
        let hitl_event = json!({"type": "hitl", "data": {
            "requestId": pending.request_id,
            "actionType": action,
            "message": format!("Approve {action}?"),
            "context": run.context.clone().unwrap_or_else(|| json!({})),
            "requiresApproval": true,
        }});
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
            run.user.as_deref(),
            run.tenant.as_deref(),
            action,
            run.context.unwrap_or_else(|| json!({})),
            state.config.hitl_timeout,
            async { announcer.send("hitl", hitl_event).await },
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
            Outcome::Gone => return,
            Outcome::Approved => {
                for status in ["running", "success"] {
                    let result = if status == "success" {
                        json!(format!("{action} done"))
                    } else {
                        Value::Null
                    };
                    let event = wrapped(
                        "tool_execution",
                        json!({"toolName": action, "toolArgs": {}, "status": status, "result": result, "error": null, "requiresApproval": true}),
                    );
                    if !out.send("tool_execution", event).await {
                        return;
                    }
                }
            }
            Outcome::Rejected(reason) => {
                if out
                    .send(
                        "error",
                        json!({"type": "error", "error": reason, "errorType": "RejectionError"}),
                    )
                    .await
                {
                    out.done().await;
                }
                return;
            }
            Outcome::TimedOut => {
                let message = format!(
                    "No decision within {} s",
                    state.config.hitl_timeout.as_secs()
                );
                let _ = out
                    .send(
                        "failed",
                        json!({"type": "failed", "message": message, "timestamp": now()}),
                    )
                    .await
                    && out
                        .send(
                            "error",
                            json!({"type": "error", "error": message, "errorType": "TimeoutError"}),
                        )
                        .await
                    && out
                        .send(
                            "end",
                            json!({"type": "end", "message": "Agent finished", "timestamp": now()}),
                        )
                        .await;
                out.done().await;
                return;
            }
        }
    }
    let content = wrapped(
        "content",
        json!({"content": format!("Done: {}", run.prompt), "chunk": false}),
    );
    if out.send("content", content).await
        && out
            .send(
                "end",
                json!({"type": "end", "message": "Agent finished", "timestamp": now()}),
            )
            .await
    {
        out.done().await;
    }
}
