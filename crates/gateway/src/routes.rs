//! The route table: CONTRACT.md section 2's four routes, the live HITL
//! feed's `/api/aura/hitl/events` (main-service, like `/api/aura/hitl`,
//! with a pool share of its own) and the old gateway's `/api/monitoring/**`
//! (the web frontend's page views, public) by default, and those an operator adds in the configuration file
//! ([`RouteSpec`]).
//!
//! The most specific prefix wins (the contract's order, where
//! `/api/aura/hitl` comes before `/api/aura`, is exactly that); a prefix
//! matches the path itself or the path followed by `/`, like Spring Cloud
//! Gateway's `Path=/api/aura/hitl/**`. Each route strips its first
//! segments (`StripPrefix=1` by default: `/api/aura/x` goes upstream as
//! `/aura/x`, query kept) and sends what it stripped as
//! `X-Forwarded-Prefix`. Each route carries its [`Policy`]
//! ([`crate::policy`]): what the phases do on it, its timeouts included.
//! Tables are built once at start-up and live as
//! long as the process (`&'static`), so routing allocates nothing.

use std::time::Duration;

use http::Uri;
use serde::Deserialize;

pub use crate::policy::{Defaults, Edge, Policy, Resume};

/// Which upstream service a route goes to: an index into [`Table::services`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Upstream(pub usize);

impl Upstream {
    /// Aura-Platform (`AURA_PLATFORM_URI`).
    pub const AURA: Self = Self(0);
    /// main-service (`MAIN_SERVICE_URI`).
    pub const MAIN: Self = Self(1);
    /// The auth server (`AUTH_SERVER_URI`, main-service by default).
    pub const AUTH: Self = Self(2);
}

/// An upstream service: its pool's name and base URI.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Service {
    /// The pool's name in logs and metrics.
    pub name: &'static str,
    /// `http://host:port`, with an optional base path.
    pub uri: Uri,
}

/// One route.
#[derive(Debug, PartialEq, Eq)]
pub struct Route {
    /// The route's name in logs and metrics.
    pub name: &'static str,
    /// The path prefix it matches (exactly, or followed by `/`).
    pub prefix: &'static str,
    /// Where it goes.
    pub upstream: Upstream,
    /// The leading part of the path removed before it goes upstream, sent
    /// as `X-Forwarded-Prefix` (`/api`; empty: nothing removed).
    pub stripped: &'static str,
    /// What the phases do on this route.
    pub policy: Policy,
    /// Its position in the table (its metrics).
    pub index: usize,
}

/// A route an operator adds, as written in the configuration file:
///
/// ```toml
/// [[routes]]
/// name = "synapse"                   # logs and metrics (default: from the prefix)
/// prefix = "/api/synapse"
/// uri = "http://synapse:8080"
/// strip_prefix = 1                   # leading segments removed (default 1)
/// preserve_host = false              # send the client's Host (default false)
/// token_check = true                 # the edge token check (default true)
/// record = false                     # record event streams as tasks (default false)
/// resumable = "off"                  # off, opt-in, always: streams outlive their client
/// response_timeout_secs = 300        # default GATEWAY_RESPONSE_TIMEOUT_SECS
/// idle_timeout_secs = 3600           # default GATEWAY_STREAM_IDLE_TIMEOUT_SECS
/// max_body_bytes = 10485760          # default GATEWAY_MAX_BODY_BYTES
/// ```
///
/// `resumable` other than `off` needs `record = true` (the replay is the recording).
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct RouteSpec {
    /// See above.
    pub name: Option<String>,
    /// See above.
    pub prefix: String,
    /// See above.
    pub uri: String,
    /// See above.
    pub strip_prefix: Option<usize>,
    /// See above.
    pub preserve_host: Option<bool>,
    /// See above.
    pub token_check: Option<bool>,
    /// See above.
    pub record: Option<bool>,
    /// See above.
    pub resumable: Option<String>,
    /// See above.
    pub response_timeout_secs: Option<u64>,
    /// See above.
    pub idle_timeout_secs: Option<u64>,
    /// See above.
    pub max_body_bytes: Option<u64>,
}

