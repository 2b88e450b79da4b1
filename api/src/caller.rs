//! The caller as the dashboard sees it: a user with its project and permissions ([`Me`]),
//! answered by `GET /users/me` and by a login.

use serde::Serialize;
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
