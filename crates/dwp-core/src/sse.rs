//! An incremental Server-Sent Events codec.
//!
//! [`Parser`] follows the WHATWG HTML "event stream interpretation" rules: it
//! takes arbitrary chunks (an event may be split anywhere, even inside a
//! UTF-8 sequence or between the CR and LF of a CRLF), accepts CR, LF and
//! CRLF line ends, strips one leading BOM, ignores comment lines and unknown
//! fields, ignores an `id` containing NUL and a `retry` that is not all
//! digits, and discards an event that is not terminated by a blank line.
//! [`encode`] writes an [`Event`] back in the framing Aura-Platform uses
//! (`field: value`, one space).
//!
//! A parser made with [`Parser::with_max_event`] holds at most that many
//! bytes of one event: a larger one is skipped to its blank line, never
//! buffered, and counted ([`Parser::take_oversized`]).

/// The UTF-8 byte order mark, stripped once at the start of a stream.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// The `data` value that ends an Aura-Platform stream.
pub const DONE: &str = "[DONE]";

/// The comment the gateway injects while a stream is silent.
pub const KEEP_ALIVE: &[u8] = b": keep-alive\n\n";

/// One dispatched event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Event {
    /// The `id` field of this event block, when it had a valid one.
    pub id: Option<String>,
    /// The `event` field (`None` when absent or empty: the type is then `message`).
    pub event: Option<String>,
    /// The data lines joined with `\n`.
    pub data: String,
    /// A valid `retry` field of this event block, in milliseconds.
    pub retry: Option<u64>,
    /// The stream's last event id at dispatch time (WHATWG `lastEventId`).
    pub last_event_id: String,
}

impl Event {
    /// The event type as a browser reports it: the `event` field or `message`.
    pub fn event_type(&self) -> &str {
        self.event.as_deref().unwrap_or("message")
    }
}

/// An incremental parser. Feed it chunks; it returns the events they complete.
#[derive(Debug, Default)]
pub struct Parser {
    /// Bytes of the line not yet terminated (or of the undecided BOM prefix).
    line: Vec<u8>,
    /// Whether the stream start has been checked for a BOM.
    started: bool,
    /// The previous chunk ended with CR: a leading LF belongs to it.
    pending_cr: bool,
    /// A field line was seen since the last blank line.
    in_event: bool,
    data: String,
    event: String,
    id: Option<String>,
    retry: Option<u64>,
    last_event_id: String,
    reconnection_ms: Option<u64>,
    /// Most bytes one event may hold (its pending line and fields), if capped.
    max_event: Option<usize>,
    /// The current event went over `max_event`: skipped to its blank line.
    oversized: bool,
    /// While skipping: the current line has bytes.
    skipped_line: bool,
    /// Events skipped for their size and not yet taken.
    oversized_count: u64,
}

impl Parser {
    /// A parser at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// A parser that skips (and counts) any event larger than `max` bytes
    /// instead of buffering it.
    pub fn with_max_event(max: usize) -> Self {
        Self {
            max_event: Some(max),
            ..Self::default()
        }
    }

    /// How many events were skipped for their size since the last call.
    pub fn take_oversized(&mut self) -> u64 {
        std::mem::take(&mut self.oversized_count)
    }

    /// Too much of one event is held: drop it and skip to its end.
    fn check_size(&mut self, line_pending: bool) {
        let held = self.line.len() + self.data.len() + self.event.len();
        if self.max_event.is_some_and(|max| held > max) {
            self.oversized = true;
            self.in_event = true;
            self.skipped_line = line_pending;
            self.line = Vec::new();
            self.data = String::new();
            self.event = String::new();
            self.id = None;
            self.retry = None;
        }
    }

    /// Feeds one chunk, returning the events it completed, in order.
    pub fn feed(&mut self, chunk: &[u8]) -> Vec<Event> {
        let mut out = Vec::new();
        self.feed_into(chunk, &mut out);
        out
    }

    /// Like [`Parser::feed`], appending to `out` instead of allocating.
    pub fn feed_into(&mut self, chunk: &[u8], out: &mut Vec<Event>) {
        if !self.started {
            self.line.extend_from_slice(chunk);
            if self.line.len() < BOM.len() && BOM.starts_with(&self.line) {
                return; // could still become a BOM
            }
            self.started = true;
            let mut bytes = std::mem::take(&mut self.line);
            let skip = if bytes.starts_with(BOM) { BOM.len() } else { 0 };
            self.scan(&bytes[skip..], out);
            bytes.clear();
            if self.line.is_empty() {
                self.line = bytes; // keep the allocation
            }
            return;
        }
        self.scan(chunk, out);
    }

    /// True between events: no partial line and no field of an unfinished
    /// event is pending, so a comment line can be inserted without changing
    /// what a client parses.
    /// Before the first byte the parser is idle too.
    pub fn is_idle(&self) -> bool {
        self.line.is_empty() && !self.pending_cr && !self.in_event
    }

