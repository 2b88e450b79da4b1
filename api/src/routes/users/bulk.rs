//! Bulk actions on users: `POST /api/v1/users/bulk` previews (`dryRun`) or starts one
//! (deactivate, reactivate, add or remove a role, delete) over users given by id or by the
//! user list's filter; the `bulk_users` job applies it with progress and a result per user.
//!
//! A destructive action (deactivate, remove-role, delete) over more than
//! [`CONFIRM_OVER`] users must echo the `confirmationToken` its preview returned: an HMAC
//! (under `JWT_SECRET`) of the project, the caller, the action and its targets, valid 10
//! minutes. Nothing is stored for it.

use axum::extract::State;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    db::{
        self,
        bulk_actions::{BulkAction, BulkKind, BulkResult, NewBulkAction, Targets},
    },
    domain::{FieldErrors, required},
    jobs::{BulkUsers, Job as _},
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use super::list::UserFilterParams;
use crate::{
    AppState,
    auth::{Authorized, UserRead},
    envelope::{Accepted, ApiJson, Data},
    error::{ApiError, AuthRefusals, BodyRefusals, EnqueueRefusals, ErrorEnvelope, Result},
    extract::{ApiQuery, PathId, ValidJson, Validate},
    quota, request_id,
};

/// Destructive actions over more users than this need the preview's confirmation token.
pub const CONFIRM_OVER: i64 = 100;
/// Most ids one request names.
pub const MAX_IDS: usize = 10_000;
/// How long a confirmation token works.
const CONFIRM_SECS: i64 = 600;

/// The list filter, as a bulk action's targets.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkFilter {
    /// `INVITED`, `ACTIVE` or `DEACTIVATED` (or in lower case; empty: any).
    #[schema(value_type = Option<super::list::StatusFilter>, inline)]
    pub status: Option<String>,
    /// Holders of this role (a role id; empty: any).
    #[schema(value_type = Option<crate::filters::UuidOrEmpty>, inline)]
    pub role: Option<String>,
    /// Substring of the email or name (case-insensitive).
    #[schema(value_type = Option<shared::domain::SearchTerm>, inline)]
    pub search: Option<String>,
}

/// A bulk action.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkRequest {
    /// What to do to each user.
    #[schema(required = true, nullable = false)]
    pub action: Option<BulkKind>,
    /// The role, for `add-role` and `remove-role` (only for them).
    pub role_id: Option<Uuid>,
    /// The users, by id (1 to 10,000); or give `filter`.
    #[schema(min_items = 1, max_items = 10000)]
    pub user_ids: Option<Vec<Uuid>>,
    /// The users `GET /api/v1/users` lists with this filter (`{}`: every user); or give
    /// `userIds`.
    pub filter: Option<BulkFilter>,
    /// Count the users and return a confirmation token; change nothing.
    #[serde(default)]
    pub dry_run: bool,
    /// The preview's token: needed for a destructive action over more than 100 users.
    #[schema(max_length = 200)]
    pub confirmation_token: Option<String>,
}

/// A valid [`BulkRequest`].
#[derive(Debug)]
pub struct Bulk {
    kind: BulkKind,
    role_id: Option<Uuid>,
    targets: Targets,
    dry_run: bool,
    confirmation_token: Option<String>,
}

impl Validate for BulkRequest {
    type Valid = Bulk;

