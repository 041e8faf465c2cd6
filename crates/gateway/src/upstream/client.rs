//! HTTP/1.1 to the upstream, driven by the request's own task: no second
//! task per connection and no channel between the request and its
//! connection, so a proxied request costs one task's wake-ups, like nginx.
//!
//! [`exchange`] writes the request head and streams the body while it
//! watches for the response head (an upstream may answer before it has read
//! the whole body); the response body is an [`UpstreamBody`] that reads the
//! socket only when the client side polls it, and returns the connection to
//! the pool the moment the last byte is read. The wire is [`crate::h1`]'s;
//! whatever an upstream sends that is not HTTP/1.1 is 502, never a panic.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll, ready};

use bytes::{Bytes, BytesMut};
use http::{HeaderMap, Method, Response, Uri, Version};
use http_body::{Body, Frame, SizeHint};
use http_body_util::BodyExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::WriteHalf;

use crate::BoxError;
use crate::error::GatewayError;
use crate::h1::{self, BodyFraming, Chunked, Decoded, H1Error, Length, Parsed, RequestHead};
use crate::headers::Added;
use crate::request_body::{BodyTimeout, BodyTooLarge, PREFETCH_BYTES, RequestBody};
use crate::upstream::pool::{Conn, Pool, READ_BUFFER};

/// Request bodies at least this large are written as they are, not copied
/// into the write buffer.
const COPY_LIMIT: usize = 16 * 1024;

/// A request on its way upstream, as typed parts: the proxy edits them, and
/// [`exchange`] encodes the head once the body's framing is known.
pub struct Outgoing {
    /// The method.
    pub method: Method,
    /// Where it goes on the upstream.
    pub target: Target,
    /// The header fields, hop-by-hop ones already removed.
    pub headers: HeaderMap,
    /// Fields added after `headers` ([`crate::headers::Added`]).
    pub added: Added,
    /// The client's body.
    pub body: RequestBody,
}

/// The request target on the upstream: the service's base path, then the
/// client's path after its route's stripped prefix, then the query.
pub struct Target {
    /// The service URI's path, without a trailing `/`.
    pub base: &'static str,
    /// The client's request URI.
    pub uri: Uri,
    /// How many bytes of the path the route strips.
    pub stripped: usize,
}

impl Target {
    /// The path after the stripped prefix; `/` when nothing is left.
    pub fn path(&self) -> &str {
        match self.uri.path().get(self.stripped..) {
            Some(rest) if !rest.is_empty() => rest,
            _ => "/",
        }
    }
}

/// Sends `req` on a pooled or new connection and returns the response head
/// with a body that streams from the connection.
///
/// The body's first [`PREFETCH_BYTES`] are read before a connection is
/// taken. The framing sent upstream comes only from the body that is sent:
/// `Content-Length` with its exact size (a body that fit in the prefetch,
/// or one whose length the client announced and hyper holds it to), else
/// chunked; the client's own framing fields are never copied.
///
/// A request whose pooled connection turns out to have been closed by the
/// upstream before any answer (the keep-alive race) is sent once more on a
/// new connection when it is idempotent and wholly in memory.
pub async fn exchange(
    pool: &Arc<Pool>,
    worker: usize,
    mut req: Box<Outgoing>,
) -> Result<Response<UpstreamBody>, GatewayError> {
    if !req.body.is_end_stream() {
        req.body
            .prefetch(PREFETCH_BYTES)
            .await
            .map_err(|e| Failure::Body(e).into_error(pool.name()))?;
    }
    let mut head = encode_head(&req);
    let head_request = req.method == Method::HEAD;
    if req.body.is_whole() {
        // The whole request is in memory: one write, and it can be sent again.
        req.body.drain_into(&mut head);
        return send_whole(pool, worker, &head, &req.method).await;
    }
    let chunked = req.body.size_hint().exact().is_none();
    let mut conn = pool.checkout(worker).await?;
    let parsed = stream_and_read(&mut conn, head, &mut req.body, chunked, head_request)
        .await
        .map_err(|f| f.into_error(conn.upstream()))?;
    Ok(respond(conn, parsed))
}

