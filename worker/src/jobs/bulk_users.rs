//! Runs `bulk_users`: one bulk action (deactivate, reactivate, add or remove a role, delete)
//! over its target users, [`CHUNK`] users per transaction in id order.
//!
//! Each chunk locks the action row, then the project's admin role (the lock order of every
//! writer that can take an admin away, as the API's `admin_guard`), then the chunk's user rows;
//! applies the action with one statement per kind of change; records each user's result and
//! the checkpoint (the chunk's last id); audits the chunk (`users.bulk_<action>`, the changed
//! ids); and, for users that lose something while ACTIVE, sets their "revoked before" markers
//! in Redis before the commit and enqueues one `revoke_sessions` job for the chunk. A retried
//! attempt resumes after the last committed chunk.
//!
//! The last-admin guard holds for the whole set: a chunk that would take the project's last
//! active admins away leaves the last of them as it is (`skipped`, with the reason). The caller
//! is never deactivated or deleted by its own action.

use std::collections::HashSet;

use anyhow::Context as _;
use apalis_core::error::{AbortError, BoxDynError};
use serde::Serialize;
use shared::{
    db::{
        self,
        audit::NewEntry,
        bulk_actions::{BulkAction, BulkKind, BulkResult, Target, Targets},
        refresh_tokens,
    },
    jobs::{BulkUsers, EnqueueOptions, Job as _, RevokeSessions},
    queue::backend::JobHandle,
};
use sqlx::PgConnection;
use uuid::Uuid;

use super::Handler;
use crate::context::JobContext;

/// Users per transaction.
pub const CHUNK: i64 = 500;

/// What a run did (kept as the job's result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// `completed` or `failed`.
    pub status: String,
    /// Users handled.
    pub processed: i64,
    /// Changed.
    pub succeeded: i64,
    /// Left as they were.
    pub skipped: i64,
    /// Could not be changed.
    pub failed: i64,
}

impl Outcome {
    fn of(a: &BulkAction) -> Self {
        Self {
            status: a.status.clone(),
            processed: a.processed,
            succeeded: a.succeeded,
            skipped: a.skipped,
            failed: a.failed,
        }
    }
}

impl Handler for BulkUsers {
    type Output = Outcome;

    async fn run(self, ctx: &JobContext, handle: &JobHandle) -> Result<Outcome, BoxDynError> {
        run(ctx, &self, handle).await
    }
}

fn result(user_id: Uuid, outcome: &str, message: Option<&str>) -> BulkResult {
    BulkResult {
        user_id,
        outcome: outcome.to_owned(),
        message: message.map(str::to_owned),
    }
}

#[tracing::instrument(name = "bulk_users", skip_all, fields(project_id = %job.project_id, action_id = %job.action_id))]
async fn run(ctx: &JobContext, job: &BulkUsers, handle: &JobHandle) -> Result<Outcome, BoxDynError> {
    let (project, id) = (job.project_id, job.action_id);
    let Some(action) = db::bulk_actions::get(&ctx.pool, project, id).await.context("Failed to read the action")? else {
        return Err(AbortError::new("the bulk action does not exist").into());
    };
    if action.finished_at.is_some() {
        return Ok(Outcome::of(&action));
    }
    let Some(kind) = BulkKind::parse(&action.action) else {
        return fail(ctx, job, &format!("unknown action {:?}", action.action)).await;
    };
    let targets: Targets = match serde_json::from_value(action.targets.clone()) {
        Ok(t) => t,
        Err(e) => return fail(ctx, job, &format!("the targets do not read: {e}")).await,
    };
    if kind.needs_role() && action.role_id.is_none() {
        return fail(ctx, job, "the action names no role").await;
    }
    db::bulk_actions::mark_running(&ctx.pool, project, id).await.context("Failed to mark it running")?;
    loop {
        let mut tx = ctx.pool.begin().await.context("Failed to begin")?;
        let Some(action) = db::bulk_actions::lock(&mut tx, project, id).await.context("Failed to lock the action")? else {
            return Err(AbortError::new("the bulk action was deleted").into());
        };
        if action.finished_at.is_some() {
            return Ok(Outcome::of(&action));
        }
        // the admin role before any user row: the API's lock order
        let admin_role = db::roles::lock_admin_role(&mut tx, project).await.context("Failed to lock the admin role")?;
        let users = db::bulk_actions::targets(&mut tx, project, &targets, action.last_user_id, CHUNK, true)
            .await
            .context("Failed to read the users")?;
        let Some(last) = users.last().map(|u| u.user_id) else {
            break;
        };
        let results = apply(ctx, &mut tx, &action, kind, admin_role, &users, handle.request_id.clone())
            .await
            .context("Failed to apply the action")?;
        db::bulk_actions::advance(&mut tx, project, id, &results, last)
            .await
            .context("Failed to record the results")?;
        tx.commit().await.context("Failed to commit a chunk")?;
        ctx.outbox.wake();
        if let Ok(Some(a)) = db::bulk_actions::get(&ctx.pool, project, id).await {
            let _ = handle
                .progress(&serde_json::json!({ "processed": a.processed, "total": a.total }))
                .await;
        }
    }
    end(ctx, job, &targets, kind).await
}

