//! Runs `send_password_reset`: finds the account the email asked a reset for, issues a
//! one-time token (1 h, only its SHA-256 stored, the user's earlier tokens spent), and emails
//! it.
//!
//! An email with no ACTIVE account (in the named project, or anywhere when none was named)
//! finishes with `noAccount`, sending nothing: the API answered that request exactly as it
//! answers a known one. The account is chosen as a login chooses it: the most recently active
//! ACTIVE account with a password.
//!
//! Each attempt that gets as far as sending issues a fresh token, so a retry after a failed
//! send mails a token that works (and the earlier, undelivered one stops working). Failures: an
//! SMTP 5xx or a sealed email that does not open is permanent; anything else is retried. Logs
//! and errors carry ids, never the address or the token. Counted in
//! `comet_password_resets_total{outcome}` (`sent`, `no_account`).

use anyhow::Context as _;
use apalis_core::error::{AbortError, BoxDynError};
use chrono::Utc;
use serde::Serialize;
use shared::{
    db::{self, audit::NewEntry, users::UserStatus},
    email::{PasswordResetEmail, Sent, redact_addresses},
    jobs::{PASSWORD_RESET_TTL, SendPasswordReset},
    queue::backend::JobHandle,
    secrets,
};
use uuid::Uuid;

use super::Handler;
use crate::context::JobContext;

/// What a run did (kept as the job's result).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "camelCase")]
pub enum Outcome {
    /// A token was issued and emailed.
    Sent {
        /// The reset's id (its row in `password_resets`).
        reset_id: Uuid,
    },
    /// No ACTIVE account has this email: nothing was sent.
    NoAccount,
}

impl Handler for SendPasswordReset {
    type Output = Outcome;

    async fn run(self, ctx: &JobContext, handle: &JobHandle) -> Result<Outcome, BoxDynError> {
        send_password_reset(ctx, &self, handle.request_id.clone()).await
    }
}

/// Issues and emails a reset token if the email has an account; see the module docs.
#[tracing::instrument(name = "send_password_reset", skip_all, fields(project_id = %job.project_id))]
pub async fn send_password_reset(
    ctx: &JobContext,
    job: &SendPasswordReset,
    request_id: Option<String>,
) -> Result<Outcome, BoxDynError> {
    let Some(email) = secrets::open(&ctx.settings.auth.jwt_secret, &job.sealed_email) else {
        return Err(AbortError::new(
            "the sealed email does not open (sealed under another JWT_SECRET, or altered); \
             the reset must be asked for again",
        )
        .into());
    };
    let named = (!job.project_id.is_nil()).then_some(job.project_id);
    let candidates = db::users::login_candidates(&ctx.pool, &email, named)
        .await
        .context("Failed to look up the account")?;
    let Some(account) = candidates
        .iter()
        .find(|c| c.status == UserStatus::Active.as_str() && c.password_hash.is_some())
    else {
        metrics::counter!("comet_password_resets_total", "outcome" => "no_account").increment(1);
        tracing::info!("password reset not sent: no active account has this email");
        return Ok(Outcome::NoAccount);
    };
    let (project_id, user_id) = (account.project_id, account.user_id);

    let token = secrets::new_token();
    let expires_at = Utc::now()
        + chrono::Duration::from_std(PASSWORD_RESET_TTL).context("the reset lifetime")?;
    let mut tx = ctx.pool.begin().await.context("Failed to begin")?;
    let reset_id = db::password_resets::create(
        &mut tx,
        project_id,
        user_id,
        &secrets::token_hash(&token),
        expires_at,
    )
    .await
    .context("Failed to store the reset token")?;
    let project_name = db::projects::find(&mut tx, project_id)
        .await
        .context("Failed to read the project")?
        .map(|p| p.name)
        .unwrap_or_default();
    db::audit::record(
        &mut tx,
        NewEntry::new(project_id, "password_reset.requested")
            .user(user_id)
            .metadata(serde_json::json!({ "resetId": reset_id, "expiresAt": expires_at }))
            .request(request_id),
    )
    .await
    .context("Failed to audit the reset")?;
    tx.commit().await.context("Failed to commit the reset")?;

    let rendered = ctx
        .mailer
        .templates()
        .password_reset(&PasswordResetEmail::new(
            &token,
            ctx.settings.users.password_reset_url.as_deref(),
            PASSWORD_RESET_TTL,
            &project_name,
        ))
        .map_err(|e| AbortError::new(format!("Failed to render the reset email: {e}")))?;
    let message_id = format!("password-reset.{reset_id}");
    match ctx.mailer.send(&email, &rendered, &message_id).await {
        Ok(Sent::Smtp(_)) => tracing::info!(%user_id, %reset_id, "password reset email sent"),
        Ok(Sent::Outbox(path)) => tracing::info!(
            %user_id, %reset_id, path = %path.display(),
            "password reset email written to the outbox (SMTP_URL is unset)"
        ),
        Err(e) => {
            let text = format!("Failed to send the reset email: {}", e.redacted());
            return Err(if e.is_permanent() {
                AbortError::new(text).into()
            } else {
                text.into()
            });
        }
    }
    let mut conn = ctx.pool.acquire().await.context("Failed to get a connection")?;
    db::password_resets::mark_sent(&mut conn, project_id, reset_id)
        .await
        .map_err(|e| redact_addresses(&format!("Failed to record the sent reset: {e}")))?;
    metrics::counter!("comet_password_resets_total", "outcome" => "sent").increment(1);
    Ok(Outcome::Sent { reset_id })
}
