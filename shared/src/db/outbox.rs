//! The transactional outbox: jobs written in the caller's transaction, relayed to Redis.
//!
//! A request that writes to Postgres and enqueues a job calls [`enqueue`] with its own
//! transaction: the job exists if and only if the transaction commits. The relay (in every worker
//! process) moves committed rows to Redis in batches, woken by `NOTIFY` with a poll as fallback;
//! several relays share the rows with `FOR UPDATE SKIP LOCKED`. The job id is fixed in the row,
//! and the enqueue script ignores an id it already holds, so a relay that dies between pushing
//! and deleting pushes again harmlessly.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, postgres::PgListener};
use uuid::Uuid;

use crate::queue::{JobRecord, JobState, NewJob, Queues};

/// The NOTIFY channel the relay listens on.
pub const CHANNEL: &str = "comet_outbox";
/// Rows one relay pass moves at most.
const BATCH: i64 = 1000;

/// Writes a job to the outbox in the caller's transaction (and wakes the relays on commit).
pub async fn enqueue(conn: &mut PgConnection, job: &NewJob) -> Result<(), sqlx::Error> {
    sqlx::query(
        r#"
        INSERT INTO job_outbox
            (job_id, queue, kind, payload, run_at, priority, max_attempts,
             idempotency_key, project_id, request_id)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
        "#,
    )
    .bind(job.id)
    .bind(&job.queue)
    .bind(&job.kind)
    .bind(&job.payload)
    .bind(job.run_at)
    .bind(job.priority)
    .bind(job.max_attempts as i32)
    .bind(&job.idempotency_key)
    .bind(job.project_id)
    .bind(&job.request_id)
    .execute(&mut *conn)
    .await?;
    sqlx::query("SELECT pg_notify($1, '')")
        .bind(CHANNEL)
        .execute(conn)
        .await?;
    Ok(())
}

#[derive(sqlx::FromRow)]
struct Row {
    job_id: Uuid,
    queue: String,
    kind: String,
    payload: serde_json::Value,
    run_at: Option<DateTime<Utc>>,
    priority: i16,
    max_attempts: i32,
    idempotency_key: Option<String>,
    project_id: Uuid,
    request_id: Option<String>,
    created_at: DateTime<Utc>,
}

impl Row {
    fn into_job(self) -> NewJob {
        NewJob {
            id: self.job_id,
            queue: self.queue,
            kind: self.kind,
            payload: self.payload,
            run_at: self.run_at,
            priority: self.priority,
            max_attempts: self.max_attempts.max(1) as u32,
            idempotency_key: self.idempotency_key,
            project_id: self.project_id,
            request_id: self.request_id,
        }
    }
}

/// A job still in the outbox (committed, not yet relayed), seen as `pending`.
pub async fn pending_job(
    pool: &PgPool,
    project_id: Uuid,
    job_id: Uuid,
) -> Result<Option<JobRecord>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(
        r#"
        SELECT job_id, queue, kind, payload, run_at, priority, max_attempts, idempotency_key,
               project_id, request_id, created_at
        FROM job_outbox WHERE job_id = $1 AND project_id = $2
        "#,
    )
    .bind(job_id)
    .bind(project_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(|r| JobRecord {
        id: r.job_id,
        kind: r.kind,
        queue: r.queue,
        state: JobState::Pending,
        attempts: 0,
        max_attempts: r.max_attempts.max(1) as u32,
        priority: r.priority,
        run_at: r.run_at,
        errors: Vec::new(),
        last_error: None,
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

/// Moves one batch from the outbox to Redis; returns how many rows it moved.
pub async fn relay_once(pool: &PgPool, queues: &Queues) -> anyhow::Result<usize> {
    use anyhow::Context as _;
    let mut tx = pool
        .begin()
        .await
        .context("Failed to begin relay transaction")?;
    let rows: Vec<Row> = sqlx::query_as(
        r#"
        SELECT job_id, queue, kind, payload, run_at, priority, max_attempts, idempotency_key,
               project_id, request_id, created_at
        FROM job_outbox ORDER BY created_at, job_id
        LIMIT $1 FOR UPDATE SKIP LOCKED
        "#,
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await
    .context("Failed to read the outbox")?;
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.job_id).collect();
    let mut by_queue: std::collections::BTreeMap<String, Vec<NewJob>> = Default::default();
    for row in rows {
        let job = row.into_job();
        by_queue.entry(job.queue.clone()).or_default().push(job);
    }
    for (queue, jobs) in &by_queue {
        queues
            .enqueue_many(queue, jobs)
            .await
            .with_context(|| format!("Failed to push outbox jobs to queue {queue}"))?;
    }
    sqlx::query("DELETE FROM job_outbox WHERE job_id = ANY($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await
        .context("Failed to delete relayed outbox rows")?;
    tx.commit()
        .await
        .context("Failed to commit relay transaction")?;
    metrics::counter!("comet_outbox_relayed_total").increment(ids.len() as u64);
    Ok(ids.len())
}

/// Runs the relay until `stop` resolves: drain, then wait for a NOTIFY or the poll interval.
/// Errors (Postgres or Redis down) are logged and retried with backoff; the relay never exits.
pub async fn run_relay(
    pool: PgPool,
    queues: Queues,
    poll: Duration,
    stop: impl std::future::Future<Output = ()>,
) {
    tokio::pin!(stop);
    let mut listener: Option<PgListener> = None;
    let mut backoff = Duration::from_millis(100);
    loop {
        if listener.is_none() {
            match PgListener::connect_with(&pool).await {
                Ok(mut l) => match l.listen(CHANNEL).await {
                    Ok(()) => listener = Some(l),
                    Err(e) => tracing::warn!(error = %e, "outbox relay could not LISTEN; polling"),
                },
                Err(e) => {
                    tracing::warn!(error = %e, "outbox relay could not connect to LISTEN; polling")
                }
            }
        }
        let mut wait = poll;
        loop {
            match relay_once(&pool, &queues).await {
                Ok(n) if n as i64 == BATCH => continue,
                Ok(_) => {
                    backoff = Duration::from_millis(100);
                    break;
                }
                Err(e) => {
                    metrics::counter!("comet_outbox_relay_errors_total").increment(1);
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "outbox relay failed; retrying with backoff"
                    );
                    wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                    break;
                }
            }
        }
        let notified = async {
            match listener.as_mut() {
                Some(l) => l.recv().await.map(|_| ()),
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = &mut stop => return,
            _ = tokio::time::sleep(wait) => {}
            res = notified => if let Err(e) = res {
                tracing::warn!(error = %e, "outbox LISTEN connection lost; reconnecting");
                listener = None;
            },
        }
    }
}
