//! The request body on its way upstream: streamed frame by frame, never
//! collected, cut off with [`BodyTooLarge`] past `GATEWAY_MAX_BODY_BYTES`.
//! For POSTs to Aura-Platform it also keeps a bounded copy, to log a preview
//! at DEBUG and warn when the JSON lacks `prompt` or `context` once the body
//! has gone through.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use http_body::{Body, Frame, SizeHint};
use hyper::body::Incoming;

use crate::BoxError;

/// Characters of body shown in the DEBUG preview.
pub const PREVIEW_CHARS: usize = 500;

/// Bytes of an Aura POST body kept for the `prompt`/`context` check.
const CHECK_MAX_BYTES: usize = 256 * 1024;

/// The body went over the configured limit.
#[derive(Debug, thiserror::Error)]
#[error("request body exceeds {0} bytes")]
pub struct BodyTooLarge(pub u64);

/// A streamed request body with a size limit and an optional preview.
#[derive(Debug)]
pub struct RequestBody {
    inner: Incoming,
    limit: u64,
    seen: u64,
    preview: Option<Vec<u8>>,
}

impl RequestBody {
    /// Wraps `inner`; `preview` turns on the Aura body logging.
    pub fn new(inner: Incoming, limit: u64, preview: bool) -> Self {
        Self {
            inner,
            limit,
            seen: 0,
            preview: preview.then(Vec::new),
        }
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
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.seen += data.len() as u64;
                    if this.seen > this.limit {
                        this.preview = None;
                        return Poll::Ready(Some(Err(Box::new(BodyTooLarge(this.limit)))));
                    }
                    if let Some(copy) = &mut this.preview {
                        let room = CHECK_MAX_BYTES.saturating_sub(copy.len());
                        copy.extend_from_slice(&data[..data.len().min(room)]);
                    }
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Ready(Some(Err(e))) => {
                this.preview = None;
                Poll::Ready(Some(Err(Box::new(e))))
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
