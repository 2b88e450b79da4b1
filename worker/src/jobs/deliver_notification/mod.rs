//! Runs `deliver_notification`: delivers one notification over one channel to the targets not
//! yet done, and records one `delivery_attempts` row per target.
//!
//! - Targets: the notification's recipients (in-app, email), or the project's enabled webhook
//!   endpoints for the event's type (webhook). A target that already has a final row (`ok`,
//!   `skipped`, `permanent`, or `deferred` by this job) is not tried again: a retried attempt
//!   delivers only what failed.
//! - Preferences are read now, at delivery: a recipient who turned the channel off, or who is
//!   no longer ACTIVE, is `skipped`; an email inside the recipient's quiet hours is `deferred` to
//!   a job for that recipient alone, which runs when the quiet hours end.
//! - Outcome: any target to retry fails the attempt, retried with the channel's backoff
//!   ([`Channel::policy`]), or after a webhook's `Retry-After` when it asked for longer. With
//!   nothing to retry, a target that failed for good (SMTP 5xx, webhook 4xx other than
//!   408/429) sends the job dead at once, so operators see it; otherwise the job completes.
//! - A suppressed match is never delivered by itself (its rule's digest is); a notification not
//!   in the job's project sends the job dead.

mod email;
mod in_app;
pub mod read;
pub mod record;
pub mod webhook;

use std::{collections::HashSet, time::Duration};

use anyhow::Context as _;
use apalis_core::error::{AbortError, BoxDynError, RetryAfterError};
use serde::Serialize;
use shared::{
    db::{
        deliveries::{AttemptRecord, NewAttempt, Outcome as TargetOutcome, ToDeliver},
        webhook_endpoints::Endpoint,
    },
    jobs::{Channel, DeliverNotification, EnqueueOptions, Job as _},
    queue::backend::{JobHandle, backoff_delay},
};
use uuid::Uuid;

use super::Handler;
use crate::context::JobContext;

/// What a run did (kept as the job's result).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// Targets delivered to in this attempt.
    pub delivered: usize,
    /// Targets skipped in this attempt (preferences, inactive users, disabled endpoints).
    pub skipped: usize,
    /// Recipients whose email waits for the end of their quiet hours.
    pub deferred: usize,
    /// Targets that failed for good.
    pub failed: usize,
    /// Targets done by earlier attempts.
    pub already_done: usize,
    /// Why nothing was delivered at all, if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

/// One target's result in this attempt, with what the job does about it.
#[derive(Debug)]
pub(crate) struct TargetResult {
    pub attempt: NewAttempt,
    /// A webhook's `Retry-After`, when it gave one.
    pub retry_after: Option<Duration>,
    /// An email deferred to this instant (quiet hours).
    pub defer_until: Option<chrono::DateTime<chrono::Utc>>,
}

impl TargetResult {
    pub(crate) fn new(target_id: Uuid, outcome: TargetOutcome) -> Self {
        Self {
            attempt: NewAttempt {
                target_id,
                started_at: chrono::Utc::now(),
                outcome,
                http_status: None,
                smtp_reply: None,
                error: None,
            },
            retry_after: None,
            defer_until: None,
        }
    }

    pub(crate) fn error(mut self, why: impl Into<String>) -> Self {
        self.attempt.error = Some(why.into());
        self
    }
}

/// What a channel needs to deliver one notification.
pub(crate) struct Delivery<'a> {
    pub ctx: &'a JobContext,
    pub job: &'a DeliverNotification,
    pub notification: &'a ToDeliver,
    /// The webhook endpoints that take it (webhook channel only), read with it.
    pub endpoints: &'a [Endpoint],
    /// Targets done by earlier attempts (skip them).
    pub done: &'a HashSet<Uuid>,
}

impl Handler for DeliverNotification {
    type Output = Outcome;

    async fn run(self, ctx: &JobContext, handle: &JobHandle) -> Result<Outcome, BoxDynError> {
        deliver(ctx, &self, handle).await
    }
}

