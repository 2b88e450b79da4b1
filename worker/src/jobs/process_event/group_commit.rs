//! `process_event`'s writes, group-committed ([`shared::group_commit`]): the results of events
//! processed at the same moment share one transaction, one statement per project and one
//! commit (one WAL flush), instead of one of each per event. Postgres CPU per event was what
//! bounded `process_event` (about 6 ms of backend time per event, most of it planning and
//! committing a statement written for one event; BENCHMARKS.md).
//!
//! Each handler evaluates its event's rules itself, concurrently, then hands its writes to the
//! process's [`EventWriter`] and waits: its job succeeds only once its writes have committed,
//! as before. Idempotency is unchanged: a batch is the union of what its events' runs would
//! write alone, on the same unique keys; two runs of one event are never in one batch.

use anyhow::Context as _;
use shared::{
    db::{
        self,
        notifications::{Created, EventMatches},
    },
    group_commit::{BatchWrite, GroupCommit},
    jobs::{EnqueueOptions, Job as _, RuleDigest, delivery_jobs},
    queue::{NewJob, OutboxWaker},
};
use sqlx::PgPool;
use uuid::Uuid;

/// The most events one batch writes.
pub const MAX_BATCH: usize = 64;

/// Batches written at the same time (each holds one Postgres connection while it commits).
pub const IN_FLIGHT: usize = 2;

/// A digest job runs this long after its period closes: matches decided just before the close
/// have committed by then.
const DIGEST_GRACE_MS: i64 = 2_000;

/// What one event's run writes.
#[derive(Debug, Clone)]
pub struct Write {
    /// The event's project.
    pub project_id: Uuid,
    /// The event, its notifications and the rules it matched.
    pub matches: EventMatches,
    /// Suppression periods this event opened: their digest jobs.
    pub digests: Vec<RuleDigest>,
    /// The request id the delivery jobs carry.
    pub request_id: Option<String>,
}

/// What one event's writes did.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// The event's notifications and recipients.
    pub created: Created,
    /// Delivery jobs enqueued for it.
    pub deliveries: usize,
}

/// The process's writer of events' results.
pub type EventWriter = GroupCommit<Writer>;

/// Starts the process's [`EventWriter`].
pub fn spawn(pool: PgPool, outbox: OutboxWaker) -> EventWriter {
    GroupCommit::spawn(Writer { pool, outbox }, MAX_BATCH, IN_FLIGHT)
}

/// Writes batches of events' results (see [`write_many`]), then wakes the relays.
pub struct Writer {
    pool: PgPool,
    outbox: OutboxWaker,
}

impl BatchWrite for Writer {
    type Item = Write;
    type Output = Written;
    type Key = (Uuid, Uuid);

    fn key(w: &Write) -> (Uuid, Uuid) {
        (w.project_id, w.matches.event_id)
    }

    async fn write(&self, writes: &[&Write]) -> anyhow::Result<Vec<Written>> {
        let results = write_many(&self.pool, writes).await?;
        if results.iter().any(|r| r.deliveries > 0) || writes.iter().any(|w| !w.digests.is_empty())
        {
            self.outbox.wake();
        }
        Ok(results)
    }

    fn name(&self) -> &'static str {
        "process_event"
    }
}

/// Writes `writes` (sorted by project, distinct events) in one transaction: per project one
/// statement for the notifications, recipients and processed marks, then one insert of every
/// delivery job, then the digests. Returns one result per write, in order.
async fn write_many(pool: &PgPool, writes: &[&Write]) -> anyhow::Result<Vec<Written>> {
    let mut tx = pool.begin().await.context("Failed to begin")?;
    let mut results = Vec::with_capacity(writes.len());
    let mut jobs: Vec<NewJob> = Vec::new();
    for group in writes.chunk_by(|a, b| a.project_id == b.project_id) {
        let project_id = group[0].project_id;
        let matches: Vec<EventMatches> = group.iter().map(|w| w.matches.clone()).collect();
        let mut created = db::notifications::create_for_events(&mut tx, project_id, &matches)
            .await
            .context("Failed to store the notifications and mark the events processed")?;
        for w in group {
            // an event no longer in the project (deleted since its read) wrote nothing
            let created = created
                .iter()
                .position(|(e, _)| *e == w.matches.event_id)
                .map(|i| created.swap_remove(i).1)
                .unwrap_or_default();
            let before = jobs.len();
            delivery_jobs(
                project_id,
                &created.new,
                w.request_id.as_deref(),
                &mut jobs,
            )
            .context("Failed to build the delivery jobs")?;
            results.push(Written {
                deliveries: jobs.len() - before,
                created,
            });
        }
    }
    db::outbox::insert_many(&mut tx, &jobs)
        .await
        .context("Failed to enqueue the deliveries")?;
    for w in writes {
        for digest in &w.digests {
            // when the period closes, plus a moment for matches decided just before it to commit
            let run_at =
                chrono::DateTime::from_timestamp_millis(digest.period_end_ms + DIGEST_GRACE_MS);
            let opts = EnqueueOptions {
                run_at,
                idempotency_key: Some(digest.idempotency_key()),
                request_id: w.request_id.clone(),
                ..EnqueueOptions::default()
            };
            digest
                .enqueue(&mut tx, opts)
                .await
                .context("Failed to enqueue the suppression digest")?;
        }
    }
    tx.commit().await.context("Failed to commit")?;
    Ok(results)
}
