//! The inbox's REST routes: list (filters, keyset cursor), one item, unread count,
//! acknowledge one or all, delete (for the caller only), webview actions.

use axum::{extract::State, http::StatusCode, response::IntoResponse};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    db::inbox_items::{self as items, InboxFilter},
    domain::{FieldErrors, Invalid},
    inbox::{self, InboxItem},
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::inbox_owner;
use crate::{
    AppState,
    auth::Authenticated,
    envelope::{ApiJson, Created, CursorList, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, ErrorEnvelope, Result},
    extract::{ApiQuery, PathId, ValidJson, Validate},
    filters,
};

/// Longest webview action name.
const MAX_ACTION: usize = 100;
/// Largest webview action `data`, as JSON.
const MAX_ACTION_DATA: usize = 8 * 1024;

/// Filters and cursor of the inbox.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct InboxParams {
    /// Only unread (`true`) or only read (`false`) notifications.
    pub unread: Option<bool>,
    /// Only notifications someone acknowledged (`true`) or no one did (`false`).
    pub acknowledged: Option<bool>,
    /// Only this rule's notifications.
    #[param(value_type = Option<filters::UuidOrEmpty>, inline)]
    pub rule_id: Option<String>,
    /// Created at or after (RFC 3339).
    #[param(value_type = Option<filters::DateTimeOrEmpty>, inline)]
    pub from: Option<String>,
    /// Created before (RFC 3339).
    #[param(value_type = Option<filters::DateTimeOrEmpty>, inline)]
    pub to: Option<String>,
    /// The previous page's `meta.nextCursor`.
    #[param(value_type = Option<Uuid>)]
    pub before: Option<String>,
    /// Notifications per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

impl InboxParams {
    fn parse(self) -> Result<(InboxFilter, Option<Uuid>, u32), FieldErrors> {
        let mut errors = FieldErrors::new();
        let rule_id = errors.check(
            "ruleId",
            filters::uuid(self.rule_id.as_deref(), "a rule id"),
        );
        let from = errors.check("from", filters::instant(self.from.as_deref()));
        let to = errors.check("to", filters::instant(self.to.as_deref()));
        let before = errors.check(
            "before",
            self.before
                .as_deref()
                .map(|b| {
                    Uuid::parse_str(b).map_err(|_| {
                        Invalid::new("is not a cursor from this list (meta.nextCursor)")
                    })
                })
                .transpose(),
        );
        let limit = errors.check(
            "limit",
            shared::domain::within(self.limit.unwrap_or(50), 1..=100),
        );
        match (rule_id, from, to, before, limit) {
            (Some(rule_id), Some(from), Some(to), Some(before), Some(limit))
                if errors.is_empty() =>
            {
                let filter = InboxFilter {
                    unread: self.unread,
                    acknowledged: self.acknowledged,
                    rule_id,
                    from,
                    to,
                };
                Ok((filter, before, limit))
            }
            _ => Err(errors),
        }
    }
}

