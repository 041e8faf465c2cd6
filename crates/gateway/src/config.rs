//! The gateway's configuration: defaults, then an optional TOML file
//! (`config/gateway.toml`, keys are the variable names in lower case), then
//! environment variables with the names of CONTRACT.md section 1.
//!
//! Every value is validated at start; a bad one stops start-up with a
//! message that names the variable.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use dwp_core::settings::{Retention, Secret, SettingError, Settings, parse_flag};
use http::{Method, Uri};

use crate::routes::{RouteSpec, Table};

/// The default optional configuration file, relative to the working directory.
pub const DEFAULT_FILE: &str = "config/gateway.toml";

/// A configuration value that could not be used; the message names the variable.
pub type ConfigError = SettingError;

/// CORS settings (`CORS_*`).
#[derive(Debug, Clone)]
pub struct Cors {
    /// `CORS_ALLOWED_ORIGINS`: exact origins; `*` allows any.
    pub allowed_origins: Vec<String>,
    /// `CORS_ALLOWED_METHODS`.
    pub allowed_methods: Vec<Method>,
    /// `CORS_ALLOWED_HEADERS`: `*` echoes what the browser asks for.
    pub allowed_headers: String,
    /// `CORS_ALLOW_CREDENTIALS`.
    pub allow_credentials: bool,
    /// `CORS_MAX_AGE`, seconds a preflight may be cached.
    pub max_age_secs: u64,
}

