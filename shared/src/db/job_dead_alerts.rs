//! Dead jobs grouped into alerts (`job_dead_alerts`): the archiver counts each job that went
//! dead into the window of its (project, queue, error fingerprint) as it archives it
//! ([`count`]), and once a window has closed [`raise_closed`] writes one `job.dead` event with
//! the count into the project's event pipeline, where the project's rules decide who is told,
//! as for any event. A thousand identical failures in a window make one alert that says 1000.
//!
//! A window is the `JOB_DEAD_ALERT_WINDOW_SECS` in which the archiver counted the deaths (by
//! Postgres's clock), not the deaths' own times: a death archived late (the archiver was down)
//! lands in the open window instead of one already raised. Windows are raised [`GRACE`] after
//! they close, so a count committing at the edge is not left behind. Only jobs of a live project
//! count (platform jobs such as the scheduler's have no project pipeline to alert).

use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::events::{self, NewEvent};
use crate::jobs::{EnqueueError, EnqueueOptions};

/// How long after its window closes a window is raised.
pub const GRACE: Duration = Duration::from_secs(5);

/// The event type raised.
pub const EVENT_TYPE: &str = "job.dead";

/// One job that went dead, as the archiver counts it.
#[derive(Debug, Clone)]
pub struct Death {
    /// Its project.
    pub project_id: Uuid,
    /// Its queue.
    pub queue: String,
    /// Its last error's fingerprint.
    pub fingerprint: String,
    /// The job.
    pub job_id: Uuid,
    /// When it went dead.
    pub at: DateTime<Utc>,
    /// Its last error as written.
    pub error: String,
}

/// Counts `deaths` into the open window of each (project, queue, fingerprint), in the caller's
/// transaction. Returns how many were counted (deaths of a deleted or unknown project are not).
pub async fn count(
    conn: &mut PgConnection,
    deaths: &[Death],
    window: Duration,
) -> Result<u64, sqlx::Error> {
    if deaths.is_empty() {
        return Ok(0);
    }
    let projects: Vec<Uuid> = deaths.iter().map(|d| d.project_id).collect();
    let queues: Vec<&str> = deaths.iter().map(|d| d.queue.as_str()).collect();
    let fingerprints: Vec<&str> = deaths.iter().map(|d| d.fingerprint.as_str()).collect();
    let jobs: Vec<Uuid> = deaths.iter().map(|d| d.job_id).collect();
    let ats: Vec<DateTime<Utc>> = deaths.iter().map(|d| d.at).collect();
    let errors: Vec<&str> = deaths.iter().map(|d| d.error.as_str()).collect();
    let seconds = i32::try_from(window.as_secs().max(1)).unwrap_or(i32::MAX);
    let counted = sqlx::query(
        r#"
        INSERT INTO job_dead_alerts (project_id, queue, fingerprint, window_start,
            window_seconds, dead, first_job_id, last_job_id, first_at, last_at, sample_error)
        SELECT d.project_id, d.queue, d.fingerprint,
               to_timestamp(floor(extract(epoch FROM clock_timestamp()) / $7) * $7), $7,
               count(*), (array_agg(d.job_id ORDER BY d.at))[1],
               (array_agg(d.job_id ORDER BY d.at DESC))[1], min(d.at), max(d.at),
               (array_agg(d.error ORDER BY d.at))[1]
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::timestamptz[],
                    $6::text[]) AS d(project_id, queue, fingerprint, job_id, at, error)
        WHERE EXISTS (SELECT 1 FROM projects p
                      WHERE p.project_id = d.project_id AND p.deleted_at IS NULL)
        GROUP BY d.project_id, d.queue, d.fingerprint
        ON CONFLICT (project_id, queue, fingerprint, window_start) DO UPDATE SET
            dead = job_dead_alerts.dead + EXCLUDED.dead,
            last_job_id = CASE WHEN EXCLUDED.last_at >= job_dead_alerts.last_at
                               THEN EXCLUDED.last_job_id ELSE job_dead_alerts.last_job_id END,
            last_at = greatest(job_dead_alerts.last_at, EXCLUDED.last_at),
            first_job_id = CASE WHEN EXCLUDED.first_at < job_dead_alerts.first_at
                                THEN EXCLUDED.first_job_id ELSE job_dead_alerts.first_job_id END,
            first_at = least(job_dead_alerts.first_at, EXCLUDED.first_at)
        RETURNING dead
        "#,
    )
    .bind(&projects)
    .bind(&queues)
    .bind(&fingerprints)
    .bind(&jobs)
    .bind(&ats)
    .bind(&errors)
    .bind(seconds)
    .fetch_all(&mut *conn)
    .await?
    .len();
    Ok(counted as u64)
}

