//! Jobs: status for the dashboard that enqueued them, retry and cancel, and the fleet `ping`.
//!
//! Every look-up is scoped to the caller's project: another project's job is a 404.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    domain::{FieldErrors, IdempotencyKey, parse_instant, within},
    jobs::{EnqueueOptions, Job, MAX_SLEEP_MS, Ping},
    queue::{JobRecord, JobState},
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

mod bulk;
mod search;

use crate::{
    AppState,
    auth::{Authorized, JobsRead, JobsWrite},
    envelope::{Accepted, ApiJson, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, EnqueueRefusals, Result},
    extract::{PathId, ValidJson, Validate},
    quota, request_id,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(search::search_jobs))
        .routes(routes!(bulk::bulk_jobs))
        .routes(routes!(search::failure_groups))
        .routes(routes!(get_job))
        .routes(routes!(retry_job))
        .routes(routes!(cancel_job))
        .routes(routes!(delete_job))
        .routes(routes!(run_job_now))
        .routes(routes!(enqueue_ping))
}

/// A job accepted: its queue, and whether it is new.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobQueued {
    /// Its queue.
    pub queue: String,
    /// False when an earlier job with the same idempotency key was returned.
    pub created: bool,
}

fn accepted(job_id: Uuid, queue: &str, created: bool) -> Accepted<JobQueued> {
    Accepted::job(
        job_id,
        JobQueued {
            queue: queue.to_owned(),
            created,
        },
    )
}

/// The projects whose jobs a caller may see or act on: `None` (every project) for a platform
/// operator holding `operator_permission` (`queues:read` to see, `queues:write` to act), else
/// the caller's own project.
pub(crate) fn job_scope(claims: &shared::auth::Claims, operator_permission: &str) -> Option<Uuid> {
    (!(claims.platform && claims.has(operator_permission))).then_some(claims.project_id)
}

/// A job by id, wherever it is (Redis, the outbox, the archive), if `scope` may see it: another
/// project's job is a 404.
async fn find_job(s: &AppState, scope: Option<Uuid>, id: Uuid) -> Result<JobRecord> {
    // Redis, the outbox, then Redis again (a job relayed between the first two reads)
    for second_look in [false, true] {
        if let Some(job) = s.queues.find_job(shared::jobs::QUEUES, id).await? {
            if scope.is_none() || job.project_id == scope {
                return Ok(job);
            }
            return Err(ApiError::NotFound("job"));
        }
        if !second_look
            && let Some(job) = shared::db::outbox::pending_job(&s.pool, scope, id).await?
        {
            return Ok(job);
        }
    }
    // a completed job dropped from Redis once archived (`JOB_REDIS_COMPLETED`)
    shared::db::job_archive::get(&s.pool, scope, id)
        .await?
        .ok_or(ApiError::NotFound("job"))
}

/// A job's status: state, attempts, every attempt's error, progress and result.
///
/// Permission: `jobs:read`. Jobs of other projects are not found, except by platform
/// operators holding `queues:read`.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    security(("bearer" = ["jobs:read"])),
    responses((status = 200, body = inline(Data<JobRecord>)),
              (status = 400, body = crate::error::ErrorEnvelope),
              (status = 404, body = crate::error::ErrorEnvelope),
              AuthRefusals))]
async fn get_job(
    auth: Authorized<JobsRead>,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<ApiJson<Data<JobRecord>>> {
    Ok(ApiJson(Data::new(
        find_job(&s, job_scope(&auth.claims, "queues:read"), id).await?,
    )))
}

/// Runs a dead job again with a fresh set of attempts (its error history is kept).
///
/// Permission: `jobs:write` (platform operators with `queues:write`: any project's job). 409
/// unless the job is dead. The job is open again, so it passes the project's quota like a new one: 429 with `Retry-After` past the enqueue rate or at
/// `JOB_MAX_OPEN_PER_PROJECT` open jobs.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    security(("bearer" = ["jobs:write"])),
    responses((status = 202, body = inline(Data<Accepted<JobQueued>>),
               headers(("Location" = String, description = "The job's status URL"))),
              (status = 404, body = crate::error::ErrorEnvelope),
              (status = 400, body = crate::error::ErrorEnvelope),
              (status = 409, body = crate::error::ErrorEnvelope),
              EnqueueRefusals,
              AuthRefusals))]
