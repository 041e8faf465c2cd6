//! Login: `POST /auth/login` exchanges a tenant's username and password for
//! an HS256 token (`sub`, `tenant_id`, `iat`, `exp`), and [`add_user`]
//! creates accounts (the `main-service user add` command). Passwords are
//! stored only as argon2id hashes; a wrong user and a wrong password get
//! the same 401 after the same work, so neither reveals which it was.
//!
//! Each check holds one of `LOGIN_HASH_MEMORY_MIB / 19` slots (argon2id
//! takes 19 MiB), so concurrent logins cannot exhaust memory. A login
//! finding none free waits its turn ([`crate::hashing`]: at most `LOGIN_QUEUE_MAX`
//! waiting, each at most `LOGIN_QUEUE_WAIT_SECS`), so a Monday-morning rush
//! signs everyone in; past either bound it is 503 with `Retry-After`. Passwords are at most
//! [`MAX_PASSWORD_BYTES`]. Repeated failures lock the account and the
//! client address ([`crate::throttle`]).

use std::sync::{Arc, LazyLock};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use axum::extract::State;
use axum::routing::post;
use axum::{Json, Router};
use dwp_core::Envelope;
use dwp_core::token::{Claims, issue};
use sea_orm::{ActiveModelTrait, ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, Set};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::body::JsonBody;
use crate::entity::app_user::{self, Column, Entity};
use crate::error::AppError;
use crate::hitl::session::id_text;
use crate::reply::Reply;
use crate::state::AppState;
use crate::throttle::{Attempt, ClientAddr};

/// The answer to every failed login.
const WRONG: &str = "Invalid username or password";

/// Longest password accepted (400 beyond, before any hashing).
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// Verified against when the user does not exist, so both failures cost the same.
static DUMMY_HASH: LazyLock<String> =
    LazyLock::new(|| hash("not-a-real-password").unwrap_or_default());

/// The route.
pub fn routes() -> Router<Arc<AppState>> {
    Router::new().route("/auth/login", post(login))
}

/// Body of `POST /auth/login`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Login {
    /// The username (the token's `sub`).
    #[schema(min_length = 1)]
    pub username: String,
    /// The password.
    #[schema(min_length = 1)]
    pub password: String,
    /// The tenant, a string or a number (`DEFAULT_TENANT_ID` when absent).
    #[schema(value_type = Option<String>)]
    pub tenant_id: Option<Value>,
}

#[utoipa::path(post, path = "/auth/login", tag = "auth", request_body = Login,
    responses((status = 200, description = "An access token", body = Envelope<Token>), (status = 429, description = "Too many failed logins for this account or address (E1001); `Retry-After` says when", body = Reply), (status = 503, description = "Every password-check slot is busy, or Redis is down (E5000)", body = Reply)))]
async fn login(
    State(state): State<Arc<AppState>>,
    client: ClientAddr,
    JsonBody(body): JsonBody<Login>,
) -> Result<Json<Envelope<Token>>, AppError> {
    let (username, password, tenant) = credentials(body, &state.config.default_tenant)?;
    let attempt = Attempt::new(&tenant, &username, &client);
    attempt.check(&state.store).await?;
    if !password_matches(&state, &tenant, &username, password).await? {
        let locked = attempt.failed(&state.store, &state.config.login).await?;
        tracing::info!(
            tenant,
            locked_secs = locked,
            client = client.0,
            "login refused"
        );
        return Err(AppError::BadCredentials(WRONG));
    }
    attempt.succeeded(&state.store).await?;
    let now = dwp_core::envelope::unix_now();
    let ttl = state.config.jwt_ttl.as_secs();
    let claims = Claims {
        sub: username.clone(),
        tenant_id: Some(tenant.clone()),
        iat: Some(now),
        exp: now + ttl,
    };
    tracing::info!(user = claims.sub, tenant = claims.tenant_id, "login");
    Ok(Json(Envelope::success(
        "Login successful",
        Token {
            access_token: issue(&claims, state.config.jwt_secret.as_bytes()),
            token_type: "Bearer",
            expires_in: ttl,
            user_id: username,
            tenant_id: tenant,
        },
    )))
}

/// What a successful login answers.
#[derive(Debug, Serialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Token {
    /// The HS256 token.
    pub access_token: String,
    /// `Bearer`.
    pub token_type: &'static str,
    /// Seconds the token is valid.
    pub expires_in: u64,
    /// The token's `sub`.
    pub user_id: String,
    /// The token's `tenant_id`.
    pub tenant_id: String,
}

/// Username, password and tenant from a login body, checked.
fn credentials(body: Login, default_tenant: &str) -> Result<(String, String, String), AppError> {
    let Login {
        username, password, ..
    } = body;
    if username.is_empty() || password.is_empty() {
        return Err(AppError::BadRequest(
            "username and password may not be empty".into(),
        ));
    }
    // The frontend sends "1", the old seed's guide nothing, other clients 1.
    let tenant = match &body.tenant_id {
        None | Some(Value::Null) => default_tenant.to_owned(),
        given => id_text(given.as_ref())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| AppError::BadRequest("tenantId is a string or a number".into()))?,
    };
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AppError::BadRequest(format!(
            "password is longer than {MAX_PASSWORD_BYTES} bytes"
        )));
    }
    Ok((username, password, tenant))
}