/// The routes and the services they go to.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// Most specific prefix first.
    pub routes: &'static [Route],
    /// Aura, main, auth, then the operators' own, in [`Upstream`] order.
    pub services: &'static [Service],
}

/// The prefix the contract's routes strip, sent as `X-Forwarded-Prefix`.
pub const STRIPPED_PREFIX: &str = "/api";

/// A route that cannot be used; the message says why.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("routes: {0}")]
pub struct RouteError(pub String);

impl Table {
    /// The contract's routes to these three services.
    pub fn contract(aura: Uri, main: Uri, auth: Uri) -> Self {
        Self::build(aura, main, auth, &[], Defaults::default())
            .unwrap_or_else(|_| unreachable!("the contract's routes are valid"))
    }

    /// The contract's routes and `extra`, checked; the table lives as long
    /// as the process (it is built once, at start-up).
    pub fn build(
        aura: Uri,
        main: Uri,
        auth: Uri,
        extra: &[RouteSpec],
        defaults: Defaults,
    ) -> Result<Self, RouteError> {
        let mut services = vec![
            Service {
                name: "aura",
                uri: aura,
            },
            Service {
                name: "main",
                uri: main,
            },
            Service {
                name: "auth",
                uri: auth,
            },
        ];
        let contract = |name, prefix, upstream, policy| Route {
            name,
            prefix,
            upstream,
            stripped: STRIPPED_PREFIX,
            policy,
            index: 0,
        };
        let service = |edge| Policy::service(edge, defaults);
        let mut routes = vec![
            // The live HITL feed: a route of its own, so that open feeds
            // (one per device, for hours) hold their own share of the
            // main-service pool, never the connections approvals need.
            contract(
                "aura-hitl-events",
                "/api/aura/hitl/events",
                Upstream::MAIN,
                service(Edge::TenantAndToken),
            ),
            contract(
                "aura-hitl",
                "/api/aura/hitl",
                Upstream::MAIN,
                service(Edge::TenantAndToken),
            ),
            contract("aura", "/api/aura", Upstream::AURA, Policy::agent(defaults)),
            contract("main", "/api/main", Upstream::MAIN, service(Edge::Token)),
            contract("auth", "/api/auth", Upstream::AUTH, service(Edge::Open)),
            // The pages' analytics, public as in the old system (main-service
            // checks a token when one comes).
            contract(
                "monitoring",
                "/api/monitoring",
                Upstream::AUTH,
                service(Edge::Open),
            ),
        ];
        for spec in extra {
            let route = operator_route(spec, &mut services, defaults)?;
            if let Some(same) = routes
                .iter()
                .find(|r| r.prefix == route.prefix || r.name == route.name)
            {
                return Err(RouteError(format!(
                    "{:?} ({}) clashes with the route {:?} ({})",
                    route.name, route.prefix, same.name, same.prefix
                )));
            }
            routes.push(route);
        }
        // Most specific first; equal lengths keep their order.
        routes.sort_by_key(|r| std::cmp::Reverse(r.prefix.len()));
        for (index, route) in routes.iter_mut().enumerate() {
            route.index = index;
        }
        Ok(Self {
            routes: Vec::leak(routes),
            services: Vec::leak(services),
        })
    }

    /// Finds the route for `path` (the path only, no query) and the path to
    /// send upstream. `Ok(None)` is an unknown path (404).
    pub fn find<'p>(&self, path: &'p str) -> Result<Option<(&'static Route, &'p str)>, PathError> {
        check(path)?;
        Ok(self.routes.iter().find_map(|route| {
            let rest = path.strip_prefix(route.prefix)?;
            (rest.is_empty() || rest.starts_with('/')).then(|| {
                let upstream = &path[route.stripped.len()..];
                (route, if upstream.is_empty() { "/" } else { upstream })
            })
        }))
    }

    /// The service `upstream` names.
    pub fn service(&self, upstream: Upstream) -> &'static Service {
        &self.services[upstream.0]
    }
}