/// The request head, its framing from the body that is sent.
fn encode_head(req: &Outgoing) -> Vec<u8> {
    let framing = match req.body.size_hint().exact() {
        // Servers may refuse a POST without any framing (411).
        Some(0) if matches!(req.method, Method::POST | Method::PUT | Method::PATCH) => {
            BodyFraming::Length(0)
        }
        Some(0) => BodyFraming::None,
        Some(len) => BodyFraming::Length(len),
        None => BodyFraming::Chunked,
    };
    let (path, query) = (req.target.path(), req.target.uri.query());
    // The exact size (a regrowth costs more than the sums), with room for
    // a body that is wholly in memory and is appended to the head.
    let target_len = req.target.base.len() + path.len() + query.map_or(0, |q| q.len() + 1);
    let fields: usize = (req.headers.iter())
        .map(|(name, value)| name.as_str().len() + value.len() + 4)
        .sum();
    let body = match framing {
        BodyFraming::Length(len) if req.body.is_whole() => usize::try_from(len).unwrap_or(0),
        _ => 0,
    };
    let mut head = Vec::with_capacity(
        req.method.as_str().len()
            + target_len
            + fields
            + req.added.encoded_len()
            + h1::FRAMING_ROOM
            + body,
    );
    h1::encode_request_head(
        &mut head,
        &RequestHead {
            method: &req.method,
            path: [req.target.base, path],
            query,
            headers: &req.headers,
            added: &req.added,
            framing,
        },
    );
    head
}

/// Sends a request wholly in memory; once more on a new connection when a
/// pooled one turns out closed and the method is idempotent.
async fn send_whole(
    pool: &Arc<Pool>,
    worker: usize,
    request: &[u8],
    method: &Method,
) -> Result<Response<UpstreamBody>, GatewayError> {
    let head_request = *method == Method::HEAD;
    let mut conn = pool.checkout(worker).await?;
    match write_and_read(&mut conn, request, head_request).await {
        Ok(parsed) => Ok(respond(conn, parsed)),
        Err(Failure::Io(e)) if conn.reused && replayable(method) => {
            tracing::debug!(upstream = pool.name(), error = %e, "pooled connection was closed: retrying on a new one");
            drop(conn); // its budget permit goes back first
            let mut conn = pool.connect_new(worker).await?;
            let parsed = write_and_read(&mut conn, request, head_request)
                .await
                .map_err(|f| f.into_error(conn.upstream()))?;
            Ok(respond(conn, parsed))
        }
        Err(f) => Err(f.into_error(conn.upstream())),
    }
}

/// Idempotent methods (RFC 9110 §9.2.2): safe to send again.
fn replayable(method: &Method) -> bool {
    matches!(
        *method,
        Method::GET | Method::HEAD | Method::OPTIONS | Method::PUT | Method::DELETE | Method::TRACE
    )
}

/// Why an exchange failed.
enum Failure {
    /// The connection broke before a response head arrived.
    Io(std::io::Error),
    /// The upstream sent something that is not an HTTP/1.1 response.
    Protocol(H1Error),
    /// The client's body failed: too large, or the client went away.
    Body(BoxError),
}

impl Failure {
    fn into_error(self, upstream: &'static str) -> GatewayError {
        match self {
            Self::Io(e) => {
                tracing::warn!(upstream, error = %e, "upstream exchange failed");
                GatewayError::UpstreamUnavailable(upstream)
            }
            Self::Protocol(e) => {
                tracing::warn!(upstream, error = %e, "upstream answered with a malformed response");
                GatewayError::UpstreamUnavailable(upstream)
            }
            Self::Body(e) => {
                if let Some(too_large) = e.downcast_ref::<BodyTooLarge>() {
                    GatewayError::PayloadTooLarge(too_large.0)
                } else if e.is::<BodyTimeout>() {
                    GatewayError::RequestTimeout
                } else {
                    GatewayError::BadRequest("Request body could not be read".into())
                }
            }
        }
    }
}

/// A response head and whether the whole request was written.
struct Answer {
    head: h1::Head,
    request_complete: bool,
}

/// Writes a request without a body and reads the response head.
async fn write_and_read(
    conn: &mut Conn,
    head: &[u8],
    head_request: bool,
) -> Result<Answer, Failure> {
    conn.io.write_all(head).await.map_err(Failure::Io)?;
    let Conn { io, buf, .. } = conn;
    read_head(io, buf, head_request).await.map(|head| Answer {
        head,
        request_complete: true,
    })
}

