//! The real binary: start-up with a bad value, JSON logs, SIGTERM.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

fn gateway() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_gateway"));
    cmd.env_clear()
        .env("SERVER_HOST", "127.0.0.1")
        .env("SERVER_PORT", "0")
        .env("GATEWAY_WORKER_THREADS", "2")
        .env("GATEWAY_AUTH", "off")
        .env("ADMIN_PORT", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

#[test]
fn a_bad_value_stops_start_up_naming_the_variable() {
    let out = gateway()
        .env("GATEWAY_CONNECT_TIMEOUT_SECS", "soon")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("GATEWAY_CONNECT_TIMEOUT_SECS"), "{stderr}");
}

#[test]
fn without_jwt_secret_it_refuses_to_start_unless_the_check_is_turned_off_explicitly() {
    let out = gateway().env_remove("GATEWAY_AUTH").output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("JWT_SECRET") && stderr.contains("GATEWAY_AUTH=off"),
        "{stderr}"
    );
}

#[test]
fn sigterm_drains_and_exits_zero_with_json_logs() {
    let mut child = gateway().env("LOG_FORMAT", "json").spawn().unwrap();
    let stdout = child.stdout.take().unwrap();
    let mut lines = BufReader::new(stdout).lines();
    let first = lines.next().unwrap().unwrap();
    let line: serde_json::Value = serde_json::from_str(&first).expect("a JSON log line");
    let addr = line["fields"]["addr"]
        .as_str()
        .expect("the listening address")
        .to_owned();
    assert_eq!(line["fields"]["message"], "gateway listening");

    let health = std::net::TcpStream::connect(&addr);
    assert!(health.is_ok(), "listening on {addr}");
    drop(health);

    let status = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(10);
    let exit = loop {
        if let Some(exit) = child.try_wait().unwrap() {
            break exit;
        }
        assert!(
            Instant::now() < deadline,
            "the gateway did not exit after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(20));
    };
    assert_eq!(exit.code(), Some(0));
    assert!(
        std::net::TcpStream::connect(&addr).is_err(),
        "nothing listens any more"
    );
}

/// `Max open files` of a process: (soft, hard).
fn open_file_limits(pid: u32) -> (String, String) {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    let fields: Vec<&str> = line.split_whitespace().collect();
    (fields[3].to_owned(), fields[4].to_owned())
}

#[test]
fn a_low_open_file_soft_limit_is_raised_to_the_hard_limit_at_start() {
    // Started with a soft limit of 256 (a default of 1,024 would cap it
    // near 500 streams, two descriptors each).
    let mut child = Command::new("sh")
        .args(["-c", "ulimit -Sn 256 && exec \"$0\""])
        .arg(env!("CARGO_BIN_EXE_gateway"))
        .env_clear()
        .env("SERVER_HOST", "127.0.0.1")
        .env("SERVER_PORT", "0")
        .env("GATEWAY_AUTH", "off")
        .env("ADMIN_PORT", "off")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let listening = BufReader::new(stdout).lines().next();
    let (soft, hard) = open_file_limits(child.id());
    let _ = child.kill();
    let _ = child.wait();
    assert!(listening.is_some(), "the gateway started");
    assert_ne!(soft, "256");
    assert_eq!(soft, hard);
}
