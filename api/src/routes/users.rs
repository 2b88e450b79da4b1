//! Users of a project: who am I, invite (and resend), list and export, roles, deactivate.
//!
//! Every query is scoped to the caller's project: another project's user is a 404. Writes run in
//! one transaction with their audit entry and their jobs (through the outbox): a request that
//! fails leaves no user, no audit entry and no job behind.
//!
//! A change that takes permissions away from an ACTIVE user (role change, deactivation) revokes
//! the user's tokens before the response: the "issued before now" marker is written to Redis
//! before the transaction commits (all API processes read it on every request), and a
//! `revoke_sessions` job, enqueued in the same transaction, cleans the sessions up. If Redis
//! cannot take the marker the change is rolled back and the caller gets a 503.

use axum::{
    extract::State,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};
use chrono::{DateTime, SubsecRound, Utc};
use email_address::EmailAddress;
use serde::{Deserialize, Serialize};
use shared::{
    config::RateLimit,
    db::{
        self,
        audit::NewEntry,
        users::{PageStart, User, UserCursor, UserFilter, UserStatus},
    },
    jobs::{EnqueueOptions, Job, RevokeSessions, SendInvitation},
    secrets,
    sessions::Limited,
};
use sqlx::PgConnection;
use utoipa::{IntoParams, ToSchema};
use utoipa_axum::{router::OpenApiRouter, routes};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{self, Authenticated, Authorized, UserCreate, UserDeactivate, UserRead, UserUpdate},
    envelope::{Data, PageParams, Pagination},
    error::{ApiError, ApiJson, ErrorEnvelope, Result},
    extract::{ApiPath, ApiQuery},
    request_id,
};

pub(crate) fn router() -> OpenApiRouter<AppState> {
    OpenApiRouter::new()
        .routes(routes!(me))
        .routes(routes!(list_users))
        .routes(routes!(export_users))
        .routes(routes!(invite_user))
        .routes(routes!(resend_invitation))
        .routes(routes!(add_role))
        .routes(routes!(remove_role, change_role))
        .routes(routes!(deactivate_user))
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the user-management routes (auth, invitations)
// ---------------------------------------------------------------------------------------------

/// A Redis failure of the session store: logged here, a 503 for the caller.
pub(crate) fn redis_down(e: redis::RedisError) -> ApiError {
    tracing::error!(error = %e, "session store (Redis) unreachable or failing");
    ApiError::Unavailable("the session store")
}

/// Counts one action against a limit; 429 with `Retry-After` when over it, 503 if Redis fails
/// (limits fail closed).
pub(crate) async fn rate_limit(
    s: &AppState,
    name: &str,
    key: &str,
    limit: &RateLimit,
) -> Result<()> {
    match s
        .sessions
        .rate_limit(name, key, limit)
        .await
        .map_err(redis_down)?
    {
        Ok(()) => Ok(()),
        Err(Limited { retry_after }) => {
            tracing::info!(limit = name, retry_after, "rate limited");
            Err(ApiError::TooManyRequests { retry_after })
        }
    }
}

/// Runs CPU-heavy work (Argon2) off the async threads.
pub(crate) async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> T + Send + 'static,
) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("blocking task failed")))
}

/// Maps the violation of one named constraint to `err`; other errors pass through.
fn on_constraint(
    name: &'static str,
    err: impl FnOnce() -> ApiError,
) -> impl FnOnce(sqlx::Error) -> ApiError {
    move |e| match &e {
        sqlx::Error::Database(db) if db.constraint() == Some(name) => err(),
        _ => ApiError::from(e),
    }
}

fn parse_id(raw: &str, what: &str) -> Result<Uuid> {
    Uuid::parse_str(raw)
        .map_err(|_| ApiError::BadRequest(format!("{raw:?} is not a {what} id (UUID)")))
}

/// Writes a job to the outbox in the caller's transaction; returns its id.
async fn enqueue<J: Job>(tx: &mut PgConnection, job: &J) -> Result<Uuid> {
    let opts = EnqueueOptions::for_request(request_id::current());
    Ok(job.enqueue(tx, opts).await?)
}

