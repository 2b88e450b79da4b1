//! `deliver_notification`'s records, group-committed ([`shared::group_commit`]): the attempt
//! rows of deliveries finishing at the same moment (and the jobs of recipients deferred to the
//! end of their quiet hours) share one statement, one transaction and one commit. A job's
//! outcome is decided only once its rows have committed, as before.

use anyhow::Context as _;
use shared::{
    db::{self, deliveries::AttemptRecord},
    group_commit::{BatchWrite, GroupCommit},
    queue::{NewJob, OutboxWaker},
};
use sqlx::PgPool;
use uuid::Uuid;

/// The most job attempts one batch records.
const MAX_BATCH: usize = 128;

/// Batches written at the same time.
const IN_FLIGHT: usize = 2;

/// One job attempt's rows and the deferred deliveries it enqueues.
#[derive(Debug)]
pub struct Record {
    /// The rows.
    pub attempt: AttemptRecord,
    /// Deliveries deferred to later jobs (quiet hours), enqueued in the same transaction.
    pub deferred: Vec<NewJob>,
}

/// The worker process's writer of delivery attempts.
pub type AttemptWriter = GroupCommit<Writer>;

/// Starts the process's [`AttemptWriter`].
pub fn spawn(pool: PgPool, outbox: OutboxWaker) -> AttemptWriter {
    GroupCommit::spawn(Writer { pool, outbox }, MAX_BATCH, IN_FLIGHT)
}

/// Writes batches of attempt records, then wakes the relays when it enqueued.
pub struct Writer {
    pool: PgPool,
    outbox: OutboxWaker,
}

impl BatchWrite for Writer {
    type Item = Record;
    type Output = ();
    type Key = (Uuid, Uuid, &'static str, Uuid);

    fn key(r: &Record) -> Self::Key {
        let a = &r.attempt;
        (a.project_id, a.notification_id, a.channel.as_str(), a.job_id)
    }

    async fn write(&self, records: &[&Record]) -> anyhow::Result<Vec<()>> {
        let attempts: Vec<&AttemptRecord> = records.iter().map(|r| &r.attempt).collect();
        let deferred: Vec<NewJob> = records
            .iter()
            .flat_map(|r| r.deferred.iter().cloned())
            .collect();
        let mut tx = self.pool.begin().await.context("Failed to begin")?;
        db::deliveries::record_many(&mut tx, &attempts)
            .await
            .context("Failed to record the delivery attempts")?;
        db::outbox::insert_many(&mut tx, &deferred)
            .await
            .context("Failed to enqueue the deferred deliveries")?;
        tx.commit()
            .await
            .context("Failed to commit the delivery attempts")?;
        if !deferred.is_empty() {
            self.outbox.wake();
        }
        Ok(vec![(); records.len()])
    }

    fn name(&self) -> &'static str {
        "deliver_notification"
    }
}
