//! Roles of the caller's project and the permissions they grant: list, read, create, change,
//! delete, and the catalogue of permissions (`GET /permissions`).
//!
//! Every role is the project's (another project's role id is a 404). The built-in `admin`
//! role cannot be deleted or renamed and always keeps `role:*` and `user:*`; changes that could
//! leave the project without an active admin pass [`crate::admin_guard`]. Tokens carry their
//! permissions, so changing a role's permissions (or deleting a role its holders had) revokes
//! the tokens of its ACTIVE holders at once ([`crate::revocation`]): they log in again to get
//! the new set. Every write is audited (`role.created`, `role.updated`, `role.deleted`).

use std::collections::BTreeSet;

use axum::{extract::State, http::StatusCode};
use serde::{Deserialize, Serialize};
use shared::{
    db::{
        self,
        audit::NewEntry,
        roles::{ADMIN_ROLE, RoleDetail, is_admin_essential},
        users::UserStatus,
    },
    domain::{Description, DisplayName, FieldErrors, Invalid, required},
    permissions::{ALL, PermissionInfo},
};
use sqlx::PgConnection;
use utoipa::{
    IntoParams, PartialSchema, ToSchema,
    openapi::{
        RefOr,
        schema::{ArrayBuilder, ObjectBuilder, Schema, Type},
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    AppState, admin_guard,
    auth::{Authorized, RoleRead, RoleWrite},
    envelope::{ApiJson, Created, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, ErrorEnvelope, Result, ResultExt},
    extract::{ApiQuery, PathId, ValidJson, Validate},
    filters, request_id,
    revocation::revoke_sessions,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_roles, create_role))
        .routes(routes!(get_role, update_role, delete_role))
        .routes(routes!(list_permissions))
}

/// Most permissions one request names (as sent, repeats counted).
pub const MAX_PERMISSIONS: usize = 100;

/// The permissions a role can hold: every project permission (platform ones are for platform
/// operators' tokens only).
fn grantable() -> impl Iterator<Item = &'static PermissionInfo> {
    ALL.iter().filter(|p| !p.platform_only)
}

/// The OpenAPI schema of a role's permission list: names from the catalogue.
pub struct PermissionNames;

impl PartialSchema for PermissionNames {
    fn schema() -> RefOr<Schema> {
        let item = ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(grantable().map(|p| p.name)));
        ArrayBuilder::new()
            .items(item)
            .max_items(Some(MAX_PERMISSIONS))
            .description(Some(
                "Permission names (GET /api/v1/permissions lists them); repeats count once",
            ))
            .into()
    }
}

impl ToSchema for PermissionNames {}

/// Checks a permission list: known, grantable names; returns them sorted, without repeats.
fn parse_permissions(names: Vec<String>) -> Result<Vec<String>, Invalid> {
    if names.len() > MAX_PERMISSIONS {
        return Err(Invalid::new(format!(
            "at most {MAX_PERMISSIONS} permissions"
        )));
    }
    let set: BTreeSet<String> = names.into_iter().collect();
    let unknown: Vec<&str> = set
        .iter()
        .map(String::as_str)
        .filter(|n| !grantable().any(|p| p.name == *n))
        .collect();
    if !unknown.is_empty() {
        let shown: Vec<String> = unknown
            .iter()
            .take(10)
            .map(|n| format!("{:?}", n.chars().take(64).collect::<String>()))
            .collect();
        return Err(Invalid::new(format!(
            "unknown permission {} (GET /api/v1/permissions lists them)",
            shown.join(", ")
        )));
    }
    Ok(set.into_iter().collect())
}

/// A new role.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct CreateRoleRequest {
    /// Its name, unique in the project.
    #[schema(required = true, nullable = false, value_type = shared::domain::NonBlankName)]
    pub name: Option<String>,
    /// What it is for (default empty).
    #[schema(value_type = Option<Description>)]
    pub description: Option<String>,
    /// The permissions it grants (may be empty).
    #[schema(required = true, nullable = false, value_type = PermissionNames)]
    pub permissions: Option<Vec<String>>,
}

