//! The schedules, for platform operators: list them with their next and last runs, trigger one
//! now, pause and resume them (stored in Postgres: every worker obeys, across restarts).
//!
//! Schedules are platform-wide (their jobs' `projectId` is the nil id: see `shared::schedule`),
//! so these routes take platform permissions: `schedules:read` to list, `schedules:manage` to
//! change, which only platform tokens carry. There is no audit entry: the audit log is per
//! project, and these act on none; the pause records who paused and when on the schedule.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::{
    db::schedules::{self, ScheduleRow},
    queue::JobState,
    schedule::{CatchUp, Overlap, PLATFORM, Resolved, fire},
};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Authorized, SchedulesManage, SchedulesRead},
    envelope::{Accepted, ApiJson, Data},
    error::{ApiError, AuthRefusals, EnqueueRefusals, ErrorEnvelope, Result},
    extract::ApiPath,
    quota, request_id,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_schedules))
        .routes(routes!(trigger_schedule))
        .routes(routes!(pause_schedule))
        .routes(routes!(resume_schedule))
}

/// A schedule's latest run.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct LastJob {
    /// Its job (`GET /api/v1/jobs/{id}` with a platform token holding `jobs:read`).
    pub id: Uuid,
    /// Its state (`null`: the job was trimmed after its retention).
    pub state: Option<JobState>,
}

/// A schedule as this deployment runs it.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ScheduleView {
    /// Its name (`SCHEDULE_<NAME>` overrides its expression).
    pub name: String,
    /// The expression in force (`off` when switched off by `SCHEDULE_<NAME>=off`).
    pub expression: String,
    /// Whether the expression comes from `SCHEDULE_<NAME>` rather than the code.
    pub overridden: bool,
    /// The IANA time zone the expression is read in.
    pub time_zone: String,
    /// The queue (job kind) it enqueues.
    pub queue: String,
    /// Ticks missed while the fleet was down: `skip` (fire none) or `once` (one run for all).
    pub catch_up: CatchUp,
    /// A tick while the previous run is queued or running: `skip` or `allow`.
    pub overlap: Overlap,
    /// Whether its ticks fire: not switched off and not paused.
    pub enabled: bool,
    /// Paused by an operator.
    pub paused: bool,
    /// When it was paused.
    pub paused_at: Option<DateTime<Utc>>,
    /// Who paused it (the token's subject).
    pub paused_by: Option<String>,
    /// Its next tick (`null` when not enabled).
    pub next_fire_at: Option<DateTime<Utc>>,
    /// When its latest run was enqueued (a tick's or a trigger's).
    pub last_fire_at: Option<DateTime<Utc>>,
    /// The latest tick accounted for (fired, skipped or missed).
    pub last_tick_at: Option<DateTime<Utc>>,
    /// The latest run's job.
    pub last_job: Option<LastJob>,
    /// Ticks missed in all (`comet_schedule_missed_total` counts them too).
    pub missed_count: i64,
}

/// The declared schedule `name`, as this deployment runs it (404 for any other name).
fn resolved<'a>(s: &'a AppState, name: &str) -> Result<&'a Resolved> {
    s.settings
        .scheduler
        .get(name)
        .ok_or(ApiError::NotFound("schedule"))
}

async fn view(s: &AppState, r: &Resolved, row: Option<&ScheduleRow>) -> Result<ScheduleView> {
    let paused = row.is_some_and(|r| r.paused);
    let enabled = r.enabled() && !paused;
    let last_job = match row.and_then(|r| r.last_job_id) {
        Some(id) => {
            let mut conn = s.pool.acquire().await?;
            let state = fire::run_state(&mut conn, &s.queues, r.declared.queue, id).await?;
            Some(LastJob { id, state })
        }
        None => None,
    };
    let from = row
        .map_or_else(Utc::now, |r| r.last_tick_at)
        .max(Utc::now());
    Ok(ScheduleView {
        name: r.name().to_owned(),
        expression: r.expression.clone(),
        overridden: r.overridden,
        time_zone: r.time_zone.name().to_owned(),
        queue: r.declared.queue.to_owned(),
        catch_up: r.declared.schedule.catch_up,
        overlap: r.declared.schedule.overlap,
        enabled,
        paused,
        paused_at: row.and_then(|r| r.paused_at),
        paused_by: row.and_then(|r| r.paused_by.clone()),
        next_fire_at: if enabled { r.next_after(from) } else { None },
        last_fire_at: row.and_then(|r| r.last_fired_at),
        last_tick_at: row.map(|r| r.last_tick_at),
        last_job,
        missed_count: row.map_or(0, |r| r.missed_total),
    })
}

