//! Edge checks: tenant header on Aura routes, tokens when JWT_SECRET is set.

use crate::helpers::*;

/// (path, headers, status, error code)
type Case<'a> = (&'a str, Vec<(&'a str, &'a str)>, u16, &'a str);

#[tokio::test]
async fn aura_routes_need_a_tenant_header() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    for path in ["/api/aura/test/stream", "/api/aura/hitl/approve/req_1"] {
        let res = get(gw.addr, path, &[]).await;
        assert_eq!(res.status(), 400, "{path}");
        let body = res.json().await;
        assert_eq!(body["errorCode"], "E1001");
        assert!(body["message"].as_str().unwrap().contains("X-Tenant-ID"));
    }
    assert!(up.requests().is_empty());
}

#[tokio::test]
async fn with_a_secret_bad_tokens_are_refused_before_any_upstream_is_called() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[("JWT_SECRET", SECRET)])).await;
    let good = format!("Bearer {}", token("user123", "tenant1", 600));
    let expired = format!("Bearer {}", token("user123", "tenant1", -3600));
    let cases: [Case; 7] = [
        (
            "/api/aura/test/stream",
            vec![("x-tenant-id", "tenant1")],
            401,
            "E2000",
        ),
        (
            "/api/aura/test/stream",
            vec![("x-tenant-id", "tenant1"), ("authorization", "Bearer nope")],
            401,
            "E2003",
        ),
        (
            "/api/aura/test/stream",
            vec![("x-tenant-id", "tenant1"), ("authorization", &expired)],
            401,
            "E2002",
        ),
        (
            "/api/aura/test/stream",
            vec![("x-tenant-id", "tenant2"), ("authorization", &good)],
            403,
            "E2001",
        ),
        (
            "/api/aura/test/stream",
            vec![
                ("x-tenant-id", "tenant1"),
                ("x-user-id", "mallory"),
                ("authorization", &good),
            ],
            403,
            "E2001",
        ),
        ("/api/main/agent/tasks", vec![], 401, "E2000"),
        (
            "/api/aura/hitl/approve/req_1",
            vec![("x-tenant-id", "tenant1")],
            401,
            "E2000",
        ),
    ];
    for (path, headers, status, code) in cases {
        let res = get(gw.addr, path, &headers).await;
        assert_eq!(res.status(), status, "{path} {headers:?}");
        if status == 401 {
            assert_eq!(res.header("www-authenticate").as_deref(), Some("Bearer"));
        }
        assert_eq!(res.json().await["errorCode"], code, "{path} {headers:?}");
    }
    assert!(up.requests().is_empty(), "no bad token reached an upstream");

    let ok = [
        ("x-tenant-id", "tenant1"),
        ("x-user-id", "user123"),
        ("authorization", good.as_str()),
    ];
    assert_eq!(get(gw.addr, "/api/aura/test/x", &ok).await.status(), 200);
    assert_eq!(
        get(gw.addr, "/api/main/x", &[("authorization", good.as_str())])
            .await
            .status(),
        200
    );
    assert_eq!(
        get(gw.addr, "/api/auth/login", &[]).await.status(),
        200,
        "auth is exempt"
    );
    assert_eq!(
        get(gw.addr, "/health", &[]).await.status(),
        200,
        "own endpoints are exempt"
    );
    assert_eq!(up.requests().len(), 3);
}

/// The token cache (issue 30) answers "this token verified", never "this
/// request may pass": a token used and cached is still held to the
/// request's identity headers, and another key refuses it at once.
#[tokio::test]
async fn a_cached_token_still_meets_every_check() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[("JWT_SECRET", SECRET)])).await;
    let good = format!("Bearer {}", token("user123", "tenant1", 600));
    let as_user = |tenant: &'static str, user: &'static str| {
        vec![
            ("x-tenant-id", tenant),
            ("x-user-id", user),
            ("authorization", good.as_str()),
        ]
    };
    for _ in 0..3 {
        let res = get(gw.addr, "/api/aura/test/x", &as_user("tenant1", "user123")).await;
        assert_eq!(res.status(), 200);
    }
    for (tenant, user) in [("tenant1", "mallory"), ("tenant2", "user123")] {
        let res = get(gw.addr, "/api/aura/test/x", &as_user(tenant, user)).await;
        assert_eq!(res.status(), 403, "{tenant} {user}");
        assert_eq!(res.json().await["errorCode"], "E2001");
    }
    // The same token with one byte of its signature changed is refused.
    let mut forged = good.clone();
    let last = forged.pop().unwrap();
    forged.push(if last == 'A' { 'B' } else { 'A' });
    let res = get(
        gw.addr,
        "/api/main/x",
        &[("authorization", forged.as_str())],
    )
    .await;
    assert_eq!(res.status(), 401);
    // A gateway with another key (the key changed) refuses it at once.
    let rotated = spawn_gateway(config(
        &up.uri(),
        &[("JWT_SECRET", "another-secret-another-secret-another!")],
    ))
    .await;
    let res = get(
        rotated.addr,
        "/api/main/x",
        &[("authorization", good.as_str())],
    )
    .await;
    assert_eq!(res.status(), 401);
    assert_eq!(res.json().await["errorCode"], "E2003");
    assert_eq!(
        up.requests().len(),
        3,
        "only the good requests went upstream"
    );
}

#[tokio::test]
async fn without_a_secret_tokens_are_left_to_the_upstream() {
    let up = echo_upstream().await;
    let gw = spawn_gateway(config(&up.uri(), &[])).await;
    let res = get(
        gw.addr,
        "/api/main/x",
        &[("authorization", "Bearer whatever")],
    )
    .await;
    assert_eq!(res.status(), 200);
}
