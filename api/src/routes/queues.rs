//! Queue views for platform operators: counts per state, and the jobs in one state.
//!
//! `queues:read` is a platform-operator permission: these views span every project (like a
//! Sidekiq or BullMQ dashboard). Tenant users hold `jobs:*`, which only ever see their project.

use axum::extract::State;
use serde::Deserialize;
use utoipa::{
    IntoParams, PartialSchema, ToSchema,
    openapi::{
        RefOr,
        schema::{ObjectBuilder, Schema, Type},
    },
};
use utoipa_axum::{router::OpenApiRouter, routes};

use shared::queue::{JobRecord, JobState, QueueCounts};

use crate::{
    AppState,
    auth::{Authorized, QueuesRead},
    envelope::{ApiJson, Data, List, PageParams},
    error::{ApiError, AuthRefusals, Result},
    extract::{ApiPath, ApiQuery},
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_queues))
        .routes(routes!(list_queue_jobs))
}

/// Job counts per queue and state.
///
/// Permission: `queues:read`.
#[utoipa::path(get, path = "/api/v1/queues", tag = "jobs",
    security(("bearer" = ["queues:read"])),
    responses((status = 200, body = inline(Data<Vec<QueueCounts>>)),
              AuthRefusals))]
async fn list_queues(
    _auth: Authorized<QueuesRead>,
    State(s): State<AppState>,
) -> Result<ApiJson<Data<Vec<QueueCounts>>>> {
    let mut out = Vec::with_capacity(shared::jobs::QUEUES.len());
    for q in shared::jobs::QUEUES {
        out.push(s.queues.counts(q).await?);
    }
    Ok(ApiJson(Data::new(out)))
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

/// The jobs of one queue in one state: finished states newest first, others in run order.
///
/// Permission: `queues:read` (platform operators; spans every project).
#[utoipa::path(get, path = "/api/v1/queues/{queue}/jobs", tag = "jobs",
    params(("queue" = String, Path, description = "Queue name"), ListJobsQuery),
    security(("bearer" = ["queues:read"])),
    responses((status = 200, body = inline(List<JobRecord>)),
              (status = 400, body = crate::error::ErrorEnvelope),
              (status = 404, body = crate::error::ErrorEnvelope),
              (status = 422, body = crate::error::ErrorEnvelope),
              AuthRefusals))]
async fn list_queue_jobs(
    _auth: Authorized<QueuesRead>,
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
    let (jobs, total) = s
        .queues
        .list(queue, q.state, page.offset(), page.per_page as usize)
        .await?;
    Ok(ApiJson(page.list(jobs, total)))
}