/// Revokes every token of `user` issued until now, inside the caller's transaction (see the
/// module doc). Returns the `revoke_sessions` job's id.
async fn revoke_sessions(
    s: &AppState,
    tx: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    actor_id: Option<Uuid>,
    reason: &str,
) -> Result<Uuid> {
    let now_ms = Utc::now().timestamp_millis();
    let job_id = enqueue(
        tx,
        &RevokeSessions {
            project_id,
            user_id,
            actor_id,
            reason: reason.to_owned(),
            revoked_before_ms: now_ms,
        },
    )
    .await?;
    let ttl = s.settings.jwt_ttl;
    s.sessions
        .revoke_user_before(user_id, now_ms, ttl)
        .await
        .map_err(redis_down)?;
    s.revocations.note_user(user_id, now_ms, ttl);
    tracing::info!(%user_id, reason, %job_id, "sessions revoked");
    Ok(job_id)
}

fn audit_entry<'a>(
    project_id: Uuid,
    actor_id: Option<Uuid>,
    action: &'a str,
    user_id: Uuid,
    metadata: serde_json::Value,
) -> NewEntry<'a> {
    NewEntry {
        project_id,
        actor_id,
        action,
        target_type: Some("user"),
        target_id: Some(user_id.to_string()),
        metadata,
        request_id: Some(request_id::current()),
    }
}

/// A validated, lower-cased email address.
fn parse_email(raw: &str) -> Result<String> {
    let email = raw.trim().to_lowercase();
    if email.is_empty() {
        return Err(ApiError::invalid("email", "is required"));
    }
    if email.len() > 254 {
        return Err(ApiError::invalid("email", "must be at most 254 characters"));
    }
    let options = email_address::Options::default()
        .without_display_text()
        .without_domain_literal()
        .with_required_tld();
    EmailAddress::parse_with_options(&email, options).map_err(|e| {
        ApiError::invalid(
            "email",
            format!(
                "is not a valid email address ({})",
                e.to_string().trim_end_matches('.')
            ),
        )
    })?;
    Ok(email)
}

/// A display name: trimmed, 1 to 100 characters, no control characters; blank is none.
pub(crate) fn parse_name(raw: Option<&str>) -> Result<Option<String>> {
    let Some(name) = raw.map(str::trim).filter(|n| !n.is_empty()) else {
        return Ok(None);
    };
    if name.chars().count() > 100 {
        return Err(ApiError::invalid("name", "must be at most 100 characters"));
    }
    if name.chars().any(char::is_control) {
        return Err(ApiError::invalid(
            "name",
            "must not contain control characters",
        ));
    }
    Ok(Some(name.to_owned()))
}

fn domain_of(email: &str) -> &str {
    email.rsplit_once('@').map_or("", |(_, d)| d)
}

/// `ALLOWED_INVITE_DOMAINS`, when set, binds both ends of an invitation: the invitee's address
/// and the inviter's own. Domains match exactly (a subdomain is another domain).
fn check_domains(s: &AppState, invitee: &str, inviter: &str) -> Result<()> {
    let allowed = &s.settings.users.allowed_invite_domains;
    if allowed.is_empty() {
        return Ok(());
    }
    let list = allowed.join(", ");
    if !allowed.iter().any(|d| d == domain_of(invitee)) {
        return Err(ApiError::invalid(
            "email",
            format!("invitations can only be sent to addresses at {list}"),
        ));
    }
    if !allowed.iter().any(|d| d == domain_of(inviter)) {
        return Err(ApiError::Validation {
            message: format!(
                "only users whose own address is at {list} can send invitations; yours is not"
            ),
            details: serde_json::json!({ "fields": { "inviter": format!("must have an address at {list}") } }),
        });
    }
    Ok(())
}

/// The inviting user (service tokens cannot invite: an invitation names its inviter).
async fn inviter(s: &AppState, claims_user: Option<Uuid>, project: Uuid) -> Result<User> {
    let id = claims_user.ok_or(ApiError::Refused("invitations must be sent by a user"))?;
    let mut conn = s.pool.acquire().await?;
    db::users::find(&mut conn, project, id)
        .await?
        .filter(|u| u.status == UserStatus::Active)
        .ok_or(ApiError::Refused(
            "invitations must be sent by an active user of this project",
        ))
}

