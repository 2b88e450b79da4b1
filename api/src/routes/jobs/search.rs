//! Job search over the archive (`GET /api/v1/jobs`) and dead jobs grouped by error fingerprint
//! (`GET /api/v1/jobs/failures`).
//!
//! Both read `job_archive`, where the workers' archiver copies every finished job (completed,
//! dead, cancelled) within about a second (`JOB_ARCHIVE_MS`). A project's callers (`jobs:read`)
//! see their project's jobs only; platform operators holding `queues:read` see every project's
//! and may narrow to one with `projectId`. Open jobs (waiting, delayed, active, retrying) live in
//! Redis: `GET /api/v1/queues/{queue}/jobs?state=` lists them.

use axum::extract::State;
use serde::Deserialize;
use shared::{
    db::job_archive::{self, ArchiveFilter, FailureGroup},
    domain::{FieldErrors, parse_instant},
    queue::{JobRecord, JobState},
};
use utoipa::IntoParams;
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Authorized, JobsRead},
    envelope::{ApiJson, CursorList, Data, created_cursor, cursor_page},
    error::{AuthRefusals, ErrorEnvelope, Result},
    extract::ApiQuery,
};

/// Longest text filter accepted (`error`, `fingerprint`).
const MAX_TEXT: usize = 300;

/// Filters of the job search; every one optional, combined with AND.
#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct JobSearchParams {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this kind (today each queue runs one kind, named like it).
    pub kind: Option<String>,
    /// `completed`, `dead` or `cancelled` (open jobs: `GET /api/v1/queues/{queue}/jobs`).
    pub state: Option<String>,
    /// Only this project (platform operators; a project's callers always see only their own).
    pub project_id: Option<Uuid>,
    /// The last error contains this text (case-insensitive, at most 300 characters).
    pub error: Option<String>,
    /// Only dead jobs of this error fingerprint (a group of `GET /api/v1/jobs/failures`).
    pub fingerprint: Option<String>,
    /// Job ids starting with these hex digits (dashes ignored).
    pub id_prefix: Option<String>,
    /// Finished at or after this instant (RFC 3339).
    pub from: Option<String>,
    /// Finished before this instant (RFC 3339).
    pub to: Option<String>,
    /// The previous page's `meta.nextCursor`; empty is no cursor.
    pub after: Option<String>,
    /// Jobs per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// A text filter: trimmed, empty is none, bounded, no NUL.
fn text(errors: &mut FieldErrors, field: &str, value: Option<String>) -> Option<String> {
    let value = value
        .map(|v| v.trim().to_owned())
        .filter(|v| !v.is_empty())?;
    if value.chars().count() > MAX_TEXT {
        errors.add(field, format!("must be at most {MAX_TEXT} characters"));
        return None;
    }
    if value.contains('\0') {
        errors.add(field, "must not contain NUL");
        return None;
    }
    Some(value)
}

/// 404 when a caller who sees only their own project names another in `projectId` (another
/// project is not found, never forbidden).
pub(super) fn own_project(
    claims: &shared::auth::Claims,
    operator_permission: &str,
    project_id: Option<Uuid>,
) -> Result<()> {
    let scope = super::job_scope(claims, operator_permission);
    match (scope, project_id) {
        (Some(own), Some(named)) if own != named => {
            Err(crate::error::ApiError::NotFound("project"))
        }
        _ => Ok(()),
    }
}

