//! Runs `apply_retention`: deletes what is older than its retention setting, table by table, in
//! batches of `RETENTION_BATCH` rows, each batch one short statement (its own transaction), at
//! most `RETENTION_MAX_BATCHES` per table per run (the next run goes on):
//!
//! - the audit log, older than `AUDIT_RETENTION_DAYS` (unset: kept);
//! - notifications older than `NOTIFICATION_RETENTION_DAYS`: their recipients, then their
//!   delivery attempts, then the notifications (webview actions cascade);
//! - processed events older than `EVENT_RETENTION_DAYS` that no notification refers to;
//! - inbox feed entries older than `INBOX_FEED_RETENTION_DAYS`;
//! - schedule runs older than `SCHEDULER_HISTORY_DAYS` (each schedule's latest kept);
//! - archived jobs (`job_archive`): completed ones finished longer ago than
//!   `JOB_COMPLETED_RETENTION_SECS`, dead and cancelled ones than `JOB_DEAD_RETENTION_SECS` (the
//!   retention Redis applies to the same jobs);
//! - dead-job alert windows (`job_dead_alerts`) raised and older than `JOB_DEAD_RETENTION_SECS`.
//!
//! Cut-offs are computed once per run. Idempotent: a re-run deletes only what is still past.

use apalis_core::error::BoxDynError;
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::{db::retention, jobs::ApplyRetention, queue::backend::JobHandle};

use super::Handler;
use crate::{context::JobContext, sweeps};

/// Rows deleted, per table (kept as the job's result).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Audit log entries.
    pub audit_log: u64,
    /// Notification recipients.
    pub notification_recipients: u64,
    /// Delivery attempts.
    pub delivery_attempts: u64,
    /// Notifications.
    pub notifications: u64,
    /// Events.
    pub events: u64,
    /// Inbox feed entries.
    pub inbox_feed: u64,
    /// Schedule runs.
    pub schedule_runs: u64,
    /// Archived jobs.
    pub archived_jobs: u64,
    /// Dead-job alert windows raised.
    pub dead_job_alerts: u64,
    /// Ticks missed before this run (catch-up `once`).
    pub missed_ticks: u64,
}

impl Handler for ApplyRetention {
    type Output = Summary;

    async fn run(self, ctx: &JobContext, handle: &JobHandle) -> Result<Summary, BoxDynError> {
        sweeps::platform_only(<Self as shared::jobs::Job>::QUEUE, self.project_id)?;
        let mut summary = apply(ctx, handle).await?;
        summary.missed_ticks = self.run.missed;
        Ok(summary)
    }
}

/// `days` ago, or `None` to keep.
fn cutoff(days: Option<u32>) -> Option<DateTime<Utc>> {
    days.map(|d| Utc::now() - chrono::Duration::days(i64::from(d)))
}

async fn apply(ctx: &JobContext, handle: &JobHandle) -> anyhow::Result<Summary> {
    let r = &ctx.settings.retention;
    let (size, max) = (u64::from(r.batch), r.max_batches);
    let batch = i64::from(r.batch);
    let pool = &ctx.pool;
    let mut s = Summary::default();
    macro_rules! step {
        ($field:ident, $days:expr) => {
            if let Some(before) = cutoff($days) {
                s.$field = sweeps::drain(handle, "apply_retention", stringify!($field), size, max, || {
                    retention::$field(pool, before, batch)
                })
                .await?;
            }
        };
    }
    step!(audit_log, r.audit_days);
    step!(notification_recipients, r.notification_days);
    step!(delivery_attempts, r.notification_days);
    step!(notifications, r.notification_days);
    step!(events, r.event_days);
    step!(inbox_feed, r.inbox_feed_days);
    step!(schedule_runs, r.schedule_run_days);
    let q = &ctx.settings.queue;
    let (done_before, dead_before) = (
        Utc::now() - q.completed_retention,
        Utc::now() - q.dead_retention,
    );
    s.archived_jobs = sweeps::drain(handle, "apply_retention", "archived_jobs", size, max, || {
        shared::db::job_archive::expire(pool, done_before, dead_before, batch)
    })
    .await?;
    s.dead_job_alerts =
        sweeps::drain(handle, "apply_retention", "dead_job_alerts", size, max, || {
            shared::db::job_dead_alerts::expire(pool, dead_before, batch)
        })
        .await?;
    tracing::info!(summary = ?s, "retention applied");
    Ok(s)
}
