//! Queue views: counts per state, the jobs in one state, the projects with the most open jobs
//! (who is near `JOB_MAX_OPEN_PER_PROJECT`), throughput, workers and the outbox; and pausing a
//! queue (`queues:write`, platform operators).
//!
//! `queues:read` is held by a project's admins and by platform operators, and what it shows
//! follows the token: a platform token sees the queues whole, across every project (like a
//! Sidekiq or BullMQ dashboard); a project's token sees its own project's part of each queue
//! (counts per state and open jobs, from the per-project counts and index the queue scripts
//! keep: `shared::queue::Queues::project_counts`) and is refused the fleet-wide views
//! (throughput, workers, outbox, busiest projects), which have no per-project form.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use utoipa::{
    IntoParams, PartialSchema, ToSchema,
    openapi::{
        RefOr,
        schema::{ObjectBuilder, Schema, Type},
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};

use shared::queue::{JobRecord, JobState, ProjectOpenJobs, QueueCounts};

use crate::{
    AppState,
    auth::{Authorized, QueuesRead, QueuesWrite},
    envelope::{ApiJson, Data, List, PageParams},
    error::{ApiError, AuthRefusals, ErrorEnvelope, Result},
    extract::{ApiPath, ApiQuery},
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_queues))
        .routes(routes!(list_queue_jobs))
        .routes(routes!(list_busiest_projects))
        .routes(routes!(pause_queue))
        .routes(routes!(resume_queue))
        .routes(routes!(list_workers))
        .routes(routes!(queue_series))
        .routes(routes!(outbox_lag))
}

/// The worker processes of the registry, most recently heard from first: host, pid, version,
/// start, the queues each runs with their concurrency and the jobs it holds (as of its last
/// heartbeat), and whether it went silent (`lost`: no heartbeat for `JOB_LEASE_SECS`; its
/// leases expire and maintenance takes its jobs back). A process unheard of for an hour is
/// forgotten.
///
/// Permission: `queues:read` with a platform token (a project's token gets 403).
#[utoipa::path(get, path = "/api/v1/workers", tag = "jobs",
    extensions(("x-platform-token" = json!(true))),
    security(("bearer" = ["queues:read"])),
    responses((status = 200, body = inline(Data<Vec<shared::queue::WorkerInfo>>)),
              AuthRefusals))]
async fn list_workers(
    auth: Authorized<QueuesRead>,
    State(s): State<AppState>,
) -> Result<ApiJson<Data<Vec<shared::queue::WorkerInfo>>>> {
    platform_view(&auth.claims)?;
    let workers = s.queues.workers(s.settings.queue.lease).await?;
    Ok(ApiJson(Data::new(workers)))
}

/// The outbox: jobs committed in Postgres and not yet in Redis.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct OutboxLag {
    /// Rows waiting.
    pub waiting: i64,
    /// Rows waiting per queue.
    pub by_queue: Vec<QueueWaiting>,
    /// When the oldest waiting row was committed.
    pub oldest_at: Option<DateTime<Utc>>,
    /// Its age: how far behind the relays are (0 when the outbox is empty).
    pub lag_seconds: f64,
}

/// Outbox rows of one queue.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueWaiting {
    /// The queue.
    pub queue: String,
    /// Rows waiting.
    pub waiting: i64,
}

/// Rows waiting in the outbox and the relays' lag (the oldest row's age).
///
/// Permission: `queues:read` with a platform token (a project's token gets 403).
#[utoipa::path(get, path = "/api/v1/outbox", tag = "jobs",
    extensions(("x-platform-token" = json!(true))),
    security(("bearer" = ["queues:read"])),
    responses((status = 200, body = inline(Data<OutboxLag>)),
              AuthRefusals))]
async fn outbox_lag(
    auth: Authorized<QueuesRead>,
    State(s): State<AppState>,
) -> Result<ApiJson<Data<OutboxLag>>> {
    platform_view(&auth.claims)?;
    let (per_queue, oldest_at) = shared::db::outbox::waiting(&s.pool).await?;
    let lag_seconds = oldest_at
        .map(|at| ((Utc::now() - at).num_milliseconds().max(0) as f64) / 1000.0)
        .unwrap_or(0.0);
    Ok(ApiJson(Data::new(OutboxLag {
        waiting: per_queue.iter().map(|(_, n)| n).sum(),
        by_queue: per_queue
            .into_iter()
            .map(|(queue, waiting)| QueueWaiting { queue, waiting })
            .collect(),
        oldest_at,
        lag_seconds,
    })))
}

