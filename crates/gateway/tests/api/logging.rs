//! What the gateway logs: the routing line of CONTRACT.md section 3 (never
//! the token), the body preview and the missing-field warning, and one
//! access line per request.

use std::io::Write;
use std::sync::{Arc, Mutex};

use crate::helpers::*;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

// One thread, so that every task of the gateway logs into this test's subscriber.
#[tokio::test(flavor = "current_thread")]
async fn aura_requests_are_logged_without_the_token() {
    let captured = Captured::default();
    let writer = captured.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .finish();
    let _guard = tracing::subscriber::set_default(subscriber);

    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let prompt = "p".repeat(600);
    let req = request("POST", gw.addr, "/api/aura/test/stream")
        .header("authorization", "Bearer SECRET-TOKEN-VALUE")
        .header("x-tenant-id", "tenant1")
        .header("x-user-id", "user123")
        .header("x-dwp-source", "FRONTEND")
        .body(full(format!(r#"{{"prompt":"{prompt}"}}"#)))
        .unwrap();
    let res = send(gw.addr, req).await;
    assert_eq!(res.status(), 200);
    res.text().await;
    drop(gw);
    tokio::time::sleep(std::time::Duration::from_millis(50)).await;

    let logs = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        logs.contains("Routing to Aura-Platform: /api/aura/test/stream with headers: Authorization=present, X-Tenant-ID=tenant1, X-User-ID=user123, X-DWP-Source=FRONTEND, X-DWP-Caller-Type=missing, Last-Event-ID=missing"),
        "{logs}"
    );
    assert!(
        logs.contains("... (truncated)"),
        "preview truncated: {logs}"
    );
    assert!(
        logs.contains(&format!("{{\"prompt\":\"{}", "p".repeat(480))),
        "preview shown: {logs}"
    );
    assert!(
        !logs.contains(&"p".repeat(501)),
        "at most 500 characters: {logs}"
    );
    assert!(
        logs.contains("WARN") && logs.contains("context"),
        "missing context warned: {logs}"
    );
    assert!(
        logs.contains("route=\"aura\"") || logs.contains("route=aura"),
        "access line: {logs}"
    );
    assert!(logs.contains("status=200"), "{logs}");
    assert!(
        !logs.contains("SECRET-TOKEN-VALUE"),
        "the token is never logged"
    );
}
