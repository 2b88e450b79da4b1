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
    domain::{FieldErrors, Invalid, SearchTerm},
    queue::{JobRecord, JobState},
};
use utoipa::{
    IntoParams, PartialSchema, ToSchema,
    openapi::{
        RefOr,
        schema::{ObjectBuilder, Schema, Type},
    },
};

use crate::{
    AppState,
    auth::{Authorized, JobsRead},
    envelope::{ApiJson, CursorList, Data, created_cursor, cursor_page},
    error::{AuthRefusals, ErrorEnvelope, Result},
    extract::ApiQuery,
    filters,
};

/// Filters of the job search; every one optional (absent or empty: no filter), combined with
/// AND.
#[derive(Debug, Default, Clone, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct JobSearchParams {
    /// Only this queue.
    #[param(value_type = Option<QueueFilter>, inline)]
    pub queue: Option<String>,
    /// Only this kind (today each queue runs one kind, named like it).
    #[param(value_type = Option<QueueFilter>, inline)]
    pub kind: Option<String>,
    /// `completed`, `dead` or `cancelled` (open jobs: `GET /api/v1/queues/{queue}/jobs`).
    #[param(value_type = Option<FinishedStateFilter>, inline)]
    pub state: Option<String>,
    /// Only this project (platform operators; a project's callers see only their own, and
    /// another project's id is a 404 for them).
    #[param(value_type = Option<filters::UuidOrEmpty>, inline)]
    pub project_id: Option<String>,
    /// The last error contains this text (case-insensitive).
    #[param(value_type = Option<SearchTerm>, inline)]
    pub error: Option<String>,
    /// Only dead jobs of this error fingerprint (a group of `GET /api/v1/jobs/failures`).
    #[param(value_type = Option<SearchTerm>, inline)]
    pub fingerprint: Option<String>,
    /// Job ids starting with these hex digits (dashes ignored; more than 32 match nothing).
    #[param(value_type = Option<IdPrefix>, inline)]
    pub id_prefix: Option<String>,
    /// Finished at or after this instant (RFC 3339).
    #[param(value_type = Option<filters::DateTimeOrEmpty>, inline)]
    pub from: Option<String>,
    /// Finished before this instant (RFC 3339).
    #[param(value_type = Option<filters::DateTimeOrEmpty>, inline)]
    pub to: Option<String>,
    /// The previous page's `meta.nextCursor`; empty is no cursor.
    pub after: Option<String>,
    /// Jobs per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// The OpenAPI schema of the `queue` and `kind` filters: a queue's name, or empty.
pub struct QueueFilter;

impl PartialSchema for QueueFilter {
    fn schema() -> RefOr<Schema> {
        filters::one_of_or_empty(shared::jobs::QUEUES.iter().copied())
    }
}

impl ToSchema for QueueFilter {}

/// The finished states the archive holds.
const FINISHED: [JobState; 3] = [JobState::Completed, JobState::Dead, JobState::Cancelled];

/// The OpenAPI schema of the `state` filter: a finished state, or empty.
pub struct FinishedStateFilter;

impl PartialSchema for FinishedStateFilter {
    fn schema() -> RefOr<Schema> {
        filters::one_of_or_empty(FINISHED.iter().map(|s| s.as_str()))
    }
}

impl ToSchema for FinishedStateFilter {}

/// The OpenAPI schema of `idPrefix`: hex digits and dashes, at most 36 characters, or empty.
pub struct IdPrefix;

impl PartialSchema for IdPrefix {
    fn schema() -> RefOr<Schema> {
        ObjectBuilder::new()
            .schema_type(Type::String)
            .pattern(Some("^[0-9a-fA-F-]*$"))
            .max_length(Some(36))
            .into()
    }
}

impl ToSchema for IdPrefix {}

/// A filter that must be a queue's name, or empty.
fn queue_name(raw: Option<&str>) -> std::result::Result<Option<String>, Invalid> {
    filters::given(raw)
        .map(|q| {
            shared::jobs::QUEUES
                .iter()
                .find(|name| **name == q)
                .map(|name| (*name).to_owned())
                .ok_or_else(|| {
                    Invalid::new(format!(
                        "must be a queue: one of {}",
                        shared::jobs::QUEUES.join(", ")
                    ))
                })
        })
        .transpose()
}

/// 404 when a caller who sees only their own project names another in `projectId` (another
/// project is not found, never forbidden).
pub(super) fn own_project(
    claims: &shared::auth::Claims,
    operator_permission: &str,
    project_id: Option<&str>,
) -> Result<()> {
    let scope = super::job_scope(claims, operator_permission);
    // an unreadable id is named by the filter's own check
    let named = filters::uuid(project_id, "a project id").ok().flatten();
    match (scope, named) {
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
    let queue = errors.check("queue", queue_name(params.queue.as_deref()));
    let kind = errors.check("kind", queue_name(params.kind.as_deref()));
    let state = errors.check(
        "state",
        filters::given(params.state.as_deref())
            .map(|s| {
                FINISHED.into_iter().find(|st| st.as_str() == s).ok_or_else(|| {
                    Invalid::new(
                        "must be completed, dead or cancelled (open jobs: /api/v1/queues/{queue}/jobs)",
                    )
                })
            })
            .transpose(),
    );
    let id_prefix = errors.check(
        "idPrefix",
        filters::given(params.id_prefix.as_deref())
            .map(|p| {
                if p.len() <= 36 && p.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
                    Ok(p.to_owned())
                } else {
                    Err(Invalid::new(
                        "must be hex digits and dashes, at most 36 characters",
                    ))
                }
            })
            .transpose(),
    );
    let from = errors.check("from", filters::instant(params.from.as_deref()));
    let to = errors.check("to", filters::instant(params.to.as_deref()));
    let named = errors.check(
        "projectId",
        filters::uuid(params.project_id.as_deref(), "a project id"),
    );
    let mut term = |field: &str, raw: Option<&str>| {
        errors
            .check(field, SearchTerm::parse_optional(raw))
            .flatten()
            .map(SearchTerm::into_string)
    };
    let error = term("error", params.error.as_deref());
    let fingerprint = term("fingerprint", params.fingerprint.as_deref());
    let filter = ArchiveFilter {
        project_id: if operator {
            named.flatten()
        } else {
            Some(claims.project_id)
        },
        queue: queue.flatten(),
        kind: kind.flatten(),
        state: state.flatten(),
        error,
        fingerprint,
        id_prefix: id_prefix.flatten(),
        from: from.flatten(),
        to: to.flatten(),
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
    own_project(&auth.claims, "queues:read", params.project_id.as_deref())?;
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
    #[param(value_type = Option<QueueFilter>, inline)]
    pub queue: Option<String>,
    /// Only this project (platform operators).
    #[param(value_type = Option<filters::UuidOrEmpty>, inline)]
    pub project_id: Option<String>,
    /// Died at or after this instant (RFC 3339).
    #[param(value_type = Option<filters::DateTimeOrEmpty>, inline)]
    pub from: Option<String>,
    /// Died before this instant (RFC 3339).
    #[param(value_type = Option<filters::DateTimeOrEmpty>, inline)]
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
    own_project(&auth.claims, "queues:read", params.project_id.as_deref())?;
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
