//! Revoking a user's tokens at once, when a change takes permissions away from an ACTIVE user
//! (role change, deactivation).
//!
//! The "issued before now" marker is written to Redis before the caller's transaction commits
//! (every API process reads it on every request), this process remembers it too (the fallback
//! when Redis cannot be asked, see [`crate::auth::RevocationCache`]), and a `revoke_sessions`
//! job, enqueued in the same transaction, cleans the sessions up. If Redis cannot take the
//! marker the caller's change is rolled back and it gets a 503. The marker's time and tokens'
//! issue times both come from Redis `TIME`, so API hosts with skewed clocks agree on them.
//!
//! The job does not pass the project's enqueue quota ([`crate::quota`]): a revocation is a
//! security action, and whoever filled the project's quota or enqueue rate (a leaked token with
//! `jobs:write`, say) must not be able to stop the admins from locking that token out. Its job
//! is still counted among the project's open jobs, and there is at most one per committed
//! change of a user's status or roles (each audited).

use shared::jobs::{Job as _, RevokeSessions};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    AppState,
    error::{ApiError, Result},
    request_id,
};

/// Revokes every token of `user_id` issued until now, inside the caller's transaction; returns
/// the `revoke_sessions` job's id.
pub async fn revoke_sessions(
    s: &AppState,
    tx: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    actor_id: Option<Uuid>,
    reason: &str,
) -> Result<Uuid> {
    // the shared clock, as tokens' issue times (see `Sessions::now_ms`)
    let now_ms = s.sessions.now_ms().await.map_err(ApiError::session_store)?;
    let job_id = RevokeSessions {
        project_id,
        user_id,
        actor_id,
        reason: reason.to_owned(),
        revoked_before_ms: now_ms,
    }
    .enqueue(tx, request_id::enqueue_options())
    .await?;
    let ttl = s.settings.auth.jwt_ttl;
    s.sessions
        .revoke_user_before(user_id, now_ms, ttl)
        .await
        .map_err(ApiError::session_store)?;
    s.revocations.note_user(user_id, now_ms, ttl);
    tracing::info!(%user_id, reason, %job_id, "sessions revoked");
    Ok(job_id)
}
