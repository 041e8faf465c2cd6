//! The security check of CONTRACT.md section 7, one case at a time, plus the
//! ownership of the stored request.

use jsonwebtoken::{Algorithm, EncodingKey, Header};
use redis::AsyncCommands;
use serde_json::json;

use crate::helpers::*;

/// (name, headers, status, error code)
type Case = (&'static str, Vec<(&'static str, String)>, u16, &'static str);

fn forged(header: Header, claims: serde_json::Value, secret: &[u8]) -> String {
    format!(
        "Bearer {}",
        jsonwebtoken::encode(&header, &claims, &EncodingKey::from_secret(secret)).unwrap()
    )
}

fn b64(bytes: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n =
            chunk.iter().fold(0u32, |acc, b| (acc << 8) | u32::from(*b)) << (8 * (3 - chunk.len()));
        for i in 0..=chunk.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

#[tokio::test]
async fn every_broken_caller_is_refused_with_the_right_code() {
    let app = spawn_app().await;
    let (request_id, _) = agent_request(Some("user123"), Some("tenant1")).await;
    let good = bearer("user123", "tenant1");
    let claims =
        |exp: i64| json!({"sub": "user123", "tenant_id": "tenant1", "iat": now(), "exp": exp});
    let alive = (now() + 600) as i64;
    let none_token = format!(
        "Bearer {}.{}.",
        b64(br#"{"alg":"none","typ":"JWT"}"#),
        b64(claims(alive).to_string().as_bytes())
    );
    let cases: Vec<Case> = vec![
        ("no Authorization", vec![], 401, "E2000"),
        (
            "not Bearer",
            vec![("authorization", "Basic dXNlcjpwdw==".into())],
            401,
            "E2000",
        ),
        (
            "garbage token",
            vec![("authorization", "Bearer a.b.c".into())],
            401,
            "E2003",
        ),
        (
            "wrong secret",
            vec![(
                "authorization",
                forged(
                    Header::new(Algorithm::HS256),
                    claims(alive),
                    b"another-secret-another-secret-123456",
                ),
            )],
            401,
            "E2003",
        ),
        (
            "alg none",
            vec![("authorization", none_token)],
            401,
            "E2003",
        ),
        (
            "HS512",
            vec![(
                "authorization",
                forged(
                    Header::new(Algorithm::HS512),
                    claims(alive),
                    SECRET.as_bytes(),
                ),
            )],
            401,
            "E2003",
        ),
        (
            "expired",
            vec![(
                "authorization",
                forged(
                    Header::new(Algorithm::HS256),
                    claims(alive - 7200),
                    SECRET.as_bytes(),
                ),
            )],
            401,
            "E2002",
        ),
        (
            "no sub",
            vec![(
                "authorization",
                forged(
                    Header::new(Algorithm::HS256),
                    json!({"tenant_id": "tenant1", "exp": alive}),
                    SECRET.as_bytes(),
                ),
            )],
            401,
            "E2003",
        ),
        (
            "no X-Tenant-ID",
            vec![
                ("authorization", good.clone()),
                ("x-user-id", "user123".into()),
            ],
            401,
            "E2000",
        ),
        (
            "no X-User-ID",
            vec![
                ("authorization", good.clone()),
                ("x-tenant-id", "tenant1".into()),
            ],
            401,
            "E2000",
        ),
        (
            "tenant mismatch",
            vec![
                ("authorization", good.clone()),
                ("x-tenant-id", "tenant2".into()),
                ("x-user-id", "user123".into()),
            ],
            403,
            "E2001",
        ),
        (
            "user mismatch",
            vec![
                ("authorization", good.clone()),
                ("x-tenant-id", "tenant1".into()),
                ("x-user-id", "mallory".into()),
            ],
            403,
            "E2001",
        ),
    ];
    for (name, headers, status, code) in cases {
        let headers: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let res = app
            .send(
                "POST",
                &format!("/aura/hitl/approve/{request_id}"),
                &headers,
                "",
            )
            .await;
        assert_eq!(res.status, status, "{name}: {}", res.text);
        assert_eq!(res.body["errorCode"], code, "{name}");
        assert_eq!(res.body["status"], "ERROR", "{name}");
    }
    let res = app
        .send(
            "GET",
            &format!("/aura/hitl/requests/{request_id}"),
            &[
                ("authorization", &good),
                ("x-tenant-id", "tenant1"),
                ("x-user-id", "user123"),
            ],
            "",
        )
        .await;
    assert_eq!(
        res.body["data"]["status"], "pending",
        "no refused call decided anything"
    );
}

#[tokio::test]
async fn a_body_user_id_that_is_not_the_caller_is_403() {
    let app = spawn_app().await;
    let (request_id, _) = agent_request(Some("user123"), Some("tenant1")).await;
    let res = app
        .decide(
            "approve",
            &request_id,
            "user123",
            "tenant1",
            r#"{"userId":"someone-else"}"#,
        )
        .await;
    assert_eq!(res.status, 403);
    assert_eq!(res.body["errorCode"], "E2001");
}

#[tokio::test]
async fn nobody_decides_for_another_users_or_tenants_agent() {
    let app = spawn_app().await;
    let (other_user, _) = agent_request(Some("alice"), Some("tenant1")).await;
    let res = app
        .decide("approve", &other_user, "user123", "tenant1", "")
        .await;
    assert_eq!(res.status, 403, "{}", res.text);
    let (other_tenant, _) = agent_request(Some("user123"), Some("tenant2")).await;
    let res = app
        .decide("approve", &other_tenant, "user123", "tenant1", "")
        .await;
    assert_eq!(res.status, 403, "{}", res.text);
    // An owner the agent did not record is nobody's, in any tenant: the
    // request is neither decided nor read by anyone.
    for (user, tenant) in [
        (None, None),
        (Some("user123"), None),
        (None, Some("tenant1")),
    ] {
        let (unowned, _) = agent_request(user, tenant).await;
        for caller_tenant in ["tenant1", "tenant2"] {
            let res = app
                .decide("approve", &unowned, "user123", caller_tenant, "")
                .await;
            assert_eq!(
                (res.status, res.body["errorCode"].as_str()),
                (403, Some("E2001")),
                "{user:?}/{tenant:?} by user123@{caller_tenant}: {}",
                res.text
            );
        }
        let stored: String = redis()
            .await
            .get(dwp_core::hitl::request_key(&unowned))
            .await
            .unwrap();
        assert!(stored.contains(r#""status":"pending""#), "{stored}");
    }
}

#[tokio::test]
async fn a_token_with_aud_is_accepted_when_no_audience_is_configured() {
    let app = spawn_app().await;
    let (request_id, _) = agent_request(Some("user123"), Some("tenant1")).await;
    let token = forged(
        Header::new(Algorithm::HS256),
        json!({"sub": "user123", "tenant_id": "tenant1", "aud": "dwp-frontend", "exp": now() + 600}),
        SECRET.as_bytes(),
    );
    let res = app
        .send(
            "POST",
            &format!("/aura/hitl/approve/{request_id}"),
            &[
                ("authorization", &token),
                ("x-tenant-id", "tenant1"),
                ("x-user-id", "user123"),
            ],
            "",
        )
        .await;
    assert_eq!(res.status, 200, "{}", res.text);
}
