//! Paused queues: the lasting state behind the Redis flag the fetch script reads.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};

/// Pauses `queue` (already paused: kept as it was); returns since when it is paused.
pub async fn pause(
    conn: &mut PgConnection,
    queue: &str,
    by: &str,
) -> Result<DateTime<Utc>, sqlx::Error> {
    sqlx::query_scalar(
        "INSERT INTO queue_pauses (queue, paused_by) VALUES ($1, $2) \
         ON CONFLICT (queue) DO UPDATE SET queue = excluded.queue RETURNING paused_at",
    )
    .bind(queue)
    .bind(by)
    .fetch_one(conn)
    .await
}

/// Resumes `queue`; whether it was paused.
pub async fn resume(conn: &mut PgConnection, queue: &str) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM queue_pauses WHERE queue = $1")
        .bind(queue)
        .execute(conn)
        .await
        .map(|r| r.rows_affected() > 0)
}

/// Every paused queue, with since when.
pub async fn all(pool: &PgPool) -> Result<Vec<(String, DateTime<Utc>)>, sqlx::Error> {
    sqlx::query_as("SELECT queue, paused_at FROM queue_pauses ORDER BY queue")
        .fetch_all(pool)
        .await
}
