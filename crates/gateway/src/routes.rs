//! The route table of CONTRACT.md section 2 and the path rules.
//!
//! Routes are tried in order, first match wins, like Spring Cloud Gateway's
//! `Path=/api/aura/hitl/**` predicates (which also match the bare prefix).
//! Every route strips one prefix segment (`StripPrefix=1`): `/api/aura/x`
//! goes upstream as `/aura/x`, query kept.

/// Which upstream a route goes to (the discriminant indexes the pools).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Upstream {
    /// Aura-Platform (`AURA_PLATFORM_URI`).
    Aura = 0,
    /// main-service (`MAIN_SERVICE_URI`).
    Main = 1,
    /// The auth server (`AUTH_SERVER_URI`, main-service by default).
    Auth = 2,
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
}

/// The contract's routes, in matching order.
pub static ROUTES: [Route; 4] = [
    Route {
        name: "aura-hitl",
        prefix: "/api/aura/hitl",
        upstream: Upstream::Main,
    },
    Route {
        name: "aura",
        prefix: "/api/aura",
        upstream: Upstream::Aura,
    },
    Route {
        name: "main",
        prefix: "/api/main",
        upstream: Upstream::Main,
    },
    Route {
        name: "auth",
        prefix: "/api/auth",
        upstream: Upstream::Auth,
    },
];

/// The prefix every route strips, sent as `X-Forwarded-Prefix`.
pub const STRIPPED_PREFIX: &str = "/api";

/// A path the gateway refuses to route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PathError {
    /// A `.` or `..` segment (also percent-encoded), an encoded `/`, `\` or
    /// control character: it could reach another route upstream.
    Ambiguous,
}

/// Finds the route for `path` (the path only, no query) and the path to send
/// upstream. `Ok(None)` is an unknown path (404).
pub fn find(path: &str) -> Result<Option<(&'static Route, &str)>, PathError> {
    check(path)?;
    Ok(ROUTES.iter().find_map(|route| {
        let rest = path.strip_prefix(route.prefix)?;
        (rest.is_empty() || rest.starts_with('/')).then(|| (route, &path[STRIPPED_PREFIX.len()..]))
    }))
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