async fn invite_limits(s: &AppState, project: Uuid, inviter: Uuid) -> Result<()> {
    let u = &s.settings.users;
    rate_limit(s, "invite-user", &inviter.to_string(), &u.invite_per_user).await?;
    rate_limit(
        s,
        "invite-project",
        &project.to_string(),
        &u.invite_per_project,
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Who am I
// ---------------------------------------------------------------------------------------------

/// A user with the permissions its roles grant.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct Me {
    /// The user.
    #[serde(flatten)]
    pub user: User,
    /// Its project.
    pub project_id: Uuid,
    /// Every permission its roles grant.
    pub permissions: Vec<String>,
}

/// The caller: the user behind the token, with roles and permissions.
///
/// Any valid token (no permission needed); 404 for service tokens, which are not users.
#[utoipa::path(get, path = "/api/v1/users/me", tag = "users",
    security(("bearer" = [])),
    responses((status = 200, body = inline(Data<Me>)),
              (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              (status = 503, body = ErrorEnvelope)))]
async fn me(auth: Authenticated, State(s): State<AppState>) -> Result<ApiJson<Data<Me>>> {
    let user_id = auth.user_id().ok_or(ApiError::NotFound("user"))?;
    let project = auth.claims.project_id;
    let mut conn = s.pool.acquire().await?;
    let user = db::users::find(&mut conn, project, user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    let permissions = db::roles::permissions_of(&mut conn, project, user_id).await?;
    Ok(ApiJson(Data::new(Me {
        user,
        project_id: project,
        permissions,
    })))
}

// ---------------------------------------------------------------------------------------------
// List and export
// ---------------------------------------------------------------------------------------------

/// Filters of the user list and export.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct UserFilterParams {
    /// Only users with this status: `INVITED`, `ACTIVE` or `DEACTIVATED`.
    pub status: Option<String>,
    /// Only holders of this role (a role id).
    #[param(value_type = Option<Uuid>)]
    pub role: Option<String>,
    /// Substring of the email or name (case-insensitive).
    pub search: Option<String>,
}

impl UserFilterParams {
    fn parse(self) -> Result<UserFilter> {
        let status = match self
            .status
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(s) => Some(UserStatus::parse(&s.to_uppercase()).ok_or_else(|| {
                ApiError::invalid("status", "must be INVITED, ACTIVE or DEACTIVATED")
            })?),
        };
        let role_id = match self
            .role
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
        {
            None => None,
            Some(r) => Some(
                Uuid::parse_str(r)
                    .map_err(|_| ApiError::invalid("role", "must be a role id (UUID)"))?,
            ),
        };
        let search = self
            .search
            .map(|s| s.trim().to_owned())
            .filter(|s| !s.is_empty());
        if search.as_ref().is_some_and(|s| s.chars().count() > 200) {
            return Err(ApiError::invalid(
                "search",
                "must be at most 200 characters",
            ));
        }
        Ok(UserFilter {
            status,
            role_id,
            search,
        })
    }
}

/// `meta` of the user list: pagination, the cursor of the next page, and the project's
/// ACTIVE user count.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct UserListMeta {
    /// Pagination of the filtered list.
    pub pagination: Pagination,
    /// Pass as `after` for the next page (keyset: as fast deep in the list as at its start);
    /// `null` on the last page.
    pub next_cursor: Option<String>,
    /// ACTIVE users in the project (whatever the filters).
    pub total_active: u64,
}

/// A page of users.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserList {
    /// The page's users.
    pub data: Vec<User>,
    /// Pagination and counts.
    pub meta: UserListMeta,
}

/// `?after=`: start right after a position instead of at a page number.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct CursorParams {
    /// The `meta.nextCursor` of the previous page (then `page` must be left out).
    pub after: Option<String>,
}

/// The project's users, oldest first, filtered, by page number (`page`) or by cursor
/// (`after`, from the previous page's `meta.nextCursor`); `meta.totalActive` counts the
/// project's ACTIVE users.
///
/// Permission: `user:read`.
#[utoipa::path(get, path = "/api/v1/users", tag = "users",
    params(PageParams, CursorParams, UserFilterParams),
    security(("bearer" = ["user:read"])),
    responses((status = 200, body = UserList),
              (status = 400, body = ErrorEnvelope),
              (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              (status = 503, body = ErrorEnvelope)))]