/// The contract's routes to the default addresses, built once (tests,
/// fuzzing, [`find`]).
pub fn contract_default() -> Table {
    static DEFAULT: std::sync::LazyLock<Table> = std::sync::LazyLock::new(|| {
        let uri = |s: &'static str| Uri::from_static(s);
        Table::contract(
            uri("http://localhost:9000"),
            uri("http://localhost:8081"),
            uri("http://localhost:8081"),
        )
    });
    *DEFAULT
}

/// An operator route's name: the one given, checked, or one made of its prefix.
fn route_name(given: Option<&str>, prefix: &str) -> Result<String, String> {
    match given {
        Some(name)
            if !name.is_empty()
                && name.len() <= 64
                && name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')) =>
        {
            Ok(name.to_owned())
        }
        Some(name) => Err(format!("name {name:?} is 1 to 64 of A-Z a-z 0-9 - _")),
        None => Ok(prefix
            .trim_start_matches("/api/")
            .trim_start_matches('/')
            .replace('/', "-")),
    }
}

/// An operator's route, checked; its service is added unless one with the
/// same URI exists.
fn operator_route(
    spec: &RouteSpec,
    services: &mut Vec<Service>,
    defaults: Defaults,
) -> Result<Route, RouteError> {
    let bad = |problem: String| RouteError(format!("{:?}: {problem}", spec.prefix));
    let prefix = spec.prefix.trim_end_matches('/');
    if !prefix.starts_with('/')
        || prefix.len() < 2
        || check(prefix).is_err()
        || prefix.contains("//")
    {
        return Err(bad("a prefix is an absolute path such as /api/synapse, without dot segments or encoded characters".into()));
    }
    if !prefix
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'-' | b'_' | b'.' | b'~'))
    {
        return Err(bad("a prefix has only letters, digits and / - _ . ~".into()));
    }
    if prefix == "/api/streams" || prefix.starts_with("/api/streams/") {
        return Err(bad(
            "/api/streams/** is the gateway's own (resumable streams)".into(),
        ));
    }
    let uri: Uri = spec
        .uri
        .trim()
        .parse()
        .map_err(|_| bad(format!("uri {:?} is not a URI", spec.uri)))?;
    if uri.scheme_str() != Some("http") || uri.authority().is_none() || uri.query().is_some() {
        return Err(bad(format!(
            "uri {:?} must be an http://host:port URI (TLS to upstreams is not supported)",
            spec.uri
        )));
    }
    let segments = prefix.split('/').skip(1).count();
    let strip = spec.strip_prefix.unwrap_or(1);
    if strip > segments {
        return Err(bad(format!(
            "strip_prefix {strip} is more than the prefix's {segments} segments"
        )));
    }
    let stripped_len: usize = prefix
        .split('/')
        .skip(1)
        .take(strip)
        .map(|s| s.len() + 1)
        .sum();
    let name = route_name(spec.name.as_deref(), prefix).map_err(bad)?;
    let name: &'static str = String::leak(name);
    let upstream = match services.iter().position(|s| s.uri == uri) {
        Some(i) => Upstream(i),
        None => {
            services.push(Service { name, uri });
            Upstream(services.len() - 1)
        }
    };
    let prefix: &'static str = String::leak(prefix.to_owned());
    Ok(Route {
        name,
        prefix,
        upstream,
        stripped: &prefix[..stripped_len],
        policy: operator_policy(spec, defaults).map_err(bad)?,
        index: 0,
    })
}

/// An operator route's policy: the defaults of a service route, with what
/// its entry states.
fn operator_policy(spec: &RouteSpec, defaults: Defaults) -> Result<Policy, String> {
    let edge = if spec.token_check.unwrap_or(true) {
        Edge::Token
    } else {
        Edge::Open
    };
    let record = spec.record.unwrap_or(false);
    let resume = match spec.resumable.as_deref() {
        None => Resume::Off,
        Some(text) => Resume::parse(text)
            .ok_or_else(|| format!("resumable {text:?} is one of off, opt-in, always"))?,
    };
    if resume != Resume::Off && (!record || edge == Edge::Open) {
        return Err("a resumable route records its streams and checks tokens (record = true, token_check = true): the replay is the recording, for its owner only".into());
    }
    let secs = |given: Option<u64>, default: Duration, what: &str| match given {
        Some(0) => Err(format!("{what} must be at least 1")),
        Some(n) => Ok(Duration::from_secs(n)),
        None => Ok(default),
    };
    Ok(Policy {
        preserve_host: spec.preserve_host.unwrap_or(false),
        record,
        resume,
        stream_cap: record,
        response_timeout: secs(
            spec.response_timeout_secs,
            defaults.response_timeout,
            "response_timeout_secs",
        )?,
        idle_timeout: secs(
            spec.idle_timeout_secs,
            defaults.idle_timeout,
            "idle_timeout_secs",
        )?,
        max_body_bytes: match spec.max_body_bytes {
            Some(0) => return Err("max_body_bytes must be at least 1".into()),
            Some(n) => n,
            None => defaults.max_body_bytes,
        },
        ..Policy::service(edge, defaults)
    })
}