    /// The reconnection time set by the last valid `retry` field, if any.
    pub fn reconnection_ms(&self) -> Option<u64> {
        self.reconnection_ms
    }

    /// The stream's last event id (WHATWG `lastEventId`).
    pub fn last_event_id(&self) -> &str {
        &self.last_event_id
    }

    fn scan(&mut self, bytes: &[u8], out: &mut Vec<Event>) {
        let mut start = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    start = i + 1;
                    continue;
                }
            }
            if (b == b'\n' || b == b'\r') && self.oversized {
                // Skipping an oversized event: only its blank line matters.
                if !self.skipped_line && start == i {
                    self.oversized = false;
                    self.in_event = false;
                    self.oversized_count += 1;
                }
                self.skipped_line = false;
                self.pending_cr = b == b'\r';
                start = i + 1;
            } else if b == b'\n' || b == b'\r' {
                let mut line = std::mem::take(&mut self.line);
                line.extend_from_slice(&bytes[start..i]);
                self.line_done(&line, out);
                line.clear();
                self.line = line;
                self.pending_cr = b == b'\r';
                start = i + 1;
                if self.max_event.is_some() {
                    self.check_size(false);
                }
            }
        }
        if self.oversized {
            self.skipped_line |= start < bytes.len();
            return;
        }
        self.line.extend_from_slice(&bytes[start..]);
        if self.max_event.is_some() {
            self.check_size(true);
        }
    }

    fn line_done(&mut self, line: &[u8], out: &mut Vec<Event>) {
        if line.is_empty() {
            self.dispatch(out);
            return;
        }
        if line[0] == b':' {
            return; // comment
        }
        self.in_event = true;
        let (field, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => {
                let value = &line[colon + 1..];
                (&line[..colon], value.strip_prefix(b" ").unwrap_or(value))
            }
            None => (line, &b""[..]),
        };
        let value = String::from_utf8_lossy(value);
        match field {
            b"event" => self.event = value.into_owned(),
            b"data" => {
                self.data.push_str(&value);
                self.data.push('\n');
            }
            b"id" if !value.contains('\0') => {
                self.last_event_id = value.to_string();
                self.id = Some(value.into_owned());
            }
            b"retry" if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) => {
                if let Ok(ms) = value.parse() {
                    self.reconnection_ms = Some(ms);
                    self.retry = Some(ms);
                }
            }
            _ => {} // unknown field, or an id with NUL, or a bogus retry
        }
    }

    fn dispatch(&mut self, out: &mut Vec<Event>) {
        self.in_event = false;
        let id = self.id.take();
        let retry = self.retry.take();
        if self.data.is_empty() {
            self.event.clear();
            return;
        }
        self.data.pop(); // the trailing LF
        let event = std::mem::take(&mut self.event);
        out.push(Event {
            id,
            event: (!event.is_empty()).then_some(event),
            data: std::mem::take(&mut self.data),
            retry,
            last_event_id: self.last_event_id.clone(),
        });
    }
}

/// Tracks only where the event boundaries of a stream are, without
/// decoding anything: the cheap half of [`Parser`] for a relay that must know
/// when a comment can be inserted but passes every byte on unchanged.
/// [`Boundary::is_idle`] agrees with [`Parser::is_idle`] after every byte.
#[derive(Debug, Default, Clone)]
pub struct Boundary {
    /// Bytes of a possible leading BOM seen so far (3 once decided).
    bom: u8,
    /// Bytes in the current, unterminated line.
    line_len: usize,
    pending_cr: bool,
    in_event: bool,
}

impl Boundary {
    /// A tracker at the start of a stream.
    pub fn new() -> Self {
        Self::default()
    }

    /// Follows one chunk of the stream.
    pub fn feed(&mut self, chunk: &[u8]) {
        let mut bytes = chunk;
        while self.bom < 3 {
            match bytes.first() {
                None => return,
                Some(&b) if b == BOM[self.bom as usize] => {
                    self.bom += 1;
                    self.line_len += 1; // undecided: counts as a pending line
                    bytes = &bytes[1..];
                }
                Some(_) => {
                    // Not a BOM: the bytes seen are the start of a field line.
                    if self.line_len > 0 {
                        self.in_event = true;
                    }
                    self.bom = 3;
                }
            }
            if self.bom == 3 && self.line_len == 3 && bytes.len() < chunk.len() {
                self.line_len = 0; // a whole BOM: stripped, the line starts after it
            }
        }
        for &b in bytes {
            if self.pending_cr {
                self.pending_cr = false;
                if b == b'\n' {
                    continue;
                }
            }
            match b {
                b'\n' | b'\r' => {
                    if self.line_len == 0 {
                        self.in_event = false; // a blank line ends the event
                    }
                    self.line_len = 0;
                    self.pending_cr = b == b'\r';
                }
                b':' if self.line_len == 0 => self.line_len = 1, // a comment
                _ => {
                    if self.line_len == 0 {
                        self.in_event = true; // a field line
                    }
                    self.line_len += 1;
                }
            }
        }
    }