async fn list_users(
    auth: Authorized<UserRead>,
    State(s): State<AppState>,
    ApiQuery(page): ApiQuery<PageParams>,
    ApiQuery(cursor): ApiQuery<CursorParams>,
    ApiQuery(filter): ApiQuery<UserFilterParams>,
) -> Result<ApiJson<UserList>> {
    let page = page.check()?;
    let filter = filter.parse()?;
    let start = match cursor
        .after
        .as_deref()
        .map(str::trim)
        .filter(|c| !c.is_empty())
    {
        None => PageStart::Offset(page.offset() as i64),
        Some(_) if page.page != 1 => {
            return Err(ApiError::invalid(
                "after",
                "use either page or after, not both",
            ));
        }
        Some(c) => PageStart::After(UserCursor::decode(c).ok_or_else(|| {
            ApiError::invalid("after", "is not a cursor from this list (meta.nextCursor)")
        })?),
    };
    let found = db::users::list(
        &s.pool,
        auth.claims.project_id,
        &filter,
        start,
        i64::from(page.per_page),
    )
    .await?;
    let next_cursor = found
        .has_more
        .then(|| found.users.last().map(|u| UserCursor::after(u).encode()))
        .flatten();
    let pagination = Pagination {
        page: matches!(start, PageStart::Offset(_)).then_some(page.page),
        per_page: page.per_page,
        total: found.total.max(0) as u64,
        has_next: found.has_more,
        has_prev: page.page > 1 || matches!(start, PageStart::After(_)),
    };
    Ok(ApiJson(UserList {
        data: found.users,
        meta: UserListMeta {
            pagination,
            next_cursor,
            total_active: found.counts.active.max(0) as u64,
        },
    }))
}

fn user_cells(u: User) -> Vec<String> {
    let time = |t: Option<DateTime<Utc>>| t.map(|t| t.to_rfc3339()).unwrap_or_default();
    vec![
        u.id.to_string(),
        u.email,
        u.name.unwrap_or_default(),
        u.status.as_str().to_owned(),
        u.roles
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(";"),
        time(u.last_seen_at),
        time(Some(u.created_at)),
    ]
}

/// Every user matching the filters, as a CSV download (header row, then one row per user;
/// roles are `;`-separated names). Counts as activity.
///
/// Permission: `user:read`.
#[utoipa::path(get, path = "/api/v1/users/export", tag = "users",
    params(UserFilterParams),
    security(("bearer" = ["user:read"])),
    responses((status = 200, content_type = "text/csv", body = String,
               description = "id,email,name,status,roles,lastSeenAt,createdAt"),
              (status = 400, body = ErrorEnvelope),
              (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              (status = 503, body = ErrorEnvelope)))]
async fn export_users(
    auth: Authorized<UserRead>,
    State(s): State<AppState>,
    ApiQuery(filter): ApiQuery<UserFilterParams>,
) -> Result<Response> {
    let filter = filter.parse()?;
    auth::track_activity(&s, &auth.claims);
    let rows = db::users::stream(s.pool.clone(), auth.claims.project_id, &filter);
    crate::csv_export::response(
        "users.csv",
        &[
            "id",
            "email",
            "name",
            "status",
            "roles",
            "lastSeenAt",
            "createdAt",
        ],
        rows,
        user_cells,
    )
    .await
}

// ---------------------------------------------------------------------------------------------
// Invitations
// ---------------------------------------------------------------------------------------------

/// Who to invite.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InviteRequest {
    /// The invitee's email (stored lower-cased; at most 254 characters).
    pub email: String,
    /// Display name (1 to 100 characters).
    pub name: Option<String>,
    /// The roles to give (at least one; roles of the caller's project).
    pub role_ids: Vec<Uuid>,
}

/// An invitation's public side (its token is only ever in the email).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvitationSummary {
    /// The invitation id.
    pub id: Uuid,
    /// When the invitation stops working.
    pub expires_at: DateTime<Utc>,
}

/// An invitation (re)issued; its email is on its way.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvitationQueued {
    /// The invited user (`INVITED`).
    pub user: User,
    /// The `send_invitation` job.
    pub job_id: Uuid,
    /// `GET` this to follow the job.
    pub status_url: String,
    /// The invitation.
    pub invitation: InvitationSummary,
}

fn queued(q: InvitationQueued) -> Response {
    (
        StatusCode::ACCEPTED,
        [(header::LOCATION, q.status_url.clone())],
        ApiJson(Data::new(q)),
    )
        .into_response()
}

/// Invites a user: creates it `INVITED` with its roles and an invitation, and queues the email.
///
/// Permission: `user:create`, and the caller must be an active user of the project (403 for
/// service tokens). 409 if the email is already a user of the project; 422 for a bad email,
/// no or unknown roles, or an address (the invitee's or the inviter's) outside
/// `ALLOWED_INVITE_DOMAINS`; 429 past the per-inviter or per-project limit.
#[utoipa::path(post, path = "/api/v1/users/invite", tag = "users",
    request_body = InviteRequest,
    security(("bearer" = ["user:create"])),
    responses((status = 202, body = inline(Data<InvitationQueued>),
               headers(("Location" = String, description = "The job's status URL"))),
              (status = 400, body = ErrorEnvelope),
              (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope),
              (status = 413, body = ErrorEnvelope),
              (status = 415, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              (status = 429, body = ErrorEnvelope,
               headers(("Retry-After" = u64, description = "Seconds to wait"))),
              (status = 503, body = ErrorEnvelope)))]
