//! Retention's SQL: each function deletes one batch of rows older than a cutoff, across every
//! project, in one short statement (its own transaction when given the pool), and returns how
//! many it deleted; the `apply_retention` job calls it until a batch comes back short.
//!
//! Batches are picked through an index on the age column (`ORDER BY` it, `LIMIT`), so a batch
//! touches only the rows it deletes, and `FOR UPDATE SKIP LOCKED` steps around rows a request
//! holds instead of waiting for it. Notifications go in three steps (recipients, attempts, then
//! the notifications themselves), so no statement cascades into an unbounded number of rows.

use chrono::{DateTime, Utc};
use sqlx::PgPool;

/// One batch of the audit log older than `before`.
pub async fn audit_log(
    pool: &PgPool,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    exec(
        pool,
        r#"
        DELETE FROM audit_log WHERE audit_id IN (
            SELECT audit_id FROM audit_log WHERE at < $1 ORDER BY at LIMIT $2
            FOR UPDATE SKIP LOCKED)
        "#,
        before,
        batch,
    )
    .await
}

/// One batch of the recipients of notifications created before `before`.
pub async fn notification_recipients(
    pool: &PgPool,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    exec(
        pool,
        r#"
        DELETE FROM notification_recipients r USING (
            SELECT r.project_id, r.notification_id, r.user_id
            FROM notifications n
            JOIN notification_recipients r
              ON r.project_id = n.project_id AND r.notification_id = n.notification_id
            WHERE n.created_at < $1
            ORDER BY n.created_at LIMIT $2
            FOR UPDATE OF r SKIP LOCKED) old
        WHERE r.project_id = old.project_id AND r.notification_id = old.notification_id
          AND r.user_id = old.user_id
        "#,
        before,
        batch,
    )
    .await
}

/// One batch of the delivery attempts of notifications created before `before`.
pub async fn delivery_attempts(
    pool: &PgPool,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    exec(
        pool,
        r#"
        DELETE FROM delivery_attempts a USING (
            SELECT a.ctid AS row_id
            FROM notifications n
            JOIN delivery_attempts a
              ON a.project_id = n.project_id AND a.notification_id = n.notification_id
            WHERE n.created_at < $1
            ORDER BY n.created_at LIMIT $2
            FOR UPDATE OF a SKIP LOCKED) old
        WHERE a.ctid = old.row_id
        "#,
        before,
        batch,
    )
    .await
}

/// One batch of notifications created before `before` (their recipients and attempts went
/// first; webview actions cascade).
pub async fn notifications(
    pool: &PgPool,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    exec(
        pool,
        r#"
        DELETE FROM notifications n USING (
            SELECT project_id, notification_id FROM notifications
            WHERE created_at < $1 ORDER BY created_at LIMIT $2
            FOR UPDATE SKIP LOCKED) old
        WHERE n.project_id = old.project_id AND n.notification_id = old.notification_id
        "#,
        before,
        batch,
    )
    .await
}

/// One batch of processed events received before `before` that no notification refers to any
/// more (an event outlives its notifications: deleting it would cascade to them).
pub async fn events(pool: &PgPool, before: DateTime<Utc>, batch: i64) -> Result<u64, sqlx::Error> {
    exec(
        pool,
        r#"
        DELETE FROM events e USING (
            SELECT e.project_id, e.event_id FROM events e
            WHERE e.received_at < $1 AND e.processed_at IS NOT NULL
              AND NOT EXISTS (SELECT 1 FROM notifications n
                              WHERE n.project_id = e.project_id AND n.event_id = e.event_id)
            ORDER BY e.received_at LIMIT $2
            FOR UPDATE OF e SKIP LOCKED) old
        WHERE e.project_id = old.project_id AND e.event_id = old.event_id
        "#,
        before,
        batch,
    )
    .await
}

/// One batch of inbox feed entries created before `before` (a stream resuming from further
/// back starts again from the oldest entry kept).
pub async fn inbox_feed(
    pool: &PgPool,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    exec(
        pool,
        r#"
        DELETE FROM inbox_feed f USING (
            SELECT project_id, user_id, seq FROM inbox_feed
            WHERE created_at < $1 ORDER BY created_at LIMIT $2
            FOR UPDATE SKIP LOCKED) old
        WHERE f.project_id = old.project_id AND f.user_id = old.user_id AND f.seq = old.seq
        "#,
        before,
        batch,
    )
    .await
}

/// One batch of schedule runs fired before `before`, keeping each schedule's latest (its
/// overlap check and `lastJob` read it).
pub async fn schedule_runs(
    pool: &PgPool,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    exec(
        pool,
        r#"
        DELETE FROM schedule_runs r USING (
            SELECT job_id FROM schedule_runs
            WHERE fired_at < $1
              AND job_id NOT IN (SELECT last_job_id FROM schedules WHERE last_job_id IS NOT NULL)
            ORDER BY fired_at LIMIT $2
            FOR UPDATE SKIP LOCKED) old
        WHERE r.job_id = old.job_id
        "#,
        before,
        batch,
    )
    .await
}

async fn exec(
    pool: &PgPool,
    sql: &'static str,
    before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(sql)
        .bind(before)
        .bind(batch)
        .execute(pool)
        .await?
        .rows_affected())
}
