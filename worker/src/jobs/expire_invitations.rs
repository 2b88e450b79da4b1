//! Runs `expire_invitations`: marks every pending invitation past its expiry `EXPIRED`, each
//! audited `invitation.expired` in its project, in batches of 1000 (one statement each).
//!
//! Idempotent: a re-run finds only invitations still pending and past their expiry.

use apalis_core::error::BoxDynError;
use serde::Serialize;
use shared::{db, jobs::ExpireInvitations, queue::backend::JobHandle};

use super::Handler;
use crate::{context::JobContext, sweeps};

/// Invitations one statement expires.
const BATCH: u64 = 1000;

/// What a run did (kept as the job's result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Invitations marked `EXPIRED` (and audited).
    pub expired: u64,
    /// Ticks missed before this run (catch-up `once`).
    pub missed_ticks: u64,
}

impl Handler for ExpireInvitations {
    type Output = Summary;

    async fn run(self, ctx: &JobContext, handle: &JobHandle) -> Result<Summary, BoxDynError> {
        sweeps::platform_only(<Self as shared::jobs::Job>::QUEUE, self.project_id)?;
        let expired = sweeps::drain(handle, "expire_invitations", "expire", BATCH, u32::MAX, || {
            db::invitations::expire_due(&ctx.pool, BATCH as i64)
        })
        .await?;
        tracing::info!(expired, "expired invitations marked");
        Ok(Summary {
            expired,
            missed_ticks: self.run.missed,
        })
    }
}