/// The whole gateway configuration.
#[derive(Clone)]
pub struct Config {
    /// `SERVER_HOST` (default `0.0.0.0`).
    pub host: String,
    /// `SERVER_PORT` (default 8080).
    pub port: u16,
    /// The routes and their upstream services: the contract's four to
    /// `AURA_PLATFORM_URI` (default `http://localhost:9000`),
    /// `MAIN_SERVICE_URI` (default `http://localhost:8081`) and
    /// `AUTH_SERVER_URI` (default: `MAIN_SERVICE_URI`), the old deployment's
    /// `AURA_PLATFORM_URL`, `SERVICE_MAIN_URL` and `SERVICE_AUTH_URL` also
    /// accepted; and the file's `[[routes]]` ([`crate::routes::RouteSpec`]).
    pub routes: Table,
    /// The `CORS_*` settings.
    pub cors: Cors,
    /// `JWT_SECRET` (at least 32 bytes): the edge checks tokens with it.
    /// Required unless `GATEWAY_AUTH=off`; `None` only then.
    pub jwt_secret: Option<Secret>,
    /// `JWT_MAX_LIFETIME_SECS` (86400): tokens whose `exp - iat` is longer are refused.
    pub jwt_max_lifetime: Duration,
    /// `GATEWAY_TOKEN_CACHE_SIZE` (10000; 0 = none): verified tokens each
    /// worker keeps ([`crate::tokens`]).
    pub token_cache_size: usize,
    /// `GATEWAY_CONNECT_TIMEOUT_SECS` (10).
    pub connect_timeout: Duration,
    /// `GATEWAY_RESPONSE_TIMEOUT_SECS` (300): to the upstream's response headers.
    pub response_timeout: Duration,
    /// `GATEWAY_HEADER_READ_TIMEOUT_SECS` (30): longest a client may take to
    /// send a request head, including the wait for the next request on a
    /// kept-alive connection (the slowloris bound).
    pub header_read_timeout: Duration,
    /// `GATEWAY_BODY_READ_TIMEOUT_SECS` (60): longest a client may take to
    /// send a request body; later is 408. The first 64 KiB are read before
    /// an upstream connection is taken.
    pub body_read_timeout: Duration,
    /// `GATEWAY_STREAM_IDLE_TIMEOUT_SECS` (3600): silence that ends a stream;
    /// it must exceed the longest an agent waits for a decision (a paused run
    /// is silent that long).
    pub stream_idle_timeout: Duration,
    /// `GATEWAY_SSE_HEARTBEAT_SECS` (15; 0 turns heartbeats off).
    pub sse_heartbeat: Option<Duration>,
    /// `GATEWAY_MAX_BODY_BYTES` (10 MiB).
    pub max_body_bytes: u64,
    /// `GATEWAY_POOL_MAX_CONNECTIONS` (500), per upstream.
    pub pool_max_connections: usize,
    /// `GATEWAY_POOL_IDLE_TIMEOUT_SECS` (30).
    pub pool_idle_timeout: Duration,
    /// `GATEWAY_SHUTDOWN_GRACE_SECS` (30).
    pub shutdown_grace: Duration,
    /// `GATEWAY_WORKER_THREADS` (default: the number of CPUs): one
    /// single-threaded runtime per worker.
    pub worker_threads: usize,
    /// Redis ([`dwp_core::redis`]): `REDIS_URL` or its parts
    /// (`REDIS_HOST`, `REDIS_PORT`, `REDIS_PASSWORD`, `REDIS_TLS`), and
    /// `REDIS_CA_FILE` for TLS. Where the stream recorder writes.
    pub redis: dwp_core::redis::Target,
    /// `GATEWAY_RECORDER_ENABLED` (true): tee agent streams into Redis.
    pub recorder_enabled: bool,
    /// `GATEWAY_RECORDER_MAX_EVENT_BYTES` (262144) and the stream's
    /// `STREAM_MAX_LEN` (100000) / `STREAM_MAX_AGE_SECS` (604800).
    pub recorder: crate::recorder::Limits,
    /// `GATEWAY_MAX_REQUESTS_PER_CLIENT` (1024; 0 = no cap): open
    /// connections (so requests and streams) per client address (behind a proxy every client shares
    /// its address: raise it or turn it off there).
    pub max_requests_per_client: usize,
    /// `GATEWAY_MAX_REQUESTS_PER_USER` (256; 0 = no cap): open requests per token `sub`.
    pub max_requests_per_user: usize,
    /// `GATEWAY_MAX_STREAMS_PER_USER` (32; 0 = no cap): open agent streams per token `sub`.
    pub max_streams_per_user: usize,
    /// `ADMIN_HOST` (`0.0.0.0`) and `ADMIN_PORT` (8090; `off` for none):
    /// the listener of `/metrics` (and `/health`), apart from the public port.
    pub admin: Option<(String, u16)>,
    /// `GATEWAY_FORWARDED_HOPS` (0): trusted proxies in front of the gateway
    /// (an Ingress: 1). When above 0, a client's address is the
    /// `X-Forwarded-For` entry they appended (not the connection's, which
    /// every client behind them shares), the per-address cap counts requests
    /// by it, and their `X-Forwarded-Host`/`-Proto` are kept.
    pub forwarded_hops: usize,
    /// `GATEWAY_BODY_MIN_BYTES_PER_SEC` (32768; 0 = none): once an upstream
    /// connection is taken for a body larger than the first 64 KiB, the rest
    /// must keep this pace (after a second's grace), else 408 and the
    /// connection is freed.
    pub body_min_rate: u64,
    /// `GATEWAY_WRITE_IDLE_TIMEOUT_SECS` (30): longest a client may leave a
    /// response frame unread; then its connection is closed and the upstream
    /// connection freed.
    pub write_idle_timeout: Duration,
    /// `GATEWAY_ROUTE_MAX_POOL_PERCENT` (50): the share of an upstream's pool
    /// one route's open requests may hold when other routes share that
    /// pool (100: no cap), so one route's clients never take the connections
    /// another needs.
    pub route_max_pool_percent: usize,
    /// Resumable streams: `GATEWAY_STREAM_DETACH_SECS` (300),
    /// `GATEWAY_STREAM_RETENTION_SECS` (3600),
    /// `GATEWAY_STREAM_JOURNAL_MAX_BYTES` (64 MiB).
    pub streams: crate::streams::Settings,
    /// `GATEWAY_TLS_CERT_FILE` and `GATEWAY_TLS_KEY_FILE`: the listener
    /// speaks TLS (ALPN `h2`, `http/1.1`).
    pub tls: Option<crate::tls::Files>,
    /// `GATEWAY_H2C` (false): cleartext HTTP/2 with prior knowledge beside
    /// HTTP/1.1 on a listener without TLS (internal callers; its version
    /// sniffing costs each connection about 2 KiB, so it is asked for).
    pub h2c: bool,
    /// `GATEWAY_H2_MAX_STREAMS` (100): concurrent streams per HTTP/2 connection.
    pub h2_max_streams: u32,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &format_args!("{}:{}", self.host, self.port))
            .field("services", &self.routes.services)
            .field(
                "routes",
                &self
                    .routes
                    .routes
                    .iter()
                    .map(|r| r.prefix)
                    .collect::<Vec<_>>(),
            )
            .field("cors", &self.cors)
            .field("jwt_secret", &self.jwt_secret)
            .field("jwt_max_lifetime", &self.jwt_max_lifetime)
            .field("token_cache_size", &self.token_cache_size)
            .field("connect_timeout", &self.connect_timeout)
            .field("response_timeout", &self.response_timeout)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("body_read_timeout", &self.body_read_timeout)
            .field("stream_idle_timeout", &self.stream_idle_timeout)
            .field("sse_heartbeat", &self.sse_heartbeat)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("pool_max_connections", &self.pool_max_connections)
            .field("pool_idle_timeout", &self.pool_idle_timeout)
            .field("shutdown_grace", &self.shutdown_grace)
            .field("worker_threads", &self.worker_threads)
            .field("redis", &self.redis)
            .field("recorder_enabled", &self.recorder_enabled)
            .field("recorder", &self.recorder)
            .field("max_requests_per_client", &self.max_requests_per_client)
            .field("max_requests_per_user", &self.max_requests_per_user)
            .field("max_streams_per_user", &self.max_streams_per_user)
            .field("admin", &self.admin)
            .field("forwarded_hops", &self.forwarded_hops)
            .field("body_min_rate", &self.body_min_rate)
            .field("write_idle_timeout", &self.write_idle_timeout)
            .field("route_max_pool_percent", &self.route_max_pool_percent)
            .finish()
    }
}

