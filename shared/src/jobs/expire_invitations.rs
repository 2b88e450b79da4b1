//! `expire_invitations`: marks pending invitations past their expiry `EXPIRED`, audited `invitation.expired`, in every project.
//!
//! A platform-wide sweep: its `projectId` is [`PLATFORM`]; it runs on its schedule (declared
//! below) and can be triggered by hand (`POST /api/v1/schedules/expire_invitations/trigger`).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Job;
use crate::{
    queue::RetryPolicy,
    schedule::{CatchUp, Overlap, PLATFORM, Schedule, Scheduled, Tick},
};

/// Marks every pending invitation past its expiry `EXPIRED` (audited `invitation.expired` in its project), in batches; an expired invitee can then be invited again.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ExpireInvitations {
    /// Always [`PLATFORM`] (the nil id): the sweep covers every project.
    pub project_id: Uuid,
    /// The tick (or manual trigger) it runs for.
    pub run: Tick,
}

impl Job for ExpireInvitations {
    const QUEUE: &'static str = "expire_invitations";
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

impl Scheduled for ExpireInvitations {
    const SCHEDULE: Schedule = Schedule::new("expire_invitations", "*/5 * * * *").catch_up(CatchUp::Once).overlap(Overlap::Skip);
    fn for_tick(tick: &Tick) -> Self {
        Self {
            project_id: PLATFORM,
            run: tick.clone(),
        }
    }
}
