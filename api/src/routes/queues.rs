//! Queue counts for ops: how many jobs wait, run, retry and died, per queue (no tenant data).

use axum::extract::State;
use utoipa_axum::{router::OpenApiRouter, routes};

use shared::queue::QueueCounts;

use crate::{
    AppState,
    auth::{Authorized, QueuesRead},
    envelope::Data,
    error::{ApiJson, Result},
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_queues))
}

/// Job counts per queue and state.
///
/// Permission: `queues:read`.
#[utoipa::path(get, path = "/api/v1/queues", tag = "jobs",
    security(("bearer" = ["queues:read"])),
    responses((status = 200, body = inline(Data<Vec<QueueCounts>>)),
              (status = 401, body = crate::error::ErrorEnvelope),
              (status = 403, body = crate::error::ErrorEnvelope),
              (status = 503, body = crate::error::ErrorEnvelope)))]
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
