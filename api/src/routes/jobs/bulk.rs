//! Bulk job controls (`POST /api/v1/jobs/bulk`): retry the dead jobs, or delete the finished
//! jobs, that a search filter matches (the filters of `GET /api/v1/jobs`, plus a failure group's
//! `fingerprint`), with a dry run that counts them first.
//!
//! The set is read from the job archive, newest first, and acted on job by job through the same
//! scripts as the single-job routes: in the request up to [`IN_REQUEST`] jobs, past that by a
//! `bulk_jobs` job (answered `202` with its id; its progress and result are the job's), at most
//! [`MAX_BULK_JOBS`] (a larger set is refused with 422: narrow the filter, by time window for
//! instance). Over [`CONFIRM_OVER`] jobs, the dry run's `confirmationToken` must come back. A
//! retry reopens jobs, so it must fit under each project's open-jobs quota (all or nothing); it
//! does not spend the projects' enqueue rate, which is for their own traffic (the `bulk_jobs`
//! job itself counts as one of the project's jobs).

use std::collections::HashMap;

use axum::{extract::State, http::StatusCode};
use chrono::{Duration, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    db::job_archive::ArchiveFilter,
    domain::{FieldErrors, SearchTerm},
    jobs::{BulkJobAction, BulkJobs, IN_REQUEST, Job as _, MAX_BULK_JOBS},
    queue::JobState,
    schedule::PLATFORM,
};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{
    job_scope,
    search::{IdPrefix, JobSearchParams, QueueFilter, filter},
};
use crate::{
    AppState,
    auth::{Authorized, JobsWrite},
    envelope::{ApiJson, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, ErrorEnvelope, Result},
    extract::{ValidJson, Validate},
    quota,
};

/// Over this many jobs, the dry run's confirmation token is needed.
pub const CONFIRM_OVER: i64 = 100;
/// How long a confirmation token works.
const CONFIRM_FOR: Duration = Duration::minutes(10);

/// The jobs a bulk action targets: the filters of `GET /api/v1/jobs`.
#[derive(Debug, Clone, Default, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkJobFilter {
    /// Only this queue.
    #[schema(value_type = Option<QueueFilter>, inline)]
    pub queue: Option<String>,
    /// Only this kind.
    #[schema(value_type = Option<QueueFilter>, inline)]
    pub kind: Option<String>,
    /// A job state: a retry takes `dead`, a delete `completed`, `dead` or `cancelled`, a cancel
    /// `waiting`, `delayed` or `retrying`; another state matches nothing.
    #[schema(value_type = Option<BulkStateFilter>, inline)]
    pub state: Option<String>,
    /// Only this project (platform operators; another project's id is a 404 for anyone else).
    #[schema(value_type = Option<crate::filters::UuidOrEmpty>, inline)]
    pub project_id: Option<String>,
    /// The last error contains this text (case-insensitive).
    #[schema(value_type = Option<SearchTerm>, inline)]
    pub error: Option<String>,
    /// Only dead jobs of this error fingerprint (a failure group).
    #[schema(value_type = Option<SearchTerm>, inline)]
    pub fingerprint: Option<String>,
    /// Job ids starting with these hex digits.
    #[schema(value_type = Option<IdPrefix>, inline)]
    pub id_prefix: Option<String>,
    /// Finished at or after (RFC 3339).
    #[schema(value_type = Option<crate::filters::DateTimeOrEmpty>, inline)]
    pub from: Option<String>,
    /// Finished before (RFC 3339).
    #[schema(value_type = Option<crate::filters::DateTimeOrEmpty>, inline)]
    pub to: Option<String>,
}

/// The OpenAPI schema of a bulk filter's `state`: any state a queue holds, or empty.
pub struct BulkStateFilter;

impl utoipa::PartialSchema for BulkStateFilter {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        crate::filters::one_of_or_empty(JobState::REDIS.iter().map(|(s, _)| s.as_str()))
    }
}

impl ToSchema for BulkStateFilter {}

