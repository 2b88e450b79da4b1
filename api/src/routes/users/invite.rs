//! Inviting a user (created `INVITED`, with its roles and an invitation) and sending an invited
//! user its invitation again. The email goes out in a `send_invitation` job: both answer `202`.

use axum::extract::State;
use chrono::{DateTime, SubsecRound, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    db::{
        self,
        audit::NewEntry,
        users::{User, UserStatus},
    },
    domain::{DisplayName, EmailAddress, FieldErrors, Invalid, domain_of, required},
    jobs::{Job as _, SendInvitation},
    secrets,
};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Authorized, UserCreate},
    envelope::{Accepted, Data},
    error::{
        ApiError, AuthRefusals, BodyRefusals, EnqueueRefusals, ErrorEnvelope, Result,
        ResultExt as _,
    },
    extract::{PathId, ValidJson, Validate},
    quota, rate_limit, request_id,
};

/// Most role ids one invitation names (as sent, repeats counted).
pub const MAX_ROLES: usize = 50;

/// Who to invite.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct InviteRequest {
    /// The invitee's email (stored lower-cased).
    #[schema(required = true, nullable = false, value_type = EmailAddress)]
    pub email: Option<String>,
    /// Display name (blank: none).
    #[schema(value_type = Option<DisplayName>)]
    pub name: Option<String>,
    /// The roles to give: 1 to 50 ids (a repeated id counts), roles of the caller's project.
    #[schema(required = true, nullable = false, min_items = 1, max_items = 50)]
    pub role_ids: Option<Vec<Uuid>>,
}

/// A valid [`InviteRequest`].
#[derive(Debug)]
pub struct Invite {
    email: EmailAddress,
    name: Option<DisplayName>,
    /// Sorted, without duplicates.
    role_ids: Vec<Uuid>,
}

impl Validate for InviteRequest {
    type Valid = Invite;

    fn validate(self) -> Result<Invite, FieldErrors> {
        let mut errors = FieldErrors::new();
        let email = errors.check(
            "email",
            required(self.email).and_then(|e| EmailAddress::parse(&e)),
        );
        let name = errors.check("name", DisplayName::parse_optional(self.name.as_deref()));
        let role_ids = errors.check(
            "roleIds",
            required(self.role_ids).and_then(|mut ids| {
                // counted as sent, as the document's maxItems counts them
                if ids.is_empty() {
                    return Err(Invalid::new("give at least one role"));
                }
                if ids.len() > MAX_ROLES {
                    return Err(Invalid::new(format!("at most {MAX_ROLES} roles")));
                }
                ids.sort();
                ids.dedup();
                Ok(ids)
            }),
        );
        match (email, name, role_ids) {
            (Some(email), Some(name), Some(role_ids)) => Ok(Invite {
                email,
                name,
                role_ids,
            }),
            _ => Err(errors),
        }
    }
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

/// An invitation (re)issued; its email is on its way in the `send_invitation` job.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InvitationQueued {
    /// The invited user (`INVITED`).
    pub user: User,
    /// The invitation.
    pub invitation: InvitationSummary,
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
        return Err(ApiError::invalid(
            "inviter",
            format!("only users whose own address is at {list} can send invitations; yours is not"),
        ));
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

/// Whether an insert failed on the project's unique email.
pub(super) fn is_email_taken(e: &sqlx::Error) -> bool {
    matches!(e, sqlx::Error::Database(db) if db.constraint() == Some("users_project_email_key"))
}

/// The 409 for an email a user of the project already has: a deactivated one is pointed at
/// reactivation (shared with `POST /users`).
pub(super) async fn email_taken(s: &AppState, project: Uuid, email: &str) -> ApiError {
    let found = match s.pool.acquire().await {
        Ok(mut conn) => db::users::by_email(&mut conn, project, email)
            .await
            .ok()
            .flatten(),
        Err(_) => None,
    };
    match found {
        Some((id, UserStatus::Deactivated)) => ApiError::Conflict(format!(
            "a deactivated user of the project has this email; reactivate it instead with \
             POST /api/v1/users/{id}/reactivate"
        )),
        Some((id, status)) => ApiError::Conflict(format!(
            "a user with this email already exists in the project ({id}, {})",
            status.as_str()
        )),
        None => ApiError::Conflict("a user with this email already exists in the project".into()),
    }
}

/// The project's quota and enqueue rate ([`quota::admit`]: the email is a job), then the
/// invitation limits per inviter and per project.
async fn invite_limits(s: &AppState, project: Uuid, inviter: Uuid) -> Result<()> {
    quota::admit(s, project).await?;
    let u = &s.settings.users;
    rate_limit::check(s, "invite-user", &inviter.to_string(), &u.invite_per_user).await?;
    rate_limit::check(
        s,
        "invite-project",
        &project.to_string(),
        &u.invite_per_project,
    )
    .await
}

/// The `send_invitation` job for a fresh token.
fn send_invitation(
    s: &AppState,
    project_id: Uuid,
    invitation_id: Uuid,
    user_id: Uuid,
    inviter: Uuid,
    token: &str,
    resent: bool,
) -> SendInvitation {
    SendInvitation {
        project_id,
        invitation_id,
        user_id,
        inviter_id: Some(inviter),
        sealed_token: secrets::seal(&s.settings.auth.jwt_secret, token),
        token_hash: secrets::token_hash(token),
        resent,
    }
}

/// Invites a user: creates it `INVITED` with its roles and an invitation, and queues the email.
/// An address whose invitation expired is invited again: the same user gets the new roles and
/// a new invitation (new link, new expiry); the old link stays dead.
///
/// Permission: `user:create`, and the caller must be an active user of the project (403 for
/// service tokens). 409 if the email is already a user of the project (active, deactivated:
/// the message names `POST /api/v1/users/{id}/reactivate`, or invited with an invitation still
/// valid); 422 for a bad email,
/// no or unknown roles, or an address (the invitee's or the inviter's) outside
/// `ALLOWED_INVITE_DOMAINS`; 429 with `Retry-After` past the per-inviter or per-project
/// invitation limit or the project's enqueue rate (`rate_limited`), or when the project has
/// `JOB_MAX_OPEN_PER_PROJECT` open jobs (`quota_exceeded`).
#[utoipa::path(post, path = "/api/v1/users/invite", tag = "users",
    request_body = InviteRequest,
    security(("bearer" = ["user:create"])),
    responses((status = 202, body = inline(Data<Accepted<InvitationQueued>>),
               headers(("Location" = String, description = "The job's status URL"))),
              (status = 409, body = ErrorEnvelope),
              EnqueueRefusals,
              BodyRefusals,
              AuthRefusals))]
