//! Private Redis and PostgreSQL servers for the fault tests: each on a free
//! port of 127.0.0.1 with its data in a fresh directory, so that a test can
//! stop and restart it without touching the shared instances the other
//! tests use. Both are removed on drop.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::free_port;

fn scratch_dir(kind: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("dwp-e2e-{kind}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn as_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

fn wait_until(what: &str, mut ready: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !ready() {
        assert!(Instant::now() < deadline, "{what} never became ready");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A `redis-server` that writes every command to its append-only file before
/// answering (`appendfsync always`), the way a production Redis that holds
/// approvals is configured: what it acknowledged survives a restart.
pub struct PrivateRedis {
    port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl PrivateRedis {
    /// A fresh server, running.
    pub fn start() -> Self {
        let mut redis = Self {
            port: free_port(),
            dir: scratch_dir("redis"),
            child: None,
        };
        redis.restart();
        redis
    }

    /// Its URL.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Starts the server again on the same port and data (after [`stop`]).
    ///
    /// [`stop`]: PrivateRedis::stop
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string(), "--bind", "127.0.0.1"])
            .args(["--appendonly", "yes", "--appendfsync", "always"])
            .args(["--save", "", "--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(self.dir.join("redis.log"))
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make services)");
        self.child = Some(child);
        let url = self.url();
        wait_until("the private Redis", || {
            redis::Client::open(url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| redis::cmd("PING").query::<String>(&mut c))
                .is_ok()
        });
    }

    /// SIGTERM, and waits until the process is gone.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = Command::new("kill")
                .args(["-TERM", &child.id().to_string()])
                .status();
            let _ = child.wait();
        }
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A PostgreSQL cluster of its own (`initdb`, trust authentication, user
/// `postgres`), started and stopped with `pg_ctl`. Under root the tools run
/// as the `postgres` system user, as PostgreSQL refuses to run as root.
pub struct PrivatePostgres {
    port: u16,
    dir: PathBuf,
    bin: PathBuf,
}

impl PrivatePostgres {
    /// A fresh cluster (`initdb`), running.
    pub fn start() -> Self {
        let dir = scratch_dir("postgres");
        if as_root() {
            assert!(
                Command::new("chown")
                    .args(["postgres:postgres"])
                    .arg(&dir)
                    .status()
                    .unwrap()
                    .success()
            );
        }
        let postgres = Self {
            port: free_port(),
            bin: pg_bin_dir(),
            dir,
        };
        let data = postgres.dir.join("data");
        postgres.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                "--auth=trust".as_ref(),
                "-E".as_ref(),
                "UTF8".as_ref(),
            ],
        );
        postgres.restart();
        postgres
    }

    /// The URL of its `postgres` database, for `CREATE DATABASE`.
    pub fn admin_url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }

    /// Starts the cluster (after [`stop`]) and waits until it answers.
    ///
    /// [`stop`]: PrivatePostgres::stop
    pub fn restart(&self) {
        let options = format!(
            "-p {} -c listen_addresses=127.0.0.1 -k {} -c fsync=off",
            self.port,
            self.dir.display()
        );
        let data = self.dir.join("data");
        let log = self.dir.join("postgres.log");
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-l".as_ref(),
                log.as_os_str(),
                "-o".as_ref(),
                options.as_ref(),
                "-w".as_ref(),
                "start".as_ref(),
            ],
        );
        let port = self.port.to_string();
        wait_until("the private PostgreSQL", || {
            Command::new(self.bin.join("pg_isready"))
                .args(["-h", "127.0.0.1", "-p", &port, "-q"])
                .status()
                .is_ok_and(|s| s.success())
        });
    }

    /// `pg_ctl stop -m fast`: every connection is closed and the server
    /// exits, as in a restart or a fail-over.
    pub fn stop(&self) {
        self.stop_with("fast");
    }

    fn stop_with(&self, mode: &str) {
        let data = self.dir.join("data");
        self.run(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                mode.as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
    }

    fn run(&self, tool: &str, args: &[&std::ffi::OsStr]) {
        let tool = self.bin.join(tool);
        let mut cmd = if as_root() {
            let mut cmd = Command::new("runuser");
            cmd.args(["-u", "postgres", "--"]).arg(&tool);
            cmd
        } else {
            Command::new(&tool)
        };
        let status = cmd
            .args(args)
            .current_dir(&self.dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success(), "{} {args:?} failed", tool.display());
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.join("data");
        if data.join("postmaster.pid").exists() {
            let _ = std::panic::catch_unwind(|| self.stop_with("immediate"));
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The newest `/usr/lib/postgresql/<version>/bin` (Debian's layout), or the
/// directory of `initdb` on the `PATH`.
fn pg_bin_dir() -> PathBuf {
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| Some((e.file_name().to_str()?.parse().ok()?, e.path().join("bin"))))
        .filter(|(_, bin): &(u32, PathBuf)| bin.join("initdb").exists())
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return bin;
    }
    std::env::var_os("PATH")
        .and_then(|path| {
            std::env::split_paths(&path).find(|dir| Path::new(dir).join("initdb").exists())
        })
        .expect("PostgreSQL's server tools (initdb, pg_ctl) are installed (make services)")
}
