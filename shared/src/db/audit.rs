//! The audit log: who did what to whom, with the request id.

use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

/// An entry to record.
#[derive(Debug, Clone)]
pub struct NewEntry<'a> {
    /// The project.
    pub project_id: Uuid,
    /// The acting user (`None`: the system or an anonymous caller).
    pub actor_id: Option<Uuid>,
    /// What happened, e.g. `invitation.sent`.
    pub action: &'a str,
    /// What it happened to, e.g. `user`.
    pub target_type: Option<&'a str>,
    /// Its id.
    pub target_id: Option<String>,
    /// Anything else worth keeping (never secrets).
    pub metadata: serde_json::Value,
    /// The request behind it.
    pub request_id: Option<String>,
}

impl<'a> NewEntry<'a> {
    /// An entry of `action` in `project_id`, with no actor, target, metadata or request yet;
    /// the builder methods below add them.
    pub fn new(project_id: Uuid, action: &'a str) -> Self {
        Self {
            project_id,
            actor_id: None,
            action,
            target_type: None,
            target_id: None,
            metadata: serde_json::json!({}),
            request_id: None,
        }
    }

    /// Who did it (`None`: the system or an anonymous caller).
    pub fn actor(mut self, actor_id: Option<Uuid>) -> Self {
        self.actor_id = actor_id;
        self
    }

    /// What it was done to.
    pub fn target(mut self, target_type: &'a str, target_id: impl ToString) -> Self {
        self.target_type = Some(target_type);
        self.target_id = Some(target_id.to_string());
        self
    }

    /// What it was done to: a user.
    pub fn user(self, user_id: Uuid) -> Self {
        self.target("user", user_id)
    }

    /// Anything else worth keeping (never secrets).
    pub fn metadata(mut self, metadata: serde_json::Value) -> Self {
        self.metadata = metadata;
        self
    }

    /// The request behind it.
    pub fn request(mut self, request_id: Option<String>) -> Self {
        self.request_id = request_id;
        self
    }
}

/// An entry as read back.
#[derive(Debug, Clone, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct Entry {
    /// Entry id.
    pub id: Uuid,
    /// Acting user.
    pub actor_id: Option<Uuid>,
    /// What happened.
    pub action: String,
    /// Kind of target.
    pub target_type: Option<String>,
    /// Target id.
    pub target_id: Option<String>,
    /// Details.
    #[schema(value_type = Object)]
    pub metadata: serde_json::Value,
    /// The request behind it.
    pub request_id: Option<String>,
    /// When.
    pub at: DateTime<Utc>,
}