/// A window to raise.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Window {
    project_id: Uuid,
    queue: String,
    fingerprint: String,
    window_start: DateTime<Utc>,
    window_seconds: i32,
    dead: i32,
    first_job_id: Uuid,
    last_job_id: Uuid,
    first_at: DateTime<Utc>,
    last_at: DateTime<Utc>,
    sample_error: String,
}

/// Why raising failed.
#[derive(Debug, thiserror::Error)]
pub enum RaiseError {
    /// Postgres.
    #[error("dead-job alerts: {0}")]
    Database(#[from] sqlx::Error),
    /// Writing the events and their `process_event` jobs.
    #[error("dead-job alerts: {0}")]
    Enqueue(#[from] EnqueueError),
}

/// Raises up to `limit` closed windows, oldest first: one `job.dead` event each (and its
/// `process_event` job through the outbox), recorded on the window in the same transaction.
/// Any number of workers may run it at once (rows are claimed with `SKIP LOCKED`), and a window
/// is raised once: its idempotency key names it, so even a replay finds the first event.
/// Returns how many were raised.
pub async fn raise_closed(pool: &PgPool, limit: i64) -> Result<usize, RaiseError> {
    let mut tx = pool.begin().await?;
    let windows: Vec<Window> = sqlx::query_as(
        r#"
        SELECT project_id, queue, fingerprint, window_start, window_seconds, dead, first_job_id,
               last_job_id, first_at, last_at, sample_error
        FROM job_dead_alerts
        WHERE event_id IS NULL
          AND window_start + make_interval(secs => window_seconds + $1) < clock_timestamp()
        ORDER BY window_start
        LIMIT $2
        FOR UPDATE SKIP LOCKED
        "#,
    )
    .bind(GRACE.as_secs_f64())
    .bind(limit)
    .fetch_all(&mut *tx)
    .await?;
    if windows.is_empty() {
        tx.rollback().await?;
        return Ok(0);
    }
    let projects: Vec<Uuid> = windows.iter().map(|w| w.project_id).collect();
    let new_events: Vec<NewEvent> = windows.iter().map(event_of).collect();
    let accepted =
        events::accept_across(&mut tx, &projects, &new_events, &EnqueueOptions::default()).await?;
    let event_ids: Vec<Uuid> = accepted.iter().map(|a| a.event_id).collect();
    let queues: Vec<&str> = windows.iter().map(|w| w.queue.as_str()).collect();
    let fingerprints: Vec<&str> = windows.iter().map(|w| w.fingerprint.as_str()).collect();
    let starts: Vec<DateTime<Utc>> = windows.iter().map(|w| w.window_start).collect();
    sqlx::query(
        r#"
        UPDATE job_dead_alerts a SET event_id = r.event_id
        FROM unnest($1::uuid[], $2::text[], $3::text[], $4::timestamptz[], $5::uuid[])
             AS r(project_id, queue, fingerprint, window_start, event_id)
        WHERE (a.project_id, a.queue, a.fingerprint, a.window_start)
            = (r.project_id, r.queue, r.fingerprint, r.window_start)
        "#,
    )
    .bind(&projects)
    .bind(&queues)
    .bind(&fingerprints)
    .bind(&starts)
    .bind(&event_ids)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(windows.len())
}

/// The `job.dead` event of a window.
fn event_of(w: &Window) -> NewEvent {
    let digest = Sha256::digest(w.fingerprint.as_bytes());
    let short: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    NewEvent {
        event_type: EVENT_TYPE.to_owned(),
        source: Some("comet".to_owned()),
        payload: serde_json::json!({
            "queue": w.queue,
            "fingerprint": w.fingerprint,
            "dead": w.dead,
            "error": w.sample_error,
            "firstJobId": w.first_job_id,
            "lastJobId": w.last_job_id,
            "firstAt": w.first_at,
            "lastAt": w.last_at,
            "windowStart": w.window_start,
            "windowSeconds": w.window_seconds,
        }),
        occurred_at: w.last_at,
        idempotency_key: Some(format!(
            "{EVENT_TYPE}:{}:{}:{short}",
            w.queue,
            w.window_start.timestamp()
        )),
    }
}

/// One batch of raised windows that started before `before` (what `apply_retention` deletes;
/// a window not raised yet is kept whatever its age).
pub async fn expire(pool: &PgPool, before: DateTime<Utc>, batch: i64) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        r#"
        DELETE FROM job_dead_alerts WHERE (project_id, queue, fingerprint, window_start) IN (
            SELECT project_id, queue, fingerprint, window_start FROM job_dead_alerts
            WHERE event_id IS NOT NULL AND window_start < $1
            LIMIT $2 FOR UPDATE SKIP LOCKED)
        "#,
    )
    .bind(before)
    .bind(batch)
    .execute(pool)
    .await?
    .rows_affected())
}