async fn retry_job(
    auth: Authorized<JobsWrite>,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<Accepted<JobQueued>> {
    let job = find_job(&s, job_scope(&auth.claims, "queues:write"), id).await?;
    let not_dead = |state: JobState| {
        ApiError::Conflict(format!(
            "only dead jobs can be retried; this one is {}",
            state.as_str()
        ))
    };
    if job.state != JobState::Dead {
        return Err(not_dead(job.state));
    }
    quota::admit(&s, job.project_id.unwrap_or(auth.claims.project_id)).await?;
    if !s.queues.retry_dead(&job.queue, id).await? {
        return Err(not_dead(job.state));
    }
    tracing::info!(job_id = %id, queue = %job.queue, "dead job retried");
    Ok(accepted(id, &job.queue, false))
}

/// Cancels a job that has not started (waiting, delayed or retrying).
///
/// Permission: `jobs:write` (platform operators with `queues:write`: any project's job). 409
/// for a running or finished job.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    security(("bearer" = ["jobs:write"])),
    responses((status = 200, body = inline(Data<JobRecord>)),
              (status = 404, body = crate::error::ErrorEnvelope),
              (status = 400, body = crate::error::ErrorEnvelope),
              (status = 409, body = crate::error::ErrorEnvelope),
              AuthRefusals))]
async fn cancel_job(
    auth: Authorized<JobsWrite>,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<ApiJson<Data<JobRecord>>> {
    let job = find_job(&s, job_scope(&auth.claims, "queues:write"), id).await?;
    if job.state == JobState::Pending {
        return Err(ApiError::Conflict(
            "the job is still being handed to the queue; retry in a moment".into(),
        ));
    }
    let before = s.queues.cancel(&job.queue, id).await?;
    match before {
        Some(JobState::Waiting | JobState::Delayed | JobState::Retrying) => {}
        Some(other) => {
            return Err(ApiError::Conflict(format!(
                "only waiting, delayed or retrying jobs can be cancelled; this one is {}",
                other.as_str()
            )));
        }
        None => return Err(ApiError::NotFound("job")),
    }
    let job = s
        .queues
        .job(&job.queue, id)
        .await?
        .ok_or(ApiError::NotFound("job"))?;
    Ok(ApiJson(Data::new(job)))
}

/// Deletes a finished job (completed, dead or cancelled): from Redis and from the archive. Its
/// record is gone (`GET /api/v1/jobs/{id}` answers 404 afterwards).
///
/// Permission: `jobs:write` (platform operators with `queues:write`: any project's job). 409
/// for a job still open (cancel it first).
#[utoipa::path(delete, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    security(("bearer" = ["jobs:write"])),
    responses((status = 204, description = "Deleted"),
              (status = 400, body = crate::error::ErrorEnvelope),
              (status = 404, body = crate::error::ErrorEnvelope),
              (status = 409, body = crate::error::ErrorEnvelope),
              AuthRefusals))]
async fn delete_job(
    auth: Authorized<JobsWrite>,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<axum::http::StatusCode> {
    let scope = job_scope(&auth.claims, "queues:write");
    let job = find_job(&s, scope, id).await?;
    let finished = |state: JobState| {
        matches!(
            state,
            JobState::Completed | JobState::Dead | JobState::Cancelled
        )
    };
    if !finished(job.state) {
        return Err(ApiError::Conflict(format!(
            "only finished (completed, dead or cancelled) jobs can be deleted; this one is {}",
            job.state.as_str()
        )));
    }
    // Redis first: once the job is gone there, the archiver cannot copy it back
    if let Some(state) = s.queues.delete_finished(&job.queue, id).await?
        && !finished(state)
    {
        return Err(ApiError::Conflict(format!(
            "the job changed meanwhile; it is {} now",
            state.as_str()
        )));
    }
    shared::db::job_archive::delete(&s.pool, scope, id).await?;
    tracing::info!(job_id = %id, queue = %job.queue, "job deleted");
    Ok(axum::http::StatusCode::NO_CONTENT)
}

/// Runs a delayed or retrying job now, without waiting for its due time or backoff: it becomes
/// `waiting` in its place in the queue. Answers the job.
///
/// Permission: `jobs:write` (platform operators with `queues:write`: any project's job). 409
/// for a job in another state.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/run-now", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    security(("bearer" = ["jobs:write"])),
    responses((status = 200, body = inline(Data<JobRecord>)),
              (status = 400, body = crate::error::ErrorEnvelope),
              (status = 404, body = crate::error::ErrorEnvelope),
              (status = 409, body = crate::error::ErrorEnvelope),
              AuthRefusals))]
