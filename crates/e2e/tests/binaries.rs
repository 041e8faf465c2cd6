//! Every binary's command line: `--help` and `--version` answer and exit
//! without starting anything, a server refuses arguments it does not
//! take, and aura-sim writes JSON lines under `LOG_FORMAT=json`.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed unwrap is a failed test, and a scenario reads top to bottom"
)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use e2e::{SECRET, binary, redis_url};

const BINARIES: [&str; 5] = [
    "gateway",
    "main-service",
    "aura-sim",
    "migration",
    "dwp-bench",
];
const SERVERS: [&str; 3] = ["gateway", "main-service", "aura-sim"];

/// Kills the child however the test ends.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// `name` with port 0 and the settings a server needs to start.
fn command(name: &str) -> Command {
    let mut cmd = Command::new(binary(name));
    cmd.env_clear()
        .env("SERVER_HOST", "127.0.0.1")
        .env("SERVER_PORT", "0")
        .env("ADMIN_PORT", "off")
        .env("JWT_SECRET", SECRET)
        .env("REDIS_URL", redis_url())
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    cmd
}

/// Runs `name args` and waits at most 10 s for it to exit (a server that
/// started instead fails).
fn run(name: &str, args: &[&str]) -> Output {
    let mut child = command(name).args(args).spawn().unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("{name} {args:?} is still running after 10 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

#[test]
fn help_and_version_answer_and_exit_without_starting_anything() {
    let version = env!("CARGO_PKG_VERSION");
    for name in BINARIES {
        for flag in ["--help", "-h"] {
            let out = run(name, &[flag]);
            let stdout = String::from_utf8_lossy(&out.stdout);
            assert_eq!(out.status.code(), Some(0), "{name} {flag}: {stdout}");
            assert!(stdout.contains("usage: "), "{name} {flag}: {stdout}");
            assert!(
                !stdout.contains("listening"),
                "{name} {flag} started: {stdout}"
            );
        }
        for flag in ["--version", "-V"] {
            let out = run(name, &[flag]);
            assert_eq!(out.status.code(), Some(0), "{name} {flag}");
            assert_eq!(
                String::from_utf8_lossy(&out.stdout),
                format!("{name} {version}\n")
            );
        }
    }
}

#[test]
fn a_server_refuses_an_argument_it_does_not_take() {
    for name in SERVERS {
        let out = run(name, &["--port", "9"]);
        assert_eq!(out.status.code(), Some(2), "{name}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("\"--port\""), "{name}: {stderr}");
    }
}

#[test]
fn aura_sim_writes_json_lines_under_log_format_json() {
    let child = command("aura-sim")
        .env("LOG_FORMAT", "json")
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut child = Running(child);
    let stdout = child.0.stdout.take().unwrap();
    let first = BufReader::new(stdout).lines().next().unwrap().unwrap();
    let line: serde_json::Value = serde_json::from_str(&first).expect("a JSON log line");
    assert_eq!(line["fields"]["message"], "aura-sim listening", "{line}");
    assert_eq!(line["level"], "INFO");
}
