//! One user: `GET /users/{id}` (roles, status, last seen, its invitation's state) and
//! `PUT /users/{id}` (its name; its email only while it is invited, since an active user's
//! email is its login).

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    db::{
        self,
        audit::NewEntry,
        users::{User, UserStatus},
    },
    domain::{DisplayName, EmailAddress, FieldErrors},
};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Authorized, UserRead, UserUpdate},
    envelope::{ApiJson, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, ErrorEnvelope, Result, ResultExt},
    extract::{PathId, ValidJson, Validate},
    request_id,
};

/// An invited user's invitation.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvitationState {
    /// The invitation id.
    pub id: Uuid,
    /// Its email: `PENDING` (not yet accepted by the mail server), `SENT`, or `FAILED`
    /// (sending gave up: resend it).
    #[schema(pattern = "^(PENDING|SENT|FAILED)$")]
    pub delivery: String,
    /// When its link stops working.
    pub expires_at: DateTime<Utc>,
    /// Whether it has expired (resending keeps the expiry: invite again once expired).
    pub expired: bool,
}

/// A user with its invitation.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserDetail {
    /// The user (roles, status, `lastSeenAt`).
    #[serde(flatten)]
    pub user: User,
    /// Its invitation while it is `INVITED` (`null` otherwise: accepted invitations are
    /// deleted).
    pub invitation: Option<InvitationState>,
}

async fn detail(conn: &mut PgConnection, project: Uuid, user_id: Uuid) -> Result<UserDetail> {
    let user = db::users::find(conn, project, user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let invitation = if user.status == UserStatus::Invited {
        db::invitations::state_of(conn, project, user_id)
            .await?
            .map(|i| InvitationState {
                id: i.invitation_id,
                expired: i.expires_at <= Utc::now(),
                delivery: i.delivery,
                expires_at: i.expires_at,
            })
    } else {
        None
    };
    Ok(UserDetail { user, invitation })
}

/// One user of the project: roles, status, `lastSeenAt`, and its invitation while invited.
///
/// Permission: `user:read`. 404 for a user of another project or none.
#[utoipa::path(get, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = ["user:read"])),
    responses((status = 200, body = inline(Data<UserDetail>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn get_user(
    auth: Authorized<UserRead>,
    State(s): State<AppState>,
    PathId(user_id): PathId,
) -> Result<ApiJson<Data<UserDetail>>> {
    let mut conn = s.pool.acquire().await?;
    let user = detail(&mut conn, auth.claims.project_id, user_id).await?;
    Ok(ApiJson(Data::new(user)))
}

/// A change to a user: the fields given change.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateUserRequest {
    /// A new display name (not blank).
    #[schema(value_type = Option<shared::domain::NonBlankName>)]
    pub name: Option<String>,
    /// A new email, only while the user is `INVITED` (stored lower-cased); an active user's
    /// email is its login and does not change here.
    #[schema(value_type = Option<EmailAddress>)]
    pub email: Option<String>,
}

/// A valid [`UpdateUserRequest`].
#[derive(Debug)]
pub struct UserChange {
    name: Option<DisplayName>,
    email: Option<EmailAddress>,
}

impl Validate for UpdateUserRequest {
    type Valid = UserChange;

    fn validate(self) -> Result<UserChange, FieldErrors> {
        let mut errors = FieldErrors::new();
        let name = errors.check(
            "name",
            self.name.map(|n| DisplayName::parse(&n)).transpose(),
        );
        let email = errors.check(
            "email",
            self.email.map(|e| EmailAddress::parse(&e)).transpose(),
        );
        match (name, email) {
            (Some(name), Some(email)) => Ok(UserChange { name, email }),
            _ => Err(errors),
        }
    }
}

/// Changes a user's name, and an invited user's email (its invitation link keeps working;
/// resend it to reach the new address). Audited as `user.updated`.
///
/// Permission: `user:update`. 404 for a user of another project or none; 409 for an email
/// change of a user that is not `INVITED`, or an email another user of the project has.
#[utoipa::path(put, path = "/api/v1/users/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    request_body = UpdateUserRequest,
    security(("bearer" = ["user:update"])),
    responses((status = 200, body = inline(Data<UserDetail>)),
              (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn update_user(
    auth: Authorized<UserUpdate>,
    State(s): State<AppState>,
    PathId(user_id): PathId,
    ValidJson(change): ValidJson<UpdateUserRequest>,
) -> Result<ApiJson<Data<UserDetail>>> {
    let project = auth.claims.project_id;
    let mut tx = s.pool.begin().await?;
    let status = db::users::lock_status(&mut tx, project, user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    if change.email.is_some() && status != UserStatus::Invited {
        return Err(ApiError::Conflict(format!(
            "only an invited user's email can change (an active user logs in with it); this \
             user is {}",
            status.as_str()
        )));
    }
    let before = db::users::set_profile(
        &mut tx,
        project,
        user_id,
        change.name.as_ref().map(AsRef::as_ref),
        change.email.as_ref().map(AsRef::as_ref),
    )
    .await
    .on_constraint("users_project_email_key", || {
        ApiError::Conflict("a user with this email already exists in the project".into())
    })?
    .ok_or(ApiError::NotFound("user"))?;
    let mut changes = serde_json::Map::new();
    if let Some(name) = change
        .name
        .as_ref()
        .filter(|n| before.name.as_deref() != Some(n.as_ref()))
    {
        changes.insert(
            "name".into(),
            serde_json::json!({"from": before.name, "to": name.as_ref()}),
        );
    }
    if change
        .email
        .as_ref()
        .is_some_and(|e| e.as_ref() != before.email)
    {
        // addresses are personal data: the audit says that it changed, not what to
        changes.insert("email".into(), serde_json::json!({"changed": true}));
    }
    if !changes.is_empty() {
        db::audit::record(
            &mut tx,
            NewEntry::new(project, "user.updated")
                .actor(auth.user_id())
                .user(user_id)
                .metadata(serde_json::json!({ "changes": changes }))
                .request(Some(request_id::current())),
        )
        .await?;
    }
    let user = detail(&mut tx, project, user_id).await?;
    tx.commit().await?;
    Ok(ApiJson(Data::new(user)))
}
