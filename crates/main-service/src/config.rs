//! main-service configuration: defaults, optional `config/main-service.toml`
//! (keys are the variable names in lower case), then environment variables
//! with the names of CONTRACT.md section 1. A bad or missing required value
//! stops start-up with a message naming the variable; secrets are never
//! printed.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use dwp_core::settings::{Retention, Secret, SettingError, Settings, redact_url};

/// The default optional configuration file.
pub const DEFAULT_FILE: &str = "config/main-service.toml";

/// `DATABASE_URL` when unset (CONTRACT.md section 1).
pub const DEFAULT_DATABASE_URL: &str = "postgres://dwp_user:dwp_password@localhost:5432/dwp_main";

/// A configuration value that could not be used.
pub type ConfigError = SettingError;

/// The main-service configuration.
#[derive(Clone)]
pub struct Config {
    /// `SERVER_HOST` (default `0.0.0.0`).
    pub host: String,
    /// `SERVER_PORT` (default 8081).
    pub port: u16,
    /// `JWT_SECRET`: required, at least 32 bytes.
    pub jwt_secret: Secret,
    /// `JWT_AUDIENCE`: when set, tokens must carry it in `aud`.
    pub jwt_audience: Option<String>,
    /// Redis ([`dwp_core::redis`]): `REDIS_URL` or its parts
    /// (`REDIS_HOST`, `REDIS_PORT`, `REDIS_PASSWORD`, `REDIS_TLS`), and
    /// `REDIS_CA_FILE` for TLS.
    pub redis: dwp_core::redis::Target,
    /// `REDIS_TIMEOUT_MS` (1000): connect and command timeout.
    pub redis_timeout: Duration,
    /// `REDIS_MIN_REPLICAS` (0): replicas that must hold a decision before
    /// it is acknowledged (`WAIT`, at most half of `REDIS_TIMEOUT_MS`).
    pub redis_min_replicas: u32,
    /// `MAIN_MAX_BODY_BYTES` (1 MiB): larger request bodies are 413.
    pub max_body_bytes: usize,
    /// `MAIN_REQUEST_TIMEOUT_SECS` (30): longest a request may take (and
    /// longest open requests may take to finish on shutdown).
    pub request_timeout: Duration,
    /// `MAIN_HEADER_READ_TIMEOUT_SECS` (60): longest a client may take to
    /// send a request head, and longest a kept-alive connection may sit
    /// idle; above the gateway's pool idle timeout (30 s), so the gateway
    /// lets go of an idle connection first.
    pub header_read_timeout: Duration,
    /// `DATABASE_URL`: the PostgreSQL database.
    pub database_url: String,
    /// `DB_AUTO_MIGRATE` (true): apply pending migrations at start-up.
    pub db_auto_migrate: bool,
    /// `DB_TIMEOUT_MS` (1500): connect and pool-acquire timeout; a request
    /// that cannot reach PostgreSQL within it is 503.
    pub db_timeout: Duration,
    /// `DB_MAX_CONNECTIONS` (10): size of the PostgreSQL pool.
    pub db_max_connections: u32,
    /// `JWT_TTL_SECS` (3600): lifetime of the tokens `/auth/login` issues.
    pub jwt_ttl: Duration,
    /// `JWT_MAX_LIFETIME_SECS` (86400): tokens whose `exp - iat` is longer
    /// are refused; `JWT_TTL_SECS` may not exceed it.
    pub jwt_max_lifetime: Duration,
    /// The Redis Stream consumers (recorder and decision audit).
    pub consumer: ConsumerConfig,
    /// How `POST /auth/login` protects itself.
    pub login: LoginLimits,
    /// `DEFAULT_TENANT_ID` (`1`, the tenant the web frontend sends): the
    /// tenant of a login body without `tenantId`, and the one
    /// `/auth/policy` answers for when no `X-Tenant-ID` is sent.
    pub default_tenant: String,
    /// `ADMIN_HOST` (`0.0.0.0`) and `ADMIN_PORT` (8091; `off` for none): the
    /// listener of `/metrics` and the health checks, apart from the public port.
    pub admin: Option<(String, u16)>,
    /// `STREAM_MAX_LEN` (100000) and `STREAM_MAX_AGE_SECS` (604800): what the
    /// decision stream and the dead-letter streams keep.
    pub streams: Retention,
    /// `HITL_MAX_PENDING_PER_USER` (100): requests one user may have pending
    /// through `POST /aura/hitl/requests`; more is 429.
    pub hitl_max_pending_per_user: u64,
    /// `HITL_MAX_UNDELIVERED_PER_USER` (32): decisions of one user that may
    /// wait at once for their agent to subscribe (the real agent subscribes
    /// some milliseconds after its `hitl` event); more is 429.
    pub hitl_max_undelivered_per_user: u64,
    /// `HITL_MAX_CREATES_PER_MINUTE` (120): requests one user may create
    /// through `POST /aura/hitl/requests` per minute; more is 429.
    pub hitl_max_creates_per_minute: u64,
    /// `TASKS_MAX_CREATES_PER_MINUTE` (120): tasks one user may create
    /// through `POST /main/agent/tasks` per minute; more is 429.
    pub tasks_max_creates_per_minute: u64,
    /// `TASKS_MAX_PER_USER` (10000): task rows one user may hold; creating
    /// more through the API is 429.
    pub tasks_max_per_user: u64,
    /// What the frontend's monitoring calls may send and how long it is kept.
    pub monitoring: MonitoringLimits,
    /// `HITL_EXPIRY_SECS` (300, the real agent's wait): a request not
    /// decided this long after it was made expires (the inbox shows it
    /// `expired`; deciding it is 404).
    pub hitl_expiry: Duration,
    /// The live feed of HITL requests (`GET /aura/hitl/events`).
    pub feed: FeedLimits,
}

