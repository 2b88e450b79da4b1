//! Rules' SQL: create, read, update, delete (each bumping the project's `rules_version` in the
//! same transaction), the active rules `process_event` caches, and evaluation errors recorded
//! on the rule.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A rule as stored (sources, not compiled forms: `shared::rules` compiles them).
#[derive(Debug, Clone, PartialEq, sqlx::FromRow)]
pub struct RuleRow {
    /// Id.
    pub rule_id: Uuid,
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Type patterns (`transfer.failed`, `billing.*`).
    pub event_types: Vec<String>,
    /// CEL condition; none matches every event of the types.
    pub condition: Option<String>,
    /// Title template.
    pub title_template: String,
    /// Body template.
    pub body_template: String,
    /// Roles whose ACTIVE holders receive the notifications.
    pub target_role_ids: Vec<Uuid>,
    /// `inApp`, `email`, `webhook`.
    pub channels: Vec<String>,
    /// Higher first.
    pub priority: i32,
    /// Inactive rules are not evaluated.
    pub active: bool,
    /// A sound the dashboard plays.
    pub sound: Option<String>,
    /// Suppression: at most this many fires …
    pub suppression_max_fires: Option<i32>,
    /// … per this many seconds.
    pub suppression_window_secs: Option<i32>,
    /// The last evaluation error.
    pub last_error: Option<String>,
    /// When it happened.
    pub last_error_at: Option<DateTime<Utc>>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

/// A rule's fields as written (validated and compiled by the caller).
#[derive(Debug, Clone)]
pub struct RuleFields {
    /// Name.
    pub name: String,
    /// Description.
    pub description: String,
    /// Type patterns.
    pub event_types: Vec<String>,
    /// CEL condition.
    pub condition: Option<String>,
    /// Title template.
    pub title_template: String,
    /// Body template.
    pub body_template: String,
    /// Target roles (of the project: checked by the caller).
    pub target_role_ids: Vec<Uuid>,
    /// Channels.
    pub channels: Vec<String>,
    /// Priority.
    pub priority: i32,
    /// Active.
    pub active: bool,
    /// Sound.
    pub sound: Option<String>,
    /// Suppression `(max fires, window seconds)`.
    pub suppression: Option<(i32, i32)>,
}

const COLUMNS: &str = "rule_id, name, description, event_types, condition, title_template, \
    body_template, target_role_ids, channels, priority, active, sound, suppression_max_fires, \
    suppression_window_secs, last_error, last_error_at, created_at, updated_at";

async fn bump_version(conn: &mut PgConnection, project_id: Uuid) -> Result<(), sqlx::Error> {
    sqlx::query("UPDATE projects SET rules_version = rules_version + 1 WHERE project_id = $1")
        .bind(project_id)
        .execute(conn)
        .await?;
    Ok(())
}

/// Creates a rule.
pub async fn insert(
    conn: &mut PgConnection,
    project_id: Uuid,
    created_by: Option<Uuid>,
    f: &RuleFields,
) -> Result<RuleRow, sqlx::Error> {
    let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"
        INSERT INTO rules (project_id, rule_id, name, description, event_types, condition,
            title_template, body_template, target_role_ids, channels, priority, active, sound,
            suppression_max_fires, suppression_window_secs, created_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)
        RETURNING {COLUMNS}
        "#
    )))
    .bind(project_id)
    .bind(Uuid::now_v7())
    .bind(&f.name)
    .bind(&f.description)
    .bind(&f.event_types)
    .bind(&f.condition)
    .bind(&f.title_template)
    .bind(&f.body_template)
    .bind(&f.target_role_ids)
    .bind(&f.channels)
    .bind(f.priority)
    .bind(f.active)
    .bind(&f.sound)
    .bind(f.suppression.map(|s| s.0))
    .bind(f.suppression.map(|s| s.1))
    .bind(created_by)
    .fetch_one(&mut *conn)
    .await?;
    bump_version(conn, project_id).await?;
    Ok(row)
}

/// One rule of the project.
pub async fn find(
    conn: &mut PgConnection,
    project_id: Uuid,
    rule_id: Uuid,
) -> Result<Option<RuleRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rules WHERE project_id = $1 AND rule_id = $2"
    )))
    .bind(project_id)
    .bind(rule_id)
    .fetch_optional(conn)
    .await
}