/// A bulk action request.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkJobRequest {
    /// `retry` (dead jobs), `delete` (finished jobs) or `cancel` (jobs not started: waiting,
    /// delayed, retrying).
    pub action: BulkJobAction,
    /// Which jobs.
    #[serde(default)]
    pub filter: BulkJobFilter,
    /// Count the jobs and hand out a confirmation token; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The dry run's token, needed over 100 jobs.
    #[schema(max_length = 200)]
    pub confirmation_token: Option<String>,
}

impl Validate for BulkJobRequest {
    type Valid = Self;

    fn validate(self) -> std::result::Result<Self, FieldErrors> {
        match &self.confirmation_token {
            Some(t) if t.len() > 200 => Err(FieldErrors::one(
                "confirmationToken",
                "must be at most 200 characters",
            )),
            _ => Ok(self),
        }
    }
}

/// `errors` of the filter, named as fields of the body's `filter`.
fn in_filter(errors: FieldErrors) -> FieldErrors {
    let mut named = FieldErrors::new();
    for e in errors.into_vec() {
        named.add(format!("filter.{}", e.field), e.message);
    }
    named
}

/// What a bulk action matched, and did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkJobResult {
    /// The action.
    pub action: BulkJobAction,
    /// Whether this was a dry run (nothing changed).
    pub dry_run: bool,
    /// Jobs the filter matches now.
    pub matched: i64,
    /// Jobs acted on (0 for a dry run, and for a set left to a `bulk_jobs` job).
    pub done: i64,
    /// Jobs that changed state meanwhile and were left alone.
    pub skipped: i64,
    /// The `bulk_jobs` job acting on a set over 1,000 jobs (`GET /api/v1/jobs/{id}`: its
    /// progress `{total, done, skipped, overQuota}` and, once done, the same as its result).
    pub job_id: Option<Uuid>,
    /// Whether running it needs `confirmationToken`.
    pub confirmation_required: bool,
    /// The token to send back (dry run only).
    pub confirmation_token: Option<String>,
}

/// What the confirmation token is bound to: the caller, the action and the filter as read.
fn bound_to(caller: &str, action: BulkJobAction, f: &ArchiveFilter) -> String {
    format!("jobs-bulk|{caller}|{action:?}|{f:?}")
}

