//! The agent-task event stream: what the gateway's recorder writes and
//! main-service's consumer reads (Redis Stream entries, one per SSE event).

/// The Redis Stream the gateway tees relayed agent events into.
pub const EVENTS_STREAM: &str = "dwp:agent-task-events";

/// Event type of the entry the gateway adds when a recorded stream ends
/// without finishing: the agent broke it off, it went silent past the idle
/// timeout, or the client left (the agent's run was then cancelled). Its
/// data is `{"type": "dwp.relay_broken", "reason": "..."}`.
pub const EVENT_RELAY_BROKEN: &str = "dwp.relay_broken";

/// Field: the task id the gateway assigned (`X-DWP-Task-ID`).
pub const FIELD_TASK_ID: &str = "taskId";
/// Field: the caller's user (`X-User-ID`), empty when absent.
pub const FIELD_USER_ID: &str = "userId";
/// Field: the caller's tenant (`X-Tenant-ID`).
pub const FIELD_TENANT_ID: &str = "tenantId";
/// Field: the request path as the client sent it.
pub const FIELD_PATH: &str = "path";
/// Field: the SSE `id`, empty when the event had none.
pub const FIELD_EVENT_ID: &str = "eventId";
/// Field: the SSE event type (`message` when the event named none).
pub const FIELD_EVENT_TYPE: &str = "eventType";
/// Field: the event's data (the JSON line, or `[DONE]`).
pub const FIELD_DATA: &str = "data";
