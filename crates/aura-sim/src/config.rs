//! aura-sim configuration, from environment variables only.

use std::collections::HashMap;
use std::time::Duration;

use dwp_core::settings::{Secret, SettingError, Settings};

use crate::approval::{SessionIds, Wait};

/// The configuration.
#[derive(Clone)]
pub struct Config {
    /// `SERVER_HOST` (`0.0.0.0`).
    pub host: String,
    /// `SERVER_PORT` (9000; 0 picks a free port).
    pub port: u16,
    /// `JWT_SECRET` (required, at least 32 bytes).
    pub jwt_secret: Secret,
    /// Redis ([`dwp_core::redis`]): `REDIS_URL` or its parts
    /// (`REDIS_HOST`, `REDIS_PORT`, `REDIS_PASSWORD`, `REDIS_TLS`), and
    /// `REDIS_CA_FILE` for TLS.
    pub redis: dwp_core::redis::Target,
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
            .field("redis", &self.redis)
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
        Self::read(&Settings::load(None, env.clone()).map_err(|e| e.to_string())?)
            .map_err(|e| e.to_string())
    }

    fn read(vars: &Settings) -> Result<Self, SettingError> {
        let jwt_secret = vars
            .secret("JWT_SECRET")
            .ok_or_else(|| SettingError::new("JWT_SECRET", "is required (at least 32 bytes)"))?;
        if jwt_secret.len() < 32 {
            return Err(SettingError::new(
                "JWT_SECRET",
                "must be at least 32 bytes long",
            ));
        }
        Ok(Self {
            host: vars.text("SERVER_HOST").unwrap_or_else(|| "0.0.0.0".into()),
            port: vars.number("SERVER_PORT", 9000)?,
            jwt_secret,
            redis: vars.redis()?,
            event_delay: Duration::from_millis(vars.number("AURA_SIM_EVENT_DELAY_MS", 50)?),
            header_read_timeout: vars.secs("AURA_SIM_HEADER_READ_TIMEOUT_SECS", 60)?,
            hitl_timeout: Duration::from_secs(vars.number("HITL_TIMEOUT_SECS", 300)?),
            session_ids: match vars.text("AURA_SIM_SESSION_IDS").as_deref() {
                None | Some("agent") => SessionIds::Agent,
                Some("random") => SessionIds::Random,
                Some(v) => {
                    return Err(SettingError::new(
                        "AURA_SIM_SESSION_IDS",
                        format!("{v:?} is not agent or random"),
                    ));
                }
            },
            wait: match vars.text("AURA_SIM_WAIT").as_deref() {
                None | Some("agent") => Wait::Agent(Duration::from_millis(
                    vars.number("AURA_SIM_SUBSCRIBE_DELAY_MS", 15)?,
                )),
                Some("robust") => Wait::Robust,
                Some(v) => {
                    return Err(SettingError::new(
                        "AURA_SIM_WAIT",
                        format!("{v:?} is not agent or robust"),
                    ));
                }
            },
            ask_twice: vars.flag("AURA_SIM_ASK_TWICE", false)?,
        })
    }
}
