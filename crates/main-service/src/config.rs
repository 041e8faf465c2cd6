//! main-service configuration: defaults, optional `config/main-service.toml`
//! (keys are the variable names in lower case), then environment variables
//! with the names of CONTRACT.md section 1. A bad or missing required value
//! stops start-up with a message naming the variable; secrets are never
//! printed.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use dwp_core::settings::{self, redact_url};

/// The default optional configuration file.
pub const DEFAULT_FILE: &str = "config/main-service.toml";

/// A configuration value that could not be used.
#[derive(Debug, thiserror::Error)]
#[error("{var}: {problem}")]
pub struct ConfigError {
    /// The variable at fault.
    pub var: String,
    /// What is wrong with it.
    pub problem: String,
}

/// The main-service configuration.
#[derive(Clone)]
pub struct Config {
    /// `SERVER_HOST` (default `0.0.0.0`).
    pub host: String,
    /// `SERVER_PORT` (default 8081).
    pub port: u16,
    /// `JWT_SECRET`: required, at least 32 bytes.
    pub jwt_secret: String,
    /// `JWT_AUDIENCE`: when set, tokens must carry it in `aud`.
    pub jwt_audience: Option<String>,
    /// `REDIS_URL`, or built from `REDIS_HOST` / `REDIS_PORT` / `REDIS_PASSWORD`.
    pub redis_url: String,
    /// `REDIS_TIMEOUT_MS` (1000): connect and command timeout.
    pub redis_timeout: Duration,
    /// `MAIN_MAX_BODY_BYTES` (1 MiB): larger request bodies are 413.
    pub max_body_bytes: usize,
    /// `MAIN_REQUEST_TIMEOUT_SECS` (30): longest a request may take.
    pub request_timeout: Duration,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &format_args!("{}:{}", self.host, self.port))
            .field("jwt_secret", &"<set>")
            .field("jwt_audience", &self.jwt_audience)
            .field("redis_url", &redact_url(&self.redis_url))
            .field("redis_timeout", &self.redis_timeout)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("request_timeout", &self.request_timeout)
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
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(false));
        }
        let layered = builder
            .add_source(config::Environment::default().source(Some(env)))
            .build()
            .map_err(|e| {
                bad(
                    &file.map(|p| p.display().to_string()).unwrap_or_default(),
                    e.to_string(),
                )
            })?;
        let get = |var: &str| {
            layered
                .get_string(&var.to_ascii_lowercase())
                .ok()
                .filter(|v| !v.is_empty())
        };
        let number = |var: &str, default: u64| -> Result<u64, ConfigError> {
            match get(var) {
                None => Ok(default),
                Some(raw) => match raw.trim().parse::<u64>() {
                    Ok(0) | Err(_) => {
                        Err(bad(var, format!("{raw:?} is not a positive whole number")))
                    }
                    Ok(n) => Ok(n),
                },
            }
        };

        let jwt_secret = get("JWT_SECRET")
            .ok_or_else(|| bad("JWT_SECRET", "is required (at least 32 bytes)"))?;
        if jwt_secret.len() < 32 {
            return Err(bad("JWT_SECRET", "must be at least 32 bytes long"));
        }
        let redis_url = settings::redis_url(
            get("REDIS_URL"),
            get("REDIS_HOST"),
            match number("REDIS_PORT", 6379)? {
                port @ 1..=65535 => port as u16,
                port => return Err(bad("REDIS_PORT", format!("{port} is not a port"))),
            },
            get("REDIS_PASSWORD"),
        );
        if redis::Client::open(redis_url.as_str()).is_err() {
            return Err(bad(
                "REDIS_URL",
                format!("{:?} is not a Redis URL", redact_url(&redis_url)),
            ));
        }
        let port = match get("SERVER_PORT") {
            None => 8081,
            // 0 is allowed: the system picks a free port (tests use it).
            Some(raw) => raw
                .trim()
                .parse::<u16>()
                .map_err(|_| bad("SERVER_PORT", format!("{raw:?} is not a port")))?,
        };
        Ok(Self {
            host: get("SERVER_HOST").unwrap_or_else(|| "0.0.0.0".into()),
            port,
            jwt_secret,
            jwt_audience: get("JWT_AUDIENCE"),
            redis_url,
            redis_timeout: Duration::from_millis(number("REDIS_TIMEOUT_MS", 1000)?),
            max_body_bytes: number("MAIN_MAX_BODY_BYTES", 1024 * 1024)? as usize,
            request_timeout: Duration::from_secs(number("MAIN_REQUEST_TIMEOUT_SECS", 30)?),
        })
    }
}

fn bad(var: &str, problem: impl Into<String>) -> ConfigError {
    ConfigError {
        var: var.into(),
        problem: problem.into(),
    }
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
        assert_eq!(c.redis_url, "redis://localhost:6379");
        assert_eq!(c.redis_timeout, Duration::from_secs(1));
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
        assert_eq!(c.redis_url, "redis://:pw-secret@cache:6380");
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
