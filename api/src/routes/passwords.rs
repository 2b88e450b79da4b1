//! Passwords: a user changes its own (`POST /auth/change-password`), or asks for a reset by
//! email (`POST /auth/password-reset`) and sets a new one with the emailed one-time token
//! (`POST /auth/password-reset/confirm`). Every new password passes the one policy
//! ([`shared::domain::Password`]); every change is audited.
//!
//! A reset request is answered `202` with the same body whatever the email, after the same
//! work: the API looks nothing up. It seals the address into a `send_password_reset` job pushed
//! straight to Redis (no database write precedes it, and an outbox row needs an existing
//! project, which an unknown email has none of), and the worker finds the account, or finds
//! none and finishes (`shared::jobs::SendPasswordReset`). Requests are limited per client IP
//! and per email.

use axum::{extract::State, http::StatusCode};
use chrono::Utc;
use serde::{Deserialize, Serialize};
use shared::{
    db::{self, audit::NewEntry, users::UserStatus},
    domain::{FieldErrors, Invalid, MAX_EMAIL, NO_NUL_PATTERN, Password, required},
    jobs::{Job as _, SendPasswordReset},
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
    auth::{Authenticated, user_of},
    client_ip::ClientIp,
    envelope::{ApiJson, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, ErrorEnvelope, Result},
    extract::{ValidJson, Validate},
    passwords, rate_limit, request_id,
    revocation::{revoke_other_sessions, revoke_sessions},
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(change_password))
        .routes(routes!(request_password_reset))
        .routes(routes!(confirm_password_reset))
}

/// Longest current password taken (characters), as for a login: bounds the hashing work.
const MAX_CURRENT_PASSWORD: usize = 1024;

/// Longest reset token accepted (characters; real ones are 43).
const MAX_TOKEN: usize = 512;

fn current_password() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "The password the user logs in with now: 1 to {MAX_CURRENT_PASSWORD} characters, \
             no NUL."
        )))
        .min_length(Some(1))
        .max_length(Some(MAX_CURRENT_PASSWORD))
        .pattern(Some(NO_NUL_PATTERN))
        .into()
}

fn reset_email() -> RefOr<Schema> {
    ObjectBuilder::new()
        .schema_type(Type::String)
        .description(Some(format!(
            "The account's email: 1 to {MAX_EMAIL} characters, no control characters; case and \
             surrounding whitespace do not matter. Its syntax is not checked: an address with no \
             account is answered like any other."
        )))
        .min_length(Some(1))
        .max_length(Some(MAX_EMAIL))
        .pattern(Some(shared::domain::PRINTABLE_PATTERN))
        .into()
}

/// The caller's current password and the new one.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ChangePassword {
    /// The password the caller logs in with now.
    #[schema(required = true, nullable = false, schema_with = current_password)]
    pub current_password: Option<String>,
    /// The new password (the password policy; different from the current one).
    #[schema(required = true, nullable = false, value_type = Password)]
    pub new_password: Option<String>,
}

/// A valid [`ChangePassword`].
#[derive(Debug)]
pub struct PasswordChange {
    current: String,
    new: Password,
}

fn bounded_current(p: String) -> Result<String, Invalid> {
    if !(1..=MAX_CURRENT_PASSWORD).contains(&p.chars().count()) {
        Err(Invalid::new(format!(
            "must be 1 to {MAX_CURRENT_PASSWORD} characters"
        )))
    } else if p.contains('\0') {
        Err(Invalid::new("must not contain NUL characters"))
    } else {
        Ok(p)
    }
}

impl Validate for ChangePassword {
    type Valid = PasswordChange;

    fn validate(self) -> Result<PasswordChange, FieldErrors> {
        let mut errors = FieldErrors::new();
        let current = errors.check(
            "currentPassword",
            required(self.current_password).and_then(bounded_current),
        );
        let new = errors.check(
            "newPassword",
            required(self.new_password).and_then(Password::parse),
        );
        match (current, new) {
            (Some(current), Some(new)) if current == new.as_ref() => Err(FieldErrors::one(
                "newPassword",
                "must differ from the current password",
            )),
            (Some(current), Some(new)) => Ok(PasswordChange { current, new }),
            _ => Err(errors),
        }
    }
}

/// Changes the caller's own password; every other session of the caller ends.
///
/// A user's token (a service or platform token gets 403). The new password passes the password
/// policy (422 naming `newPassword`) and differs from the current one. A wrong
/// `currentPassword` is 403, and such failures are limited like logins
/// (`RATE_LIMIT_LOGIN_PER_EMAIL_IP` per user: 429 past it). Every other access token and
/// refresh token of the user stops working before this answers, on every API process; the
/// caller's own token and its refresh token keep working. Unused reset tokens are spent.
/// Audited as `password.changed`.
#[utoipa::path(post, path = "/api/v1/auth/change-password", tag = "auth",
    request_body = ChangePassword,
    security(("bearer" = [])),
    responses((status = 204, description = "Changed; the caller's session goes on"),
              (status = 409, body = ErrorEnvelope),
              (status = 429, body = ErrorEnvelope,
               headers(("Retry-After" = u64, description = "Seconds to wait"))),
              AuthRefusals, BodyRefusals))]
