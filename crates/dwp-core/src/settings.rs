//! The contract's settings (CONTRACT.md section 1), read the same way by
//! every binary: [`Settings`] (with the `settings` feature) is the one
//! reader, with one dialect for every kind of value:
//! - an empty value is the same as no value (the default applies);
//! - booleans are `true`/`false`, `1`/`0`, `yes`/`no` or `on`/`off`;
//! - numbers are whole numbers, durations whole seconds or milliseconds as
//!   the variable's name says (`_SECS`, `_MS`), greater than 0;
//! - a [`Secret`] never prints.
//!
//! A value that cannot be used is a [`SettingError`] that names the variable.

/// A configuration value that could not be used; the message names the variable.
#[derive(Debug, PartialEq, Eq)]
pub struct SettingError {
    /// The variable (or file key, upper-cased) at fault.
    pub var: String,
    /// What is wrong with it.
    pub problem: String,
}

impl std::fmt::Display for SettingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.var, self.problem)
    }
}

impl std::error::Error for SettingError {}

impl SettingError {
    /// `var` cannot be used because of `problem`.
    pub fn new(var: &str, problem: impl Into<String>) -> Self {
        Self {
            var: var.into(),
            problem: problem.into(),
        }
    }
}

/// A secret setting (`JWT_SECRET`): it reads as text where it is used, and
/// prints as `<set>` in `Debug` and `Display`, so that no log line or
/// configuration dump carries it.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    /// Wraps a secret value.
    pub fn new(value: String) -> Self {
        Self(value)
    }
}

impl std::ops::Deref for Secret {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<set>")
    }
}

impl std::fmt::Display for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("<set>")
    }
}

/// The layered settings of one binary: defaults in the code, then an
/// optional TOML file (keys are the variable names in lower case), then the
/// environment.
#[cfg(feature = "settings")]
pub struct Settings(config::Config);

#[cfg(feature = "settings")]
impl Settings {
    /// From an optional file and an explicit variable map (tests pass their
    /// own map instead of touching the process environment).
    pub fn load(
        file: Option<&std::path::Path>,
        env: std::collections::HashMap<String, String>,
    ) -> Result<Self, SettingError> {
        let mut builder = config::Config::builder();
        if let Some(path) = file {
            builder = builder.add_source(config::File::from(path).required(false));
        }
        builder
            .add_source(config::Environment::default().source(Some(env)))
            .build()
            .map(Self)
            .map_err(|e| SettingError {
                var: file.map(|p| p.display().to_string()).unwrap_or_default(),
                problem: e.to_string(),
            })
    }

    /// The layered values, for structured keys (the gateway's `[[routes]]`).
    pub fn layers(&self) -> &config::Config {
        &self.0
    }

    /// A value as text; `None` when absent or empty.
    pub fn text(&self, var: &str) -> Option<String> {
        self.0
            .get_string(&var.to_ascii_lowercase())
            .ok()
            .filter(|v| !v.is_empty())
    }

    /// A value or, when it is not set, its old name's.
    pub fn aliased(&self, (var, alias): (&str, &str)) -> Option<String> {
        self.text(var).or_else(|| self.text(alias))
    }

    /// A secret value.
    pub fn secret(&self, var: &str) -> Option<Secret> {
        self.text(var).map(Secret)
    }

    /// A whole number (or anything else `FromStr` reads).
    pub fn number<T: std::str::FromStr>(&self, var: &str, default: T) -> Result<T, SettingError> {
        match self.text(var) {
            None => Ok(default),
            Some(raw) => raw.trim().parse().map_err(|_| {
                SettingError::new(var, format!("{raw:?} is not a valid whole number"))
            }),
        }
    }

    /// A whole number greater than 0.
    pub fn positive(&self, var: &str, default: u64) -> Result<u64, SettingError> {
        match self.number(var, default)? {
            0 => Err(SettingError::new(var, "must be greater than 0")),
            n => Ok(n),
        }
    }

    /// A duration in whole seconds, greater than 0.
    pub fn secs(&self, var: &str, default: u64) -> Result<std::time::Duration, SettingError> {
        self.positive(var, default)
            .map(std::time::Duration::from_secs)
    }

    /// A duration in whole milliseconds, greater than 0.
    pub fn millis(&self, var: &str, default: u64) -> Result<std::time::Duration, SettingError> {
        self.positive(var, default)
            .map(std::time::Duration::from_millis)
    }

    /// A boolean in the one dialect of [`parse_flag`].
    pub fn flag(&self, var: &str, default: bool) -> Result<bool, SettingError> {
        match self.text(var) {
            None => Ok(default),
            Some(v) => parse_flag(&v)
                .ok_or_else(|| SettingError::new(var, format!("{v:?} is not true or false"))),
        }
    }

    /// A comma-separated list, items trimmed, empty ones left out.
    pub fn list(&self, var: &str, default: &str) -> Vec<String> {
        self.text(var)
            .unwrap_or_else(|| default.into())
            .split(',')
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty())
            .collect()
    }
}

/// `true`/`1`/`yes`/`on` or `false`/`0`/`no`/`off`, in any case.
pub fn parse_flag(value: &str) -> Option<bool> {
    match value.trim().to_ascii_lowercase().as_str() {
        "true" | "1" | "yes" | "on" => Some(true),
        "false" | "0" | "no" | "off" => Some(false),
        _ => None,
    }
}

/// The Redis URL: `REDIS_URL` when set, else built from `REDIS_HOST`
/// (default `localhost`), `REDIS_PORT` and `REDIS_PASSWORD`, the password
/// percent-encoded so that any character (`/`, `@`, `#`, `:`) may be in it;
/// the redis crate decodes it again.
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
        Some(password) => format!(
            "redis://:{}@{host}:{port}",
            percent_encoding::utf8_percent_encode(&password, NOT_UNRESERVED)
        ),
        None => format!("redis://{host}:{port}"),
    }
}

/// Every byte but RFC 3986's unreserved characters (letters, digits,
/// `-._~`) is written as `%XX`.
const NOT_UNRESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

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
    fn a_redis_password_with_url_characters_is_percent_encoded() {
        let url = redis_url(None, Some("h".into()), 1, Some("p/@#:w ö%".into()));
        assert_eq!(url, "redis://:p%2F%40%23%3Aw%20%C3%B6%25@h:1");
    }

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
    fn a_secret_never_prints() {
        let secret = Secret::new("s3cr3t".into());
        assert_eq!(format!("{secret} {secret:?}"), "<set> <set>");
        assert_eq!(&*secret, "s3cr3t");
    }

    #[test]
    fn every_flag_spelling_is_read_alike() {
        for yes in ["true", "TRUE", "1", "yes", "on", " On "] {
            assert_eq!(parse_flag(yes), Some(true), "{yes}");
        }
        for no in ["false", "0", "no", "off", "OFF"] {
            assert_eq!(parse_flag(no), Some(false), "{no}");
        }
        assert_eq!(parse_flag("maybe"), None);
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
