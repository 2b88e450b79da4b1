//! [`JobContext`]: what every job handler and service gets, built once from the settings.

use std::sync::Arc;

use anyhow::Context as _;
use shared::{
    config::Settings,
    email::Mailer,
    queue::{OutboxWaker, Queues},
    sessions::Sessions,
    suppression::Suppressor,
    webhooks::WebhookClient,
};
use sqlx::PgPool;

use crate::{
    jobs::{
        deliver_notification::{
            read::{self as delivery_read, DeliveryReader},
            record::{self, AttemptWriter},
            webhook::SuccessMemo,
        },
        process_event::{
            group_commit::{self, EventWriter},
            read::{self, EventReader},
        },
    },
    rules_cache::RuleCache,
};

/// What every job handler gets: built once from the settings.
#[derive(Clone)]
pub struct JobContext {
    /// Postgres.
    pub pool: PgPool,
    /// The Redis queues.
    pub queues: Queues,
    /// The settings.
    pub settings: Arc<Settings>,
    /// Renders and sends emails (templates parsed once).
    pub mailer: Mailer,
    /// Sessions and revocation, on the queues' Redis connection.
    pub sessions: Sessions,
    /// Compiled rules per project (`process_event`).
    pub rules: Arc<RuleCache>,
    /// Rules' alert suppression, decided in Redis (`process_event`).
    pub suppressor: Suppressor,
    /// The webhook delivery client, behind the SSRF guard (`deliver_notification`).
    pub webhooks: WebhookClient,
    /// Wakes the outbox relays: a job that enqueues through the outbox (`Job::enqueue` in its
    /// transaction) calls `wake()` after the commit.
    pub outbox: OutboxWaker,
    /// `process_event`'s group commit: the process's one writer of events' results.
    pub events: EventWriter,
    /// `process_event`'s batched read of its event.
    pub event_reads: EventReader,
    /// `deliver_notification`'s group commit: the process's one writer of delivery attempts.
    pub attempts: AttemptWriter,
    /// `deliver_notification`'s batched read of its notification (and webhook endpoints).
    pub delivery_reads: DeliveryReader,
    /// The webhook endpoints whose success this process wrote a moment ago.
    pub endpoint_successes: Arc<SuccessMemo>,
}

impl JobContext {
    /// The context for `settings`: the pool and queues are the process's own; the mailer is
    /// built here, so a malformed `SMTP_URL` or `FROM_EMAIL` fails start-up.
    pub fn new(settings: Arc<Settings>, pool: PgPool, queues: Queues) -> anyhow::Result<Self> {
        let mailer = Mailer::from_settings(&settings).context("Failed to configure email")?;
        let webhooks =
            WebhookClient::new(&settings.webhooks).context("Failed to build the webhook client")?;
        let outbox = OutboxWaker::spawn(queues.clone());
        Ok(Self {
            sessions: Sessions::new(&queues),
            rules: Arc::default(),
            suppressor: Suppressor::new(&queues),
            webhooks,
            outbox: outbox.clone(),
            events: group_commit::spawn(pool.clone(), queues.clone(), outbox.clone()),
            event_reads: read::spawn(pool.clone()),
            attempts: record::spawn(pool.clone(), outbox),
            delivery_reads: delivery_read::spawn(pool.clone()),
            endpoint_successes: Arc::default(),
            pool,
            queues,
            settings,
            mailer,
        })
    }
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `Sessions` has no `Debug`; the settings' secrets print redacted
        f.debug_struct("JobContext")
            .field("queues", &self.queues)
            .field("mailer", &self.mailer)
            .finish_non_exhaustive()
    }
}
