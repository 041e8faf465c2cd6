//! The two attacks that made the stack unfit to deploy, replayed through
//! the real binaries: a client with no credentials unframing its body to
//! read another user's login answer, and a user approving an action on
//! someone else's agent session.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::too_many_lines,
    reason = "test code: a failed unwrap is a failed test, and a scenario reads top to bottom"
)]

use std::time::Duration;

use e2e::*;
use futures_util::StreamExt;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One raw exchange on a connection of its own; what came back.
async fn raw(addr: std::net::SocketAddr, request: &str) -> String {
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(3), stream.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn a_client_naming_content_length_in_connection_never_gets_another_users_login_answer() {
    let stack = start(&["victim"]).await;
    let victim = stack.user("victim");
    let smuggled = "GET /main/smuggled HTTP/1.1\r\nHost: main\r\n\r\n";
    let attack = format!(
        "POST /api/auth/login HTTP/1.1\r\nHost: gw\r\nConnection: Content-Length, close\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\r\n{smuggled}",
        smuggled.len()
    );
    // The attacker's next request on the same pool: a login with no credentials.
    let follow_up = "POST /api/auth/login HTTP/1.1\r\nHost: gw\r\nConnection: close\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}";
    for round in 0..6 {
        let answer = raw(stack.gateway, &attack).await;
        assert!(!answer.contains("accessToken"), "round {round}: {answer}");
        // The victim logs in on the pooled connections in between.
        let token = stack.login(&victim).await;
        let claims = dwp_core::token::Verifier::new(SECRET.as_bytes(), None)
            .verify(&token)
            .unwrap();
        assert_eq!(
            claims.sub, victim,
            "round {round}: the victim got their own token"
        );
        let answer = raw(stack.gateway, follow_up).await;
        assert!(!answer.contains("accessToken"), "round {round}: {answer}");
    }
    // The smuggled request never reached main-service (it would be a 404).
    let (_, metrics, _) = call(stack.main_admin, "GET", "/metrics", &[], "").await;
    assert!(
        !metrics.contains("route=\"unmatched\""),
        "a request main-service has no route for arrived: {metrics}"
    );
}

#[tokio::test]
async fn nobody_but_the_owner_can_create_on_or_decide_for_an_agent_session() {
    let stack = start(&["victim", "mallory"]).await;
    let (victim_id, mallory_id) = (stack.user("victim"), stack.user("mallory"));
    let victim = stack.login(&victim_id).await;
    let mallory = stack.login(&mallory_id).await;
    let mut stream = stack
        .stream(Some(&victim), &victim_id, "delete my mail")
        .await;
    let (_, request_id) = stream.until_hitl().await;
    let mut conn = redis::Client::open(stack.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let raw: String = redis::cmd("GET")
        .arg(format!("hitl:request:{request_id}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    let session_id = serde_json::from_str::<Value>(&raw).unwrap()["sessionId"]
        .as_str()
        .unwrap()
        .to_owned();
    let mut pubsub = redis::Client::open(stack.redis_url.as_str())
        .unwrap()
        .get_async_pubsub()
        .await
        .unwrap();
    pubsub
        .subscribe(format!("hitl:channel:{session_id}"))
        .await
        .unwrap();

    // Mallory plants a request on the victim's session: refused.
    let body = json!({"sessionId": session_id, "actionType": "email_delete"}).to_string();
    let (status, reply) = stack
        .as_user(
            &mallory,
            &mallory_id,
            "POST",
            "/api/aura/hitl/requests",
            &body,
        )
        .await;
    assert_eq!(status, 403, "{reply}");
    // And approving the victim's own request: refused.
    let (status, reply) = stack.approve(&mallory, &mallory_id, &request_id).await;
    assert_eq!(status, 403, "{reply}");
    let mut messages = pubsub.on_message();
    assert!(
        tokio::time::timeout(Duration::from_millis(500), messages.next())
            .await
            .is_err(),
        "nothing was published on the victim's channel"
    );
    drop(messages);
    // This listener is not the agent: with two on the channel no decision
    // would be published at all.
    drop(pubsub);
    tokio::time::sleep(Duration::from_millis(200)).await;

    // The victim decides; the run goes on.
    let (status, reply) = stack.approve(&victim, &victim_id, &request_id).await;
    assert_eq!(status, 200, "{reply}");
    let rest = stream.rest().await;
    assert_eq!(
        kinds(&rest).last().map(String::as_str),
        Some("[DONE]"),
        "{rest:?}"
    );
}

/// The session id of a stored request.
async fn session_of(stack: &Stack, request_id: &str) -> String {
    let mut conn = redis::Client::open(stack.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let raw: String = redis::cmd("GET")
        .arg(dwp_core::hitl::request_key(request_id))
        .query_async(&mut conn)
        .await
        .unwrap();
    serde_json::from_str::<Value>(&raw).unwrap()["sessionId"]
        .as_str()
        .unwrap()
        .to_owned()
}

#[tokio::test]
async fn a_user_of_another_tenant_with_the_same_name_cannot_approve_the_victims_action() {
    // One user name in two tenants; aura-sim names sessions as the real
    // agent does, `session_{sub}_{second}`, with no tenant in it.
    let stack = Stack::start(Options {
        users: &["admin"],
        aura_env: &[("HITL_TIMEOUT_SECS", "3")],
        ..Options::default()
    })
    .await;
    let admin = stack.user("admin");
    add_account(&stack.db.url, "tenant2", &admin);
    let one = stack.login_in("tenant1", &admin).await;
    let two = stack.login_in("tenant2", &admin).await;
    // Both runs start in the same second (tried until they do).
    let (mut a, mut b, a_id, b_id, session) = loop {
        let (mut a, mut b) = tokio::join!(
            Stream::open_in(
                stack.gateway,
                "tenant1",
                Some(&one),
                &admin,
                "delete my mail"
            ),
            Stream::open_in(
                stack.gateway,
                "tenant2",
                Some(&two),
                &admin,
                "delete my mail"
            ),
        );
        let ((_, a_id), (_, b_id)) = tokio::join!(a.until_hitl(), b.until_hitl());
        let (sa, sb) = (
            session_of(&stack, &a_id).await,
            session_of(&stack, &b_id).await,
        );
        if sa == sb {
            break (a, b, a_id, b_id, sa);
        }
    };
    wait_for_listeners(&stack.redis_url, &session, 2).await;
    // Whoever wrote the session record last is the one whose own request
    // matches it: that tenant is the attacker, approving its own action.
    let mut conn = redis::Client::open(stack.redis_url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let record: String = redis::cmd("GET")
        .arg(dwp_core::hitl::session_key(&session))
        .query_async(&mut conn)
        .await
        .unwrap();
    let owner_tenant = serde_json::from_str::<Value>(&record).unwrap()["tenantId"].clone();
    let (attacker_tenant, attacker_token, attacker_req, victim_tenant, victim_token, victim_req) =
        if owner_tenant == "tenant2" {
            ("tenant2", &two, &b_id, "tenant1", &one, &a_id)
        } else {
            ("tenant1", &one, &a_id, "tenant2", &two, &b_id)
        };
    let path = format!("/api/aura/hitl/approve/{attacker_req}");
    let (status, reply) = stack
        .in_tenant(attacker_tenant, attacker_token, &admin, "POST", &path, "")
        .await;
    assert_eq!(status, 409, "the shared session is refused: {reply}");
    assert_eq!(reply["errorCode"], "E3001");
    // The victim cannot be decided for either (its session names another owner).
    let path = format!("/api/aura/hitl/approve/{victim_req}");
    let (status, reply) = stack
        .in_tenant(victim_tenant, victim_token, &admin, "POST", &path, "")
        .await;
    assert!(status == 403 || status == 409, "{status} {reply}");
    // Neither run executes its risky tool: both wait out their time.
    for stream in [&mut a, &mut b] {
        let rest = stream.rest().await;
        assert!(
            !kinds(&rest).iter().any(|k| k == "tool_execution"),
            "no run went ahead: {rest:?}"
        );
        assert!(kinds(&rest).iter().any(|k| k == "failed"), "{rest:?}");
    }
}

/// A login through the gateway as a client behind the Ingress at `client`.
async fn login_from(stack: &Stack, client: &str, user: &str, password: &str) -> u16 {
    let body =
        json!({"username": user, "password": password, "tenantId": stack.tenant}).to_string();
    let (status, _, _) = call(
        stack.gateway,
        "POST",
        "/api/auth/login",
        &[
            ("content-type", "application/json"),
            ("x-forwarded-for", client),
        ],
        &body,
    )
    .await;
    status
}

#[tokio::test]
async fn behind_an_ingress_one_address_guessing_passwords_locks_out_only_itself() {
    // As deploy/k8s sets them: the Ingress appends the client's address,
    // the gateway trusts one hop, main-service two.
    let stack = Stack::start(Options {
        users: &["alice"],
        gateway_env: &[
            ("GATEWAY_FORWARDED_HOPS", "1"),
            ("GATEWAY_MAX_REQUESTS_PER_CLIENT", "1"),
        ],
        main_env: &[("FORWARDED_HOPS", "2")],
        ..Options::default()
    })
    .await;
    let alice = stack.user("alice");
    let token = stack.login(&alice).await;
    // One client behind the Ingress holds a paused agent stream: with one
    // open request allowed per address, it is its own address that is full,
    // not the Ingress's, which every client shares.
    let auth = format!("Bearer {token}");
    let body = json!({"prompt": "delete my mail", "context": {}}).to_string();
    let paused = testkit::send(
        stack.gateway,
        "POST",
        "/api/aura/test/stream",
        &[
            ("authorization", auth.as_str()),
            ("x-tenant-id", stack.tenant.as_str()),
            ("x-user-id", alice.as_str()),
            ("content-type", "application/json"),
            ("accept", "text/event-stream"),
            ("x-forwarded-for", "192.0.2.1"),
        ],
        body,
    )
    .await
    .unwrap();
    assert_eq!(paused.status(), 200);
    // 21 wrong passwords from one address, each for another account.
    for i in 0..21 {
        let status = login_from(&stack, "203.0.113.66", &format!("nobody{i}"), "wrong").await;
        assert!(status == 401 || status == 429, "{status}");
    }
    assert_eq!(
        login_from(&stack, "203.0.113.66", &alice, PASSWORD).await,
        429,
        "the guessing address is locked"
    );
    assert_eq!(
        login_from(&stack, "198.51.100.20", &alice, PASSWORD).await,
        200,
        "everyone else behind the same Ingress signs in"
    );
    drop(paused);
}
