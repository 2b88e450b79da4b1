//! `bulk_jobs`: a bulk job control too large for one request (`POST /api/v1/jobs/bulk` over
//! [`IN_REQUEST`] jobs): retries the dead jobs, deletes the finished jobs, or cancels the open
//! jobs not yet started, that a filter matches, reporting progress as it goes; and
//! [`targets`], the matching both the API and the job use.
//!
//! The payload carries the filter (a query, not data) and its scope. At least once: an attempt
//! cut short runs again and matches only what is left (a retried job leaves the archive's dead
//! set, a deleted one the archive, a cancelled one the open states), so nothing is acted on
//! twice.

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
    /// Cancel the matched jobs that have not started (waiting, delayed, retrying).
    Cancel,
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
    /// The states the action takes (a filter naming another state matches nothing).
    pub fn states(self) -> &'static [JobState] {
        match self {
            Self::Retry => &[JobState::Dead],
            Self::Delete => &[JobState::Completed, JobState::Dead, JobState::Cancelled],
            Self::Cancel => &[JobState::Waiting, JobState::Delayed, JobState::Retrying],
        }
    }

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
            Self::Cancel => Ok(matches!(
                queues.cancel(&target.queue, target.job_id).await?,
                Some(JobState::Waiting | JobState::Delayed | JobState::Retrying)
            )),
        }
    }
}

/// The jobs `action` would act on among those `filter` matches, at most `limit` (the caller
/// asks for one more than it accepts, to tell "too many"): retry and delete read the job archive
/// newest first; cancel reads the open jobs in Redis (a project's from its open index, newest
/// first; every project's from each state's set, in run order, 1,000 at a time). A filter
/// naming a state the action does not take, or a finish time for a cancel (open jobs have not
/// finished), matches nothing.
pub async fn targets(
    pool: &PgPool,
    queues: &Queues,
    action: BulkJobAction,
    filter: &ArchiveFilter,
    limit: i64,
) -> Result<Vec<Target>, ActError> {
    let states: Vec<JobState> = match filter.state {
        Some(s) if action.states().contains(&s) => vec![s],
        Some(_) => return Ok(Vec::new()),
        None => action.states().to_vec(),
    };
    if action != BulkJobAction::Cancel {
        let mut f = filter.clone();
        if action == BulkJobAction::Retry {
            f.state = Some(JobState::Dead);
        }
        return Ok(job_archive::targets(pool, &f, limit).await?);
    }
    if filter.from.is_some() || filter.to.is_some() {
        return Ok(Vec::new());
    }
    let names: Vec<&str> = match (filter.queue.as_deref(), filter.kind.as_deref()) {
        (Some(q), Some(k)) if q != k => return Ok(Vec::new()),
        (Some(q), _) | (None, Some(q)) => vec![q],
        (None, None) => super::QUEUES.to_vec(),
    };
    let range = match filter.id_prefix.as_deref() {
        Some(p) => match job_archive::id_range(p) {
            Some(r) => Some(r),
            None => return Ok(Vec::new()),
        },
        None => None,
    };
    let error = filter.error.as_deref().map(str::to_lowercase);
    let wanted = |j: &crate::queue::JobRecord| {
        range.is_none_or(|(lo, hi)| j.id >= lo && j.id <= hi)
            && error.as_deref().is_none_or(|e| {
                j.last_error
                    .as_deref()
                    .is_some_and(|l| l.to_lowercase().contains(e))
            })
            && filter.fingerprint.as_deref().is_none_or(|f| {
                j.last_error
                    .as_deref()
                    .is_some_and(|l| crate::queue::fingerprint::fingerprint(l) == f)
            })
    };
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let mut out = Vec::new();
    // partition by partition: a selection needs no merged order (`queue::partitions`)
    let mut parts = Vec::new();
    for queue in names {
        parts.extend(queues.parts(queue).await?);
    }
    for queue in &parts {
        for state in &states {
            let mut offset = 0;
            loop {
                let want = limit + 1 - out.len().min(limit);
                let jobs = match filter.project_id {
                    // a project's open jobs are at most its quota: one read
                    Some(p) => queues.project_jobs_in(queue, p, Some(*state), 0, want).await?,
                    None => queues.list_in(queue, *state, offset, want.min(1000)).await?.0,
                };
                let read = jobs.len();
                out.extend(jobs.into_iter().filter(|j| wanted(j)).map(|j| Target {
                    job_id: j.id,
                    queue: j.queue,
                    project_id: j.project_id,
                }));
                if out.len() > limit {
                    out.truncate(limit);
                    return Ok(out);
                }
                offset += read;
                if filter.project_id.is_some() || read < want.min(1000) {
                    break;
                }
            }
        }
    }
    Ok(out)
}

/// Retries, deletes or cancels, in the background, the jobs `filter` matches (see the module docs).
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