async fn invite_user(
    auth: Authorized<UserCreate>,
    State(s): State<AppState>,
    ApiJson(req): ApiJson<InviteRequest>,
) -> Result<Response> {
    let project = auth.claims.project_id;
    let email = parse_email(&req.email)?;
    let name = parse_name(req.name.as_deref())?;
    let mut role_ids = req.role_ids;
    role_ids.sort();
    role_ids.dedup();
    if role_ids.is_empty() {
        return Err(ApiError::invalid("roleIds", "give at least one role"));
    }
    if role_ids.len() > 50 {
        return Err(ApiError::invalid("roleIds", "at most 50 roles"));
    }
    let inviter = inviter(&s, auth.user_id(), project).await?;
    check_domains(&s, &email, &inviter.email)?;
    invite_limits(&s, project, inviter.id).await?;

    let token = secrets::new_token();
    let expires_at = (Utc::now()
        + chrono::Duration::days(i64::from(s.settings.users.invitation_expiry_days)))
    .trunc_subsecs(6);
    let mut tx = s.pool.begin().await?;
    let user_id = db::users::create_invited(&mut tx, project, &email, name.as_deref())
        .await
        .map_err(on_constraint("users_project_email_key", || {
            ApiError::Conflict("a user with this email already exists in the project".into())
        }))?;
    let found = db::roles::existing(&mut tx, project, &role_ids).await?;
    if found.len() != role_ids.len() {
        let unknown: Vec<Uuid> = role_ids
            .iter()
            .filter(|id| !found.iter().any(|r| r.id == **id))
            .copied()
            .collect();
        let list = unknown
            .iter()
            .map(Uuid::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        // dropping `tx` rolls the new user back
        return Err(ApiError::Validation {
            message: format!("roleIds: no such role in this project: {list}"),
            details: serde_json::json!({
                "fields": { "roleIds": format!("no such role in this project: {list}") },
                "unknownRoleIds": unknown,
            }),
        });
    }
    for role in &role_ids {
        db::roles::assign(&mut tx, project, user_id, *role).await?;
    }
    let invitation_id = db::invitations::create(
        &mut tx,
        project,
        user_id,
        &secrets::token_hash(&token),
        Some(inviter.id),
        expires_at,
    )
    .await?;
    db::audit::record(
        &mut tx,
        audit_entry(
            project,
            Some(inviter.id),
            "invitation.created",
            user_id,
            serde_json::json!({
                "invitationId": invitation_id,
                "roleIds": role_ids,
                "expiresAt": expires_at,
            }),
        ),
    )
    .await?;
    let job_id = enqueue(
        &mut tx,
        &SendInvitation {
            project_id: project,
            invitation_id,
            user_id,
            inviter_id: Some(inviter.id),
            sealed_token: secrets::seal(&s.settings.jwt_secret, &token),
            token_hash: secrets::token_hash(&token),
            resent: false,
        },
    )
    .await?;
    let user = db::users::find(&mut tx, project, user_id)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the invited user vanished")))?;
    tx.commit().await?;
    tracing::info!(%user_id, %invitation_id, %job_id, "user invited");
    Ok(queued(InvitationQueued {
        user,
        job_id,
        status_url: format!("/api/v1/jobs/{job_id}"),
        invitation: InvitationSummary {
            id: invitation_id,
            expires_at,
        },
    }))
}

/// Sends an invited user a new invitation email. The new token replaces the old one (which
/// stops working); the expiry stays what it was.
///
/// Permission: `user:create`, by an active user of the project (403 for service tokens).
/// 404 for an unknown user; 409 unless the user is `INVITED` with an unexpired invitation;
/// 422 for addresses outside `ALLOWED_INVITE_DOMAINS`; 429 past the invitation limits.
#[utoipa::path(post, path = "/api/v1/users/{id}/resend-invitation", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = ["user:create"])),
    responses((status = 202, body = inline(Data<InvitationQueued>),
               headers(("Location" = String, description = "The job's status URL"))),
              (status = 400, body = ErrorEnvelope),
              (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              (status = 429, body = ErrorEnvelope,
               headers(("Retry-After" = u64, description = "Seconds to wait"))),
              (status = 503, body = ErrorEnvelope)))]