/// A queue's pause state.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueuePause {
    /// The queue.
    pub queue: String,
    /// Whether workers lease its jobs.
    pub paused: bool,
    /// Since when it is paused.
    pub paused_at: Option<DateTime<Utc>>,
}

/// Refuses a project's token on a view that spans every project.
fn platform_view(claims: &shared::auth::Claims) -> Result<()> {
    if claims.platform {
        Ok(())
    } else {
        Err(ApiError::Refused(
            "this view spans every project (the worker fleet, the outbox, throughput, the \
             busiest projects): platform operators only; a project's own queues are at \
             GET /api/v1/queues and GET /api/v1/queues/{queue}/jobs",
        ))
    }
}

fn known_queue(queue: &str) -> Result<&'static str> {
    shared::jobs::QUEUES
        .iter()
        .copied()
        .find(|name| *name == queue)
        .ok_or(ApiError::NotFound("queue"))
}

/// Pauses a queue: every worker stops leasing its jobs at its next fetch (within a second) and
/// finishes the ones it holds; new jobs are still accepted and wait. The state is kept in
/// Postgres and outlives restarts of the API, the workers and Redis. Pausing a paused queue
/// changes nothing.
///
/// Permission: `queues:write` (platform operators). 404 for an unknown queue.
#[utoipa::path(post, path = "/api/v1/queues/{queue}/pause", tag = "jobs",
    params(("queue" = String, Path, description = "Queue name")),
    security(("bearer" = ["queues:write"])),
    responses((status = 200, body = inline(Data<QueuePause>)),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
async fn pause_queue(
    auth: Authorized<QueuesWrite>,
    State(s): State<AppState>,
    ApiPath(queue): ApiPath<String>,
) -> Result<ApiJson<Data<QueuePause>>> {
    set_paused(&s, &queue, true, &auth.claims.sub).await
}

/// Pauses or resumes `queue`: Postgres first (the lasting state), then the Redis flag.
async fn set_paused(
    s: &AppState,
    queue: &str,
    paused: bool,
    by: &str,
) -> Result<ApiJson<Data<QueuePause>>> {
    let queue = known_queue(queue)?;
    let mut conn = s.pool.acquire().await?;
    let paused_at = if paused {
        Some(shared::db::queue_pauses::pause(&mut conn, queue, by).await?)
    } else {
        shared::db::queue_pauses::resume(&mut conn, queue).await?;
        None
    };
    s.queues.set_paused(queue, paused).await?;
    tracing::info!(queue, paused, by, "queue pause set");
    Ok(ApiJson(Data::new(QueuePause {
        queue: queue.to_owned(),
        paused,
        paused_at,
    })))
}

/// Resumes a paused queue: workers lease its jobs again at once. Resuming a queue that is not
/// paused changes nothing.
///
/// Permission: `queues:write` (platform operators). 404 for an unknown queue.
#[utoipa::path(post, path = "/api/v1/queues/{queue}/resume", tag = "jobs",
    params(("queue" = String, Path, description = "Queue name")),
    security(("bearer" = ["queues:write"])),
    responses((status = 200, body = inline(Data<QueuePause>)),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
async fn resume_queue(
    auth: Authorized<QueuesWrite>,
    State(s): State<AppState>,
    ApiPath(queue): ApiPath<String>,
) -> Result<ApiJson<Data<QueuePause>>> {
    set_paused(&s, &queue, false, &auth.claims.sub).await
}

/// Job counts per queue and state. A platform token sees each queue whole; a project's token
/// its own project's jobs in it: the open states as they are now, and `completed`, `dead`,
/// `cancelled` (and the totals) counting every job of the project that ever finished so. A
/// platform token also gets each queue's `workers`: the live worker processes running it, their
/// configured concurrency and the jobs they hold, summed from their last heartbeats.
///
/// Permission: `queues:read`.
#[utoipa::path(get, path = "/api/v1/queues", tag = "jobs",
    security(("bearer" = ["queues:read"])),
    responses((status = 200, body = inline(Data<Vec<QueueCounts>>)),
              AuthRefusals))]
