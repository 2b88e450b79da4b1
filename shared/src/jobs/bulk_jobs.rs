//! `bulk_jobs`: a bulk job control too large for one request (`POST /api/v1/jobs/bulk` over
//! [`IN_REQUEST`] jobs): retries the dead jobs, or deletes the finished jobs, that an archive
//! filter matches, reporting progress as it goes.
//!
//! The payload carries the filter (a query, not data) and its scope. At least once: an attempt
//! cut short runs again and matches only what is left (a retried job leaves the archive's dead
//! set; a deleted one leaves the archive), so nothing is acted on twice.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use super::Job;
use crate::{
    db::job_archive::{self, ArchiveFilter, Target},
    queue::{JobState, QueueError, Queues, RetryPolicy},
    schedule::PLATFORM,
};

/// Up to this many jobs, the API acts in the request; past it, a `bulk_jobs` job does.
pub const IN_REQUEST: i64 = 1_000;

/// Most jobs one bulk action touches (the API refuses a larger set: narrow the filter).
pub const MAX_BULK_JOBS: i64 = 100_000;

/// What a bulk job control does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum BulkJobAction {
    /// Run the matched dead jobs again with fresh attempts.
    Retry,
    /// Delete the matched finished jobs from Redis and the archive.
    Delete,
}

/// Why acting on one job failed.
#[derive(Debug, thiserror::Error)]
pub enum ActError {
    /// Redis.
    #[error(transparent)]
    Queue(#[from] QueueError),
    /// Postgres.
    #[error("job archive: {0}")]
    Database(#[from] sqlx::Error),
}

impl BulkJobAction {
    /// Acts on one matched job; `scope` is the caller's project (`None`: every project).
    /// Returns false when the job changed state since it was archived (left alone: skipped).
    pub async fn apply(
        self,
        pool: &PgPool,
        queues: &Queues,
        target: &Target,
        scope: Option<Uuid>,
    ) -> Result<bool, ActError> {
        match self {
            Self::Retry => Ok(queues.retry_dead(&target.queue, target.job_id).await?),
            Self::Delete => {
                let state = queues.delete_finished(&target.queue, target.job_id).await?;
                let finished = matches!(
                    state,
                    None | Some(JobState::Completed | JobState::Dead | JobState::Cancelled)
                );
                Ok(finished && job_archive::delete(pool, scope, target.job_id).await?)
            }
        }
    }
}

/// Retries or deletes, in the background, the jobs `filter` matches (see the module docs).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkJobs {
    /// The tenant whose jobs it acts on, or the platform's id for a platform operator's action
    /// over every project (`filter.projectId` may still narrow it).
    pub project_id: Uuid,
    /// `retry` or `delete`.
    pub action: BulkJobAction,
    /// Which jobs (the caller's project is already in it for a project's caller).
    pub filter: ArchiveFilter,
    /// Who asked (a user id, or a token's subject), for the log.
    pub requested_by: String,
}

impl BulkJobs {
    /// The project the action is confined to (`None`: every project).
    pub fn scope(&self) -> Option<Uuid> {
        (self.project_id != PLATFORM).then_some(self.project_id)
    }
}

impl Job for BulkJobs {
    const QUEUE: &'static str = "bulk_jobs";
    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 5,
        backoff_base: Duration::from_secs(2),
        backoff_cap: Duration::from_secs(60),
        timeout: Duration::from_secs(1800),
        concurrency: 2,
        prefetch: 0,
    };
    fn project_id(&self) -> Uuid {
        self.project_id
    }
}
