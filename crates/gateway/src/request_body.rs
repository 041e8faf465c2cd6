//! The request body on its way upstream: cut off with [`BodyTooLarge`]
//! past `GATEWAY_MAX_BODY_BYTES` and with [`BodyTimeout`] when it has not
//! all arrived within `GATEWAY_BODY_READ_TIMEOUT_SECS`. Its first
//! [`PREFETCH_BYTES`] are read before an upstream connection is taken
//! ([`RequestBody::prefetch`]), so a client that sends nothing holds no
//! upstream connection, and a body that fits is sent with its exact length.
//! Past the prefetch, while an upstream connection waits on it, the body
//! must keep `GATEWAY_BODY_MIN_BYTES_PER_SEC` after [`PACE_GRACE`] (else
//! [`BodyTimeout`], 408): a client that sends 64 KiB at once and trickles
//! the rest holds no upstream connection for long.
//! For POSTs to Aura-Platform it also keeps a bounded copy, to log a preview
//! at DEBUG and warn when the JSON lacks `prompt` or `context` once the body
//! has gone through.

use std::collections::VecDeque;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;
use tokio::time::Sleep;

use crate::BoxError;

/// Characters of body shown in the DEBUG preview.
pub const PREVIEW_CHARS: usize = 500;

/// Bytes of an Aura POST body kept for the `prompt`/`context` check.
const CHECK_MAX_BYTES: usize = 256 * 1024;

/// Body bytes read from the client before an upstream connection is taken.
pub const PREFETCH_BYTES: usize = 64 * 1024;

/// How long a body streaming upstream may lag behind the minimum pace
/// before it is cut off.
pub const PACE_GRACE: std::time::Duration = std::time::Duration::from_secs(1);

/// The body did not arrive within `GATEWAY_BODY_READ_TIMEOUT_SECS`, or
/// fell below `GATEWAY_BODY_MIN_BYTES_PER_SEC` while streaming upstream.
#[derive(Debug, thiserror::Error)]
#[error("request body not received in time")]
pub struct BodyTimeout;

/// The body went over the configured limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// A streamed request body with a size limit, a read deadline and an
/// optional preview.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    limit: u64,
    seen: u64,
    preview: Option<Vec<u8>>,
    /// Data read by [`Self::prefetch`] and not yet handed on.
    front: VecDeque<Bytes>,
    /// Bytes in `front`.
    front_len: u64,
    /// The client's body has ended (everything left is in `front`).
    ended: bool,
    /// How long the whole body may take.
    timeout: std::time::Duration,
    /// The timer for `timeout`, armed only when the client keeps us waiting.
    timer: Option<Pin<Box<Sleep>>>,
    /// `GATEWAY_BODY_MIN_BYTES_PER_SEC` (0: none).
    min_rate: u64,
    /// When the body began streaming upstream (past the prefetch), and the
    /// bytes read from the client since.
    streaming: Option<(tokio::time::Instant, u64)>,
    /// The timer of the minimum pace, armed only when the client keeps an
    /// upstream connection waiting.
    pace: Option<Pin<Box<Sleep>>>,
}

impl RequestBody {
    /// Wraps `inner`; `preview` turns on the Aura body logging; the whole
    /// body must arrive within `timeout` of the first wait for it.
    pub fn new(inner: Incoming, limit: u64, preview: bool, timeout: std::time::Duration) -> Self {
        let ended = inner.is_end_stream();
        Self {
            inner,
            limit,
            seen: 0,
            preview: preview.then(Vec::new),
            front: VecDeque::new(),
            front_len: 0,
            ended,
            timeout,
            timer: None,
            min_rate: 0,
            streaming: None,
            pace: None,
        }
    }

    /// Holds the body to `bytes_per_sec` once it streams upstream (0: no pace).
    #[must_use]
    pub fn with_min_rate(mut self, bytes_per_sec: u64) -> Self {
        self.min_rate = bytes_per_sec;
        self
    }

    /// Reads the body until it ends or at least `max` bytes wait in memory.
    /// Afterwards, a body that ended has an exact size.
    pub async fn prefetch(&mut self, max: usize) -> Result<(), crate::BoxError> {
        while !self.ended && self.front_len < max as u64 {
            match std::future::poll_fn(|cx| self.poll_client(cx)).await {
                Some(Ok(data)) => {
                    self.front_len += data.len() as u64;
                    self.front.push_back(data);
                }
                Some(Err(e)) => return Err(e),
                None => break,
            }
        }
        Ok(())
    }

    /// True when the client's body has ended: what is left is in memory.
    pub fn is_whole(&self) -> bool {
        self.ended || self.inner.is_end_stream()
    }

    /// Appends what is in memory to `out` (the request head, so that a
    /// small request is one write).
    pub fn drain_into(&mut self, out: &mut Vec<u8>) {
        for data in self.front.drain(..) {
            out.extend_from_slice(&data);
        }
        self.front_len = 0;
    }

