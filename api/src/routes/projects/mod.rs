//! Projects and their API keys, one module per use case: platform operators manage projects
//! ([`manage`]: create, list, read, update, suspend, soft-delete, stats); a project's admins
//! (or an operator) manage its API keys ([`api_keys`]); any caller of a project, by token or
//! by key, reads its own project ([`current`]).
//!
//! Tenancy: a project's routes take [`crate::auth::ProjectScoped`], so a token of another
//! project gets 404 for any project id (existing or not) and only ever sees its own project's
//! rows. Writes run in one transaction with their audit entry, recorded in the project's own
//! audit log; a change of status reaches every API process before the answer
//! ([`crate::project_state`]).

pub mod api_keys;
pub mod current;
pub mod manage;

use shared::auth::Claims;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::AppState;

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(manage::create_project, manage::list_projects))
        .routes(routes!(current::current_project))
        .routes(routes!(
            manage::get_project,
            manage::update_project,
            manage::delete_project
        ))
        .routes(routes!(manage::project_stats))
        .routes(routes!(api_keys::create_api_key, api_keys::list_api_keys))
        .routes(routes!(api_keys::get_api_key, api_keys::revoke_api_key))
        .routes(routes!(api_keys::rotate_api_key))
}

/// Who did it, for an audit entry: the user (`actor_id`), or for a platform operator's or a
/// service token, its subject (in the metadata, as `by`).
fn audit_actor(claims: &Claims) -> (Option<Uuid>, Option<String>) {
    match crate::auth::user_of(claims) {
        Some(user) => (Some(user), None),
        None => (None, Some(claims.sub.clone())),
    }
}

/// `metadata` with the non-user actor's subject added as `by` (when there is one).
fn with_by(mut metadata: serde_json::Value, by: &Option<String>) -> serde_json::Value {
    if let (Some(by), Some(map)) = (by, metadata.as_object_mut()) {
        map.insert("by".into(), serde_json::Value::String(by.clone()));
    }
    metadata
}
