//! The real binary: a missing secret stops start-up; SIGTERM exits 0.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::helpers::{SECRET, redis_url};

fn main_service() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_main-service"));
    cmd.env_clear()
        .env("SERVER_HOST", "127.0.0.1")
        .env("SERVER_PORT", "0")
        .env("REDIS_URL", redis_url())
        .env("LOG_FORMAT", "json")
        // Tests run side by side: no fixed admin port.
        .env("ADMIN_PORT", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn start_up_refuses_a_missing_or_short_secret_naming_it() {
    for secret in [None, Some("too-short")] {
        let mut cmd = main_service();
        if let Some(secret) = secret {
            cmd.env("JWT_SECRET", secret);
        }
        let out = cmd.output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{secret:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("JWT_SECRET"), "{stderr}");
        assert!(
            !stderr.contains("too-short"),
            "the value itself is never printed: {stderr}"
        );
    }
}

#[test]
fn sigterm_shuts_down_gracefully_with_exit_code_zero() {
    let mut child = main_service().env("JWT_SECRET", SECRET).spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let addr = first["fields"]["addr"]
        .as_str()
        .expect("listening address")
        .to_owned();
    assert!(std::net::TcpStream::connect(&addr).is_ok());

    assert!(
        Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(Instant::now() < deadline, "no exit after SIGTERM");
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
}

#[test]
fn every_request_has_an_access_line_and_its_errors_name_the_trace() {
    use std::io::{Read, Write};
    /// Kills the service however the test ends.
    struct Running(std::process::Child);
    impl Drop for Running {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut child = Running(main_service().env("JWT_SECRET", SECRET).spawn().unwrap());
    let mut lines = BufReader::new(child.0.stdout.take().unwrap()).lines();
    let first: serde_json::Value = serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
    let addr = first["fields"]["addr"].as_str().unwrap().to_owned();
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let mut conn = std::net::TcpStream::connect(&addr).unwrap();
    write!(
        conn,
        "GET /main/nowhere HTTP/1.1\r\nHost: t\r\nX-Request-ID: req-access-1\r\n\
         traceparent: 00-{trace}-00f067aa0ba902b7-01\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut answer = String::new();
    conn.read_to_string(&mut answer).unwrap();
    let body: serde_json::Value =
        serde_json::from_str(answer.split("\r\n\r\n").nth(1).expect(&answer)).unwrap();
    assert_eq!(body["errorCode"], "E1004", "{answer}");
    assert_eq!(
        body["traceId"], trace,
        "the error names the trace: {answer}"
    );

    let deadline = Instant::now() + Duration::from_secs(10);
    let access = loop {
        assert!(Instant::now() < deadline, "no access line");
        let line: serde_json::Value =
            serde_json::from_str(&lines.next().unwrap().unwrap()).unwrap();
        if line["target"] == "access" {
            break line;
        }
    };
    drop(child);
    assert_eq!(access["fields"]["status"], 404, "{access}");
    assert_eq!(access["fields"]["route"], "unmatched", "{access}");
    assert_eq!(access["span"]["request_id"], "req-access-1", "{access}");
    assert_eq!(access["span"]["trace_id"], trace, "{access}");
}
