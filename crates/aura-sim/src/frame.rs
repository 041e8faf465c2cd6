//! SSE frames exactly as Aura-Platform writes them: `id: N`, `event: T`,
//! `data: <one-line JSON>` with one space after each colon, a blank line
//! after each event, and a final `data: [DONE]` without id. The JSON is
//! what Python's `json.dumps` writes (`", "` and `": "` separators, keys in
//! insertion order, UTF-8 kept as is).

use std::io;

use serde::Serialize;
use serde_json::Value;
use serde_json::ser::Formatter;

/// `json.dumps` spacing.
struct PythonStyle;

impl Formatter for PythonStyle {
    fn begin_array_value<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_key<W: ?Sized + io::Write>(
        &mut self,
        w: &mut W,
        first: bool,
    ) -> io::Result<()> {
        if first { Ok(()) } else { w.write_all(b", ") }
    }

    fn begin_object_value<W: ?Sized + io::Write>(&mut self, w: &mut W) -> io::Result<()> {
        w.write_all(b": ")
    }
}

/// `value` as Python's `json.dumps` would write it.
pub fn python_json(value: &Value) -> String {
    let mut out = Vec::new();
    let mut ser = serde_json::Serializer::with_formatter(&mut out, PythonStyle);
    // Serialising a Value into a Vec cannot fail.
    let _ = value.serialize(&mut ser);
    String::from_utf8(out).unwrap_or_default()
}

/// One event: `id`, `event` and `data` lines and the blank line.
pub fn event(id: u64, kind: &str, data: &Value) -> String {
    format!("id: {id}\nevent: {kind}\ndata: {}\n\n", python_json(data))
}

/// The end of every stream.
pub const DONE: &str = "data: [DONE]\n\n";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn frames_match_the_contract_to_the_byte() {
        let start = json!({"type": "start", "message": "Agent started", "timestamp": 1795309470});
        assert_eq!(
            event(1, "start", &start),
            "id: 1\nevent: start\ndata: {\"type\": \"start\", \"message\": \"Agent started\", \"timestamp\": 1795309470}\n\n"
        );
        let nested =
            json!({"type": "thought", "data": {"sources": [], "metadata": {}, "list": [1, 2]}});
        assert_eq!(
            python_json(&nested),
            r#"{"type": "thought", "data": {"sources": [], "metadata": {}, "list": [1, 2]}}"#
        );
        assert_eq!(python_json(&json!({"k": "삭제"})), r#"{"k": "삭제"}"#);
    }
}
