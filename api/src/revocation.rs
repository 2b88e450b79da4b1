//! Revoking a user's tokens at once, when a change takes permissions away from an ACTIVE user
//! (role change, deactivation) or its password changes (reset: every session; a change by the
//! user: every session but the caller's, [`revoke_other_sessions`]). The user's refresh
//! families are revoked in the caller's transaction too, so no refresh brings a session back.
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

use shared::{
    auth::Claims,
    db::refresh_tokens,
    jobs::{Job as _, RevokeSessions},
};
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
        also: Vec::new(),
    }
    .enqueue(tx, request_id::enqueue_options())
    .await?;
    let ttl = s.settings.auth.jwt_ttl;
    s.sessions
        .revoke_user_before(user_id, now_ms, ttl)
        .await
        .map_err(ApiError::session_store)?;
    s.revocations.note_user(user_id, now_ms, ttl);
    refresh_tokens::revoke_user_families(tx, project_id, user_id, None, reason).await?;
    tracing::info!(%user_id, reason, %job_id, "sessions revoked");
    Ok(job_id)
}

/// Revokes every token and refresh family of the user behind `caller` except the caller's own
/// token and its family, inside the caller's transaction; returns the `revoke_sessions` job's
/// id.
///
/// Tokens issued before the caller's are revoked by the user's marker (set to the caller's
/// issue time, so the caller's token stays valid); the sessions issued since (other logins
/// after the caller's) are revoked one by one, at once. The job re-asserts the marker and
/// cleans up the older sessions' records.
pub async fn revoke_other_sessions(
    s: &AppState,
    tx: &mut PgConnection,
    caller: &Claims,
    user_id: Uuid,
    reason: &str,
) -> Result<Uuid> {
    let project_id = caller.project_id;
    let before_ms = caller.iat_ms;
    let job_id = RevokeSessions {
        project_id,
        user_id,
        actor_id: Some(user_id),
        reason: reason.to_owned(),
        revoked_before_ms: before_ms,
        also: Vec::new(),
    }
    .enqueue(tx, request_id::enqueue_options())
    .await?;
    let keep = refresh_tokens::family_of_access(tx, project_id, caller.jti).await?;
    refresh_tokens::revoke_user_families(tx, project_id, user_id, keep, reason).await?;
    let ttl = s.settings.auth.jwt_ttl;
    s.sessions
        .revoke_user_before(user_id, before_ms, ttl)
        .await
        .map_err(ApiError::session_store)?;
    s.revocations.note_user(user_id, before_ms, ttl);
    let newer = s
        .sessions
        .of_user(user_id)
        .await
        .map_err(ApiError::session_store)?
        .into_iter()
        .filter(|other| other.jti != caller.jti && other.issued_ms >= before_ms);
    for other in newer {
        s.revocations
            .note_jti(other.jti, shared::sessions::revocation_ttl(other.expires));
        s.sessions
            .revoke_jti(Some(user_id), other.jti, other.expires)
            .await
            .map_err(ApiError::session_store)?;
    }
    tracing::info!(%user_id, reason, %job_id, "other sessions revoked");
    Ok(job_id)
}
