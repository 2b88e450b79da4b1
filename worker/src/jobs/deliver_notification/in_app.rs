//! The in-app channel: the notification enters each recipient's inbox and is pushed to their
//! open streams, wherever they are connected ([`shared::inbox::deliver_in_app`]: idempotent,
//! preferences and status read in its transaction). A failure (Postgres, or the publish after
//! the commit) retries every recipient not done; a retry delivers nothing twice. The entries
//! of recipients already done are published again on every run (streams drop duplicates):
//! this is how a delivery committed by `process_event` whose publish failed reaches the
//! streams.

use anyhow::Context as _;
use shared::{db, db::deliveries::Outcome, inbox};

use super::{Delivery, TargetResult};

pub(super) async fn deliver(d: &Delivery<'_>) -> anyhow::Result<Vec<TargetResult>> {
    let recipients = db::deliveries::recipients(
        &d.ctx.pool,
        d.job.project_id,
        d.job.notification_id,
        d.job.user_id,
    )
    .await
    .context("Failed to read the recipients")?;
    let (done, users): (Vec<_>, Vec<_>) = recipients
        .iter()
        .map(|r| r.user_id)
        .partition(|u| d.done.contains(u));
    // those done may have been delivered by a transaction whose publish never happened
    // (`process_event` hands such notifications to this job): publish their entries again
    inbox::republish(
        &d.ctx.pool,
        &d.ctx.queues,
        d.job.project_id,
        d.job.notification_id,
        &done,
    )
    .await
    .context("Failed to publish the delivered entries again")?;
    if users.is_empty() {
        return Ok(Vec::new());
    }
    match inbox::deliver_in_app(
        &d.ctx.pool,
        &d.ctx.queues,
        d.job.project_id,
        d.job.notification_id,
        &users,
    )
    .await
    {
        Ok(outcomes) => Ok(outcomes
            .into_iter()
            .map(|(user, outcome)| match outcome.skip_reason() {
                None => TargetResult::new(user, Outcome::Ok),
                Some(why) => TargetResult::new(user, Outcome::Skipped).error(why),
            })
            .collect()),
        Err(e) => {
            let why = format!("in-app delivery failed: {e}");
            Ok(users
                .into_iter()
                .map(|u| TargetResult::new(u, Outcome::Retry).error(why.clone()))
                .collect())
        }
    }
}