    /// True between events (see [`Parser::is_idle`]).
    pub fn is_idle(&self) -> bool {
        self.line_len == 0 && !self.pending_cr && !self.in_event
    }
}

/// Encodes an event as `id: `, `event: `, `retry: ` and one `data: ` line per
/// line of data, ended by a blank line. CR and LF in `id` and `event`, which
/// would break the framing, are dropped.
pub fn encode(event: &Event) -> String {
    let mut out = String::with_capacity(event.data.len() + 32);
    let clean = |s: &str| s.replace(['\r', '\n'], "");
    if let Some(id) = &event.id {
        out.push_str("id: ");
        out.push_str(&clean(id));
        out.push('\n');
    }
    if let Some(name) = &event.event {
        out.push_str("event: ");
        out.push_str(&clean(name));
        out.push('\n');
    }
    if let Some(ms) = event.retry {
        out.push_str(&format!("retry: {ms}\n"));
    }
    let data = event.data.replace("\r\n", "\n").replace('\r', "\n");
    for line in data.split('\n') {
        out.push_str("data: ");
        out.push_str(line);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// Encodes a comment line (`: text`), ignored by every client.
pub fn comment(text: &str) -> String {
    format!(": {}\n", text.replace(['\r', '\n'], " "))
}

/// One block of an event stream: every byte from the end of the previous
/// block to the blank line that ends this one, unchanged. A block with a
/// `data` field dispatches an event; one of comments only does not.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The bytes, blank line included.
    pub bytes: Vec<u8>,
    /// It has a `data` field (a client dispatches it as an event).
    pub has_data: bool,
    /// The value of its last `id` field, when it has one.
    pub id: Option<String>,
}

/// Splits a byte stream into [`Block`]s at the blank lines that end
/// events, keeping every byte, so that the blocks joined are the stream.
/// A block past `max` bytes is handed out as it stands (its event is then
/// cut in two blocks, neither marked as having data).
#[derive(Debug)]
pub struct Blocks {
    buf: Vec<u8>,
    line_start: usize,
    /// The last line ended with CR: an LF next belongs to it.
    after_cr: bool,
    /// The block ended with a CR blank line, handed out with the next byte.
    ended: bool,
    has_data: bool,
    id: Option<String>,
    max: usize,
}

impl Blocks {
    /// A splitter handing out blocks of at most about `max` bytes.
    pub fn new(max: usize) -> Self {
        Self {
            buf: Vec::new(),
            line_start: 0,
            after_cr: false,
            ended: false,
            has_data: false,
            id: None,
            max,
        }
    }

    /// Follows `chunk`; the blocks it completes go to `out`.
    pub fn feed(&mut self, chunk: &[u8], out: &mut Vec<Block>) {
        for &b in chunk {
            if std::mem::take(&mut self.after_cr) {
                if b == b'\n' {
                    self.buf.push(b);
                    self.line_start = self.buf.len();
                    if std::mem::take(&mut self.ended) {
                        out.push(self.take(true));
                    }
                    continue;
                }
                if std::mem::take(&mut self.ended) {
                    out.push(self.take(true));
                }
            }
            self.buf.push(b);
            if b != b'\n' && b != b'\r' {
                continue;
            }
            self.after_cr = b == b'\r';
            let line_end = self.buf.len() - 1;
            if line_end == self.line_start {
                self.line_start = self.buf.len();
                if self.after_cr {
                    self.ended = true; // an LF may follow, and belongs here
                } else {
                    out.push(self.take(true));
                }
                continue;
            }
            self.field(self.line_start, line_end);
            self.line_start = self.buf.len();
        }
        if self.buf.len() > self.max {
            out.push(self.take(false));
        }
    }

    /// What is held of an unfinished block (the stream ended without its
    /// blank line).
    pub fn rest(&mut self) -> Option<Block> {
        let whole = self.ended;
        (!self.buf.is_empty()).then(|| self.take(whole))
    }

    fn field(&mut self, start: usize, end: usize) {
        let line = &self.buf[start..end];
        let (name, value) = match line.iter().position(|&b| b == b':') {
            Some(colon) => (&line[..colon], &line[colon + 1..]),
            None => (line, &line[line.len()..]),
        };
        let value = value.strip_prefix(b" ").unwrap_or(value);
        match name {
            b"data" => self.has_data = true,
            b"id" if !value.contains(&0) => {
                self.id = Some(String::from_utf8_lossy(value).into_owned());
            }
            _ => {}
        }
    }

    fn take(&mut self, whole: bool) -> Block {
        let block = Block {
            bytes: std::mem::take(&mut self.buf),
            has_data: whole && self.has_data,
            id: if whole { self.id.take() } else { None },
        };
        self.has_data = false;
        self.id = None;
        self.line_start = 0;
        self.ended = false;
        block
    }
}

#[cfg(test)]
#[path = "sse_tests.rs"]
mod tests;