/// A path the gateway refuses to route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `.` or `..` segment (also percent-encoded), an encoded `/`, `\` or
    /// control character: it could reach another route upstream.
    Ambiguous,
}

/// [`Table::find`] on the contract's table with its default addresses
/// (the fuzz target and property tests).
pub fn find(path: &str) -> Result<Option<(&'static Route, &str)>, PathError> {
    contract_default().find(path)
}

/// Refuses paths whose meaning could change between here and the upstream.
pub fn check(path: &str) -> Result<(), PathError> {
    if !path.starts_with('/') {
        return Err(PathError::Ambiguous);
    }
    // Every refusal below needs a `.`, `%` or `\` somewhere in the path;
    // most paths have none, and one scan of the bytes settles them.
    if !path.bytes().any(|b| matches!(b, b'.' | b'%' | b'\\')) {
        return Ok(());
    }
    for segment in path.split('/') {
        if segment.contains('\\') {
            return Err(PathError::Ambiguous);
        }
        // `..;x` is `..` to servlet containers (path parameters).
        let segment = segment.split(';').next().unwrap_or_default();
        if !segment.contains('%') {
            if segment == "." || segment == ".." {
                return Err(PathError::Ambiguous);
            }
            continue; // nothing encoded: nothing more to check
        }
        let decoded = percent_decode_lossy(segment);
        if decoded == "." || decoded == ".." {
            return Err(PathError::Ambiguous);
        }
        if decoded.len() != segment.len()
            && decoded
                .chars()
                .any(|c| c == '/' || c == '\\' || c.is_control())
        {
            return Err(PathError::Ambiguous);
        }
    }
    Ok(())
}