async fn resend_invitation(
    auth: Authorized<UserCreate>,
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<Response> {
    let user_id = parse_id(&id, "user")?;
    let project = auth.claims.project_id;
    let target = {
        let mut conn = s.pool.acquire().await?;
        db::users::find(&mut conn, project, user_id)
            .await?
            .ok_or(ApiError::NotFound("user"))?
    };
    let inviter = inviter(&s, auth.user_id(), project).await?;
    let not_invited = |status: UserStatus| {
        ApiError::Conflict(format!(
            "only invited users can be sent their invitation again; this user is {}",
            status.as_str()
        ))
    };
    if target.status != UserStatus::Invited {
        return Err(not_invited(target.status));
    }
    check_domains(&s, &target.email, &inviter.email)?;
    invite_limits(&s, project, inviter.id).await?;

    let token = secrets::new_token();
    let mut tx = s.pool.begin().await?;
    match db::users::lock_status(&mut tx, project, user_id).await? {
        None => return Err(ApiError::NotFound("user")),
        Some(UserStatus::Invited) => {}
        Some(other) => return Err(not_invited(other)),
    }
    let current = db::invitations::of_user(&mut tx, project, user_id)
        .await?
        .ok_or_else(|| ApiError::Conflict("the user has no pending invitation".into()))?;
    if current.expires_at <= Utc::now() {
        return Err(ApiError::Conflict(
            "the invitation has expired; resending does not extend it".into(),
        ));
    }
    let invitation =
        db::invitations::replace_token(&mut tx, project, user_id, &secrets::token_hash(&token))
            .await?
            .ok_or_else(|| ApiError::Conflict("the user has no pending invitation".into()))?;
    db::audit::record(
        &mut tx,
        audit_entry(
            project,
            Some(inviter.id),
            "invitation.resend_requested",
            user_id,
            serde_json::json!({ "invitationId": invitation.invitation_id }),
        ),
    )
    .await?;
    let job_id = enqueue(
        &mut tx,
        &SendInvitation {
            project_id: project,
            invitation_id: invitation.invitation_id,
            user_id,
            inviter_id: Some(inviter.id),
            sealed_token: secrets::seal(&s.settings.jwt_secret, &token),
            token_hash: secrets::token_hash(&token),
            resent: true,
        },
    )
    .await?;
    tx.commit().await?;
    tracing::info!(%user_id, invitation_id = %invitation.invitation_id, %job_id, "invitation resent");
    Ok(queued(InvitationQueued {
        user: target,
        job_id,
        status_url: format!("/api/v1/jobs/{job_id}"),
        invitation: InvitationSummary {
            id: invitation.invitation_id,
            expires_at: invitation.expires_at,
        },
    }))
}

// ---------------------------------------------------------------------------------------------
// Roles
// ---------------------------------------------------------------------------------------------

/// A role to give.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RoleRequest {
    /// The role (of the caller's project).
    pub role_id: Uuid,
}

enum RoleChange {
    Add(Uuid),
    Remove(Uuid),
    Replace { from: Uuid, to: Uuid },
}

