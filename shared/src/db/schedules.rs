//! The scheduler's SQL: one `schedules` row per declared schedule (pause and the fleet's tick
//! cursor) and one `schedule_runs` row per run, written in the transaction that enqueues the
//! run's job through the outbox.
//!
//! A worker firing a tick locks the schedule's row ([`lock`]), computes the ticks due since
//! the cursor, records the run ([`insert_run`]: unique per (schedule, tick)), enqueues, moves the
//! cursor ([`advance`]) and commits: the job exists if and only if its run row does.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

/// A schedule's stored state.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct ScheduleRow {
    /// Its name.
    pub name: String,
    /// Paused by an operator (every worker skips its ticks).
    pub paused: bool,
    /// When it was paused.
    pub paused_at: Option<DateTime<Utc>>,
    /// Who paused it (a token's subject).
    pub paused_by: Option<String>,
    /// The latest tick accounted for (fired, skipped or missed).
    pub last_tick_at: DateTime<Utc>,
    /// The latest run's enqueue time (tick or trigger).
    pub last_fired_at: Option<DateTime<Utc>>,
    /// The latest run's job.
    pub last_job_id: Option<Uuid>,
    /// Ticks missed in all (downtime).
    pub missed_total: i64,
}

const COLUMNS: &str = "name, paused, paused_at, paused_by, last_tick_at, last_fired_at, \
                       last_job_id, missed_total";

/// Creates the rows of schedules that have none, their cursor at now (a new schedule starts
/// with its next tick: nothing from before it existed is missed).
pub async fn ensure(pool: &PgPool, names: &[&str]) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO schedules (name) SELECT unnest($1::text[]) ON CONFLICT (name) DO NOTHING",
    )
    .bind(names)
    .execute(pool)
    .await?;
    Ok(())
}

/// Every schedule row.
pub async fn all(pool: &PgPool) -> Result<Vec<ScheduleRow>, sqlx::Error> {
    let sql = format!("SELECT {COLUMNS} FROM schedules ORDER BY name");
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .fetch_all(pool)
        .await
}

/// Locks a schedule's row until the transaction ends (creating it if needed), with the
/// database's clock now (`clock_timestamp()`, so every worker judges ticks by one clock).
pub async fn lock(
    conn: &mut PgConnection,
    name: &str,
) -> Result<(ScheduleRow, DateTime<Utc>), sqlx::Error> {
    sqlx::query("INSERT INTO schedules (name) VALUES ($1) ON CONFLICT (name) DO NOTHING")
        .bind(name)
        .execute(&mut *conn)
        .await?;
    let sql = format!("SELECT {COLUMNS} FROM schedules WHERE name = $1 FOR UPDATE");
    let row: ScheduleRow = sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .fetch_one(&mut *conn)
        .await?;
    let now: DateTime<Utc> = sqlx::query_scalar("SELECT clock_timestamp()")
        .fetch_one(&mut *conn)
        .await?;
    Ok((row, now))
}

/// A run to record.
#[derive(Debug, Clone)]
pub struct NewRun<'a> {
    /// The schedule.
    pub schedule: &'a str,
    /// The run's job.
    pub job_id: Uuid,
    /// The tick (`None`: a manual trigger).
    pub tick_at: Option<DateTime<Utc>>,
    /// Ticks missed before it.
    pub missed: u64,
}

/// Records a run; false when a run of that very tick exists already (nothing written).
pub async fn insert_run(conn: &mut PgConnection, run: &NewRun<'_>) -> Result<bool, sqlx::Error> {
    let res = sqlx::query(
        r#"
        INSERT INTO schedule_runs (job_id, schedule, tick_at, cause, missed)
        VALUES ($1, $2, $3, CASE WHEN $3::timestamptz IS NULL THEN 'manual' ELSE 'tick' END, $4)
        ON CONFLICT (schedule, tick_at) DO NOTHING
        "#,
    )
    .bind(run.job_id)
    .bind(run.schedule)
    .bind(run.tick_at)
    .bind(i64::try_from(run.missed).unwrap_or(i64::MAX))
    .execute(conn)
    .await?;
    Ok(res.rows_affected() == 1)
}

