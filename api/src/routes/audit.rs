//! The audit log of the caller's project: list (newest first) and CSV export, with the same
//! filters.

use axum::{extract::State, response::Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use shared::db::{
    self,
    audit::{AuditFilter, Entry},
};
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{self, AuditRead, Authorized},
    envelope::{List, PageParams},
    error::{ApiError, ApiJson, ErrorEnvelope, Result},
    extract::ApiQuery,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_audit_logs))
        .routes(routes!(export_audit_logs))
}

/// Filters of the audit log.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Exact action, e.g. `invitation.created`, `login.failed`, `user.deactivated`.
    pub action: Option<String>,
    /// The acting user's id.
    #[param(value_type = Option<Uuid>)]
    pub actor: Option<String>,
    /// The target's id (e.g. a user id).
    pub target: Option<String>,
    /// From this instant, inclusive (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub from: Option<String>,
    /// Until this instant, exclusive (RFC 3339).
    #[param(value_type = Option<DateTime<Utc>>)]
    pub to: Option<String>,
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.map(|s| s.trim().to_owned()).filter(|s| !s.is_empty())
}

fn instant(field: &str, v: Option<String>) -> Result<Option<DateTime<Utc>>> {
    non_empty(v)
        .map(|s| {
            DateTime::parse_from_rfc3339(&s)
                .map(|t| t.with_timezone(&Utc))
                .map_err(|_| {
                    ApiError::invalid(field, "must be an RFC 3339 time, e.g. 2026-11-21T10:00:00Z")
                })
        })
        .transpose()
}

impl AuditParams {
    fn parse(self) -> Result<AuditFilter> {
        let action = non_empty(self.action);
        let target_id = non_empty(self.target);
        for (field, v) in [("action", &action), ("target", &target_id)] {
            if v.as_ref().is_some_and(|v| v.len() > 200) {
                return Err(ApiError::invalid(field, "must be at most 200 characters"));
            }
        }
        let actor_id = non_empty(self.actor)
            .map(|a| {
                Uuid::parse_str(&a)
                    .map_err(|_| ApiError::invalid("actor", "must be a user id (UUID)"))
            })
            .transpose()?;
        let from = instant("from", self.from)?;
        let to = instant("to", self.to)?;
        if let (Some(f), Some(t)) = (from, to)
            && f > t
        {
            return Err(ApiError::invalid("to", "must not be before `from`"));
        }
        Ok(AuditFilter {
            action,
            actor_id,
            target_id,
            from,
            to,
        })
    }
}

/// The project's audit log, newest first, filtered and paginated. Each entry carries the id
/// of the request that caused it.
///
/// Permission: `audit:read`.
#[utoipa::path(get, path = "/api/v1/audit-logs", tag = "audit",
    params(PageParams, AuditParams),
    security(("bearer" = ["audit:read"])),
    responses((status = 200, body = inline(List<Entry>)),
              (status = 400, body = ErrorEnvelope),
              (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              (status = 503, body = ErrorEnvelope)))]
async fn list_audit_logs(
    auth: Authorized<AuditRead>,
    State(s): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<ApiJson<List<Entry>>> {
    let page = page.check()?;
    let filter = params.parse()?;
    let (entries, total) = db::audit::list(
        &s.pool,
        auth.claims.project_id,
        &filter,
        page.offset() as i64,
        i64::from(page.per_page),
    )
    .await?;
    Ok(ApiJson(page.list(entries, total.max(0) as u64)))
}

fn entry_cells(e: Entry) -> Vec<String> {
    vec![
        e.id.to_string(),
        e.at.to_rfc3339(),
        e.action,
        e.actor_id.map(|a| a.to_string()).unwrap_or_default(),
        e.target_type.unwrap_or_default(),
        e.target_id.unwrap_or_default(),
        e.request_id.unwrap_or_default(),
        e.metadata.to_string(),
    ]
}

/// The audit entries matching the filters, newest first, as a CSV download (header row, then
/// one row per entry; `metadata` is JSON). Counts as activity.
///
/// Permission: `audit:read`.
#[utoipa::path(get, path = "/api/v1/audit-logs/export", tag = "audit",
    params(AuditParams),
    security(("bearer" = ["audit:read"])),
    responses((status = 200, content_type = "text/csv", body = String,
               description = "id,at,action,actorId,targetType,targetId,requestId,metadata"),
              (status = 400, body = ErrorEnvelope),
              (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              (status = 503, body = ErrorEnvelope)))]
async fn export_audit_logs(
    auth: Authorized<AuditRead>,
    State(s): State<AppState>,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<Response> {
    let filter = params.parse()?;
    auth::track_activity(&s, &auth.claims);
    let rows = db::audit::stream(s.pool.clone(), auth.claims.project_id, &filter);
    crate::csv_export::response(
        "audit-log.csv",
        &[
            "id",
            "at",
            "action",
            "actorId",
            "targetType",
            "targetId",
            "requestId",
            "metadata",
        ],
        rows,
        entry_cells,
    )
    .await
}
