//! The live feed, `GET /aura/hitl/events`: a server-sent event stream of
//! the caller's HITL requests, for every device the caller has open.
//!
//! - On connect, one `hitl_pending` event per pending request (the
//!   inbox's rows), all with the `id:` of the caller's feed at that moment.
//! - Then `hitl_request` (a new request), `hitl_decided` (approved or
//!   rejected, from any device), `hitl_expired`, each with the `id:` of its
//!   entry in the caller's feed stream ([`super::publish`]); `data` is the
//!   inbox entry. `: keep-alive` comments during silence.
//! - Reconnecting with `Last-Event-ID` (what `EventSource` sends) replays
//!   exactly the events after that id, from the caller's stream, kept for
//!   `HITL_FEED_RETENTION_SECS`; an id older than that (or not an id)
//!   starts over with the `hitl_pending` list.
//! - A feed ends after `HITL_FEED_MAX_SECS` (its client reconnects with its
//!   last id), so feeds spread over the replicas again after a scale-out.
//!
//! Each replica reads the shared stream `hitl:feed:all` on one connection
//! of its own ([`run`]) and hands each event to the feeds it holds for
//! that owner ([`crate::hub::Hub`]). A feed that falls behind by
//! [`crate::hub::BUFFER`] events is
//! closed (its client reconnects with its `Last-Event-ID` and misses
//! nothing); feeds per user and per replica are capped (429).
//!
//! Order without gaps: a feed joins the hub first, then reads where the
//! caller's stream ends (or replays after `Last-Event-ID`), then the list;
//! live events up to that point are dropped as already covered, since a
//! change is appended to the streams only after its row is committed.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::State;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use dwp_core::envelope::unix_now;
use dwp_core::hitl::owner_field;
use futures_util::Stream;
use http::HeaderMap;
use redis::Value;
use redis::aio::MultiplexedConnection;
use redis::streams::StreamReadReply;
use tokio_util::sync::CancellationToken;

use super::inbox;
use super::publish::{ALL_STREAM, owner_stream};
use crate::auth::Caller;
use crate::consumer::pause;
use crate::error::AppError;
use crate::hub::{EventId, FeedEvent, Subscription};
use crate::state::AppState;

/// Entries read from a stream at once.
const PAGE: usize = 500;

/// How long the replica's read of the shared stream blocks.
const BLOCK: Duration = Duration::from_millis(5000);

/// Reads the shared stream and hands its events to this replica's feeds,
/// until `stop`.
pub async fn run(state: Arc<AppState>, stop: CancellationToken) {
    let mut conn: Option<MultiplexedConnection> = None;
    let mut last: Option<String> = None;
    while !stop.is_cancelled() {
        let read = async {
            let c = match &conn {
                Some(c) => c.clone(),
                None => {
                    let c = crate::store::blocking_conn(&state.config.redis, BLOCK).await?;
                    conn = Some(c.clone());
                    c
                }
            };
            let mut c2 = c.clone();
            if last.is_none() {
                last = Some(last_id(&mut c2, ALL_STREAM).await?.to_string());
            }
            let from = last.clone().unwrap_or_default();
            let reply: Option<StreamReadReply> = redis::cmd("XREAD")
                .arg("COUNT")
                .arg(PAGE)
                .arg("BLOCK")
                .arg(BLOCK.as_millis() as u64)
                .arg("STREAMS")
                .arg(ALL_STREAM)
                .arg(&from)
                .query_async(&mut c2)
                .await?;
            Ok::<_, redis::RedisError>(reply)
        };
        let reply = tokio::select! {
            reply = read => reply,
            () = stop.cancelled() => break,
        };
        let reply = match reply {
            Ok(reply) => reply,
            Err(e) => {
                tracing::warn!(error = %e, "hitl feed: reading {ALL_STREAM} failed; retrying");
                conn = None;
                pause(&stop).await;
                continue;
            }
        };
        for entry in reply.into_iter().flat_map(|r| r.keys).flat_map(|k| k.ids) {
            last = Some(entry.id.clone());
            if state.feed.open() == 0 {
                continue;
            }
            let field = |name: &str| text(entry.map.get(name));
            let Some(id) = EventId::parse(&field("id")) else {
                continue;
            };
            state.feed.deliver(
                &field("owner"),
                FeedEvent {
                    id,
                    name: field("event"),
                    data: field("data"),
                    request: field("request"),
                },
            );
        }
    }
}