pub(super) async fn invite_user(
    auth: Authorized<UserCreate>,
    State(s): State<AppState>,
    ValidJson(req): ValidJson<InviteRequest>,
) -> Result<Accepted<InvitationQueued>> {
    let project = auth.claims.project_id;
    let inviter = inviter(&s, auth.user_id(), project).await?;
    check_domains(&s, req.email.as_ref(), &inviter.email)?;
    invite_limits(&s, project, inviter.id).await?;

    let token = secrets::new_token();
    let expires_at = (Utc::now()
        + chrono::Duration::days(i64::from(s.settings.users.invitation_expiry_days)))
    .trunc_subsecs(6);
    let mut tx = s.pool.begin().await?;
    let name = req.name.as_ref().map(AsRef::as_ref);
    let exists =
        || ApiError::Conflict("a user with this email already exists in the project".into());
    // an invitee whose invitation expired is invited again: same user, new invitation
    let (user_id, previous) =
        match db::users::lock_by_email(&mut tx, project, req.email.as_ref()).await? {
            None => {
                let id = db::users::create_invited(&mut tx, project, req.email.as_ref(), name)
                    .await
                    .on_constraint("users_project_email_key", exists)?;
                (id, None)
            }
            Some((id, UserStatus::Invited)) => {
                let invitation = db::invitations::of_user(&mut tx, project, id)
                    .await?
                    .filter(|i| i.is_expired(Utc::now()))
                    .ok_or_else(exists)?;
                db::users::rename_invited(&mut tx, project, id, name).await?;
                db::roles::clear(&mut tx, project, id).await?;
                (id, Some(invitation.invitation_id))
            }
            Some(_) => {
                drop(tx);
                return Err(email_taken(&s, project, req.email.as_ref()).await);
            }
        };
    let role_ids = req.role_ids;
    let found = db::roles::existing(&mut tx, project, &role_ids).await?;
    if found.len() != role_ids.len() {
        let unknown = role_ids
            .iter()
            .filter(|id| !found.iter().any(|r| r.id == **id))
            .map(Uuid::to_string)
            .collect::<Vec<_>>()
            .join(", ");
        // dropping `tx` rolls the new user back
        return Err(ApiError::invalid(
            "roleIds",
            format!("no such role in this project: {unknown}"),
        ));
    }
    for role in &role_ids {
        db::roles::assign(&mut tx, project, user_id, *role).await?;
    }
    let token_hash = secrets::token_hash(&token);
    // a new user has no invitation to replace: `reissue` then only creates one
    let invitation_id = db::invitations::reissue(
        &mut tx,
        project,
        user_id,
        &token_hash,
        Some(inviter.id),
        expires_at,
    )
    .await?;
    db::audit::record(
        &mut tx,
        NewEntry::new(project, "invitation.created")
            .actor(Some(inviter.id))
            .user(user_id)
            .metadata(serde_json::json!({
                "invitationId": invitation_id,
                "roleIds": role_ids,
                "expiresAt": expires_at,
                "replacesExpired": previous,
            }))
            .request(Some(request_id::current())),
    )
    .await?;
    let job = send_invitation(
        &s,
        project,
        invitation_id,
        user_id,
        inviter.id,
        &token,
        false,
    );
    let job_id = job.enqueue(&mut tx, request_id::enqueue_options()).await?;
    let user = db::users::find(&mut tx, project, user_id)
        .await?
        .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the invited user vanished")))?;
    tx.commit().await?;
    s.outbox.wake();
    tracing::info!(%user_id, %invitation_id, %job_id, "user invited");
    Ok(Accepted::job(
        job_id,
        InvitationQueued {
            user,
            invitation: InvitationSummary {
                id: invitation_id,
                expires_at,
            },
        },
    ))
}

