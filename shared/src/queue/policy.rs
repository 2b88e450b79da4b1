//! How a queue runs and retries its jobs: the [`RetryPolicy`] every job kind declares.
//!
//! It lives with the queue (the backend applies it) rather than with the job definitions, so the
//! queue never imports the job definitions: job kinds depend on the queue, not the other way round.

use std::time::Duration;

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