/// The rule locked for a change (`FOR UPDATE`).
pub async fn lock(
    conn: &mut PgConnection,
    project_id: Uuid,
    rule_id: Uuid,
) -> Result<Option<RuleRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rules WHERE project_id = $1 AND rule_id = $2 FOR UPDATE"
    )))
    .bind(project_id)
    .bind(rule_id)
    .fetch_optional(conn)
    .await
}

/// Replaces a rule's fields; `None` if there is no such rule.
pub async fn update(
    conn: &mut PgConnection,
    project_id: Uuid,
    rule_id: Uuid,
    f: &RuleFields,
) -> Result<Option<RuleRow>, sqlx::Error> {
    let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"
        UPDATE rules SET name = $3, description = $4, event_types = $5, condition = $6,
            title_template = $7, body_template = $8, target_role_ids = $9, channels = $10,
            priority = $11, active = $12, sound = $13, suppression_max_fires = $14,
            suppression_window_secs = $15,
            -- a changed condition starts without the old one's error
            last_error = CASE WHEN condition IS DISTINCT FROM $6 THEN NULL ELSE last_error END,
            last_error_at = CASE WHEN condition IS DISTINCT FROM $6 THEN NULL ELSE last_error_at END
        WHERE project_id = $1 AND rule_id = $2
        RETURNING {COLUMNS}
        "#
    )))
    .bind(project_id)
    .bind(rule_id)
    .bind(&f.name)
    .bind(&f.description)
    .bind(&f.event_types)
    .bind(&f.condition)
    .bind(&f.title_template)
    .bind(&f.body_template)
    .bind(&f.target_role_ids)
    .bind(&f.channels)
    .bind(f.priority)
    .bind(f.active)
    .bind(&f.sound)
    .bind(f.suppression.map(|s| s.0))
    .bind(f.suppression.map(|s| s.1))
    .fetch_optional(&mut *conn)
    .await?;
    if row.is_some() {
        bump_version(conn, project_id).await?;
    }
    Ok(row)
}

/// Deletes a rule; returns it, or `None` if there was none. (Its notifications stay: they
/// keep the rule's id.)
pub async fn delete(
    conn: &mut PgConnection,
    project_id: Uuid,
    rule_id: Uuid,
) -> Result<Option<RuleRow>, sqlx::Error> {
    let row = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM rules WHERE project_id = $1 AND rule_id = $2 RETURNING {COLUMNS}"
    )))
    .bind(project_id)
    .bind(rule_id)
    .fetch_optional(&mut *conn)
    .await?;
    if row.is_some() {
        bump_version(conn, project_id).await?;
    }
    Ok(row)
}

/// A page of the project's rules, oldest first, after the cursor `(created_at, rule_id)`.
pub async fn list(
    pool: &PgPool,
    project_id: Uuid,
    active: Option<bool>,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<RuleRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"
        SELECT {COLUMNS} FROM rules
        WHERE project_id = $1 AND ($2::boolean IS NULL OR active = $2)
          AND ($3::timestamptz IS NULL OR (created_at, rule_id) > ($3, $4))
        ORDER BY created_at, rule_id LIMIT $5
        "#
    )))
    .bind(project_id)
    .bind(active)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// The project's active rules, by priority, and the rules version they are (read in one
/// repeatable-read snapshot, so the version names exactly these rules); `None` if the project
/// does not exist.
pub async fn active(
    pool: &PgPool,
    project_id: Uuid,
) -> Result<Option<(i64, Vec<RuleRow>)>, sqlx::Error> {
    let mut tx = pool.begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        .execute(&mut *tx)
        .await?;
    let version: Option<i64> =
        sqlx::query_scalar("SELECT rules_version FROM projects WHERE project_id = $1")
            .bind(project_id)
            .fetch_optional(&mut *tx)
            .await?;
    let Some(version) = version else {
        return Ok(None);
    };
    let rules = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM rules WHERE project_id = $1 AND active \
         ORDER BY priority DESC, created_at, rule_id"
    )))
    .bind(project_id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(Some((version, rules)))
}

/// Records an evaluation error on a rule, at most once a minute per rule (an error repeated
/// by every event costs no write per event).
pub async fn record_error(
    pool: &PgPool,
    project_id: Uuid,
    rule_id: Uuid,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"
        UPDATE rules SET last_error = $3, last_error_at = now()
        WHERE project_id = $1 AND rule_id = $2
          AND (last_error_at IS NULL OR last_error_at < now() - interval '1 minute')
        "#,
    )
    .bind(project_id)
    .bind(rule_id)
    .bind(error.chars().take(1000).collect::<String>())
    .execute(pool)
    .await?;
    Ok(())
}
