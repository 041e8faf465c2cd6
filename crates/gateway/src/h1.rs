//! The HTTP/1.1 wire on the upstream side, all of it, as pure functions over
//! bytes: the request head the gateway writes ([`encode_request_head`], from
//! a typed [`RequestHead`], framing from the body that is sent), request
//! body chunks, the response head it reads (httparse, the parser hyper
//! itself uses), the length of that response's body (RFC 9112 §6.3), and an
//! incremental decoder of chunked bodies.
//!
//! Nothing here does I/O; [`crate::upstream::client`] feeds it what it reads. Every
//! malformed input is an [`H1Error`], never a panic.

use bytes::{Buf, Bytes, BytesMut};
use http::header::{self, CONNECTION, CONTENT_LENGTH, TRANSFER_ENCODING};
use http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode};

/// Largest response head (status line and headers) accepted from an upstream.
pub const MAX_HEAD_BYTES: usize = 64 * 1024;

/// Most header fields accepted in a response head.
const MAX_HEADERS: usize = 128;

/// Longest chunk-size line (size, extensions) or trailer section accepted.
const MAX_CHUNK_LINE: usize = 4 * 1024;

/// What the upstream sent that cannot be HTTP/1.1.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum H1Error {
    /// The response head does not parse, or is too large.
    #[error("malformed response head: {0}")]
    Head(&'static str),
    /// The body's framing does not parse (Content-Length or chunked).
    #[error("malformed response body: {0}")]
    Body(&'static str),
}

/// How the body of a response ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Length {
    /// No body at all (HEAD, 1xx, 204, 304, `Content-Length: 0`).
    Empty,
    /// Exactly this many bytes.
    Exact(u64),
    /// `Transfer-Encoding: chunked`.
    Chunked,
    /// Everything until the upstream closes the connection.
    UntilClose,
}

/// A parsed final response head.
#[derive(Debug)]
pub struct Head {
    /// The status.
    pub status: StatusCode,
    /// The header fields as sent (framing fields included).
    pub headers: HeaderMap,
    /// How the body ends.
    pub length: Length,
    /// Whether the connection may carry another request afterwards.
    pub keep_alive: bool,
}

/// The result of parsing the start of the read buffer.
#[derive(Debug)]
pub enum Parsed {
    /// More bytes are needed.
    Partial,
    /// An interim 1xx response of this many bytes, to be skipped.
    Interim(usize),
    /// The final head; its bytes have been taken off the buffer.
    Final(Head),
}

/// How the body of a request sent upstream is framed. It is decided from
/// the body the gateway actually sends, never from the client's fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BodyFraming {
    /// No body and no framing field (a `GET` without a body).
    None,
    /// `Content-Length` with this exact size.
    Length(u64),
    /// `Transfer-Encoding: chunked`: the size is not known in advance.
    Chunked,
}

/// The head of a request to an upstream, as typed parts.
#[derive(Debug)]
pub struct RequestHead<'a> {
    /// The method.
    pub method: &'a Method,
    /// The target's path in parts written one after the other (the
    /// service's base path, then the request's path after its route's
    /// stripped prefix); each is already a valid URI path part.
    pub path: [&'a str; 2],
    /// The query, without `?`.
    pub query: Option<&'a str>,
    /// The header fields. Framing fields among them are never written.
    pub headers: &'a HeaderMap,
    /// Fields written after `headers`: the ones the gateway adds that no
    /// earlier hop set (cheaper than inserting them into the map).
    pub added: &'a crate::headers::Added,
    /// The framing field, from the body that is sent.
    pub framing: BodyFraming,
}

/// The bytes of a request head besides its method, target and fields: the
/// request line's spaces and version, the longest framing field, the blank
/// line.
pub const FRAMING_ROOM: usize = 64;

