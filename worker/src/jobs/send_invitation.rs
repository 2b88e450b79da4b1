//! Runs `send_invitation`: re-reads the invitation, renders the email, sends it, and records
//! the outcome on the invitation and in the audit log.
//!
//! Idempotent: the job sends only while the invitation still holds the job's token, has not
//! been sent with it yet, has not expired, and its user is still invited; otherwise it returns
//! `Ok` without sending and logs why. Delivery is at least once: if recording a sent email fails,
//! the retry sends it again (same link).
//!
//! Failures: an SMTP 5xx (or a message that cannot be built) is permanent, and so is a sealed
//! token that does not open (`JWT_SECRET` changed since the job was enqueued); everything else (server unreachable, 4xx, timeouts, Postgres) is
//! retried with backoff. When the job goes dead, however it died (a permanent failure, the last
//! attempt failing, timing out or panicking, or its worker dying), its on-dead hook
//! [`on_dead`] marks the invitation `FAILED` and audits `invitation.failed`, once. Logs and
//! error texts carry ids, never the address or the token.

use anyhow::Context as _;
use apalis_core::{
    error::{AbortError, BoxDynError},
};
use chrono::Utc;
use serde::Serialize;
use shared::{
    db::{self, audit::NewEntry, users::UserStatus},
    email::{EmailError, InvitationEmail, Sent, redact_addresses},
    jobs::SendInvitation,
    queue::{DeadJob, backend::JobHandle},
    secrets,
};

use super::{Handler, OnDead};
use crate::context::JobContext;

/// What a run did (kept as the job's result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Outcome {
    /// The email was sent (or written to the outbox).
    Sent,
    /// Nothing was sent.
    Skipped {
        /// Why.
        reason: Skip,
    },
}

/// Why nothing was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Skip {
    /// The invitation is gone (accepted or deleted), or its user is.
    Gone,
    /// The invitation was resent since: it holds another token (that job sends it).
    Resent,
    /// The email with this token was already sent (a duplicate or retried job).
    AlreadySent,
    /// The user is no longer `INVITED`.
    NotInvited,
    /// The invitation has expired.
    Expired,
}

impl Skip {
    /// As logged and kept in the job's result.
    pub fn as_str(self) -> &'static str {
        match self {
            Skip::Gone => "gone",
            Skip::Resent => "resent",
            Skip::AlreadySent => "already_sent",
            Skip::NotInvited => "not_invited",
            Skip::Expired => "expired",
        }
    }
}

/// The attempt being run (what the handler needs from its [`JobHandle`]).
#[derive(Debug, Clone)]
pub struct Attempt {
    /// This attempt's number (1-based).
    pub number: u32,
    /// The request that enqueued the job.
    pub request_id: Option<String>,
}

impl From<&JobHandle> for Attempt {
    fn from(h: &JobHandle) -> Self {
        Self {
            number: h.attempt,
            request_id: h.request_id.clone(),
        }
    }
}

impl Handler for SendInvitation {
    type Output = Outcome;

    async fn run(self, ctx: &JobContext, handle: &JobHandle) -> Result<Outcome, BoxDynError> {
        send_invitation(ctx, &self, &Attempt::from(handle)).await
    }

    const ON_DEAD: Option<OnDead<Self>> = Some(|ctx, job, dead| Box::pin(on_dead(ctx, job, dead)));
}

/// Why an attempt failed.
enum Failure {
    /// Rendering or sending the email.
    Email(EmailError),
    /// Anything else (Postgres).
    Other(anyhow::Error),
}

impl From<EmailError> for Failure {
    fn from(e: EmailError) -> Self {
        Failure::Email(e)
    }
}

impl From<anyhow::Error> for Failure {
    fn from(e: anyhow::Error) -> Self {
        Failure::Other(e)
    }
}

/// Sends the invitation email if the invitation still wants it; see the module docs.
#[tracing::instrument(name = "send_invitation", skip_all, fields(
    project_id = %job.project_id, invitation_id = %job.invitation_id, user_id = %job.user_id,
    resent = job.resent, attempt = attempt.number,
))]
pub async fn send_invitation(
    ctx: &JobContext,
    job: &SendInvitation,
    attempt: &Attempt,
) -> Result<Outcome, BoxDynError> {
    let Some(token) = secrets::open(&ctx.settings.auth.jwt_secret, &job.sealed_token) else {
        // No email can be sent without the token: the job goes dead, and its on-dead hook
        // marks the invitation failed if it still is this job's (by the token's hash).
        return Err(AbortError::new(
            "the sealed invitation token does not open (sealed under another JWT_SECRET, or \
             altered); resend the invitation",
        )
        .into());
    };
    let token_hash = secrets::token_hash(&token);
    let failure = match deliver(ctx, job, attempt, &token, &token_hash).await {
        Ok(outcome) => return Ok(outcome),
        Err(failure) => failure,
    };
    let (text, permanent) = match &failure {
        Failure::Email(e) => (
            format!("Failed to send the invitation email: {}", e.redacted()),
            e.is_permanent(),
        ),
        Failure::Other(e) => (redact_addresses(&format!("{e:#}")), false),
    };
    if permanent {
        Err(AbortError::new(text).into())
    } else {
        Err(text.into())
    }
}

