//! The last-admin guard: no request may leave a project without an ACTIVE user holding the
//! built-in `admin` role (which always keeps `role:*` and `user:*`, so such a user can give
//! every other permission back).
//!
//! Every write that could take an admin away (a role removed or replaced, a user deactivated,
//! the admin role changed) calls [`lock`] first in its transaction, makes its change, then
//! [`AdminGuard::check`]: if the project had an active admin before and has none now, the
//! request is refused with 409 and the transaction rolls back. The lock is the admin role's row
//! (`FOR NO KEY UPDATE`), taken before any user row, so two such writes in one project run one
//! after the other and the second counts what the first left: two admins removing each other
//! at the same moment cannot both succeed. Role assignments only key-share that row, so
//! invitations and role grants are not slowed by it.

use shared::db;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::error::{ApiError, Result};

/// The admin role locked for the transaction, and its active holders before the change.
#[derive(Debug)]
pub struct AdminGuard {
    /// The admin role (`None`: the project has none, nothing to guard).
    pub role_id: Option<Uuid>,
    before: i64,
}

/// Locks the project's admin role for the rest of the transaction and counts its active
/// holders. Call before locking any user row (one lock order for every writer).
pub async fn lock(tx: &mut PgConnection, project_id: Uuid) -> Result<AdminGuard> {
    let role_id = db::roles::lock_admin_role(tx, project_id).await?;
    let before = match role_id {
        Some(role) => db::roles::active_holders(tx, project_id, role).await?,
        None => 0,
    };
    Ok(AdminGuard { role_id, before })
}

impl AdminGuard {
    /// Whether `role` is the admin role.
    pub fn is_admin(&self, role: Uuid) -> bool {
        self.role_id == Some(role)
    }

    /// After the change (in the same transaction): refuses it with 409 if it took the
    /// project's last active admin away. `what` says what was asked ("removing this role").
    pub async fn check(&self, tx: &mut PgConnection, project_id: Uuid, what: &str) -> Result<()> {
        let Some(role) = self.role_id else {
            return Ok(());
        };
        if self.before == 0 {
            // a project without an active admin yet (a new project, admins still invited):
            // nothing to lose
            return Ok(());
        }
        if db::roles::active_holders(tx, project_id, role).await? == 0 {
            return Err(ApiError::Conflict(format!(
                "{what} would leave the project without an active admin (an ACTIVE user with \
                 the admin role); give another active user the admin role first"
            )));
        }
        Ok(())
    }
}