/// Applies `kind` to one chunk of locked users; returns each user's result.
async fn apply(
    ctx: &JobContext,
    tx: &mut PgConnection,
    action: &BulkAction,
    kind: BulkKind,
    admin_role: Option<Uuid>,
    users: &[Target],
    request_id: Option<String>,
) -> anyhow::Result<Vec<BulkResult>> {
    let project = action.project_id;
    let role = action.role_id;
    let ids: Vec<Uuid> = users.iter().map(|u| u.user_id).collect();
    let holders: HashSet<Uuid> = match role {
        Some(r) => holders_of(tx, project, r, &ids).await?.into_iter().collect(),
        None => HashSet::new(),
    };
    let mut results = Vec::with_capacity(users.len());
    let mut change: Vec<&Target> = Vec::new();
    for u in users {
        let status = u.status.as_str();
        let skip = |m: &str| Some(result(u.user_id, "skipped", Some(m)));
        let failed = |m: &str| Some(result(u.user_id, "failed", Some(m)));
        let verdict = match kind {
            BulkKind::Deactivate | BulkKind::Delete if Some(u.user_id) == action.created_by => {
                skip("you cannot deactivate or delete yourself")
            }
            BulkKind::Deactivate if status == "DEACTIVATED" => skip("already deactivated"),
            BulkKind::Reactivate if status == "ACTIVE" => skip("already active"),
            BulkKind::Reactivate if status == "INVITED" => {
                failed("invited, not deactivated: it becomes active by accepting its invitation")
            }
            BulkKind::Reactivate if !u.has_password => {
                failed("deactivated before it accepted its invitation: it has no password to log in with")
            }
            BulkKind::AddRole if holders.contains(&u.user_id) => skip("already holds the role"),
            BulkKind::RemoveRole if !holders.contains(&u.user_id) => skip("does not hold the role"),
            _ => None,
        };
        match verdict {
            Some(r) => results.push(r),
            None => change.push(u),
        }
    }

    // the last-admin guard, for the whole set: chunks run one at a time under the admin role's
    // lock, so each counts what the earlier ones left
    let takes_admin = match kind {
        BulkKind::Deactivate | BulkKind::Delete => true,
        BulkKind::RemoveRole => role.is_some() && role == admin_role,
        _ => false,
    };
    if let (true, Some(admin)) = (takes_admin, admin_role) {
        let active: Vec<Uuid> = change.iter().filter(|u| u.status == "ACTIVE").map(|u| u.user_id).collect();
        let admins: HashSet<Uuid> = holders_of(tx, project, admin, &active).await?.into_iter().collect();
        let before = db::roles::active_holders(tx, project, admin).await?;
        if before > 0 && !admins.is_empty() && before - admins.len() as i64 <= 0 {
            let keep = change.iter().rev().find(|u| admins.contains(&u.user_id)).map(|u| u.user_id);
            if let Some(keep) = keep {
                change.retain(|u| u.user_id != keep);
                results.push(result(
                    keep,
                    "skipped",
                    Some("would leave the project without an active admin (an ACTIVE user with the admin role)"),
                ));
            }
        }
    }

    let changed: Vec<Uuid> = change.iter().map(|u| u.user_id).collect();
    let active: Vec<Uuid> = change.iter().filter(|u| u.status == "ACTIVE").map(|u| u.user_id).collect();
    let invited: Vec<Uuid> = change.iter().filter(|u| u.status == "INVITED").map(|u| u.user_id).collect();
    let mut revoke: Vec<Uuid> = Vec::new();
    match kind {
        BulkKind::Deactivate | BulkKind::Delete => {
            sqlx::query(
                "UPDATE users SET status = 'DEACTIVATED', \
                   deleted_at = CASE WHEN $3 THEN now() ELSE deleted_at END \
                 WHERE project_id = $1 AND user_id = ANY($2)",
            )
            .bind(project)
            .bind(&changed)
            .bind(kind == BulkKind::Delete)
            .execute(&mut *tx)
            .await?;
            sqlx::query("DELETE FROM user_invitations WHERE project_id = $1 AND user_id = ANY($2)")
                .bind(project)
                .bind(&invited)
                .execute(&mut *tx)
                .await?;
            revoke = active;
        }
        BulkKind::Reactivate => {
            sqlx::query("UPDATE users SET status = 'ACTIVE' WHERE project_id = $1 AND user_id = ANY($2)")
                .bind(project)
                .bind(&changed)
                .execute(&mut *tx)
                .await?;
        }
        BulkKind::AddRole => {
            sqlx::query(
                "INSERT INTO user_roles (project_id, user_id, role_id) \
                 SELECT $1, u, $3 FROM unnest($2::uuid[]) AS u ON CONFLICT DO NOTHING",
            )
            .bind(project)
            .bind(&changed)
            .bind(role)
            .execute(&mut *tx)
            .await?;
        }
        BulkKind::RemoveRole => {
            sqlx::query("DELETE FROM user_roles WHERE project_id = $1 AND role_id = $3 AND user_id = ANY($2)")
                .bind(project)
                .bind(&changed)
                .bind(role)
                .execute(&mut *tx)
                .await?;
            revoke = active;
        }
    }
    results.extend(changed.iter().map(|u| result(*u, "done", None)));
    results.sort_by_key(|r| r.user_id);

    let reason = kind.as_str();
    if let Some((&first, rest)) = revoke.split_first() {
        // the markers before the commit, as the API sets them: every API process refuses the
        // users' older tokens from now on
        let now_ms = ctx.sessions.now_ms().await.context("Failed to read Redis' clock")?;
        let ttl = ctx.settings.auth.jwt_ttl;
        for u in &revoke {
            ctx.sessions
                .revoke_user_before(*u, now_ms, ttl)
                .await
                .context("Failed to set a revocation marker")?;
            refresh_tokens::revoke_user_families(tx, project, *u, None, reason).await?;
        }
        RevokeSessions {
            project_id: project,
            user_id: first,
            actor_id: action.created_by,
            reason: format!("bulk_{}", reason.replace('-', "_")),
            revoked_before_ms: now_ms,
            also: rest.to_vec(),
        }
        .enqueue(tx, EnqueueOptions { request_id, ..EnqueueOptions::default() })
        .await?;
    }
    if !changed.is_empty() {
        db::audit::record(
            tx,
            NewEntry::new(project, audit_action(kind))
                .actor(action.created_by)
                .target("bulk_action", action.action_id)
                .metadata(serde_json::json!({
                    "actionId": action.action_id,
                    "roleId": role,
                    "userIds": changed,
                })),
        )
        .await?;
    }
    Ok(results)
}

