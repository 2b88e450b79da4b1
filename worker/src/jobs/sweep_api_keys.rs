//! Runs `sweep_api_keys`: disables every API key past its expiry (audited `api_key.disabled`)
//! and erases the previous secret of every rotation whose grace period is over (audited
//! `api_key.rotation_grace_ended`), in batches of 1000.
//!
//! The look-up already refuses both by their dates; the sweep makes it a recorded state (the
//! key shows `disabledAt`, the old hash is gone from the database) and tells the audit log.
//! Idempotent: a re-run finds nothing still due.

use apalis_core::error::BoxDynError;
use serde::Serialize;
use shared::{db, jobs::SweepApiKeys, queue::backend::JobHandle};

use super::Handler;
use crate::{context::JobContext, sweeps};

/// Keys one statement changes.
const BATCH: u64 = 1000;

/// What a run did (kept as the job's result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Keys disabled past their expiry.
    pub disabled: u64,
    /// Previous secrets erased after their grace period.
    pub grace_ended: u64,
    /// Ticks missed before this run (catch-up `once`).
    pub missed_ticks: u64,
}

impl Handler for SweepApiKeys {
    type Output = Summary;

    async fn run(self, ctx: &JobContext, handle: &JobHandle) -> Result<Summary, BoxDynError> {
        sweeps::platform_only(<Self as shared::jobs::Job>::QUEUE, self.project_id)?;
        let disabled = sweeps::drain(handle, "sweep_api_keys", "disable", BATCH, u32::MAX, || {
            db::api_keys::disable_expired(&ctx.pool, BATCH as i64)
        })
        .await?;
        let grace_ended =
            sweeps::drain(handle, "sweep_api_keys", "end_grace", BATCH, u32::MAX, || {
                db::api_keys::end_rotation_grace(&ctx.pool, BATCH as i64)
            })
            .await?;
        tracing::info!(disabled, grace_ended, "API keys swept");
        Ok(Summary {
            disabled,
            grace_ended,
            missed_ticks: self.run.missed,
        })
    }
}
