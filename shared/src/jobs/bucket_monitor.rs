//! `bucket_monitor`: the sweep that catches transfer buckets whose low-balance state is stale
//! (a threshold or balance changed by SQL, a crash between two writes) and raises the same
//! `bucket.low_balance` event a movement would have, once.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Job;
use crate::queue::RetryPolicy;

/// Settles every stale bucket of one project, or of every live project.
///
/// `projectId` is the project to sweep, or the nil UUID
/// (`00000000-0000-0000-0000-000000000000`, [`BucketMonitor::PLATFORM`]) for a platform-wide
/// sweep, the one a schedule runs: the same "no project" id platform operators' tokens carry.
/// A platform-wide job follows no database write and belongs to no project, so it is enqueued
/// straight to Redis (`Job::enqueue_now`); the outbox's rows belong to a project.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BucketMonitor {
    /// The project to sweep, or [`BucketMonitor::PLATFORM`] for all of them.
    pub project_id: Uuid,
}

impl BucketMonitor {
    /// The `projectId` of a platform-wide sweep.
    pub const PLATFORM: Uuid = Uuid::nil();

    /// A sweep of every live project's buckets.
    pub fn platform() -> Self {
        Self {
            project_id: Self::PLATFORM,
        }
    }

    /// The project it sweeps (`None`: all of them).
    pub fn scope(&self) -> Option<Uuid> {
        (self.project_id != Self::PLATFORM).then_some(self.project_id)
    }
}

impl Job for BucketMonitor {
    const QUEUE: &'static str = "bucket_monitor";
    /// One at a time per worker (two sweeps would only split the same rows); retried soon, as
    /// the next scheduled run would be; a long sweep reports progress per batch.
    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        backoff_base: Duration::from_secs(2),
        backoff_cap: Duration::from_secs(30),
        timeout: Duration::from_secs(300),
        concurrency: 1,
        prefetch: 0,
    };
    fn project_id(&self) -> Uuid {
        self.project_id
    }
}
