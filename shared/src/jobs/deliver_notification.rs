//! `deliver_notification`: delivers one notification over one channel to its recipients.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Job;
use crate::queue::{NewJob, RetryPolicy};

/// A delivery channel. A rule lists the channels its notifications go out on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Channel {
    /// The recipient's inbox and live stream in the dashboard.
    InApp,
    /// An email to each recipient.
    Email,
    /// A signed POST to each of the project's enabled webhook endpoints for the event's type.
    Webhook,
}

impl Channel {
    /// Every channel.
    pub const ALL: [Channel; 3] = [Channel::InApp, Channel::Email, Channel::Webhook];

    /// The name rules and the database use (`inApp`, `email`, `webhook`).
    pub fn as_str(self) -> &'static str {
        match self {
            Channel::InApp => "inApp",
            Channel::Email => "email",
            Channel::Webhook => "webhook",
        }
    }

    /// The channel named `name`.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|c| c.as_str() == name)
    }

    /// How this channel's attempts are retried: the job kind's attempts and timeout, with a
    /// backoff that suits the channel (in-app is local and retried fast; email and webhooks
    /// wait for servers that may be down for a while).
    pub fn policy(self) -> RetryPolicy {
        let base = DeliverNotification::POLICY;
        match self {
            Channel::InApp => RetryPolicy {
                max_attempts: 8,
                backoff_base: Duration::from_millis(200),
                backoff_cap: Duration::from_secs(30),
                ..base
            },
            Channel::Email => RetryPolicy {
                max_attempts: 10,
                backoff_base: Duration::from_secs(5),
                backoff_cap: Duration::from_secs(1800),
                ..base
            },
            Channel::Webhook => RetryPolicy {
                max_attempts: 12,
                backoff_base: Duration::from_secs(2),
                backoff_cap: Duration::from_secs(3600),
                ..base
            },
        }
    }
}

/// Delivers a notification over one channel: one job per (notification, channel), written in
/// the transaction that created the notification. Each attempt delivers to the targets (users,
/// endpoints) not yet done and records one `delivery_attempts` row per target.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct DeliverNotification {
    /// The tenant.
    pub project_id: Uuid,
    /// The notification.
    pub notification_id: Uuid,
    /// The channel.
    pub channel: Channel,
    /// Only this recipient (an email held by their quiet hours, sent when they end).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user_id: Option<Uuid>,
}

impl DeliverNotification {
    /// The idempotency key of the job for (notification, channel[, user]): a re-run of the
    /// code that enqueues it adds no second job.
    pub fn idempotency_key(&self) -> String {
        match self.user_id {
            Some(user) => format!(
                "deliver:{}:{}:{user}",
                self.notification_id,
                self.channel.as_str()
            ),
            None => format!("deliver:{}:{}", self.notification_id, self.channel.as_str()),
        }
    }

    /// The options to enqueue it with: its channel's attempts, its idempotency key.
    pub fn enqueue_options(&self) -> super::EnqueueOptions {
        super::EnqueueOptions {
            max_attempts: Some(self.channel.policy().max_attempts),
            idempotency_key: Some(self.idempotency_key()),
            ..Default::default()
        }
    }
}

impl Job for DeliverNotification {
    const QUEUE: &'static str = "deliver_notification";
    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 12,
        backoff_base: Duration::from_secs(2),
        backoff_cap: Duration::from_secs(3600),
        timeout: Duration::from_secs(120),
        // a handler mostly waits on the endpoint, the mail server, or its batched read and
        // group commit: more in flight make larger batches (4,2xx against 3,4xx webhook
        // deliveries a second at 64, BENCHMARKS.md "Notifications")
        concurrency: 128,
        prefetch: 16,
    };
    fn project_id(&self) -> Uuid {
        self.project_id
    }
}

/// Enqueues, through the outbox in the caller's transaction, one delivery job per (notification,
/// channel) for notifications just created; channels the code does not know are skipped (the
/// database's check allows only known ones). Returns how many jobs were written.
pub async fn enqueue_deliveries(
    conn: &mut sqlx::PgConnection,
    project_id: Uuid,
    created: &[crate::db::notifications::ToEnqueue],
    request_id: Option<&str>,
) -> Result<usize, super::EnqueueError> {
    let mut jobs = Vec::new();
    delivery_jobs(project_id, created, request_id, &mut jobs)?;
    crate::db::outbox::insert_many(conn, &jobs).await?;
    Ok(jobs.len())
}

/// The jobs [`enqueue_deliveries`] writes, appended to `jobs`: for a caller that writes the
/// deliveries of many events at once (`process_event`'s group commit).
pub fn delivery_jobs(
    project_id: Uuid,
    created: &[crate::db::notifications::ToEnqueue],
    request_id: Option<&str>,
    jobs: &mut Vec<NewJob>,
) -> Result<(), serde_json::Error> {
    for n in created {
        for channel in n.channels.iter().filter_map(|c| Channel::parse(c)) {
            let job = DeliverNotification {
                project_id,
                notification_id: n.notification_id,
                channel,
                user_id: None,
            };
            let opts = super::EnqueueOptions {
                request_id: request_id.map(str::to_owned),
                ..job.enqueue_options()
            };
            jobs.push(job.to_new_job(opts)?);
        }
    }
    Ok(())
}
