//! aura-sim configuration, from environment variables only.

use std::collections::HashMap;
use std::time::Duration;

use dwp_core::settings;

use crate::approval::{SessionIds, Wait};

/// The configuration.
#[derive(Clone)]
pub struct Config {
    /// `SERVER_HOST` (`0.0.0.0`).
    pub host: String,
    /// `SERVER_PORT` (9000; 0 picks a free port).
    pub port: u16,
    /// `JWT_SECRET` (required, at least 32 bytes).
    pub jwt_secret: String,
    /// `REDIS_URL`, or `REDIS_HOST` / `REDIS_PORT` / `REDIS_PASSWORD`.
    pub redis_url: String,
    /// `AURA_SIM_EVENT_DELAY_MS` (50): pause between events.
    pub event_delay: Duration,
    /// `AURA_SIM_HEADER_READ_TIMEOUT_SECS` (60): longest a client may take
    /// to send a request head, and longest a kept-alive connection may sit idle.
    pub header_read_timeout: Duration,
    /// `HITL_TIMEOUT_SECS` (300): how long a run waits for a decision.
    pub hitl_timeout: Duration,
    /// `AURA_SIM_SESSION_IDS`: `agent` (the default, `session_{sub}_{unix
    /// seconds}` as the real agent) or `random` (a suffix nobody can guess).
    pub session_ids: SessionIds,
    /// `AURA_SIM_WAIT`: `agent` (the default: subscribe after the `hitl`
    /// event, `AURA_SIM_SUBSCRIBE_DELAY_MS` later (15, the gap seen once on
    /// the real agent), first message wins, never read the stored signal) or
    /// `robust` (subscribe first, read the stored signal, resubscribe).
    pub wait: Wait,
    /// `AURA_SIM_ASK_TWICE` (`false`): after an approval, ask once more on
    /// the same session for the same tool call, as the real agent's known bug.
    pub ask_twice: bool,
}

impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &format_args!("{}:{}", self.host, self.port))
            .field("jwt_secret", &"<set>")
            .field("redis_url", &settings::redact_url(&self.redis_url))
            .field("event_delay", &self.event_delay)
            .field("header_read_timeout", &self.header_read_timeout)
            .field("hitl_timeout", &self.hitl_timeout)
            .field("session_ids", &self.session_ids)
            .field("wait", &self.wait)
            .field("ask_twice", &self.ask_twice)
            .finish()
    }
}

impl Config {
    /// From the process environment.
    pub fn load() -> Result<Self, String> {
        Self::from_env(&std::env::vars().collect())
    }

    /// From an explicit variable map; the error names the variable.
    pub fn from_env(env: &HashMap<String, String>) -> Result<Self, String> {
        let get = |k: &str| env.get(k).filter(|v| !v.is_empty()).cloned();
        let number = |k: &str, default: u64| -> Result<u64, String> {
            get(k).map_or(Ok(default), |v| {
                v.trim()
                    .parse()
                    .map_err(|_| format!("{k}: {v:?} is not a whole number"))
            })
        };
        let jwt_secret = get("JWT_SECRET").ok_or("JWT_SECRET: is required (at least 32 bytes)")?;
        if jwt_secret.len() < 32 {
            return Err("JWT_SECRET: must be at least 32 bytes long".into());
        }
        let port = number("SERVER_PORT", 9000)?;
        let redis_port = number("REDIS_PORT", 6379)?;
        Ok(Self {
            host: get("SERVER_HOST").unwrap_or_else(|| "0.0.0.0".into()),
            port: u16::try_from(port).map_err(|_| format!("SERVER_PORT: {port} is not a port"))?,
            jwt_secret,
            redis_url: settings::redis_url(
                get("REDIS_URL"),
                get("REDIS_HOST"),
                u16::try_from(redis_port)
                    .map_err(|_| format!("REDIS_PORT: {redis_port} is not a port"))?,
                get("REDIS_PASSWORD"),
            ),
            event_delay: Duration::from_millis(number("AURA_SIM_EVENT_DELAY_MS", 50)?),
            header_read_timeout: Duration::from_secs(
                number("AURA_SIM_HEADER_READ_TIMEOUT_SECS", 60)?.max(1),
            ),
            hitl_timeout: Duration::from_secs(number("HITL_TIMEOUT_SECS", 300)?),
            session_ids: match get("AURA_SIM_SESSION_IDS").as_deref() {
                None | Some("agent") => SessionIds::Agent,
                Some("random") => SessionIds::Random,
                Some(v) => {
                    return Err(format!(
                        "AURA_SIM_SESSION_IDS: {v:?} is not agent or random"
                    ));
                }
            },
            wait: match get("AURA_SIM_WAIT").as_deref() {
                None | Some("agent") => Wait::Agent(Duration::from_millis(number(
                    "AURA_SIM_SUBSCRIBE_DELAY_MS",
                    15,
                )?)),
                Some("robust") => Wait::Robust,
                Some(v) => return Err(format!("AURA_SIM_WAIT: {v:?} is not agent or robust")),
            },
            ask_twice: match get("AURA_SIM_ASK_TWICE").as_deref() {
                None | Some("false") => false,
                Some("true") => true,
                Some(v) => return Err(format!("AURA_SIM_ASK_TWICE: {v:?} is not true or false")),
            },
        })
    }
}