/// Writes a whole request head: the request line, the fields, the framing
/// field of `head.framing` (and no other: a client's `Content-Length` or
/// `Transfer-Encoding` is never copied), and the blank line. Names and
/// values come from `http` types, which cannot hold CR or LF.
pub fn encode_request_head(out: &mut Vec<u8>, head: &RequestHead<'_>) {
    out.extend_from_slice(head.method.as_str().as_bytes());
    out.push(b' ');
    for part in head.path {
        out.extend_from_slice(part.as_bytes());
    }
    if let Some(query) = head.query {
        out.push(b'?');
        out.extend_from_slice(query.as_bytes());
    }
    out.extend_from_slice(b" HTTP/1.1\r\n");
    for (name, value) in head.headers {
        if name != CONTENT_LENGTH && name != TRANSFER_ENCODING {
            encode_field(out, name.as_str().as_bytes(), value.as_bytes());
        }
    }
    head.added
        .each(|name, value| encode_field(out, name, value));
    match head.framing {
        BodyFraming::None => {}
        BodyFraming::Length(len) => {
            out.extend_from_slice(b"content-length: ");
            encode_decimal(out, len);
            out.extend_from_slice(b"\r\n");
        }
        BodyFraming::Chunked => encode_field(out, b"transfer-encoding", b"chunked"),
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes `n` in decimal digits.
fn encode_decimal(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut start = digits.len();
    loop {
        start -= 1;
        digits[start] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[start..]);
}

/// Writes one header line.
pub fn encode_field(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// Writes the header fields of `headers` and the blank line that ends the
/// head. Header names and values come from `http` types, which cannot hold
/// CR or LF.
pub fn encode_fields(out: &mut Vec<u8>, headers: &HeaderMap) {
    for (name, value) in headers {
        encode_field(out, name.as_str().as_bytes(), value.as_bytes());
    }
    out.extend_from_slice(b"\r\n");
}

/// Writes one chunk of a chunked request body (`len` in hex, CRLF, data, CRLF).
pub fn encode_chunk(out: &mut Vec<u8>, data: &[u8]) {
    use std::io::Write;
    if data.is_empty() {
        return; // an empty chunk would end the body
    }
    let _ = write!(out, "{:x}\r\n", data.len()); // writing to a Vec cannot fail
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
}

/// The last chunk and the empty trailer section.
pub const LAST_CHUNK: &[u8] = b"0\r\n\r\n";

/// Parses a response head at the start of `buf`. A final head is taken off
/// `buf` (header values share its memory); an interim one is left for the
/// caller to skip. `head_request` says the request was `HEAD`.
pub fn parse_head(buf: &mut BytesMut, head_request: bool) -> Result<Parsed, H1Error> {
    // Uninitialised slots: zeroing 128 of them would cost more than the parse.
    let mut slots = [const { std::mem::MaybeUninit::uninit() }; MAX_HEADERS];
    let mut response = httparse::Response::new(&mut []);
    let parsed = httparse::ParserConfig::default().parse_response_with_uninit_headers(
        &mut response,
        buf,
        &mut slots,
    );
    let len = match parsed {
        Ok(httparse::Status::Complete(len)) => len,
        Ok(httparse::Status::Partial) if buf.len() >= MAX_HEAD_BYTES => {
            return Err(H1Error::Head("head too large"));
        }
        Ok(httparse::Status::Partial) => return Ok(Parsed::Partial),
        Err(httparse::Error::TooManyHeaders) => return Err(H1Error::Head("too many headers")),
        Err(_) => return Err(H1Error::Head("not an HTTP/1.x response")),
    };
    let code = response.code.unwrap_or(0);
    let status = StatusCode::from_u16(code).map_err(|_| H1Error::Head("bad status code"))?;
    if status.is_informational() {
        if code == 101 {
            return Err(H1Error::Head("protocol switch was not asked for"));
        }
        return Ok(Parsed::Interim(len));
    }
    let http11 = response.version == Some(1);
    let (fields, framing) = fields(buf.as_ptr() as usize, response.headers)?;
    let mut headers = header_map(buf.split_to(len).freeze(), fields)?;
    let (length, keep_alive) = framing.body_length(status, head_request, http11);
    if length != Length::Empty && framing.coded && framing.length.is_some() {
        // Transfer-Encoding wins over Content-Length, which is then dropped
        // (RFC 9112 §6.3 item 3).
        headers.remove(CONTENT_LENGTH);
    }
    Ok(Parsed::Final(Head {
        status,
        headers,
        length,
        keep_alive,
    }))
}

/// The framing facts of a response head, gathered in the one pass over it.
#[derive(Debug, Default)]
struct Framing {
    /// The `Content-Length`, when sent.
    length: Option<u64>,
    /// `Transfer-Encoding` was sent...
    coded: bool,
    /// ...and its last coding is `chunked`.
    chunked: bool,
    /// `Connection: close`.
    close: bool,
}

impl Framing {
    /// How the body ends (RFC 9112 §6.3) and whether the connection may be
    /// used again afterwards.
    fn body_length(&self, status: StatusCode, head_request: bool, http11: bool) -> (Length, bool) {
        let keep_alive = http11 && !self.close;
        if head_request || status == StatusCode::NO_CONTENT || status == StatusCode::NOT_MODIFIED {
            return (Length::Empty, keep_alive);
        }
        if self.coded {
            // Both framings at once: the connection is not reused either.
            let keep_alive = keep_alive && self.length.is_none();
            return if http11 && self.chunked {
                (Length::Chunked, keep_alive)
            } else {
                (Length::UntilClose, false)
            };
        }
        match self.length {
            Some(0) => (Length::Empty, keep_alive),
            Some(n) => (Length::Exact(n), keep_alive),
            None => (Length::UntilClose, false),
        }
    }
}

/// A field's name and where its value lies in the head.
type Field = (HeaderName, std::ops::Range<usize>);

/// The names of the parsed fields and where their values lie in the head
/// starting at `base` (so that they can share its memory), with the
/// framing facts read on the way: one pass, no lookups in a map afterwards.
fn fields(base: usize, parsed: &[httparse::Header<'_>]) -> Result<(Vec<Field>, Framing), H1Error> {
    let mut framing = Framing::default();
    let mut fields = Vec::with_capacity(parsed.len());
    for h in parsed {
        let name = match known_name(h.name.as_bytes()) {
            Some(name) => name.clone(),
            None => {
                HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| H1Error::Head("bad name"))?
            }
        };
        if name == CONTENT_LENGTH {
            content_length(h.value, &mut framing.length)?;
        } else if name == TRANSFER_ENCODING {
            framing.coded = true;
            framing.chunked = h
                .value
                .rsplit(|b| *b == b',')
                .next()
                .is_some_and(|c| c.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name == CONNECTION {
            let mut only_this_connection = true;
            for token in h.value.split(|b| *b == b',').map(<[u8]>::trim_ascii) {
                if token.eq_ignore_ascii_case(b"close") {
                    framing.close = true;
                } else if !token.eq_ignore_ascii_case(b"keep-alive") && !token.is_empty() {
                    only_this_connection = false;
                }
            }
            // `Connection: keep-alive` (or `close`) is about this
            // connection only and goes no further: read, not kept (the
            // hop-by-hop rules would take it out again at once).
            if only_this_connection {
                continue;
            }
        } else if name.as_str() == "keep-alive" {
            continue;
        }
        let start = h.value.as_ptr() as usize - base;
        fields.push((name, start..start + h.value.len()));
    }
    Ok((fields, framing))
}

/// The names most responses carry, by length, each with its bytes:
/// matched in a few comparisons instead of `HeaderName::from_bytes`'s
/// lower-casing and table walk (and, for a name outside its standard set,
/// an allocation).
type Known = (&'static [u8], HeaderName);
static KNOWN_4: [Known; 3] = [
    (b"date", header::DATE),
    (b"vary", header::VARY),
    (b"etag", header::ETAG),
];
static KNOWN_6: [Known; 1] = [(b"server", header::SERVER)];
static KNOWN_10: [Known; 1] = [(b"connection", CONNECTION)];
static KNOWN_12: [Known; 2] = [
    (b"content-type", header::CONTENT_TYPE),
    (b"x-request-id", dwp_core::headers::REQUEST_ID),
];
static KNOWN_13: [Known; 2] = [
    (b"cache-control", header::CACHE_CONTROL),
    (b"last-modified", header::LAST_MODIFIED),
];
static KNOWN_14: [Known; 1] = [(b"content-length", CONTENT_LENGTH)];
static KNOWN_17: [Known; 2] = [
    (b"transfer-encoding", TRANSFER_ENCODING),
    (b"x-accel-buffering", dwp_core::headers::ACCEL_BUFFERING),
];

/// The known name that is `name` in any case.
fn known_name(name: &[u8]) -> Option<&'static HeaderName> {
    let known: &'static [Known] = match name.len() {
        4 => &KNOWN_4,
        6 => &KNOWN_6,
        10 => &KNOWN_10,
        12 => &KNOWN_12,
        13 => &KNOWN_13,
        14 => &KNOWN_14,
        17 => &KNOWN_17,
        _ => return None,
    };
    let (_, found) = known.iter().find(|(bytes, _)| same_name(name, bytes))?;
    Some(found)
}

/// `name` is `known` (lower case letters, digits and `-`) in any case.
/// Setting bit 5 lower-cases a letter and leaves digits and `-` as they
/// are; of the other token characters httparse lets through in a name,
/// none becomes a letter, digit or `-`.
fn same_name(name: &[u8], known: &[u8]) -> bool {
    name.len() == known.len() && name.iter().zip(known).all(|(a, b)| a | 0x20 == *b)
}

/// The header map of a head whose bytes are `raw`, values sharing them.
fn header_map(raw: Bytes, fields: Vec<Field>) -> Result<HeaderMap, H1Error> {
    // Room for what the gateway adds (request id, CORS, SSE headers).
    let mut headers = HeaderMap::with_capacity(fields.len() + 8);
    for (name, range) in fields {
        let value = HeaderValue::from_maybe_shared(raw.slice(range))
            .map_err(|_| H1Error::Head("bad header value"))?;
        headers.append(name, value);
    }
    Ok(headers)
}

/// Adds one `Content-Length` field's values to `found`: every value, in this
/// field and the ones before, must be the same number.
fn content_length(value: &[u8], found: &mut Option<u64>) -> Result<(), H1Error> {
    for part in value.split(|b| *b == b',') {
        let part = part.trim_ascii();
        if part.is_empty() || part.len() > 19 || !part.iter().all(u8::is_ascii_digit) {
            return Err(H1Error::Head("bad Content-Length"));
        }
        let n = part.iter().fold(0u64, |n, d| n * 10 + u64::from(d - b'0'));
        if found.is_some_and(|f| f != n) {
            return Err(H1Error::Head("conflicting Content-Length"));
        }
        *found = Some(n);
    }
    Ok(())
}

/// What [`Chunked::decode`] found in the buffer.
#[derive(Debug, PartialEq, Eq)]
pub enum Decoded {
    /// Body bytes, taken off the buffer without copying.
    Data(Bytes),
    /// The buffer holds no complete piece; read more.
    NeedMore,
    /// The last chunk and the trailer section have been read.
    Done,
}

/// An incremental decoder of a chunked body: feed it the read buffer as
/// often as bytes arrive, in pieces of any size.
#[derive(Debug, Default)]
pub struct Chunked {
    state: State,
    /// The chunk size read so far.
    size: u64,
    /// Bytes of the current size line or trailer section seen so far.
    line: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Reading hex digits of a chunk size.
    #[default]
    Size,
    /// Past the size: extensions, up to the line end.
    Extension,
    /// After the CR of a size line.
    SizeLf,
    /// This many data bytes left in the current chunk.
    Data(u64),
    /// The CR after a chunk's data.
    DataCr,
    /// The LF after a chunk's data.
    DataLf,
    /// At the start of a trailer line (or of the final empty line).
    TrailerStart,
    /// Inside a trailer field line.
    Trailer,
    /// After the CR of a trailer line; `true` when the line was empty.
    TrailerLf(bool),
    /// After the final empty line.
    Done,
}

impl Chunked {
    /// Decodes what `buf` holds: body data, or the end.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Decoded, H1Error> {
        loop {
            if let State::Data(left) = self.state {
                if buf.is_empty() {
                    return Ok(Decoded::NeedMore);
                }
                let take = left.min(buf.len() as u64) as usize;
                let rest = left - take as u64;
                self.state = if rest == 0 {
                    State::DataCr
                } else {
                    State::Data(rest)
                };
                return Ok(Decoded::Data(buf.split_to(take).freeze()));
            }
            if self.state == State::Done {
                return Ok(Decoded::Done);
            }
            let Some(&byte) = buf.first() else {
                return Ok(Decoded::NeedMore);
            };
            buf.advance(1);
            self.line += 1;
            if self.line > MAX_CHUNK_LINE {
                return Err(H1Error::Body("chunk line or trailers too long"));
            }
            self.state = match (self.state, byte) {
                (State::Size, b) if b.is_ascii_hexdigit() => {
                    if self.line > 15 {
                        return Err(H1Error::Body("chunk size too large"));
                    }
                    self.size = self.size * 16 + u64::from(hex(b));
                    State::Size
                }
                (State::Size, _) if self.line == 1 => {
                    return Err(H1Error::Body("chunk size missing"));
                }
                (State::Size, b';' | b' ' | b'\t') => State::Extension,
                (State::Size | State::Extension, b'\r') => State::SizeLf,
                (State::Size, _) => return Err(H1Error::Body("bad chunk size")),
                (State::Extension, b'\n') => return Err(H1Error::Body("bare LF in chunk line")),
                (State::Extension, _) => State::Extension,
                (State::SizeLf, b'\n') => {
                    self.line = 0;
                    match std::mem::take(&mut self.size) {
                        0 => State::TrailerStart,
                        size => State::Data(size),
                    }
                }
                (State::DataCr, b'\r') => State::DataLf,
                (State::DataLf, b'\n') => {
                    self.line = 0;
                    State::Size
                }
                (State::TrailerStart, b'\r') => State::TrailerLf(true),
                (State::TrailerStart | State::Trailer, b'\n') => {
                    return Err(H1Error::Body("bare LF in trailers"));
                }
                (State::Trailer, b'\r') => State::TrailerLf(false),
                (State::TrailerStart | State::Trailer, _) => State::Trailer,
                (State::TrailerLf(true), b'\n') => State::Done,
                (State::TrailerLf(false), b'\n') => State::TrailerStart,
                _ => return Err(H1Error::Body("bad chunk framing")),
            };
        }
    }

    /// True once the last chunk and the trailers have been read.
    pub fn is_done(&self) -> bool {
        self.state == State::Done
    }
}

fn hex(b: u8) -> u8 {
    match b {
        b'0'..=b'9' => b - b'0',
        b'a'..=b'f' => b - b'a' + 10,
        _ => b - b'A' + 10,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str, head_request: bool) -> Result<Head, H1Error> {
        let mut buf = BytesMut::from(raw);
        match parse_head(&mut buf, head_request)? {
            Parsed::Final(head) => Ok(head),
            other => panic!("not a final head: {other:?}"),
        }
    }

    /// A response head, whether it answers a HEAD request, the length it
    /// gives and whether the connection is kept.
    const LENGTH_CASES: &[(&str, bool, Length, bool)] = &[
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            false,
            Length::Exact(5),
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n",
            false,
            Length::Empty,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\n",
            true,
            Length::Empty,
            true,
        ),
        (
            "HTTP/1.1 204 No Content\r\n\r\n",
            false,
            Length::Empty,
            true,
        ),
        (
            "HTTP/1.1 304 Not Modified\r\nContent-Length: 9\r\n\r\n",
            false,
            Length::Empty,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            Length::Chunked,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip, Chunked\r\n\r\n",
            false,
            Length::Chunked,
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked, gzip\r\n\r\n",
            false,
            Length::UntilClose,
            false,
        ),
        // Both: chunked wins, and the connection is not reused.
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
            Length::Chunked,
            false,
        ),
        ("HTTP/1.1 200 OK\r\n\r\n", false, Length::UntilClose, false),
        (
            "HTTP/1.1 200 OK\r\nContent-Length: 7, 7\r\nContent-Length: 7\r\n\r\n",
            false,
            Length::Exact(7),
            true,
        ),
        (
            "HTTP/1.1 200 OK\r\nConnection: keep-alive, Close\r\nContent-Length: 1\r\n\r\n",
            false,
            Length::Exact(1),
            false,
        ),
        (
            "HTTP/1.0 200 OK\r\nContent-Length: 1\r\n\r\n",
            false,
            Length::Exact(1),
            false,
        ),
    ];

    #[test]
    fn lengths_follow_rfc_9112_section_6_3() {
        let cases = LENGTH_CASES;
        for (raw, head_request, length, keep_alive) in cases {
            let h = head(raw, *head_request).unwrap_or_else(|e| panic!("{raw:?}: {e}"));
            assert_eq!(h.length, *length, "{raw:?}");
            assert_eq!(h.keep_alive, *keep_alive, "{raw:?}");
        }
        let both = head(
            "HTTP/1.1 200 OK\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(
            !both.headers.contains_key(CONTENT_LENGTH),
            "Content-Length dropped"
        );
    }

    #[test]
    fn connection_fields_about_this_connection_only_are_not_kept() {
        let kept = head(
            "HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nKeep-Alive: timeout=5\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(kept.keep_alive);
        assert!(!kept.headers.contains_key(CONNECTION));
        assert!(!kept.headers.contains_key("keep-alive"));
        let closed = head(
            "HTTP/1.1 200 OK\r\nConnection: Keep-Alive, close\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(!closed.keep_alive, "close is read before the field goes");
        assert!(!closed.headers.contains_key(CONNECTION));
        // A field that names others stays, for the hop-by-hop rules.
        let naming = head(
            "HTTP/1.1 200 OK\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\nContent-Length: 0\r\n\r\n",
            false,
        )
        .unwrap();
        assert!(!naming.keep_alive);
        assert_eq!(naming.headers[CONNECTION], "close, X-Secret");
    }

    #[test]
    fn bad_heads_are_errors_never_panics() {
        for raw in [
            "HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 5x\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: 99999999999999999999\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length:\r\n\r\n",
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\r\n",
            "HTTP/1.1 099 Low\r\n\r\n",
            "SSH-2.0-OpenSSH_9.2\r\n\r\n",
            "HTTP/1.1 200 OK\r\nBad Name: x\r\n\r\n",
        ] {
            let mut buf = BytesMut::from(raw);
            assert!(parse_head(&mut buf, false).is_err(), "{raw:?}");
        }
        let mut many = String::from("HTTP/1.1 200 OK\r\n");
        for i in 0..200 {
            many.push_str(&format!("X-{i}: v\r\n"));
        }
        many.push_str("\r\n");
        assert_eq!(
            parse_head(&mut BytesMut::from(many.as_str()), false).unwrap_err(),
            H1Error::Head("too many headers")
        );
        let huge = format!("HTTP/1.1 200 OK\r\nX: {}", "a".repeat(MAX_HEAD_BYTES));
        assert!(parse_head(&mut BytesMut::from(huge.as_str()), false).is_err());
    }

    #[test]
    fn partial_and_interim_heads() {
        let raw = "HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: 1\r\nX-A: 2\r\n\r\nok";
        for cut in 0..raw.len() {
            let mut buf = BytesMut::from(&raw[..cut]);
            match parse_head(&mut buf, false).unwrap() {
                Parsed::Partial => {}
                Parsed::Interim(len) => assert_eq!(len, 25),
                Parsed::Final(h) => panic!("final head from a prefix: {h:?}"),
            }
        }
        let mut buf = BytesMut::from(raw);
        let Parsed::Interim(len) = parse_head(&mut buf, false).unwrap() else {
            panic!("interim expected")
        };
        let _ = buf.split_to(len);
        let Parsed::Final(h) = parse_head(&mut buf, false).unwrap() else {
            panic!("final expected")
        };
        assert_eq!(h.status, StatusCode::CREATED);
        let values: Vec<_> = h.headers.get_all("x-a").iter().collect();
        assert_eq!(values, ["1", "2"], "repeated fields kept in order");
        assert_eq!(&buf[..], b"ok", "only the head is taken off the buffer");
    }

    #[test]
    fn known_names_match_in_any_case_and_nothing_else() {
        let lists: [&[Known]; 7] = [
            &KNOWN_4, &KNOWN_6, &KNOWN_10, &KNOWN_12, &KNOWN_13, &KNOWN_14, &KNOWN_17,
        ];
        for (bytes, name) in lists.into_iter().flatten() {
            assert_eq!(*bytes, name.as_str().as_bytes());
            let upper = name.as_str().to_ascii_uppercase();
            assert_eq!(known_name(upper.as_bytes()), Some(name));
            assert_eq!(&HeaderName::from_bytes(upper.as_bytes()).unwrap(), name);
            let mut near = name.as_str().as_bytes().to_vec();
            *near.last_mut().unwrap() ^= 1;
            assert_eq!(known_name(&near), None, "{near:?}");
        }
        // Every token character (what httparse lets through in a name) is
        // told apart from the known names' characters, whatever its case.
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        for known in b'a'..=b'z' {
            for b in (0..=255u8).filter(|b| token(*b)) {
                let same = b.to_ascii_lowercase() == known;
                assert_eq!(same_name(&[b], &[known]), same, "{b} {known}");
            }
        }
        for known in (b'0'..=b'9').chain([b'-']) {
            for b in (0..=255u8).filter(|b| token(*b)) {
                assert_eq!(same_name(&[b], &[known]), b == known, "{b} {known}");
            }
        }
        assert_eq!(known_name(b""), None);
        assert_eq!(known_name(b"x-custom-field"), None);
        // Parsed heads get the same names either way.
        let mut buf = BytesMut::from(&b"HTTP/1.1 200 OK\r\nDATE: x\r\nX-Accel-Buffering: no\r\nX-Other: 1\r\nContent-Length: 0\r\n\r\n"[..]);
        let Ok(Parsed::Final(head)) = parse_head(&mut buf, false) else {
            panic!("not parsed");
        };
        let names: Vec<&str> = head.headers.keys().map(HeaderName::as_str).collect();
        assert_eq!(
            names,
            ["date", "x-accel-buffering", "x-other", "content-length"]
        );
    }

    #[test]
    fn request_heads_and_chunks_are_encoded() {
        let mut h = HeaderMap::new();
        h.insert("host", HeaderValue::from_static("up:9000"));
        h.append("x-a", HeaderValue::from_static("1"));
        h.append("x-a", HeaderValue::from_static("2"));
        // A client's framing fields are never written: only the body's.
        h.insert("content-length", HeaderValue::from_static("5"));
        h.insert("transfer-encoding", HeaderValue::from_static("chunked"));
        let mut added = crate::headers::Added::default();
        crate::headers::add_forwarded(
            &mut h.clone(),
            &HeaderValue::from_static("10.0.0.1"),
            "/api",
            0,
            &mut added,
        );
        let encode = |framing| {
            let mut out = Vec::new();
            let head = RequestHead {
                method: &Method::POST,
                path: ["/aura", "/x"],
                query: Some("q=1"),
                headers: &h,
                added: &added,
                framing,
            };
            encode_request_head(&mut out, &head);
            String::from_utf8(out).unwrap()
        };
        let fields = "host: up:9000\r\nx-a: 1\r\nx-a: 2\r\nx-forwarded-for: 10.0.0.1\r\nx-forwarded-proto: http\r\nx-forwarded-host: up:9000\r\nx-forwarded-prefix: /api\r\n";
        assert_eq!(
            encode(BodyFraming::Length(1234567890)),
            format!("POST /aura/x?q=1 HTTP/1.1\r\n{fields}content-length: 1234567890\r\n\r\n")
        );
        assert_eq!(
            encode(BodyFraming::Length(0)),
            format!("POST /aura/x?q=1 HTTP/1.1\r\n{fields}content-length: 0\r\n\r\n")
        );
        assert_eq!(
            encode(BodyFraming::Chunked),
            format!("POST /aura/x?q=1 HTTP/1.1\r\n{fields}transfer-encoding: chunked\r\n\r\n")
        );
        assert_eq!(
            encode(BodyFraming::None),
            format!("POST /aura/x?q=1 HTTP/1.1\r\n{fields}\r\n")
        );
        let mut out = Vec::new();
        encode_chunk(&mut out, b"");
        encode_chunk(&mut out, &[b'x'; 26]);
        encode_chunk(&mut out, b"abc");
        out.extend_from_slice(LAST_CHUNK);
        let mut decoder = Chunked::default();
        let mut buf = BytesMut::from(&out[..]);
        assert_eq!(
            decode_all(&mut decoder, &mut buf).unwrap(),
            [vec![b'x'; 26], b"abc".to_vec()].concat()
        );
        assert!(out.starts_with(b"1a\r\n"));
    }

    fn decode_all(decoder: &mut Chunked, buf: &mut BytesMut) -> Result<Vec<u8>, H1Error> {
        let mut body = Vec::new();
        loop {
            match decoder.decode(buf)? {
                Decoded::Data(d) => body.extend_from_slice(&d),
                Decoded::NeedMore | Decoded::Done => return Ok(body),
            }
        }
    }

    /// Feeds `raw` split at `cut` and byte by byte; returns the body and
    /// whether the decoder finished.
    fn feed(raw: &[u8], pieces: &[usize]) -> Result<(Vec<u8>, bool, Vec<u8>), H1Error> {
        let mut decoder = Chunked::default();
        let mut buf = BytesMut::new();
        let mut body = Vec::new();
        let mut at = 0;
        for &end in pieces.iter().chain(std::iter::once(&raw.len())) {
            buf.extend_from_slice(&raw[at..end.max(at)]);
            at = end.max(at);
            body.extend(decode_all(&mut decoder, &mut buf)?);
        }
        Ok((body, decoder.is_done(), buf.to_vec()))
    }

    #[test]
    fn chunked_bodies_decode_the_same_however_they_are_split() {
        let raw = b"5;name=value\r\nhello\r\n1A\r\nabcdefghijklmnopqrstuvwxyz\r\n0\r\nX-Trailer: 1\r\n\r\nNEXT";
        let want = b"helloabcdefghijklmnopqrstuvwxyz".to_vec();
        for cut in 0..raw.len() {
            let (body, done, rest) = feed(raw, &[cut]).unwrap();
            assert_eq!(body, want, "cut at {cut}");
            assert!(done);
            assert_eq!(rest, b"NEXT", "bytes after the body are left in the buffer");
        }
        let every: Vec<usize> = (1..raw.len()).collect();
        let (body, done, _) = feed(raw, &every).unwrap();
        assert_eq!((body, done), (want, true));
        let (body, done, _) = feed(b"3\r\nabc\r\n", &[]).unwrap();
        assert_eq!(
            (body, done),
            (b"abc".to_vec(), false),
            "not done before the last chunk"
        );
    }

    #[test]
    fn broken_chunked_bodies_are_errors() {
        for raw in [
            &b"\r\n"[..],
            b"x\r\n",
            b"5\nhello\r\n0\r\n\r\n",
            b"5\r\nhelloXX0\r\n\r\n",
            b"1000000000000000\r\n",
            b"5;ext\nhello",
            b"0\r\nX: 1\n\r\n",
        ] {
            assert!(
                feed(raw, &[]).is_err(),
                "{:?}",
                String::from_utf8_lossy(raw)
            );
        }
        let long_ext = format!("5;{}\r\nhello\r\n", "e".repeat(MAX_CHUNK_LINE));
        assert!(feed(long_ext.as_bytes(), &[]).is_err());
        let big = format!("{:x}\r\n", u64::MAX >> 4);
        assert!(
            feed(big.as_bytes(), &[]).is_ok(),
            "fifteen hex digits are a size"
        );
    }
}