/// The id of the newest entry of `stream` (`0-0` when there is none).
async fn last_id<C: redis::aio::ConnectionLike>(
    conn: &mut C,
    stream: &str,
) -> redis::RedisResult<EventId> {
    let reply: Vec<(String, Value)> = redis::cmd("XREVRANGE")
        .arg(stream)
        .arg("+")
        .arg("-")
        .arg("COUNT")
        .arg(1)
        .query_async(conn)
        .await?;
    Ok(reply
        .first()
        .and_then(|(id, _)| EventId::parse(id))
        .unwrap_or(EventId(0, 0)))
}

fn text(value: Option<&Value>) -> String {
    match value {
        Some(Value::BulkString(bytes)) => String::from_utf8_lossy(bytes).into_owned(),
        Some(Value::SimpleString(s)) => s.clone(),
        _ => String::new(),
    }
}

/// One event of the feed as `text/event-stream` frames it (what the
/// OpenAPI document says of each event).
#[derive(utoipa::ToSchema)]
pub struct FeedEventSchema {
    /// Its position in the caller's feed: send it back as `Last-Event-ID`.
    pub id: String,
    /// `hitl_pending`, `hitl_request`, `hitl_decided` or `hitl_expired`.
    #[schema(pattern = "^hitl_(pending|request|decided|expired)$")]
    pub event: String,
    /// The request as the inbox lists it (an `InboxEntry`), as JSON.
    pub data: String,
}

#[utoipa::path(get, path = "/aura/hitl/events", tag = "hitl", operation_id = "hitlEvents",
    params(("Last-Event-ID" = Option<String>, Header, description = "Resume after this event (sent by `EventSource` itself); events of the last hour are replayed"),
        ("X-User-ID" = String, Header, description = "The caller; must equal the token's `sub`"),
        ("X-Tenant-ID" = String, Header, description = "The tenant; must equal the token's `tenant_id`")),
    responses((status = 200, description = "`text/event-stream`: `hitl_pending` for each pending request on connect, then `hitl_request`, `hitl_decided` and `hitl_expired`, each with an `id:` and an inbox entry as `data`; `: keep-alive` during silence", content_type = "text/event-stream", body = FeedEventSchema),
        (status = 429, description = "Too many open feeds for this user or this server")),
    security(("bearer" = [])))]
pub(super) async fn events(
    State(state): State<Arc<AppState>>,
    caller: Caller,
    headers: HeaderMap,
) -> Result<Response, AppError> {
    let limits = &state.config.feed;
    let owner = owner_field(&caller.tenant_id, &caller.user_id);
    let subscription = state.feed.subscribe(owner.clone(), limits)?;
    let stream = owner_stream(&owner);
    let resume = headers
        .get(dwp_core::headers::LAST_EVENT_ID)
        .and_then(|v| v.to_str().ok())
        .and_then(EventId::parse)
        .filter(|id| fresh(*id, limits.retention));
    let mut conn = state.store.conn().await?;
    let (first, start) = match resume {
        Some(after) => (Vec::new(), after),
        None => {
            let at = state.store.bounded(last_id(&mut conn, &stream)).await?;
            let db = state.db.conn()?;
            let pending = state
                .db
                .bounded(inbox::pending(db, &caller.tenant_id, &caller.user_id))
                .await?;
            let first = pending
                .into_iter()
                .map(|(request, data)| FeedEvent {
                    id: at,
                    name: "hitl_pending".into(),
                    data,
                    request,
                })
                .collect();
            (first, at)
        }
    };
    let listed = first.iter().map(|e| e.request.clone()).collect();
    let feed = Feed {
        listed,
        ends: tokio::time::Instant::now() + limits.max_age,
        state: state.clone(),
        stream,
        subscription,
        queued: first.into_iter().collect(),
        cursor: start,
        replaying: resume.is_some(),
    };
    let heartbeat = limits.heartbeat;
    let sse = Sse::new(feed.into_stream());
    let mut response = match heartbeat {
        Some(every) => sse
            .keep_alive(KeepAlive::new().interval(every).text("keep-alive"))
            .into_response(),
        None => sse.into_response(),
    };
    // Through a proxy that buffers unless told (nginx), and never cached.
    response
        .headers_mut()
        .insert("x-accel-buffering", http::HeaderValue::from_static("no"));
    Ok(response)
}

