//! Jobs: status for the dashboard that enqueued them, retry and cancel, and the fleet `ping`.
//!
//! Every look-up is scoped to the caller's project: another project's job is a 404.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::IntoResponse,
};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    jobs::{EnqueueOptions, Job, MAX_SLEEP_MS, Ping},
    queue::{JobRecord, JobState},
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Authorized, JobsRead, JobsWrite},
    envelope::Data,
    error::{ApiError, ApiJson, Result},
    extract::ApiPath,
    request_id,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(get_job))
        .routes(routes!(retry_job))
        .routes(routes!(cancel_job))
        .routes(routes!(enqueue_ping))
}

/// The answer to an enqueue: 202 with the job's id and where to poll it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Accepted {
    /// The job id.
    pub job_id: Uuid,
    /// Its queue.
    pub queue: String,
    /// False when an earlier job with the same idempotency key was returned.
    pub created: bool,
    /// `GET` this to follow the job.
    pub status_url: String,
}

pub(crate) fn accepted(job_id: Uuid, queue: &str, created: bool) -> impl IntoResponse + use<> {
    let status_url = format!("/api/v1/jobs/{job_id}");
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, status_url.clone())],
        ApiJson(Data::new(Accepted {
            job_id,
            queue: queue.to_owned(),
            created,
            status_url,
        })),
    )
}

async fn find_job(s: &AppState, project_id: Uuid, id: Uuid) -> Result<JobRecord> {
    if let Some(job) = s.queues.find_job(shared::jobs::QUEUES, id).await? {
        if job.project_id == Some(project_id) {
            return Ok(job);
        }
        return Err(ApiError::NotFound("job"));
    }
    shared::db::outbox::pending_job(&s.pool, project_id, id)
        .await?
        .ok_or(ApiError::NotFound("job"))
}

fn parse_id(raw: &str) -> Result<Uuid> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::BadRequest(format!("{raw:?} is not a job id (UUID)")))
}

/// A job's status: state, attempts, every attempt's error, progress and result.
///
/// Permission: `jobs:read`. Jobs of other projects are not found.
#[utoipa::path(get, path = "/api/v1/jobs/{id}", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    security(("bearer" = ["jobs:read"])),
    responses((status = 200, body = inline(Data<JobRecord>)),
              (status = 400, body = crate::error::ErrorEnvelope),
              (status = 401, body = crate::error::ErrorEnvelope),
              (status = 403, body = crate::error::ErrorEnvelope),
              (status = 404, body = crate::error::ErrorEnvelope),
              (status = 503, body = crate::error::ErrorEnvelope)))]
async fn get_job(
    auth: Authorized<JobsRead>,
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Data<JobRecord>>> {
    let id = parse_id(&id)?;
    Ok(ApiJson(Data::new(
        find_job(&s, auth.claims.project_id, id).await?,
    )))
}

/// Runs a dead job again with a fresh set of attempts (its error history is kept).
///
/// Permission: `jobs:write`. 409 unless the job is dead.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/retry", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    security(("bearer" = ["jobs:write"])),
    responses((status = 202, body = inline(Data<Accepted>)),
              (status = 401, body = crate::error::ErrorEnvelope),
              (status = 403, body = crate::error::ErrorEnvelope),
              (status = 404, body = crate::error::ErrorEnvelope),
              (status = 400, body = crate::error::ErrorEnvelope),
              (status = 503, body = crate::error::ErrorEnvelope),
              (status = 409, body = crate::error::ErrorEnvelope)))]
async fn retry_job(
    auth: Authorized<JobsWrite>,
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<impl IntoResponse> {
    let id = parse_id(&id)?;
    let job = find_job(&s, auth.claims.project_id, id).await?;
    if job.state != JobState::Dead || !s.queues.retry_dead(&job.queue, id).await? {
        return Err(ApiError::Conflict(format!(
            "only dead jobs can be retried; this one is {}",
            job.state.as_str()
        )));
    }
    tracing::info!(job_id = %id, queue = %job.queue, "dead job retried");
    Ok(accepted(id, &job.queue, false))
}

/// Cancels a job that has not started (waiting, delayed or retrying).
///
/// Permission: `jobs:write`. 409 for a running or finished job.
#[utoipa::path(post, path = "/api/v1/jobs/{id}/cancel", tag = "jobs",
    params(("id" = Uuid, Path, description = "Job id")),
    security(("bearer" = ["jobs:write"])),
    responses((status = 200, body = inline(Data<JobRecord>)),
              (status = 401, body = crate::error::ErrorEnvelope),
              (status = 403, body = crate::error::ErrorEnvelope),
              (status = 404, body = crate::error::ErrorEnvelope),
              (status = 400, body = crate::error::ErrorEnvelope),
              (status = 503, body = crate::error::ErrorEnvelope),
              (status = 409, body = crate::error::ErrorEnvelope)))]