/// Applies a role change to an INVITED or ACTIVE user and returns the user; ACTIVE users'
/// tokens are revoked (see the module doc).
async fn change_roles(
    s: &AppState,
    project: Uuid,
    actor: Option<Uuid>,
    user_id: Uuid,
    change: RoleChange,
) -> Result<User> {
    let mut tx = s.pool.begin().await?;
    let status = db::users::lock_status(&mut tx, project, user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    if status == UserStatus::Deactivated {
        return Err(ApiError::Conflict(
            "the user is deactivated; its roles cannot change".into(),
        ));
    }
    let ids: Vec<Uuid> = match change {
        RoleChange::Add(r) | RoleChange::Remove(r) => vec![r],
        RoleChange::Replace { from, to } => vec![from, to],
    };
    let roles = db::roles::existing(&mut tx, project, &ids).await?;
    let name = |id: Uuid| roles.iter().find(|r| r.id == id).map(|r| r.name.clone());
    if ids.iter().any(|id| name(*id).is_none()) {
        return Err(ApiError::NotFound("role"));
    }
    let (action, metadata) = match change {
        RoleChange::Add(role) => {
            if !db::roles::assign(&mut tx, project, user_id, role).await? {
                // already held: nothing changes, nothing to audit or revoke
                return current(&mut tx, project, user_id).await;
            }
            (
                "role.assigned",
                serde_json::json!({ "roleId": role, "roleName": name(role) }),
            )
        }
        RoleChange::Remove(role) => {
            if !db::roles::unassign(&mut tx, project, user_id, role).await? {
                return Err(ApiError::NotFound("role assignment"));
            }
            (
                "role.removed",
                serde_json::json!({ "roleId": role, "roleName": name(role) }),
            )
        }
        RoleChange::Replace { from, to } => {
            if !db::roles::unassign(&mut tx, project, user_id, from).await? {
                return Err(ApiError::NotFound("role assignment"));
            }
            if from == to {
                // replacing a role by itself changes nothing
                return current(&mut tx, project, user_id).await;
            }
            db::roles::assign(&mut tx, project, user_id, to).await?;
            (
                "role.changed",
                serde_json::json!({
                    "fromRoleId": from, "fromRoleName": name(from),
                    "toRoleId": to, "toRoleName": name(to),
                }),
            )
        }
    };
    db::audit::record(
        &mut tx,
        audit_entry(project, actor, action, user_id, metadata),
    )
    .await?;
    if status == UserStatus::Active {
        revoke_sessions(s, &mut tx, project, user_id, actor, "role_changed").await?;
    }
    let user = current(&mut tx, project, user_id).await?;
    tx.commit().await?;
    tracing::info!(%user_id, action, "roles changed");
    Ok(user)
}

async fn current(tx: &mut PgConnection, project: Uuid, user_id: Uuid) -> Result<User> {
    db::users::find(tx, project, user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))
}

/// Gives a user a role (no change if it holds it already). An ACTIVE user's tokens are revoked
/// at once: it logs in again to get the new permissions.
///
/// Permission: `user:update`. 404 for an unknown user or role; 409 for a deactivated user.
#[utoipa::path(post, path = "/api/v1/users/{id}/roles", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    request_body = RoleRequest,
    security(("bearer" = ["user:update"])),
    responses((status = 200, body = inline(Data<User>)),
              (status = 400, body = ErrorEnvelope),
              (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope),
              (status = 413, body = ErrorEnvelope),
              (status = 415, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              (status = 503, body = ErrorEnvelope)))]
async fn add_role(
    auth: Authorized<UserUpdate>,
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(req): ApiJson<RoleRequest>,
) -> Result<ApiJson<Data<User>>> {
    let user_id = parse_id(&id, "user")?;
    let user = change_roles(
        &s,
        auth.claims.project_id,
        auth.user_id(),
        user_id,
        RoleChange::Add(req.role_id),
    )
    .await?;
    Ok(ApiJson(Data::new(user)))
}

/// Takes a role from a user. An ACTIVE user's tokens are revoked at once.
///
/// Permission: `user:update`. 404 for an unknown user or role, or a role the user does not
/// hold; 409 for a deactivated user.
#[utoipa::path(delete, path = "/api/v1/users/{id}/roles/{roleId}", tag = "users",
    params(("id" = Uuid, Path, description = "User id"),
           ("roleId" = Uuid, Path, description = "Role id")),
    security(("bearer" = ["user:update"])),
    responses((status = 200, body = inline(Data<User>)),
              (status = 400, body = ErrorEnvelope),
              (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope),
              (status = 503, body = ErrorEnvelope)))]
async fn remove_role(
    auth: Authorized<UserUpdate>,
    State(s): State<AppState>,
    ApiPath((id, role)): ApiPath<(String, String)>,
) -> Result<ApiJson<Data<User>>> {
    let user_id = parse_id(&id, "user")?;
    let role_id = parse_id(&role, "role")?;
    let user = change_roles(
        &s,
        auth.claims.project_id,
        auth.user_id(),
        user_id,
        RoleChange::Remove(role_id),
    )
    .await?;
    Ok(ApiJson(Data::new(user)))
}