/// Records an entry.
pub async fn record(conn: &mut PgConnection, e: NewEntry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"
        INSERT INTO audit_log (audit_id, project_id, actor_id, action, target_type, target_id, metadata, request_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
        "#,
    )
    .bind(Uuid::now_v7())
    .bind(e.project_id)
    .bind(e.actor_id)
    .bind(e.action)
    .bind(e.target_type)
    .bind(e.target_id)
    .bind(e.metadata)
    .bind(e.request_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records an entry if its project exists; false if it does not. For anonymous callers who
/// name a project (a failed login with a `projectId`): the name is theirs, not a verified one.
pub async fn record_if_project_exists(
    conn: &mut PgConnection,
    e: NewEntry<'_>,
) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        r#"
        INSERT INTO audit_log (audit_id, project_id, actor_id, action, target_type, target_id, metadata, request_id)
        SELECT $1, p.project_id, $3, $4, $5, $6, $7, $8 FROM projects p WHERE p.project_id = $2
        "#,
    )
    .bind(Uuid::now_v7())
    .bind(e.project_id)
    .bind(e.actor_id)
    .bind(e.action)
    .bind(e.target_type)
    .bind(e.target_id)
    .bind(e.metadata)
    .bind(e.request_id)
    .execute(conn)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Filters of the audit list.
#[derive(Debug, Clone, Default)]
pub struct AuditFilter {
    /// Exact action.
    pub action: Option<String>,
    /// Acting user.
    pub actor_id: Option<Uuid>,
    /// Target id.
    pub target_id: Option<String>,
    /// From (inclusive).
    pub from: Option<DateTime<Utc>>,
    /// To (exclusive).
    pub to: Option<DateTime<Utc>>,
}

const FILTER: &str = r#"
    WHERE project_id = $1
      AND ($2::text IS NULL OR action = $2)
      AND ($3::uuid IS NULL OR actor_id = $3)
      AND ($4::text IS NULL OR target_id = $4)
      AND ($5::timestamptz IS NULL OR at >= $5)
      AND ($6::timestamptz IS NULL OR at < $6)
"#;

/// A page of entries, newest first, and the total matching.
pub async fn list(
    pool: &PgPool,
    project_id: Uuid,
    f: &AuditFilter,
    offset: i64,
    limit: i64,
) -> Result<(Vec<Entry>, i64), sqlx::Error> {
    let sql = format!(
        "SELECT audit_id AS id, actor_id, action, target_type, target_id, metadata, request_id, at
         FROM audit_log {FILTER} ORDER BY at DESC, audit_id DESC OFFSET $7 LIMIT $8"
    );
    let rows: Vec<Entry> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(&f.action)
        .bind(f.actor_id)
        .bind(&f.target_id)
        .bind(f.from)
        .bind(f.to)
        .bind(offset)
        .bind(limit)
        .fetch_all(pool)
        .await?;
    let sql = format!("SELECT count(*) FROM audit_log {FILTER}");
    let total: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(sql))
        .bind(project_id)
        .bind(&f.action)
        .bind(f.actor_id)
        .bind(&f.target_id)
        .bind(f.from)
        .bind(f.to)
        .fetch_one(pool)
        .await?;
    Ok((rows, total))
}

/// Rows an export reads per query.
const EXPORT_BATCH: i64 = 500;

/// Every matching entry, newest first, streamed for CSV export.
///
/// Reads in keyset-paginated batches, so a slow download never holds a pooled connection, and
/// owns its pool handle (a cheap clone) so the stream can outlive the handler that starts it.
pub fn stream(
    pool: PgPool,
    project_id: Uuid,
    f: &AuditFilter,
) -> futures::stream::BoxStream<'static, Result<Entry, sqlx::Error>> {
    use futures::StreamExt;
    let f = f.clone();
    let sql = format!(
        "SELECT audit_id AS id, actor_id, action, target_type, target_id, metadata, request_id, at
         FROM audit_log {FILTER}
           AND ($7::timestamptz IS NULL OR (at, audit_id) < ($7::timestamptz, $8::uuid))
         ORDER BY at DESC, audit_id DESC LIMIT $9"
    );
    // the state is the last entry seen (`Some(None)`: start; `None`: done)
    futures::stream::unfold(Some(None::<(DateTime<Utc>, Uuid)>), move |state| {
        let (pool, sql, f) = (pool.clone(), sql.clone(), f.clone());
        async move {
            let before = state?;
            let rows: Result<Vec<Entry>, _> = sqlx::query_as(sqlx::AssertSqlSafe(sql))
                .bind(project_id)
                .bind(f.action)
                .bind(f.actor_id)
                .bind(f.target_id)
                .bind(f.from)
                .bind(f.to)
                .bind(before.map(|b| b.0))
                .bind(before.map(|b| b.1))
                .bind(EXPORT_BATCH)
                .fetch_all(&pool)
                .await;
            Some(match rows {
                Err(e) => (vec![Err(e)], None),
                Ok(rows) => {
                    let next = (rows.len() as i64 == EXPORT_BATCH)
                        .then(|| rows.last().map(|r| (r.at, r.id)));
                    (rows.into_iter().map(Ok).collect(), next)
                }
            })
        }
    })
    .flat_map(futures::stream::iter)
    .boxed()
}
