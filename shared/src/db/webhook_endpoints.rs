//! Webhook endpoints' SQL: create, read, update, delete and rotate (project-scoped), the
//! endpoints a notification goes to, and each delivery's result, whose failing streak disables
//! an endpoint (with its audit entry and a `system` notification to the project's webhook
//! managers, in one transaction).
//!
//! Secrets are stored sealed ([`crate::secrets::seal_webhook_secret`]); the callers seal and
//! open them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    db::audit::{self, NewEntry},
    permissions::{Permission, WebhooksManage},
    rules::TypePattern,
};

/// An endpoint as stored. Its `Debug` leaves the sealed secrets out.
#[derive(Clone, PartialEq, sqlx::FromRow)]
pub struct Endpoint {
    /// Id.
    pub endpoint_id: Uuid,
    /// Where deliveries are POSTed.
    pub url: String,
    /// Free text.
    pub description: String,
    /// Type patterns (`transfer.failed`, `billing.*`, `*`); empty: every type.
    pub event_types: Vec<String>,
    /// Whether deliveries are made.
    pub enabled: bool,
    /// Whether notifications go to it (false: job lifecycle messages only).
    pub notifications: bool,
    /// The job lifecycle messages it takes (`job.completed`, `job.dead`); empty: none.
    pub job_events: Vec<String>,
    /// The queues whose jobs' lifecycle it takes; empty: every queue.
    pub job_queues: Vec<String>,
    /// The signing secret, sealed.
    pub secret_sealed: String,
    /// The previous secret, sealed, while a rotation's grace period lasts.
    pub previous_secret_sealed: Option<String>,
    /// When the previous secret stops signing.
    pub previous_secret_expires_at: Option<DateTime<Utc>>,
    /// Start of the current run of failed deliveries.
    pub failing_since: Option<DateTime<Utc>>,
    /// Last delivered.
    pub last_success_at: Option<DateTime<Utc>>,
    /// Last failed.
    pub last_failure_at: Option<DateTime<Utc>>,
    /// When it was disabled.
    pub disabled_at: Option<DateTime<Utc>>,
    /// Why it was disabled.
    pub disabled_reason: Option<String>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Last changed.
    pub updated_at: DateTime<Utc>,
}

impl std::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Endpoint")
            .field("endpoint_id", &self.endpoint_id)
            .field("enabled", &self.enabled)
            .field("event_types", &self.event_types)
            .field("notifications", &self.notifications)
            .field("job_events", &self.job_events)
            .field("job_queues", &self.job_queues)
            .field("failing_since", &self.failing_since)
            .field("disabled_at", &self.disabled_at)
            .field("disabled_reason", &self.disabled_reason)
            .finish_non_exhaustive()
    }
}

impl Endpoint {
    /// Whether it takes notifications of events of `event_type` (an empty filter selects all).
    pub fn selects(&self, event_type: &str) -> bool {
        self.notifications
            && (self.event_types.is_empty()
                || self
                    .event_types
                    .iter()
                    .filter_map(|p| TypePattern::parse(p).ok())
                    .any(|p| p.matches(event_type)))
    }

    /// Whether it takes the lifecycle message `event` (`job.completed`, `job.dead`) of a job
    /// of `queue`.
    pub fn takes_job(&self, event: &str, queue: &str) -> bool {
        self.job_events.iter().any(|e| e == event)
            && (self.job_queues.is_empty() || self.job_queues.iter().any(|q| q == queue))
    }
}

/// An endpoint's fields as written (validated by the caller: URL vetted, patterns parsed).
#[derive(Debug, Clone)]
pub struct EndpointFields {
    /// URL.
    pub url: String,
    /// Description.
    pub description: String,
    /// Type patterns.
    pub event_types: Vec<String>,
    /// Enabled.
    pub enabled: bool,
    /// Takes notifications.
    pub notifications: bool,
    /// Job lifecycle messages taken.
    pub job_events: Vec<String>,
    /// Queues whose jobs' lifecycle it takes (empty: all).
    pub job_queues: Vec<String>,
}

/// Why an endpoint disabled by hand is disabled.
pub const DISABLED_BY_USER: &str = "disabled by a user";

const COLUMNS: &str = "endpoint_id, url, description, event_types, enabled, notifications, \
    job_events, job_queues, secret_sealed, \
    previous_secret_sealed, previous_secret_expires_at, failing_since, last_success_at, \
    last_failure_at, disabled_at, disabled_reason, created_at, updated_at";

