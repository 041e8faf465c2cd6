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
