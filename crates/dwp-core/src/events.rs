//! The agent's SSE event types (CONTRACT.md section 4).
//!
//! Parsing is tolerant: an unknown `type` becomes [`EventType::Other`] and
//! extra fields are kept in the raw JSON, so a newer Aura-Platform never
//! breaks an older gateway.

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// The `type` of an agent event.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum EventType {
    /// `start` (flat): the run began.
    Start,
    /// `thought` (wrapped): analysis, planning, reasoning, decision or reflection.
    Thought,
    /// `plan_step` (wrapped): a step of the plan.
    PlanStep,
    /// `plan_step_update` (wrapped): a change to a step, by `stepId`.
    PlanStepUpdate,
    /// `tool_execution` (wrapped): a tool ran or is running.
    ToolExecution,
    /// `hitl` (wrapped): the agent waits for a human decision.
    Hitl,
    /// `content` (wrapped): answer text.
    Content,
    /// `timeline_step` (wrapped).
    TimelineStep,
    /// `end` (flat): the run finished.
    End,
    /// `error` (flat): the run failed; `errorType` says how.
    Error,
    /// `failed` (flat): the run failed.
    Failed,
    /// A type this version does not know, kept as sent.
    Other(String),
}

impl EventType {
    /// The wire name.
    pub fn as_str(&self) -> &str {
        match self {
            Self::Start => "start",
            Self::Thought => "thought",
            Self::PlanStep => "plan_step",
            Self::PlanStepUpdate => "plan_step_update",
            Self::ToolExecution => "tool_execution",
            Self::Hitl => "hitl",
            Self::Content => "content",
            Self::TimelineStep => "timeline_step",
            Self::End => "end",
            Self::Error => "error",
            Self::Failed => "failed",
            Self::Other(name) => name,
        }
    }

    /// Parses a wire name; never fails.
    pub fn parse(name: &str) -> Self {
        match name {
            "start" => Self::Start,
            "thought" => Self::Thought,
            "plan_step" => Self::PlanStep,
            "plan_step_update" => Self::PlanStepUpdate,
            "tool_execution" => Self::ToolExecution,
            "hitl" => Self::Hitl,
            "content" => Self::Content,
            "timeline_step" => Self::TimelineStep,
            "end" => Self::End,
            "error" => Self::Error,
            "failed" => Self::Failed,
            other => Self::Other(other.to_owned()),
        }
    }

    /// `start`, `end`, `error` and `failed` are flat; the others wrap their
    /// payload in `data`.
    pub fn is_flat(&self) -> bool {
        matches!(self, Self::Start | Self::End | Self::Error | Self::Failed)
    }
}

impl Serialize for EventType {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for EventType {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(Self::parse(&String::deserialize(d)?))
    }
}

/// The JSON of one `data:` line of an agent event.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentEvent {
    /// The event's `type`.
    pub event_type: EventType,
    /// The whole JSON object as sent.
    pub raw: Value,
}

impl AgentEvent {
    /// Parses a `data:` value. `None` for `[DONE]`, non-JSON or JSON without a
    /// string `type`.
    pub fn parse(data: &str) -> Option<Self> {
        let raw: Value = serde_json::from_str(data).ok()?;
        let event_type = EventType::parse(raw.get("type")?.as_str()?);
        Some(Self { event_type, raw })
    }

    /// A flat event (`start`, `end`, `error`, `failed`): `{"type": T}`
    /// followed by `fields` (an object; anything else adds nothing).
    pub fn flat(event_type: EventType, fields: Value) -> Self {
        let raw = Self::object(&event_type, fields);
        Self { event_type, raw }
    }

    /// A wrapped event: `{"type": T, "data": payload}`. The real agent
    /// repeats the type first in the payload of every wrapped event but
    /// `hitl`; [`typed_payload`](Self::typed_payload) builds that one.
    pub fn wrapped(event_type: EventType, payload: Value) -> Self {
        let mut raw = serde_json::Map::new();
        raw.insert("type".into(), event_type.as_str().into());
        raw.insert("data".into(), payload);
        Self {
            event_type,
            raw: Value::Object(raw),
        }
    }

    /// `{"type": T}` followed by `fields`: the payload of a wrapped event.
    pub fn typed_payload(event_type: &EventType, fields: Value) -> Value {
        Self::object(event_type, fields)
    }

    fn object(event_type: &EventType, fields: Value) -> Value {
        let mut object = serde_json::Map::new();
        object.insert("type".into(), event_type.as_str().into());
        if let Value::Object(fields) = fields {
            object.extend(fields);
        }
        Value::Object(object)
    }

    /// The payload as the frontend reads it: `data.data || data`.
    pub fn payload(&self) -> &Value {
        match self.raw.get("data") {
            Some(inner) if !inner.is_null() => inner,
            _ => &self.raw,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_contract_type_round_trips() {
        for name in [
            "start",
            "thought",
            "plan_step",
            "plan_step_update",
            "tool_execution",
            "hitl",
            "content",
            "timeline_step",
            "end",
            "error",
            "failed",
        ] {
            let t: EventType = serde_json::from_value(Value::from(name)).unwrap();
            assert!(!matches!(t, EventType::Other(_)), "{name} is known");
            assert_eq!(serde_json::to_value(&t).unwrap(), name);
        }
    }

    #[test]
    fn unknown_types_and_extra_fields_are_tolerated() {
        let e = AgentEvent::parse(r#"{"type":"brand_new","x":1}"#).unwrap();
        assert_eq!(e.event_type, EventType::Other("brand_new".into()));
        assert_eq!(e.raw["x"], 1);
    }

    #[test]
    fn payload_unwraps_wrapped_events_only() {
        let wrapped =
            AgentEvent::parse(r#"{"type":"plan_step","data":{"stepId":"s1","status":"pending"}}"#)
                .unwrap();
        assert_eq!(wrapped.payload()["stepId"], "s1");
        assert!(!wrapped.event_type.is_flat());
        let flat =
            AgentEvent::parse(r#"{"type":"error","error":"no","errorType":"RejectionError"}"#)
                .unwrap();
        assert_eq!(flat.payload()["errorType"], "RejectionError");
        assert!(flat.event_type.is_flat());
    }

    #[test]
    fn built_events_parse_back_with_their_type_first() {
        let flat = AgentEvent::flat(EventType::End, serde_json::json!({"message": "done"}));
        assert_eq!(flat.raw.to_string(), r#"{"type":"end","message":"done"}"#);
        let hitl = AgentEvent::wrapped(EventType::Hitl, serde_json::json!({"requestId": "r"}));
        assert_eq!(
            hitl.raw.to_string(),
            r#"{"type":"hitl","data":{"requestId":"r"}}"#
        );
        let payload = AgentEvent::typed_payload(&EventType::Content, serde_json::json!({"x": 1}));
        let wrapped = AgentEvent::wrapped(EventType::Content, payload);
        assert_eq!(
            wrapped.raw.to_string(),
            r#"{"type":"content","data":{"type":"content","x":1}}"#
        );
        assert_eq!(AgentEvent::parse(&wrapped.raw.to_string()), Some(wrapped));
    }

    #[test]
    fn done_and_garbage_are_not_events() {
        assert!(AgentEvent::parse("[DONE]").is_none());
        assert!(AgentEvent::parse("{\"no_type\":1}").is_none());
        assert!(AgentEvent::parse("{\"type\":5}").is_none());
    }
}
