//! The Redis every binary connects to: a URL (`REDIS_URL`, or built from
//! `REDIS_HOST`, `REDIS_PORT`, `REDIS_PASSWORD` and `REDIS_TLS`) and, for
//! `rediss://`, the certificate authority that signed the server's
//! certificate (`REDIS_CA_FILE`; the system's roots without it).
//!
//! With Sentinel (`REDIS_SENTINELS`, `REDIS_SENTINEL_MASTER`) the primary's
//! address is not a setting: [`Target::primary`] asks the sentinels for it
//! (and checks that the node answers `ROLE` as a master) each time a
//! connection is made, so a process that reconnects after a failover
//! reaches the promoted replica. Every holder of a connection reconnects
//! through [`Target::primary`]; none keeps an address of its own. The
//! password, TLS and CA settings apply to the primary and the sentinels
//! alike; `REDIS_SENTINEL_PASSWORD` is the sentinels' own when they have
//! one.
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
    /// `redis://` or `rediss://` (TLS), password included. With
    /// [`Target::sentinel`] its host is a placeholder: only the scheme,
    /// the password and the database count.
    pub url: String,
    /// The PEM file of the CA that signed the server's certificate.
    pub ca_file: Option<PathBuf>,
    /// The sentinels that know the primary, when there are.
    pub sentinel: Option<Sentinel>,
}

/// A Sentinel group: who to ask for the primary of which master name.
#[derive(Clone, PartialEq, Eq)]
pub struct Sentinel {
    /// The name the sentinels monitor the primary under.
    pub master: String,
    /// The sentinels, `(host, port)`.
    pub nodes: Vec<(String, u16)>,
    /// The sentinels' own password (`requirepass` of the sentinels).
    pub password: Option<String>,
}

impl fmt::Debug for Sentinel {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Sentinel")
            .field("master", &self.master)
            .field("nodes", &self.nodes)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl fmt::Debug for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Target")
            .field("url", &settings::redact_url(&self.url))
            .field("ca_file", &self.ca_file)
            .field("sentinel", &self.sentinel)
            .finish()
    }
}

impl Target {
    /// A target with the system's roots (or none: plain Redis).
    pub fn new(url: impl Into<String>) -> Self {
        Self {
            url: url.into(),
            ca_file: None,
            sentinel: None,
        }
    }

    /// A client of the primary as it is now (see the module): the fixed
    /// server, or the one the sentinels name. Call it again to reconnect.
    pub async fn primary(&self) -> redis::RedisResult<redis::Client> {
        match &self.sentinel {
            None => self.fixed_client(),
            Some(sentinel) => self.sentinel_client(sentinel)?.async_get_client().await,
        }
    }

    /// A connection manager of the primary for a writer that must not wait:
    /// connecting and every reply within `timeout`, no retries (the caller
    /// retries, asking for the primary again).
    pub async fn writer(
        &self,
        timeout: std::time::Duration,
    ) -> Result<redis::aio::ConnectionManager, String> {
        let config = redis::aio::ConnectionManagerConfig::new()
            .set_connection_timeout(Some(timeout))
            .set_response_timeout(Some(timeout))
            .set_number_of_retries(0);
        let open = async {
            let client = self.primary().await?;
            client.get_connection_manager_with_config(config).await
        };
        tokio::time::timeout(timeout, open)
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())
    }

    /// The client of a target without Sentinel (no connection is made).
    fn fixed_client(&self) -> redis::RedisResult<redis::Client> {
        match self.certificates()? {
            None => redis::Client::open(self.url.as_str()),
            Some(certificates) => redis::Client::build_with_tls(self.url.as_str(), certificates),
        }
    }

    /// The CA of `REDIS_CA_FILE`, read.
    fn certificates(&self) -> redis::RedisResult<Option<redis::TlsCertificates>> {
        let Some(ca_file) = &self.ca_file else {
            return Ok(None);
        };
        let root_cert = std::fs::read(ca_file).map_err(|e| {
            redis::RedisError::from((
                redis::ErrorKind::InvalidClientConfig,
                "REDIS_CA_FILE cannot be read",
                format!("{}: {e}", ca_file.display()),
            ))
        })?;
        Ok(Some(redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root_cert),
        }))
    }

    /// A Sentinel client (no connection is made): the primary's password,
    /// database and TLS from [`Target::url`], the sentinels' from
    /// [`Sentinel`], one CA for both.
    fn sentinel_client(
        &self,
        sentinel: &Sentinel,
    ) -> redis::RedisResult<redis::sentinel::SentinelClient> {
        use redis::IntoConnectionInfo;
        let info = self.url.as_str().into_connection_info()?;
        let tls = matches!(info.addr(), redis::ConnectionAddr::TcpTls { .. });
        let nodes = sentinel.nodes.iter().map(|(host, port)| match tls {
            false => redis::ConnectionAddr::Tcp(host.clone(), *port),
            true => redis::ConnectionAddr::TcpTls {
                host: host.clone(),
                port: *port,
                insecure: false,
                tls_params: None,
            },
        });
        let mut builder = redis::sentinel::SentinelClientBuilder::new(
            nodes,
            &sentinel.master,
            redis::sentinel::SentinelServerType::Master,
        )?
        .set_client_to_redis_db(info.redis_settings().db());
        if let Some(password) = info.redis_settings().password() {
            builder = builder.set_client_to_redis_password(password);
        }
        if let Some(password) = &sentinel.password {
            builder = builder.set_client_to_sentinel_password(password);
        }
        if tls {
            builder = builder
                .set_client_to_redis_tls_mode(redis::TlsMode::Secure)
                .set_client_to_sentinel_tls_mode(redis::TlsMode::Secure);
            if let Some(certificates) = self.certificates()? {
                builder = builder
                    .set_client_to_redis_certificates(certificates.clone())
                    .set_client_to_sentinel_certificates(certificates);
            }
        }
        builder.build()
    }

    /// Whether the client must be made again after `error`: with Sentinel,
    /// a connection that failed or a node that answers READONLY (a demoted
    /// primary) means the primary may have moved. Without Sentinel the
    /// connection managers reconnect to the one address by themselves.
    pub fn moved(&self, error: &redis::RedisError) -> bool {
        self.sentinel.is_some()
            && (error.is_io_error()
                || error.is_connection_dropped()
                || error.is_connection_refusal()
                || error.is_timeout()
                || error.code() == Some("READONLY"))
    }
}

