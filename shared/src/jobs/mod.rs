//! Job definitions: one serde struct per job kind, one file each, and [`with_job_kinds!`], the
//! one list of kinds that everything else is generated from.
//!
//! A job carries ids, never copies of data, and always its `projectId`. The API only enqueues,
//! with one verb on the job: [`Job::enqueue`] (through the outbox, inside the caller's
//! transaction: the job exists if and only if the transaction commits) or [`Job::enqueue_now`]
//! (straight to Redis, for jobs that follow no database write). The worker only runs them.
//!
//! # The list of kinds
//! [`with_job_kinds!`] names every kind as `module::Type`. The module is both this crate's
//! `shared::jobs::<module>` (the definition) and the worker's `comet_worker::jobs::<module>`
//! (the handler); the worker declares its handler modules and registers them from the same
//! list, so a kind without a handler does not compile. From the list come [`KINDS`] and
//! [`QUEUES`] (the API's job look-up and queue views, the worker's `WORKER_QUEUES` check).
//! Adding a kind: see ARCHITECTURE.md, "Adding a job kind".

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::queue::{Enqueued, NewJob, QueueError, Queues, RetryPolicy, backend::JobArgs};

/// Calls the macro `$then!` with every job kind, as `module::Type, …`: the one list of kinds.
///
/// A kind's queue name is its `Job::QUEUE`, which by convention equals its module's name.
#[macro_export]
macro_rules! with_job_kinds {
    ($then:path) => {
        $then! {
            ping::Ping,
            send_invitation::SendInvitation,
            send_password_reset::SendPasswordReset,
            revoke_sessions::RevokeSessions,
            process_event::ProcessEvent,
            deliver_notification::DeliverNotification,
            rule_digest::RuleDigest,
            expire_invitations::ExpireInvitations,
            sweep_sessions::SweepSessions,
            apply_retention::ApplyRetention,
            sweep_api_keys::SweepApiKeys,
            bucket_monitor::BucketMonitor,
            bulk_import::BulkImport,
            bulk_users::BulkUsers,
            bulk_jobs::BulkJobs,
            job_webhook::JobWebhook,
        }
    };
}

/// Declares the definition modules and the lists derived from [`with_job_kinds!`].
macro_rules! declare_kinds {
    ($($module:ident::$kind:ident),* $(,)?) => {
        $(
            mod $module;
            pub use $module::*;
        )*

        /// Every job kind, in the order of [`with_job_kinds!`].
        pub const KINDS: &[Kind] = &[$(Kind::of::<$kind>()),*];

        /// Every queue name (one queue per kind), in the order of [`KINDS`].
        pub const QUEUES: &[&str] = &[$(<$kind as Job>::QUEUE),*];
    };
}

with_job_kinds!(declare_kinds);

/// A job kind as the lists see it: its queue and how it is run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Kind {
    /// The queue (and kind) name.
    pub queue: &'static str,
    /// Attempts, backoff, timeout, concurrency.
    pub policy: RetryPolicy,
}

impl Kind {
    /// The entry of job type `J`.
    pub const fn of<J: Job>() -> Self {
        Self {
            queue: J::QUEUE,
            policy: J::POLICY,
        }
    }

    /// The kind whose queue is `queue`.
    pub fn named(queue: &str) -> Option<&'static Kind> {
        KINDS.iter().find(|k| k.queue == queue)
    }
}

/// A job kind: a serde struct with a stable queue name and a retry policy.
pub trait Job: JobArgs {
    /// The queue (and kind) name: stable, never the Rust type path.
    const QUEUE: &'static str;
    /// How this kind is retried and run.
    const POLICY: RetryPolicy;

    /// The tenant the job belongs to.
    fn project_id(&self) -> Uuid;

