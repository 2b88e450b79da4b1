//! The job archiver: copies finished jobs from Redis to Postgres (`job_archive`), where
//! operators search them (`GET /api/v1/jobs`), and lets Redis drop completed jobs once copied.
//!
//! Every worker process runs it for every queue; a per-queue lease in Redis (`archiver`, three
//! periods long) lets one process at a time copy a queue, and another take over when it stops.
//! Each pass takes the oldest marks (`shared::queue::archive`), writes their jobs in one
//! transaction (finished jobs upserted, jobs open again deleted), then forgets the marks that
//! did not change meanwhile. Copying is at least once: a process killed between the commit and
//! the forget copies the same jobs again, which changes nothing. A failed pass (Postgres or
//! Redis down) is logged and counted, and retried next period; Redis then keeps completed jobs
//! up to `JOB_MAX_COMPLETED` as before.
//!
//! Archiving a completed or dead job of a project whose webhook endpoints subscribe to job
//! messages enqueues one `job_webhook` job per endpoint in the same transaction
//! (`shared::jobs::job_webhook`), so each finish is told once however often it is archived.
//!
//! Archiving a dead job counts it into its dead-job alert window (`shared::db::job_dead_alerts`),
//! and every period each process raises the windows that have closed: one `job.dead` event per
//! (project, queue, error fingerprint) and window, with the count
//! (`comet_dead_job_alerts_total`).

use std::{collections::HashMap, time::Duration};

use shared::{
    db,
    jobs::QUEUES,
    queue::{ARCHIVE_BATCH, ArchivedJob, Queues, queue_of},
};
use sqlx::PgPool;

use super::Stop;

/// What one pass over one queue did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Pass {
    /// Finished jobs written.
    pub written: u64,
    /// Archived rows deleted (jobs open again).
    pub reopened: u64,
    /// Marks forgotten.
    pub forgotten: u64,
}

/// Copies one batch of the marked jobs of `queue` (a queue, or one partition of a partitioned
/// queue: `shared::queue::partition_name`), at most [`ARCHIVE_BATCH`].
pub async fn archive_once(pool: &PgPool, queues: &Queues, queue: &str) -> anyhow::Result<Pass> {
    let batch = queues.archive_batch(queue, ARCHIVE_BATCH).await?;
    if batch.marks.is_empty() {
        return Ok(Pass::default());
    }
    let mut finished = Vec::new();
    let mut reopened = Vec::new();
    for job in &batch.jobs {
        match job {
            ArchivedJob::Job(j) if j.finished_at.is_some() && is_finished(j.state) => {
                finished.push(&**j);
            }
            ArchivedJob::Job(j) => reopened.push(j.id),
            ArchivedJob::Gone(_) => {}
        }
    }
    let room = message_room(pool, queues, &finished).await?;
    let db::job_archive::Written {
        written,
        deleted: reopened,
        messages,
        dropped,
    } = db::job_archive::write(
        pool,
        &finished,
        &reopened,
        queues.settings().dead_alert_window,
        Some(&room),
    )
    .await?;
    for (project, n) in dropped {
        metrics::counter!("comet_job_webhooks_dropped_total", "reason" => "quota").increment(n);
        tracing::warn!(%project, messages = n, queue,
            "job lifecycle messages not sent: the project is at its open-jobs quota");
    }
    if messages > 0 {
        // the relays poll too: a lost wake only delays the messages
        if let Err(e) = queues.publish_outbox_wake().await {
            tracing::debug!(error = %e, "outbox wake for job messages not published");
        }
    }
    let forgotten = queues.archived(queue, &batch.marks).await?;
    metrics::counter!("comet_jobs_archived_total", "queue" => queue_of(queue).to_owned())
        .increment(written);
    Ok(Pass {
        written,
        reopened,
        forgotten,
    })
}