async fn run_job_now(
    auth: Authorized<JobsWrite>,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<ApiJson<Data<JobRecord>>> {
    let job = find_job(&s, job_scope(&auth.claims, "queues:write"), id).await?;
    let not_due = |state: JobState| {
        ApiError::Conflict(format!(
            "only delayed or retrying jobs can be run now; this one is {}",
            state.as_str()
        ))
    };
    if !matches!(job.state, JobState::Delayed | JobState::Retrying) {
        return Err(not_due(job.state));
    }
    match s.queues.run_now(&job.queue, id).await? {
        Some(JobState::Delayed | JobState::Retrying) => {}
        Some(other) => return Err(not_due(other)),
        None => return Err(ApiError::NotFound("job")),
    }
    tracing::info!(job_id = %id, queue = %job.queue, "job run now");
    let job = s
        .queues
        .job(&job.queue, id)
        .await?
        .ok_or(ApiError::NotFound("job"))?;
    Ok(ApiJson(Data::new(job)))
}

/// Options of a fleet ping; all optional (`{}` is a plain ping).
// The ranges are in the OpenAPI document; `validate` holds the API to them (the `openapi`
// tests check that the two agree).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PingRequest {
    /// Hold a worker slot this long (0..=60000 ms).
    #[serde(default)]
    #[schema(minimum = 0, maximum = 60000)]
    pub sleep_ms: u64,
    /// Fail attempts 1..=N with a retryable error (0..=100), to watch retries and backoff.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 100)]
    pub fail_attempts: u32,
    /// Fail with a permanent error: the job goes dead at once.
    #[serde(default)]
    pub fail_permanently: bool,
    /// Run no earlier than this time (RFC 3339 with a time zone), at most `JOB_MAX_DELAY_SECS`
    /// (90 days by default) ahead; a time past is now.
    #[schema(value_type = Option<DateTime<Utc>>)]
    pub run_at: Option<String>,
    /// Priority within the queue, -1000..=1000 (higher first).
    #[serde(default)]
    #[schema(minimum = -1000, maximum = 1000)]
    pub priority: i64,
    /// Attempts before the job goes dead (1..=100; default the queue's).
    #[schema(minimum = 1, maximum = 100)]
    pub max_attempts: Option<u32>,
    /// A second ping with the same key (within a day) returns the first job.
    #[schema(value_type = Option<IdempotencyKey>)]
    pub idempotency_key: Option<String>,
    /// On a partitioned queue (`QUEUE_PARTITIONS`), pings with the same key go to the same
    /// partition and wait in line there in order; without one a ping's partition follows its
    /// id. Bounded as an idempotency key.
    #[schema(value_type = Option<IdempotencyKey>)]
    pub partition_key: Option<String>,
}

/// Most attempts a ping may fail on purpose (`failAttempts`).
pub const MAX_FAIL_ATTEMPTS: u32 = 100;
/// Most attempts a ping may be given (`maxAttempts`).
pub const MAX_ATTEMPTS: u32 = 100;
/// Highest priority (and, negated, the lowest).
pub const MAX_PRIORITY: i64 = 1000;

/// A valid [`PingRequest`].
#[derive(Debug)]
pub struct PingOptions {
    sleep_ms: u64,
    fail_attempts: u32,
    fail_permanently: bool,
    run_at: Option<DateTime<Utc>>,
    priority: i16,
    max_attempts: Option<u32>,
    idempotency_key: Option<IdempotencyKey>,
    partition_key: Option<IdempotencyKey>,
}

impl Validate for PingRequest {
    type Valid = PingOptions;

