//! The transactional outbox's SQL: jobs written in the caller's transaction, read and deleted
//! by the relay.
//!
//! `Job::enqueue` calls [`insert`] with the caller's transaction: the job exists if and only if
//! the transaction commits. The relay (the worker's `services::relay`) takes committed rows in
//! batches with [`lock_batch`] (`FOR UPDATE SKIP LOCKED`, so several relays share the backlog),
//! pushes them to Redis and [`delete`]s them in the same transaction. The job id is fixed in the
//! row, and the enqueue script ignores an id it already holds, so a relay that dies between
//! pushing and deleting pushes again harmlessly.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::queue::{JobRecord, JobState, NewJob};

/// Writes a job to the outbox in the caller's transaction; wake the relays after the commit
/// ([`crate::queue::OutboxWaker::wake`]).
pub async fn insert(conn: &mut PgConnection, job: &NewJob) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"
        INSERT INTO job_outbox
            (job_id, queue, payload, run_at, priority, max_attempts,
             idempotency_key, project_id, request_id, partition_key)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        "#,
    )
    .bind(job.id)
    .bind(&job.queue)
    .bind(&job.payload)
    .bind(job.run_at)
    .bind(job.priority)
    .bind(job.max_attempts as i32)
    .bind(&job.idempotency_key)
    .bind(job.project_id)
    .bind(&job.request_id)
    .bind(&job.partition_key)
    .execute(conn)
    .await?;
    Ok(())
}

/// Writes many jobs to the outbox in one statement, in the caller's transaction (batch event
/// ingestion: a thousand jobs cost one round trip, not a thousand); wake the relays after the
/// commit.
pub async fn insert_many(conn: &mut PgConnection, jobs: &[NewJob]) -> Result<(), sqlx::Error> {
    if jobs.is_empty() {
        return Ok(());
    }
    let cols = Columns::of(jobs);
    cols.bind(sqlx::query(
        r#"
        INSERT INTO job_outbox
            (job_id, queue, payload, run_at, priority, max_attempts,
             idempotency_key, project_id, request_id, partition_key)
        SELECT * FROM unnest($1::uuid[], $2::text[], $3::jsonb[], $4::timestamptz[],
                             $5::smallint[], $6::integer[], $7::text[], $8::uuid[], $9::text[],
                             $10::text[])
        "#,
    ))
    .execute(conn)
    .await?;
    Ok(())
}

/// Jobs as the ten arrays of a multi-row outbox insert (`unnest` of `uuid[]`, `text[]`,
/// `jsonb[]`, `timestamptz[]`, `smallint[]`, `integer[]`, `text[]`, `uuid[]`, `text[]`,
/// `text[]`: job id, queue, payload, run at, priority, max attempts, idempotency key, project,
/// request id, partition key).
pub(crate) struct Columns<'a> {
    ids: Vec<Uuid>,
    queues: Vec<&'a str>,
    payloads: Vec<&'a serde_json::Value>,
    run_ats: Vec<Option<DateTime<Utc>>>,
    priorities: Vec<i16>,
    max_attempts: Vec<i32>,
    keys: Vec<Option<&'a str>>,
    projects: Vec<Uuid>,
    requests: Vec<Option<&'a str>>,
    partition_keys: Vec<Option<&'a str>>,
}

impl<'a> Columns<'a> {
    pub(crate) fn of(jobs: &'a [NewJob]) -> Self {
        Self {
            ids: jobs.iter().map(|j| j.id).collect(),
            queues: jobs.iter().map(|j| j.queue.as_str()).collect(),
            payloads: jobs.iter().map(|j| &j.payload).collect(),
            run_ats: jobs.iter().map(|j| j.run_at).collect(),
            priorities: jobs.iter().map(|j| j.priority).collect(),
            max_attempts: jobs.iter().map(|j| j.max_attempts as i32).collect(),
            keys: jobs.iter().map(|j| j.idempotency_key.as_deref()).collect(),
            projects: jobs.iter().map(|j| j.project_id).collect(),
            requests: jobs.iter().map(|j| j.request_id.as_deref()).collect(),
            partition_keys: jobs.iter().map(|j| j.partition_key.as_deref()).collect(),
        }
    }

    /// Binds the ten arrays, in the order above, as the query's next parameters.
    pub(crate) fn bind<'q>(
        &'q self,
        q: sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
        q.bind(&self.ids)
            .bind(&self.queues)
            .bind(&self.payloads)
            .bind(&self.run_ats)
            .bind(&self.priorities)
            .bind(&self.max_attempts)
            .bind(&self.keys)
            .bind(&self.projects)
            .bind(&self.requests)
            .bind(&self.partition_keys)
    }
}