/// How many job lifecycle messages each project of the batch with subscribed endpoints may
/// still be sent: its open-jobs quota (`JOB_MAX_OPEN_PER_PROJECT`) less its open jobs, those in
/// Redis and those still in the outbox (messages of earlier batches not yet relayed), as the
/// API counts them for any other job. One Postgres look-up per batch; one Redis round trip and
/// one outbox count per such project. (Archivers of different queues read their rooms on their
/// own, so the quota can be overshot by what they make at the same moment: a batch or two.)
async fn message_room(
    pool: &PgPool,
    queues: &Queues,
    finished: &[&shared::queue::JobRecord],
) -> anyhow::Result<HashMap<uuid::Uuid, u64>> {
    let projects = db::job_archive::told_projects(finished);
    let mut room = HashMap::new();
    if projects.is_empty() {
        return Ok(room);
    }
    let quota = queues.settings().max_open_per_project;
    for project in db::webhook_endpoints::job_subscriber_projects(pool, &projects).await? {
        let open = queues.open_jobs(QUEUES, project).await?;
        let left = quota.saturating_sub(open);
        let pending = db::outbox::pending_of_project(pool, project, left as i64).await?;
        room.insert(project, left.saturating_sub(pending.max(0) as u64));
    }
    Ok(room)
}

fn is_finished(state: shared::queue::JobState) -> bool {
    use shared::queue::JobState::*;
    matches!(state, Completed | Dead | Cancelled)
}

/// Archives every queue this process holds the lease of, every `period`, until stopped.
pub async fn run(
    pool: PgPool,
    queues: Queues,
    holder: String,
    period: Duration,
    stop: Stop,
) -> anyhow::Result<()> {
    let lease = period * 3 + Duration::from_secs(1);
    loop {
        for queue in QUEUES {
            let parts = match queues.parts(queue).await {
                Ok(parts) => parts,
                Err(e) => {
                    metrics::counter!("comet_archive_errors_total", "queue" => *queue).increment(1);
                    tracing::warn!(queue, error = %e, "job archive pass failed; retrying");
                    continue;
                }
            };
            for part in parts {
                if let Err(e) = drain(&pool, &queues, &holder, &part, lease, &stop).await {
                    metrics::counter!("comet_archive_errors_total", "queue" => *queue).increment(1);
                    tracing::warn!(
                        queue,
                        partition = part,
                        error = format!("{e:#}"),
                        "job archive pass failed; retrying"
                    );
                }
            }
        }
        raise_alerts(&pool).await;
        tokio::select! {
            () = stop.clone().requested() => return Ok(()),
            () = tokio::time::sleep(period) => {}
        }
    }
}

/// Raises the dead-job alert windows that have closed (any process may: windows are claimed
/// with `SKIP LOCKED`), in batches of 100 until none is left; a failure is logged, counted and
/// retried next period.
async fn raise_alerts(pool: &PgPool) {
    loop {
        match db::job_dead_alerts::raise_closed(pool, 100).await {
            Ok(0) => return,
            Ok(n) => {
                metrics::counter!("comet_dead_job_alerts_total").increment(n as u64);
                tracing::info!(windows = n, "dead-job alerts raised");
            }
            Err(e) => {
                metrics::counter!("comet_archive_errors_total", "queue" => "alerts").increment(1);
                tracing::warn!(error = %e, "dead-job alerts not raised; retrying");
                return;
            }
        }
    }
}

/// Copies the backlog of `queue` (a queue or one partition: each has its own lease) in batches
/// while this process holds its lease.
async fn drain(
    pool: &PgPool,
    queues: &Queues,
    holder: &str,
    queue: &str,
    lease: Duration,
    stop: &Stop,
) -> anyhow::Result<()> {
    while !stop.is_requested() && queues.archive_lease(queue, holder, lease).await? {
        let pass = archive_once(pool, queues, queue).await?;
        // after every pass, so a long backlog shows as it drains
        let queue = queue_of(queue);
        let backlog = queues.archive_backlog(queue).await?;
        metrics::gauge!("comet_archive_backlog", "queue" => queue.to_owned()).set(backlog as f64);
        if pass.written + pass.reopened + pass.forgotten == 0 {
            break;
        }
    }
    Ok(())
}