async fn list_queues(
    auth: Authorized<QueuesRead>,
    State(s): State<AppState>,
) -> Result<ApiJson<Data<Vec<QueueCounts>>>> {
    let mut out = Vec::with_capacity(shared::jobs::QUEUES.len());
    if auth.claims.platform {
        let fleet = s.queues.workers(s.settings.queue.lease).await?;
        for q in shared::jobs::QUEUES {
            let mut counts = s.queues.counts(q).await?;
            counts.workers = Some(shared::queue::QueueFleet::of(&fleet, q));
            out.push(counts);
        }
    } else {
        for q in shared::jobs::QUEUES {
            out.push(s.queues.project_counts(q, auth.claims.project_id).await?);
        }
    }
    Ok(ApiJson(Data::new(out)))
}

/// `?minutes=`: how far back a series goes.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct SeriesQuery {
    /// Minutes, 1 to 120 (default 60).
    #[param(minimum = 1, maximum = 120, default = 60)]
    pub minutes: Option<u32>,
}

/// A queue's throughput minute by minute over the last `minutes` (default 60, at most 120):
/// jobs enqueued, completed, retried and gone dead in each minute, oldest first, the current
/// minute (still counting) last. Counted by the queue's scripts as jobs move, by Redis's clock.
///
/// Permission: `queues:read` with a platform token (a project's token gets 403). 404 for an
/// unknown queue.
#[utoipa::path(get, path = "/api/v1/queues/{queue}/series", tag = "jobs",
    extensions(("x-platform-token" = json!(true))),
    params(("queue" = String, Path, description = "Queue name"), SeriesQuery),
    security(("bearer" = ["queues:read"])),
    responses((status = 200, body = inline(Data<Vec<shared::queue::MinuteCounts>>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
async fn queue_series(
    auth: Authorized<QueuesRead>,
    State(s): State<AppState>,
    ApiPath(queue): ApiPath<String>,
    ApiQuery(q): ApiQuery<SeriesQuery>,
) -> Result<ApiJson<Data<Vec<shared::queue::MinuteCounts>>>> {
    platform_view(&auth.claims)?;
    let queue = known_queue(&queue)?;
    let minutes = shared::domain::within(q.minutes.unwrap_or(60), 1..=120)
        .map_err(|e| shared::domain::FieldErrors::one("minutes", e.to_string()))?;
    Ok(ApiJson(Data::new(s.queues.series(queue, minutes).await?)))
}

/// `?state=&page=&perPage=` (the page as in [`PageParams`]).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ListJobsQuery {
    /// The state to list (not `pending`: those are still in Postgres).
    #[param(value_type = QueueState, inline)]
    pub state: JobState,
    /// Page number, from 1.
    #[serde(default = "one")]
    #[param(value_type = u64, minimum = 1, maximum = 4294967295u64, default = 1)]
    pub page: u32,
    /// Items per page, 1 to 100.
    #[serde(default = "twenty")]
    #[param(minimum = 1, maximum = 100, default = 20)]
    pub per_page: u32,
}

/// The OpenAPI schema of the states a queue lists: every [`JobState`] but `pending`.
pub struct QueueState;

impl PartialSchema for QueueState {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .enum_values(Some(JobState::REDIS.iter().map(|(s, _)| s.as_str())))
            .into()
    }
}

impl ToSchema for QueueState {}

fn one() -> u32 {
    1
}
fn twenty() -> u32 {
    20
}

/// The jobs of one queue in one state. A platform token lists the queue whole: finished states
/// newest first, others in run order. A project's token lists its own project's jobs, newest
/// first: open ones (waiting, delayed, active, retrying) from the per-project index, finished
/// ones from the job archive (they reach it about a second after they finish).
///
/// Permission: `queues:read`.
#[utoipa::path(get, path = "/api/v1/queues/{queue}/jobs", tag = "jobs",
    params(("queue" = String, Path, description = "Queue name"), ListJobsQuery),
    security(("bearer" = ["queues:read"])),
    responses((status = 200, body = inline(List<JobRecord>)),
              (status = 400, body = crate::error::ErrorEnvelope),
              (status = 404, body = crate::error::ErrorEnvelope),
              (status = 422, body = crate::error::ErrorEnvelope),
              AuthRefusals))]