/// Bounds of the live feed ([`crate::hitl::feed`]).
#[derive(Debug, Clone)]
pub struct FeedLimits {
    /// `HITL_FEED_RETENTION_SECS` (3600): how long a feed's events are kept
    /// for a client that reconnects with `Last-Event-ID`.
    pub retention: Duration,
    /// `HITL_FEED_HEARTBEAT_SECS` (15; 0 turns them off): `: keep-alive`
    /// during silence, so proxies and clients see the feed alive.
    pub heartbeat: Option<Duration>,
    /// `HITL_FEED_MAX_PER_USER` (10): feeds one user may hold open on one
    /// replica; more is 429.
    pub max_per_user: usize,
    /// `HITL_FEED_MAX_OPEN` (10000): feeds one replica holds open; more is 429.
    pub max_open: usize,
    /// `HITL_FEED_MAX_SECS` (3600): a feed is ended after this long; its
    /// client reconnects with `Last-Event-ID` and misses nothing, and feeds
    /// spread over the replicas again after a scale-out.
    pub max_age: Duration,
}

/// Bounds of `POST /monitoring/page-view` and `/monitoring/event`.
#[derive(Debug, Clone)]
pub struct MonitoringLimits {
    /// `MONITORING_MAX_PER_MINUTE_PER_USER` (120): reports one user (or,
    /// without a valid token, one address) may send a minute; more is 429.
    pub per_user: u64,
    /// `MONITORING_MAX_PER_MINUTE_PER_ADDRESS` (1200): reports one client
    /// address may send a minute, whoever sends them (an office behind one
    /// address); more is 429.
    pub per_address: u64,
    /// `MONITORING_RETENTION_DAYS` (90): rows and daily counts older than
    /// this are removed.
    pub retention_days: u64,
    /// `MONITORING_SWEEP_SECS` (3600): how often old rows are looked for.
    pub sweep_every: Duration,
}

