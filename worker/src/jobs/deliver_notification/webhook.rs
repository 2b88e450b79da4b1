//! The webhook channel: one signed POST (Standard Webhooks 1.0, see [`shared::webhooks`]) per
//! enabled endpoint of the project whose event-type filter selects the notification's event
//! (a digest or a notice, which have no single event, goes to the endpoints without a filter).
//!
//! The message is the same on every attempt and to every endpoint: `webhook-id` is fixed per
//! notification, the body is built from stored rows; only `webhook-timestamp` (and so the
//! signature) is the attempt's own, as receivers check its freshness. Each result also feeds the
//! endpoint's failing streak: an endpoint failing for `WEBHOOK_DISABLE_AFTER_SECS` is disabled,
//! audited, and its managers get a `system` notification, delivered in-app here.

use std::{
    collections::HashMap,
    sync::{Mutex, PoisonError},
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::Utc;
use serde_json::json;
use shared::{
    db::{self, deliveries::Outcome, notifications::ToEnqueue},
    jobs::enqueue_deliveries,
    webhooks::{self, SendOutcome},
};
use uuid::Uuid;

use super::{Delivery, TargetResult};

/// The body every endpoint receives for a notification.
fn body(d: &Delivery<'_>) -> serde_json::Value {
    let n = d.notification;
    let event = n.event_id.map(|id| {
        json!({
            "id": id,
            "type": n.event_type,
            "source": n.event_source,
            "occurredAt": n.event_occurred_at,
            "payload": n.event_payload,
        })
    });
    json!({
        "type": format!("notification.{}", n.kind),
        "timestamp": n.created_at,
        "data": {
            "notificationId": d.job.notification_id,
            "projectId": d.job.project_id,
            "kind": n.kind,
            "ruleId": n.rule_id,
            "ruleName": n.rule_name,
            "title": n.title,
            "body": n.body,
            "priority": n.priority,
            "sound": n.sound,
            "createdAt": n.created_at,
            "event": event,
            "details": n.data,
        }
    })
}

pub(super) async fn deliver(d: &Delivery<'_>) -> anyhow::Result<Vec<TargetResult>> {
    let ctx = d.ctx;
    let project = d.job.project_id;
    let body = serde_json::to_vec(&body(d)).context("Failed to serialise the webhook body")?;
    let msg_id = webhooks::message_id(d.job.notification_id);
    let mut results = Vec::new();
    for ep in d.endpoints.iter().filter(|e| !d.done.contains(&e.endpoint_id)) {
        let mut result = TargetResult::new(ep.endpoint_id, Outcome::Ok);
        let sent = webhooks::deliver(
            &ctx.webhooks,
            ep,
            &ctx.settings.auth.jwt_secret,
            &msg_id,
            &body,
            Utc::now(),
        )
        .await;
        result.attempt.http_status = sent.outcome.status().map(i32::from);
        match &sent.outcome {
            SendOutcome::Delivered { .. } => {}
            SendOutcome::Retry {
                retry_after, error, ..
            } => {
                result.attempt.outcome = Outcome::Retry;
                result.attempt.error = Some(error.clone());
                result.retry_after = *retry_after;
            }
            SendOutcome::Permanent { error, .. } => {
                result.attempt.outcome = Outcome::Permanent;
                result.attempt.error = Some(error.clone());
            }
        }
        record_endpoint(ctx, project, ep.endpoint_id, sent.outcome.is_success()).await?;
        results.push(result);
    }
    Ok(results)
}

/// How long after this process wrote an endpoint's success it writes none again (unless it saw
/// the endpoint fail since): the row's own condition allows one write a second, and asking it
/// on every delivery cost a round trip each.
const SUCCESS_EVERY: Duration = Duration::from_secs(1);

/// The endpoints whose success this process wrote in the last [`SUCCESS_EVERY`] and has not
/// seen fail since. A failure recorded by another process is cleared by this one's next
/// written success, at most [`SUCCESS_EVERY`] later (the disabling streak is measured in
/// minutes: `WEBHOOK_DISABLE_AFTER_SECS`).
#[derive(Debug, Default)]
pub struct SuccessMemo(Mutex<HashMap<Uuid, Instant>>);

impl SuccessMemo {
    /// Whether a success of `endpoint` needs no write now.
    fn fresh(&self, endpoint: Uuid, now: Instant) -> bool {
        let memo = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        memo.get(&endpoint)
            .is_some_and(|at| now.duration_since(*at) < SUCCESS_EVERY)
    }

    /// Notes a written result of `endpoint`.
    fn note(&self, endpoint: Uuid, success: bool, now: Instant) {
        let mut memo = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if success {
            memo.insert(endpoint, now);
            // endpoints deleted or not delivered to any more: forget them
            if memo.len() > 10_000 {
                memo.retain(|_, at| now.duration_since(*at) < SUCCESS_EVERY);
            }
        } else {
            memo.remove(&endpoint);
        }
    }
}

/// Feeds one delivery's result into the endpoint's failing streak; when it disables the
/// endpoint, enqueues the in-app notice to the project's webhook managers. A success this
/// process wrote less than [`SUCCESS_EVERY`] ago is not written again ([`SuccessMemo`]).
pub(crate) async fn record_endpoint(
    ctx: &crate::context::JobContext,
    project: Uuid,
    endpoint: Uuid,
    success: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    if success && ctx.endpoint_successes.fresh(endpoint, started) {
        return Ok(());
    }
    let recorded = db::webhook_endpoints::record_result(
        &ctx.pool,
        project,
        endpoint,
        success,
        Utc::now(),
        ctx.settings.webhooks.disable_after,
    )
    .await
    .context("Failed to record the endpoint's result")?;
    ctx.endpoint_successes.note(endpoint, success, started);
    if let Some(notice) = recorded.notification_id {
        let mut tx = ctx.pool.begin().await.context("Failed to begin")?;
        let created = ToEnqueue {
            notification_id: notice,
            channels: vec!["inApp".into()],
        };
        enqueue_deliveries(&mut tx, project, &[created], None)
            .await
            .context("Failed to enqueue the disabled endpoint's notice")?;
        tx.commit().await.context("Failed to commit")?;
        ctx.outbox.wake();
    }
    Ok(())
}