/// Creates an endpoint with its sealed secret.
pub async fn insert(
    conn: &mut PgConnection,
    project_id: Uuid,
    created_by: Option<Uuid>,
    f: &EndpointFields,
    secret_sealed: &str,
) -> Result<Endpoint, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"
        INSERT INTO webhook_endpoints (project_id, endpoint_id, url, description, event_types,
            enabled, secret_sealed, disabled_at, disabled_reason, created_by, notifications,
            job_events, job_queues)
        VALUES ($1, $2, $3, $4, $5, $6, $7,
                CASE WHEN $6 THEN NULL ELSE now() END,
                CASE WHEN $6 THEN NULL ELSE $8 END, $9, $10, $11, $12)
        RETURNING {COLUMNS}
        "#
    )))
    .bind(project_id)
    .bind(Uuid::now_v7())
    .bind(&f.url)
    .bind(&f.description)
    .bind(&f.event_types)
    .bind(f.enabled)
    .bind(secret_sealed)
    .bind(DISABLED_BY_USER)
    .bind(created_by)
    .bind(f.notifications)
    .bind(&f.job_events)
    .bind(&f.job_queues)
    .fetch_one(conn)
    .await
}

/// How many endpoints the project has.
pub async fn count(conn: &mut PgConnection, project_id: Uuid) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM webhook_endpoints WHERE project_id = $1")
        .bind(project_id)
        .fetch_one(conn)
        .await
}

/// One endpoint of the project.
pub async fn find(
    conn: &mut PgConnection,
    project_id: Uuid,
    endpoint_id: Uuid,
) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE project_id = $1 AND endpoint_id = $2"
    )))
    .bind(project_id)
    .bind(endpoint_id)
    .fetch_optional(conn)
    .await
}

/// One endpoint of the project, locked for a change (`FOR UPDATE`).
pub async fn lock(
    conn: &mut PgConnection,
    project_id: Uuid,
    endpoint_id: Uuid,
) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM webhook_endpoints WHERE project_id = $1 AND endpoint_id = $2 \
         FOR UPDATE"
    )))
    .bind(project_id)
    .bind(endpoint_id)
    .fetch_optional(conn)
    .await
}

/// A page of the project's endpoints, oldest first, after the `(created_at, id)` cursor.
pub async fn list(
    pool: &PgPool,
    project_id: Uuid,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Endpoint>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"
        SELECT {COLUMNS} FROM webhook_endpoints
        WHERE project_id = $1
          AND ($2::timestamptz IS NULL OR (created_at, endpoint_id) > ($2, $3))
        ORDER BY created_at, endpoint_id
        LIMIT $4
        "#
    )))
    .bind(project_id)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Replaces an endpoint's fields. Enabling a disabled endpoint clears its disabling and its
/// failing streak; disabling one records when, as done by hand.
pub async fn update(
    conn: &mut PgConnection,
    project_id: Uuid,
    endpoint_id: Uuid,
    f: &EndpointFields,
) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"
        UPDATE webhook_endpoints
        SET url = $3, description = $4, event_types = $5, enabled = $6, notifications = $8,
            job_events = $9, job_queues = $10,
            disabled_at = CASE WHEN $6 THEN NULL WHEN enabled THEN now() ELSE disabled_at END,
            disabled_reason = CASE WHEN $6 THEN NULL WHEN enabled THEN $7
                                   ELSE disabled_reason END,
            failing_since = CASE WHEN $6 AND NOT enabled THEN NULL ELSE failing_since END
        WHERE project_id = $1 AND endpoint_id = $2
        RETURNING {COLUMNS}
        "#
    )))
    .bind(project_id)
    .bind(endpoint_id)
    .bind(&f.url)
    .bind(&f.description)
    .bind(&f.event_types)
    .bind(f.enabled)
    .bind(DISABLED_BY_USER)
    .bind(f.notifications)
    .bind(&f.job_events)
    .bind(&f.job_queues)
    .fetch_optional(conn)
    .await
}

/// Deletes an endpoint, returning it as it was.
pub async fn delete(
    conn: &mut PgConnection,
    project_id: Uuid,
    endpoint_id: Uuid,
) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "DELETE FROM webhook_endpoints WHERE project_id = $1 AND endpoint_id = $2 \
         RETURNING {COLUMNS}"
    )))
    .bind(project_id)
    .bind(endpoint_id)
    .fetch_optional(conn)
    .await
}