/// Delivers the job's notification over its channel; see the module docs.
#[tracing::instrument(name = "deliver_notification", skip_all, fields(
    project_id = %job.project_id, notification_id = %job.notification_id,
    channel = job.channel.as_str(), attempt = handle.attempt,
))]
pub async fn deliver(
    ctx: &JobContext,
    job: &DeliverNotification,
    handle: &JobHandle,
) -> Result<Outcome, BoxDynError> {
    let read = ctx
        .delivery_reads
        .write((job.project_id, job.notification_id, job.channel, handle.id))
        .await
        .context("Failed to read the notification")?;
    let Some(read::Read {
        notification,
        endpoints,
    }) = read
    else {
        return Err(AbortError::new("the notification does not exist in the job's project").into());
    };
    let mut outcome = Outcome::default();
    if notification.suppressed {
        outcome.note = Some("suppressed: delivered by its rule's digest");
        return Ok(outcome);
    }
    if !notification.channels.iter().any(|c| c == job.channel.as_str()) {
        outcome.note = Some("the notification does not go out on this channel");
        return Ok(outcome);
    }
    let done: HashSet<Uuid> = notification.done.iter().copied().collect();
    outcome.already_done = done.len();
    let delivery = Delivery {
        ctx,
        job,
        notification: &notification,
        endpoints: &endpoints,
        done: &done,
    };
    let results = match job.channel {
        Channel::InApp => in_app::deliver(&delivery).await?,
        Channel::Email => email::deliver(&delivery).await?,
        Channel::Webhook => webhook::deliver(&delivery).await?,
    };
    record(ctx, job, handle, &results).await?;

    let mut retry_after: Option<Duration> = None;
    let mut retry_errors = Vec::new();
    let mut permanent_errors = Vec::new();
    for r in &results {
        match r.attempt.outcome {
            TargetOutcome::Ok => outcome.delivered += 1,
            TargetOutcome::Skipped => outcome.skipped += 1,
            TargetOutcome::Deferred => outcome.deferred += 1,
            TargetOutcome::Permanent => {
                outcome.failed += 1;
                permanent_errors.push(describe(r));
            }
            TargetOutcome::Retry => {
                retry_errors.push(describe(r));
                if let Some(after) = r.retry_after {
                    retry_after = Some(retry_after.map_or(after, |a| a.max(after)));
                }
            }
        }
    }
    metrics::counter!("comet_deliveries_total", "channel" => job.channel.as_str(), "outcome" => "ok")
        .increment(outcome.delivered as u64);
    metrics::counter!("comet_deliveries_total", "channel" => job.channel.as_str(), "outcome" => "failed")
        .increment((outcome.failed + retry_errors.len()) as u64);
    if !retry_errors.is_empty() {
        let backoff = backoff_delay(&job.channel.policy(), handle.attempt);
        let wait = retry_after.map_or(backoff, |a| a.max(backoff));
        let text = summarize("failed, will retry", &retry_errors);
        return Err(RetryAfterError::new(text, wait).into());
    }
    if !permanent_errors.is_empty() {
        return Err(AbortError::new(summarize("failed for good", &permanent_errors)).into());
    }
    Ok(outcome)
}

fn describe(r: &TargetResult) -> String {
    let a = &r.attempt;
    let mut text = a.target_id.to_string();
    if let Some(status) = a.http_status {
        text.push_str(&format!(" (HTTP {status})"));
    }
    if let Some(e) = &a.error {
        text.push_str(": ");
        text.push_str(e);
    }
    text
}

fn summarize(what: &str, errors: &[String]) -> String {
    const SHOWN: usize = 5;
    let mut text = format!("{} target(s) {what}: ", errors.len());
    text.push_str(&errors[..errors.len().min(SHOWN)].join("; "));
    if errors.len() > SHOWN {
        text.push_str(&format!("; and {} more", errors.len() - SHOWN));
    }
    text
}

/// Records the attempt's rows and enqueues the deferred recipients' jobs, in one transaction
/// shared with the other deliveries finishing now ([`record`]).
async fn record(
    ctx: &JobContext,
    job: &DeliverNotification,
    handle: &JobHandle,
    results: &[TargetResult],
) -> anyhow::Result<()> {
    let mut deferred = Vec::new();
    for r in results {
        let Some(until) = r.defer_until else { continue };
        let later = DeliverNotification {
            user_id: Some(r.attempt.target_id),
            ..job.clone()
        };
        let opts = EnqueueOptions {
            run_at: Some(until),
            request_id: handle.request_id.clone(),
            // keyed by the time too: the recipient may be deferred again by a later job
            idempotency_key: Some(format!("{}:{}", later.idempotency_key(), until.timestamp())),
            ..later.enqueue_options()
        };
        deferred.push(
            later
                .to_new_job(opts)
                .context("Failed to encode the deferred delivery")?,
        );
    }
    ctx.attempts
        .write(record::Record {
            attempt: AttemptRecord {
                project_id: job.project_id,
                notification_id: job.notification_id,
                channel: job.channel,
                job_id: handle.id,
                attempt: handle.attempt,
                rows: results.iter().map(|r| r.attempt.clone()).collect(),
            },
            deferred,
        })
        .await
}
