//! Runs `bucket_monitor`: settles the transfer buckets whose low-balance state is stale, in
//! batches of [`BATCH`] rows, each one transaction of set-based statements
//! ([`db::buckets::settle_stale`]: one `UPDATE` over the stale rows of the
//! `transfer_buckets_stale` index; then [`db::buckets::emit`]: the crossings' events and their
//! `process_event` jobs, two `INSERT`s whatever their number). Nothing loops per bucket, and
//! only the buckets whose state changes are written.
//!
//! Safe beside movements and other sweeps: the stale rows are locked `SKIP LOCKED` and the
//! predicate re-checked on the locked row, the state column is the one movements set under the
//! same lock, and each crossing's event has the key `bucket.low_balance:<bucket>:<n>`. A run
//! ends when a batch settles fewer rows than [`BATCH`]; progress is reported after each batch.

use std::time::Instant;

use anyhow::Context as _;
use apalis_core::error::BoxDynError;
use serde::Serialize;
use shared::{db, jobs::BucketMonitor, queue::backend::JobHandle};

use super::Handler;
use crate::context::JobContext;

/// Most buckets one transaction settles.
pub const BATCH: i64 = 5_000;

/// What a run did (kept as the job's result).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// Buckets whose state changed.
    pub changed: usize,
    /// Of which crossed below their threshold (one `bucket.low_balance` event each).
    pub alerted: usize,
    /// Of which were re-armed.
    pub rearmed: usize,
    /// Transactions committed (batches).
    pub batches: usize,
    /// How long the run took.
    pub elapsed_ms: u64,
}

impl Handler for BucketMonitor {
    type Output = Outcome;

    async fn run(self, ctx: &JobContext, handle: &JobHandle) -> Result<Outcome, BoxDynError> {
        Ok(sweep(ctx, &self, Some(handle)).await?)
    }
}

/// Settles every stale bucket of the job's scope; see the module docs. `handle` (absent when a
/// test calls it directly) receives progress and the request id.
#[tracing::instrument(name = "bucket_monitor", skip_all, fields(project_id = %job.project_id))]
pub async fn sweep(
    ctx: &JobContext,
    job: &BucketMonitor,
    handle: Option<&JobHandle>,
) -> anyhow::Result<Outcome> {
    let started = Instant::now();
    let opts = shared::jobs::EnqueueOptions {
        request_id: handle.and_then(|h| h.request_id.clone()),
        ..Default::default()
    };
    let mut outcome = Outcome::default();
    loop {
        let mut tx = ctx.pool.begin().await.context("Failed to begin")?;
        let settled = db::buckets::settle_stale(&mut tx, job.scope(), BATCH)
            .await
            .context("Failed to settle stale buckets")?;
        db::buckets::emit(&mut tx, &settled.crossings, &opts)
            .await
            .context("Failed to raise the low-balance events")?;
        tx.commit().await.context("Failed to commit a batch")?;
        if !settled.crossings.is_empty() {
            ctx.outbox.wake();
        }
        outcome.batches += 1;
        outcome.changed += settled.changed;
        outcome.alerted += settled.crossings.len();
        outcome.rearmed += settled.changed - settled.crossings.len();
        metrics::counter!("comet_bucket_monitor_changed_total", "change" => "alerted")
            .increment(settled.crossings.len() as u64);
        metrics::counter!("comet_bucket_monitor_changed_total", "change" => "rearmed")
            .increment((settled.changed - settled.crossings.len()) as u64);
        if settled.changed < BATCH as usize {
            break;
        }
        if let Some(h) = handle {
            let progress = serde_json::json!({"done": outcome.changed, "unit": "buckets"});
            if let Err(e) = h.progress(&progress).await {
                tracing::warn!(error = %e, "could not report progress");
            }
        }
    }
    outcome.elapsed_ms = started.elapsed().as_millis() as u64;
    metrics::histogram!("comet_bucket_monitor_duration_seconds")
        .record(started.elapsed().as_secs_f64());
    tracing::info!(
        changed = outcome.changed,
        alerted = outcome.alerted,
        rearmed = outcome.rearmed,
        elapsed_ms = outcome.elapsed_ms,
        "bucket monitor swept"
    );
    Ok(outcome)
}
