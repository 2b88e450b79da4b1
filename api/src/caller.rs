//! The caller as the dashboard sees it: a user with its project and permissions ([`Me`]),
//! answered by `GET /users/me` and by a login; [`own_user`] for routes about the caller's own
//! user.

use serde::Serialize;
use shared::auth::Claims;
use shared::db::users::User;
use utoipa::ToSchema;
use uuid::Uuid;

/// A user with the permissions its roles grant.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    /// The user.
    #[serde(flatten)]
    pub user: User,
    /// Its project.
    pub project_id: Uuid,
    /// Every permission its roles grant.
    pub permissions: Vec<String>,
}

/// The user a token belongs to, for routes that act on the caller's own user: 403
/// `user_token_required` for a token that is no user's (service or platform token).
pub fn own_user(claims: &Claims) -> Result<Uuid, crate::error::ApiError> {
    crate::auth::user_of(claims).ok_or(crate::error::ApiError::UserTokenRequired)
}
