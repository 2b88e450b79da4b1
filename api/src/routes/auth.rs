//! Sessions: log in with email and password (an access JWT plus a session record in Redis, and
//! a rotating refresh token), refresh (a spent refresh token for a new pair; a reused one
//! revokes its whole family as a possible theft), log out (the token's `jti` is blacklisted for
//! the rest of its life, and its refresh family revoked).
//!
//! Login never says which part was wrong: an unknown email, a wrong password and a user that is
//! not active all get the same 401, after the same amount of work (one Argon2 verification at
//! least, against a dummy hash when no user matches). Attempts are rate limited per client IP
//! and per email (the key is the email's SHA-256, so Redis holds no address), and failures are
//! audited as `login.failed` without the email or the password. The client IP is the socket's
//! peer, or behind `TRUSTED_PROXIES` the address they forwarded ([`crate::client_ip`]).

use axum::{
    extract::State,
    http::{HeaderMap, StatusCode, header},
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    auth::Claims,
    db::{self, audit::NewEntry, refresh_tokens, users::UserStatus},
    domain::{FieldErrors, Invalid, MAX_EMAIL, NO_NUL_PATTERN, PRINTABLE_PATTERN, required},
    secrets,
};
use utoipa::{
    ToSchema,
    openapi::{
        RefOr,
        schema::{ObjectBuilder, Schema, Type},
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    AppState,
    auth::Authenticated,
    caller::Me,
    client_ip::ClientIp,
    envelope::{ApiJson, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, Result},
    extract::{ValidJson, Validate},
    passwords, rate_limit, request_id, tokens,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(login))
        .routes(routes!(refresh))
        .routes(routes!(logout))
}

/// The one answer to every failed login.
const BAD_CREDENTIALS: &str = "invalid email or password";

/// Credentials.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LoginRequest {
    /// The user's email.
    #[schema(required = true, nullable = false, schema_with = login_email)]
    pub email: Option<String>,
    /// The password.
    #[schema(required = true, nullable = false, schema_with = login_password)]
    pub password: Option<String>,
    /// The project to log into, when the email has accounts in several (without it, the most
    /// recently active account is tried).
    pub project_id: Option<Uuid>,
}

/// Longest password a login takes (characters): bounds the hashing work.
pub const MAX_LOGIN_PASSWORD: usize = 1024;

fn login_email() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "The user's email: 1 to {MAX_EMAIL} characters, no control characters; case and \
             surrounding whitespace do not matter. Its syntax is not checked: a wrong address is \
             a wrong credential (401)."
        )))
        .min_length(Some(1))
        .max_length(Some(MAX_EMAIL))
        .pattern(Some(PRINTABLE_PATTERN))
        .into()
}

fn login_password() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "The password: 1 to {MAX_LOGIN_PASSWORD} characters, no NUL."
        )))
        .min_length(Some(1))
        .max_length(Some(MAX_LOGIN_PASSWORD))
        .pattern(Some(NO_NUL_PATTERN))
        .into()
}

/// A [`LoginRequest`] fit to look up: the email trimmed and lower-cased, both bounded (as sent,
/// in characters, as the document says) and free of control characters in the email and NUL in
/// the password (Postgres text cannot hold NUL). The email's syntax is not checked: a wrong one
/// is a wrong credential like any other.
#[derive(Debug)]
pub struct Credentials {
    email: String,
    password: String,
    project_id: Option<Uuid>,
}

impl Validate for LoginRequest {
    type Valid = Credentials;

    fn validate(self) -> Result<Credentials, FieldErrors> {
        let mut errors = FieldErrors::new();
        let email = errors.check(
            "email",
            required(self.email).and_then(|e| {
                if !(1..=MAX_EMAIL).contains(&e.chars().count()) {
                    Err(Invalid::new(format!("must be 1 to {MAX_EMAIL} characters")))
                } else if e.chars().any(char::is_control) {
                    Err(Invalid::new("must not contain control characters"))
                } else {
                    Ok(e.trim().to_lowercase())
                }
            }),
        );
        let password = errors.check(
            "password",
            required(self.password).and_then(|p| {
                if !(1..=MAX_LOGIN_PASSWORD).contains(&p.chars().count()) {
                    Err(Invalid::new(format!(
                        "must be 1 to {MAX_LOGIN_PASSWORD} characters"
                    )))
                } else if p.contains('\0') {
                    Err(Invalid::new("must not contain NUL characters"))
                } else {
                    Ok(p)
                }
            }),
        );
        match (email, password) {
            (Some(email), Some(password)) => Ok(Credentials {
                email,
                password,
                project_id: self.project_id,
            }),
            _ => Err(errors),
        }
    }
}