async fn change_password(
    auth: Authenticated,
    State(s): State<AppState>,
    ValidJson(req): ValidJson<ChangePassword>,
) -> Result<StatusCode> {
    let claims = &auth.claims;
    let user_id = user_of(claims).ok_or(ApiError::Refused(
        "only a user's token can change a password (this token belongs to no user)",
    ))?;
    let project = claims.project_id;
    let limit = &s.settings.auth.login_per_email_ip;
    let key = user_id.to_string();
    rate_limit::refuse_if_reached(&s, "change-password", &key, limit).await?;
    let stored = {
        let mut conn = s.pool.acquire().await?;
        db::users::password_hash(&mut conn, project, user_id)
            .await?
            .ok_or(ApiError::Refused("this user has no password to change"))?
    };
    if !passwords::verify(req.current, stored.clone()).await? {
        rate_limit::count(&s, "change-password", &key, limit).await?;
        tracing::info!(%user_id, "password change refused: wrong current password");
        return Err(ApiError::Refused(
            "currentPassword is not the current password",
        ));
    }
    let hash = passwords::hash(req.new).await?;
    let mut tx = s.pool.begin().await?;
    if db::users::lock_status(&mut tx, project, user_id).await? != Some(UserStatus::Active) {
        return Err(ApiError::Refused(
            "only an active user can change its password",
        ));
    }
    if !db::users::set_password(&mut tx, project, user_id, &hash, Some(&stored)).await? {
        return Err(ApiError::Conflict(
            "the password was changed or reset meanwhile; try again with the current one".into(),
        ));
    }
    db::password_resets::spend_all(&mut tx, project, user_id).await?;
    let job_id = revoke_other_sessions(&s, &mut tx, claims, user_id, "password_changed").await?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project, "password.changed")
            .actor(Some(user_id))
            .user(user_id)
            .metadata(serde_json::json!({ "keptJti": claims.jti, "revokeJobId": job_id }))
            .request(Some(request_id::current())),
    )
    .await?;
    tx.commit().await?;
    s.outbox.wake();
    tracing::info!(%user_id, "password changed; other sessions revoked");
    Ok(StatusCode::NO_CONTENT)
}

/// An email that forgot its password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PasswordResetRequest {
    /// The account's email.
    #[schema(required = true, nullable = false, schema_with = reset_email)]
    pub email: Option<String>,
    /// The project of the account, when the email has accounts in several (without it, the
    /// most recently active account is reset, as a login would choose it).
    pub project_id: Option<Uuid>,
}

/// A valid [`PasswordResetRequest`]: the email trimmed and lower-cased.
#[derive(Debug)]
pub struct ResetAsked {
    email: String,
    project_id: Option<Uuid>,
}

impl Validate for PasswordResetRequest {
    type Valid = ResetAsked;

    fn validate(self) -> Result<ResetAsked, FieldErrors> {
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
        email
            .map(|email| ResetAsked {
                email,
                project_id: self.project_id,
            })
            .ok_or(errors)
    }
}

/// The one answer to every reset request.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResetRequested {
    /// Always the same text: whether the email has an account is not said.
    pub message: &'static str,
}

const RESET_REQUESTED: &str = "if an active account has this email, a password-reset code is on \
     its way to it; it works once, for an hour";

/// Asks for a password-reset email.
///
/// Public. Always `202` with the same body, after the same work, whether or not an account has
/// the email: a `send_password_reset` job finds the account (ACTIVE, in `projectId` if given,
/// else the most recently active) and emails it a one-time token valid for an hour, or finds
/// none and finishes. A new token replaces the account's earlier ones. 429 past
/// `RATE_LIMIT_RESET_PER_IP` or `RATE_LIMIT_RESET_PER_EMAIL` (for any email alike).
#[utoipa::path(post, path = "/api/v1/auth/password-reset", tag = "auth",
    request_body = PasswordResetRequest,
    responses((status = 202, body = inline(Data<ResetRequested>)),
              (status = 429, body = ErrorEnvelope,
               headers(("Retry-After" = u64, description = "Seconds to wait"))),
              (status = 503, body = ErrorEnvelope),
              BodyRefusals))]
async fn request_password_reset(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    ValidJson(req): ValidJson<PasswordResetRequest>,
) -> Result<(StatusCode, ApiJson<Data<ResetRequested>>)> {
    let limits = &s.settings.auth;
    rate_limit::check(&s, "reset-ip", &ip, &limits.reset_per_ip).await?;
    let subject = secrets::token_hash(&req.email);
    rate_limit::check(&s, "reset-email", &subject, &limits.reset_per_email).await?;
    SendPasswordReset {
        project_id: req.project_id.unwrap_or_else(Uuid::nil),
        sealed_email: secrets::seal(&limits.jwt_secret, &req.email),
    }
    .enqueue_now(&s.queues, request_id::enqueue_options())
    .await?;
    tracing::info!("password reset asked for");
    Ok((
        StatusCode::ACCEPTED,
        ApiJson(Data::new(ResetRequested {
            message: RESET_REQUESTED,
        })),
    ))
}

