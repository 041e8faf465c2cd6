//! `dwp-bench resume GATEWAY EVENTS RESUMES`: the resume latency of a
//! resumable stream with EVENTS events to replay.
//!
//! Runs one resumable stream of EVENTS events (`X-DWP-Resumable: true`,
//! the backend's `?events=N&interval_ms=0`) to its end, then resumes it
//! RESUMES times one after the other with `GET /api/streams/{taskId}` and
//! no `Last-Event-ID` (every event replayed), timing each from the request
//! to the first body byte and to the end of the replay; and as the
//! reference, opens as many fresh streams of one event, timed from the
//! request to the first body byte. Prints p50/p99 of each.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::find;

/// The task id of a response head.
fn task_id(head: &[u8]) -> Option<String> {
    let text = String::from_utf8_lossy(head).to_ascii_lowercase();
    text.lines()
        .find_map(|l| l.strip_prefix("x-dwp-task-id:"))
        .map(|v| v.trim().to_owned())
}

/// Reads until `[DONE]`; the number of events seen.
async fn to_done(stream: &mut TcpStream, mut buf: Vec<u8>) -> std::io::Result<usize> {
    let mut chunk = [0u8; 65536];
    while find(&buf, b"[DONE]").is_none() {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
    Ok(buf.windows(6).filter(|w| w == b"data: ").count())
}

/// One resume: (first byte, whole replay, events).
async fn resume(addr: SocketAddr, task: &str) -> std::io::Result<(Duration, Duration, usize)> {
    let started = Instant::now();
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let request = format!(
        "GET /api/streams/{task} HTTP/1.1\r\nHost: {addr}\r\nX-Tenant-ID: bench\r\nAccept: text/event-stream\r\n\r\n"
    );
    stream.write_all(request.as_bytes()).await?;
    let mut buf = Vec::with_capacity(65536);
    let mut chunk = [0u8; 65536];
    let first = loop {
        let n = stream.read(&mut chunk).await?;
        if n == 0 {
            return Err(std::io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if let Some(end) = find(&buf, b"\r\n\r\n") {
            if !buf.starts_with(b"HTTP/1.1 200") {
                return Err(std::io::Error::other(
                    String::from_utf8_lossy(&buf[..end]).into_owned(),
                ));
            }
            if buf.len() > end + 4 {
                break started.elapsed();
            }
        }
    };
    let events = to_done(&mut stream, buf).await?;
    Ok((first, started.elapsed(), events))
}

fn pct(samples: &mut [Duration], p: f64) -> f64 {
    samples.sort_unstable();
    let i = ((samples.len() as f64 * p) as usize).min(samples.len().saturating_sub(1));
    samples.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

pub(crate) async fn run(addr: SocketAddr, events: usize, resumes: usize) -> std::io::Result<()> {
    let path = format!("/api/aura/test/stream?events={events}&interval_ms=0");
    let (mut stream, head) = crate::open_with(addr, &path, "X-DWP-Resumable: true").await?;
    let task = task_id(&head)
        .ok_or_else(|| std::io::Error::other("no X-DWP-Task-ID: is the recorder on?"))?;
    let seen = to_done(&mut stream, head).await?;
    drop(stream);
    tokio::time::sleep(Duration::from_millis(500)).await; // the journal's last writes
    let (mut first, mut whole) = (Vec::new(), Vec::new());
    for _ in 0..resumes {
        let (f, w, n) = resume(addr, &task).await?;
        if n < seen {
            return Err(std::io::Error::other(format!(
                "replayed {n} of {seen} events"
            )));
        }
        first.push(f);
        whole.push(w);
    }
    let mut fresh = Vec::new();
    for _ in 0..resumes {
        let started = Instant::now();
        let (mut s, head) =
            crate::open_with(addr, "/api/aura/test/stream?events=1&interval_ms=0", "").await?;
        let end = find(&head, b"\r\n\r\n").unwrap_or(0) + 4;
        if head.len() <= end {
            let mut byte = [0u8; 1];
            s.read_exact(&mut byte).await?;
        }
        fresh.push(started.elapsed());
    }
    let (f50, f99) = (pct(&mut first, 0.5), pct(&mut first, 0.99));
    let (w50, w99) = (pct(&mut whole, 0.5), pct(&mut whole, 0.99));
    let (r50, r99) = (pct(&mut fresh, 0.5), pct(&mut fresh, 0.99));
    println!(
        "resumes {resumes} of {seen} events: first replayed byte p50 {f50:.2} ms p99 {f99:.2} ms; whole replay p50 {w50:.2} ms p99 {w99:.2} ms"
    );
    println!(
        "reference, a fresh stream's first byte: p50 {r50:.2} ms p99 {r99:.2} ms; ratio resume/fresh p50 {:.2}",
        f50 / r50.max(f64::EPSILON)
    );
    Ok(())
}