/// A fresh access token, the refresh token to get the next one, and who they are for.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LoginResponse {
    /// The JWT to send as `Authorization: Bearer <accessToken>` (short-lived: `JWT_TTL_SECS`).
    pub access_token: String,
    /// Always `Bearer`.
    pub token_type: &'static str,
    /// When the access token stops working.
    pub expires_at: DateTime<Utc>,
    /// Exchange it at `POST /api/v1/auth/refresh` for a new pair. It works once: using it
    /// again revokes every token of this sign-in. Shown once; only its hash is stored.
    pub refresh_token: String,
    /// When the refresh token stops working if unused (`REFRESH_TOKEN_TTL_SECS`).
    pub refresh_expires_at: DateTime<Utc>,
    /// The user, with roles and permissions.
    pub user: Me,
}

impl LoginResponse {
    fn new(issued: crate::tokens::Issued, user: Me) -> Self {
        Self {
            access_token: issued.access_token,
            token_type: "Bearer",
            expires_at: issued.expires_at,
            refresh_token: issued.refresh_token,
            refresh_expires_at: issued.refresh_expires_at,
            user,
        }
    }
}

/// Why a login failed (audited; never shown to the caller).
#[derive(Debug, Clone, Copy)]
enum Failure {
    UnknownUser,
    WrongPassword,
    NotActive,
}

impl Failure {
    fn as_str(self) -> &'static str {
        match self {
            Failure::UnknownUser => "unknown_user",
            Failure::WrongPassword => "wrong_password",
            Failure::NotActive => "not_active",
        }
    }
}

/// The window in which failed logins naming no user of the claimed project are collapsed to
/// one audit entry.
const UNKNOWN_FAILURE_WINDOW: std::time::Duration = std::time::Duration::from_secs(60);

async fn audit_failure(
    s: &AppState,
    project_id: Uuid,
    user_id: Option<Uuid>,
    why: Failure,
    ip: &str,
) -> Result<()> {
    let mut conn = s.pool.acquire().await?;
    if let Some(user_id) = user_id {
        // a known user's failures are bounded by the login limits
        let entry = NewEntry::new(project_id, "login.failed")
            .user(user_id)
            .metadata(serde_json::json!({ "reason": why.as_str(), "ip": ip }))
            .request(Some(request_id::current()));
        db::audit::record(&mut conn, entry).await?;
        return Ok(());
    }
    // The project is the unauthenticated caller's claim, and anyone can make up emails: such
    // failures are collapsed to one entry per project a minute, carrying how many were
    // collapsed before it, and never a caller-chosen request id.
    let Some(collapsed) = s
        .sessions
        .collapse(
            "login-failed-unknown",
            &project_id.to_string(),
            UNKNOWN_FAILURE_WINDOW,
        )
        .await
        .map_err(ApiError::session_store)?
    else {
        return Ok(());
    };
    let entry = NewEntry::new(project_id, "login.failed").metadata(serde_json::json!({
        "reason": why.as_str(),
        "ip": ip,
        "collapsedBefore": collapsed,
        "windowSecs": UNKNOWN_FAILURE_WINDOW.as_secs(),
    }));
    // the project is the caller's claim: record only if it exists
    db::audit::record_if_project_exists(&mut conn, entry).await?;
    Ok(())
}

/// How long a client that logged in is remembered as the owner's (exempt from the per-email
/// failure limit).
const KNOWN_CLIENT_TTL: std::time::Duration = std::time::Duration::from_secs(30 * 86_400);

/// Logs in: an access token for an ACTIVE user whose password matches.
///
/// Public. 401 for any bad credentials (one message for all). An email with accounts in several
/// projects logs into its most recently active account unless `projectId` names the project.
/// 429 when the client IP made
/// too many attempts, or too many failed for the email from this client, or from all clients
/// and this one never logged in as it (`Retry-After` says when to come back).
#[utoipa::path(post, path = "/api/v1/auth/login", tag = "auth",
    request_body = LoginRequest,
    responses((status = 200, body = inline(Data<LoginResponse>),
               headers(("Cache-Control" = String, description = "`no-store`: tokens are never cached"))),
              (status = 401, body = crate::error::ErrorEnvelope),
              (status = 429, body = crate::error::ErrorEnvelope,
               headers(("Retry-After" = u64, description = "Seconds to wait"))),
              (status = 503, body = crate::error::ErrorEnvelope),
              BodyRefusals))]