    /// The record the outbox and the queue store, with a fresh UUID v7 id.
    fn to_new_job(&self, opts: EnqueueOptions) -> Result<NewJob, serde_json::Error> {
        Ok(NewJob {
            id: Uuid::now_v7(),
            queue: Self::QUEUE.to_owned(),
            payload: serde_json::to_value(self)?,
            run_at: opts.run_at,
            priority: opts.priority,
            max_attempts: opts.max_attempts.unwrap_or(Self::POLICY.max_attempts),
            idempotency_key: opts.idempotency_key,
            partition_key: opts.partition_key,
            project_id: self.project_id(),
            request_id: opts.request_id,
        })
    }

    /// Enqueues the job through the outbox, in the caller's transaction (pass `&mut *tx`): it
    /// is relayed to Redis once the transaction commits, and never if it rolls back. Returns
    /// the job's id. (Idempotency keys are honoured when the relay pushes the job.)
    fn enqueue(
        &self,
        conn: &mut PgConnection,
        opts: EnqueueOptions,
    ) -> impl Future<Output = Result<Uuid, EnqueueError>> + Send {
        async move {
            let job = self.to_new_job(opts)?;
            crate::db::outbox::insert(conn, &job).await?;
            Ok(job.id)
        }
    }

    /// Enqueues the job straight into Redis: for jobs that follow no database write.
    fn enqueue_now(
        &self,
        queues: &Queues,
        opts: EnqueueOptions,
    ) -> impl Future<Output = Result<Enqueued, EnqueueError>> + Send {
        async move {
            let job = self.to_new_job(opts)?;
            Ok(queues.push(&job).await?)
        }
    }
}

/// Options for enqueuing one job.
#[derive(Debug, Clone, Default)]
pub struct EnqueueOptions {
    /// Run no earlier than this.
    pub run_at: Option<DateTime<Utc>>,
    /// Higher runs first (-1000..=1000).
    pub priority: i16,
    /// Overrides the kind's attempts.
    pub max_attempts: Option<u32>,
    /// A second enqueue with the same key returns the first job.
    pub idempotency_key: Option<String>,
    /// The request that enqueues it (for logs).
    pub request_id: Option<String>,
    /// On a partitioned queue, jobs with the same key share a partition and its line
    /// (`queue::partitions`).
    pub partition_key: Option<String>,
}

impl EnqueueOptions {
    /// Default options carrying the request that enqueues the job.
    pub fn for_request(request_id: impl Into<String>) -> Self {
        Self {
            request_id: Some(request_id.into()),
            ..Self::default()
        }
    }
}

/// Why a job could not be enqueued.
#[derive(Debug, thiserror::Error)]
pub enum EnqueueError {
    /// The job did not serialise (a bug in its type).
    #[error("job payload: {0}")]
    Payload(#[from] serde_json::Error),
    /// The outbox write failed.
    #[error("outbox: {0}")]
    Database(#[from] sqlx::Error),
    /// Redis refused or did not answer.
    #[error(transparent)]
    Queue(#[from] QueueError),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_has_its_own_queue() {
        let mut queues: Vec<_> = KINDS.iter().map(|k| k.queue).collect();
        queues.sort_unstable();
        queues.dedup();
        assert_eq!(queues.len(), KINDS.len(), "two kinds share a queue name");
        assert_eq!(QUEUES, KINDS.iter().map(|k| k.queue).collect::<Vec<_>>());
    }

    #[test]
    fn a_kind_is_found_by_its_queue() {
        assert_eq!(Kind::named("ping").map(|k| k.queue), Some("ping"));
        assert_eq!(Kind::named("nope"), None);
    }

    #[test]
    fn a_new_job_takes_the_kinds_attempts_unless_overridden() {
        let ping = Ping::new(Uuid::nil());
        let job = ping.to_new_job(EnqueueOptions::default()).unwrap();
        assert_eq!(job.queue, "ping");
        assert_eq!(job.max_attempts, Ping::POLICY.max_attempts);
        let job = ping
            .to_new_job(EnqueueOptions {
                max_attempts: Some(2),
                ..EnqueueOptions::for_request("r1")
            })
            .unwrap();
        assert_eq!(job.max_attempts, 2);
        assert_eq!(job.request_id.as_deref(), Some("r1"));
    }
}