/// Login's protection against memory exhaustion and password guessing.
#[derive(Debug, Clone)]
pub struct LoginLimits {
    /// `LOGIN_HASH_MEMORY_MIB` (64): memory all concurrent password checks
    /// may use; each argon2id check takes 19 MiB, so 64 MiB allows 3 at
    /// once. A login finding every slot busy waits in a queue.
    pub hash_slots: usize,
    /// `LOGIN_QUEUE_MAX` (256): logins that may wait for a slot at once;
    /// past it, 503 with `Retry-After` at once (0: no waiting at all).
    pub queue_max: usize,
    /// `LOGIN_QUEUE_WAIT_SECS` (10): the longest a login waits for a slot
    /// before it is 503 with `Retry-After`.
    pub queue_wait: Duration,
    /// `LOGIN_MAX_FAILURES` (5): failed logins of one account within the
    /// window before it is locked.
    pub max_failures: u64,
    /// `LOGIN_MAX_FAILURES_PER_CLIENT` (20): the same for one client address.
    pub max_failures_per_client: u64,
    /// `LOGIN_LOCKOUT_SECS` (30): the first lock; each further failure
    /// doubles it, up to `LOGIN_LOCKOUT_MAX_SECS` (900).
    pub lockout: Duration,
    /// `LOGIN_LOCKOUT_MAX_SECS` (900).
    pub lockout_max: Duration,
    /// `LOGIN_FAILURE_WINDOW_SECS` (900): failures are forgotten this long
    /// after the last one; a successful login forgets the account's at once.
    pub failure_window: Duration,
    /// `FORWARDED_HOPS` (1): proxies in front of main-service that append
    /// to `X-Forwarded-For` (the gateway); the client address is the entry
    /// they appended. 0 uses the connection's address.
    pub forwarded_hops: usize,
}

/// How main-service reads the Redis Streams `dwp:agent-task-events` and
/// `dwp:hitl-decisions` (consumer groups, at-least-once).
#[derive(Debug, Clone)]
pub struct ConsumerConfig {
    /// `CONSUMERS_ENABLED` (true): run the consumers in this process.
    pub enabled: bool,
    /// `CONSUMER_GROUP` (`main-service`): the group every replica joins.
    pub group: String,
    /// `CONSUMER_NAME` (`HOSTNAME`, else `main-service`): this replica's name
    /// in the group; a stable name lets a restarted replica finish its own
    /// pending entries first.
    pub name: String,
    /// `CONSUMER_GROUP_START` (`0`): where a newly created group starts:
    /// `0` (everything the stream still holds) or `$` (only new entries).
    pub group_start: String,
    /// `CONSUMER_CLAIM_IDLE_MS` (30000): entries pending this long at another
    /// (crashed) consumer are claimed and applied here.
    pub claim_idle: Duration,
    /// `CONSUMER_BATCH` (200): entries read and committed at once.
    pub batch: usize,
    /// What the dead-letter streams keep (the same `STREAM_MAX_LEN` and
    /// `STREAM_MAX_AGE_SECS` as [`Config::streams`]).
    pub dead_letters: Retention,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &format_args!("{}:{}", self.host, self.port))
            .field("jwt_secret", &"<set>")
            .field("jwt_audience", &self.jwt_audience)
            .field("redis", &self.redis)
            .field("redis_timeout", &self.redis_timeout)
            .field("redis_min_replicas", &self.redis_min_replicas)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("request_timeout", &self.request_timeout)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("database_url", &redact_url(&self.database_url))
            .field("db_auto_migrate", &self.db_auto_migrate)
            .field("db_timeout", &self.db_timeout)
            .field("db_max_connections", &self.db_max_connections)
            .field("jwt_ttl", &self.jwt_ttl)
            .field("jwt_max_lifetime", &self.jwt_max_lifetime)
            .field("consumer", &self.consumer)
            .field("login", &self.login)
            .field("default_tenant", &self.default_tenant)
            .field("admin", &self.admin)
            .field("streams", &self.streams)
            .field("hitl_max_pending_per_user", &self.hitl_max_pending_per_user)
            .field(
                "hitl_max_undelivered_per_user",
                &self.hitl_max_undelivered_per_user,
            )
            .field(
                "hitl_max_creates_per_minute",
                &self.hitl_max_creates_per_minute,
            )
            .field(
                "tasks_max_creates_per_minute",
                &self.tasks_max_creates_per_minute,
            )
            .field("tasks_max_per_user", &self.tasks_max_per_user)
            .field("monitoring", &self.monitoring)
            .field("hitl_expiry", &self.hitl_expiry)
            .field("feed", &self.feed)
            .finish()
    }
}