/// Whether the account exists and `password` is its password. An unknown
/// account costs a hash check too (against a dummy hash), so both answers
/// take the same time.
async fn password_matches(
    state: &AppState,
    tenant: &str,
    username: &str,
    password: String,
) -> Result<bool, AppError> {
    // A slot for the hash, after a bounded wait: never a queue without end.
    let slot = state.login_slots.take().await?;
    let user = if username.len() <= 50 && tenant.len() <= 50 {
        state
            .db
            .bounded(
                Entity::find()
                    .filter(Column::TenantId.eq(tenant))
                    .filter(Column::Username.eq(username))
                    .one(state.db.conn()?),
            )
            .await?
    } else {
        None
    };
    let stored = user
        .as_ref()
        .map_or_else(|| DUMMY_HASH.clone(), |u| u.password_hash.clone());
    // argon2 is deliberately slow: off the async workers.
    let matches = tokio::task::spawn_blocking(move || {
        let _slot = slot; // released when the hash is done
        verify(&password, &stored)
    })
    .await
    .map_err(|e| AppError::Internal(e.to_string()))?;
    Ok(matches && user.is_some())
}

/// An argon2id PHC string for `password` with a fresh salt.
pub fn hash(password: &str) -> Result<String, argon2::password_hash::Error> {
    let salt = SaltString::generate(&mut OsRng);
    Ok(Argon2::default()
        .hash_password(password.as_bytes(), &salt)?
        .to_string())
}

/// Whether `password` matches the PHC string `stored`.
pub fn verify(password: &str, stored: &str) -> bool {
    PasswordHash::new(stored).is_ok_and(|parsed| {
        Argon2::default()
            .verify_password(password.as_bytes(), &parsed)
            .is_ok()
    })
}

/// Why a user could not be added.
#[derive(Debug, thiserror::Error)]
pub enum AddUserError {
    /// Bad tenant, username or password.
    #[error("{0}")]
    Invalid(&'static str),
    /// The tenant already has this username.
    #[error("user {username:?} already exists in tenant {tenant:?}")]
    Exists {
        /// The tenant.
        tenant: String,
        /// The username.
        username: String,
    },
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
}

/// What a new username must be, beyond its length: login compares names
/// exactly, so a name no one can type back is refused here. No space at
/// either end, no glob characters (`*?[]`, which key patterns and the
/// admin's tools read), no backslash, and no letters of two scripts (Latin
/// and Cyrillic `а` look alike; Hangul, Latin and the rest are each fine
/// alone). Digits, spaces inside, and `.`, `_`, `-`, `@`, `+` go with any.
pub fn username_rule(username: &str) -> Result<(), &'static str> {
    if username.trim() != username {
        return Err("the username may not start or end with a space");
    }
    if username.contains(['*', '?', '[', ']', '\\']) {
        return Err("the username may not hold *, ?, [, ] or \\");
    }
    let script = |c: char| match c {
        'a'..='z' | 'A'..='Z' => Some(0),
        '\u{AC00}'..='\u{D7A3}' | '\u{1100}'..='\u{11FF}' | '\u{3130}'..='\u{318F}' => Some(1),
        '\u{0400}'..='\u{04FF}' => Some(2),
        '\u{0370}'..='\u{03FF}' => Some(3),
        c if c.is_alphabetic() => Some(4),
        _ => None,
    };
    let mut scripts = username.chars().filter_map(script);
    if let Some(first) = scripts.next()
        && scripts.any(|s| s != first)
    {
        return Err("the username mixes letters of different scripts");
    }
    Ok(())
}

/// Creates a user with an argon2id hash of `password`.
pub async fn add_user(
    db: &DatabaseConnection,
    tenant: &str,
    username: &str,
    password: &str,
) -> Result<(), AddUserError> {
    let ok = |s: &str| !s.is_empty() && s.len() <= 50 && !s.chars().any(char::is_control);
    if !ok(tenant) || !ok(username) {
        return Err(AddUserError::Invalid(
            "tenant and username are 1 to 50 characters without control characters",
        ));
    }
    username_rule(username).map_err(AddUserError::Invalid)?;
    if password.chars().count() < 8 {
        return Err(AddUserError::Invalid(
            "the password needs at least 8 characters",
        ));
    }
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(AddUserError::Invalid(
            "the password is longer than 1024 bytes, which login refuses",
        ));
    }
    let exists = Entity::find()
        .filter(Column::TenantId.eq(tenant))
        .filter(Column::Username.eq(username))
        .one(db)
        .await?
        .is_some();
    let exists_error = || AddUserError::Exists {
        tenant: tenant.into(),
        username: username.into(),
    };
    if exists {
        return Err(exists_error());
    }
    let password_hash =
        hash(password).map_err(|_| AddUserError::Invalid("the password cannot be hashed"))?;
    let user = app_user::ActiveModel {
        tenant_id: Set(tenant.into()),
        username: Set(username.into()),
        password_hash: Set(password_hash),
        created_at: Set(chrono::Utc::now().fixed_offset()),
        ..Default::default()
    };
    match user.insert(db).await {
        Ok(_) => Ok(()),
        // Two adds at once: the unique index decides.
        Err(e) if e.to_string().contains("uq_app_user_tenant_username") => Err(exists_error()),
        Err(e) => Err(e.into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn usernames_login_could_not_match_are_refused() {
        for good in [
            "admin",
            "alice kim@corp.example",
            "김철수",
            "a.b_c-d+e@x",
            "user123",
        ] {
            assert_eq!(username_rule(good), Ok(()), "{good:?}");
        }
        for bad in [
            "admin ", " admin", "adm*n", "a?", "[a]", "a\\b", "pаypal", "admin김",
        ] {
            assert!(username_rule(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn hashes_are_argon2id_salted_and_verify() {
        let a = hash("correct horse").unwrap();
        let b = hash("correct horse").unwrap();
        assert!(a.starts_with("$argon2id$"), "{a}");
        assert_ne!(a, b, "a fresh salt each time");
        assert!(verify("correct horse", &a));
        assert!(!verify("wrong horse", &a));
        assert!(!verify("correct horse", "not a hash"));
    }
}
