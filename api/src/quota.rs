//! The per-project quota on enqueuing: [`admit`], which every route that enqueues a job calls
//! first, and the per-project gauges of `/metrics` ([`render_gauges`]).
//!
//! A project may have at most `JOB_MAX_OPEN_PER_PROJECT` open jobs (waiting, delayed, running,
//! retrying, or still in the outbox) and may enqueue at most `RATE_LIMIT_ENQUEUE_PER_PROJECT`
//! per window; past either, the route answers 429 with `Retry-After` (`quota_exceeded` or
//! `rate_limited`), so one tenant cannot fill Redis (`noeviction`) and stop every other.
//!
//! Who calls [`admit`]: `POST /api/v1/jobs/ping`, `/jobs/{id}/retry` (a retried dead job is open
//! again), `/users/invite` and `/users/{id}/resend-invitation`; every later route that enqueues
//! (imports, …) must too, with [`admit_jobs`] when one request enqueues many. The event routes
//! (`/events`, `/events/batch`) have a per-project rate of their own and call
//! [`check_open_jobs`] (the quota alone) before it. Not [`crate::revocation::revoke_sessions`]: revoking a user's
//! tokens (deactivation, role changes) is a security action, and whoever filled a project's
//! quota (a leaked token with `jobs:write`) must not be able to stop the admins from locking
//! that very token out. Its jobs are still counted as open.
//!
//! The check reads the counts, then the route enqueues: requests of one project in flight at
//! once may all pass, so the quota can be overshot by the requests admitted within the moment
//! between check and enqueue (at most one window of `RATE_LIMIT_ENQUEUE_PER_PROJECT`).
//!
//! The outbox half is counted in Postgres, and each count is reused for
//! [`OUTBOX_COUNT_MAX_AGE`] per project in each API process ([`OutboxCounts`]), with the jobs
//! this process admitted meanwhile added to it, so the estimate errs high (the relay drains the
//! outbox meanwhile, and a relayed job is then counted in Redis too) and other processes'
//! admissions are seen at the next count. It is reused in two cases only:
//!
//! - the project is far from its quota: the estimate with Redis's exact count is at most half
//!   of `JOB_MAX_OPEN_PER_PROJECT`, so the exact figure could only change the answer if the
//!   other processes had admitted the other half within [`OUTBOX_COUNT_MAX_AGE`]. Counting on
//!   every request was one of the three statements of every single event (the key's look-up,
//!   this count, the insert) at 1,000 events/s (BENCHMARKS.md, "Notifications");
//! - the outbox holds a backlog of at least [`OUTBOX_COUNT_MEMO_MIN`] rows (the relay lags or
//!   is down): counting per request then cost a scan of up to `JOB_MAX_OPEN_PER_PROJECT` index
//!   entries, the busiest statement of single-event ingestion (BENCHMARKS.md).
//!
//! Near the quota with a short outbox, every check counts, exactly.

use std::{
    collections::HashMap,
    fmt::Write as _,
    sync::Mutex,
    time::{Duration, Instant},
};

use uuid::Uuid;

use crate::{
    AppState,
    error::{ApiError, Result},
    rate_limit,
};

/// `Retry-After` of a `quota_exceeded`: jobs finish at their own pace, so no exact time can be
/// given; half a minute is long enough not to hammer the API and short enough for a backlog
/// that drains.
pub const QUOTA_RETRY_AFTER_SECS: u64 = 30;

/// How many projects the `comet_project_open_jobs` gauge names (the most loaded ones), so its
/// series stay few however many projects there are.
pub const METRIC_TOP_PROJECTS: usize = 10;

/// How long the quota waits for Postgres to count the project's outbox rows before going on
/// without them (a route that follows no database write, like `ping`, keeps working while
/// Postgres is down).
const OUTBOX_COUNT_TIMEOUT: Duration = Duration::from_millis(500);

/// How long one count of a project's outbox rows is used (plus this process's admissions).
pub const OUTBOX_COUNT_MAX_AGE: Duration = Duration::from_millis(250);

/// The smallest outbox backlog whose count is reused (see the module docs): below it every
/// check counts, exactly.
pub const OUTBOX_COUNT_MEMO_MIN: u64 = 1_000;

/// Projects whose counts are kept; past it the memo starts over (a bound on memory).
const OUTBOX_COUNT_PROJECTS: usize = 10_000;

/// Each API process's memo of projects' outbox counts (see the module docs).
#[derive(Debug, Default)]
pub struct OutboxCounts {
    entries: Mutex<HashMap<Uuid, (Instant, u64)>>,
}