impl Config {
    /// Loads `config/main-service.toml` (if present) and the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_sources(Some(Path::new(DEFAULT_FILE)), std::env::vars().collect())
    }

    /// Loads from an optional file and an explicit variable map.
    pub fn from_sources(
        file: Option<&Path>,
        env: HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let vars = Settings::load(file, env)?;
        let jwt_secret = vars
            .secret("JWT_SECRET")
            .ok_or_else(|| bad("JWT_SECRET", "is required (at least 32 bytes)"))?;
        if jwt_secret.len() < 32 {
            return Err(bad("JWT_SECRET", "must be at least 32 bytes long"));
        }
        let streams = Retention {
            max_len: vars.positive("STREAM_MAX_LEN", Retention::default().max_len)?,
            max_age_secs: vars
                .positive("STREAM_MAX_AGE_SECS", Retention::default().max_age_secs)?,
        };
        let jwt_ttl = vars.secs("JWT_TTL_SECS", 3600)?;
        let jwt_max_lifetime = vars.secs("JWT_MAX_LIFETIME_SECS", 24 * 3600)?;
        if jwt_ttl > jwt_max_lifetime {
            return Err(bad(
                "JWT_TTL_SECS",
                "is longer than JWT_MAX_LIFETIME_SECS: the tokens issued would be refused",
            ));
        }
        Ok(Self {
            database_url: checked_database_url(vars.text("DATABASE_URL"))?,
            db_auto_migrate: vars.flag("DB_AUTO_MIGRATE", true)?,
            db_timeout: vars.millis("DB_TIMEOUT_MS", 1500)?,
            db_max_connections: vars.positive("DB_MAX_CONNECTIONS", 10)?.min(1000) as u32,
            jwt_ttl,
            jwt_max_lifetime,
            consumer: consumer(&vars, streams)?,
            login: login(&vars)?,
            default_tenant: default_tenant(&vars)?,
            admin: admin(&vars)?,
            streams,
            hitl_max_pending_per_user: vars.positive("HITL_MAX_PENDING_PER_USER", 100)?,
            hitl_max_undelivered_per_user: vars.positive("HITL_MAX_UNDELIVERED_PER_USER", 32)?,
            hitl_max_creates_per_minute: vars.positive("HITL_MAX_CREATES_PER_MINUTE", 120)?,
            tasks_max_creates_per_minute: vars.positive("TASKS_MAX_CREATES_PER_MINUTE", 120)?,
            tasks_max_per_user: vars.positive("TASKS_MAX_PER_USER", 10_000)?,
            monitoring: monitoring(&vars)?,
            hitl_expiry: vars.secs("HITL_EXPIRY_SECS", 300)?,
            feed: feed(&vars)?,
            host: vars.text("SERVER_HOST").unwrap_or_else(|| "0.0.0.0".into()),
            // 0 is allowed: the system picks a free port (tests use it).
            port: port(&vars, "SERVER_PORT", 8081)?,
            jwt_secret,
            jwt_audience: vars.text("JWT_AUDIENCE"),
            redis: vars.redis()?,
            redis_timeout: vars.millis("REDIS_TIMEOUT_MS", 1000)?,
            redis_min_replicas: vars.number("REDIS_MIN_REPLICAS", 0)?,
            max_body_bytes: vars.positive("MAIN_MAX_BODY_BYTES", 1024 * 1024)? as usize,
            request_timeout: vars.secs("MAIN_REQUEST_TIMEOUT_SECS", 30)?,
            header_read_timeout: vars.secs("MAIN_HEADER_READ_TIMEOUT_SECS", 60)?,
        })
    }
}

