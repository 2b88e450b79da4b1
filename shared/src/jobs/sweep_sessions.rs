//! `sweep_sessions`: removes dead entries from the per-user session sets in Redis (the records themselves expire with their tokens).
//!
//! A platform-wide sweep: its `projectId` is [`PLATFORM`]; it runs on its schedule (declared
//! below) and can be triggered by hand (`POST /api/v1/schedules/sweep_sessions/trigger`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Job;
use crate::{
    queue::RetryPolicy,
    schedule::{CatchUp, Overlap, PLATFORM, Schedule, Scheduled, Tick},
};

/// Removes the ids of sessions that no longer exist from every user's session set, a bounded number of sets per run (SCAN, resumed by the next run).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SweepSessions {
    /// Always [`PLATFORM`] (the nil id): the sweep covers every project.
    pub project_id: Uuid,
    /// The tick (or manual trigger) it runs for.
    pub run: Tick,
}

impl Job for SweepSessions {
    const QUEUE: &'static str = "sweep_sessions";
    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        backoff_base: Duration::from_secs(5),
        backoff_cap: Duration::from_secs(120),
        timeout: Duration::from_secs(300),
        concurrency: 1,
        prefetch: 0,
    };
    fn project_id(&self) -> Uuid {
        self.project_id
    }
}

impl Scheduled for SweepSessions {
    const SCHEDULE: Schedule = Schedule::new("sweep_sessions", "*/10 * * * *").catch_up(CatchUp::Skip).overlap(Overlap::Skip);
    fn for_tick(tick: &Tick) -> Self {
        Self {
            project_id: PLATFORM,
            run: tick.clone(),
        }
    }
}