/// The caller's notifications (delivered to their inbox, not deleted), newest first; page
/// with `before` = the previous page's `meta.nextCursor`.
///
/// Any user's token of the project (no permission needed: only the user's own notifications).
#[utoipa::path(get, path = "/api/v1/notifications", tag = "inbox",
    params(InboxParams),
    security(("bearer" = [])),
    responses((status = 200, body = inline(CursorList<InboxItem>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope, description = "The token is not a user's"),
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn list_notifications(
    auth: Authenticated,
    State(s): State<AppState>,
    ApiQuery(params): ApiQuery<InboxParams>,
) -> Result<ApiJson<CursorList<InboxItem>>> {
    let (project_id, user_id) = inbox_owner(&auth)?;
    let (filter, before, limit) = params.parse()?;
    let rows = items::list(
        &s.pool,
        project_id,
        user_id,
        &filter,
        before,
        i64::from(limit) + 1,
    )
    .await?;
    Ok(ApiJson(CursorList::new(
        rows.into_iter().map(InboxItem::from).collect(),
        limit,
        |n: &InboxItem| n.id.to_string(),
    )))
}

/// One notification of the caller's inbox; 404 for one they did not receive, deleted, or of
/// another project.
///
/// Any user's token of the project.
#[utoipa::path(get, path = "/api/v1/notifications/{id}", tag = "inbox",
    params(("id" = Uuid, Path, description = "Notification id")),
    security(("bearer" = [])),
    responses((status = 200, body = inline(Data<InboxItem>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn get_notification(
    auth: Authenticated,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<ApiJson<Data<InboxItem>>> {
    let (project_id, user_id) = inbox_owner(&auth)?;
    let row = items::find(&s.pool, project_id, user_id, id)
        .await?
        .ok_or(ApiError::NotFound("notification"))?;
    Ok(ApiJson(Data::new(row.into())))
}

/// The unread count.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UnreadCount {
    /// Notifications in the caller's inbox they have not acknowledged.
    pub unread: i64,
}

/// How many notifications of the caller's inbox are unread (a counter kept with every
/// change: as fast with 100,000 notifications as with none).
///
/// Any user's token of the project.
#[utoipa::path(get, path = "/api/v1/notifications/unread-count", tag = "inbox",
    security(("bearer" = [])),
    responses((status = 200, body = inline(Data<UnreadCount>)),
              (status = 404, body = ErrorEnvelope, description = "The token is not a user's"),
              AuthRefusals))]
pub(super) async fn unread_count(
    auth: Authenticated,
    State(s): State<AppState>,
) -> Result<ApiJson<Data<UnreadCount>>> {
    let (project_id, user_id) = inbox_owner(&auth)?;
    let (_, unread) = shared::db::inbox::counters(&s.pool, project_id, user_id).await?;
    Ok(ApiJson(Data::new(UnreadCount { unread })))
}

/// Acknowledges a notification: read for the caller, and, if no one had, the caller becomes
/// its `acknowledgedBy`, which every recipient sees (their streams get an `acknowledged`
/// event). Acknowledging again changes nothing. 404 as for `GET`.
///
/// Any user's token of the project.
#[utoipa::path(put, path = "/api/v1/notifications/{id}/acknowledge", tag = "inbox",
    params(("id" = Uuid, Path, description = "Notification id")),
    security(("bearer" = [])),
    responses((status = 200, body = inline(Data<InboxItem>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn acknowledge(
    auth: Authenticated,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<ApiJson<Data<InboxItem>>> {
    let (project_id, user_id) = inbox_owner(&auth)?;
    let item = inbox::acknowledge(&s.pool, &s.queues, project_id, user_id, id)
        .await?
        .ok_or(ApiError::NotFound("notification"))?;
    Ok(ApiJson(Data::new(item)))
}

/// What acknowledge-all did.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcknowledgedAll {
    /// Notifications that were unread and now are acknowledged.
    pub acknowledged: u64,
}

/// Acknowledges every unread notification of the caller's inbox (each as
/// `PUT /api/v1/notifications/{id}/acknowledge`).
///
/// Any user's token of the project.
#[utoipa::path(post, path = "/api/v1/notifications/acknowledge-all", tag = "inbox",
    security(("bearer" = [])),
    responses((status = 200, body = inline(Data<AcknowledgedAll>)),
              (status = 404, body = ErrorEnvelope, description = "The token is not a user's"),
              AuthRefusals))]
pub(super) async fn acknowledge_all(
    auth: Authenticated,
    State(s): State<AppState>,
) -> Result<ApiJson<Data<AcknowledgedAll>>> {
    let (project_id, user_id) = inbox_owner(&auth)?;
    let acknowledged = inbox::acknowledge_all(&s.pool, &s.queues, project_id, user_id).await?;
    Ok(ApiJson(Data::new(AcknowledgedAll { acknowledged })))
}

/// Deletes a notification from the caller's inbox (soft, for the caller only: the other
/// recipients keep it); the caller's streams get a `deleted` event. 404 as for `GET`.
///
/// Any user's token of the project.
#[utoipa::path(delete, path = "/api/v1/notifications/{id}", tag = "inbox",
    params(("id" = Uuid, Path, description = "Notification id")),
    security(("bearer" = [])),
    responses((status = 204, description = "Deleted"),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn delete_notification(
    auth: Authenticated,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<StatusCode> {
    let (project_id, user_id) = inbox_owner(&auth)?;
    if !inbox::delete(&s.pool, &s.queues, project_id, user_id, id).await? {
        return Err(ApiError::NotFound("notification"));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// An action taken from a notification's view.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct WebviewActionRequest {
    /// What the user did, e.g. `open_runbook` (1 to 100 of letters, digits, `_ . : -`).
    #[schema(
        required = true,
        nullable = false,
        min_length = 1,
        max_length = 100,
        pattern = "^[A-Za-z0-9_.:-]+$"
    )]
    pub action: Option<String>,
    /// Any JSON object, at most 8 KiB as JSON, without NUL characters.
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
}

/// A validated webview action.
pub struct NewAction {
    action: String,
    data: Option<serde_json::Value>,
}

impl Validate for WebviewActionRequest {
    type Valid = NewAction;

    fn validate(self) -> Result<NewAction, FieldErrors> {
        let mut errors = FieldErrors::new();
        let action = errors.check(
            "action",
            shared::domain::required(self.action).and_then(|a| {
                let ok = !a.is_empty()
                    && a.len() <= MAX_ACTION
                    && a.chars()
                        .all(|c| c.is_ascii_alphanumeric() || "_.:-".contains(c));
                if ok {
                    Ok(a)
                } else {
                    Err(Invalid::new(format!(
                        "must be 1 to {MAX_ACTION} of letters, digits, `_`, `.`, `:`, `-`"
                    )))
                }
            }),
        );
        let data = errors.check(
            "data",
            self.data
                .map(|d| {
                    let size = serde_json::to_vec(&d).map_or(usize::MAX, |b| b.len());
                    if !d.is_object() {
                        Err(Invalid::new("must be a JSON object"))
                    } else if size > MAX_ACTION_DATA {
                        Err(Invalid::new(format!(
                            "must be at most {MAX_ACTION_DATA} bytes as JSON; this is {size}"
                        )))
                    } else if d.to_string().contains("\\u0000") {
                        Err(Invalid::new("must not contain NUL characters (\\u0000)"))
                    } else {
                        Ok(d)
                    }
                })
                .transpose(),
        );
        match (action, data) {
            (Some(action), Some(data)) if errors.is_empty() => Ok(NewAction { action, data }),
            _ => Err(errors),
        }
    }
}

/// A recorded webview action.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WebviewAction {
    /// Id.
    pub id: Uuid,
    /// The notification.
    pub notification_id: Uuid,
    /// Who took it.
    pub user_id: Uuid,
    /// What.
    pub action: String,
    /// With what.
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Records an action the caller took from a notification's view (`{action, data?}`); 201.
/// 404 as for `GET`.
///
/// Any user's token of the project.
#[utoipa::path(post, path = "/api/v1/notifications/{id}/webview-action", tag = "inbox",
    params(("id" = Uuid, Path, description = "Notification id")),
    request_body = WebviewActionRequest,
    security(("bearer" = [])),
    responses((status = 201, body = inline(Data<WebviewAction>)),
              (status = 404, body = ErrorEnvelope),
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn webview_action(
    auth: Authenticated,
    State(s): State<AppState>,
    PathId(id): PathId,
    ValidJson(new): ValidJson<WebviewActionRequest>,
) -> Result<impl IntoResponse> {
    let (project_id, user_id) = inbox_owner(&auth)?;
    let row = items::record_action(
        &s.pool,
        project_id,
        user_id,
        id,
        &new.action,
        new.data.as_ref(),
    )
    .await?
    .ok_or(ApiError::NotFound("notification"))?;
    tracing::info!(notification_id = %id, action = %row.action, "webview action recorded");
    Ok(Created {
        location: format!("/api/v1/notifications/{id}"),
        data: WebviewAction {
            id: row.webview_action_id,
            notification_id: row.notification_id,
            user_id: row.user_id,
            action: row.action,
            data: row.data,
            created_at: row.created_at,
        },
    })
}
