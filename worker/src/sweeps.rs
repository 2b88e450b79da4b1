//! What the sweep jobs share: the platform-only check on their payload, progress reports,
//! and running a batched step until it is done.
//!
//! The sweeps (`expire_invitations`, `sweep_sessions`, `apply_retention`, `sweep_api_keys`) are
//! platform-wide jobs on schedules (`shared::schedule`): their `projectId` is the nil id
//! ([`PLATFORM`]) and each works across every project itself. Each is idempotent (it acts only
//! on rows still past their date, so a re-run finds nothing more to do), reports progress
//! while it runs and returns a summary as its result.

use std::future::Future;

use apalis_core::error::{AbortError, BoxDynError};
use shared::{queue::backend::JobHandle, schedule::PLATFORM};
use uuid::Uuid;

/// Refuses a sweep whose payload names a project (a sweep is platform-wide): the job goes
/// dead with this reason.
pub fn platform_only(queue: &str, project_id: Uuid) -> Result<(), BoxDynError> {
    if project_id != PLATFORM {
        return Err(AbortError::new(format!(
            "{queue} is a platform-wide sweep: its projectId must be the nil id \
             (00000000-0000-0000-0000-000000000000), not {project_id}"
        ))
        .into());
    }
    Ok(())
}

/// Reports progress (`done` units so far; `step` names what is being done). A failed report is
/// logged, never fatal.
pub async fn progress(handle: &JobHandle, step: &str, done: u64) {
    let value = serde_json::json!({ "step": step, "done": done, "unit": "rows" });
    if let Err(e) = handle.progress(&value).await {
        tracing::warn!(error = %e, "could not record progress");
    }
}

/// Runs `batch` until it returns fewer than `size` rows or `max_batches` ran, reporting
/// progress after each and counting `comet_sweep_rows_total{sweep, step}`; returns the total.
pub async fn drain<F, Fut>(
    handle: &JobHandle,
    sweep: &'static str,
    step: &'static str,
    size: u64,
    max_batches: u32,
    mut batch: F,
) -> anyhow::Result<u64>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<u64, sqlx::Error>>,
{
    let mut total = 0;
    for _ in 0..max_batches {
        let n = batch().await?;
        total += n;
        metrics::counter!("comet_sweep_rows_total", "sweep" => sweep, "step" => step).increment(n);
        progress(handle, step, total).await;
        if n < size {
            break;
        }
    }
    Ok(total)
}