/// Writes the head and streams the body while watching for the response
/// head. An answer that comes before the body is written ends the writing
/// (and the connection is not reused); a write the upstream refuses is not an
/// error until the response head fails to come too.
async fn stream_and_read(
    conn: &mut Conn,
    head: Vec<u8>,
    body: &mut RequestBody,
    chunked: bool,
    head_request: bool,
) -> Result<Answer, Failure> {
    let Conn { io, buf, .. } = conn;
    let (mut reader, mut writer) = io.split();
    let write = write_body(&mut writer, head, body, chunked);
    let read = read_head(&mut reader, buf, head_request);
    tokio::pin!(write, read);
    let mut request_complete = false;
    let mut writing = true;
    loop {
        tokio::select! {
            written = &mut write, if writing => {
                writing = false;
                match written {
                    Ok(()) => request_complete = true,
                    Err(Failure::Io(e)) => {
                        tracing::debug!(error = %e, "upstream stopped reading the request body");
                    }
                    Err(other) => return Err(other),
                }
            }
            head = &mut read => {
                return head.map(|head| Answer { head, request_complete });
            }
        }
    }
}

/// Writes the head, then the body frames: coalesced while more are ready at
/// once, chunk-framed when the length is unknown.
async fn write_body(
    writer: &mut WriteHalf<'_>,
    mut out: Vec<u8>,
    body: &mut RequestBody,
    chunked: bool,
) -> Result<(), Failure> {
    use futures_util::FutureExt;
    loop {
        let frame = match body.frame().now_or_never() {
            Some(frame) => frame,
            None => {
                writer.write_all(&out).await.map_err(Failure::Io)?;
                out.clear();
                body.frame().await
            }
        };
        match frame {
            None => break,
            Some(Err(e)) => return Err(Failure::Body(e)),
            Some(Ok(frame)) => {
                let Ok(data) = frame.into_data() else {
                    continue; // trailers are hop-by-hop here
                };
                if chunked {
                    h1::encode_chunk(&mut out, &data);
                } else if data.len() >= COPY_LIMIT {
                    writer.write_all(&out).await.map_err(Failure::Io)?;
                    out.clear();
                    writer.write_all(&data).await.map_err(Failure::Io)?;
                } else {
                    out.extend_from_slice(&data);
                }
            }
        }
    }
    if chunked {
        out.extend_from_slice(h1::LAST_CHUNK);
    }
    writer.write_all(&out).await.map_err(Failure::Io)
}

/// Interim (1xx) heads accepted before the final one; more is a broken
/// upstream (a `100 Continue` flood), answered with 502.
pub const MAX_INTERIM_HEADS: usize = 8;

/// Reads until a final response head has arrived; up to
/// [`MAX_INTERIM_HEADS`] interim 1xx heads are skipped.
async fn read_head<R: tokio::io::AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut BytesMut,
    head_request: bool,
) -> Result<h1::Head, Failure> {
    let mut interim = 0;
    loop {
        if !buf.is_empty() {
            match h1::parse_head(buf, head_request).map_err(Failure::Protocol)? {
                Parsed::Final(head) => return Ok(head),
                Parsed::Interim(len) => {
                    interim += 1;
                    if interim > MAX_INTERIM_HEADS {
                        return Err(Failure::Protocol(H1Error::Head(
                            "too many interim responses",
                        )));
                    }
                    let _ = buf.split_to(len);
                    continue;
                }
                Parsed::Partial => {}
            }
        }
        buf.reserve(READ_BUFFER);
        if reader.read_buf(buf).await.map_err(Failure::Io)? == 0 {
            return Err(Failure::Io(std::io::ErrorKind::UnexpectedEof.into()));
        }
    }
}

/// The response with its body on the connection.
fn respond(conn: Conn, answer: Answer) -> Response<UpstreamBody> {
    let Answer {
        head,
        request_complete,
    } = answer;
    let body = UpstreamBody::new(conn, head.length, head.keep_alive && request_complete);
    let mut response = Response::new(body);
    *response.status_mut() = head.status;
    *response.version_mut() = Version::HTTP_11;
    *response.headers_mut() = head.headers;
    response
}

