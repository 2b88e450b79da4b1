//! The caller's own project, for any caller of it: a user or service token, or an API key
//! (`X-API-Key`) — a sender can check its key here before it sends events.

use axum::extract::State;
use shared::db::{self, projects::Project};

use crate::{
    AppState,
    auth::{AnyPermission, Caller},
    envelope::{ApiJson, Data},
    error::{ApiError, AuthRefusals, Result},
};

/// The caller's project: its name, slug, status and settings.
///
/// Any valid token of the project (`Authorization: Bearer`), or one of its API keys
/// (`X-API-Key`). A key or token of a suspended project gets 403 `project_suspended`; of a
/// deleted one, 401 `project_deleted`. 404 for a token bound to no project (a platform token).
#[utoipa::path(get, path = "/api/v1/projects/current", tag = "projects",
    security(("bearer" = []), ("apiKey" = [])),
    responses((status = 200, body = inline(Data<Project>)),
              (status = 404, body = crate::error::ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn current_project(
    caller: Caller<AnyPermission>,
    State(s): State<AppState>,
) -> Result<ApiJson<Data<Project>>> {
    let mut conn = s.pool.acquire().await?;
    let project = db::projects::find(&mut conn, caller.project_id)
        .await?
        .ok_or(ApiError::NotFound("project"))?;
    Ok(ApiJson(Data::new(project)))
}
