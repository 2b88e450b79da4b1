//! `apply_retention`: deletes what is older than its retention setting (audit log, events, notifications, inbox feed, schedule runs), in small batches.
//!
//! A platform-wide sweep: its `projectId` is [`PLATFORM`]; it runs on its schedule (declared
//! below) and can be triggered by hand (`POST /api/v1/schedules/apply_retention/trigger`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Job;
use crate::{
    queue::RetryPolicy,
    schedule::{CatchUp, Overlap, PLATFORM, Schedule, Scheduled, Tick},
};

/// Deletes rows older than their retention settings, in batches of short transactions.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ApplyRetention {
    /// Always [`PLATFORM`] (the nil id): the sweep covers every project.
    pub project_id: Uuid,
    /// The tick (or manual trigger) it runs for.
    pub run: Tick,
}

impl Job for ApplyRetention {
    const QUEUE: &'static str = "apply_retention";
    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 3,
        backoff_base: Duration::from_secs(30),
        backoff_cap: Duration::from_secs(600),
        timeout: Duration::from_secs(3600),
        concurrency: 1,
        prefetch: 0,
    };
    fn project_id(&self) -> Uuid {
        self.project_id
    }
}

impl Scheduled for ApplyRetention {
    const SCHEDULE: Schedule = Schedule::new("apply_retention", "30 3 * * *").catch_up(CatchUp::Once).overlap(Overlap::Skip);
    fn for_tick(tick: &Tick) -> Self {
        Self {
            project_id: PLATFORM,
            run: tick.clone(),
        }
    }
}