/// A valid [`CreateRoleRequest`].
#[derive(Debug)]
pub struct NewRole {
    name: DisplayName,
    description: Description,
    permissions: Vec<String>,
}

impl Validate for CreateRoleRequest {
    type Valid = NewRole;

    fn validate(self) -> Result<NewRole, FieldErrors> {
        let mut errors = FieldErrors::new();
        let name = errors.check(
            "name",
            required(self.name).and_then(|n| DisplayName::parse(&n)),
        );
        let description = errors.check(
            "description",
            Description::parse(self.description.as_deref().unwrap_or_default()),
        );
        let permissions = errors.check(
            "permissions",
            required(self.permissions).and_then(parse_permissions),
        );
        match (name, description, permissions) {
            (Some(name), Some(description), Some(permissions)) => Ok(NewRole {
                name,
                description,
                permissions,
            }),
            _ => Err(errors),
        }
    }
}

/// A change to a role: the fields given change, the others stay.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateRoleRequest {
    /// A new name (not the built-in `admin` role's).
    #[schema(value_type = Option<shared::domain::NonBlankName>)]
    pub name: Option<String>,
    /// A new description.
    #[schema(value_type = Option<Description>)]
    pub description: Option<String>,
    /// The whole new permission list (the built-in `admin` role keeps `role:*` and `user:*`).
    #[schema(value_type = Option<PermissionNames>)]
    pub permissions: Option<Vec<String>>,
}

/// A valid [`UpdateRoleRequest`].
#[derive(Debug)]
pub struct RoleChange {
    name: Option<DisplayName>,
    description: Option<Description>,
    permissions: Option<Vec<String>>,
}

impl Validate for UpdateRoleRequest {
    type Valid = RoleChange;

    fn validate(self) -> Result<RoleChange, FieldErrors> {
        let mut errors = FieldErrors::new();
        let name = errors.check(
            "name",
            self.name.map(|n| DisplayName::parse(&n)).transpose(),
        );
        let description = errors.check(
            "description",
            self.description.map(|d| Description::parse(&d)).transpose(),
        );
        let permissions = errors.check(
            "permissions",
            self.permissions.map(parse_permissions).transpose(),
        );
        match (name, description, permissions) {
            (Some(name), Some(description), Some(permissions)) => Ok(RoleChange {
                name,
                description,
                permissions,
            }),
            _ => Err(errors),
        }
    }
}

async fn find_role(conn: &mut PgConnection, project: Uuid, id: Uuid) -> Result<RoleDetail> {
    db::roles::find_detailed(conn, project, id)
        .await?
        .ok_or(ApiError::NotFound("role"))
}

fn name_taken() -> ApiError {
    ApiError::Conflict("a role with this name already exists in the project".into())
}

/// Revokes the tokens of a role's ACTIVE holders (locked by the caller); returns how many.
async fn revoke_holders(
    s: &AppState,
    tx: &mut PgConnection,
    project: Uuid,
    holders: &[(Uuid, String)],
    actor: Option<Uuid>,
    reason: &str,
) -> Result<usize> {
    let mut revoked = 0;
    for (user, status) in holders {
        if UserStatus::parse(status) == Some(UserStatus::Active) {
            revoke_sessions(s, &mut *tx, project, *user, actor, reason).await?;
            revoked += 1;
        }
    }
    Ok(revoked)
}

/// The project's roles, by name, each with its permissions and how many users hold it.
///
/// Permission: `role:read`.
#[utoipa::path(get, path = "/api/v1/roles", tag = "roles",
    security(("bearer" = ["role:read"])),
    responses((status = 200, body = inline(Data<Vec<RoleDetail>>)),
              AuthRefusals))]