/// Replaces one of a user's roles by another (`{"roleId": <new role>}`). An ACTIVE user's
/// tokens are revoked at once.
///
/// Permission: `user:update`. 404 for an unknown user or role, or a role the user does not
/// hold; 409 for a deactivated user.
#[utoipa::path(patch, path = "/api/v1/users/{id}/roles/{roleId}", tag = "users",
    params(("id" = Uuid, Path, description = "User id"),
           ("roleId" = Uuid, Path, description = "The role to replace")),
    request_body = RoleRequest,
    security(("bearer" = ["user:update"])),
    responses((status = 200, body = inline(Data<User>)),
              (status = 400, body = ErrorEnvelope),
              (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope),
              (status = 413, body = ErrorEnvelope),
              (status = 415, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              (status = 503, body = ErrorEnvelope)))]
async fn change_role(
    auth: Authorized<UserUpdate>,
    State(s): State<AppState>,
    ApiPath((id, role)): ApiPath<(String, String)>,
    ApiJson(req): ApiJson<RoleRequest>,
) -> Result<ApiJson<Data<User>>> {
    let user_id = parse_id(&id, "user")?;
    let from = parse_id(&role, "role")?;
    let user = change_roles(
        &s,
        auth.claims.project_id,
        auth.user_id(),
        user_id,
        RoleChange::Replace {
            from,
            to: req.role_id,
        },
    )
    .await?;
    Ok(ApiJson(Data::new(user)))
}

// ---------------------------------------------------------------------------------------------
// Deactivation
// ---------------------------------------------------------------------------------------------

/// Deactivates a user: it cannot log in any more, and its tokens stop working before this
/// answers, on every API process. An invited user's invitation is deleted. Deactivating a
/// deactivated user changes nothing and answers 200 (idempotent).
///
/// Permission: `user:deactivate`. 404 for an unknown user; 422 for yourself.
#[utoipa::path(post, path = "/api/v1/users/{id}/deactivate", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = ["user:deactivate"])),
    responses((status = 200, body = inline(Data<User>)),
              (status = 400, body = ErrorEnvelope),
              (status = 401, body = ErrorEnvelope),
              (status = 403, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              (status = 503, body = ErrorEnvelope)))]
async fn deactivate_user(
    auth: Authorized<UserDeactivate>,
    State(s): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<Data<User>>> {
    let user_id = parse_id(&id, "user")?;
    let actor = auth.user_id();
    if actor == Some(user_id) {
        return Err(ApiError::invalid("id", "you cannot deactivate yourself"));
    }
    let project = auth.claims.project_id;
    let mut tx = s.pool.begin().await?;
    let before = db::users::lock_status(&mut tx, project, user_id)
        .await?
        .ok_or(ApiError::NotFound("user"))?;
    if before == UserStatus::Deactivated {
        return Ok(ApiJson(Data::new(
            current(&mut tx, project, user_id).await?,
        )));
    }
    db::users::set_status(&mut tx, project, user_id, UserStatus::Deactivated).await?;
    if before == UserStatus::Invited {
        db::invitations::delete_of_user(&mut tx, project, user_id).await?;
    }
    db::audit::record(
        &mut tx,
        audit_entry(
            project,
            actor,
            "user.deactivated",
            user_id,
            serde_json::json!({ "previousStatus": before.as_str() }),
        ),
    )
    .await?;
    if before == UserStatus::Active {
        revoke_sessions(&s, &mut tx, project, user_id, actor, "deactivated").await?;
    }
    let user = current(&mut tx, project, user_id).await?;
    tx.commit().await?;
    tracing::info!(%user_id, previous = before.as_str(), "user deactivated");
    Ok(ApiJson(Data::new(user)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn emails_are_lower_cased_and_checked() {
        assert_eq!(
            parse_email("  Ada@Example.COM ").unwrap(),
            "ada@example.com"
        );
        for bad in [
            "",
            "ada",
            "ada@",
            "@example.com",
            "Ada <ada@example.com>",
            "ada@localhost",
            "a b@example.com",
        ] {
            assert!(parse_email(bad).is_err(), "{bad:?} is refused");
        }
        let long = format!("{}@example.com", "a".repeat(250));
        assert!(parse_email(&long).is_err());
    }

    #[test]
    fn names_are_trimmed_and_blank_is_none() {
        assert_eq!(parse_name(Some("  Ada ")).unwrap().as_deref(), Some("Ada"));
        assert_eq!(parse_name(Some("   ")).unwrap(), None);
        assert!(parse_name(Some("a\u{7}b")).is_err());
        assert!(parse_name(Some(&"x".repeat(101))).is_err());
    }

    #[test]
    fn the_domain_is_what_follows_the_last_at() {
        assert_eq!(domain_of("a@b.example"), "b.example");
        assert_eq!(domain_of("nope"), "");
    }
}