/// Retries the dead jobs, or deletes the finished jobs, a filter matches; a dry run counts them.
///
/// Permission: `jobs:write` over the caller's project; platform operators with `queues:write`
/// over every project (`filter.projectId` narrows; another project's id is a 404 for anyone
/// else). 422 names every invalid field, and refuses
/// a set over 100,000 jobs (narrow the filter); a retry takes dead jobs only (with another
/// `filter.state` it matches nothing). Over 100
/// jobs, `confirmationToken` from a dry run with the same action and filter (valid 10 minutes)
/// is needed (409 without it). A retry must fit under every touched project's open-jobs quota
/// (429, nothing retried). Jobs that changed state since they were archived are skipped. Up to
/// 1,000 jobs are acted on in the request (200); a larger set, up to 100,000, by a `bulk_jobs`
/// job (202 with its `jobId`: `GET /api/v1/jobs/{id}` shows its progress and result).
#[utoipa::path(post, path = "/api/v1/jobs/bulk", tag = "jobs",
    request_body = BulkJobRequest,
    security(("bearer" = ["jobs:write"])),
    responses((status = 200, body = inline(Data<BulkJobResult>), description = "Done in the request (up to 1,000 jobs), or a dry run"),
              (status = 202, body = inline(Data<BulkJobResult>), description = "Over 1,000 jobs: a `bulk_jobs` job acts on them (`jobId`)"),
              (status = 409, body = ErrorEnvelope, description = "Over 100 jobs without the dry run's confirmation token"),
              (status = 404, body = ErrorEnvelope, description = "`filter.projectId` names another project"),
              (status = 422, body = ErrorEnvelope),
              (status = 429, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn bulk_jobs(
    auth: Authorized<JobsWrite>,
    State(s): State<AppState>,
    ValidJson(req): ValidJson<BulkJobRequest>,
) -> Result<(StatusCode, ApiJson<Data<BulkJobResult>>)> {
    let mut f = req.filter;
    super::search::own_project(&auth.claims, "queues:write", f.project_id.as_deref())?;
    // any queue state is schema-valid; the action decides which ones match (`targets`)
    let state = match crate::filters::given(f.state.take().as_deref()) {
        None => None,
        Some(s) => Some(
            JobState::parse(s)
                .filter(|st| *st != JobState::Pending)
                .ok_or_else(|| {
                    FieldErrors::one(
                        "filter.state",
                        "must be a job state: waiting, delayed, active, retrying, completed, \
                         dead or cancelled",
                    )
                })?,
        ),
    };
    let mut archive = filter(
        &auth.claims,
        "queues:write",
        JobSearchParams {
            queue: f.queue,
            kind: f.kind,
            state: f.state,
            project_id: f.project_id,
            error: f.error,
            fingerprint: f.fingerprint,
            id_prefix: f.id_prefix,
            from: f.from,
            to: f.to,
            ..JobSearchParams::default()
        },
    )
    .map_err(in_filter)?;
    archive.state = state;
    let targets =
        shared::jobs::targets(&s.pool, &s.queues, req.action, &archive, MAX_BULK_JOBS + 1).await?;
    let matched = targets.len() as i64;
    if matched > MAX_BULK_JOBS {
        return Err(FieldErrors::one(
            "filter",
            format!(
                "matches more than {MAX_BULK_JOBS} jobs; narrow it (a time window, a queue, an \
                 error)"
            ),
        )
        .into());
    }
    let caller = auth.claims.sub.clone();
    let bound = bound_to(&caller, req.action, &archive);
    let confirmation_required = matched > CONFIRM_OVER;
    let mut result = BulkJobResult {
        action: req.action,
        dry_run: req.dry_run,
        matched,
        done: 0,
        skipped: 0,
        confirmation_required,
        confirmation_token: None,
        job_id: None,
    };
    if req.dry_run {
        let expires = (Utc::now() + CONFIRM_FOR).timestamp();
        result.confirmation_token = Some(crate::confirm::token(&s, &bound, expires));
        return Ok((StatusCode::OK, ApiJson(Data::new(result))));
    }
    if confirmation_required
        && !crate::confirm::matches(&s, req.confirmation_token.as_deref(), &bound)
    {
        return Err(ApiError::Conflict(format!(
            "{matched} jobs need confirmation: send the same request with \"dryRun\": true, \
             then again with its confirmationToken (valid 10 minutes)"
        )));
    }
    if req.action == BulkJobAction::Retry {
        let mut per_project: HashMap<Uuid, u64> = HashMap::new();
        for t in &targets {
            *per_project
                .entry(t.project_id.unwrap_or_default())
                .or_default() += 1;
        }
        for (project, n) in &per_project {
            quota::check_open_jobs(&s, *project, *n).await?;
        }
    }
    let scope = job_scope(&auth.claims, "queues:write");
    if matched > IN_REQUEST {
        // too many for one request: a job acts on them, reporting progress
        let owner = scope.unwrap_or(PLATFORM);
        if scope.is_some() {
            quota::admit(&s, owner).await?;
        }
        let job = BulkJobs {
            project_id: owner,
            action: req.action,
            filter: archive,
            requested_by: caller.clone(),
        };
        let enqueued = job
            .enqueue_now(&s.queues, crate::request_id::enqueue_options())
            .await?;
        tracing::info!(action = ?req.action, matched, job_id = %enqueued.id, by = %caller,
            "bulk job action queued");
        result.job_id = Some(enqueued.id);
        return Ok((StatusCode::ACCEPTED, ApiJson(Data::new(result))));
    }
    for t in &targets {
        if req.action.apply(&s.pool, &s.queues, t, scope).await? {
            result.done += 1;
        } else {
            result.skipped += 1;
        }
    }
    tracing::info!(action = ?req.action, matched, done = result.done, skipped = result.skipped,
        by = %caller, "bulk job action");
    Ok((StatusCode::OK, ApiJson(Data::new(result))))
}
