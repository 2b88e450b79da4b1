//! `ping`: a no-op job that proves the fleet runs jobs end to end.
//!
//! Its options make it a diagnostic probe too: hold a slot for a while (`sleepMs`), fail its
//! first attempts (`failAttempts`) to watch the retry path, fail permanently, or record each run
//! (`record`) so a check can count executions.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Job;
use crate::{
    queue::RetryPolicy,
    schedule::{CatchUp, Overlap, PLATFORM, Schedule, Scheduled, Tick},
};

/// Most a ping may sleep.
pub const MAX_SLEEP_MS: u64 = 60_000;

/// The `ping` job.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Ping {
    /// The tenant that sent it.
    pub project_id: Uuid,
    /// Sleep this long before answering (at most 60 s).
    #[serde(default)]
    pub sleep_ms: u64,
    /// Fail attempts 1..=N with a retryable error.
    #[serde(default)]
    pub fail_attempts: u32,
    /// Fail with a permanent error (dead at once).
    #[serde(default)]
    pub fail_permanently: bool,
    /// Count each execution under the queue's `pongs` hash (checks of exactly-once delivery).
    #[serde(default)]
    pub record: bool,
}

impl Ping {
    /// A plain ping for a project.
    pub fn new(project_id: Uuid) -> Self {
        Self {
            project_id,
            sleep_ms: 0,
            fail_attempts: 0,
            fail_permanently: false,
            record: false,
        }
    }
}

impl Job for Ping {
    const QUEUE: &'static str = "ping";
    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        backoff_base: Duration::from_millis(500),
        backoff_cap: Duration::from_secs(60),
        timeout: Duration::from_secs(90),
        concurrency: 64,
        prefetch: 16,
    };
    fn project_id(&self) -> Uuid {
        self.project_id
    }
}

/// The `canary` schedule: a platform ping every five minutes, so a stalled scheduler or fleet
/// shows as `comet_jobs_total{queue="ping"}` not growing. Overlap is allowed (a ping is
/// instant; one stuck behind a busy queue must not silence the next).
impl Scheduled for Ping {
    const SCHEDULE: Schedule = Schedule::new("canary", "*/5 * * * *")
        .catch_up(CatchUp::Skip)
        .overlap(Overlap::Allow);
    fn for_tick(_: &Tick) -> Self {
        Self::new(PLATFORM)
    }
}