    fn validate(self) -> Result<PingOptions, FieldErrors> {
        let mut errors = FieldErrors::new();
        let sleep_ms = errors.check("sleepMs", within(self.sleep_ms, 0..=MAX_SLEEP_MS));
        let fail_attempts = errors.check(
            "failAttempts",
            within(self.fail_attempts, 0..=MAX_FAIL_ATTEMPTS),
        );
        let run_at = errors.check(
            "runAt",
            self.run_at.as_deref().map(parse_instant).transpose(),
        );
        let priority = errors.check(
            "priority",
            within(self.priority, -MAX_PRIORITY..=MAX_PRIORITY),
        );
        let max_attempts = errors.check(
            "maxAttempts",
            self.max_attempts
                .map(|m| within(m, 1..=MAX_ATTEMPTS))
                .transpose(),
        );
        let idempotency_key = errors.check(
            "idempotencyKey",
            self.idempotency_key.map(IdempotencyKey::parse).transpose(),
        );
        // bounded as an idempotency key is
        let partition_key = errors.check(
            "partitionKey",
            self.partition_key.map(IdempotencyKey::parse).transpose(),
        );
        match (
            sleep_ms,
            fail_attempts,
            run_at,
            priority,
            max_attempts,
            idempotency_key,
            partition_key,
        ) {
            (
                Some(sleep_ms),
                Some(fail_attempts),
                Some(run_at),
                Some(priority),
                Some(max_attempts),
                Some(idempotency_key),
                Some(partition_key),
            ) => Ok(PingOptions {
                sleep_ms,
                fail_attempts,
                fail_permanently: self.fail_permanently,
                run_at,
                // within -1000..=1000
                priority: priority as i16,
                max_attempts,
                idempotency_key,
                partition_key,
            }),
            _ => Err(errors),
        }
    }
}

/// Enqueues a `ping` job that proves the worker fleet runs jobs; answers 202 with its id.
///
/// Permission: `jobs:write`. Pushed straight to Redis (it follows no database write). 422 for
/// a `runAt` further ahead than `JOB_MAX_DELAY_SECS`; 429 with `Retry-After` past the
/// project's enqueue rate (`RATE_LIMIT_ENQUEUE_PER_PROJECT`, `rate_limited`) or when the
/// project has `JOB_MAX_OPEN_PER_PROJECT` open jobs (`quota_exceeded`), even for a repeated
/// idempotency key.
#[utoipa::path(post, path = "/api/v1/jobs/ping", tag = "jobs",
    request_body = PingRequest,
    security(("bearer" = ["jobs:write"])),
    responses((status = 202, body = inline(Data<Accepted<JobQueued>>),
               headers(("Location" = String, description = "The job's status URL"))),
              EnqueueRefusals,
              BodyRefusals,
              AuthRefusals))]
async fn enqueue_ping(
    auth: Authorized<JobsWrite>,
    State(s): State<AppState>,
    ValidJson(req): ValidJson<PingRequest>,
) -> Result<Accepted<JobQueued>> {
    let horizon = s.settings.queue.max_delay;
    if req.run_at.is_some_and(|t| t > chrono::Utc::now() + horizon) {
        return Err(ApiError::invalid(
            "runAt",
            format!(
                "must be at most {} days ahead (JOB_MAX_DELAY_SECS)",
                horizon.as_secs() / 86_400
            ),
        ));
    }
    quota::admit(&s, auth.claims.project_id).await?;
    let job = Ping {
        project_id: auth.claims.project_id,
        sleep_ms: req.sleep_ms,
        fail_attempts: req.fail_attempts,
        fail_permanently: req.fail_permanently,
        record: false,
    };
    let enqueued = job
        .enqueue_now(
            &s.queues,
            EnqueueOptions {
                run_at: req.run_at,
                priority: req.priority,
                max_attempts: req.max_attempts,
                // keys are per project: one tenant's key never returns another's job
                idempotency_key: req
                    .idempotency_key
                    .map(|k| format!("{}:{}", auth.claims.project_id, k.as_ref())),
                // per project too: one tenant's key never orders against another's
                partition_key: req
                    .partition_key
                    .map(|k| format!("{}:{}", auth.claims.project_id, k.as_ref())),
                request_id: Some(request_id::current()),
            },
        )
        .await?;
    tracing::info!(job_id = %enqueued.id, created = enqueued.created, "ping enqueued");
    Ok(accepted(enqueued.id, Ping::QUEUE, enqueued.created))
}