async fn deliver(
    ctx: &JobContext,
    job: &SendInvitation,
    attempt: &Attempt,
    token: &str,
    token_hash: &str,
) -> Result<Outcome, Failure> {
    let skip = |reason: Skip, why: &str| {
        tracing::info!(reason = reason.as_str(), "invitation email not sent: {why}");
        Ok(Outcome::Skipped { reason })
    };
    let invitation = db::invitations::get(&ctx.pool, job.project_id, job.invitation_id)
        .await
        .context("Failed to read the invitation")?;
    let Some(invitation) = invitation.filter(|i| i.user_id == job.user_id) else {
        return skip(Skip::Gone, "the invitation is gone (accepted or deleted)");
    };
    if invitation.token_hash != token_hash {
        return skip(
            Skip::Resent,
            "the invitation was resent since (another token)",
        );
    }
    if invitation.delivery == "SENT" {
        return skip(Skip::AlreadySent, "it was already sent with this token");
    }
    if invitation.expires_at <= Utc::now() {
        return skip(Skip::Expired, "the invitation has expired");
    }

    let (user, inviter_name) = {
        let mut conn = ctx
            .pool
            .acquire()
            .await
            .context("Failed to get a Postgres connection")?;
        let user = db::users::find(&mut conn, job.project_id, job.user_id)
            .await
            .context("Failed to read the invited user")?;
        let inviter_name = match job.inviter_id {
            Some(id) => db::users::find(&mut conn, job.project_id, id)
                .await
                .context("Failed to read the inviter")?
                .and_then(|u| u.name),
            None => None,
        };
        (user, inviter_name)
    };
    let Some(user) = user else {
        return skip(Skip::Gone, "the invited user is gone");
    };
    if user.status != UserStatus::Invited {
        return skip(Skip::NotInvited, "the user is no longer invited");
    }

    let email = ctx.mailer.templates().invitation(&InvitationEmail::new(
        inviter_name.as_deref(),
        user.roles.iter().map(|r| r.name.clone()).collect(),
        &ctx.settings.users.invitation_accept_page(),
        token,
        invitation.expires_at,
    ))?;
    // one Message-ID per (invitation, token): a resend after a crash repeats it, a resend with a
    // new token does not
    let message_id = format!(
        "invitation.{}.{}",
        job.invitation_id,
        &token_hash[..token_hash.len().min(16)]
    );
    match ctx.mailer.send(&user.email, &email, &message_id).await? {
        Sent::Smtp(_) => tracing::info!("invitation email sent"),
        Sent::Outbox(path) => tracing::info!(
            path = %path.display(),
            "invitation email written to the outbox (SMTP_URL is unset)"
        ),
    }

    // The outcome and its audit entry land together or not at all.
    let mut tx = ctx.pool.begin().await.context("Failed to begin")?;
    let marked = db::invitations::mark_sent(&mut tx, job.project_id, job.invitation_id, token_hash)
        .await
        .context("Failed to mark the invitation sent")?;
    if !marked {
        tracing::info!("the invitation was resent or accepted while its email was being sent");
    }
    db::audit::record(
        &mut tx,
        NewEntry::new(
            job.project_id,
            if job.resent {
                "invitation.resent"
            } else {
                "invitation.sent"
            },
        )
        .user(job.user_id)
        .metadata(serde_json::json!({
            "invitationId": job.invitation_id,
            "attempt": attempt.number,
        }))
        .request(attempt.request_id.clone()),
    )
    .await
    .context("Failed to audit the sent invitation")?;
    tx.commit()
        .await
        .context("Failed to commit the invitation's outcome")?;
    Ok(Outcome::Sent)
}

/// The on-dead hook: marks the invitation `FAILED` with the job's last error and audits
/// `invitation.failed`, in one transaction, if the invitation still holds this job's token and
/// is still `PENDING` (resent, sent, accepted or already marked: left as it is). Idempotent, as
/// hooks must be.
#[tracing::instrument(name = "send_invitation.on_dead", skip_all, fields(
    project_id = %job.project_id, invitation_id = %job.invitation_id, user_id = %job.user_id,
))]
pub async fn on_dead(ctx: JobContext, job: SendInvitation, dead: DeadJob) -> anyhow::Result<()> {
    let token_hash = match secrets::open(&ctx.settings.auth.jwt_secret, &job.sealed_token) {
        Some(token) => secrets::token_hash(&token),
        None if !job.token_hash.is_empty() => job.token_hash.clone(),
        None => {
            tracing::warn!(
                "the sealed token does not open and the job has no token hash: no telling \
                 whether the invitation is still this job's, so it is left as it is"
            );
            return Ok(());
        }
    };
    let mut tx = ctx.pool.begin().await.context("Failed to begin")?;
    let marked = db::invitations::mark_failed(
        &mut tx,
        job.project_id,
        job.invitation_id,
        &token_hash,
        &dead.last_error,
    )
    .await
    .context("Failed to mark the invitation failed")?;
    if !marked {
        tracing::info!(
            "the invitation's email was given up on; the invitation changed since, left as it is"
        );
        return Ok(());
    }
    db::audit::record(
        &mut tx,
        NewEntry::new(job.project_id, "invitation.failed")
            .user(job.user_id)
            .metadata(serde_json::json!({
                "invitationId": job.invitation_id,
                "jobId": dead.id,
                "attempts": dead.attempts,
                "resent": job.resent,
                "error": dead.last_error,
            }))
            .request(dead.request_id.clone()),
    )
    .await
    .context("Failed to audit the failed invitation")?;
    tx.commit().await.context("Failed to commit")?;
    tracing::warn!("invitation email given up on; invitation marked failed");
    Ok(())
}
