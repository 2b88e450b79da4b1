//! Runs `rule_digest`: when a rule's suppression period has closed, folds the matches it
//! suppressed into one digest notification ("rule X fired 214 more times between … and …",
//! with the first and last events and the count), to the rule's target roles' ACTIVE holders
//! now, over the rule's channels; its delivery jobs go in the same transaction.
//!
//! Idempotent: the digest is keyed `digest:<rule>:<period start>`, so a re-run creates nothing.
//! A period with no stored suppressed match (its matches' processing failed for good), or a
//! rule deleted since, makes no digest.

use anyhow::Context as _;
use apalis_core::error::BoxDynError;
use chrono::DateTime;
use serde::Serialize;
use shared::{
    db::{self, notifications::NewKeyed},
    jobs::{RuleDigest, enqueue_deliveries},
    queue::backend::JobHandle,
};
use uuid::Uuid;

use super::Handler;
use crate::context::JobContext;

/// What a run did (kept as the job's result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// The digest created now (none: nothing to fold, or an earlier run made it).
    pub digest_id: Option<Uuid>,
    /// Matches it folds.
    pub folded: i64,
}

impl Handler for RuleDigest {
    type Output = Outcome;

    async fn run(self, ctx: &JobContext, handle: &JobHandle) -> Result<Outcome, BoxDynError> {
        Ok(digest(ctx, &self, handle).await?)
    }
}

fn format_time(ms: i64) -> String {
    DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_default()
}

/// Creates the period's digest; see the module docs.
#[tracing::instrument(name = "rule_digest", skip_all, fields(
    project_id = %job.project_id, rule_id = %job.rule_id, period = job.period_start_ms,
))]
pub async fn digest(
    ctx: &JobContext,
    job: &RuleDigest,
    handle: &JobHandle,
) -> anyhow::Result<Outcome> {
    let mut tx = ctx.pool.begin().await.context("Failed to begin")?;
    let nothing = Outcome {
        digest_id: None,
        folded: 0,
    };
    let Some(rule) = db::rules::find(&mut tx, job.project_id, job.rule_id)
        .await
        .context("Failed to read the rule")?
    else {
        tracing::info!("the rule was deleted: no digest");
        return Ok(nothing);
    };
    let Some(period) = db::notifications::suppressed_in_period(
        &mut tx,
        job.project_id,
        job.rule_id,
        job.period_start_ms,
    )
    .await
    .context("Failed to count the suppressed matches")?
    else {
        tracing::info!("no suppressed match was stored for the period: no digest");
        return Ok(nothing);
    };
    let (from, to) = (
        format_time(job.period_start_ms),
        format_time(job.period_end_ms),
    );
    let times = if period.count == 1 { "time" } else { "times" };
    let new = NewKeyed {
        kind: "digest",
        dedupe_key: job.idempotency_key(),
        rule_id: Some(rule.rule_id),
        title: shared::domain::one_line(
            &format!("{} fired {} more {times}", rule.name, period.count),
            200,
        ),
        body: format!(
            "Between {from} and {to}, rule \"{}\" matched {} more {times} than its limit of {} \
             per {} s; those matches were folded into this digest. First: event {} at {}. \
             Last: event {} at {}.",
            rule.name,
            period.count,
            rule.suppression_max_fires.unwrap_or_default(),
            rule.suppression_window_secs.unwrap_or_default(),
            period.first_event_id,
            period.first_at.format("%H:%M:%S UTC"),
            period.last_event_id,
            period.last_at.format("%H:%M:%S UTC"),
        ),
        priority: rule.priority,
        sound: rule.sound.clone(),
        channels: rule.channels.clone(),
        data: serde_json::json!({
            "count": period.count,
            "periodStart": DateTime::from_timestamp_millis(job.period_start_ms),
            "periodEnd": DateTime::from_timestamp_millis(job.period_end_ms),
            "firstEventId": period.first_event_id,
            "lastEventId": period.last_event_id,
            "firstAt": period.first_at,
            "lastAt": period.last_at,
        }),
        target_role_ids: rule.target_role_ids.clone(),
    };
    let created = db::notifications::create_keyed(&mut tx, job.project_id, &new)
        .await
        .context("Failed to store the digest")?;
    let Some(created) = created else {
        tracing::info!("the digest exists already (a re-run)");
        return Ok(Outcome {
            digest_id: None,
            folded: period.count,
        });
    };
    enqueue_deliveries(
        &mut tx,
        job.project_id,
        std::slice::from_ref(&created),
        handle.request_id.as_deref(),
    )
    .await
    .context("Failed to enqueue the digest's deliveries")?;
    tx.commit().await.context("Failed to commit the digest")?;
    ctx.outbox.wake();
    metrics::counter!("comet_rule_digests_total").increment(1);
    tracing::info!(folded = period.count, "suppression digest created");
    Ok(Outcome {
        digest_id: Some(created.notification_id),
        folded: period.count,
    })
}