impl Config {
    /// Loads `config/gateway.toml` (if present) and the process environment.
    pub fn load() -> Result<Self, ConfigError> {
        Self::from_sources(Some(Path::new(DEFAULT_FILE)), std::env::vars().collect())
    }

    /// Loads from an optional file and an explicit variable map (tests pass
    /// their own map instead of touching the process environment).
    pub fn from_sources(
        file: Option<&Path>,
        env: HashMap<String, String>,
    ) -> Result<Self, ConfigError> {
        let vars = Settings::load(file, env)?;
        Ok(Self {
            host: vars.text("SERVER_HOST").unwrap_or_else(|| "0.0.0.0".into()),
            port: vars.number("SERVER_PORT", 8080)?,
            routes: routes(&vars)?,
            cors: cors(&vars)?,
            jwt_secret: jwt_secret(&vars)?,
            jwt_max_lifetime: vars.secs("JWT_MAX_LIFETIME_SECS", 24 * 3600)?,
            token_cache_size: vars.number("GATEWAY_TOKEN_CACHE_SIZE", 10_000)?,
            connect_timeout: vars.secs("GATEWAY_CONNECT_TIMEOUT_SECS", 10)?,
            response_timeout: vars.secs("GATEWAY_RESPONSE_TIMEOUT_SECS", 300)?,
            header_read_timeout: vars.secs("GATEWAY_HEADER_READ_TIMEOUT_SECS", 30)?,
            body_read_timeout: vars.secs("GATEWAY_BODY_READ_TIMEOUT_SECS", 60)?,
            stream_idle_timeout: vars.secs("GATEWAY_STREAM_IDLE_TIMEOUT_SECS", 3600)?,
            sse_heartbeat: match vars.number::<u64>("GATEWAY_SSE_HEARTBEAT_SECS", 15)? {
                0 => None,
                secs => Some(Duration::from_secs(secs)),
            },
            max_body_bytes: vars.positive("GATEWAY_MAX_BODY_BYTES", 10 * 1024 * 1024)?,
            pool_max_connections: vars.positive("GATEWAY_POOL_MAX_CONNECTIONS", 500)? as usize,
            pool_idle_timeout: vars.secs("GATEWAY_POOL_IDLE_TIMEOUT_SECS", 30)?,
            shutdown_grace: vars.secs("GATEWAY_SHUTDOWN_GRACE_SECS", 30)?,
            worker_threads: vars.positive(
                "GATEWAY_WORKER_THREADS",
                std::thread::available_parallelism().map_or(1, |n| n.get() as u64),
            )? as usize,
            redis: vars.redis()?,
            recorder_enabled: vars.flag("GATEWAY_RECORDER_ENABLED", true)?,
            recorder: crate::recorder::Limits {
                max_event_bytes: vars.positive("GATEWAY_RECORDER_MAX_EVENT_BYTES", 256 * 1024)?
                    as usize,
                retention: Retention {
                    max_len: vars.positive("STREAM_MAX_LEN", Retention::default().max_len)?,
                    max_age_secs: vars
                        .positive("STREAM_MAX_AGE_SECS", Retention::default().max_age_secs)?,
                },
            },
            max_requests_per_client: vars.number("GATEWAY_MAX_REQUESTS_PER_CLIENT", 1024)?,
            max_requests_per_user: vars.number("GATEWAY_MAX_REQUESTS_PER_USER", 256)?,
            max_streams_per_user: vars.number("GATEWAY_MAX_STREAMS_PER_USER", 32)?,
            admin: admin(&vars)?,
            forwarded_hops: vars.number("GATEWAY_FORWARDED_HOPS", 0)?,
            body_min_rate: vars.number("GATEWAY_BODY_MIN_BYTES_PER_SEC", 32 * 1024)?,
            write_idle_timeout: vars.secs("GATEWAY_WRITE_IDLE_TIMEOUT_SECS", 30)?,
            tls: tls_files(&vars)?,
            h2c: vars.flag("GATEWAY_H2C", false)?,
            h2_max_streams: vars
                .positive("GATEWAY_H2_MAX_STREAMS", 100)?
                .min(u64::from(u32::MAX)) as u32,
            streams: crate::streams::Settings {
                detach: vars.secs("GATEWAY_STREAM_DETACH_SECS", 300)?,
                retention: vars.secs("GATEWAY_STREAM_RETENTION_SECS", 3600)?,
                journal_max_bytes: vars
                    .positive("GATEWAY_STREAM_JOURNAL_MAX_BYTES", 64 * 1024 * 1024)?
                    as usize,
            },
            route_max_pool_percent: match vars.positive("GATEWAY_ROUTE_MAX_POOL_PERCENT", 50)? {
                p @ 1..=100 => p as usize,
                _ => {
                    return Err(SettingError::new(
                        "GATEWAY_ROUTE_MAX_POOL_PERCENT",
                        "must be 1 to 100",
                    ));
                }
            },
        })
    }
}