/// The emailed reset token and the new password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ConfirmPasswordReset {
    /// The reset code from the email (1 to 512 characters; surrounding whitespace is ignored).
    #[schema(required = true, nullable = false, min_length = 1, max_length = 512)]
    pub token: Option<String>,
    /// The new password (the password policy).
    #[schema(required = true, nullable = false, value_type = Password)]
    pub password: Option<String>,
}

/// A valid [`ConfirmPasswordReset`].
#[derive(Debug)]
pub struct ResetConfirmed {
    token: String,
    password: Password,
}

impl Validate for ConfirmPasswordReset {
    type Valid = ResetConfirmed;

    fn validate(self) -> Result<ResetConfirmed, FieldErrors> {
        let mut errors = FieldErrors::new();
        let token = errors.check(
            "token",
            required(self.token).and_then(|t| match t.chars().count() {
                1..=MAX_TOKEN => Ok(t.trim().to_owned()),
                _ => Err(Invalid::new("must be the code from the reset email")),
            }),
        );
        let password = errors.check(
            "password",
            required(self.password).and_then(Password::parse),
        );
        match (token, password) {
            (Some(token), Some(password)) => Ok(ResetConfirmed { token, password }),
            _ => Err(errors),
        }
    }
}

const RESET_GONE: &str = "the reset code has expired; ask for a new one";

/// Sets a new password with an emailed reset token; every session of the user ends.
///
/// Public (the token is the credential). The token works once and for an hour: 404 for an
/// unknown or used one (or one whose account is no longer active), 410 for an expired one; 422
/// for a password the policy refuses (naming `password`); 429 past `RATE_LIMIT_RESET_PER_IP`;
/// 503 with `Retry-After` while password hashing is at capacity. Every access token and
/// refresh token of the user stops working before this answers. Audited as `password.reset`.
#[utoipa::path(post, path = "/api/v1/auth/password-reset/confirm", tag = "auth",
    request_body = ConfirmPasswordReset,
    responses((status = 204, description = "The new password works; log in with it"),
              (status = 404, body = ErrorEnvelope),
              (status = 410, body = ErrorEnvelope),
              (status = 429, body = ErrorEnvelope,
               headers(("Retry-After" = u64, description = "Seconds to wait"))),
              (status = 503, body = ErrorEnvelope),
              BodyRefusals))]
async fn confirm_password_reset(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    ValidJson(req): ValidJson<ConfirmPasswordReset>,
) -> Result<StatusCode> {
    rate_limit::check(&s, "reset-confirm-ip", &ip, &s.settings.auth.reset_per_ip).await?;
    let token_hash = secrets::token_hash(&req.token);
    // a cheap look-up first: an unknown, used or expired token costs no Argon2
    let seen = {
        let mut conn = s.pool.acquire().await?;
        db::password_resets::by_token_hash(&mut conn, &token_hash, false)
            .await?
            .filter(|r| r.used_at.is_none())
            .ok_or(ApiError::NotFound("reset code"))?
    };
    if seen.expires_at <= Utc::now() {
        return Err(ApiError::Gone(RESET_GONE));
    }
    let hash = passwords::hash(req.password).await?;
    let (project, user_id) = (seen.project_id, seen.user_id);
    let mut tx = s.pool.begin().await?;
    // lock order: the user, then its reset tokens (as a password change does)
    let status = db::users::lock_status(&mut tx, project, user_id).await?;
    let reset = db::password_resets::by_token_hash(&mut tx, &token_hash, true)
        .await?
        .filter(|r| r.reset_id == seen.reset_id && r.used_at.is_none())
        .ok_or(ApiError::NotFound("reset code"))?;
    if reset.expires_at <= Utc::now() {
        return Err(ApiError::Gone(RESET_GONE));
    }
    if status != Some(UserStatus::Active)
        || !db::users::set_password(&mut tx, project, user_id, &hash, None).await?
    {
        return Err(ApiError::NotFound("reset code"));
    }
    db::password_resets::spend_all(&mut tx, project, user_id).await?;
    revoke_sessions(
        &s,
        &mut tx,
        project,
        user_id,
        Some(user_id),
        "password_reset",
    )
    .await?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project, "password.reset")
            .actor(Some(user_id))
            .user(user_id)
            .metadata(serde_json::json!({ "resetId": reset.reset_id, "ip": ip }))
            .request(Some(request_id::current())),
    )
    .await?;
    tx.commit().await?;
    s.outbox.wake();
    tracing::info!(%user_id, reset_id = %reset.reset_id, "password reset; sessions revoked");
    Ok(StatusCode::NO_CONTENT)
}