impl Settings {
    /// The Redis target of `REDIS_URL` (or its parts), `REDIS_TLS` and
    /// `REDIS_CA_FILE`, refused when it is not usable (see the module).
    pub fn redis(&self) -> Result<Target, SettingError> {
        let sentinel = self.sentinel()?;
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
            sentinel,
        };
        if target.ca_file.is_some() && !target.url.starts_with("rediss://") {
            return Err(SettingError::new(
                "REDIS_CA_FILE",
                format!("is set, but {shown:?} is not a TLS URL (rediss://)"),
            ));
        }
        let client = match &target.sentinel {
            None => target.fixed_client().map(drop),
            Some(sentinel) => target.sentinel_client(sentinel).map(drop),
        };
        match client {
            Ok(()) => Ok(target),
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

impl Settings {
    /// `REDIS_SENTINELS` (comma list of `host[:port]`, port 26379 when
    /// left out), `REDIS_SENTINEL_MASTER` and `REDIS_SENTINEL_PASSWORD`;
    /// `None` without sentinels. The primary's address then comes from the
    /// sentinels only, so `REDIS_URL`, `REDIS_HOST` and `REDIS_PORT` are
    /// refused beside them rather than silently ignored.
    fn sentinel(&self) -> Result<Option<Sentinel>, SettingError> {
        let nodes = self.list("REDIS_SENTINELS", "");
        if nodes.is_empty() {
            return Ok(None);
        }
        for var in ["REDIS_URL", "REDIS_HOST", "REDIS_PORT"] {
            if self.text(var).is_some() {
                return Err(SettingError::new(
                    var,
                    "is set beside REDIS_SENTINELS: with Sentinel the primary's address comes from \
                     the sentinels (use REDIS_PASSWORD and REDIS_TLS for the rest)",
                ));
            }
        }
        let nodes = nodes
            .iter()
            .map(|node| {
                let (host, port) = match node.rsplit_once(':') {
                    Some((host, port)) => (host, port.parse::<u16>().ok().filter(|p| *p > 0)),
                    None => (node.as_str(), Some(26379)),
                };
                match (host.trim_matches(['[', ']']), port) {
                    (host, Some(port)) if !host.is_empty() => Ok((host.to_owned(), port)),
                    _ => Err(SettingError::new(
                        "REDIS_SENTINELS",
                        format!("{node:?} is not host[:port]"),
                    )),
                }
            })
            .collect::<Result<Vec<_>, _>>()?;
        let master = self.text("REDIS_SENTINEL_MASTER").ok_or_else(|| {
            SettingError::new(
                "REDIS_SENTINEL_MASTER",
                "is required with REDIS_SENTINELS: the name the sentinels monitor the primary under",
            )
        })?;
        Ok(Some(Sentinel {
            master,
            nodes,
            password: self.text("REDIS_SENTINEL_PASSWORD"),
        }))
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
    fn sentinels_name_the_primary_and_refuse_a_fixed_address_beside_them() {
        let target = redis(&[
            ("REDIS_SENTINELS", "s1, s2:26380,[::1]:26381"),
            ("REDIS_SENTINEL_MASTER", "dwp"),
            ("REDIS_PASSWORD", "p@ss/word"),
        ])
        .unwrap();
        let sentinel = target.sentinel.clone().unwrap();
        assert_eq!(sentinel.master, "dwp");
        assert_eq!(
            sentinel.nodes,
            [
                ("s1".to_owned(), 26379),
                ("s2".to_owned(), 26380),
                ("::1".to_owned(), 26381)
            ]
        );
        assert!(!format!("{target:?}").contains("p@ss"), "{target:?}");
        for (var, value) in [
            ("REDIS_URL", "redis://a:1"),
            ("REDIS_HOST", "a"),
            ("REDIS_PORT", "1"),
        ] {
            let e = redis(&[
                ("REDIS_SENTINELS", "s1"),
                ("REDIS_SENTINEL_MASTER", "dwp"),
                (var, value),
            ])
            .unwrap_err();
            assert!(e.to_string().contains(var), "{e}");
        }
        // Emptied (as a Kubernetes overlay does over the base's values): unset.
        assert!(
            redis(&[
                ("REDIS_SENTINELS", "s1"),
                ("REDIS_SENTINEL_MASTER", "dwp"),
                ("REDIS_HOST", ""),
                ("REDIS_PORT", ""),
            ])
            .is_ok()
        );
        let e = redis(&[("REDIS_SENTINELS", "s1")]).unwrap_err();
        assert!(e.to_string().contains("REDIS_SENTINEL_MASTER"), "{e}");
        let e = redis(&[("REDIS_SENTINELS", "s1:x"), ("REDIS_SENTINEL_MASTER", "m")]).unwrap_err();
        assert!(e.to_string().contains("host[:port]"), "{e}");
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