/// A port number (0 lets the system pick).
fn port(vars: &Settings, var: &str, default: u16) -> Result<u16, ConfigError> {
    match vars.text(var) {
        None => Ok(default),
        Some(raw) => raw
            .trim()
            .parse::<u16>()
            .map_err(|_| bad(var, format!("{raw:?} is not a port"))),
    }
}

/// The live feed's bounds.
fn feed(vars: &Settings) -> Result<FeedLimits, ConfigError> {
    let heartbeat = Duration::from_secs(vars.number("HITL_FEED_HEARTBEAT_SECS", 15)?);
    Ok(FeedLimits {
        retention: vars.secs("HITL_FEED_RETENTION_SECS", 3600)?,
        heartbeat: (!heartbeat.is_zero()).then_some(heartbeat),
        max_per_user: vars.positive("HITL_FEED_MAX_PER_USER", 10)? as usize,
        max_open: vars.positive("HITL_FEED_MAX_OPEN", 10_000)? as usize,
        max_age: vars.secs("HITL_FEED_MAX_SECS", 3600)?,
    })
}

/// How login protects itself.
fn login(vars: &Settings) -> Result<LoginLimits, ConfigError> {
    Ok(LoginLimits {
        hash_slots: (vars.positive("LOGIN_HASH_MEMORY_MIB", 64)? / 19).max(1) as usize,
        queue_max: vars.number("LOGIN_QUEUE_MAX", 256)?,
        queue_wait: vars.secs("LOGIN_QUEUE_WAIT_SECS", 10)?,
        max_failures: vars.positive("LOGIN_MAX_FAILURES", 5)?,
        max_failures_per_client: vars.positive("LOGIN_MAX_FAILURES_PER_CLIENT", 20)?,
        lockout: vars.secs("LOGIN_LOCKOUT_SECS", 30)?,
        lockout_max: vars.secs("LOGIN_LOCKOUT_MAX_SECS", 900)?,
        failure_window: vars.secs("LOGIN_FAILURE_WINDOW_SECS", 900)?,
        forwarded_hops: vars.number("FORWARDED_HOPS", 1)?,
    })
}

/// The monitoring calls' bounds.
fn monitoring(vars: &Settings) -> Result<MonitoringLimits, ConfigError> {
    Ok(MonitoringLimits {
        per_user: vars.positive("MONITORING_MAX_PER_MINUTE_PER_USER", 120)?,
        per_address: vars.positive("MONITORING_MAX_PER_MINUTE_PER_ADDRESS", 1200)?,
        // Days as a PostgreSQL interval: at most a century.
        retention_days: vars.positive("MONITORING_RETENTION_DAYS", 90)?.min(36_500),
        sweep_every: vars.secs("MONITORING_SWEEP_SECS", 3600)?,
    })
}

/// The Redis Stream consumers.
fn consumer(vars: &Settings, dead_letters: Retention) -> Result<ConsumerConfig, ConfigError> {
    let group_start = vars
        .text("CONSUMER_GROUP_START")
        .unwrap_or_else(|| "0".into());
    if group_start != "0" && group_start != "$" {
        return Err(bad("CONSUMER_GROUP_START", "must be 0 or $"));
    }
    Ok(ConsumerConfig {
        dead_letters,
        enabled: vars.flag("CONSUMERS_ENABLED", true)?,
        group: vars
            .text("CONSUMER_GROUP")
            .unwrap_or_else(|| "main-service".into()),
        name: vars
            .text("CONSUMER_NAME")
            .or_else(|| vars.text("HOSTNAME"))
            .unwrap_or_else(|| "main-service".into()),
        group_start,
        claim_idle: vars.millis("CONSUMER_CLAIM_IDLE_MS", 30_000)?,
        batch: vars.positive("CONSUMER_BATCH", 200)?.min(10_000) as usize,
    })
}

/// The tenant of a login without one.
fn default_tenant(vars: &Settings) -> Result<String, ConfigError> {
    match vars.text("DEFAULT_TENANT_ID") {
        None => Ok("1".into()),
        Some(t) if t.len() <= 50 && !t.chars().any(char::is_control) => Ok(t),
        Some(_) => Err(bad(
            "DEFAULT_TENANT_ID",
            "is 1 to 50 characters without control characters",
        )),
    }
}