/// Sends an invited user a new invitation email. The new token replaces the old one (which
/// stops working); the expiry stays what it was, unless the invitation has expired: then a new
/// invitation (new id) with a new expiry replaces it.
///
/// Permission: `user:create`, by an active user of the project (403 for service tokens).
/// 404 for an unknown user; 409 unless the user is `INVITED` with an invitation;
/// 422 for addresses outside `ALLOWED_INVITE_DOMAINS`; 429 with `Retry-After` past the
/// invitation limits or the project's enqueue rate, or at its quota of open jobs.
#[utoipa::path(post, path = "/api/v1/users/{id}/resend-invitation", tag = "users",
    params(("id" = Uuid, Path, description = "User id")),
    security(("bearer" = ["user:create"])),
    responses((status = 202, body = inline(Data<Accepted<InvitationQueued>>),
               headers(("Location" = String, description = "The job's status URL"))),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              EnqueueRefusals,
              AuthRefusals))]
pub(super) async fn resend_invitation(
    auth: Authorized<UserCreate>,
    State(s): State<AppState>,
    PathId(user_id): PathId,
) -> Result<Accepted<InvitationQueued>> {
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
    let token_hash = secrets::token_hash(&token);
    let reissued = current.is_expired(Utc::now());
    let invitation = if reissued {
        // an expired invitation is replaced by a new one, with a new expiry
        let expires_at = (Utc::now()
            + chrono::Duration::days(i64::from(s.settings.users.invitation_expiry_days)))
        .trunc_subsecs(6);
        let id = db::invitations::reissue(
            &mut tx,
            project,
            user_id,
            &token_hash,
            Some(inviter.id),
            expires_at,
        )
        .await?;
        db::invitations::of_user(&mut tx, project, user_id)
            .await?
            .filter(|i| i.invitation_id == id)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("the new invitation vanished")))?
    } else {
        db::invitations::replace_token(&mut tx, project, user_id, &token_hash)
            .await?
            .ok_or_else(|| ApiError::Conflict("the user has no pending invitation".into()))?
    };
    db::audit::record(
        &mut tx,
        NewEntry::new(project, "invitation.resend_requested")
            .actor(Some(inviter.id))
            .user(user_id)
            .metadata(serde_json::json!({
                "invitationId": invitation.invitation_id,
                "replacesExpired": reissued.then_some(current.invitation_id),
                "expiresAt": invitation.expires_at,
            }))
            .request(Some(request_id::current())),
    )
    .await?;
    let job = send_invitation(
        &s,
        project,
        invitation.invitation_id,
        user_id,
        inviter.id,
        &token,
        true,
    );
    let job_id = job.enqueue(&mut tx, request_id::enqueue_options()).await?;
    tx.commit().await?;
    s.outbox.wake();
    tracing::info!(%user_id, invitation_id = %invitation.invitation_id, %job_id, "invitation resent");
    Ok(Accepted::job(
        job_id,
        InvitationQueued {
            user: target,
            invitation: InvitationSummary {
                id: invitation.invitation_id,
                expires_at: invitation.expires_at,
            },
        },
    ))
}
