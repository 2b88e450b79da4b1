//! The audit log of the caller's project: list (newest first) and CSV export, with the same
//! filters.

use axum::{extract::State, response::Response};
use serde::Deserialize;
use shared::{
    db::{
        self,
        audit::{AuditFilter, Entry},
    },
    domain::{FieldErrors, SearchTerm},
};
use utoipa::IntoParams;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    AppState,
    auth::{self, AuditRead, Authorized},
    envelope::{ApiJson, List, PageParams},
    error::{AuthRefusals, ErrorEnvelope, Result},
    extract::ApiQuery,
    filters,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(list_audit_logs))
        .routes(routes!(export_audit_logs))
}

/// Filters of the audit log (empty is no filter, see [`crate::filters`]).
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct AuditParams {
    /// Exact action, e.g. `invitation.created`, `login.failed`, `user.deactivated`.
    #[param(value_type = Option<SearchTerm>, inline)]
    pub action: Option<String>,
    /// The acting user's id.
    #[param(value_type = Option<filters::UuidOrEmpty>, inline)]
    pub actor: Option<String>,
    /// The target's id (e.g. a user id).
    #[param(value_type = Option<SearchTerm>, inline)]
    pub target: Option<String>,
    /// From this instant, inclusive (RFC 3339).
    #[param(value_type = Option<filters::DateTimeOrEmpty>, inline)]
    pub from: Option<String>,
    /// Until this instant, exclusive (RFC 3339); not before `from`.
    #[param(value_type = Option<filters::DateTimeOrEmpty>, inline)]
    pub to: Option<String>,
}

impl AuditParams {
    fn parse(self) -> Result<AuditFilter, FieldErrors> {
        let mut errors = FieldErrors::new();
        let action = errors.check("action", SearchTerm::parse_optional(self.action.as_deref()));
        let target_id = errors.check("target", SearchTerm::parse_optional(self.target.as_deref()));
        let actor_id = errors.check("actor", filters::uuid(self.actor.as_deref(), "a user id"));
        let from = errors.check("from", filters::instant(self.from.as_deref()));
        let to = errors.check("to", filters::instant(self.to.as_deref()));
        if let (Some(Some(f)), Some(Some(t))) = (from, to)
            && f > t
        {
            errors.add("to", "must not be before `from`");
        }
        match (action, target_id, actor_id, from, to) {
            (Some(action), Some(target_id), Some(actor_id), Some(from), Some(to))
                if errors.is_empty() =>
            {
                Ok(AuditFilter {
                    action: action.map(SearchTerm::into_string),
                    actor_id,
                    target_id: target_id.map(SearchTerm::into_string),
                    from,
                    to,
                })
            }
            _ => Err(errors),
        }
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
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
async fn list_audit_logs(
    auth: Authorized<AuditRead>,
    State(s): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(params): ApiQuery<AuditParams>,
) -> Result<ApiJson<List<Entry>>> {
    let (page, filter) = FieldErrors::both(page.check(), params.parse())?;
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
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
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
