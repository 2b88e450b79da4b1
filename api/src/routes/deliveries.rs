//! `GET /notifications/{id}/deliveries`: every recorded delivery attempt of a notification, for
//! the project's admins: one entry per (channel, target, job attempt) with its outcome, HTTP
//! status or SMTP reply, and error.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::Serialize;
use shared::db::{self, deliveries::AttemptRow};
use utoipa::ToSchema;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Authorized, DeliveriesRead},
    envelope::{ApiJson, Data},
    error::{ApiError, AuthRefusals, ErrorEnvelope, Result},
    extract::PathId,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new().routes(routes!(list_deliveries))
}

/// The most attempts one answer lists.
const MAX_ATTEMPTS: i64 = 1000;

/// One target's result in one attempt of a delivery job.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeliveryAttempt {
    /// `inApp`, `email` or `webhook`.
    pub channel: String,
    /// The recipient (in-app, email) or the webhook endpoint.
    pub target_id: Uuid,
    /// The job's attempt number (1-based).
    pub attempt: i32,
    /// The job that made the attempt: `deliver_notification`, or for a rule's in-app channel
    /// the `process_event` job that stored the notification and delivered it in the same
    /// transaction.
    pub job_id: Uuid,
    /// When the target's attempt started.
    pub started_at: DateTime<Utc>,
    /// When it was recorded.
    pub finished_at: DateTime<Utc>,
    /// `ok`, `retry` (failed, retried later), `permanent` (failed for good), `skipped`
    /// (preferences, inactive user, disabled endpoint) or `deferred` (quiet hours).
    pub outcome: String,
    /// A webhook's HTTP status.
    pub http_status: Option<i32>,
    /// The SMTP server's reply (addresses redacted).
    pub smtp_reply: Option<String>,
    /// Why it failed or was skipped.
    pub error: Option<String>,
}

impl From<AttemptRow> for DeliveryAttempt {
    fn from(r: AttemptRow) -> Self {
        Self {
            channel: r.channel,
            target_id: r.target_id,
            attempt: r.attempt,
            job_id: r.job_id,
            started_at: r.started_at,
            finished_at: r.finished_at,
            outcome: r.outcome,
            http_status: r.http_status,
            smtp_reply: r.smtp_reply,
            error: r.error,
        }
    }
}

/// A notification's delivery attempts, by channel, target and attempt (at most 1000).
///
/// Permission: `deliveries:read`. Another project's notification is not found.
#[utoipa::path(get, path = "/api/v1/notifications/{id}/deliveries", tag = "notifications",
    params(("id" = Uuid, Path, description = "Notification id")),
    security(("bearer" = ["deliveries:read"])),
    responses((status = 200, body = inline(Data<Vec<DeliveryAttempt>>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
async fn list_deliveries(
    auth: Authorized<DeliveriesRead>,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<ApiJson<Data<Vec<DeliveryAttempt>>>> {
    let project = auth.claims.project_id;
    if !db::deliveries::notification_exists(&s.pool, project, id).await? {
        return Err(ApiError::NotFound("notification"));
    }
    let rows = db::deliveries::attempts(&s.pool, project, id, MAX_ATTEMPTS).await?;
    Ok(ApiJson(Data::new(
        rows.into_iter().map(DeliveryAttempt::from).collect(),
    )))
}