/// The route table: the contract's routes to their services, and the file's `[[routes]]`.
fn routes(vars: &Settings) -> Result<Table, ConfigError> {
    let main_uri = uri(
        vars,
        ("MAIN_SERVICE_URI", "SERVICE_MAIN_URL"),
        "http://localhost:8081",
    )?;
    let auth_uri = match vars.aliased(("AUTH_SERVER_URI", "SERVICE_AUTH_URL")) {
        Some(_) => uri(vars, ("AUTH_SERVER_URI", "SERVICE_AUTH_URL"), "")?,
        None => main_uri.clone(),
    };
    let specs: Vec<RouteSpec> = match vars.layers().get("routes") {
        Ok(specs) => specs,
        Err(config::ConfigError::NotFound(_)) => Vec::new(),
        Err(e) => return Err(bad("ROUTES", format!("[[routes]] in the file: {e}"))),
    };
    let aura_uri = uri(
        vars,
        ("AURA_PLATFORM_URI", "AURA_PLATFORM_URL"),
        "http://localhost:9000",
    )?;
    let defaults = crate::policy::Defaults {
        response_timeout: vars.secs("GATEWAY_RESPONSE_TIMEOUT_SECS", 300)?,
        idle_timeout: vars.secs("GATEWAY_STREAM_IDLE_TIMEOUT_SECS", 3600)?,
        max_body_bytes: vars.positive("GATEWAY_MAX_BODY_BYTES", 10 * 1024 * 1024)?,
    };
    Table::build(aura_uri, main_uri, auth_uri, &specs, defaults).map_err(|e| bad("ROUTES", e.0))
}