/// Makes `new_sealed` the signing secret; the current one keeps signing until
/// `previous_until` (`None`: it stops at once).
pub async fn rotate(
    conn: &mut PgConnection,
    project_id: Uuid,
    endpoint_id: Uuid,
    new_sealed: &str,
    previous_until: Option<DateTime<Utc>>,
) -> Result<Option<Endpoint>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"
        UPDATE webhook_endpoints
        SET previous_secret_sealed = CASE WHEN $4::timestamptz IS NULL THEN NULL
                                          ELSE secret_sealed END,
            previous_secret_expires_at = $4,
            secret_sealed = $3
        WHERE project_id = $1 AND endpoint_id = $2
        RETURNING {COLUMNS}
        "#
    )))
    .bind(project_id)
    .bind(endpoint_id)
    .bind(new_sealed)
    .bind(previous_until)
    .fetch_optional(conn)
    .await
}

/// The project's enabled endpoints whose filter selects `event_type`, oldest first.
pub async fn matching(
    pool: &PgPool,
    project_id: Uuid,
    event_type: &str,
) -> Result<Vec<Endpoint>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let all = enabled_of(&mut conn, &[project_id]).await?;
    Ok(all
        .into_iter()
        .map(|(_, e)| e)
        .filter(|e| e.selects(event_type))
        .collect())
}

/// The enabled endpoints of each of `projects`, in [`matching`]'s order (one read for the
/// webhook deliveries of many projects; filter each with [`Endpoint::selects`]).
pub async fn enabled_of(
    conn: &mut PgConnection,
    projects: &[Uuid],
) -> Result<Vec<(Uuid, Endpoint)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        project_id: Uuid,
        #[sqlx(flatten)]
        endpoint: Endpoint,
    }
    let rows: Vec<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT project_id, {COLUMNS} FROM webhook_endpoints \
         WHERE project_id = ANY($1) AND enabled \
         ORDER BY project_id, created_at, endpoint_id"
    )))
    .bind(projects)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.project_id, r.endpoint))
        .collect())
}

/// The enabled endpoints of `projects` that take some job lifecycle message (for the job
/// archiver, per batch).
pub async fn job_subscribers(
    conn: &mut PgConnection,
    projects: &[Uuid],
) -> Result<Vec<(Uuid, Endpoint)>, sqlx::Error> {
    let mut all = enabled_of(conn, projects).await?;
    all.retain(|(_, e)| !e.job_events.is_empty());
    Ok(all)
}

/// Those of `projects` with an enabled endpoint that takes some job message.
pub async fn job_subscriber_projects(
    pool: &PgPool,
    projects: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT DISTINCT project_id FROM webhook_endpoints \
         WHERE project_id = ANY($1) AND enabled AND cardinality(job_events) > 0",
    )
    .bind(projects)
    .fetch_all(pool)
    .await
}

/// What recording a delivery's result did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Recorded {
    /// This failure disabled the endpoint.
    pub disabled: bool,
    /// The `system` notification telling the project's webhook managers (to deliver in-app);
    /// `None` unless it disabled the endpoint now.
    pub notification_id: Option<Uuid>,
}

/// The audit action of an endpoint disabled for failing.
pub const DISABLED_ACTION: &str = "webhook_endpoint.disabled";

