//! Runs `revoke_sessions`: re-asserts the user's "revoked before" marker, blacklists each live
//! token of the user for its remaining life, deletes the session records, and audits
//! `sessions.revoked` with the reason and how many sessions this run revoked.
//!
//! Idempotent: a second run finds no sessions left and revokes nothing more. Any Redis or
//! Postgres error fails the attempt, which is retried with backoff.

use anyhow::Context as _;
use apalis_core::error::BoxDynError;
use serde::Serialize;
use shared::{
    db::{self, audit::NewEntry},
    jobs::RevokeSessions,
    queue::backend::JobHandle,
};

use super::Handler;
use crate::context::JobContext;

/// What a run did (kept as the job's result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Outcome {
    /// The marker is set and this many sessions were revoked.
    Revoked {
        /// Sessions revoked by this run.
        count: usize,
    },
    /// The user is not in the job's project: nothing was touched.
    UnknownUser,
}

impl Handler for RevokeSessions {
    type Output = Outcome;

    async fn run(self, ctx: &JobContext, handle: &JobHandle) -> Result<Outcome, BoxDynError> {
        Ok(revoke_sessions(ctx, &self, handle.request_id.clone()).await?)
    }
}

/// Revokes every session of the job's users (`user_id`, then `also`); see the module docs.
#[tracing::instrument(name = "revoke_sessions", skip_all, fields(
    project_id = %job.project_id, user_id = %job.user_id, users = 1 + job.also.len(), reason = %job.reason,
))]
pub async fn revoke_sessions(
    ctx: &JobContext,
    job: &RevokeSessions,
    request_id: Option<String>,
) -> anyhow::Result<Outcome> {
    let mut conn = ctx
        .pool
        .acquire()
        .await
        .context("Failed to get a Postgres connection")?;
    let mut total = None;
    for user_id in std::iter::once(job.user_id).chain(job.also.iter().copied()) {
        if let Some(count) = revoke_user(ctx, &mut conn, job, user_id, request_id.clone()).await? {
            *total.get_or_insert(0) += count;
        }
    }
    Ok(match total {
        Some(count) => Outcome::Revoked { count },
        None => Outcome::UnknownUser,
    })
}

/// Revokes one user's sessions; `None` if the user is not the job's project's.
async fn revoke_user(
    ctx: &JobContext,
    conn: &mut sqlx::PgConnection,
    job: &RevokeSessions,
    user_id: uuid::Uuid,
    request_id: Option<String>,
) -> anyhow::Result<Option<usize>> {
    // Session keys are per user, not per project: check the user is the job's tenant's.
    if db::users::find(&mut *conn, job.project_id, user_id)
        .await
        .context("Failed to read the user")?
        .is_none()
    {
        tracing::warn!(%user_id, "sessions not revoked: the user is not in the job's project");
        return Ok(None);
    }

    ctx.sessions
        .revoke_user_before(user_id, job.revoked_before_ms, ctx.settings.auth.jwt_ttl)
        .await
        .context("Failed to set the user's revocation marker")?;
    let sessions = ctx
        .sessions
        .of_user(user_id)
        .await
        .context("Failed to list the user's sessions")?;
    // Only sessions that existed at the revocation: a login after it (a user whose role changed
    // logging in again before a retried job runs) keeps its fresh session.
    let sessions: Vec<_> = sessions
        .into_iter()
        .filter(|s| s.issued_ms < job.revoked_before_ms)
        .collect();
    let count = sessions.len();
    for s in sessions {
        ctx.sessions
            .revoke_jti(Some(user_id), s.jti, s.expires)
            .await
            .context("Failed to revoke a session")?;
    }

    db::audit::record(
        conn,
        NewEntry::new(job.project_id, "sessions.revoked")
            .actor(job.actor_id)
            .user(user_id)
            .metadata(serde_json::json!({ "reason": job.reason, "count": count }))
            .request(request_id),
    )
    .await
    .context("Failed to audit the revocation")?;
    tracing::info!(%user_id, count, "sessions revoked");
    Ok(Some(count))
}
