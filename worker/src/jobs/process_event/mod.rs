//! Runs `process_event`: the project's active rules for the event's type (cached, see
//! [`crate::rules_cache`]), by priority; for each whose condition matches, a notification
//! rendered from the rule's templates, whose recipients are the ACTIVE users holding any of
//! its target roles now. Then `processedAt`, the matched rules and the counts on the event.
//!
//! Idempotent: notifications are unique per (event, rule) and recipients per (notification,
//! user), so a re-run after a crash or a retry creates nothing twice; the delivery jobs of the
//! next issue go in the same transaction, on the same keys. An evaluation error (a missing
//! field, a wrong type) or a render error is no match: counted in
//! `comet_rule_evaluation_errors_total` and recorded on the rule (`lastError`), at most once a
//! minute per rule (checked in the process first: no write per event).
//!
//! Round trips per event: none of its own. The event is read with those of the other jobs
//! starting at the same moment ([`read`], one statement); the rules come from the cache. The writes (the
//! notifications, their recipients and the processed mark in one statement,
//! [`db::notifications::create_for_events`], then the deliveries) are committed together with
//! those of the other events being processed at the same moment ([`group_commit`]): one
//! transaction and one statement per project for a batch. An event that is not in the job's
//! project sends the job dead.
//!
//! Delivery: in-app delivery is written in the same transaction (the recipients whose in-app
//! channel is on get the notification in their inbox and feed; published to their streams
//! after the commit, see [`group_commit`]); for the other channels, one `deliver_notification`
//! job per new notification and channel, in the same transaction (notifications a re-run finds
//! already stored were enqueued by the run that stored them). A rule with `suppression` asks [`shared::suppression`] about each match: a suppressed
//! match is stored without recipients or delivery, and the match that opens a suppression period
//! also enqueues the period's `rule_digest` job, to run when the period closes.

pub mod group_commit;
pub mod read;

use anyhow::Context as _;
use apalis_core::error::{AbortError, BoxDynError};
use serde::Serialize;
use shared::{
    db::{
        self,
        notifications::{EventMatches, NewNotification},
    },
    jobs::{ProcessEvent, RuleDigest},
    queue::backend::JobHandle,
    rules::{EventInput, EventView},
    suppression::Decision,
};
use uuid::Uuid;

use self::group_commit::Write;
use super::Handler;
use crate::context::JobContext;

/// Report progress every this many rules evaluated (large rule sets only).
const PROGRESS_EVERY: usize = 100;

/// What a run did (kept as the job's result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// Rules that looked at the event's type.
    pub evaluated: usize,
    /// Rules that matched.
    pub matched: Vec<Uuid>,
    /// Rules whose condition or templates failed on this event.
    pub errors: usize,
    /// Notifications the event has.
    pub notifications: i32,
    /// Their recipients.
    pub recipients: i32,
    /// Matches folded into a suppression digest (stored, not delivered one by one).
    pub suppressed: usize,
    /// Delivery jobs enqueued (one per new notification and channel but in-app).
    pub deliveries: usize,
    /// Recipients whose inbox received a notification now (in-app, in this run's transaction).
    pub delivered_in_app: usize,
}

impl Handler for ProcessEvent {
    type Output = Outcome;

    async fn run(self, ctx: &JobContext, handle: &JobHandle) -> Result<Outcome, BoxDynError> {
        process_event(ctx, &self, handle).await
    }
}

async fn rule_failed(ctx: &JobContext, project_id: Uuid, version: i64, rule_id: Uuid, why: &str) {
    metrics::counter!("comet_rule_evaluation_errors_total").increment(1);
    tracing::info!(%rule_id, error = why, "rule failed on an event: no match");
    if !ctx.rules.error_due(rule_id, version) {
        return;
    }
    if let Err(e) = db::rules::record_error(&ctx.pool, project_id, rule_id, why).await {
        tracing::warn!(%rule_id, error = %e, "could not record a rule's error");
    }
}