async fn list_roles(
    auth: Authorized<RoleRead>,
    State(s): State<AppState>,
) -> Result<ApiJson<Data<Vec<RoleDetail>>>> {
    let roles = db::roles::list_detailed(&s.pool, auth.claims.project_id).await?;
    Ok(ApiJson(Data::new(roles)))
}

/// One role of the project.
///
/// Permission: `role:read`. 404 for a role of another project or none.
#[utoipa::path(get, path = "/api/v1/roles/{id}", tag = "roles",
    params(("id" = Uuid, Path, description = "Role id")),
    security(("bearer" = ["role:read"])),
    responses((status = 200, body = inline(Data<RoleDetail>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
async fn get_role(
    auth: Authorized<RoleRead>,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<ApiJson<Data<RoleDetail>>> {
    let mut conn = s.pool.acquire().await?;
    let role = find_role(&mut conn, auth.claims.project_id, id).await?;
    Ok(ApiJson(Data::new(role)))
}

/// Creates a role with its permissions (`201`, `Location`: the role). Give it to users with
/// `POST /users/{id}/roles` or in an invitation.
///
/// Permission: `role:write`. 409 if the name is taken; 422 for an unknown permission, naming
/// the field.
#[utoipa::path(post, path = "/api/v1/roles", tag = "roles",
    request_body = CreateRoleRequest,
    security(("bearer" = ["role:write"])),
    responses((status = 201, body = inline(Data<RoleDetail>),
               headers(("Location" = String, description = "The role's URL"))),
              (status = 409, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
async fn create_role(
    auth: Authorized<RoleWrite>,
    State(s): State<AppState>,
    ValidJson(req): ValidJson<CreateRoleRequest>,
) -> Result<Created<RoleDetail>> {
    let project = auth.claims.project_id;
    let mut tx = s.pool.begin().await?;
    let id = db::roles::create(
        &mut tx,
        project,
        req.name.as_ref(),
        req.description.as_ref(),
        &req.permissions,
    )
    .await
    .on_constraint("roles_project_name_key", name_taken)?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project, "role.created")
            .actor(auth.user_id())
            .target("role", id)
            .metadata(serde_json::json!({
                "name": req.name.as_ref(),
                "description": req.description.as_ref(),
                "permissions": req.permissions,
            }))
            .request(Some(request_id::current())),
    )
    .await?;
    let role = find_role(&mut tx, project, id).await?;
    tx.commit().await?;
    tracing::info!(role_id = %id, "role created");
    Ok(Created {
        location: format!("/api/v1/roles/{id}"),
        data: role,
    })
}

/// Changes a role: the fields given (`name`, `description`, `permissions`, the whole new list).
/// Changing its permissions revokes the tokens of its ACTIVE holders at once: they log in
/// again to get the new set.
///
/// Permission: `role:write`. 404 for a role of another project or none; 409 if the name is
/// taken or the change would leave the project without an active admin; 422 for an unknown
/// permission, for renaming the built-in `admin` role, or for taking `role:*` or `user:*` from
/// it.
#[utoipa::path(put, path = "/api/v1/roles/{id}", tag = "roles",
    params(("id" = Uuid, Path, description = "Role id")),
    request_body = UpdateRoleRequest,
    security(("bearer" = ["role:write"])),
    responses((status = 200, body = inline(Data<RoleDetail>)),
              (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
async fn update_role(
    auth: Authorized<RoleWrite>,
    State(s): State<AppState>,
    PathId(id): PathId,
    ValidJson(change): ValidJson<UpdateRoleRequest>,
) -> Result<ApiJson<Data<RoleDetail>>> {
    let project = auth.claims.project_id;
    let actor = auth.user_id();
    let mut tx = s.pool.begin().await?;
    let guard = admin_guard::lock(&mut tx, project).await?;
    let (name_before, permissions_before) = db::roles::lock(&mut tx, project, id)
        .await?
        .ok_or(ApiError::NotFound("role"))?;
    if guard.is_admin(id) || name_before == ADMIN_ROLE {
        let mut errors = FieldErrors::new();
        if change
            .name
            .as_ref()
            .is_some_and(|n| n.as_ref() != ADMIN_ROLE)
        {
            errors.add("name", "the built-in admin role cannot be renamed");
        }
        if let Some(new) = &change.permissions {
            let lost: Vec<&str> = permissions_before
                .iter()
                .map(String::as_str)
                .filter(|p| is_admin_essential(p) && !new.iter().any(|n| n == p))
                .collect();
            if !lost.is_empty() {
                errors.add(
                    "permissions",
                    format!(
                        "the built-in admin role keeps every role:* and user:* permission \
                         (it is how a project recovers the others); missing {}",
                        lost.join(", ")
                    ),
                );
            }
        }
        if !errors.is_empty() {
            return Err(errors.into());
        }
    }
    db::roles::update(
        &mut tx,
        project,
        id,
        change.name.as_ref().map(AsRef::as_ref),
        change.description.as_ref().map(AsRef::as_ref),
    )
    .await
    .on_constraint("roles_project_name_key", name_taken)?;
    let mut changes = serde_json::Map::new();
    if let Some(name) = change.name.as_ref().filter(|n| n.as_ref() != name_before) {
        changes.insert(
            "name".into(),
            serde_json::json!({"from": name_before, "to": name.as_ref()}),
        );
    }
    if let Some(d) = &change.description {
        changes.insert("description".into(), serde_json::json!({"to": d.as_ref()}));
    }
    let mut revoked = 0;
    if let Some(new) = change
        .permissions
        .as_ref()
        .filter(|p| **p != permissions_before)
    {
        db::roles::set_permissions(&mut tx, id, new).await?;
        let added: Vec<&String> = new
            .iter()
            .filter(|p| !permissions_before.contains(p))
            .collect();
        let removed: Vec<&String> = permissions_before
            .iter()
            .filter(|p| !new.contains(p))
            .collect();
        changes.insert(
            "permissions".into(),
            serde_json::json!({"added": added, "removed": removed}),
        );
        let holders = db::roles::lock_holders(&mut tx, project, id).await?;
        revoked = revoke_holders(
            &s,
            &mut tx,
            project,
            &holders,
            actor,
            "role_permissions_changed",
        )
        .await?;
    }
    guard
        .check(&mut tx, project, "changing the admin role")
        .await?;
    if !changes.is_empty() {
        db::audit::record(
            &mut tx,
            NewEntry::new(project, "role.updated")
                .actor(actor)
                .target("role", id)
                .metadata(serde_json::json!({
                    "name": change.name.as_ref().map_or(name_before.as_str(), AsRef::as_ref),
                    "changes": changes,
                    "sessionsRevoked": revoked,
                }))
                .request(Some(request_id::current())),
        )
        .await?;
    }
    let role = find_role(&mut tx, project, id).await?;
    tx.commit().await?;
    s.outbox.wake();
    tracing::info!(role_id = %id, revoked, "role updated");
    Ok(ApiJson(Data::new(role)))
}

/// `?reassignTo=`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct DeleteRoleParams {
    /// A role of the project that the deleted role's holders get instead (they keep it if they
    /// hold it already); empty is none.
    #[param(value_type = Option<filters::UuidOrEmpty>, inline)]
    pub reassign_to: Option<String>,
}

/// Deletes a role (`204`). While users hold it the deletion is refused (409) unless
/// `?reassignTo=` names the role they get instead; its ACTIVE holders' tokens are then revoked.
///
/// Permission: `role:write`. 404 for a role of another project or none, or a `reassignTo`
/// role that is not the project's; 409 for the built-in `admin` role, or while users hold the
/// role and no `reassignTo` is given; 422 for `reassignTo` naming the role itself.
#[utoipa::path(delete, path = "/api/v1/roles/{id}", tag = "roles",
    params(("id" = Uuid, Path, description = "Role id"), DeleteRoleParams),
    security(("bearer" = ["role:write"])),
    responses((status = 204, description = "Deleted"),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
async fn delete_role(
    auth: Authorized<RoleWrite>,
    State(s): State<AppState>,
    PathId(id): PathId,
    ApiQuery(params): ApiQuery<DeleteRoleParams>,
) -> Result<StatusCode> {
    let reassign_to = filters::uuid(params.reassign_to.as_deref(), "a role id")
        .map_err(|e| ApiError::invalid("reassignTo", e.message()))?;
    let project = auth.claims.project_id;
    let actor = auth.user_id();
    let mut tx = s.pool.begin().await?;
    let guard = admin_guard::lock(&mut tx, project).await?;
    let (name, permissions) = db::roles::lock(&mut tx, project, id)
        .await?
        .ok_or(ApiError::NotFound("role"))?;
    if guard.is_admin(id) || name == ADMIN_ROLE {
        return Err(ApiError::Conflict(
            "the built-in admin role cannot be deleted: it is how the project is administered"
                .into(),
        ));
    }
    if reassign_to == Some(id) {
        return Err(ApiError::invalid(
            "reassignTo",
            "must be another role than the one deleted",
        ));
    }
    let target = match reassign_to {
        Some(to) => Some(
            db::roles::lock(&mut tx, project, to)
                .await?
                .ok_or(ApiError::NotFound("reassignTo role"))?
                .0,
        ),
        None => None,
    };
    let holders = db::roles::lock_holders(&mut tx, project, id).await?;
    if !holders.is_empty() && reassign_to.is_none() {
        return Err(ApiError::Conflict(format!(
            "{} user(s) hold this role; pass ?reassignTo=<role id> to give them another role \
             instead, or take the role from them first",
            holders.len()
        )));
    }
    if let Some(to) = reassign_to {
        db::roles::reassign(&mut tx, project, id, to).await?;
    }
    db::roles::delete(&mut tx, project, id).await?;
    guard.check(&mut tx, project, "deleting this role").await?;
    let revoked = revoke_holders(&s, &mut tx, project, &holders, actor, "role_deleted").await?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project, "role.deleted")
            .actor(actor)
            .target("role", id)
            .metadata(serde_json::json!({
                "name": name,
                "permissions": permissions,
                "holders": holders.len(),
                "reassignedTo": reassign_to.map(|to| serde_json::json!({"id": to, "name": target})),
                "sessionsRevoked": revoked,
            }))
            .request(Some(request_id::current())),
    )
    .await?;
    tx.commit().await?;
    s.outbox.wake();
    tracing::info!(role_id = %id, holders = holders.len(), "role deleted");
    Ok(StatusCode::NO_CONTENT)
}

/// A permission of the catalogue.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct PermissionDoc {
    /// The name roles and tokens carry, e.g. `jobs:read`.
    pub name: &'static str,
    /// What it allows, in one line.
    pub description: &'static str,
    /// `project`: granted by the project's roles; `platform`: platform operators' tokens
    /// only, never held by a role.
    #[schema(pattern = "^(project|platform)$")]
    pub scope: &'static str,
    /// Whether the built-in `admin` role must always hold it.
    pub admin_essential: bool,
}

/// Every permission Comet checks, with its one-line description and scope (the names a role's
/// `permissions` may hold are those of scope `project`).
///
/// Permission: `role:read`.
#[utoipa::path(get, path = "/api/v1/permissions", tag = "roles",
    security(("bearer" = ["role:read"])),
    responses((status = 200, body = inline(Data<Vec<PermissionDoc>>)),
              AuthRefusals))]
async fn list_permissions(_auth: Authorized<RoleRead>) -> ApiJson<Data<Vec<PermissionDoc>>> {
    ApiJson(Data::new(
        ALL.iter()
            .map(|p| PermissionDoc {
                name: p.name,
                description: p.description,
                scope: if p.platform_only {
                    "platform"
                } else {
                    "project"
                },
                admin_essential: !p.platform_only && is_admin_essential(p.name),
            })
            .collect(),
    ))
}