#[derive(sqlx::FromRow)]
struct Row {
    job_id: Uuid,
    queue: String,
    payload: serde_json::Value,
    run_at: Option<DateTime<Utc>>,
    priority: i16,
    max_attempts: i32,
    idempotency_key: Option<String>,
    project_id: Uuid,
    request_id: Option<String>,
    partition_key: Option<String>,
    created_at: DateTime<Utc>,
}

impl Row {
    fn into_job(self) -> NewJob {
        NewJob {
            id: self.job_id,
            queue: self.queue,
            payload: self.payload,
            run_at: self.run_at,
            priority: self.priority,
            max_attempts: self.max_attempts.max(1) as u32,
            idempotency_key: self.idempotency_key,
            project_id: self.project_id,
            request_id: self.request_id,
            partition_key: self.partition_key,
        }
    }
}

/// A job still in the outbox (committed, not yet relayed), seen as `pending`; `project_id`
/// scopes it (`None`: any project, for platform operators).
pub async fn pending_job(
    pool: &PgPool,
    project_id: Option<Uuid>,
    job_id: Uuid,
) -> Result<Option<JobRecord>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(
        r#"
        SELECT job_id, queue, payload, run_at, priority, max_attempts, idempotency_key,
               project_id, request_id, partition_key, created_at
        FROM job_outbox WHERE job_id = $1 AND ($2::uuid IS NULL OR project_id = $2)
        "#,
    )
    .bind(job_id)
    .bind(project_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| JobRecord {
        id: r.job_id,
        kind: r.queue.clone(),
        queue: r.queue,
        state: JobState::Pending,
        attempts: 0,
        max_attempts: r.max_attempts.max(1) as u32,
        priority: r.priority,
        run_at: r.run_at,
        errors: Vec::new(),
        last_error: None,
        payload: Some(r.payload),
        progress: None,
        result: None,
        project_id: Some(r.project_id),
        request_id: r.request_id,
        worker: None,
        created_at: Some(r.created_at),
        started_at: None,
        finished_at: None,
    }))
}

/// Rows waiting in the outbox (for metrics and tests).
pub async fn backlog(pool: &PgPool) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar("SELECT count(*) FROM job_outbox")
        .fetch_one(pool)
        .await
}

/// Rows waiting in the outbox per queue, and the oldest row's commit time (the relay's lag).
pub async fn waiting(
    pool: &PgPool,
) -> Result<(Vec<(String, i64)>, Option<chrono::DateTime<chrono::Utc>>), sqlx::Error> {
    let per_queue: Vec<(String, i64)> =
        sqlx::query_as("SELECT queue, count(*) FROM job_outbox GROUP BY queue ORDER BY queue")
            .fetch_all(pool)
            .await?;
    let oldest = sqlx::query_scalar("SELECT min(created_at) FROM job_outbox")
        .fetch_one(pool)
        .await?;
    Ok((per_queue, oldest))
}

/// A project's rows waiting in the outbox (committed, not yet relayed), counted up to
/// `at_most`: jobs its quota counts as open before Redis holds them. Bounded work (the
/// `job_outbox_project` index, at most `at_most` entries), whatever the backlog.
pub async fn pending_of_project(
    pool: &PgPool,
    project_id: Uuid,
    at_most: i64,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT count(*) FROM (SELECT 1 FROM job_outbox WHERE project_id = $1 LIMIT $2) AS p",
    )
    .bind(project_id)
    .bind(at_most)
    .fetch_one(pool)
    .await
}

/// Locks up to `limit` of the oldest committed rows for the caller's transaction, skipping rows
/// another relay holds; the caller pushes them to Redis, then [`delete`]s them and commits.
pub async fn lock_batch(conn: &mut PgConnection, limit: i64) -> Result<Vec<NewJob>, sqlx::Error> {
    let rows: Vec<Row> = sqlx::query_as(
        r#"
        SELECT job_id, queue, payload, run_at, priority, max_attempts, idempotency_key,
               project_id, request_id, partition_key, created_at
        FROM job_outbox ORDER BY created_at, job_id
        LIMIT $1 FOR UPDATE SKIP LOCKED
        "#,
    )
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(Row::into_job).collect())
}

/// Deletes relayed rows.
pub async fn delete(conn: &mut PgConnection, ids: &[Uuid]) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM job_outbox WHERE job_id = ANY($1)")
        .bind(ids)
        .execute(conn)
        .await?
        .rows_affected())
}
