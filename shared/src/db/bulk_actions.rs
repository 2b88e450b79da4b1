//! Bulk actions on users: the action row (what, on whom, progress and checkpoint), the
//! per-user results, and the target users read in id order. Every query is scoped by project.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool, Postgres, QueryBuilder};
use utoipa::ToSchema;
use uuid::Uuid;

use super::users::{UserFilter, UserStatus, like_pattern};

/// What a bulk action does to each user.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum BulkKind {
    /// `ACTIVE`/`INVITED` → `DEACTIVATED`; tokens revoked, invitations deleted.
    Deactivate,
    /// `DEACTIVATED` (with a password) → `ACTIVE`.
    Reactivate,
    /// Give a role.
    AddRole,
    /// Take a role away; its active holders' tokens are revoked.
    RemoveRole,
    /// Deactivate and hide from lists (soft).
    Delete,
}

impl BulkKind {
    /// As stored and sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Deactivate => "deactivate",
            Self::Reactivate => "reactivate",
            Self::AddRole => "add-role",
            Self::RemoveRole => "remove-role",
            Self::Delete => "delete",
        }
    }

    /// The stored name back.
    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Deactivate,
            Self::Reactivate,
            Self::AddRole,
            Self::RemoveRole,
            Self::Delete,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }

    /// Whether it takes something away (asks for confirmation over a threshold).
    pub fn is_destructive(self) -> bool {
        matches!(self, Self::Deactivate | Self::RemoveRole | Self::Delete)
    }

    /// Whether it needs a role.
    pub fn needs_role(self) -> bool {
        matches!(self, Self::AddRole | Self::RemoveRole)
    }
}

/// Whom a bulk action is for: ids, or the user list's filter (both scoped by project; deleted
/// users are never targets).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum Targets {
    /// These users (ids not in the project are reported as failed).
    Ids(Vec<Uuid>),
    /// The users the list's filter matches.
    Filter {
        /// Only this status.
        status: Option<UserStatus>,
        /// Only holders of this role.
        role_id: Option<Uuid>,
        /// Substring of email or name.
        search: Option<String>,
    },
}

impl Targets {
    /// The filter form of a list filter.
    pub fn of_filter(f: &UserFilter) -> Self {
        Self::Filter {
            status: f.status,
            role_id: f.role_id,
            search: f.search.clone(),
        }
    }
}

/// A target user as the action sees it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Target {
    /// Its id.
    pub user_id: Uuid,
    /// `INVITED`, `ACTIVE` or `DEACTIVATED`.
    pub status: String,
    /// Whether it has a password (reactivation needs one).
    pub has_password: bool,
}

/// Target users after `after` (by id), at most `limit`, their rows locked when `lock`.
pub async fn targets(
    conn: &mut PgConnection,
    project_id: Uuid,
    targets: &Targets,
    after: Option<Uuid>,
    limit: i64,
    lock: bool,
) -> Result<Vec<Target>, sqlx::Error> {
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT u.user_id, u.status, u.password_hash IS NOT NULL AS has_password FROM users u \
         WHERE u.deleted_at IS NULL AND u.project_id = ",
    );
    qb.push_bind(project_id);
    push_targets(&mut qb, targets);
    if let Some(after) = after {
        qb.push(" AND u.user_id > ").push_bind(after);
    }
    qb.push(" ORDER BY u.user_id LIMIT ").push_bind(limit);
    if lock {
        qb.push(" FOR NO KEY UPDATE OF u");
    }
    qb.build_query_as().fetch_all(conn).await
}

/// How many users the targets match now.
pub async fn count(pool: &PgPool, project_id: Uuid, targets: &Targets) -> Result<i64, sqlx::Error> {
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT count(*) FROM users u WHERE u.deleted_at IS NULL AND u.project_id = ",
    );
    qb.push_bind(project_id);
    push_targets(&mut qb, targets);
    qb.build_query_scalar().fetch_one(pool).await
}