    fn validate(self) -> Result<Bulk, FieldErrors> {
        let mut errors = FieldErrors::new();
        let kind = errors.check("action", required(self.action));
        if let Some(kind) = kind {
            match (kind.needs_role(), self.role_id) {
                (true, None) => errors.add("roleId", format!("{} needs a roleId", kind.as_str())),
                (false, Some(_)) => {
                    errors.add("roleId", format!("{} takes no roleId", kind.as_str()))
                }
                _ => {}
            }
        }
        let targets = match (self.user_ids, self.filter) {
            (Some(_), Some(_)) | (None, None) => {
                errors.add("userIds", "give either userIds or filter");
                None
            }
            (Some(mut ids), None) => {
                if ids.is_empty() || ids.len() > MAX_IDS {
                    errors.add("userIds", format!("1 to {MAX_IDS} ids"));
                }
                ids.sort();
                ids.dedup();
                Some(Targets::Ids(ids))
            }
            (None, Some(f)) => {
                let params = UserFilterParams {
                    status: f.status,
                    role: f.role,
                    search: f.search,
                };
                match params.parse() {
                    Ok(filter) => Some(Targets::of_filter(&filter)),
                    Err(e) => {
                        for e in e.into_vec() {
                            errors.add(format!("filter.{}", e.field), e.message);
                        }
                        None
                    }
                }
            }
        };
        let token = self.confirmation_token.filter(|t| !t.is_empty());
        if token.as_ref().is_some_and(|t| t.len() > 200) {
            errors.add("confirmationToken", "at most 200 characters");
        }
        match (kind, targets) {
            (Some(kind), Some(targets)) if errors.is_empty() => Ok(Bulk {
                kind,
                role_id: self.role_id,
                targets,
                dry_run: self.dry_run,
                confirmation_token: token,
            }),
            _ => Err(errors),
        }
    }
}

/// What the confirmation token is bound to.
fn bound_to(project: Uuid, caller: &str, b: &Bulk) -> String {
    let targets = serde_json::to_string(&b.targets).unwrap_or_default();
    format!(
        "bulk|{project}|{caller}|{}|{:?}|{targets}",
        b.kind.as_str(),
        b.role_id
    )
}

fn confirmation_token(s: &AppState, project: Uuid, caller: &str, b: &Bulk, expires: i64) -> String {
    crate::confirm::token(s, &bound_to(project, caller, b), expires)
}

fn confirmed(s: &AppState, project: Uuid, caller: &str, b: &Bulk) -> bool {
    crate::confirm::matches(
        s,
        b.confirmation_token.as_deref(),
        &bound_to(project, caller, b),
    )
}

/// A preview: how many users the action would touch now.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkPreview {
    /// The action.
    pub action: BulkKind,
    /// Users the targets match now (deleted users never).
    pub matched: i64,
    /// Whether starting it needs `confirmationToken`.
    pub confirmation_required: bool,
    /// Echo this to start it (valid 10 minutes, for this caller, action and targets).
    pub confirmation_token: String,
    /// When the token stops working.
    pub confirmation_expires_at: DateTime<Utc>,
}

/// A bulk action: what, progress, counters and the first results.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkView {
    /// Its id.
    pub id: Uuid,
    /// The action.
    pub action: String,
    /// The role, for role actions.
    pub role_id: Option<Uuid>,
    /// `queued`, `running`, `completed` or `failed`.
    pub status: String,
    /// The `bulk_users` job.
    pub job_id: Uuid,
    /// Users matched when it was asked.
    pub total: i64,
    /// Users handled.
    pub processed: i64,
    /// Changed.
    pub succeeded: i64,
    /// Left as they were (already so, yourself, or the last admin).
    pub skipped: i64,
    /// Could not be changed (unknown id, nothing to log in with…).
    pub failed: i64,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// Asked.
    pub created_at: DateTime<Utc>,
    /// Ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// The first 100 results by user id (all at `resultsUrl`).
    pub results: Vec<BulkResult>,
    /// Every result, by cursor.
    pub results_url: String,
}

impl BulkView {
    fn new(a: BulkAction, results: Vec<BulkResult>) -> Self {
        Self {
            results_url: format!("/api/v1/users/bulk/{}/results", a.action_id),
            id: a.action_id,
            action: a.action,
            role_id: a.role_id,
            status: a.status,
            job_id: a.job_id,
            total: a.total,
            processed: a.processed,
            succeeded: a.succeeded,
            skipped: a.skipped,
            failed: a.failed,
            error: a.error,
            created_at: a.created_at,
            finished_at: a.finished_at,
            results,
        }
    }
}

/// A bulk action started.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct BulkStarted {
    /// Follow it at `/api/v1/users/bulk/{bulkId}`.
    pub bulk_id: Uuid,
    /// The action as it starts.
    pub bulk: BulkView,
}

/// The permission an action needs.
fn permission(kind: BulkKind) -> &'static str {
    match kind {
        BulkKind::AddRole | BulkKind::RemoveRole => "user:update",
        BulkKind::Deactivate | BulkKind::Reactivate | BulkKind::Delete => "user:deactivate",
    }
}

