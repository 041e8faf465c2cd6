//! The Redis every binary connects to: a URL (`REDIS_URL`, or built from
//! `REDIS_HOST`, `REDIS_PORT`, `REDIS_PASSWORD` and `REDIS_TLS`) and, for
//! `rediss://`, the certificate authority that signed the server's
//! certificate (`REDIS_CA_FILE`; the system's roots without it).
//!
//! What is refused at start-up, with a message that says why: a URL the
//! redis crate cannot use, a CA file with a plain `redis://` URL or one that
//! cannot be read, and Redis Cluster (`redis+cluster://`, or several hosts):
//! the contract's keys (`hitl:request:*`, `hitl:signal:*`, the decision
//! stream) fall in different hash slots, so the multi-key operations a
//! decision makes would fail on a cluster at the first decision.

use std::fmt;
use std::path::PathBuf;

use crate::settings::{self, SettingError, Settings};

/// Where Redis is and how to trust it.
#[derive(Clone, PartialEq, Eq)]
pub struct Target {
    /// `redis://` or `rediss://` (TLS), password included.
    pub url: String,
    /// The PEM file of the CA that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &settings::redact_url(&self.url))
            .field("ca_file", &self.ca_file)
            .finish()
    }
}

impl Target {
    /// A target with the system's roots (or none: plain Redis).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca_file: None,
        }
    }

    /// A client for this target (no connection is made yet).
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        let Some(ca_file) = &self.ca_file else {
            return redis::Client::open(self.url.as_str());
        };
        let root_cert = std::fs::read(ca_file).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "REDIS_CA_FILE cannot be read",
                format!("{}: {e}", ca_file.display()),
            ))
        })?;
        redis::Client::build_with_tls(
            self.url.as_str(),
            redis::TlsCertificates {
                client_tls: None,
                root_cert: Some(root_cert),
            },
        )
    }
}

impl Settings {
    /// The Redis target of `REDIS_URL` (or its parts), `REDIS_TLS` and
    /// `REDIS_CA_FILE`, refused when it is not usable (see the module).
    pub fn redis(&self) -> Result<Target, SettingError> {
        let mut url = settings::redis_url(
            self.text("REDIS_URL"),
            self.text("REDIS_HOST"),
            self.number("REDIS_PORT", 6379)?,
            self.text("REDIS_PASSWORD"),
        );
        if self.text("REDIS_URL").is_none() && self.flag("REDIS_TLS", false)? {
            url = url.replacen("redis://", "rediss://", 1);
        }
        let refuse = |why: String| Err(SettingError::new("REDIS_URL", why));
        let shown = settings::redact_url(&url);
        if url.contains("+cluster") || hosts(&url) > 1 {
            return refuse(format!(
                "{shown:?} is a Redis Cluster, which is not supported: the HITL keys and the \
                 decision stream fall in different hash slots (docs/DEPLOY.md); use one primary, \
                 with replicas and Sentinel for failover"
            ));
        }
        let target = Target {
            ca_file: self.text("REDIS_CA_FILE").map(PathBuf::from),
            url,
        };
        if target.ca_file.is_some() && !target.url.starts_with("rediss://") {
            return Err(SettingError::new(
                "REDIS_CA_FILE",
                format!("is set, but {shown:?} is not a TLS URL (rediss://)"),
            ));
        }
        match target.client() {
            Ok(_) => Ok(target),
            Err(e)
                if e.kind() == redis::ErrorKind::InvalidClientConfig
                    && target.ca_file.is_some() =>
            {
                Err(SettingError::new("REDIS_CA_FILE", e.to_string()))
            }
            Err(_) => refuse(format!("{shown:?} is not a Redis URL")),
        }
    }
}

/// How many hosts the URL's authority names (`a:1,b:2` is two).
fn hosts(url: &str) -> usize {
    let rest = url.split_once("://").map_or(url, |(_, rest)| rest);
    let authority = rest.split('/').next().unwrap_or("");
    let hosts = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    hosts.split(',').count()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn redis(vars: &[(&str, &str)]) -> Result<Target, SettingError> {
        let env = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::load(None, env).unwrap().redis()
    }

    #[test]
    fn plain_tls_and_parts() {
        assert_eq!(redis(&[]).unwrap(), Target::new("redis://localhost:6379"));
        assert_eq!(
            redis(&[("REDIS_URL", "rediss://:pw@cache:6380/0")])
                .unwrap()
                .url,
            "rediss://:pw@cache:6380/0"
        );
        assert_eq!(
            redis(&[("REDIS_HOST", "cache"), ("REDIS_TLS", "true")])
                .unwrap()
                .url,
            "rediss://cache:6379"
        );
    }

    #[test]
    fn cluster_urls_are_refused_with_the_reason() {
        for url in [
            "redis+cluster://a:6379",
            "redis://:pw@a:6379,b:6379",
            "rediss://a:1,b:2,c:3/0",
        ] {
            let e = redis(&[("REDIS_URL", url)]).unwrap_err().to_string();
            assert!(
                e.contains("Redis Cluster") && e.contains("hash slots"),
                "{url}: {e}"
            );
            assert!(!e.contains("pw"), "password shown: {e}");
        }
    }

    #[test]
    fn a_ca_file_needs_tls_and_must_be_readable() {
        let e = redis(&[("REDIS_URL", "redis://a:1"), ("REDIS_CA_FILE", "/x.pem")]).unwrap_err();
        assert!(e.to_string().contains("not a TLS URL"), "{e}");
        let e = redis(&[
            ("REDIS_URL", "rediss://a:1"),
            ("REDIS_CA_FILE", "/nonexistent/ca.pem"),
        ])
        .unwrap_err();
        assert!(e.to_string().contains("REDIS_CA_FILE"), "{e}");
    }
}
