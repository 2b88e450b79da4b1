//! `sweep_api_keys`: disables API keys past their expiry and erases previous secrets past their rotation grace, audited.
//!
//! A platform-wide sweep: its `projectId` is [`PLATFORM`]; it runs on its schedule (declared
//! below) and can be triggered by hand (`POST /api/v1/schedules/sweep_api_keys/trigger`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Job;
use crate::{
    queue::RetryPolicy,
    schedule::{CatchUp, Overlap, PLATFORM, Schedule, Scheduled, Tick},
};

/// Disables every API key past its expiry (audited `api_key.disabled`) and erases the previous secret of every rotation whose grace period is over (audited `api_key.rotation_grace_ended`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SweepApiKeys {
    /// Always [`PLATFORM`] (the nil id): the sweep covers every project.
    pub project_id: Uuid,
    /// The tick (or manual trigger) it runs for.
    pub run: Tick,
}

impl Job for SweepApiKeys {
    const QUEUE: &'static str = "sweep_api_keys";
    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        backoff_base: Duration::from_secs(5),
        backoff_cap: Duration::from_secs(300),
        timeout: Duration::from_secs(300),
        concurrency: 1,
        prefetch: 0,
    };
    fn project_id(&self) -> Uuid {
        self.project_id
    }
}

impl Scheduled for SweepApiKeys {
    const SCHEDULE: Schedule = Schedule::new("sweep_api_keys", "*/5 * * * *").catch_up(CatchUp::Once).overlap(Overlap::Skip);
    fn for_tick(tick: &Tick) -> Self {
        Self {
            project_id: PLATFORM,
            run: tick.clone(),
        }
    }
}