/// Active holders of `role` among the targets (the last-admin check up front).
pub async fn active_holders_among(
    pool: &PgPool,
    project_id: Uuid,
    targets: &Targets,
    role: Uuid,
) -> Result<i64, sqlx::Error> {
    let mut qb = QueryBuilder::<Postgres>::new(
        "SELECT count(*) FROM users u JOIN user_roles r ON r.user_id = u.user_id AND r.role_id = ",
    );
    qb.push_bind(role)
        .push(" WHERE u.deleted_at IS NULL AND u.status = 'ACTIVE' AND u.project_id = ")
        .push_bind(project_id);
    push_targets(&mut qb, targets);
    qb.build_query_scalar().fetch_one(pool).await
}

fn push_targets(qb: &mut QueryBuilder<Postgres>, targets: &Targets) {
    match targets {
        Targets::Ids(ids) => {
            qb.push(" AND u.user_id = ANY(")
                .push_bind(ids.clone())
                .push(")");
        }
        Targets::Filter {
            status,
            role_id,
            search,
        } => {
            if let Some(status) = status {
                qb.push(" AND u.status = ").push_bind(status.as_str());
            }
            if let Some(role) = role_id {
                qb.push(
                    " AND EXISTS (SELECT 1 FROM user_roles f WHERE f.project_id = u.project_id \
                     AND f.user_id = u.user_id AND f.role_id = ",
                )
                .push_bind(*role)
                .push(")");
            }
            if let Some(p) = like_pattern(search) {
                qb.push(" AND (u.email ILIKE ")
                    .push_bind(p.clone())
                    .push(" OR u.name ILIKE ")
                    .push_bind(p)
                    .push(")");
            }
        }
    }
}

/// A bulk action as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct BulkAction {
    /// Its id.
    pub action_id: Uuid,
    /// The project.
    pub project_id: Uuid,
    /// Who asked.
    pub created_by: Option<Uuid>,
    /// The `bulk_users` job.
    pub job_id: Uuid,
    /// [`BulkKind`] as stored.
    pub action: String,
    /// The role (add-role, remove-role).
    pub role_id: Option<Uuid>,
    /// [`Targets`] as stored.
    pub targets: serde_json::Value,
    /// `queued`, `running`, `completed` or `failed`.
    pub status: String,
    /// Users matched when it was asked.
    pub total: i64,
    /// Users handled.
    pub processed: i64,
    /// Changed.
    pub succeeded: i64,
    /// Already as asked (nothing to do), or refused by a guard.
    pub skipped: i64,
    /// Could not be changed.
    pub failed: i64,
    /// The checkpoint.
    pub last_user_id: Option<Uuid>,
    /// Why it failed.
    pub error: Option<String>,
    /// Asked.
    pub created_at: DateTime<Utc>,
    /// Started.
    pub started_at: Option<DateTime<Utc>>,
    /// Ended.
    pub finished_at: Option<DateTime<Utc>>,
}

macro_rules! action_columns {
    () => {
        "SELECT action_id, project_id, created_by, job_id, action, role_id, targets, status, \
         total, processed, succeeded, skipped, failed, last_user_id, error, created_at, \
         started_at, finished_at FROM user_bulk_actions "
    };
}

/// A new bulk action.
#[derive(Debug)]
pub struct NewBulkAction {
    /// Its id.
    pub action_id: Uuid,
    /// The project.
    pub project_id: Uuid,
    /// Who asked.
    pub created_by: Option<Uuid>,
    /// Its job.
    pub job_id: Uuid,
    /// What.
    pub kind: BulkKind,
    /// The role, for role actions.
    pub role_id: Option<Uuid>,
    /// Whom.
    pub targets: Targets,
    /// How many matched.
    pub total: i64,
}

/// Creates the action row (in the transaction that enqueues its job).
pub async fn create(conn: &mut PgConnection, new: &NewBulkAction) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO user_bulk_actions (action_id, project_id, created_by, job_id, action, role_id, targets, total) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(new.action_id)
    .bind(new.project_id)
    .bind(new.created_by)
    .bind(new.job_id)
    .bind(new.kind.as_str())
    .bind(new.role_id)
    .bind(serde_json::to_value(&new.targets).map_err(|e| sqlx::Error::Encode(Box::new(e)))?)
    .bind(new.total)
    .execute(conn)
    .await?;
    Ok(())
}

