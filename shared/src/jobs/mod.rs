//! Job definitions: one serde struct per job kind, each with its own queue and retry policy.
//!
//! A job carries ids, never copies of data, and always its `projectId`. The API only enqueues
//! (through [`enqueue`] into the outbox, or straight to Redis for jobs with no database write);
//! the worker only runs them.

mod ping;
mod users;

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

pub use ping::{MAX_SLEEP_MS, Ping};
pub use users::{RevokeSessions, SendInvitation};

use crate::queue::{NewJob, backend::JobArgs};

/// How a job kind is run and retried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts before the job goes dead (a lost worker's attempt counts).
    pub max_attempts: u32,
    /// First retry's backoff ceiling; it doubles each attempt (full jitter below it).
    pub backoff_base: Duration,
    /// Largest backoff ceiling.
    pub backoff_cap: Duration,
    /// One attempt's time limit; past it the attempt fails and is retried.
    pub timeout: Duration,
    /// Default jobs run at once per worker process (`QUEUE_CONCURRENCY` overrides it).
    pub concurrency: usize,
    /// Jobs a worker may lease beyond its free slots, to save a fetch round trip per job.
    /// Worth it for many short jobs; keep 0 for slow ones, where a prefetched job would wait
    /// behind a slow one while other workers idle. Prefetched jobs hold leases (heartbeats
    /// extend them) and are handed back unstarted, attempt not used, at shutdown.
    pub prefetch: usize,
}

/// A job kind.
pub trait Job: JobArgs {
    /// The queue (and kind) name: stable, never the Rust type path.
    const QUEUE: &'static str;
    /// How this kind is retried and run.
    const POLICY: RetryPolicy;
    /// The tenant the job belongs to.
    fn project_id(&self) -> Uuid;
}

/// Every queue name, for look-ups by job id and for the worker's registration.
pub const QUEUES: &[&str] = &[Ping::QUEUE, SendInvitation::QUEUE, RevokeSessions::QUEUE];

/// Options for enqueuing one job.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// Run no earlier than this.
    pub run_at: Option<DateTime<Utc>>,
    /// Higher runs first (-1000..=1000).
    pub priority: i16,
    /// Overrides the kind's attempts.
    pub max_attempts: Option<u32>,
    /// A second enqueue with the same key returns the first job.
    pub idempotency_key: Option<String>,
    /// The request that enqueues it (for logs).
    pub request_id: Option<String>,
}

/// Turns a job into the record the outbox and the queue store, with a fresh UUID v7 id.
pub fn enqueue<J: crate::jobs::Job>(
    job: &J,
    opts: EnqueueOptions,
) -> Result<NewJob, serde_json::Error> {
    Ok(NewJob {
        id: Uuid::now_v7(),
        queue: J::QUEUE.to_owned(),
        kind: J::QUEUE.to_owned(),
        payload: serde_json::to_value(job)?,
        run_at: opts.run_at,
        priority: opts.priority,
        max_attempts: opts.max_attempts.unwrap_or(J::POLICY.max_attempts),
        idempotency_key: opts.idempotency_key,
        project_id: job.project_id(),
        request_id: opts.request_id,
    })
}
