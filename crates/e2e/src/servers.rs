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
    /// Extra arguments of `redis-server` (`--replicaof`, ...).
    args: Vec<String>,
}

impl PrivateRedis {
    /// A fresh server, running.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// [`PrivateRedis::start`] with extra `redis-server` arguments.
    pub fn start_with(args: &[&str]) -> Self {
        let mut redis = Self {
            port: free_port(),
            dir: scratch_dir("redis"),
            child: None,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        redis.restart();
        redis
    }

    /// Its port.
    pub fn port(&self) -> u16 {
        self.port
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
            .args(&self.args)
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

    /// SIGKILL, as a crashed or powered-off node: nothing is flushed,
    /// replicas are not waited for.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
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

/// A Sentinel group: a primary, one replica of it, and one sentinel
/// (quorum 1) that monitors them as `dwp`, down after 1 s of silence.
pub struct SentinelGroup {
    /// The node that starts as the primary.
    pub primary: PrivateRedis,
    /// The node that starts as its replica.
    pub replica: PrivateRedis,
    sentinel: Child,
    sentinel_port: u16,
    dir: PathBuf,
}

/// The master name the group's sentinel monitors.
pub const SENTINEL_MASTER: &str = "dwp";

impl SentinelGroup {
    /// Starts the three and waits until the replica is in sync and the
    /// sentinel knows both nodes.
    pub fn start() -> Self {
        let primary = PrivateRedis::start();
        let port = primary.port().to_string();
        let replica = PrivateRedis::start_with(&["--replicaof", "127.0.0.1", &port]);
        let dir = scratch_dir("sentinel");
        let sentinel_port = free_port();
        let config = dir.join("sentinel.conf");
        std::fs::write(
            &config,
            format!(
                "port {sentinel_port}\nbind 127.0.0.1\ndir {dir}\nlogfile {dir}/sentinel.log\n\
                 sentinel monitor {SENTINEL_MASTER} 127.0.0.1 {port} 1\n\
                 sentinel down-after-milliseconds {SENTINEL_MASTER} 1000\n\
                 sentinel failover-timeout {SENTINEL_MASTER} 10000\n\
                 sentinel parallel-syncs {SENTINEL_MASTER} 1\n",
                dir = dir.display()
            ),
        )
        .unwrap();
        let sentinel = Command::new("redis-server")
            .arg(&config)
            .arg("--sentinel")
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server is installed (make services)");
        let group = Self {
            primary,
            replica,
            sentinel,
            sentinel_port,
            dir,
        };
        let replica_url = group.replica.url();
        wait_until("the replica's sync", || {
            info(&replica_url, "replication").contains("master_link_status:up")
        });
        let sentinel_url = group.sentinel_url();
        wait_until("the sentinel's view of the replica", || {
            redis::Client::open(sentinel_url.as_str())
                .and_then(|c| c.get_connection())
                .and_then(|mut c| {
                    redis::cmd("SENTINEL")
                        .arg("REPLICAS")
                        .arg(SENTINEL_MASTER)
                        .query::<Vec<redis::Value>>(&mut c)
                })
                .is_ok_and(|replicas| !replicas.is_empty())
        });
        group
    }

    /// `host:port` of the sentinel (`REDIS_SENTINELS`).
    pub fn sentinels(&self) -> String {
        format!("127.0.0.1:{}", self.sentinel_port)
    }

    fn sentinel_url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.sentinel_port)
    }

    /// The port the sentinel names as the primary now.
    pub fn primary_port(&self) -> Option<u16> {
        let mut conn = redis::Client::open(self.sentinel_url())
            .and_then(|c| c.get_connection())
            .ok()?;
        let (_, port): (String, u16) = redis::cmd("SENTINEL")
            .arg("GET-MASTER-ADDR-BY-NAME")
            .arg(SENTINEL_MASTER)
            .query(&mut conn)
            .ok()?;
        Some(port)
    }
}

/// `INFO section` of the Redis at `url` (empty when it does not answer).
pub fn info(url: &str, section: &str) -> String {
    redis::Client::open(url)
        .and_then(|c| c.get_connection())
        .and_then(|mut c| redis::cmd("INFO").arg(section).query::<String>(&mut c))
        .unwrap_or_default()
}

impl Drop for SentinelGroup {
    fn drop(&mut self) {
        let _ = self.sentinel.kill();
        let _ = self.sentinel.wait();
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