/// What a preview or a start answers.
#[derive(Debug)]
pub enum BulkAnswer {
    /// `200`: the preview.
    Preview(ApiJson<Data<BulkPreview>>),
    /// `202`: started.
    Started(Box<Accepted<BulkStarted>>),
}

impl axum::response::IntoResponse for BulkAnswer {
    fn into_response(self) -> axum::response::Response {
        match self {
            Self::Preview(p) => p.into_response(),
            Self::Started(s) => (*s).into_response(),
        }
    }
}

/// Previews (`dryRun`) or starts a bulk action on users given by `userIds` or by `filter` (the
/// filter of `GET /api/v1/users`): `deactivate` (tokens revoked, invitations deleted),
/// `reactivate`, `add-role`, `remove-role` (holders' tokens revoked) or `delete` (soft:
/// deactivated and hidden from lists). The `bulk_users` job applies it, 500 users per
/// transaction, with a result per user; one `revoke_sessions` job per chunk revokes tokens.
///
/// Permission: `user:read` for the route, and the action's own, checked once the body names
/// it (403 naming it): `user:deactivate` for deactivate, reactivate and delete, `user:update`
/// for add-role and remove-role. 409 when the set holds every active admin (for actions
/// that take admins away), or when a destructive action over more than 100 users comes without
/// a valid `confirmationToken` from its preview. 422 for an unknown role.
#[utoipa::path(post, path = "/api/v1/users/bulk", tag = "users",
    request_body = BulkRequest,
    // the route's own permission; the action's (named in the body) is checked after it
    security(("bearer" = ["user:read"])),
    responses((status = 200, body = inline(Data<BulkPreview>), description = "The preview (dryRun)"),
              (status = 202, body = inline(Data<Accepted<BulkStarted>>),
               headers(("Location" = String, description = "The job's status URL"))),
              (status = 409, body = ErrorEnvelope),
              EnqueueRefusals,
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn bulk_users(
    auth: Authorized<UserRead>,
    State(s): State<AppState>,
    ValidJson(b): ValidJson<BulkRequest>,
) -> Result<BulkAnswer> {
    let project = auth.claims.project_id;
    let needed = permission(b.kind);
    if !auth.claims.has(needed) {
        return Err(ApiError::Forbidden(needed));
    }
    if let Some(role) = b.role_id {
        let mut conn = s.pool.acquire().await?;
        if db::roles::existing(&mut conn, project, &[role])
            .await?
            .is_empty()
        {
            return Err(ApiError::invalid(
                "roleId",
                format!("no such role in this project: {role}"),
            ));
        }
    }
    let matched = db::bulk_actions::count(&s.pool, project, &b.targets).await?;
    let caller = auth.claims.sub.clone();
    if b.dry_run {
        let expires = Utc::now().timestamp() + CONFIRM_SECS;
        return Ok(BulkAnswer::Preview(ApiJson(Data::new(BulkPreview {
            action: b.kind,
            matched,
            confirmation_required: b.kind.is_destructive() && matched > CONFIRM_OVER,
            confirmation_token: confirmation_token(&s, project, &caller, &b, expires),
            confirmation_expires_at: DateTime::from_timestamp(expires, 0).unwrap_or_else(Utc::now),
        }))));
    }
    if b.kind.is_destructive() && matched > CONFIRM_OVER && !confirmed(&s, project, &caller, &b) {
        return Err(ApiError::Conflict(format!(
            "{} over {matched} users needs confirmation: send the same request with \
             \"dryRun\": true, then again with its confirmationToken (valid 10 minutes)",
            b.kind.as_str()
        )));
    }
    // the last-admin guard up front, for the whole set (the job holds it chunk by chunk too)
    let mut admin_check = s.pool.acquire().await?;
    if let Some(admin) = db::roles::lock_admin_role(&mut admin_check, project).await?
        && (matches!(b.kind, BulkKind::Deactivate | BulkKind::Delete)
            || (b.kind == BulkKind::RemoveRole && b.role_id == Some(admin)))
    {
        let all = db::roles::active_holders(&mut admin_check, project, admin).await?;
        let among =
            db::bulk_actions::active_holders_among(&s.pool, project, &b.targets, admin).await?;
        if all > 0 && among >= all {
            return Err(ApiError::Conflict(
                "this would leave the project without an active admin (an ACTIVE user with the \
                 admin role): leave at least one active admin out of the set"
                    .into(),
            ));
        }
    }
    drop(admin_check);
    quota::admit(&s, project).await?;
    let action_id = Uuid::now_v7();
    let mut tx = s.pool.begin().await?;
    let job_id = BulkUsers {
        project_id: project,
        action_id,
    }
    .enqueue(&mut tx, request_id::enqueue_options())
    .await?;
    db::bulk_actions::create(
        &mut tx,
        &NewBulkAction {
            action_id,
            project_id: project,
            created_by: auth.user_id(),
            job_id,
            kind: b.kind,
            role_id: b.role_id,
            targets: b.targets,
            total: matched,
        },
    )
    .await?;
    tx.commit().await?;
    s.outbox.wake();
    tracing::info!(%action_id, %job_id, action = b.kind.as_str(), matched, "bulk action started");
    let action = db::bulk_actions::get(&s.pool, project, action_id)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the new bulk action vanished")))?;
    Ok(BulkAnswer::Started(Box::new(Accepted::job(
        job_id,
        BulkStarted {
            bulk_id: action_id,
            bulk: BulkView::new(action, Vec::new()),
        },
    ))))
}

/// A bulk action: status, counters and the first 100 results.
///
/// Permission: `user:read`. Another project's action is not found.
#[utoipa::path(get, path = "/api/v1/users/bulk/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "Bulk action id")),
    security(("bearer" = ["user:read"])),
    responses((status = 200, body = inline(Data<BulkView>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn get_bulk(
    auth: Authorized<UserRead>,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<ApiJson<Data<BulkView>>> {
    let project = auth.claims.project_id;
    let action = db::bulk_actions::get(&s.pool, project, id)
        .await?
        .ok_or(ApiError::NotFound("bulk action"))?;
    let results = db::bulk_actions::results(&s.pool, project, id, None, 100).await?;
    Ok(ApiJson(Data::new(BulkView::new(action, results))))
}

/// Page of results.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ResultParams {
    /// The previous page's `meta.nextCursor` (a user id); empty is no cursor.
    pub after: Option<String>,
    /// Results per page, 1 to 1000 (default 100).
    #[param(minimum = 1, maximum = 1000)]
    pub limit: Option<u32>,
}

/// Every user's result of a bulk action, by user id (cursor).
///
/// Permission: `user:read`. Another project's action is not found.
#[utoipa::path(get, path = "/api/v1/users/bulk/{id}/results", tag = "users",
    params(("id" = Uuid, Path, description = "Bulk action id"), ResultParams),
    security(("bearer" = ["user:read"])),
    responses((status = 200, body = inline(crate::envelope::CursorList<BulkResult>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
pub(super) async fn bulk_results(
    auth: Authorized<UserRead>,
    State(s): State<AppState>,
    PathId(id): PathId,
    ApiQuery(params): ApiQuery<ResultParams>,
) -> Result<ApiJson<crate::envelope::CursorList<BulkResult>>> {
    let project = auth.claims.project_id;
    db::bulk_actions::get(&s.pool, project, id)
        .await?
        .ok_or(ApiError::NotFound("bulk action"))?;
    let limit = params.limit.unwrap_or(100);
    if !(1..=1000).contains(&limit) {
        return Err(ApiError::invalid("limit", "1 to 1000"));
    }
    let after = match params.after.as_deref().filter(|a| !a.is_empty()) {
        None => None,
        Some(a) => Some(
            Uuid::parse_str(a)
                .map_err(|_| ApiError::invalid("after", "not a cursor of this list"))?,
        ),
    };
    let rows = db::bulk_actions::results(&s.pool, project, id, after, i64::from(limit) + 1).await?;
    Ok(ApiJson(crate::envelope::CursorList::new(
        rows,
        limit,
        |r| r.user_id.to_string(),
    )))
}
