//! The email channel: one email per recipient, rendered from `email-templates/notification/`,
//! with a `Message-ID` fixed per (notification, recipient), so that the one resend the
//! at-least-once window allows (the server's 250 came, recording it did not) is recognisable
//! downstream as the same message.

use chrono::Utc;
use futures::{StreamExt as _, stream};
use shared::{
    db::{self, deliveries::Outcome},
    domain::QuietHours,
    email::{NotificationEmail, NotificationFields, Sent},
};

use super::{Delivery, TargetResult};

/// Emails sent at once by one job.
const PARALLEL: usize = 8;

pub(super) async fn deliver(d: &Delivery<'_>) -> anyhow::Result<Vec<TargetResult>> {
    let recipients = db::deliveries::recipients(
        &d.ctx.pool,
        d.job.project_id,
        d.job.notification_id,
        d.job.user_id,
    )
    .await?;
    let n = d.notification;
    let email = d.ctx.mailer.templates().notification(&NotificationEmail::new(
        NotificationFields {
            notification_id: d.job.notification_id,
            title: &n.title,
            body: &n.body,
            priority: n.priority,
            event_type: n.event_type.as_deref(),
            event_source: n.event_source.as_deref(),
            occurred_at: n.event_occurred_at,
            rule_name: n.rule_name.as_deref(),
        },
        &d.ctx.settings.users.app_base_url,
    ));
    let email = match email {
        Ok(e) => e,
        // a template bug, not the recipient's: every recipient fails for good, visibly
        Err(e) => {
            return Ok(recipients
                .iter()
                .filter(|r| !d.done.contains(&r.user_id))
                .map(|r| TargetResult::new(r.user_id, Outcome::Permanent).error(e.redacted()))
                .collect());
        }
    };
    let now = Utc::now();
    let results = stream::iter(recipients.into_iter().filter(|r| !d.done.contains(&r.user_id)))
        .map(|r| {
            let email = &email;
            async move {
                if r.status != "ACTIVE" {
                    return TargetResult::new(r.user_id, Outcome::Skipped)
                        .error("the user is no longer active");
                }
                if !r.email_on {
                    return TargetResult::new(r.user_id, Outcome::Skipped)
                        .error("email is off in the user's preferences");
                }
                let quiet = QuietHours::from_stored(r.quiet_start, r.quiet_end, &r.time_zone);
                if let Some(until) = quiet.and_then(|q| q.holds_until(now)) {
                    let mut deferred = TargetResult::new(r.user_id, Outcome::Deferred)
                        .error(format!("quiet hours until {}", until.to_rfc3339()));
                    deferred.defer_until = Some(until);
                    return deferred;
                }
                let message_id = format!("notification.{}.{}", d.job.notification_id, r.user_id);
                let mut result = TargetResult::new(r.user_id, Outcome::Ok);
                match d.ctx.mailer.send(&r.email, email, &message_id).await {
                    Ok(Sent::Smtp(reply)) => result.attempt.smtp_reply = Some(reply),
                    Ok(Sent::Outbox(_)) => {
                        result.attempt.smtp_reply = Some("written to the email outbox".into())
                    }
                    Err(e) => {
                        result.attempt.outcome = if e.is_permanent() {
                            Outcome::Permanent
                        } else {
                            Outcome::Retry
                        };
                        result.attempt.error = Some(e.redacted());
                    }
                }
                result
            }
        })
        .buffer_unordered(PARALLEL)
        .collect::<Vec<_>>()
        .await;
    Ok(results)
}