/// One action of the project.
pub async fn get(
    pool: &PgPool,
    project_id: Uuid,
    action_id: Uuid,
) -> Result<Option<BulkAction>, sqlx::Error> {
    sqlx::query_as(concat!(
        action_columns!(),
        "WHERE project_id = $1 AND action_id = $2"
    ))
    .bind(project_id)
    .bind(action_id)
    .fetch_optional(pool)
    .await
}

/// Locks the action (a chunk's first statement).
pub async fn lock(
    conn: &mut PgConnection,
    project_id: Uuid,
    action_id: Uuid,
) -> Result<Option<BulkAction>, sqlx::Error> {
    sqlx::query_as(concat!(
        action_columns!(),
        "WHERE project_id = $1 AND action_id = $2 FOR UPDATE"
    ))
    .bind(project_id)
    .bind(action_id)
    .fetch_optional(conn)
    .await
}

/// Marks it running.
pub async fn mark_running(
    pool: &PgPool,
    project_id: Uuid,
    action_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE user_bulk_actions SET status = 'running', started_at = coalesce(started_at, now()) \
         WHERE project_id = $1 AND action_id = $2 AND finished_at IS NULL",
    )
    .bind(project_id)
    .bind(action_id)
    .execute(pool)
    .await?;
    Ok(())
}

/// One user's result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct BulkResult {
    /// The user.
    pub user_id: Uuid,
    /// `done`, `skipped` or `failed`.
    pub outcome: String,
    /// Why, when not done.
    pub message: Option<String>,
}

/// Records a chunk's results and moves the checkpoint to `last`.
pub async fn advance(
    conn: &mut PgConnection,
    project_id: Uuid,
    action_id: Uuid,
    results: &[BulkResult],
    last: Uuid,
) -> Result<(), sqlx::Error> {
    let users: Vec<Uuid> = results.iter().map(|r| r.user_id).collect();
    let outcomes: Vec<&str> = results.iter().map(|r| r.outcome.as_str()).collect();
    let messages: Vec<Option<&str>> = results.iter().map(|r| r.message.as_deref()).collect();
    sqlx::query(
        "INSERT INTO user_bulk_results (action_id, project_id, user_id, outcome, message) \
         SELECT $1, $2, * FROM unnest($3::uuid[], $4::text[], $5::text[]) ON CONFLICT DO NOTHING",
    )
    .bind(action_id)
    .bind(project_id)
    .bind(&users)
    .bind(&outcomes)
    .bind(&messages)
    .execute(&mut *conn)
    .await?;
    let n = |o: &str| outcomes.iter().filter(|x| **x == o).count() as i64;
    sqlx::query(
        "UPDATE user_bulk_actions SET last_user_id = $3, processed = processed + $4, \
           succeeded = succeeded + $5, skipped = skipped + $6, failed = failed + $7 \
         WHERE project_id = $1 AND action_id = $2",
    )
    .bind(project_id)
    .bind(action_id)
    .bind(last)
    .bind(results.len() as i64)
    .bind(n("done"))
    .bind(n("skipped"))
    .bind(n("failed"))
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends the action.
pub async fn finish(
    conn: &mut PgConnection,
    project_id: Uuid,
    action_id: Uuid,
    status: &str,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE user_bulk_actions SET status = $3, error = $4, finished_at = now() \
         WHERE project_id = $1 AND action_id = $2 AND finished_at IS NULL",
    )
    .bind(project_id)
    .bind(action_id)
    .bind(status)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// A page of results by user id: `after` the last one seen.
pub async fn results(
    pool: &PgPool,
    project_id: Uuid,
    action_id: Uuid,
    after: Option<Uuid>,
    limit: i64,
) -> Result<Vec<BulkResult>, sqlx::Error> {
    sqlx::query_as(
        "SELECT user_id, outcome, message FROM user_bulk_results \
         WHERE project_id = $1 AND action_id = $2 AND ($3::uuid IS NULL OR user_id > $3) \
         ORDER BY user_id LIMIT $4",
    )
    .bind(project_id)
    .bind(action_id)
    .bind(after)
    .bind(limit)
    .fetch_all(pool)
    .await
}
