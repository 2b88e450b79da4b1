//! Runs `job_webhook`: one signed POST (Standard Webhooks 1.0, as every Comet webhook) telling
//! an endpoint that one of its project's jobs completed or went dead.
//!
//! The endpoint is read again now: deleted, disabled, or no longer subscribed to this message
//! (type or queue) and nothing is sent; the job completes saying so. A receiver's 2xx completes
//! the job; a network error, 408, 429 or 5xx retries it with the kind's backoff (or after the
//! receiver's `Retry-After`, when longer); another 4xx sends it dead at once with the status and
//! the receiver's answer. Every result feeds the endpoint's failing streak, as notifications'
//! deliveries do, so an endpoint failing for `WEBHOOK_DISABLE_AFTER_SECS` is disabled.

use anyhow::Context as _;
use apalis_core::error::{AbortError, BoxDynError, RetryAfterError};
use chrono::Utc;
use serde::Serialize;
use shared::{
    db,
    jobs::{Job as _, JobWebhook},
    queue::backend::{JobHandle, backoff_delay},
    webhooks::{self, SendOutcome},
};

use super::{Handler, deliver_notification::webhook::record_endpoint};
use crate::context::JobContext;

/// What a run did (the job's result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Sent {
    /// Whether the message was delivered (false: skipped, see `note`).
    pub delivered: bool,
    /// The receiver's HTTP status.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub status: Option<u16>,
    /// Why nothing was sent.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<&'static str>,
}

impl Sent {
    fn skipped(note: &'static str) -> Self {
        Self {
            delivered: false,
            status: None,
            note: Some(note),
        }
    }
}

impl Handler for JobWebhook {
    type Output = Sent;

    #[tracing::instrument(name = "job_webhook", skip_all, fields(
        project_id = %self.project_id, endpoint_id = %self.endpoint_id,
        job_id = %self.job.job_id, event = self.event.as_str(), attempt = handle.attempt,
    ))]
    async fn run(self, ctx: &JobContext, handle: &JobHandle) -> Result<Sent, BoxDynError> {
        let mut conn = ctx.pool.acquire().await.context("Failed to connect")?;
        let endpoint = db::webhook_endpoints::find(&mut conn, self.project_id, self.endpoint_id)
            .await
            .context("Failed to read the endpoint")?;
        drop(conn);
        let Some(endpoint) = endpoint else {
            return Ok(Sent::skipped("the endpoint was deleted"));
        };
        if !endpoint.enabled {
            return Ok(Sent::skipped("the endpoint is disabled"));
        }
        if !endpoint.takes_job(self.event.as_str(), &self.job.queue) {
            return Ok(Sent::skipped("the endpoint no longer subscribes to this message"));
        }
        let body = serde_json::to_vec(&self.body()).context("Failed to serialise the body")?;
        let sent = webhooks::deliver(
            &ctx.webhooks,
            &endpoint,
            &ctx.settings.auth.jwt_secret,
            &self.message_id(),
            &body,
            Utc::now(),
        )
        .await;
        record_endpoint(
            ctx,
            self.project_id,
            self.endpoint_id,
            sent.outcome.is_success(),
        )
        .await?;
        let status = sent.outcome.status();
        let outcome = if sent.outcome.is_success() { "ok" } else { "failed" };
        metrics::counter!("comet_job_webhooks_total", "event" => self.event.as_str(), "outcome" => outcome)
            .increment(1);
        match sent.outcome {
            SendOutcome::Delivered { .. } => Ok(Sent {
                delivered: true,
                status,
                note: None,
            }),
            SendOutcome::Retry {
                retry_after, error, ..
            } => {
                let backoff = backoff_delay(&Self::POLICY, handle.attempt);
                let wait = retry_after.map_or(backoff, |a| a.max(backoff));
                Err(RetryAfterError::new(describe(status, &error), wait).into())
            }
            SendOutcome::Permanent { error, .. } => {
                Err(AbortError::new(describe(status, &error)).into())
            }
        }
    }
}

fn describe(status: Option<u16>, error: &str) -> String {
    match status {
        Some(s) => format!("the endpoint answered HTTP {s}: {error}"),
        None => format!("the endpoint could not be reached: {error}"),
    }
}