/// Whether an id is recent enough to be replayed (`0-0`: from the start of
/// what is kept, the position of a feed opened when its stream was empty).
fn fresh(id: EventId, retention: Duration) -> bool {
    let oldest = unix_now().saturating_sub(retention.as_secs()) * 1000;
    id == EventId(0, 0) || id.0 >= oldest
}

/// One open feed.
struct Feed {
    /// The requests the first events listed as pending: a live
    /// `hitl_request` for one of them (its row was committed before the
    /// list was read, its announcement came after) says nothing new.
    listed: std::collections::HashSet<String>,
    /// `HITL_FEED_MAX_SECS` after it opened.
    ends: tokio::time::Instant,
    state: Arc<AppState>,
    stream: String,
    subscription: Subscription,
    /// Events to send before anything else.
    queued: std::collections::VecDeque<FeedEvent>,
    /// The last event sent (or covered by the list): later ones only.
    cursor: EventId,
    /// Still reading the owner's stream after `Last-Event-ID`.
    replaying: bool,
}

impl Feed {
    fn into_stream(self) -> impl Stream<Item = Result<Event, Infallible>> + Send {
        futures_util::stream::unfold(self, |mut feed| async move {
            let event = feed.next().await?;
            Some((Ok(event), feed))
        })
    }

    /// The next event, `None` when the feed ends.
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.queued.pop_front() {
                if event.id > self.cursor {
                    self.cursor = event.id;
                }
                return Some(event.sse());
            }
            if self.replaying {
                match self.replay_page().await {
                    Ok(page) if page.is_empty() => self.replaying = false,
                    Ok(page) => self.queued.extend(page),
                    Err(e) => {
                        tracing::warn!(error = %e, "hitl feed: replay failed; closing the feed");
                        return None;
                    }
                }
                continue;
            }
            let stop = self.state.feed.closing();
            let live = tokio::select! {
                live = self.subscription.rx.recv() => live?,
                () = stop.cancelled() => return None,
                () = tokio::time::sleep_until(self.ends) => return None,
            };
            if live.id > self.cursor {
                self.cursor = live.id;
                if live.name == "hitl_request" && self.listed.contains(&live.request) {
                    continue;
                }
                return Some(live.sse());
            }
        }
    }

    /// The next page of the owner's stream after the cursor.
    async fn replay_page(&mut self) -> Result<Vec<FeedEvent>, AppError> {
        let mut conn = self.state.store.conn().await?;
        let reply: Vec<(String, HashMap<String, Value>)> = self
            .state
            .store
            .bounded(
                redis::cmd("XRANGE")
                    .arg(&self.stream)
                    .arg(format!("({}", self.cursor))
                    .arg("+")
                    .arg("COUNT")
                    .arg(PAGE)
                    .query_async(&mut conn),
            )
            .await?;
        Ok(reply
            .into_iter()
            .filter_map(|(id, fields)| {
                Some(FeedEvent {
                    id: EventId::parse(&id)?,
                    name: text(fields.get("event")),
                    data: text(fields.get("data")),
                    request: String::new(),
                })
            })
            .collect())
    }
}
