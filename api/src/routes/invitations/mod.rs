//! Accepting an invitation: the invitee (not logged in) proves it holds the emailed token and
//! chooses a password; the user becomes ACTIVE and the invitation is deleted (one use).
//!
//! The token is looked up by its SHA-256 (the only form stored), first without a lock: an
//! unknown, used or expired token costs no Argon2. The password is hashed before the
//! transaction, so the invitation's row is not locked during the hashing.
//!
//! Two ways in, one acceptance ([`accept`]): the JSON route for dashboards and scripts, and
//! [`page`], the small server-rendered page the invitation email links to (works without
//! JavaScript).

mod page;

use axum::extract::State;
use chrono::Utc;
use serde::Deserialize;
use shared::{
    db::{self, audit::NewEntry, users::User, users::UserStatus},
    domain::{DisplayName, FieldErrors, Invalid, Password, required},
    secrets,
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    client_ip::ClientIp,
    envelope::{ApiJson, Data},
    error::{ApiError, BodyRefusals, ErrorEnvelope, Result},
    extract::{ValidJson, Validate},
    passwords, rate_limit, request_id,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(accept_invitation))
        .routes(routes!(page::show_accept_page, page::submit_accept_page))
}

/// The emailed token and the new user's password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcceptInvitation {
    /// The token from the invitation link (1 to 512 characters; surrounding whitespace is
    /// ignored).
    #[schema(required = true, nullable = false, min_length = 1, max_length = 512)]
    pub token: Option<String>,
    /// The password to log in with.
    #[schema(required = true, nullable = false, value_type = Password)]
    pub password: Option<String>,
    /// Display name (replaces the one given at invitation; blank keeps it).
    #[schema(value_type = Option<DisplayName>)]
    pub name: Option<String>,
}

/// Longest token accepted (characters; real ones are far shorter).
pub const MAX_TOKEN: usize = 512;

/// A valid [`AcceptInvitation`].
#[derive(Debug)]
pub struct Acceptance {
    token: String,
    password: Password,
    name: Option<DisplayName>,
}

impl Validate for AcceptInvitation {
    type Valid = Acceptance;

    fn validate(self) -> Result<Acceptance, FieldErrors> {
        let mut errors = FieldErrors::new();
        let token = errors.check(
            "token",
            // bounded as sent (the document's lengths); a blank token is looked up like any
            // other, and found nowhere
            required(self.token).and_then(|t| match t.chars().count() {
                1..=MAX_TOKEN => Ok(t.trim().to_owned()),
                _ => Err(Invalid::new("must be the token from the invitation link")),
            }),
        );
        let password = errors.check(
            "password",
            required(self.password).and_then(Password::parse),
        );
        let name = errors.check("name", DisplayName::parse_optional(self.name.as_deref()));
        match (token, password, name) {
            (Some(token), Some(password), Some(name)) => Ok(Acceptance {
                token,
                password,
                name,
            }),
            _ => Err(errors),
        }
    }
}

/// Accepts an invitation: the user becomes ACTIVE with this password and can log in.
///
/// Public (the token is the credential). 404 for an unknown or already used token, 410 for an
/// expired invitation, 422 for a password outside 12..=128 characters, 429 past
/// `RATE_LIMIT_ACCEPT_PER_IP`, 503 with `Retry-After` while password hashing is at capacity.
/// The token is looked up before the password is hashed: a guess costs no Argon2.
#[utoipa::path(post, path = "/api/v1/invitations/accept", tag = "invitations",
    request_body = AcceptInvitation,
    responses((status = 200, body = inline(Data<User>)),
              (status = 404, body = ErrorEnvelope),
              (status = 410, body = ErrorEnvelope),
              (status = 429, body = ErrorEnvelope),
              (status = 503, body = ErrorEnvelope),
              BodyRefusals))]
async fn accept_invitation(
    State(s): State<AppState>,
    ClientIp(ip): ClientIp,
    ValidJson(req): ValidJson<AcceptInvitation>,
) -> Result<ApiJson<Data<User>>> {
    Ok(ApiJson(Data::new(accept(&s, &ip, req).await?)))
}

const EXPIRED: &str = "the invitation has expired; ask for a new one";

/// Accepts an invitation (see the module doc): the user, now ACTIVE.
async fn accept(s: &AppState, ip: &str, req: Acceptance) -> Result<User> {
    rate_limit::check(s, "accept-ip", ip, &s.settings.auth.accept_per_ip).await?;
    let token_hash = secrets::token_hash(&req.token);
    // A cheap look-up first: an unknown, used or expired token costs no Argon2 (the transaction
    // below checks again, under locks).
    {
        let mut conn = s.pool.acquire().await?;
        let invitation = db::invitations::find_by_token_hash(&mut conn, &token_hash)
            .await?
            .ok_or(ApiError::NotFound("invitation"))?;
        if invitation.expires_at <= Utc::now() {
            return Err(ApiError::Gone(EXPIRED));
        }
    }
    let hash = passwords::hash(req.password).await?;
    let name = req.name.as_ref().map(AsRef::as_ref);
    let mut tx = s.pool.begin().await?;
    // lock order: the user, then its invitation (as deactivation and resend do)
    let seen = db::invitations::find_by_token_hash(&mut tx, &token_hash)
        .await?
        .ok_or(ApiError::NotFound("invitation"))?;
    let (project, user_id) = (seen.project_id, seen.user_id);
    let status = db::users::lock_status(&mut tx, project, user_id).await?;
    let invitation = db::invitations::by_token_hash(&mut tx, &token_hash)
        .await?
        .filter(|i| i.invitation_id == seen.invitation_id)
        // resent or deleted (deactivation) meanwhile
        .ok_or(ApiError::NotFound("invitation"))?;
    if invitation.expires_at <= Utc::now() {
        return Err(ApiError::Gone(EXPIRED));
    }
    if status != Some(UserStatus::Invited)
        || !db::users::activate(&mut tx, project, user_id, &hash, name).await?
    {
        return Err(ApiError::NotFound("invitation"));
    }
    db::invitations::delete(&mut tx, project, invitation.invitation_id).await?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project, "invitation.accepted")
            .actor(Some(user_id))
            .user(user_id)
            .metadata(serde_json::json!({ "invitationId": invitation.invitation_id }))
            .request(Some(request_id::current())),
    )
    .await?;
    let user = db::users::find(&mut tx, project, user_id)
        .await?
        .ok_or(ApiError::NotFound("invitation"))?;
    tx.commit().await?;
    tracing::info!(%user_id, invitation_id = %invitation.invitation_id, "invitation accepted");
    Ok(user)
}
