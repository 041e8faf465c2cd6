//! Following a resumable stream from its journal: the owner check, the
//! place `Last-Event-ID` names, the replay, then the live tail; and the
//! stop.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use redis::Value;
use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::tail::Entry;
use super::{ChannelBody, STOP_CHANNEL, Streams, keys};
use crate::BoxError;
use crate::error::GatewayError;

/// Entries replayed per `XRANGE`.
const PAGE: usize = 512;

/// How long a resume waits for its `Last-Event-ID` to be journaled (the
/// run's replica may be a few writes behind the client that saw it).
const ID_WAIT: Duration = Duration::from_secs(2);

/// How long a resume looks for a stream not journaled yet.
const META_WAIT: Duration = Duration::from_millis(500);

/// Blocks a follower may have waiting for its client.
const BUFFER: usize = 64;

/// What the journal says of a stream.
#[derive(Debug)]
pub struct Meta {
    /// The route it was started on.
    pub route: String,
    /// The agent's content type.
    pub content_type: String,
    /// `running`, `ended` or `lost`.
    pub state: String,
}

const REDIS_AWAY: &str =
    "Resuming a stream needs Redis, which cannot be reached: try again shortly";

/// The stream `task` if `owner` may follow it.
pub async fn owned(streams: &Streams, task: &str, owner: &str) -> Result<Meta, GatewayError> {
    let mut conn = streams
        .conn()
        .await
        .map_err(|_| GatewayError::Unavailable(REDIS_AWAY))?;
    // A stream started a moment ago may not be journaled yet (the run
    // never waits for Redis): an unknown one is looked for a little longer.
    let deadline = tokio::time::Instant::now() + META_WAIT;
    let fields = loop {
        let fields: HashMap<String, String> = redis::cmd("HGETALL")
            .arg(keys::meta(task))
            .query_async(&mut conn)
            .await
            .map_err(|_| GatewayError::Unavailable(REDIS_AWAY))?;
        if !fields.is_empty() || tokio::time::Instant::now() >= deadline {
            break fields;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    };
    // Another user's stream is as unknown as one that never was.
    if fields.get("owner").is_none_or(|o| o != owner) {
        return Err(GatewayError::NoStream(task.to_owned()));
    }
    let get = |k: &str| fields.get(k).cloned().unwrap_or_default();
    Ok(Meta {
        route: get("route"),
        content_type: get("type"),
        state: get("state"),
    })
}

/// The seq of the block `last_event_id` names (0: from the start).
pub async fn position(
    streams: &Streams,
    task: &str,
    meta: &Meta,
    last_event_id: Option<&str>,
) -> Result<u64, GatewayError> {
    if meta.state == "lost" {
        return Err(GatewayError::Unavailable(
            "This stream's journal has a gap (Redis was unreachable while it ran): it cannot be resumed",
        ));
    }
    let Some(id) = last_event_id.filter(|id| !id.is_empty()) else {
        return Ok(0);
    };
    let mut conn = streams
        .conn()
        .await
        .map_err(|_| GatewayError::Unavailable(REDIS_AWAY))?;
    let deadline = tokio::time::Instant::now() + ID_WAIT;
    loop {
        if let Some(seq) = find(&mut conn, task, id)
            .await
            .map_err(|_| GatewayError::Unavailable(REDIS_AWAY))?
        {
            return Ok(seq);
        }
        if meta.state != "running" || tokio::time::Instant::now() >= deadline {
            return Err(GatewayError::BadRequest(format!(
                "Last-Event-ID {id:?} is not an event of stream {task}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// The agent's id, else the gateway's own `g{seq}` when that block exists.
async fn find(
    conn: &mut ConnectionManager,
    task: &str,
    id: &str,
) -> redis::RedisResult<Option<u64>> {
    let agent: Option<u64> = redis::cmd("HGET")
        .arg(keys::ids(task))
        .arg(id)
        .query_async(conn)
        .await?;
    if agent.is_some() {
        return Ok(agent);
    }
    let Some(seq) = id.strip_prefix('g').and_then(|n| n.parse::<u64>().ok()) else {
        return Ok(None);
    };
    let entry: Vec<(String, HashMap<String, Value>)> = redis::cmd("XRANGE")
        .arg(keys::stream(task))
        .arg(format!("0-{seq}"))
        .arg(format!("0-{seq}"))
        .query_async(conn)
        .await?;
    Ok((!entry.is_empty()).then_some(seq))
}

/// The body of a follower: the journal after `after`, then the live tail,
/// until the end entry.
pub fn follow(streams: &Streams, task: &str, after: u64) -> ChannelBody {
    let (tx, body) = ChannelBody::new(BUFFER);
    tokio::spawn(feed(streams.clone(), Arc::from(task), after, tx));
    body
}

async fn feed(
    streams: Streams,
    task: Arc<str>,
    mut after: u64,
    tx: mpsc::Sender<Result<Bytes, BoxError>>,
) {
    let Ok(mut conn) = streams.conn().await else {
        let _ = tx.send(Err(REDIS_AWAY.into())).await;
        return;
    };
    let _: redis::RedisResult<()> = redis::cmd("SET")
        .arg(keys::seen(&task))
        .arg(1)
        .arg("EX")
        .arg(streams.settings.detach.as_secs().max(1))
        .query_async(&mut conn)
        .await;
    // The replay, page by page, straight from the journal.
    loop {
        let page: redis::RedisResult<Vec<(String, HashMap<String, Value>)>> = redis::cmd("XRANGE")
            .arg(keys::stream(&task))
            .arg(format!("0-{}", after + 1))
            .arg("+")
            .arg("COUNT")
            .arg(PAGE)
            .query_async(&mut conn)
            .await;
        let Ok(page) = page else {
            let _ = tx.send(Err(REDIS_AWAY.into())).await;
            return;
        };
        let full = page.len() == PAGE;
        for (id, map) in &page {
            match Entry::parse(id, map) {
                Some((seq, Entry::Block(_, bytes))) => {
                    after = seq;
                    if tx.send(Ok(bytes)).await.is_err() {
                        return;
                    }
                }
                Some((_, Entry::End(_))) => return,
                None => {}
            }
        }
        if !full {
            break;
        }
    }
    // Then live: the tail reads on from the last block replayed.
    let (mut live, _following) = streams.tail.follow(task, after);
    loop {
        let entry = tokio::select! {
            entry = live.recv() => entry,
            () = tx.closed() => return,
        };
        match entry {
            Some(Entry::Block(_, bytes)) => {
                if tx.send(Ok(bytes)).await.is_err() {
                    return;
                }
            }
            Some(Entry::End(_)) => return,
            None => {
                let _ = tx
                    .send(Err("the follower fell behind: resume again".into()))
                    .await;
                return;
            }
        }
    }
}

/// Stops the run `task` of `owner`, wherever it is read.
pub async fn stop(streams: &Streams, task: &str, owner: &str) -> Result<(), GatewayError> {
    let meta = owned(streams, task, owner).await?;
    if meta.state != "running" {
        return Err(GatewayError::Conflict("The stream has already ended"));
    }
    let mut conn = streams
        .conn()
        .await
        .map_err(|_| GatewayError::Unavailable(REDIS_AWAY))?;
    // PUBLISH would count pattern subscribers (a `PSUBSCRIBE dwp:*`
    // watcher) as listeners: the channel's own subscribers are the gateways.
    let (listening,): ((String, u64),) = redis::pipe()
        .cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(STOP_CHANNEL)
        .cmd("PUBLISH")
        .arg(STOP_CHANNEL)
        .arg(task)
        .ignore()
        .query_async(&mut conn)
        .await
        .map_err(|_| GatewayError::Unavailable(REDIS_AWAY))?;
    if listening.1 == 0 {
        return Err(GatewayError::Unavailable(
            "No gateway is listening for stops: try again shortly",
        ));
    }
    Ok(())
}