/// The archive filter of `params` for a caller, every invalid field named: a platform operator
/// holding `operator_permission` spans projects, anyone else sees their own project only.
pub(super) fn filter(
    claims: &shared::auth::Claims,
    operator_permission: &str,
    params: JobSearchParams,
) -> Result<ArchiveFilter, FieldErrors> {
    let mut errors = FieldErrors::new();
    let operator = super::job_scope(claims, operator_permission).is_none();
    let queue = text(&mut errors, "queue", params.queue);
    if let Some(q) = &queue
        && !shared::jobs::QUEUES.contains(&q.as_str())
    {
        errors.add(
            "queue",
            format!("is not a queue: one of {}", shared::jobs::QUEUES.join(", ")),
        );
    }
    let state = match params
        .state
        .as_deref()
        .map(str::trim)
        .filter(|s| !s.is_empty())
    {
        None => None,
        Some("completed") => Some(JobState::Completed),
        Some("dead") => Some(JobState::Dead),
        Some("cancelled") => Some(JobState::Cancelled),
        Some(_) => {
            errors.add(
                "state",
                "must be completed, dead or cancelled (open jobs: /api/v1/queues/{queue}/jobs)",
            );
            None
        }
    };
    let id_prefix = text(&mut errors, "idPrefix", params.id_prefix);
    if let Some(p) = &id_prefix
        && job_archive::id_range(p).is_none()
    {
        errors.add("idPrefix", "must be 1 to 32 hex digits (dashes ignored)");
    }
    let mut instant = |field: &str, raw: Option<String>| {
        let raw = text(&mut errors, field, raw)?;
        errors.check(field, parse_instant(&raw))
    };
    let from = instant("from", params.from);
    let to = instant("to", params.to);
    let project_id = if operator {
        params.project_id
    } else {
        Some(claims.project_id)
    };
    let filter = ArchiveFilter {
        project_id,
        queue,
        kind: text(&mut errors, "kind", params.kind),
        state,
        error: text(&mut errors, "error", params.error),
        fingerprint: text(&mut errors, "fingerprint", params.fingerprint),
        id_prefix,
        from,
        to,
    };
    if errors.is_empty() {
        Ok(filter)
    } else {
        Err(errors)
    }
}

/// Finished jobs (completed, dead, cancelled) across queues, newest first, by queue, kind,
/// state, project, error text, id prefix and finish time, a cursor page at a time. Jobs reach
/// the archive within about a second of finishing; payloads are shown by `GET /api/v1/jobs/{id}`.
///
/// Permission: `jobs:read`: a project's callers see their own project's jobs; platform
/// operators with `queues:read` see every project's (`projectId` narrows; another project's id
/// is a 404 for anyone else). 422 names every invalid filter.
#[utoipa::path(get, path = "/api/v1/jobs", tag = "jobs",
    params(JobSearchParams),
    security(("bearer" = ["jobs:read"])),
    responses((status = 200, body = inline(CursorList<JobRecord>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope, description = "`projectId` names another project"),
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn search_jobs(
    auth: Authorized<JobsRead>,
    State(s): State<AppState>,
    ApiQuery(params): ApiQuery<JobSearchParams>,
) -> Result<ApiJson<CursorList<JobRecord>>> {
    own_project(&auth.claims, "queues:read", params.project_id)?;
    let page = cursor_page(params.limit, params.after.as_deref());
    let filter = filter(&auth.claims, "queues:read", params);
    let ((limit, after), filter) = FieldErrors::both(page, filter)?;
    let jobs = job_archive::search(&s.pool, &filter, after, limit).await?;
    Ok(ApiJson(CursorList::new(jobs, limit, |j| {
        created_cursor(j.finished_at.unwrap_or_default(), j.id)
    })))
}

/// Filters of the failure groups.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct FailureParams {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this project (platform operators).
    pub project_id: Option<Uuid>,
    /// Died at or after this instant (RFC 3339).
    pub from: Option<String>,
    /// Died before this instant (RFC 3339).
    pub to: Option<String>,
    /// Most groups answered, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// Dead jobs grouped by error fingerprint (the last error with ids, numbers, quoted values and
/// addresses masked), per queue, largest groups first: count, first and last seen, a sample job
/// and its error. List a group's jobs with `GET /api/v1/jobs?state=dead&error=...` or retry them
/// one by one.
///
/// Permission: `jobs:read`, scoped as `GET /api/v1/jobs`.
#[utoipa::path(get, path = "/api/v1/jobs/failures", tag = "jobs",
    params(FailureParams),
    security(("bearer" = ["jobs:read"])),
    responses((status = 200, body = inline(Data<Vec<FailureGroup>>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope, description = "`projectId` names another project"),
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn failure_groups(
    auth: Authorized<JobsRead>,
    State(s): State<AppState>,
    ApiQuery(params): ApiQuery<FailureParams>,
) -> Result<ApiJson<Data<Vec<FailureGroup>>>> {
    own_project(&auth.claims, "queues:read", params.project_id)?;
    let page = cursor_page(params.limit, None);
    let filter = filter(
        &auth.claims,
        "queues:read",
        JobSearchParams {
            queue: params.queue,
            project_id: params.project_id,
            from: params.from,
            to: params.to,
            ..JobSearchParams::default()
        },
    );
    let ((limit, _), filter) = FieldErrors::both(page, filter)?;
    let groups = job_archive::failure_groups(&s.pool, &filter, limit).await?;
    Ok(ApiJson(Data::new(groups)))
}
