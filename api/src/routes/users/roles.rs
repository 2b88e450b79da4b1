//! A user's roles: give, take, replace. A change to an ACTIVE user revokes its tokens at once
//! ([`crate::revocation`]): it logs in again to get its new permissions.

use axum::extract::State;
use serde::Deserialize;
use shared::{
    db::{
        self,
        audit::NewEntry,
        users::{User, UserStatus},
    },
    domain::{FieldErrors, required},
};
use sqlx::PgConnection;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    AppState, admin_guard,
    auth::{Authorized, UserUpdate},
    envelope::{ApiJson, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, ErrorEnvelope, Result},
    extract::{PathId, ValidJson, Validate},
    request_id,
    revocation::revoke_sessions,
};

/// A role to give.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleRequest {
    /// The role (of the caller's project).
    #[schema(required = true, nullable = false)]
    pub role_id: Option<Uuid>,
}

impl Validate for RoleRequest {
    /// The role id.
    type Valid = Uuid;

    fn validate(self) -> Result<Uuid, FieldErrors> {
        required(self.role_id).map_err(|e| FieldErrors::one("roleId", e.message()))
    }
}

enum RoleChange {
    Add(Uuid),
    Remove(Uuid),
    Replace { from: Uuid, to: Uuid },
}

async fn find_user(tx: &mut PgConnection, project: Uuid, user_id: Uuid) -> Result<User> {
    db::users::find(tx, project, user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))
}

/// Applies a role change to an INVITED or ACTIVE user and returns the user; ACTIVE users'
/// tokens are revoked.
async fn change_roles(
    s: &AppState,
    project: Uuid,
    actor: Option<Uuid>,
    user_id: Uuid,
    change: RoleChange,
) -> Result<ApiJson<Data<User>>> {
    let mut tx = s.pool.begin().await?;
    // before the user's row: one lock order for every writer (see `admin_guard`)
    let guard = admin_guard::lock(&mut tx, project).await?;
    let status = db::users::lock_status(&mut tx, project, user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    if status == UserStatus::Deactivated {
        return Err(ApiError::Conflict(
            "the user is deactivated; its roles cannot change".into(),
        ));
    }
    let ids: Vec<Uuid> = match change {
        RoleChange::Add(r) | RoleChange::Remove(r) => vec![r],
        RoleChange::Replace { from, to } => vec![from, to],
    };
    let roles = db::roles::existing(&mut tx, project, &ids).await?;
    let name = |id: Uuid| roles.iter().find(|r| r.id == id).map(|r| r.name.clone());
    if ids.iter().any(|id| name(*id).is_none()) {
        return Err(ApiError::NotFound("role"));
    }
    let unchanged = |user| Ok(ApiJson(Data::new(user)));
    let (action, metadata) = match change {
        RoleChange::Add(role) => {
            if !db::roles::assign(&mut tx, project, user_id, role).await? {
                // already held: nothing changes, nothing to audit or revoke
                return unchanged(find_user(&mut tx, project, user_id).await?);
            }
            (
                "role.assigned",
                serde_json::json!({ "roleId": role, "roleName": name(role) }),
            )
        }
        RoleChange::Remove(role) => {
            if !db::roles::unassign(&mut tx, project, user_id, role).await? {
                return Err(ApiError::NotFound("role assignment"));
            }
            (
                "role.removed",
                serde_json::json!({ "roleId": role, "roleName": name(role) }),
            )
        }
        RoleChange::Replace { from, to } => {
            if !db::roles::unassign(&mut tx, project, user_id, from).await? {
                return Err(ApiError::NotFound("role assignment"));
            }
            if from == to {
                // replacing a role by itself changes nothing
                return unchanged(find_user(&mut tx, project, user_id).await?);
            }
            db::roles::assign(&mut tx, project, user_id, to).await?;
            (
                "role.changed",
                serde_json::json!({
                    "fromRoleId": from, "fromRoleName": name(from),
                    "toRoleId": to, "toRoleName": name(to),
                }),
            )
        }
    };
    let what = if actor == Some(user_id) {
        "removing your own admin role"
    } else {
        "taking the admin role from this user"
    };
    guard.check(&mut tx, project, what).await?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project, action)
            .actor(actor)
            .user(user_id)
            .metadata(metadata)
            .request(Some(request_id::current())),
    )
    .await?;
    if status == UserStatus::Active {
        revoke_sessions(s, &mut tx, project, user_id, actor, "role_changed").await?;
    }
    let user = find_user(&mut tx, project, user_id).await?;
    tx.commit().await?;
    s.outbox.wake();
    tracing::info!(%user_id, action, "roles changed");
    Ok(ApiJson(Data::new(user)))
}

/// Gives a user a role (no change if it holds it already). An ACTIVE user's tokens are revoked
/// at once: it logs in again to get the new permissions.
///
/// Permission: `user:update`. 404 for an unknown user or role; 409 for a deactivated user.
#[utoipa::path(post, path = "/api/v1/users/{id}/roles", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    request_body = RoleRequest,
    security(("bearer" = ["user:update"])),
    responses((status = 200, body = inline(Data<User>)),
              (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn add_role(
    auth: Authorized<UserUpdate>,
    State(s): State<AppState>,
    PathId(user_id): PathId,
    ValidJson(role_id): ValidJson<RoleRequest>,
) -> Result<ApiJson<Data<User>>> {
    let change = RoleChange::Add(role_id);
    change_roles(&s, auth.claims.project_id, auth.user_id(), user_id, change).await
}

/// Takes a role from a user. An ACTIVE user's tokens are revoked at once.
///
/// Permission: `user:update`. 404 for an unknown user or role, or a role the user does not
/// hold; 409 for a deactivated user, or when it would leave the project without an active
/// admin (the last active holder of the `admin` role losing it, the caller included).
#[utoipa::path(delete, path = "/api/v1/users/{id}/roles/{roleId}", tag = "users",
    params(("id" = Uuid, Path, description = "User id"),
           ("roleId" = Uuid, Path, description = "Role id")),
    security(("bearer" = ["user:update"])),
    responses((status = 200, body = inline(Data<User>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn remove_role(
    auth: Authorized<UserUpdate>,
    State(s): State<AppState>,
    PathId((user_id, role_id)): PathId<(Uuid, Uuid)>,
) -> Result<ApiJson<Data<User>>> {
    let change = RoleChange::Remove(role_id);
    change_roles(&s, auth.claims.project_id, auth.user_id(), user_id, change).await
}

/// Replaces one of a user's roles by another (`{"roleId": <new role>}`). An ACTIVE user's
/// tokens are revoked at once.
///
/// Permission: `user:update`. 404 for an unknown user or role, or a role the user does not
/// hold; 409 for a deactivated user, or when it would leave the project without an active
/// admin.
#[utoipa::path(patch, path = "/api/v1/users/{id}/roles/{roleId}", tag = "users",
    params(("id" = Uuid, Path, description = "User id"),
           ("roleId" = Uuid, Path, description = "The role to replace")),
    request_body = RoleRequest,
    security(("bearer" = ["user:update"])),
    responses((status = 200, body = inline(Data<User>)),
              (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn change_role(
    auth: Authorized<UserUpdate>,
    State(s): State<AppState>,
    PathId((user_id, from)): PathId<(Uuid, Uuid)>,
    ValidJson(to): ValidJson<RoleRequest>,
) -> Result<ApiJson<Data<User>>> {
    let change = RoleChange::Replace { from, to };
    change_roles(&s, auth.claims.project_id, auth.user_id(), user_id, change).await
}