async fn login(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ValidJson(req): ValidJson<LoginRequest>,
) -> Result<impl axum::response::IntoResponse> {
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let (issued, me) = sign_in(&s, &ip, user_agent, req).await?;
    // a token must never sit in a shared or browser cache
    let no_store = [(header::CACHE_CONTROL, "no-store")];
    Ok((no_store, ApiJson(Data::new(LoginResponse::new(issued, me)))))
}

/// A login's work, shared with the ops console's sign-in form (`crate::ops`): the rate limits
/// and lock-out, one Argon2 verification, the audit, and a new session (access token, session
/// record, refresh family). Errors are the JSON route's (401, 429, 503).
pub(crate) async fn sign_in(
    s: &AppState,
    ip: &str,
    user_agent: &str,
    req: Credentials,
) -> Result<(tokens::Issued, Me)> {
    let email = req.email;
    let limits = &s.settings.auth;
    rate_limit::check(s, "login-ip", ip, &limits.login_per_ip).await?;
    // Failures are limited per (email, client) strictly, and per email across clients loosely;
    // a client that logged in as this email before is not held back by other clients'
    // failures, so a stranger cannot lock the owner out (README, "Login limits").
    let subject = secrets::token_hash(&email);
    let pair = format!("{subject}:{ip}");
    rate_limit::refuse_if_reached(s, "login-email-ip", &pair, &limits.login_per_email_ip).await?;
    let known_client = s
        .sessions
        .is_known_client(&subject, ip)
        .await
        .map_err(ApiError::session_store)?;
    if !known_client {
        rate_limit::refuse_if_reached(s, "login-email", &subject, &limits.login_per_email).await?;
    }

    let candidates = db::users::login_candidates(&s.pool, &email, req.project_id).await?;
    // Exactly one Argon2 verification per attempt, whatever the email: an unknown email is
    // checked against a dummy hash, and an email with accounts in several projects (without a
    // `projectId`) against its most recently active account only, so the time a login takes
    // says nothing about how many accounts an email has.
    let chosen = candidates
        .iter()
        .find(|c| c.status == UserStatus::Active.as_str() && c.password_hash.is_some());
    let hash = chosen
        .and_then(|c| c.password_hash.clone())
        .unwrap_or_else(|| secrets::dummy_password_hash().to_owned());
    let matched = passwords::verify(req.password, hash).await? && chosen.is_some();

    let Some(candidate) = chosen.filter(|_| matched) else {
        for c in &candidates {
            let why = if chosen.is_some_and(|t| t.user_id == c.user_id) {
                Failure::WrongPassword
            } else if c.status != UserStatus::Active.as_str() || c.password_hash.is_none() {
                Failure::NotActive
            } else {
                // an active account of another project, not tried
                continue;
            };
            audit_failure(s, c.project_id, Some(c.user_id), why, ip).await?;
        }
        if candidates.is_empty()
            && let Some(project) = req.project_id
        {
            audit_failure(s, project, None, Failure::UnknownUser, ip).await?;
        }
        rate_limit::count(s, "login-email-ip", &pair, &limits.login_per_email_ip).await?;
        rate_limit::count(s, "login-email", &subject, &limits.login_per_email).await?;
        tracing::info!(
            candidates = candidates.len(),
            "login refused: bad credentials"
        );
        return Err(ApiError::Unauthorized(BAD_CREDENTIALS));
    };

    let (project, user_id) = (candidate.project_id, candidate.user_id);
    // issued before the permissions are read: a role change or deactivation committing in
    // between writes a marker later than this token's `iat`, which revokes it. Both times come
    // from the shared clock (Redis `TIME`), never this host's.
    let issued_ms = s.sessions.now_ms().await.map_err(ApiError::session_store)?;
    let mut claims = Claims::issued_at(
        &user_id.to_string(),
        project,
        Vec::new(),
        s.settings.auth.jwt_ttl.as_secs() as i64,
        issued_ms,
    );
    let mut tx = s.pool.begin().await?;
    // waits for a deactivation or role change in flight
    if db::users::share_lock_status(&mut tx, project, user_id).await? != Some(UserStatus::Active) {
        drop(tx);
        audit_failure(s, project, Some(user_id), Failure::NotActive, ip).await?;
        return Err(ApiError::Unauthorized(BAD_CREDENTIALS));
    }
    claims.permissions = db::roles::permissions_of(&mut tx, project, user_id).await?;
    let user = db::users::find(&mut tx, project, user_id)
        .await?
        .ok_or(ApiError::Unauthorized(BAD_CREDENTIALS))?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project, "login.succeeded")
            .actor(Some(user_id))
            .user(user_id)
            .metadata(serde_json::json!({ "ip": ip, "jti": claims.jti }))
            .request(Some(request_id::current())),
    )
    .await?;
    let issued = tokens::issue(s, &mut tx, &claims, user_id, None, user_agent, ip).await?;
    s.sessions
        .remember_client(&subject, ip, KNOWN_CLIENT_TTL)
        .await
        .map_err(ApiError::session_store)?;
    tx.commit().await?;
    tracing::info!(%user_id, %project, jti = %claims.jti, "user logged in");
    let me = Me {
        user,
        project_id: project,
        permissions: claims.permissions,
    };
    Ok((issued, me))
}

