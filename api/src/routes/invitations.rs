//! Accepting an invitation: the invitee (not logged in) proves it holds the emailed token and
//! chooses a password; the user becomes ACTIVE and the invitation is deleted (one use).
//!
//! The token is looked up by its SHA-256 (the only form stored). The password is hashed before
//! the look-up, so a wrong token costs what a right one does and the invitation's row is not
//! locked during the hashing.

use axum::extract::State;
use chrono::Utc;
use serde::Deserialize;
use shared::{
    db::{self, audit::NewEntry, users::User, users::UserStatus},
    secrets,
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    envelope::Data,
    error::{ApiError, ApiJson, ErrorEnvelope, Result},
    request_id,
    routes::users::{blocking, parse_name},
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(accept_invitation))
}

/// Shortest password accepted (characters).
pub const MIN_PASSWORD: usize = 12;
/// Longest password accepted (characters).
pub const MAX_PASSWORD: usize = 128;

/// The emailed token and the new user's password.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct AcceptInvitation {
    /// The token from the invitation link.
    pub token: String,
    /// The password to log in with (12 to 128 characters).
    pub password: String,
    /// Display name (replaces the one given at invitation).
    pub name: Option<String>,
}

/// Accepts an invitation: the user becomes ACTIVE with this password and can log in.
///
/// Public (the token is the credential). 404 for an unknown or already used token, 410 for an
/// expired invitation, 422 for a password outside 12..=128 characters.
#[utoipa::path(post, path = "/api/v1/invitations/accept", tag = "invitations",
    request_body = AcceptInvitation,
    responses((status = 200, body = inline(Data<User>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              (status = 410, body = ErrorEnvelope),
              (status = 413, body = ErrorEnvelope),
              (status = 415, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              (status = 503, body = ErrorEnvelope)))]
async fn accept_invitation(
    State(s): State<AppState>,
    ApiJson(req): ApiJson<AcceptInvitation>,
) -> Result<ApiJson<Data<User>>> {
    let token = req.token.trim();
    if token.is_empty() || token.len() > 512 {
        return Err(ApiError::invalid(
            "token",
            "must be the token from the invitation link",
        ));
    }
    let chars = req.password.chars().count();
    if !(MIN_PASSWORD..=MAX_PASSWORD).contains(&chars) {
        return Err(ApiError::invalid(
            "password",
            format!("must be {MIN_PASSWORD} to {MAX_PASSWORD} characters"),
        ));
    }
    let name = parse_name(req.name.as_deref())?;
    let password = req.password;
    let hash = blocking(move || secrets::hash_password(&password))
        .await?
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("Failed to hash a password: {e}")))?;

    let token_hash = secrets::token_hash(token);
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
        return Err(ApiError::Gone(
            "the invitation has expired; ask for a new one",
        ));
    }
    if status != Some(UserStatus::Invited)
        || !db::users::activate(&mut tx, project, user_id, &hash, name.as_deref()).await?
    {
        return Err(ApiError::NotFound("invitation"));
    }
    db::invitations::delete(&mut tx, project, invitation.invitation_id).await?;
    db::audit::record(
        &mut tx,
        NewEntry {
            project_id: project,
            actor_id: Some(user_id),
            action: "invitation.accepted",
            target_type: Some("user"),
            target_id: Some(user_id.to_string()),
            metadata: serde_json::json!({ "invitationId": invitation.invitation_id }),
            request_id: Some(request_id::current()),
        },
    )
    .await?;
    let user = db::users::find(&mut tx, project, user_id)
        .await?
        .ok_or(ApiError::NotFound("invitation"))?;
    tx.commit().await?;
    tracing::info!(%user_id, invitation_id = %invitation.invitation_id, "invitation accepted");
    Ok(ApiJson(Data::new(user)))
}