/// Decodes `%XX` escapes (repeatedly, so `%252e` counts as `.` too); bytes
/// that are not UTF-8 become U+FFFD.
fn percent_decode_lossy(segment: &str) -> String {
    let mut current = segment.to_owned();
    for _ in 0..3 {
        if !current.contains('%') {
            break;
        }
        let bytes = current.as_bytes();
        let mut out = Vec::with_capacity(bytes.len());
        let mut i = 0;
        while i < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if bytes[i] == b'%'
                && i + 2 < bytes.len()
                && let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2]))
            {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
            out.push(bytes[i]);
            i += 1;
        }
        let next = String::from_utf8_lossy(&out).into_owned();
        if next == current {
            break;
        }
        current = next;
    }
    current
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_contract_route_carries_its_own_policy() {
        let policy = |path| find(path).unwrap().unwrap().0.policy;
        let aura = policy("/api/aura/test/stream");
        assert_eq!(
            (aura.edge, aura.record, aura.resume, aura.stream_cap),
            (Edge::TenantAndToken, true, Resume::OptIn, true)
        );
        assert!(aura.preserve_host && aura.agent_log);
        // The approvals need the tenant and a token, but are not the agent.
        let hitl = policy("/api/aura/hitl/approve/x");
        assert_eq!(
            (hitl.edge, hitl.record, hitl.resume, hitl.agent_log),
            (Edge::TenantAndToken, false, Resume::Off, false)
        );
        assert_eq!(policy("/api/auth/login").edge, Edge::Open);
        assert_eq!(policy("/api/main/x").edge, Edge::Token);
        assert_eq!(aura.response_timeout, Duration::from_secs(300));
    }

    #[test]
    fn an_operator_route_states_its_policy_and_resuming_needs_a_recording() {
        let spec = |fields: serde_json::Value| -> RouteSpec {
            let mut all = serde_json::json!({"prefix": "/api/x", "uri": "http://x:1"});
            all.as_object_mut()
                .unwrap()
                .extend(fields.as_object().unwrap().clone());
            serde_json::from_value(all).unwrap()
        };
        let build = |s: RouteSpec| {
            let uri = || Uri::from_static("http://localhost:1");
            Table::build(uri(), uri(), uri(), &[s], Defaults::default())
        };
        let table = build(spec(serde_json::json!(
            {"record": true, "resumable": "always", "response_timeout_secs": 5}
        )))
        .unwrap();
        let route = table.find("/api/x/y").unwrap().unwrap().0;
        assert_eq!(
            (
                route.policy.record,
                route.policy.resume,
                route.policy.stream_cap
            ),
            (true, Resume::Always, true)
        );
        assert_eq!(route.policy.response_timeout, Duration::from_secs(5));
        for (bad, says) in [
            (serde_json::json!({"resumable": "opt-in"}), "record = true"),
            (
                serde_json::json!({"record": true, "resumable": "sometimes"}),
                "one of off",
            ),
            (
                serde_json::json!({"response_timeout_secs": 0}),
                "at least 1",
            ),
        ] {
            let err = build(spec(bad.clone())).unwrap_err();
            assert!(err.0.contains(says), "{bad}: {err}");
        }
    }

    fn routed(path: &str) -> Option<(&'static str, String)> {
        find(path).unwrap().map(|(r, p)| (r.name, p.to_owned()))
    }

    #[test]
    fn routes_match_in_contract_order_and_strip_one_segment() {
        let table = [
            (
                "/api/aura/hitl/approve/req_1",
                Some(("aura-hitl", "/aura/hitl/approve/req_1")),
            ),
            ("/api/aura/hitl", Some(("aura-hitl", "/aura/hitl"))),
            (
                "/api/aura/hitl/events",
                Some(("aura-hitl-events", "/aura/hitl/events")),
            ),
            (
                "/api/aura/hitl/eventsx",
                Some(("aura-hitl", "/aura/hitl/eventsx")),
            ),
            ("/api/aura/test/stream", Some(("aura", "/aura/test/stream"))),
            ("/api/aura/hitlx", Some(("aura", "/aura/hitlx"))),
            ("/api/aura", Some(("aura", "/aura"))),
            ("/api/main/agent/tasks", Some(("main", "/main/agent/tasks"))),
            ("/api/auth/login", Some(("auth", "/auth/login"))),
            ("/api/aurax", None),
            ("/api", None),
            ("/", None),
            ("/aura/test/stream", None),
            ("/API/aura/x", None),
        ];
        for (path, want) in table {
            let want = want.map(|(n, p)| (n, p.to_owned()));
            assert_eq!(routed(path), want, "{path}");
        }
    }

    #[test]
    fn dot_segments_and_encoded_separators_are_refused() {
        for path in [
            "/api/aura/../main/x",
            "/api/aura/./x",
            "/api/aura/%2e%2e/main/x",
            "/api/aura/%2E%2e/main/x",
            "/api/aura/.%2e/main",
            "/api/aura/%252e%252e/main",
            "/api/aura/a%2fb",
            "/api/aura/a%5cb",
            "/api/aura/a\\b",
            "/api/aura/a%00b",
            "/api/aura/a%0d%0ab",
            "/api/aura/..;/main/x",
            "/api/aura/..;jsessionid=1/main/x",
            "/api/aura/%2e%2e;/main/x",
            "relative",
        ] {
            assert_eq!(find(path), Err(PathError::Ambiguous), "{path}");
        }
    }

    #[test]
    fn ordinary_escapes_and_dots_inside_names_pass() {
        for path in [
            "/api/aura/a%20b",
            "/api/aura/file.txt",
            "/api/aura/..x",
            "/api/aura/%ff",
            "/api/aura/100%",
        ] {
            assert!(find(path).unwrap().is_some(), "{path}");
        }
    }
}
