//! The caller's own user: `GET /users/me` (with roles and permissions) and `PUT /users/me`
//! (its name). Both need a user's token: a service or platform token gets 403
//! `user_token_required`.

use axum::extract::State;
use serde::Deserialize;
use shared::{
    db::{self, audit::NewEntry},
    domain::{DisplayName, FieldErrors, required},
};
use utoipa::ToSchema;

use crate::{
    AppState,
    auth::Authenticated,
    caller::{Me, own_user},
    envelope::{ApiJson, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, ErrorEnvelope, Result},
    extract::{ValidJson, Validate},
    request_id,
};

/// The caller: the user behind the token, with roles and permissions.
///
/// Any user's token (no permission needed); 403 `user_token_required` for a service or
/// platform token, which is no user; 404 if the user no longer exists.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users",
    security(("bearer" = [])),
    responses((status = 200, body = inline(Data<Me>)),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn me(
    auth: Authenticated,
    State(s): State<AppState>,
) -> Result<ApiJson<Data<Me>>> {
    let user_id = own_user(&auth.claims)?;
    let project = auth.claims.project_id;
    let mut conn = s.pool.acquire().await?;
    Ok(ApiJson(Data::new(
        me_of(&mut conn, project, user_id).await?,
    )))
}

async fn me_of(
    conn: &mut sqlx::PgConnection,
    project: uuid::Uuid,
    user_id: uuid::Uuid,
) -> Result<Me> {
    let user = db::users::find(conn, project, user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let permissions = db::roles::permissions_of(conn, project, user_id).await?;
    Ok(Me {
        user,
        project_id: project,
        permissions,
    })
}

/// The caller's new profile.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct UpdateMe {
    /// The display name (not blank).
    #[schema(required = true, nullable = false, value_type = shared::domain::NonBlankName)]
    pub name: Option<String>,
}

impl Validate for UpdateMe {
    type Valid = DisplayName;

    fn validate(self) -> Result<DisplayName, FieldErrors> {
        required(self.name)
            .and_then(|n| DisplayName::parse(&n))
            .map_err(|e| FieldErrors::one("name", e.message()))
    }
}

/// Changes the caller's own name (audited as `user.updated`). Its email and roles are changed
/// by an admin (`PUT /users/{id}`, the role routes).
///
/// Any user's token (no permission needed); 403 `user_token_required` for a service or
/// platform token; 404 if the user no longer exists.
#[utoipa::path(put, path = "/api/v1/users/me", tag = "users",
    request_body = UpdateMe,
    security(("bearer" = [])),
    responses((status = 200, body = inline(Data<Me>)),
              (status = 404, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn update_me(
    auth: Authenticated,
    State(s): State<AppState>,
    ValidJson(name): ValidJson<UpdateMe>,
) -> Result<ApiJson<Data<Me>>> {
    let user_id = own_user(&auth.claims)?;
    let project = auth.claims.project_id;
    let mut tx = s.pool.begin().await?;
    let before = db::users::set_profile(&mut tx, project, user_id, Some(name.as_ref()), None)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    if before.name.as_deref() != Some(name.as_ref()) {
        db::audit::record(
            &mut tx,
            NewEntry::new(project, "user.updated")
                .actor(Some(user_id))
                .user(user_id)
                .metadata(serde_json::json!({
                    "changes": {"name": {"from": before.name, "to": name.as_ref()}}
                }))
                .request(Some(request_id::current())),
        )
        .await?;
    }
    let me = me_of(&mut tx, project, user_id).await?;
    tx.commit().await?;
    Ok(ApiJson(Data::new(me)))
}