/// Records one delivery's result at `now`. A success ends the failing streak (and sets
/// `last_success_at`, to the second while the endpoint stays healthy). A failure starts
/// one or extends it; when the streak has lasted `disable_after`, the endpoint is disabled and,
/// in the same transaction, audited ([`DISABLED_ACTION`]) and announced by a `system`
/// notification (dedupe key `webhook-disabled:<endpointId>:<failing_since unix>`) whose
/// recipients are the project's ACTIVE users holding `webhooks:manage`. An endpoint that is
/// gone records nothing.
pub async fn record_result(
    pool: &PgPool,
    project_id: Uuid,
    endpoint_id: Uuid,
    success: bool,
    now: DateTime<Utc>,
    disable_after: Duration,
) -> Result<Recorded, sqlx::Error> {
    if success {
        // A healthy endpoint's success is written at most once a second: every delivery to
        // the endpoint would otherwise update (and lock) its one row and commit (a WAL flush)
        // per delivery. A success that ends a failing streak is always written.
        sqlx::query(
            "UPDATE webhook_endpoints SET failing_since = NULL, last_success_at = $3 \
             WHERE project_id = $1 AND endpoint_id = $2 \
               AND (failing_since IS NOT NULL OR last_success_at IS NULL \
                    OR last_success_at < $3 - interval '1 second')",
        )
        .bind(project_id)
        .bind(endpoint_id)
        .bind(now)
        .execute(pool)
        .await?;
        return Ok(Recorded::default());
    }
    let mut tx = pool.begin().await?;
    // the row lock orders concurrent results of one endpoint: one of them disables it
    let row: Option<(bool, DateTime<Utc>, String, String)> = sqlx::query_as(
        r#"
        UPDATE webhook_endpoints
        SET failing_since = coalesce(failing_since, $3), last_failure_at = $3
        WHERE project_id = $1 AND endpoint_id = $2
        RETURNING enabled, failing_since, url, description
        "#,
    )
    .bind(project_id)
    .bind(endpoint_id)
    .bind(now)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((enabled, failing_since, url, description)) = row else {
        return Ok(Recorded::default());
    };
    let streak = (now - failing_since).to_std().unwrap_or_default();
    if !enabled || streak < disable_after {
        tx.commit().await?;
        return Ok(Recorded::default());
    }
    let reason = format!(
        "every delivery failed for {} s, since {} (WEBHOOK_DISABLE_AFTER_SECS is {})",
        streak.as_secs(),
        failing_since.to_rfc3339(),
        disable_after.as_secs()
    );
    sqlx::query(
        "UPDATE webhook_endpoints SET enabled = false, disabled_at = $3, disabled_reason = $4 \
         WHERE project_id = $1 AND endpoint_id = $2",
    )
    .bind(project_id)
    .bind(endpoint_id)
    .bind(now)
    .bind(&reason)
    .execute(&mut *tx)
    .await?;
    // the host only: a URL's path or query may carry a receiver's token
    let host = reqwest::Url::parse(&url)
        .ok()
        .and_then(|u| u.host_str().map(str::to_owned))
        .unwrap_or_default();
    audit::record(
        &mut tx,
        NewEntry::new(project_id, DISABLED_ACTION)
            .target("webhook_endpoint", endpoint_id)
            .metadata(serde_json::json!({
                "reason": reason,
                "failingSince": failing_since,
                "host": host,
            })),
    )
    .await?;
    let notification_id = notify_disabled(
        &mut tx,
        project_id,
        endpoint_id,
        &host,
        &description,
        failing_since,
        &reason,
    )
    .await?;
    tx.commit().await?;
    tracing::warn!(%endpoint_id, streak_secs = streak.as_secs(), "webhook endpoint disabled");
    Ok(Recorded {
        disabled: true,
        notification_id,
    })
}

/// Writes the `system` notification of a disabled endpoint and its recipients.
async fn notify_disabled(
    conn: &mut PgConnection,
    project_id: Uuid,
    endpoint_id: Uuid,
    host: &str,
    description: &str,
    failing_since: DateTime<Utc>,
    reason: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    let dedupe_key = format!(
        "webhook-disabled:{endpoint_id}:{}",
        failing_since.timestamp()
    );
    let title = format!("Webhook endpoint disabled: {host}");
    let body = format!(
        "Deliveries to {host} failed continuously since {}; the endpoint was disabled and \
         receives nothing until it is enabled again.",
        failing_since.to_rfc3339()
    );
    let data = serde_json::json!({
        "endpointId": endpoint_id,
        "host": host,
        "description": description,
        "reason": reason,
        "failingSince": failing_since,
    });
    let id: Option<Uuid> = sqlx::query_scalar(
        r#"
        INSERT INTO notifications (project_id, notification_id, kind, title, body, priority,
                                   channels, data, dedupe_key)
        VALUES ($1, $2, 'system', $3, $4, 0, ARRAY['inApp'], $5, $6)
        ON CONFLICT (project_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
        RETURNING notification_id
        "#,
    )
    .bind(project_id)
    .bind(Uuid::now_v7())
    .bind(&title)
    .bind(&body)
    .bind(&data)
    .bind(&dedupe_key)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(id) = id else {
        return Ok(None);
    };
    sqlx::query(
        r#"
        INSERT INTO notification_recipients (project_id, notification_id, user_id)
        SELECT DISTINCT $1, $2, u.user_id
        FROM users u
        JOIN user_roles ur ON ur.project_id = u.project_id AND ur.user_id = u.user_id
        JOIN role_permissions rp ON rp.role_id = ur.role_id AND rp.permission = $3
        WHERE u.project_id = $1 AND u.status = 'ACTIVE'
        ON CONFLICT DO NOTHING
        "#,
    )
    .bind(project_id)
    .bind(id)
    .bind(WebhooksManage::NAME)
    .execute(conn)
    .await?;
    Ok(Some(id))
}
