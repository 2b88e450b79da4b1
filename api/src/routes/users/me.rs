//! `GET /users/me`: the caller, with roles and permissions.

use axum::extract::State;
use shared::db;

use crate::{
    AppState,
    auth::Authenticated,
    caller::Me,
    envelope::{ApiJson, Data},
    error::{ApiError, AuthRefusals, ErrorEnvelope, Result},
};

/// The caller: the user behind the token, with roles and permissions.
///
/// Any valid token (no permission needed); 404 for service tokens, which are not users.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users",
    security(("bearer" = [])),
    responses((status = 200, body = inline(Data<Me>)),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn me(
    auth: Authenticated,
    State(s): State<AppState>,
) -> Result<ApiJson<Data<Me>>> {
    let user_id = auth.user_id().ok_or(ApiError::NotFound("user"))?;
    let project = auth.claims.project_id;
    let mut conn = s.pool.acquire().await?;
    let user = db::users::find(&mut conn, project, user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let permissions = db::roles::permissions_of(&mut conn, project, user_id).await?;
    Ok(ApiJson(Data::new(Me {
        user,
        project_id: project,
        permissions,
    })))
}