    /// The next data from the client, with the limit, the deadline and the
    /// preview applied; trailers are dropped (hop-by-hop here).
    fn poll_client(
        &mut self,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, crate::BoxError>>> {
        loop {
            if self.ended {
                return Poll::Ready(None);
            }
            match Pin::new(&mut self.inner).poll_frame(cx) {
                Poll::Ready(Some(Ok(frame))) => {
                    let Ok(data) = frame.into_data() else {
                        continue;
                    };
                    self.seen += data.len() as u64;
                    if let Some((_, streamed)) = &mut self.streaming {
                        *streamed += data.len() as u64;
                    }
                    if self.seen > self.limit {
                        self.preview = None;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge(self.limit)))));
                    }
                    if let Some(copy) = &mut self.preview {
                        let room = CHECK_MAX_BYTES.saturating_sub(copy.len());
                        copy.extend_from_slice(&data[..data.len().min(room)]);
                    }
                    return Poll::Ready(Some(Ok(data)));
                }
                Poll::Ready(None) => {
                    self.ended = true;
                    return Poll::Ready(None);
                }
                Poll::Ready(Some(Err(e))) => {
                    self.preview = None;
                    return Poll::Ready(Some(Err(Box::new(e))));
                }
                Poll::Pending => {
                    // Armed the first time the client keeps us waiting (no
                    // clock read for a body that is already here).
                    let timeout = self.timeout;
                    let timer = self
                        .timer
                        .get_or_insert_with(|| Box::pin(tokio::time::sleep(timeout)));
                    if timer.as_mut().poll(cx).is_ready() || self.too_slow(cx) {
                        self.preview = None;
                        return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                    }
                    return Poll::Pending;
                }
            }
        }
    }

    /// True when a body streaming upstream is behind the minimum pace; else
    /// the pace timer is set for when it would be.
    fn too_slow(&mut self, cx: &mut Context<'_>) -> bool {
        let Some((since, streamed)) = self.streaming else {
            return false;
        };
        if self.min_rate == 0 {
            return false;
        }
        let allowed = std::time::Duration::from_secs_f64(streamed as f64 / self.min_rate as f64);
        let due = since + PACE_GRACE + allowed;
        let pace = self
            .pace
            .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
        if pace.deadline() != due {
            pace.as_mut().reset(due);
        }
        pace.as_mut().poll(cx).is_ready()
    }

    fn log_preview(&mut self) {
        let Some(copy) = self.preview.take() else {
            return;
        };
        let text = String::from_utf8_lossy(&copy);
        let mut preview: String = text.chars().take(PREVIEW_CHARS).collect();
        if self.seen as usize > preview.len() {
            preview.push_str("... (truncated)");
        }
        tracing::debug!(length = self.seen, "Request body: {preview}");
        if copy.len() < CHECK_MAX_BYTES {
            let json: Option<serde_json::Map<String, serde_json::Value>> =
                serde_json::from_slice(&copy).ok();
            let missing: Vec<&str> = ["prompt", "context"]
                .into_iter()
                .filter(|k| !json.as_ref().is_some_and(|m| m.contains_key(*k)))
                .collect();
            if !missing.is_empty() {
                tracing::warn!(missing = ?missing, "Aura request body lacks required fields");
            }
        }
    }
}

impl Drop for RequestBody {
    /// The client drops the body once it is sent (a known length is never
    /// polled to its end), so the preview is written here.
    fn drop(&mut self) {
        self.log_preview();
    }
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = self.get_mut();
        if let Some(data) = this.front.pop_front() {
            this.front_len -= data.len() as u64;
            return Poll::Ready(Some(Ok(Frame::data(data))));
        }
        if this.streaming.is_none() && !this.ended && this.min_rate > 0 {
            // An upstream connection now waits on the client (one clock
            // read, only for bodies larger than the prefetch).
            this.streaming = Some((tokio::time::Instant::now(), 0));
        }
        this.poll_client(cx)
            .map(|next| next.map(|r| r.map(Frame::data)))
    }

    fn is_end_stream(&self) -> bool {
        self.front.is_empty() && (self.ended || self.inner.is_end_stream())
    }

    /// Exact when the client's body ended or announced its length (hyper
    /// holds the client to it), so the upstream framing comes from it.
    fn size_hint(&self) -> SizeHint {
        if self.ended {
            return SizeHint::with_exact(self.front_len);
        }
        let rest = self.inner.size_hint();
        match rest.exact() {
            Some(n) => SizeHint::with_exact(n + self.front_len),
            None => {
                let mut hint = SizeHint::new();
                hint.set_lower(rest.lower() + self.front_len);
                hint
            }
        }
    }
}