/// Processes the job's event; see the module docs.
#[tracing::instrument(name = "process_event", skip_all, fields(
    project_id = %job.project_id, event_id = %job.event_id,
))]
pub async fn process_event(
    ctx: &JobContext,
    job: &ProcessEvent,
    handle: &JobHandle,
) -> Result<Outcome, BoxDynError> {
    let (project_id, event_id) = (job.project_id, job.event_id);
    // read with the events of the other jobs starting now (`read`)
    let event = ctx
        .event_reads
        .write((project_id, event_id))
        .await
        .context("Failed to read the event")?;
    let Some(event) = event else {
        return Err(AbortError::new("the event does not exist in the job's project").into());
    };
    let Some(rules) = ctx.rules.get(&ctx.pool, project_id, event.rules_version).await? else {
        return Err(AbortError::new("the job's project does not exist").into());
    };
    for (rule_id, why) in &rules.broken {
        rule_failed(ctx, project_id, rules.version, *rule_id, why).await;
    }

    let input = EventInput::new(
        &event.event_type,
        event.source.as_deref(),
        event.occurred_at,
        &event.payload,
    );
    let view = EventView::new(
        &event.event_type,
        event.source.as_deref(),
        event.occurred_at,
        &event.payload,
    );
    let selected: Vec<_> = rules
        .rules
        .iter()
        .filter(|r| r.selects(&event.event_type))
        .collect();
    let mut outcome = Outcome {
        evaluated: selected.len(),
        matched: Vec::new(),
        errors: 0,
        notifications: 0,
        recipients: 0,
        suppressed: 0,
        deliveries: 0,
        delivered_in_app: 0,
    };
    let mut new = Vec::new();
    let mut digests = Vec::new();
    for (i, rule) in selected.iter().enumerate() {
        if i > 0 && i % PROGRESS_EVERY == 0 {
            let progress = serde_json::json!({ "rulesEvaluated": i, "rules": selected.len() });
            if let Err(e) = handle.progress(&progress).await {
                tracing::debug!(error = %e, "progress not recorded");
            }
        }
        let verdict = rule
            .condition
            .as_ref()
            .map_or(Ok(true), |c| c.evaluate(&input));
        let rendered = match verdict {
            Ok(false) => continue,
            Ok(true) => rule.templates.render(&view),
            Err(why) => Err(format!("condition: {why}")),
        };
        match rendered {
            Ok((title, body)) => {
                outcome.matched.push(rule.id);
                let suppressed_in = match rule.suppression {
                    None => None,
                    Some(limit) => match ctx
                        .suppressor
                        .decide(project_id, rule.id, event_id, limit)
                        .await
                        .context("Failed to decide the rule's suppression")?
                    {
                        Decision::Deliver => None,
                        Decision::Suppress {
                            start_ms,
                            end_ms,
                            opened,
                        } => {
                            outcome.suppressed += 1;
                            if opened {
                                digests.push(RuleDigest {
                                    project_id,
                                    rule_id: rule.id,
                                    period_start_ms: start_ms,
                                    period_end_ms: end_ms,
                                });
                            }
                            Some(start_ms)
                        }
                    },
                };
                new.push(NewNotification {
                    rule_id: rule.id,
                    title,
                    body,
                    priority: rule.priority,
                    sound: rule.sound.clone(),
                    channels: rule.channels.clone(),
                    target_role_ids: rule.target_role_ids.clone(),
                    suppressed_in,
                });
            }
            Err(why) => {
                outcome.errors += 1;
                rule_failed(ctx, project_id, rules.version, rule.id, &why).await;
            }
        }
    }

    // notifications, recipients, the processed mark, deliveries and digests: committed with
    // the other events being processed now (see `group_commit`)
    let proposed = new.len();
    let written = ctx
        .events
        .write(Write {
            project_id,
            matches: EventMatches {
                event_id,
                new,
                matched: outcome.matched.clone(),
                job: (handle.id, i32::try_from(handle.attempt).unwrap_or(i32::MAX)),
            },
            digests,
            request_id: handle.request_id.clone(),
        })
        .await?;
    let (created, deliveries) = (written.created, written.deliveries);
    outcome.notifications = created.notifications;
    outcome.recipients = created.recipients;
    outcome.deliveries = deliveries;
    outcome.delivered_in_app = created.in_app.len();
    metrics::counter!("comet_notifications_created_total").increment(proposed as u64);
    tracing::info!(
        evaluated = outcome.evaluated,
        matched = outcome.matched.len(),
        recipients = outcome.recipients,
        "event processed"
    );
    Ok(outcome)
}
