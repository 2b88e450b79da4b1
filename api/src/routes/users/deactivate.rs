//! Deactivating a user: it cannot log in any more, and its tokens stop working before the
//! answer ([`crate::revocation`]); and reactivating it: it can log in again with its password
//! (the tokens it had stay revoked).

use axum::extract::State;
use shared::db::{
    self,
    audit::NewEntry,
    users::{User, UserStatus},
};

use crate::{
    AppState, admin_guard,
    auth::{Authorized, UserDeactivate},
    envelope::{ApiJson, Data},
    error::{ApiError, AuthRefusals, ErrorEnvelope, Result},
    extract::PathId,
    request_id,
    revocation::revoke_sessions,
};

/// Deactivates a user: it cannot log in any more, and its tokens stop working before this
/// answers, on every API process. An invited user's invitation is deleted. Deactivating a
/// deactivated user changes nothing and answers 200 (idempotent).
///
/// Permission: `user:deactivate`. 404 for an unknown user; 409 when it would leave the project
/// without an active admin (the last active holder of the `admin` role); 422 for yourself.
/// `POST /users/{id}/reactivate` undoes it.
#[utoipa::path(post, path = "/api/v1/users/{id}/deactivate", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = ["user:deactivate"])),
    responses((status = 200, body = inline(Data<User>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn deactivate_user(
    auth: Authorized<UserDeactivate>,
    State(s): State<AppState>,
    PathId(user_id): PathId,
) -> Result<ApiJson<Data<User>>> {
    let actor = auth.user_id();
    if actor == Some(user_id) {
        return Err(ApiError::invalid("id", "you cannot deactivate yourself"));
    }
    let project = auth.claims.project_id;
    let mut tx = s.pool.begin().await?;
    // before the user's row: one lock order for every writer (see `admin_guard`)
    let guard = admin_guard::lock(&mut tx, project).await?;
    let before = db::users::lock_status(&mut tx, project, user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    if before != UserStatus::Deactivated {
        db::users::set_status(&mut tx, project, user_id, UserStatus::Deactivated).await?;
        guard
            .check(&mut tx, project, "deactivating this user")
            .await?;
        if before == UserStatus::Invited {
            db::invitations::delete_of_user(&mut tx, project, user_id).await?;
        }
        db::audit::record(
            &mut tx,
            NewEntry::new(project, "user.deactivated")
                .actor(actor)
                .user(user_id)
                .metadata(serde_json::json!({ "previousStatus": before.as_str() }))
                .request(Some(request_id::current())),
        )
        .await?;
        if before == UserStatus::Active {
            revoke_sessions(&s, &mut tx, project, user_id, actor, "deactivated").await?;
        }
    }
    let user = db::users::find(&mut tx, project, user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    tx.commit().await?;
    s.outbox.wake();
    if before != UserStatus::Deactivated {
        tracing::info!(%user_id, previous = before.as_str(), "user deactivated");
    }
    Ok(ApiJson(Data::new(user)))
}

/// Reactivates a deactivated user: `ACTIVE` again, it logs in with its password (the tokens it
/// had before stay revoked) and keeps its roles. Audited as `user.reactivated`. Reactivating
/// an active user changes nothing and answers 200 (idempotent).
///
/// Permission: `user:deactivate`. 404 for a user of another project or none; 409 for an
/// invited user, or one deactivated before it ever set a password (it has nothing to log in
/// with: it must be invited again under another address, or created with `POST /users`).
#[utoipa::path(post, path = "/api/v1/users/{id}/reactivate", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = ["user:deactivate"])),
    responses((status = 200, body = inline(Data<User>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn reactivate_user(
    auth: Authorized<UserDeactivate>,
    State(s): State<AppState>,
    PathId(user_id): PathId,
) -> Result<ApiJson<Data<User>>> {
    let project = auth.claims.project_id;
    let mut tx = s.pool.begin().await?;
    let before = db::users::lock_status(&mut tx, project, user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    match before {
        UserStatus::Active => {}
        UserStatus::Invited => {
            return Err(ApiError::Conflict(
                "the user is invited, not deactivated: it becomes active by accepting its \
                 invitation"
                    .into(),
            ));
        }
        UserStatus::Deactivated => {
            if !db::users::has_password(&mut tx, project, user_id).await? {
                return Err(ApiError::Conflict(
                    "the user was deactivated before it accepted its invitation, so it has no \
                     password to log in with; it cannot be reactivated"
                        .into(),
                ));
            }
            db::users::set_status(&mut tx, project, user_id, UserStatus::Active).await?;
            db::audit::record(
                &mut tx,
                NewEntry::new(project, "user.reactivated")
                    .actor(auth.user_id())
                    .user(user_id)
                    .request(Some(request_id::current())),
            )
            .await?;
        }
    }
    let user = db::users::find(&mut tx, project, user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    tx.commit().await?;
    if before == UserStatus::Deactivated {
        tracing::info!(%user_id, "user reactivated");
    }
    Ok(ApiJson(Data::new(user)))
}
