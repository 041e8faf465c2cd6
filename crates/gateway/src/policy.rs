//! A route's policy: everything the request phases do differently from one
//! route to another, as one typed value each route carries.
//!
//! The phases read the policy, never a route's name: the edge check, the
//! `Host` rule, the agent's routing log and body preview, recording,
//! resumability, the per-user stream cap, the timeouts and the body limit.
//! The contract's routes get theirs in [`crate::routes`]; an operator's
//! `[[routes]]` entry states its own, field by field, over [`Defaults`].

use std::time::Duration;

/// What the edge checks before a route's upstream is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Edge {
    /// `X-Tenant-ID` required, and a valid token (`/api/aura/**`).
    TenantAndToken,
    /// A valid token.
    Token,
    /// Nothing (sign-in, the pages' analytics).
    Open,
}

/// Whether a stream on the route survives its client going away.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resume {
    /// Never: the client leaving cancels the upstream request.
    Off,
    /// When the request asks with `X-DWP-Resumable: true`.
    OptIn,
    /// Every recorded stream of the route.
    Always,
}

impl Resume {
    /// `off`, `opt-in` or `always`, as written in the configuration file.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "off" => Some(Self::Off),
            "opt-in" => Some(Self::OptIn),
            "always" => Some(Self::Always),
            _ => None,
        }
    }
}

/// One route's behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// The edge checks.
    pub edge: Edge,
    /// The client's `Host` goes upstream (else the upstream's authority).
    pub preserve_host: bool,
    /// The agent's routing log line (CONTRACT.md section 3) and the DEBUG
    /// preview of POST bodies.
    pub agent_log: bool,
    /// Event streams are recorded as tasks (`dwp:agent-task-events`), under
    /// an `X-DWP-Task-ID` the upstream and the client both get.
    pub record: bool,
    /// Whether recorded streams may outlive their client.
    pub resume: Resume,
    /// Stream requests count against `GATEWAY_MAX_STREAMS_PER_USER`.
    pub stream_cap: bool,
    /// The longest wait for the upstream's response head.
    pub response_timeout: Duration,
    /// A stream ends after this much upstream silence.
    pub idle_timeout: Duration,
    /// The largest request body (413 past it).
    pub max_body_bytes: u64,
}

/// What a route's policy starts from: the gateway-wide settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Defaults {
    /// `GATEWAY_RESPONSE_TIMEOUT_SECS` (300).
    pub response_timeout: Duration,
    /// `GATEWAY_STREAM_IDLE_TIMEOUT_SECS` (3600).
    pub idle_timeout: Duration,
    /// `GATEWAY_MAX_BODY_BYTES` (10 MiB).
    pub max_body_bytes: u64,
}

impl Default for Defaults {
    fn default() -> Self {
        Self {
            response_timeout: Duration::from_secs(300),
            idle_timeout: Duration::from_secs(3600),
            max_body_bytes: 10 * 1024 * 1024,
        }
    }
}

impl Policy {
    /// A route to a service that is not the agent: `edge` checks, nothing
    /// recorded, the defaults' timeouts and body limit.
    pub fn service(edge: Edge, defaults: Defaults) -> Self {
        Self {
            edge,
            preserve_host: false,
            agent_log: false,
            record: false,
            resume: Resume::Off,
            stream_cap: false,
            response_timeout: defaults.response_timeout,
            idle_timeout: defaults.idle_timeout,
            max_body_bytes: defaults.max_body_bytes,
        }
    }

    /// The agent's route (`/api/aura/**`): tenant and token, the browser's
    /// `Host`, the routing log, recorded, resumable on request, capped.
    pub fn agent(defaults: Defaults) -> Self {
        Self {
            preserve_host: true,
            agent_log: true,
            record: true,
            resume: Resume::OptIn,
            stream_cap: true,
            ..Self::service(Edge::TenantAndToken, defaults)
        }
    }
}
