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
