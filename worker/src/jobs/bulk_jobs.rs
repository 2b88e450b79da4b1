//! Runs `bulk_jobs`: retries or deletes, job by job through the same scripts as the single-job
//! routes, the jobs an archive filter matches (at most `MAX_BULK_JOBS`), newest first, reporting
//! `{done, skipped, total}` as progress every [`PROGRESS_EVERY`] jobs and as its result.
//!
//! A retry that would take a project past its open-jobs quota stops before that project's job
//! (the rest of the set is still acted on) and is reported as `overQuota`; the API checked the
//! quota when it accepted the action, so this only happens when the project filled up since.

use std::collections::HashMap;

use apalis_core::error::BoxDynError;
use serde::Serialize;
use shared::{

    jobs::{BulkJobAction, BulkJobs, MAX_BULK_JOBS},
    queue::backend::JobHandle,
};
use uuid::Uuid;

use super::Handler;
use crate::context::JobContext;

/// Progress is written every this many jobs.
const PROGRESS_EVERY: usize = 200;

/// What the action did (the job's result).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    /// Jobs the filter matched when the attempt began.
    pub total: u64,
    /// Jobs acted on.
    pub done: u64,
    /// Jobs that changed state since they were archived (left alone).
    pub skipped: u64,
    /// Dead jobs not retried because their project was at its open-jobs quota.
    pub over_quota: u64,
}

impl Handler for BulkJobs {
    type Output = Summary;

    async fn run(self, ctx: &JobContext, handle: &JobHandle) -> Result<Summary, BoxDynError> {
        let mut filter = self.filter.clone();
        // a project's action never leaves its project, whatever the payload's filter says
        if let Some(project) = self.scope() {
            filter.project_id = Some(project);
        }
        let targets = shared::jobs::targets(
            &ctx.pool,
            &ctx.queues,
            self.action,
            &filter,
            MAX_BULK_JOBS,
        )
        .await?;
        let mut s = Summary {
            total: targets.len() as u64,
            ..Summary::default()
        };
        let quota = ctx.settings.queue.max_open_per_project;
        let mut open: HashMap<Uuid, u64> = HashMap::new();
        for (i, t) in targets.iter().enumerate() {
            let project = t.project_id.unwrap_or_default();
            if self.action == BulkJobAction::Retry {
                let n = match open.get(&project) {
                    Some(n) => *n,
                    None => {
                        let n = ctx.queues.open_jobs(shared::jobs::QUEUES, project).await?;
                        open.insert(project, n);
                        n
                    }
                };
                if n >= quota {
                    s.over_quota += 1;
                    continue;
                }
            }
            if self
                .action
                .apply(&ctx.pool, &ctx.queues, t, self.scope())
                .await?
            {
                s.done += 1;
                // a retried job is open again (a skipped one opened nothing)
                if let Some(n) = open.get_mut(&project) {
                    *n += 1;
                }
            } else {
                s.skipped += 1;
            }
            if (i + 1) % PROGRESS_EVERY == 0 {
                handle.progress(&serde_json::to_value(s)?).await?;
            }
        }
        handle.progress(&serde_json::to_value(s)?).await?;
        tracing::info!(action = ?self.action, total = s.total, done = s.done,
            skipped = s.skipped, over_quota = s.over_quota, by = %self.requested_by,
            "bulk job action");
        Ok(s)
    }
}