/// A refresh token to exchange.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RefreshRequest {
    /// The `refreshToken` of a login or of the previous refresh.
    #[schema(required = true, nullable = false, min_length = 1, max_length = 512)]
    pub refresh_token: Option<String>,
}

/// Longest refresh token accepted (characters; real ones are 43).
pub const MAX_REFRESH_TOKEN: usize = 512;

impl Validate for RefreshRequest {
    type Valid = String;

    fn validate(self) -> Result<String, FieldErrors> {
        let mut errors = FieldErrors::new();
        let token = errors.check(
            "refreshToken",
            required(self.refresh_token).and_then(|t| match t.chars().count() {
                1..=MAX_REFRESH_TOKEN => Ok(t.trim().to_owned()),
                _ => Err(Invalid::new(format!(
                    "must be 1 to {MAX_REFRESH_TOKEN} characters"
                ))),
            }),
        );
        token.ok_or(errors)
    }
}

/// The one answer to a refresh token that does not work (unknown, expired, revoked).
const BAD_REFRESH: &str = "invalid, expired or revoked refresh token; log in again";

/// Exchanges a refresh token for a new access token and a new refresh token (rotation).
///
/// Public (the refresh token is the credential). Each refresh token works once. Presenting one
/// that was already exchanged is treated as a possible theft: every refresh token of that
/// sign-in (its family) and every access token issued in it are revoked at once, the event is
/// audited as `refresh_token.reused`, and the answer is 401 (whoever holds the newest token
/// must log in again). 401 for an unknown, expired or revoked token, or a user no longer
/// active; 429 past `RATE_LIMIT_REFRESH_PER_IP`. The new access token carries the user's
/// permissions as they are now.
#[utoipa::path(post, path = "/api/v1/auth/refresh", tag = "auth",
    request_body = RefreshRequest,
    responses((status = 200, body = inline(Data<LoginResponse>),
               headers(("Cache-Control" = String, description = "`no-store`: tokens are never cached"))),
              (status = 401, body = crate::error::ErrorEnvelope),
              (status = 429, body = crate::error::ErrorEnvelope,
               headers(("Retry-After" = u64, description = "Seconds to wait"))),
              (status = 503, body = crate::error::ErrorEnvelope),
              BodyRefusals))]
