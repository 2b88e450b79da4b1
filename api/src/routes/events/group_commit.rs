//! Single ingested events, group-committed ([`shared::group_commit`]): the events of requests
//! that arrive at the same moment are stored with their `process_event` jobs in one
//! transaction and one commit (one WAL flush) instead of one each; a group without idempotency
//! keys in one statement (one round trip). Each request still answers
//! only once its own event has committed; a request alone is written at once.
//!
//! Idempotency keys behave as in a batch of `POST /api/v1/events/batch`: a key repeated by two
//! requests of one group answers both with the first event.

use shared::{
    db::{self, events::NewEvent},
    group_commit::{BatchWrite, GroupCommit},
    jobs::EnqueueOptions,
    queue::OutboxWaker,
};
use sqlx::PgPool;
use uuid::Uuid;

/// The most events one transaction writes.
const MAX_BATCH: usize = 128;

/// Groups written at the same time. One: the requests that arrive while a group is written
/// make the next one, so groups grow with the load (about 3 events at 2000 req/s); with two in
/// flight the groups halved and Postgres spent 40 % more CPU for the same events, with no lower
/// latency (BENCHMARKS.md, "Single ingest: one statement per group").
const IN_FLIGHT: usize = 1;

/// One request's event.
#[derive(Debug)]
pub struct Ingest {
    /// The caller's project.
    pub project_id: Uuid,
    /// The event.
    pub event: NewEvent,
    /// Its job's options (the request's id).
    pub opts: EnqueueOptions,
    /// Arrival order: keeps every item distinct.
    seq: u64,
}

impl Ingest {
    /// An event of `project_id` with its job's options.
    pub fn new(project_id: Uuid, event: NewEvent, opts: EnqueueOptions) -> Self {
        static SEQ: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        Self {
            project_id,
            event,
            opts,
            seq: SEQ.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        }
    }
}

/// The API process's writer of single events.
pub type IngestWriter = GroupCommit<Writer>;

/// Starts the process's [`IngestWriter`].
pub fn spawn(pool: PgPool, outbox: OutboxWaker) -> IngestWriter {
    GroupCommit::spawn(Writer { pool, outbox }, MAX_BATCH, IN_FLIGHT)
}

/// Writes batches of single events, then wakes the relays.
pub struct Writer {
    pool: PgPool,
    outbox: OutboxWaker,
}

impl BatchWrite for Writer {
    type Item = Ingest;
    type Output = db::events::Accepted;
    // by project, then idempotency key: concurrent transactions meet keys in one order
    type Key = (Uuid, Option<String>, u64);

    fn key(i: &Ingest) -> Self::Key {
        (i.project_id, i.event.idempotency_key.clone(), i.seq)
    }

    async fn write(&self, items: &[&Ingest]) -> anyhow::Result<Vec<db::events::Accepted>> {
        let projects: Vec<Uuid> = items.iter().map(|i| i.project_id).collect();
        let events: Vec<NewEvent> = items.iter().map(|i| i.event.clone()).collect();
        let opts = |k: usize| items[k].opts.clone();
        let accepted = if events.iter().all(|e| e.idempotency_key.is_none()) {
            // one statement, one round trip
            db::events::accept_each_keyless(&self.pool, &projects, &events, opts).await?
        } else {
            let mut tx = self.pool.begin().await?;
            let accepted = db::events::accept_each(&mut tx, &projects, &events, opts).await?;
            tx.commit().await?;
            accepted
        };
        self.outbox.wake();
        Ok(accepted)
    }

    fn name(&self) -> &'static str {
        "ingest"
    }
}

/// The answer for a write that failed: 503 when Postgres could not be reached, else 500.
pub fn api_error(e: anyhow::Error) -> crate::error::ApiError {
    if shared::group_commit::unreachable(&e) {
        tracing::error!(error = %format!("{e:#}"), "postgres unreachable");
        return crate::error::ApiError::Unavailable("the database");
    }
    crate::error::ApiError::Internal(e)
}