async fn list_queue_jobs(
    auth: Authorized<QueuesRead>,
    State(s): State<AppState>,
    ApiPath(queue): ApiPath<String>,
    ApiQuery(q): ApiQuery<ListJobsQuery>,
) -> Result<ApiJson<List<JobRecord>>> {
    let queue = shared::jobs::QUEUES
        .iter()
        .find(|name| **name == queue)
        .ok_or(ApiError::NotFound("queue"))?;
    if q.state == JobState::Pending {
        return Err(ApiError::invalid(
            "state",
            "pending jobs are not in a queue yet",
        ));
    }
    let page = PageParams {
        page: q.page,
        per_page: q.per_page,
    }
    .check()?;
    if !auth.claims.platform {
        let project = auth.claims.project_id;
        let counts = s.queues.project_counts(queue, project).await?;
        let total = match q.state {
            JobState::Waiting => counts.waiting,
            JobState::Delayed => counts.delayed,
            JobState::Active => counts.active,
            JobState::Retrying => counts.retrying,
            _ => {
                // finished: the project's jobs in the archive (Redis keeps only some)
                let filter = shared::db::job_archive::ArchiveFilter {
                    project_id: Some(project),
                    queue: Some((*queue).to_owned()),
                    state: Some(q.state),
                    ..Default::default()
                };
                let (jobs, total) = shared::db::job_archive::page(
                    &s.pool,
                    &filter,
                    page.offset() as i64,
                    i64::from(page.per_page),
                )
                .await?;
                return Ok(ApiJson(page.list(jobs, total)));
            }
        };
        let jobs = s
            .queues
            .project_jobs(
                queue,
                project,
                Some(q.state),
                page.offset(),
                page.per_page as usize,
            )
            .await?;
        return Ok(ApiJson(page.list(jobs, total)));
    }
    let (jobs, total) = s
        .queues
        .list(queue, q.state, page.offset(), page.per_page as usize)
        .await?;
    Ok(ApiJson(page.list(jobs, total)))
}

/// `?limit=`.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct BusiestProjectsQuery {
    /// How many projects to list, 1 to 100.
    #[serde(default = "twenty")]
    #[param(minimum = 1, maximum = 100)]
    pub limit: u32,
}

/// The projects with the most open jobs, against the quota.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BusiestProjects {
    /// Open jobs (waiting, delayed, active, retrying) of every project together.
    pub total_open_jobs: u64,
    /// `JOB_MAX_OPEN_PER_PROJECT`: past it a project's new jobs are refused (429).
    pub max_open_per_project: u64,
    /// The projects with the most open jobs, most first (ties by project id); jobs still in
    /// the Postgres outbox are not included.
    pub projects: Vec<ProjectOpenJobs>,
    /// Null when `projects` is exactly the top. Otherwise the search stopped at its bound (very
    /// many projects, their jobs spread over several queues): every project not listed has at
    /// most this many open jobs.
    pub others_at_most: Option<u64>,
}

/// The projects with the most open jobs (waiting, delayed, active, retrying) across every
/// queue, and the per-project quota they count against.
///
/// Permission: `queues:read` with a platform token (a project's token gets 403).
#[utoipa::path(get, path = "/api/v1/queues/projects", tag = "jobs",
    extensions(("x-platform-token" = json!(true))),
    params(BusiestProjectsQuery),
    security(("bearer" = ["queues:read"])),
    responses((status = 200, body = inline(Data<BusiestProjects>)),
              (status = 400, body = crate::error::ErrorEnvelope),
              (status = 422, body = crate::error::ErrorEnvelope),
              AuthRefusals))]
async fn list_busiest_projects(
    auth: Authorized<QueuesRead>,
    State(s): State<AppState>,
    ApiQuery(q): ApiQuery<BusiestProjectsQuery>,
) -> Result<ApiJson<Data<BusiestProjects>>> {
    platform_view(&auth.claims)?;
    if !(1..=100).contains(&q.limit) {
        return Err(ApiError::invalid("limit", "must be between 1 and 100"));
    }
    let queues = shared::jobs::QUEUES;
    let top = s.queues.top_projects(queues, q.limit as usize).await?;
    let total_open_jobs = s.queues.open_jobs_total(queues).await?;
    Ok(ApiJson(Data::new(BusiestProjects {
        total_open_jobs,
        max_open_per_project: s.settings.queue.max_open_per_project,
        projects: top.projects,
        others_at_most: top.others_at_most,
    })))
}