async fn refresh(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    headers: HeaderMap,
    ValidJson(token): ValidJson<RefreshRequest>,
) -> Result<impl axum::response::IntoResponse> {
    rate_limit::check(&s, "refresh-ip", &ip, &s.settings.auth.refresh_per_ip).await?;
    let hash = secrets::token_hash(&token);
    let mut tx = s.pool.begin().await?;
    let presented = refresh_tokens::lock_presented(&mut tx, &hash)
        .await?
        .ok_or(ApiError::Unauthorized(BAD_REFRESH))?;
    let (project, user_id, family) = (presented.project_id, presented.user_id, presented.family_id);
    if presented.family_revoked_at.is_some() {
        return Err(ApiError::Unauthorized(BAD_REFRESH));
    }
    if presented.used_at.is_some() {
        // a spent token again: whoever holds it, the sign-in is no longer trustworthy
        let accesses = refresh_tokens::revoke_family(&mut tx, family, "reused").await?;
        db::audit::record(
            &mut tx,
            NewEntry::new(project, "refresh_token.reused")
                .user(user_id)
                .metadata(serde_json::json!({
                    "familyId": family,
                    "ip": ip,
                    "possibleTheft": true,
                    "revokedAccessTokens": accesses.len(),
                }))
                .request(Some(request_id::current())),
        )
        .await?;
        tokens::revoke_accesses(&s, user_id, &accesses).await?;
        tx.commit().await?;
        tracing::warn!(%user_id, %project, family_id = %family,
            "a spent refresh token was presented again: its family is revoked (possible theft)");
        return Err(ApiError::Unauthorized(
            "refresh token already used: every token of this sign-in was revoked; log in again",
        ));
    }
    if presented.expires_at <= Utc::now() {
        return Err(ApiError::Unauthorized(BAD_REFRESH));
    }
    // waits for a deactivation or role change in flight, as a login does
    if db::users::share_lock_status(&mut tx, project, user_id).await? != Some(UserStatus::Active) {
        return Err(ApiError::Unauthorized(BAD_REFRESH));
    }
    refresh_tokens::mark_used(&mut tx, &hash).await?;
    let issued_ms = s.sessions.now_ms().await.map_err(ApiError::session_store)?;
    let mut claims = Claims::issued_at(
        &user_id.to_string(),
        project,
        Vec::new(),
        s.settings.auth.jwt_ttl.as_secs() as i64,
        issued_ms,
    );
    claims.permissions = db::roles::permissions_of(&mut tx, project, user_id).await?;
    let user = db::users::find(&mut tx, project, user_id)
        .await?
        .ok_or(ApiError::Unauthorized(BAD_REFRESH))?;
    let user_agent = headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let issued =
        tokens::issue(&s, &mut tx, &claims, user_id, Some(family), user_agent, &ip).await?;
    tx.commit().await?;
    tracing::info!(%user_id, %project, jti = %claims.jti, family_id = %family, "tokens refreshed");
    let me = Me {
        user,
        project_id: project,
        permissions: claims.permissions,
    };
    Ok((
        [(header::CACHE_CONTROL, "no-store")],
        ApiJson(Data::new(LoginResponse::new(issued, me))),
    ))
}

/// Logs out: the caller's token stops working at once, on every API process, and so do the
/// refresh token of its sign-in and the other access tokens issued in it.
///
/// Any valid token (no permission needed).
#[utoipa::path(post, path = "/api/v1/auth/logout", tag = "auth",
    security(("bearer" = [])),
    responses((status = 204, description = "Logged out"),
              AuthRefusals))]
async fn logout(auth: Authenticated, State(s): State<AppState>) -> Result<StatusCode> {
    sign_out(&s, &auth.claims).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// A logout's work, shared with the ops console's sign-out (`crate::ops`): the token stops
/// working at once on every process, with the refresh family of its sign-in; audited.
pub(crate) async fn sign_out(s: &AppState, c: &Claims) -> Result<()> {
    let user = Uuid::parse_str(&c.sub).ok();
    // this process refuses it even if Redis fails below
    s.revocations
        .note_jti(c.jti, shared::sessions::revocation_ttl(c.exp));
    s.sessions
        .revoke_jti(user, c.jti, c.exp)
        .await
        .map_err(ApiError::session_store)?;
    if let Some(user_id) = user {
        let mut tx = s.pool.begin().await?;
        let family = refresh_tokens::family_of_access(&mut tx, c.project_id, c.jti).await?;
        if let Some(family) = family {
            let accesses = refresh_tokens::revoke_family(&mut tx, family, "logout").await?;
            tokens::revoke_accesses(s, user_id, &accesses).await?;
        }
        db::audit::record(
            &mut tx,
            NewEntry::new(c.project_id, "logout")
                .actor(Some(user_id))
                .user(user_id)
                .metadata(serde_json::json!({ "jti": c.jti, "familyId": family }))
                .request(Some(request_id::current())),
        )
        .await?;
        tx.commit().await?;
    }
    tracing::info!(jti = %c.jti, "logged out");
    Ok(())
}
