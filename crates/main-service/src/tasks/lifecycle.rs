//! The rules of a task's life, without I/O: the status moves
//! (REQUESTED → IN_PROGRESS → COMPLETED or FAILED) and how plan steps are
//! added or updated in the `plan_steps` JSON array.

use serde_json::{Map, Value};

/// A task's status as stored in `agent_task.status`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// Created, not started.
    Requested,
    /// Running.
    InProgress,
    /// Finished well (terminal).
    Completed,
    /// Finished badly (terminal).
    Failed,
}

impl Status {
    /// The stored text.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Requested => "REQUESTED",
            Self::InProgress => "IN_PROGRESS",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
        }
    }

    /// Parses the stored text (unknown text reads as `REQUESTED`).
    pub fn parse(s: &str) -> Self {
        match s {
            "IN_PROGRESS" => Self::InProgress,
            "COMPLETED" => Self::Completed,
            "FAILED" => Self::Failed,
            _ => Self::Requested,
        }
    }

    /// COMPLETED or FAILED: nothing moves it any more.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed)
    }

    /// Whether the REST API may move a task from `self` to `to`.
    pub fn may_move_to(self, to: Self) -> bool {
        matches!(
            (self, to),
            (Self::Requested, Self::InProgress)
                | (Self::InProgress, Self::Completed)
                | (Self::InProgress, Self::Failed)
        )
    }

    /// How far along the life this status is; recorded events only ever
    /// move a task forward, so a late or repeated event cannot undo an end.
    pub fn rank(self) -> u8 {
        match self {
            Self::Requested => 0,
            Self::InProgress => 1,
            Self::Completed | Self::Failed => 2,
        }
    }
}

/// Reads the stored `plan_steps` text (absent or unreadable: no steps).
pub fn steps_of(stored: Option<&str>) -> Vec<Value> {
    stored
        .and_then(|s| serde_json::from_str::<Vec<Value>>(s).ok())
        .unwrap_or_default()
}

/// How far along a plan step's `status` is: pending, then running, then
/// finished. Unknown words count as running.
fn step_rank(status: Option<&Value>) -> u8 {
    match status.and_then(Value::as_str) {
        None | Some("pending" | "planned" | "queued") => 0,
        Some("completed" | "done" | "success" | "failed" | "error" | "skipped" | "cancelled") => 2,
        Some(_) => 1,
    }
}

/// Adds `step`, or merges it into the step with the same `stepId`. A step
/// without `stepId` that equals one already there is not added again.
/// With `forward_only` (recorded events), a step's `status` never moves
/// back (a redelivered `plan_step` cannot undo a later update). Returns
/// whether anything changed, so applying the same step twice changes nothing.
pub fn merge_step(steps: &mut Vec<Value>, step: Map<String, Value>, forward_only: bool) -> bool {
    let id = step
        .get("stepId")
        .and_then(Value::as_str)
        .map(str::to_owned);
    let existing = match &id {
        Some(id) => steps
            .iter_mut()
            .find(|s| s.get("stepId").and_then(Value::as_str) == Some(id)),
        None => steps
            .iter_mut()
            .find(|s| s.as_object().is_some_and(|s| *s == step)),
    };
    match existing {
        Some(Value::Object(current)) => {
            let mut changed = false;
            for (k, v) in step {
                if forward_only && k == "status" && step_rank(Some(&v)) < step_rank(current.get(&k))
                {
                    continue;
                }
                if current.get(&k) != Some(&v) {
                    current.insert(k, v);
                    changed = true;
                }
            }
            changed
        }
        Some(other) => {
            *other = Value::Object(step);
            true
        }
        None => {
            steps.push(Value::Object(step));
            true
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn only_the_contract_moves_are_allowed() {
        use Status::*;
        let all = [Requested, InProgress, Completed, Failed];
        let allowed: Vec<_> = all
            .iter()
            .flat_map(|a| all.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| a.may_move_to(*b))
            .collect();
        assert_eq!(
            allowed,
            [
                (Requested, InProgress),
                (InProgress, Completed),
                (InProgress, Failed)
            ]
        );
        for s in all {
            assert_eq!(Status::parse(s.as_str()), s);
        }
    }

    #[test]
    fn steps_are_added_in_order_and_updated_by_id() {
        let mut steps = Vec::new();
        assert!(merge_step(
            &mut steps,
            obj(json!({"stepId": "a", "description": "1. look", "status": "pending"})),
            true
        ));
        assert!(merge_step(
            &mut steps,
            obj(json!({"stepId": "b", "description": "2. merge", "status": "pending"})),
            true
        ));
        assert!(merge_step(
            &mut steps,
            obj(json!({"stepId": "a", "status": "completed"})),
            true
        ));
        assert_eq!(
            Value::Array(steps.clone()),
            json!([
                {"stepId": "a", "description": "1. look", "status": "completed"},
                {"stepId": "b", "description": "2. merge", "status": "pending"}
            ])
        );
        // The same update again, and the same id-less step twice: no change.
        assert!(!merge_step(
            &mut steps,
            obj(json!({"stepId": "a", "status": "completed"})),
            true
        ));
        assert!(merge_step(
            &mut steps,
            obj(json!({"description": "3. tidy"})),
            true
        ));
        assert!(!merge_step(
            &mut steps,
            obj(json!({"description": "3. tidy"})),
            true
        ));
        assert_eq!(steps.len(), 3);
        // A redelivered creation does not undo the update; the API may.
        let created = obj(json!({"stepId": "a", "description": "1. look", "status": "pending"}));
        assert!(!merge_step(&mut steps, created.clone(), true));
        assert!(merge_step(&mut steps, created, false));
        assert_eq!(steps[0]["status"], "pending");
    }

    #[test]
    fn unreadable_stored_steps_read_as_none() {
        assert!(steps_of(None).is_empty());
        assert!(steps_of(Some("not json")).is_empty());
        assert_eq!(steps_of(Some(r#"[{"stepId":"a"}]"#)).len(), 1);
    }
}