/// The admin listener, unless `ADMIN_PORT=off`.
fn admin(vars: &Settings) -> Result<Option<(String, u16)>, ConfigError> {
    let host = vars.text("ADMIN_HOST").unwrap_or_else(|| "0.0.0.0".into());
    match vars
        .text("ADMIN_PORT")
        .map(|v| v.trim().to_ascii_lowercase())
    {
        Some(v) if v == "off" => Ok(None),
        Some(raw) => Ok(Some((
            host,
            raw.parse::<u16>()
                .map_err(|_| bad("ADMIN_PORT", format!("{raw:?} is not a port or off")))?,
        ))),
        None => Ok(Some((host, 8091))),
    }
}

/// Only `DATABASE_URL`, from the same layers (for `main-service user add`,
/// which needs no `JWT_SECRET`).
pub fn database_url(
    file: Option<&Path>,
    env: HashMap<String, String>,
) -> Result<String, ConfigError> {
    checked_database_url(Settings::load(file, env)?.text("DATABASE_URL"))
}

fn checked_database_url(value: Option<String>) -> Result<String, ConfigError> {
    let url = value.unwrap_or_else(|| DEFAULT_DATABASE_URL.into());
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(url)
    } else {
        Err(bad(
            "DATABASE_URL",
            format!("{:?} is not a postgres:// URL", redact_url(&url)),
        ))
    }
}

fn bad(var: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::new(var, problem)
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "0123456789abcdef0123456789abcdef";

    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_sources(
            None,
            pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
    }

    #[test]
    fn defaults_and_the_required_secret() {
        assert_eq!(load(&[]).unwrap_err().var, "JWT_SECRET");
        assert_eq!(
            load(&[("JWT_SECRET", "short")]).unwrap_err().var,
            "JWT_SECRET"
        );
        let c = load(&[("JWT_SECRET", SECRET)]).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("0.0.0.0", 8081));
        assert_eq!(c.redis.url, "redis://localhost:6379");
        assert_eq!(c.redis_timeout, Duration::from_secs(1));
        assert_eq!(c.database_url, DEFAULT_DATABASE_URL);
        assert!(c.db_auto_migrate && c.consumer.enabled);
        assert_eq!(c.jwt_ttl, Duration::from_secs(3600));
        assert_eq!(c.consumer.group_start, "0");
    }

    #[test]
    fn redis_parts_build_the_url_and_the_password_is_never_printed() {
        let c = load(&[
            ("JWT_SECRET", SECRET),
            ("REDIS_HOST", "cache"),
            ("REDIS_PORT", "6380"),
            ("REDIS_PASSWORD", "pw-secret"),
        ])
        .unwrap();
        assert_eq!(c.redis.url, "redis://:pw-secret@cache:6380");
        let printed = format!("{c:?}");
        assert!(
            !printed.contains("pw-secret") && !printed.contains(SECRET),
            "{printed}"
        );
    }

    #[test]
    fn the_example_file_loads_and_matches_the_defaults() {
        let file =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/main-service.example.toml");
        let env = HashMap::from([("JWT_SECRET".to_string(), SECRET.to_string())]);
        let from_file = Config::from_sources(Some(&file), env).unwrap();
        let defaults = load(&[("JWT_SECRET", SECRET)]).unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (var, value) in [
            ("SERVER_PORT", "99999"),
            ("REDIS_TIMEOUT_MS", "x"),
            ("REDIS_URL", "not a url"),
            ("DATABASE_URL", "mysql://x/y"),
            ("DB_AUTO_MIGRATE", "maybe"),
            ("CONSUMER_GROUP_START", "1"),
        ] {
            assert_eq!(
                load(&[("JWT_SECRET", SECRET), (var, value)])
                    .unwrap_err()
                    .var,
                var
            );
        }
    }
}
