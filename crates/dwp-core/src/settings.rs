//! Helpers for the contract's settings (CONTRACT.md section 1) that every
//! binary reads the same way.

/// The Redis URL: `REDIS_URL` when set, else built from `REDIS_HOST`
/// (default `localhost`), `REDIS_PORT` and `REDIS_PASSWORD`.
pub fn redis_url(
    url: Option<String>,
    host: Option<String>,
    port: u16,
    password: Option<String>,
) -> String {
    if let Some(url) = url.filter(|u| !u.is_empty()) {
        return url;
    }
    let host = host
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    match password.filter(|p| !p.is_empty()) {
        Some(password) => format!("redis://:{password}@{host}:{port}"),
        None => format!("redis://{host}:{port}"),
    }
}

/// How much of a Redis Stream we write is kept (`STREAM_MAX_LEN`,
/// `STREAM_MAX_AGE_SECS`): every `XADD` trims by count (`MAXLEN ~`) and
/// every write also drops entries older than the age (`XTRIM MINID ~`), so
/// no stream grows without bound, the dead-letter streams included.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Entries kept, about.
    pub max_len: u64,
    /// Entries older than this many seconds go.
    pub max_age_secs: u64,
}

impl Default for Retention {
    /// 100,000 entries, seven days.
    fn default() -> Self {
        Self {
            max_len: 100_000,
            max_age_secs: 7 * 24 * 3600,
        }
    }
}

impl Retention {
    /// The oldest entry id kept now, for `XTRIM ... MINID ~`.
    pub fn min_id(&self) -> String {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        format!(
            "{}-0",
            now_ms.saturating_sub(self.max_age_secs.saturating_mul(1000))
        )
    }
}

/// A URL with its credentials replaced by `***`, safe to log.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            format!("{}***{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redis_url_prefers_the_url_then_the_parts() {
        assert_eq!(
            redis_url(Some("redis://r:1".into()), Some("h".into()), 2, None),
            "redis://r:1"
        );
        assert_eq!(redis_url(None, None, 6379, None), "redis://localhost:6379");
        assert_eq!(
            redis_url(None, Some("cache".into()), 6380, Some("pw".into())),
            "redis://:pw@cache:6380"
        );
    }

    #[test]
    fn credentials_never_survive_redaction() {
        assert_eq!(
            redact_url("redis://:pw@cache:6380"),
            "redis://***@cache:6380"
        );
        assert_eq!(redact_url("postgres://u:p@db/x"), "postgres://***@db/x");
        assert_eq!(redact_url("redis://cache:6379"), "redis://cache:6379");
    }
}