/// Every schedule: expression, time zone, policies, whether it is enabled, its next tick, its
/// latest run (time, job id and state) and how many ticks it missed.
///
/// Permission: `schedules:read` (platform operators).
#[utoipa::path(get, path = "/api/v1/schedules", tag = "schedules",
    security(("bearer" = ["schedules:read"])),
    responses((status = 200, body = inline(Data<Vec<ScheduleView>>)),
              AuthRefusals))]
async fn list_schedules(
    _auth: Authorized<SchedulesRead>,
    State(s): State<AppState>,
) -> Result<ApiJson<Data<Vec<ScheduleView>>>> {
    let rows = schedules::all(&s.pool).await?;
    let mut out = Vec::with_capacity(s.settings.scheduler.schedules.len());
    for r in &s.settings.scheduler.schedules {
        let row = rows.iter().find(|row| row.name == r.name());
        out.push(view(&s, r, row).await?);
    }
    Ok(ApiJson(Data::new(out)))
}

/// The schedule a trigger ran.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Triggered {
    /// The schedule.
    pub schedule: String,
    /// The job's queue.
    pub queue: String,
}

/// Runs a schedule once now, outside its tick sequence (its ticks go on as before; a paused or
/// switched-off schedule runs too). The job carries `run.tickAt: null`.
///
/// Permission: `schedules:manage` (platform operators). 404 for an unknown schedule; 429 past
/// the platform's enqueue rate or quota of open jobs (`RATE_LIMIT_ENQUEUE_PER_PROJECT`,
/// `JOB_MAX_OPEN_PER_PROJECT`, counted for the nil project).
#[utoipa::path(post, path = "/api/v1/schedules/{name}/trigger", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    security(("bearer" = ["schedules:manage"])),
    responses((status = 202, body = inline(Data<Accepted<Triggered>>),
               headers(("Location" = String, description = "The job's status URL"))),
              (status = 404, body = ErrorEnvelope),
              EnqueueRefusals,
              AuthRefusals))]
async fn trigger_schedule(
    _auth: Authorized<SchedulesManage>,
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<Accepted<Triggered>> {
    let r = resolved(&s, &name)?;
    quota::admit(&s, PLATFORM).await?;
    let job_id = fire::trigger(&s.pool, r, request_id::enqueue_options()).await?;
    s.outbox.wake();
    tracing::info!(schedule = r.name(), %job_id, "schedule triggered by hand");
    Ok(Accepted::job(
        job_id,
        Triggered {
            schedule: r.name().to_owned(),
            queue: r.declared.queue.to_owned(),
        },
    ))
}

async fn set_paused(
    s: &AppState,
    name: &str,
    paused: bool,
    by: &str,
) -> Result<ApiJson<Data<ScheduleView>>> {
    let r = resolved(s, name)?;
    let row = schedules::set_paused(&s.pool, r.name(), paused, by).await?;
    tracing::info!(schedule = r.name(), paused, by, "schedule pause changed");
    Ok(ApiJson(Data::new(view(s, r, Some(&row)).await?)))
}

/// Pauses a schedule: no worker fires its ticks until it is resumed (they are not counted as
/// missed, and resuming does not catch them up). Idempotent.
///
/// Permission: `schedules:manage` (platform operators). 404 for an unknown schedule.
#[utoipa::path(post, path = "/api/v1/schedules/{name}/pause", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    security(("bearer" = ["schedules:manage"])),
    responses((status = 200, body = inline(Data<ScheduleView>)),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
async fn pause_schedule(
    auth: Authorized<SchedulesManage>,
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<Data<ScheduleView>>> {
    set_paused(&s, &name, true, &auth.claims.sub).await
}

/// Resumes a paused schedule from its next tick. Idempotent.
///
/// Permission: `schedules:manage` (platform operators). 404 for an unknown schedule.
#[utoipa::path(post, path = "/api/v1/schedules/{name}/resume", tag = "schedules",
    params(("name" = String, Path, description = "Schedule name")),
    security(("bearer" = ["schedules:manage"])),
    responses((status = 200, body = inline(Data<ScheduleView>)),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
async fn resume_schedule(
    auth: Authorized<SchedulesManage>,
    State(s): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<Data<ScheduleView>>> {
    set_paused(&s, &name, false, &auth.claims.sub).await
}