fn audit_action(kind: BulkKind) -> &'static str {
    match kind {
        BulkKind::Deactivate => "users.bulk_deactivated",
        BulkKind::Reactivate => "users.bulk_reactivated",
        BulkKind::AddRole => "users.bulk_role_added",
        BulkKind::RemoveRole => "users.bulk_role_removed",
        BulkKind::Delete => "users.bulk_deleted",
    }
}

/// Which of `users` hold `role`.
async fn holders_of(conn: &mut PgConnection, project: Uuid, role: Uuid, users: &[Uuid]) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar("SELECT user_id FROM user_roles WHERE project_id = $1 AND role_id = $2 AND user_id = ANY($3)")
        .bind(project)
        .bind(role)
        .bind(users)
        .fetch_all(conn)
        .await
}

/// Ends the action: ids that matched no user of the project are reported as failed, then it is
/// `completed`.
async fn end(ctx: &JobContext, job: &BulkUsers, targets: &Targets, kind: BulkKind) -> Result<Outcome, BoxDynError> {
    let (project, id) = (job.project_id, job.action_id);
    let mut tx = ctx.pool.begin().await.context("Failed to begin")?;
    let Some(action) = db::bulk_actions::lock(&mut tx, project, id).await.context("Failed to lock the action")? else {
        return Err(AbortError::new("the bulk action was deleted").into());
    };
    if action.finished_at.is_none() {
        if let Targets::Ids(ids) = targets {
            let missing: Vec<Uuid> = sqlx::query_scalar(
                "SELECT i FROM unnest($3::uuid[]) AS i WHERE NOT EXISTS \
                 (SELECT 1 FROM user_bulk_results r WHERE r.project_id = $1 AND r.action_id = $2 AND r.user_id = i)",
            )
            .bind(project)
            .bind(id)
            .bind(ids)
            .fetch_all(&mut *tx)
            .await
            .context("Failed to find the ids left")?;
            if let Some(last) = action.last_user_id.or(missing.last().copied()) {
                let results: Vec<BulkResult> = missing
                    .iter()
                    .map(|u| result(*u, "failed", Some("no such user in this project")))
                    .collect();
                db::bulk_actions::advance(&mut tx, project, id, &results, last)
                    .await
                    .context("Failed to record the unknown ids")?;
            }
        }
        db::bulk_actions::finish(&mut tx, project, id, "completed", None).await.context("Failed to end the action")?;
        tracing::info!(action = kind.as_str(), "bulk action completed");
    }
    tx.commit().await.context("Failed to commit the end")?;
    let action = db::bulk_actions::get(&ctx.pool, project, id)
        .await
        .context("Failed to read the action")?
        .ok_or_else(|| AbortError::new("the bulk action was deleted"))?;
    Ok(Outcome::of(&action))
}

/// Fails the action with `reason` and sends the job dead.
async fn fail(ctx: &JobContext, job: &BulkUsers, reason: &str) -> Result<Outcome, BoxDynError> {
    let mut conn = ctx.pool.acquire().await.context("Failed to get a connection")?;
    db::bulk_actions::finish(&mut conn, job.project_id, job.action_id, "failed", Some(reason))
        .await
        .context("Failed to fail the action")?;
    Err(AbortError::new(format!("the bulk action failed: {reason}")).into())
}