impl OutboxCounts {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, (Instant, u64)>> {
        // a panic while holding the lock leaves a usable map
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The project's last count with this process's admissions since, if it is fresh and may
    /// stand in for a count (see the module docs): a backlog, or, with `in_redis` open jobs,
    /// at most half of `limit`.
    fn fresh(&self, project: Uuid, in_redis: u64, limit: u64) -> Option<u64> {
        self.lock()
            .get(&project)
            .filter(|(at, _)| at.elapsed() < OUTBOX_COUNT_MAX_AGE)
            .map(|(_, n)| *n)
            .filter(|&n| n >= OUTBOX_COUNT_MEMO_MIN || in_redis.saturating_add(n) <= limit / 2)
    }

    /// Keeps a fresh count.
    fn store(&self, project: Uuid, count: u64) {
        let mut entries = self.lock();
        if entries.len() >= OUTBOX_COUNT_PROJECTS {
            entries.clear();
        }
        entries.insert(project, (Instant::now(), count));
    }

    /// Counts `jobs` admitted now against the project's last count.
    fn admitted(&self, project: Uuid, jobs: u64) {
        if let Some((_, n)) = self.lock().get_mut(&project) {
            *n = n.saturating_add(jobs);
        }
    }
}

/// Admits one job of `project`: refuses with 429 `quota_exceeded` when the project already has
/// `JOB_MAX_OPEN_PER_PROJECT` open jobs, then counts the job against the project's enqueue rate
/// (429 `rate_limited` past it). 503 when Redis does not answer. Call it before enqueuing (and
/// before the transaction that enqueues, for the outbox).
pub async fn admit(s: &AppState, project: Uuid) -> Result<()> {
    admit_jobs(s, project, 1).await
}

/// [`admit`] for a request that enqueues `jobs` jobs at once (a batch of events, an import):
/// refused unless all of them fit under the quota, and all counted against the enqueue rate.
/// A batch larger than the rate's count per window never passes: such a route bounds its batch
/// size below `RATE_LIMIT_ENQUEUE_PER_PROJECT`'s count, or enqueues one job that fans out.
pub async fn admit_jobs(s: &AppState, project: Uuid, jobs: u64) -> Result<()> {
    let jobs = jobs.max(1);
    check_open_jobs(s, project, jobs).await?;
    rate_limit::check_n(
        s,
        "enqueue-project",
        &project.to_string(),
        &s.settings.queue.enqueue_per_project,
        jobs,
    )
    .await
}

/// The open-jobs half of [`admit_jobs`] alone, counting nothing: 429 `quota_exceeded` unless
/// `jobs` more fit under `JOB_MAX_OPEN_PER_PROJECT`. For a route whose own per-project rate
/// stands in for the enqueue rate (events: `RATE_LIMIT_EVENTS_PER_PROJECT`, with `RateLimit-*`
/// headers and batches of 1000).
pub async fn check_open_jobs(s: &AppState, project: Uuid, jobs: u64) -> Result<()> {
    let limit = s.settings.queue.max_open_per_project;
    let open = open_jobs(s, project, limit).await?;
    if open.saturating_add(jobs) > limit {
        tracing::info!(%project, open, jobs, limit, "enqueue refused: project at its open-jobs quota");
        return Err(ApiError::QuotaExceeded {
            limit,
            retry_after: QUOTA_RETRY_AFTER_SECS,
        });
    }
    s.outbox_counts.admitted(project, jobs);
    Ok(())
}

/// The project's open jobs as the quota counts them: those in Redis (exact, kept by the queue
/// scripts) plus its rows still in the outbox (counted up to `limit`; a count less than
/// [`OUTBOX_COUNT_MAX_AGE`] old is reused when the project is far from `limit` or the outbox
/// holds a backlog). A job being relayed may
/// be counted twice for a moment; that errs on the side of refusing.
async fn open_jobs(s: &AppState, project: Uuid, limit: u64) -> Result<u64> {
    let in_redis = s.queues.open_jobs(shared::jobs::QUEUES, project).await?;
    if in_redis >= limit {
        return Ok(in_redis);
    }
    if let Some(pending) = s.outbox_counts.fresh(project, in_redis, limit) {
        return Ok(in_redis + pending);
    }
    let at_most = i64::try_from(limit).unwrap_or(i64::MAX);
    let pending = tokio::time::timeout(
        OUTBOX_COUNT_TIMEOUT,
        shared::db::outbox::pending_of_project(&s.pool, project, at_most),
    )
    .await;
    let pending = match pending {
        Ok(Ok(n)) => {
            let n = u64::try_from(n).unwrap_or(0);
            s.outbox_counts.store(project, n);
            n
        }
        // the outbox holds only jobs of routes that passed this check themselves (and
        // revocations), so going on without them lets through at most that many
        Ok(Err(e)) => {
            tracing::warn!(error = %e, "quota: could not count the outbox; going on without it");
            0
        }
        Err(_) => {
            tracing::warn!("quota: counting the outbox timed out; going on without it");
            0
        }
    };
    Ok(in_redis + pending)
}

/// The per-project gauges, in the Prometheus text format, read from Redis now:
/// `comet_project_open_jobs{project}` for the [`METRIC_TOP_PROJECTS`] projects with the most
/// open jobs (a project that drops out of the top is simply absent from the next scrape, so
/// the series stay bounded; bounded work too, see `Queues::top_projects`), `comet_open_jobs`
/// (every open job) and
/// `comet_project_open_jobs_quota` (`JOB_MAX_OPEN_PER_PROJECT`, to alert on a project near it).
pub async fn render_gauges(s: &AppState) -> Result<String> {
    let queues = shared::jobs::QUEUES;
    let top = s
        .queues
        .top_projects(queues, METRIC_TOP_PROJECTS)
        .await?
        .projects;
    let total = s.queues.open_jobs_total(queues).await?;
    let mut out = String::new();
    // writing to a String cannot fail
    let _ = writeln!(
        out,
        "# HELP comet_project_open_jobs Open jobs (waiting, delayed, active, retrying) of the \
         {METRIC_TOP_PROJECTS} projects with the most."
    );
    let _ = writeln!(out, "# TYPE comet_project_open_jobs gauge");
    for p in &top {
        let _ = writeln!(
            out,
            "comet_project_open_jobs{{project=\"{}\"}} {}",
            p.project_id, p.open_jobs
        );
    }
    let _ = writeln!(
        out,
        "# HELP comet_open_jobs Open jobs (waiting, delayed, active, retrying) of every project."
    );
    let _ = writeln!(out, "# TYPE comet_open_jobs gauge");
    let _ = writeln!(out, "comet_open_jobs {total}");
    let _ = writeln!(
        out,
        "# HELP comet_project_open_jobs_quota Most open jobs a project may have \
         (JOB_MAX_OPEN_PER_PROJECT)."
    );
    let _ = writeln!(out, "# TYPE comet_project_open_jobs_quota gauge");
    let _ = writeln!(
        out,
        "comet_project_open_jobs_quota {}",
        s.settings.queue.max_open_per_project
    );
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_count_is_reused_far_from_the_quota_or_for_a_backlog_with_admissions_added() {
        let memo = OutboxCounts::default();
        let (p, q, r) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        let limit = 100;
        assert_eq!(memo.fresh(p, 0, limit), None, "never counted");
        memo.store(p, 10);
        memo.admitted(p, 3);
        assert_eq!(memo.fresh(p, 0, limit), Some(13), "far from the quota");
        assert_eq!(
            memo.fresh(p, 37, limit),
            Some(13),
            "50 open: half the quota"
        );
        assert_eq!(memo.fresh(p, 38, limit), None, "past half: counted again");
        memo.admitted(r, 3);
        assert_eq!(
            memo.fresh(r, 0, limit),
            None,
            "admissions alone make no count"
        );
        memo.store(q, OUTBOX_COUNT_MEMO_MIN);
        memo.admitted(q, 3);
        assert_eq!(
            memo.fresh(q, 0, 10 * OUTBOX_COUNT_MEMO_MIN),
            Some(OUTBOX_COUNT_MEMO_MIN + 3)
        );
        assert_eq!(
            memo.fresh(q, 0, OUTBOX_COUNT_MEMO_MIN),
            Some(OUTBOX_COUNT_MEMO_MIN + 3),
            "a backlog is reused near the quota too"
        );
        // a later short count near the quota is not reused
        memo.store(q, 2);
        assert_eq!(memo.fresh(q, 0, 3), None);
        memo.store(q, OUTBOX_COUNT_MEMO_MIN);
        std::thread::sleep(OUTBOX_COUNT_MAX_AGE);
        assert_eq!(
            memo.fresh(q, 0, 10 * OUTBOX_COUNT_MEMO_MIN),
            None,
            "too old"
        );
    }
}
