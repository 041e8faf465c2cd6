//! The live feeds one replica holds, by owner ([`crate::hitl::feed`] opens
//! them and reads the shared stream into them): each feed is a bounded
//! channel; a feed whose buffer is full is dropped, so it ends and its
//! client resumes from its last id. Feeds per user and per replica are
//! capped (429).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::response::sse::Event;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::config::FeedLimits;
use crate::error::AppError;

/// Events a feed may have waiting before it is closed as too slow.
pub const BUFFER: usize = 256;

/// A stream entry id (`1700000000000-0`), ordered as Redis orders them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct EventId(pub u64, pub u64);

impl EventId {
    /// Parses `ms-seq`.
    pub fn parse(text: &str) -> Option<Self> {
        let (ms, seq) = text.trim().split_once('-')?;
        Some(Self(ms.parse().ok()?, seq.parse().ok()?))
    }
}

impl std::fmt::Display for EventId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.0, self.1)
    }
}

/// One event of a feed.
#[derive(Debug)]
pub struct FeedEvent {
    /// Its id in the owner's stream.
    pub id: EventId,
    /// `hitl_request`, `hitl_decided`, `hitl_expired` (`hitl_pending` for the list).
    pub name: String,
    /// The inbox entry, as JSON.
    pub data: String,
    /// The request it is about (live events and the list; empty in a replay).
    pub request: String,
}

impl FeedEvent {
    /// The event as SSE frames it.
    pub fn sse(&self) -> Event {
        Event::default()
            .id(self.id.to_string())
            .event(&self.name)
            .data(&self.data)
    }
}

struct Subscriber {
    id: u64,
    tx: mpsc::Sender<Arc<FeedEvent>>,
}

/// The feeds this replica holds, by owner.
#[derive(Default)]
pub struct Hub {
    feeds: Mutex<HashMap<String, Vec<Subscriber>>>,
    open: AtomicUsize,
    next: AtomicU64,
    /// Cancelled when the service begins to stop: feeds never end by
    /// themselves, so they end then instead of holding the shutdown's grace.
    closing: CancellationToken,
}

/// A feed's place in the [`Hub`]; leaves it when dropped.
pub struct Subscription {
    hub: Arc<Hub>,
    owner: String,
    id: u64,
    /// The events handed to this feed.
    pub rx: mpsc::Receiver<Arc<FeedEvent>>,
}

impl Hub {
    /// Joins the feeds of `owner`; 429 past the caps.
    pub fn subscribe(
        self: &Arc<Self>,
        owner: String,
        limits: &FeedLimits,
    ) -> Result<Subscription, AppError> {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if self.open.load(Ordering::Relaxed) >= limits.max_open {
            return Err(AppError::TooManyRequests {
                message: "Too many open HITL feeds on this server",
                retry_after: 5,
            });
        }
        let mine = feeds.entry(owner.clone()).or_default();
        if mine.len() >= limits.max_per_user {
            return Err(AppError::TooManyRequests {
                message: "Too many open HITL feeds for this user: close one first",
                retry_after: 5,
            });
        }
        let (tx, rx) = mpsc::channel(BUFFER);
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        mine.push(Subscriber { id, tx });
        self.open.fetch_add(1, Ordering::Relaxed);
        Ok(Subscription {
            hub: self.clone(),
            owner,
            id,
            rx,
        })
    }

    /// Ends every feed (the service is stopping); new ones end at once.
    pub fn close(&self) {
        self.closing.cancel();
    }

    /// Cancelled once [`Hub::close`] was called.
    pub fn closing(&self) -> CancellationToken {
        self.closing.clone()
    }

    /// Open feeds on this replica.
    pub fn open(&self) -> usize {
        self.open.load(Ordering::Relaxed)
    }

    /// Hands `event` to every feed of `owner`; a feed whose buffer is full
    /// is dropped (it ends, and its client resumes from its last id).
    pub fn deliver(&self, owner: &str, event: FeedEvent) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        let Some(mine) = feeds.get_mut(owner) else {
            return;
        };
        let event = Arc::new(event);
        mine.retain(|s| match s.tx.try_send(event.clone()) {
            Ok(()) => true,
            Err(mpsc::error::TrySendError::Full(_)) => {
                tracing::info!("hitl feed: a client fell behind; its feed is closed to resume");
                false
            }
            Err(mpsc::error::TrySendError::Closed(_)) => false,
        });
    }

    fn leave(&self, owner: &str, id: u64) {
        let mut feeds = self.feeds.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(mine) = feeds.get_mut(owner) {
            mine.retain(|s| s.id != id);
            if mine.is_empty() {
                feeds.remove(owner);
            }
        }
        self.open.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.hub.leave(&self.owner, self.id);
    }
}