/// `GATEWAY_TLS_CERT_FILE` and `GATEWAY_TLS_KEY_FILE`: both, or neither.
fn tls_files(vars: &Settings) -> Result<Option<crate::tls::Files>, ConfigError> {
    match (
        vars.text("GATEWAY_TLS_CERT_FILE"),
        vars.text("GATEWAY_TLS_KEY_FILE"),
    ) {
        (None, None) => Ok(None),
        (Some(cert), Some(key)) => Ok(Some(crate::tls::Files {
            cert: cert.into(),
            key: key.into(),
        })),
        (Some(_), None) => Err(bad(
            "GATEWAY_TLS_KEY_FILE",
            "is required with GATEWAY_TLS_CERT_FILE",
        )),
        (None, Some(_)) => Err(bad(
            "GATEWAY_TLS_CERT_FILE",
            "is required with GATEWAY_TLS_KEY_FILE",
        )),
    }
}

/// `JWT_SECRET`, required unless `GATEWAY_AUTH=off`.
fn jwt_secret(vars: &Settings) -> Result<Option<Secret>, ConfigError> {
    let auth_on = match vars.text("GATEWAY_AUTH") {
        None => true,
        Some(v) => {
            parse_flag(&v).ok_or_else(|| bad("GATEWAY_AUTH", format!("{v:?} is not on or off")))?
        }
    };
    match vars.secret("JWT_SECRET") {
        _ if !auth_on => Ok(None),
        None => Err(bad(
            "JWT_SECRET",
            "is required (at least 32 bytes); GATEWAY_AUTH=off turns the edge token check off for local development",
        )),
        Some(s) if s.len() < 32 => Err(bad("JWT_SECRET", "must be at least 32 bytes long")),
        Some(s) => Ok(Some(s)),
    }
}

/// The `CORS_*` settings; `*` with credentials is refused.
fn cors(vars: &Settings) -> Result<Cors, ConfigError> {
    let allowed_origins = vars.list("CORS_ALLOWED_ORIGINS", "http://localhost:4200");
    let allow_credentials = vars.flag("CORS_ALLOW_CREDENTIALS", true)?;
    if allow_credentials && allowed_origins.iter().any(|o| o == "*") {
        return Err(bad(
            "CORS_ALLOWED_ORIGINS",
            "\"*\" with CORS_ALLOW_CREDENTIALS=true would let any site, \"null\" included, call the API with the user's credentials: list the origins, or set CORS_ALLOW_CREDENTIALS=false",
        ));
    }
    Ok(Cors {
        allowed_origins,
        allowed_methods: vars
            .list("CORS_ALLOWED_METHODS", "GET,POST,PUT,DELETE,PATCH,OPTIONS")
            .iter()
            .map(|m| {
                Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                    bad(
                        "CORS_ALLOWED_METHODS",
                        format!("{m:?} is not an HTTP method"),
                    )
                })
            })
            .collect::<Result<_, _>>()?,
        allowed_headers: vars
            .text("CORS_ALLOWED_HEADERS")
            .unwrap_or_else(|| "*".into()),
        allow_credentials,
        max_age_secs: vars.number("CORS_MAX_AGE", 3600)?,
    })
}