/// Moves the schedule's cursor to `tick_at` and adds `missed`; with a run, records it as the
/// latest.
pub async fn advance(
    conn: &mut PgConnection,
    name: &str,
    tick_at: DateTime<Utc>,
    missed: u64,
    run: Option<Uuid>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"
        UPDATE schedules SET
            last_tick_at = greatest(last_tick_at, $2),
            missed_total = missed_total + $3,
            last_fired_at = CASE WHEN $4::uuid IS NULL THEN last_fired_at ELSE clock_timestamp() END,
            last_job_id = coalesce($4, last_job_id)
        WHERE name = $1
        "#,
    )
    .bind(name)
    .bind(tick_at)
    .bind(i64::try_from(missed).unwrap_or(i64::MAX))
    .bind(run)
    .execute(conn)
    .await?;
    Ok(())
}

/// Records a manual run as the latest (the cursor stays).
pub async fn record_trigger(
    conn: &mut PgConnection,
    name: &str,
    job_id: Uuid,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE schedules SET last_fired_at = clock_timestamp(), last_job_id = $2 WHERE name = $1",
    )
    .bind(name)
    .bind(job_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves the cursors of switched-off schedules to now, so switching one on later does not
/// count the time it was off as missed.
pub async fn idle(pool: &PgPool, names: &[&str]) -> Result<(), sqlx::Error> {
    if names.is_empty() {
        return Ok(());
    }
    sqlx::query(
        "UPDATE schedules SET last_tick_at = greatest(last_tick_at, clock_timestamp())
         WHERE name = ANY($1)",
    )
    .bind(names)
    .execute(pool)
    .await?;
    Ok(())
}

/// Pauses (`true`) or resumes a schedule; returns its row.
pub async fn set_paused(
    pool: &PgPool,
    name: &str,
    paused: bool,
    by: &str,
) -> Result<ScheduleRow, sqlx::Error> {
    let sql = format!(
        r#"
        INSERT INTO schedules (name, paused, paused_at, paused_by)
        VALUES ($1, $2, CASE WHEN $2 THEN now() END, CASE WHEN $2 THEN $3 END)
        ON CONFLICT (name) DO UPDATE SET
            paused = $2,
            -- pausing twice keeps the first pause's time and author
            paused_at = CASE WHEN $2 THEN coalesce(schedules.paused_at, now()) END,
            paused_by = CASE WHEN $2 THEN coalesce(schedules.paused_by, $3) END
        RETURNING {COLUMNS}
        "#
    );
    sqlx::query_as(sqlx::AssertSqlSafe(sql))
        .bind(name)
        .bind(paused)
        .bind(by)
        .fetch_one(pool)
        .await
}

/// A recorded run.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct Run {
    /// Its job.
    pub job_id: Uuid,
    /// The schedule.
    pub schedule: String,
    /// The tick (`None`: manual).
    pub tick_at: Option<DateTime<Utc>>,
    /// Ticks missed before it.
    pub missed: i64,
    /// When it was enqueued (Postgres's clock).
    pub fired_at: DateTime<Utc>,
}

/// A schedule's runs, oldest first.
pub async fn runs(pool: &PgPool, schedule: &str) -> Result<Vec<Run>, sqlx::Error> {
    sqlx::query_as(
        "SELECT job_id, schedule, tick_at, missed, fired_at FROM schedule_runs
         WHERE schedule = $1 ORDER BY fired_at, job_id",
    )
    .bind(schedule)
    .fetch_all(pool)
    .await
}

/// The job of a schedule's latest run, if any.
pub async fn latest_job(
    conn: &mut PgConnection,
    schedule: &str,
) -> Result<Option<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT job_id FROM schedule_runs WHERE schedule = $1 ORDER BY fired_at DESC LIMIT 1",
    )
    .bind(schedule)
    .fetch_optional(conn)
    .await
}

/// Whether a job is still in the outbox (committed, not yet relayed).
pub async fn in_outbox(conn: &mut PgConnection, job_id: Uuid) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM job_outbox WHERE job_id = $1)")
        .bind(job_id)
        .fetch_one(conn)
        .await
}