/// How much of the body is left to read.
#[derive(Debug)]
enum Remaining {
    Exact(u64),
    Chunked(Chunked),
    UntilClose,
    Done,
}

/// A response body read from the upstream connection as the client side
/// polls it. Dropping it before the end closes the connection.
#[derive(Debug)]
pub struct UpstreamBody {
    conn: Option<Conn>,
    remaining: Remaining,
    keep_alive: bool,
}

/// The upstream connection ended or broke before the body did.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The connection closed before the announced end.
    #[error("upstream closed the connection before the body ended")]
    Truncated,
    /// Reading failed.
    #[error("upstream read failed: {0}")]
    Io(#[from] std::io::Error),
    /// The body's framing is broken.
    #[error(transparent)]
    Framing(#[from] H1Error),
}

impl UpstreamBody {
    fn new(conn: Conn, length: Length, keep_alive: bool) -> Self {
        let remaining = match length {
            Length::Empty => Remaining::Done,
            Length::Exact(n) => Remaining::Exact(n),
            Length::Chunked => Remaining::Chunked(Chunked::default()),
            Length::UntilClose => Remaining::UntilClose,
        };
        let mut body = Self {
            conn: Some(conn),
            remaining,
            keep_alive,
        };
        if matches!(body.remaining, Remaining::Done) {
            body.finish();
        }
        body
    }

    /// The last byte is read: the connection goes back to the pool or is closed.
    fn finish(&mut self) {
        self.remaining = Remaining::Done;
        if let Some(conn) = self.conn.take()
            && self.keep_alive
        {
            conn.release();
        }
    }

    /// The body ends here without the connection: it is closed, never reused.
    fn close(&mut self) {
        self.conn = None;
        self.remaining = Remaining::Done;
    }

    /// The next piece of body already in the buffer, if any.
    fn next_in_buffer(&mut self) -> Result<Option<Bytes>, BodyError> {
        let Some(conn) = self.conn.as_mut() else {
            return Ok(None);
        };
        let buf = &mut conn.buf;
        match &mut self.remaining {
            Remaining::Done => Ok(None),
            _ if buf.is_empty() => Ok(None),
            Remaining::Exact(left) => {
                let take = (*left).min(buf.len() as u64) as usize;
                *left -= take as u64;
                let data = buf.split_to(take).freeze();
                if *left == 0 {
                    self.finish();
                }
                Ok(Some(data))
            }
            Remaining::UntilClose => Ok(Some(buf.split().freeze())),
            Remaining::Chunked(decoder) => match decoder.decode(buf)? {
                Decoded::Data(data) => Ok(Some(data)),
                Decoded::NeedMore => Ok(None),
                Decoded::Done => {
                    self.finish();
                    Ok(None)
                }
            },
        }
    }
}

impl Body for UpstreamBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = self.get_mut();
        loop {
            match this.next_in_buffer() {
                Ok(Some(data)) => return Poll::Ready(Some(Ok(Frame::data(data)))),
                Ok(None) => {}
                Err(e) => {
                    this.close();
                    return Poll::Ready(Some(Err(e)));
                }
            }
            let Some(conn) = this.conn.as_mut() else {
                return Poll::Ready(None);
            };
            if matches!(this.remaining, Remaining::Done) {
                return Poll::Ready(None);
            }
            conn.buf.reserve(READ_BUFFER);
            let read = ready!(tokio_util::io::poll_read_buf(
                Pin::new(&mut conn.io),
                cx,
                &mut conn.buf
            ));
            match read {
                Ok(0) => {
                    let complete = matches!(this.remaining, Remaining::UntilClose);
                    this.close();
                    return Poll::Ready((!complete).then_some(Err(BodyError::Truncated)));
                }
                Ok(_) => {}
                Err(e) => {
                    this.close();
                    return Poll::Ready(Some(Err(e.into())));
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        matches!(self.remaining, Remaining::Done)
    }

    fn size_hint(&self) -> SizeHint {
        match self.remaining {
            Remaining::Done => SizeHint::with_exact(0),
            Remaining::Exact(n) => SizeHint::with_exact(n),
            _ => SizeHint::default(),
        }
    }
}