/// The admin listener, unless `ADMIN_PORT=off`.
fn admin(vars: &Settings) -> Result<Option<(String, u16)>, ConfigError> {
    match vars
        .text("ADMIN_PORT")
        .map(|v| v.trim().to_ascii_lowercase())
    {
        Some(v) if v == "off" => Ok(None),
        _ => Ok(Some((
            vars.text("ADMIN_HOST").unwrap_or_else(|| "0.0.0.0".into()),
            vars.number("ADMIN_PORT", 8090)?,
        ))),
    }
}

fn bad(var: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError::new(var, problem)
}

/// An `http://host:port` URI setting (or its old name).
fn uri(vars: &Settings, (var, alias): (&str, &str), default: &str) -> Result<Uri, ConfigError> {
    let raw = vars.aliased((var, alias)).unwrap_or_else(|| default.into());
    let uri: Uri = raw
        .trim()
        .parse()
        .map_err(|_| bad(var, format!("{raw:?} is not a URI")))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() {
        return Err(bad(var, format!("{raw:?} must be an http://host:port URI")));
    }
    Ok(uri)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::routes::{Edge, Upstream};

    const SECRET: &str = "s3cr3t-s3cr3t-s3cr3t-s3cr3t-s3cr3t";

    /// With a secret unless `pairs` set one (or turn the check off).
    fn load(pairs: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let mut env: HashMap<String, String> =
            HashMap::from([("JWT_SECRET".into(), SECRET.into())]);
        env.extend(pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        Config::from_sources(None, env)
    }

    #[test]
    fn the_edge_check_is_on_unless_turned_off_and_needs_a_secret() {
        let err = Config::from_sources(None, HashMap::new()).unwrap_err();
        assert_eq!(err.var, "JWT_SECRET");
        let off = load(&[("GATEWAY_AUTH", "off")]).unwrap();
        assert!(off.jwt_secret.is_none(), "off ignores the secret");
        assert_eq!(
            load(&[("GATEWAY_AUTH", "maybe")]).unwrap_err().var,
            "GATEWAY_AUTH"
        );
        assert_eq!(load(&[]).unwrap().jwt_secret.as_deref(), Some(SECRET));
    }

    #[test]
    fn any_origin_with_credentials_is_refused_at_start() {
        let err = load(&[("CORS_ALLOWED_ORIGINS", "*")]).unwrap_err();
        assert_eq!(err.var, "CORS_ALLOWED_ORIGINS");
        assert!(err.problem.contains("CORS_ALLOW_CREDENTIALS"), "{err}");
        let c = load(&[
            ("CORS_ALLOWED_ORIGINS", "*"),
            ("CORS_ALLOW_CREDENTIALS", "false"),
        ])
        .unwrap();
        assert_eq!(c.cors.allowed_origins, ["*"]);
    }

    #[test]
    fn defaults_are_the_contract_defaults() {
        let c = load(&[]).unwrap();
        assert_eq!((c.host.as_str(), c.port), ("0.0.0.0", 8080));
        let uri = |u| c.routes.service(u).uri.to_string();
        assert_eq!(uri(Upstream::AURA), "http://localhost:9000/");
        assert_eq!(uri(Upstream::MAIN), "http://localhost:8081/");
        assert_eq!(uri(Upstream::AUTH), uri(Upstream::MAIN));
        let prefixes: Vec<_> = c.routes.routes.iter().map(|r| r.prefix).collect();
        assert_eq!(
            prefixes,
            [
                "/api/aura/hitl/events",
                "/api/monitoring",
                "/api/aura/hitl",
                "/api/aura",
                "/api/main",
                "/api/auth"
            ]
        );
        assert_eq!(c.cors.allowed_origins, ["http://localhost:4200"]);
        assert_eq!(c.cors.allowed_methods.len(), 6);
        assert!(c.cors.allow_credentials);
        assert_eq!(c.cors.max_age_secs, 3600);
        assert_eq!(c.jwt_max_lifetime, Duration::from_secs(86400));
        assert_eq!(c.token_cache_size, 10_000);
        assert_eq!(c.admin, Some(("0.0.0.0".into(), 8090)));
        assert_eq!(c.body_read_timeout, Duration::from_secs(60));
        assert_eq!(
            (
                c.max_requests_per_client,
                c.max_requests_per_user,
                c.max_streams_per_user
            ),
            (1024, 256, 32)
        );
        assert_eq!(c.connect_timeout, Duration::from_secs(10));
        assert_eq!(c.response_timeout, Duration::from_secs(300));
        assert_eq!(c.header_read_timeout, Duration::from_secs(30));
        assert_eq!(c.stream_idle_timeout, Duration::from_secs(3600));
        assert_eq!(c.sse_heartbeat, Some(Duration::from_secs(15)));
        assert_eq!(c.max_body_bytes, 10 * 1024 * 1024);
        assert_eq!(c.pool_max_connections, 500);
        assert_eq!(c.pool_idle_timeout, Duration::from_secs(30));
        assert_eq!(c.shutdown_grace, Duration::from_secs(30));
    }

    #[test]
    fn environment_overrides_and_heartbeat_zero_turns_it_off() {
        let c = load(&[
            ("SERVER_PORT", "9999"),
            ("AUTH_SERVER_URI", "http://auth:7000"),
            ("GATEWAY_SSE_HEARTBEAT_SECS", "0"),
            ("CORS_ALLOWED_ORIGINS", "http://a, http://b"),
        ])
        .unwrap();
        assert_eq!(c.port, 9999);
        assert_eq!(c.routes.service(Upstream::AUTH).uri, "http://auth:7000/");
        assert_eq!(c.sse_heartbeat, None);
        assert_eq!(c.cors.allowed_origins, ["http://a", "http://b"]);
    }

    #[test]
    fn a_bad_value_names_its_variable() {
        for (var, value) in [
            ("GATEWAY_CONNECT_TIMEOUT_SECS", "ten"),
            ("GATEWAY_RESPONSE_TIMEOUT_SECS", "0"),
            ("GATEWAY_MAX_BODY_BYTES", "-1"),
            ("GATEWAY_WORKER_THREADS", "0"),
            ("SERVER_PORT", "70000"),
            ("AURA_PLATFORM_URI", "not a uri"),
            ("MAIN_SERVICE_URI", "https://tls-not-supported:1"),
            ("CORS_ALLOW_CREDENTIALS", "maybe"),
            ("CORS_ALLOWED_METHODS", "GET,BAD METHOD"),
            ("JWT_SECRET", "short"),
        ] {
            let err = load(&[(var, value)]).unwrap_err();
            assert_eq!(err.var, var, "{var}={value}: {err}");
            assert!(err.to_string().starts_with(var));
        }
    }

    #[test]
    fn the_old_deployments_variable_names_are_accepted_and_the_new_ones_win() {
        let c = load(&[
            ("AURA_PLATFORM_URL", "http://aura-old:9000"),
            ("SERVICE_MAIN_URL", "http://main-old:8081"),
            ("SERVICE_AUTH_URL", "http://auth-old:8082"),
        ])
        .unwrap();
        let uri = |u| c.routes.service(u).uri.to_string();
        assert_eq!(uri(Upstream::AURA), "http://aura-old:9000/");
        assert_eq!(uri(Upstream::MAIN), "http://main-old:8081/");
        assert_eq!(uri(Upstream::AUTH), "http://auth-old:8082/");
        let c = load(&[
            ("SERVICE_MAIN_URL", "http://main-old:8081"),
            ("MAIN_SERVICE_URI", "http://main-new:8081"),
        ])
        .unwrap();
        assert_eq!(
            c.routes.service(Upstream::MAIN).uri,
            "http://main-new:8081/"
        );
    }

    fn with_file(toml: &str) -> Result<Config, ConfigError> {
        let dir = std::env::temp_dir().join(format!("gw-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gateway.toml");
        std::fs::write(&file, toml).unwrap();
        let env = HashMap::from([("GATEWAY_AUTH".to_string(), "off".to_string())]);
        let c = Config::from_sources(Some(&file), env);
        std::fs::remove_dir_all(dir).unwrap();
        c
    }

    #[test]
    fn routes_added_in_the_file_join_the_table_by_specificity() {
        let c = with_file(
            r#"
[[routes]]
prefix = "/api/synapse"
uri = "http://synapse:8080/base"

[[routes]]
name = "cases"
prefix = "/api/aura/cases/"
uri = "http://analysis:9100"
strip_prefix = 3
preserve_host = true
token_check = false
"#,
        )
        .unwrap();
        let table = c.routes;
        let found = |path| table.find(path).unwrap().map(|(r, p)| (r.name, p));
        assert_eq!(
            found("/api/synapse/callback?x"),
            Some(("synapse", "/synapse/callback?x"))
        );
        assert_eq!(
            found("/api/aura/cases/7/stream"),
            Some(("cases", "/7/stream"))
        );
        assert_eq!(found("/api/aura/cases"), Some(("cases", "/")));
        assert_eq!(
            found("/api/aura/test/stream"),
            Some(("aura", "/aura/test/stream"))
        );
        assert_eq!(
            found("/api/aura/hitl/x"),
            Some(("aura-hitl", "/aura/hitl/x"))
        );
        let (synapse, _) = table.find("/api/synapse").unwrap().unwrap();
        assert_eq!(
            table.service(synapse.upstream).uri,
            "http://synapse:8080/base"
        );
        assert_eq!(
            (synapse.policy.edge, synapse.stripped),
            (Edge::Token, "/api")
        );
        let (cases, _) = table.find("/api/aura/cases").unwrap().unwrap();
        assert_eq!(
            (
                cases.policy.edge,
                cases.policy.preserve_host,
                cases.policy.record
            ),
            (Edge::Open, true, false)
        );
        assert_eq!(cases.stripped, "/api/aura/cases");
    }

    #[test]
    fn a_bad_route_in_the_file_stops_start_up_with_what_is_wrong() {
        for (toml, says) in [
            (
                "[[routes]]\nprefix = \"api/x\"\nuri = \"http://x:1\"",
                "absolute path",
            ),
            (
                "[[routes]]\nprefix = \"/api/../main\"\nuri = \"http://x:1\"",
                "dot segments",
            ),
            (
                "[[routes]]\nprefix = \"/api/x\"\nuri = \"https://x:1\"",
                "http://host:port",
            ),
            (
                "[[routes]]\nprefix = \"/api/x\"\nuri = \"http://x:1\"\nstrip_prefix = 3",
                "strip_prefix",
            ),
            (
                "[[routes]]\nprefix = \"/api/main\"\nuri = \"http://x:1\"",
                "clashes",
            ),
            (
                "[[routes]]\nprefix = \"/api/x\"\nuri = \"http://x:1\"\ntoken = true",
                "token",
            ),
            ("[[routes]]\nprefix = \"/api/x\"", "uri"),
        ] {
            let err = with_file(toml).unwrap_err();
            assert_eq!(err.var, "ROUTES", "{toml}: {err}");
            assert!(err.problem.contains(says), "{toml}: {err}");
        }
    }

    #[test]
    fn the_file_layer_sits_under_the_environment() {
        let dir = std::env::temp_dir().join(format!("gw-config-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("gateway.toml");
        std::fs::write(&file, "server_port = 7001\ngateway_max_body_bytes = 1024\n").unwrap();
        let env = HashMap::from([
            ("SERVER_PORT".to_string(), "7002".to_string()),
            ("GATEWAY_AUTH".to_string(), "off".to_string()),
        ]);
        let c = Config::from_sources(Some(&file), env).unwrap();
        assert_eq!(c.port, 7002, "environment wins");
        assert_eq!(c.max_body_bytes, 1024, "file beats the default");
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn the_example_file_loads_and_matches_the_defaults() {
        let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config/gateway.example.toml");
        assert!(file.exists());
        let env = HashMap::from([("JWT_SECRET".to_string(), SECRET.to_string())]);
        let from_file = Config::from_sources(Some(&file), env).unwrap();
        let defaults = load(&[]).unwrap();
        assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let c = load(&[]).unwrap();
        assert!(!format!("{c:?}").contains("s3cr3t"));
    }
}
