//! Runs `sweep_sessions`: removes the ids of sessions that no longer exist from the users'
//! session sets (`shared::sessions`, the only session data that does not expire by itself),
//! examining at most `SESSION_SWEEP_MAX_KEYS` sets per run with `SCAN` (never `KEYS`) and
//! resuming the next run where this one stopped.
//!
//! Idempotent: removing an id already removed changes nothing.

use anyhow::Context as _;
use apalis_core::error::BoxDynError;
use serde::Serialize;
use shared::{jobs::SweepSessions, queue::backend::JobHandle};

use super::Handler;
use crate::{context::JobContext, sweeps};

/// `SCAN`'s `COUNT` hint per step.
const STEP: usize = 500;

/// What a run did (kept as the job's result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Session sets examined.
    pub sets: u64,
    /// Dead session ids removed from them.
    pub removed: u64,
    /// Whether the scan went all the way round (else the next run goes on).
    pub completed_pass: bool,
}

impl Handler for SweepSessions {
    type Output = Summary;

    async fn run(self, ctx: &JobContext, handle: &JobHandle) -> Result<Summary, BoxDynError> {
        sweeps::platform_only(<Self as shared::jobs::Job>::QUEUE, self.project_id)?;
        Ok(sweep(ctx, handle).await?)
    }
}

async fn sweep(ctx: &JobContext, handle: &JobHandle) -> anyhow::Result<Summary> {
    let max = u64::from(ctx.settings.retention.session_sweep_max_keys);
    let mut cursor = ctx
        .sessions
        .sweep_cursor()
        .await
        .context("Failed to read the sweep cursor")?;
    let (mut sets, mut removed) = (0, 0);
    let completed_pass = loop {
        let (next, seen, gone) = ctx
            .sessions
            .sweep_session_sets(cursor, STEP)
            .await
            .context("Failed to sweep session sets")?;
        sets += seen;
        removed += gone;
        cursor = next;
        metrics::counter!("comet_sweep_rows_total", "sweep" => "sweep_sessions", "step" => "remove")
            .increment(gone);
        sweeps::progress(handle, "scan", sets).await;
        if cursor == 0 {
            break true;
        }
        if sets >= max {
            break false;
        }
    };
    ctx.sessions
        .set_sweep_cursor(cursor)
        .await
        .context("Failed to store the sweep cursor")?;
    tracing::info!(sets, removed, completed_pass, "session sets swept");
    Ok(Summary {
        sets,
        removed,
        completed_pass,
    })
}