async fn cancel_job(
    auth: Authorized<JobsWrite>,
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Data<JobRecord>>> {
    let id = parse_id(&id)?;
    let job = find_job(&s, auth.claims.project_id, id).await?;
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

/// Options of a fleet ping; all optional (`{}` is a plain ping).
#[derive(Debug, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct PingRequest {
    /// Hold a worker slot this long (0..=60000 ms).
    #[serde(default)]
    pub sleep_ms: u64,
    /// Fail attempts 1..=N with a retryable error (0..=100), to watch retries and backoff.
    #[serde(default)]
    pub fail_attempts: u32,
    /// Fail with a permanent error: the job goes dead at once.
    #[serde(default)]
    pub fail_permanently: bool,
    /// Run no earlier than this time.
    pub run_at: Option<DateTime<Utc>>,
    /// Priority within the queue, -1000..=1000 (higher first).
    #[serde(default)]
    pub priority: i16,
    /// Attempts before the job goes dead (1..=100; default the queue's).
    pub max_attempts: Option<u32>,
    /// A second ping with the same key (within a day) returns the first job.
    pub idempotency_key: Option<String>,
}

impl PingRequest {
    fn validate(&self) -> Result<()> {
        if self.sleep_ms > MAX_SLEEP_MS {
            return Err(ApiError::invalid(
                "sleepMs",
                format!("must be at most {MAX_SLEEP_MS}"),
            ));
        }
        if self.fail_attempts > 100 {
            return Err(ApiError::invalid("failAttempts", "must be at most 100"));
        }
        if !(-1000..=1000).contains(&self.priority) {
            return Err(ApiError::invalid(
                "priority",
                "must be between -1000 and 1000",
            ));
        }
        if let Some(m) = self.max_attempts.filter(|m| !(1..=100).contains(m)) {
            return Err(ApiError::invalid(
                "maxAttempts",
                format!("{m} is not between 1 and 100"),
            ));
        }
        if let Some(k) = &self.idempotency_key
            && (k.is_empty() || k.len() > 200 || k.chars().any(char::is_control))
        {
            return Err(ApiError::invalid(
                "idempotencyKey",
                "must be 1 to 200 printable characters",
            ));
        }
        Ok(())
    }
}

/// Enqueues a `ping` job that proves the worker fleet runs jobs; answers 202 with its id.
///
/// Permission: `jobs:write`. Pushed straight to Redis (it follows no database write).
#[utoipa::path(post, path = "/api/v1/jobs/ping", tag = "jobs",
    request_body = PingRequest,
    security(("bearer" = ["jobs:write"])),
    responses((status = 202, body = inline(Data<Accepted>)),
              (status = 400, body = crate::error::ErrorEnvelope),
              (status = 401, body = crate::error::ErrorEnvelope),
              (status = 403, body = crate::error::ErrorEnvelope),
              (status = 413, body = crate::error::ErrorEnvelope),
              (status = 415, body = crate::error::ErrorEnvelope),
              (status = 422, body = crate::error::ErrorEnvelope),
              (status = 503, body = crate::error::ErrorEnvelope)))]
async fn enqueue_ping(
    auth: Authorized<JobsWrite>,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<PingRequest>,
) -> Result<impl IntoResponse> {
    req.validate()?;
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
                    .map(|k| format!("{}:{k}", auth.claims.project_id)),
                request_id: Some(request_id::current()),
            },
        )
        .await?;
    tracing::info!(job_id = %enqueued.id, created = enqueued.created, "ping enqueued");
    Ok(accepted(enqueued.id, Ping::QUEUE, enqueued.created))
}
