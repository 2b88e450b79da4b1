//! The Redis half of the job archive: which finished jobs wait to be copied to Postgres, reading
//! them, and forgetting their marks once copied.
//!
//! These calls take one partition of a partitioned queue (`partitions.rs`) as a queue of its own
//! (the archiver leases and drains each); [`Queues::archive_backlog`] sums a queue's.
//!
//! Every script that finishes a job (ack, maintain's reap, cancel) or takes one back from dead
//! (retry) adds it to `archive`, scored by the change time. A worker's archiver (in `comet-worker`)
//! holds the queue's `archiver` lease, takes the oldest marks with [`Queues::archive_batch`],
//! writes the jobs to `job_archive` (`db::job_archive`), then calls [`Queues::archived`], which
//! removes each mark only if it still has the score read: a job that changed again meanwhile is
//! copied again. Copying is at least once and idempotent (an upsert by job id). Once a completed
//! job's mark is gone, maintenance may drop it from Redis past `JOB_REDIS_COMPLETED`.

use std::time::Duration;

use redis::AsyncCommands;

use super::{JobRecord, QueueError, Queues, record};

/// Most marks one batch takes (bounded work per round trip and per Postgres statement).
pub const ARCHIVE_BATCH: usize = 500;

/// One job read for the archive.
#[derive(Debug, Clone)]
pub enum ArchivedJob {
    /// The job as it is now (finished: write it; open again: delete its archived row).
    Job(Box<JobRecord>),
    /// No longer in Redis (trimmed, or its hash unreadable): nothing to copy.
    Gone(uuid::Uuid),
}

/// A batch of marks and the jobs behind them.
#[derive(Debug, Default)]
pub struct ArchiveBatch {
    /// The marks read: (job id, score), to hand back to [`Queues::archived`].
    pub marks: Vec<(String, f64)>,
    /// The jobs, one per mark with a parseable id.
    pub jobs: Vec<ArchivedJob>,
}

impl Queues {
    /// Takes (or keeps) the queue's archiver lease for `holder`, for `ttl`: true if `holder`
    /// holds it. One archiver per queue at a time; another process takes over when it expires.
    pub async fn archive_lease(
        &self,
        queue: &str,
        holder: &str,
        ttl: Duration,
    ) -> Result<bool, QueueError> {
        let mut conn = self.conn.clone();
        let key = format!("{}archiver", self.base(queue));
        let ms = ttl.as_millis().max(1) as u64;
        let set: Option<String> = redis::cmd("SET")
            .arg(&key)
            .arg(holder)
            .arg("NX")
            .arg("PX")
            .arg(ms)
            .query_async(&mut conn)
            .await?;
        if set.is_some() {
            return Ok(true);
        }
        let current: Option<String> = conn.get(&key).await?;
        if current.as_deref() == Some(holder) {
            let _: bool = conn.pexpire(&key, ms as i64).await?;
            return Ok(true);
        }
        Ok(false)
    }

    /// The oldest `limit` (at most [`ARCHIVE_BATCH`]) marks of the queue and their jobs.
    pub async fn archive_batch(
        &self,
        queue: &str,
        limit: usize,
    ) -> Result<ArchiveBatch, QueueError> {
        let mut conn = self.conn.clone();
        let base = self.base(queue);
        let limit = limit.clamp(1, ARCHIVE_BATCH);
        // before the queue's jobs of the earlier layout are records (`migrate.rs`), they would
        // read as gone and their marks be dropped uncopied: the archiver moves them first (as a
        // backend does before its first fetch), so a queue no process fetches is archived too
        let layout: Option<String> = conn.get(format!("{base}layout")).await?;
        if layout.as_deref() != Some(super::migrate::LAYOUT) {
            self.migrate_legacy_jobs(queue).await?;
        }
        let marks: Vec<(String, f64)> = conn
            .zrange_withscores(format!("{base}archive"), 0, limit as isize - 1)
            .await?;
        if marks.is_empty() {
            return Ok(ArchiveBatch::default());
        }
        let raws: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(format!("{base}jobs"))
            .arg(marks.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>())
            .query_async(&mut conn)
            .await?;
        let mut jobs = Vec::with_capacity(marks.len());
        for ((id, _), raw) in marks.iter().zip(raws) {
            let Ok(uuid) = uuid::Uuid::parse_str(id) else {
                continue; // not a job id: the mark is dropped with the batch
            };
            // a corrupt record is logged and counted by `record::read`; its mark is dropped
            jobs.push(match record::decode(queue, id, raw) {
                Ok(Some(job)) => ArchivedJob::Job(Box::new(job)),
                Ok(None) | Err(QueueError::Corrupt { .. }) => ArchivedJob::Gone(uuid),
                Err(e) => return Err(e),
            });
        }
        Ok(ArchiveBatch { marks, jobs })
    }

    /// Forgets the marks of a batch now copied (each only if unchanged since it was read).
    pub async fn archived(&self, queue: &str, marks: &[(String, f64)]) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let mut removed = 0;
        for chunk in marks.chunks(ARCHIVE_BATCH) {
            let mut inv = self.scripts.archived.key(self.keys(queue));
            for (id, score) in chunk {
                inv.arg(id).arg(*score);
            }
            let n: u64 = inv.invoke_async(&mut conn).await?;
            removed += n;
        }
        Ok(removed)
    }

    /// Marks waiting to be archived in the queue, all its partitions together (the archiver's
    /// backlog).
    pub async fn archive_backlog(&self, queue: &str) -> Result<u64, QueueError> {
        let mut pipe = redis::pipe();
        for part in self.parts(queue).await? {
            pipe.zcard(format!("{}archive", self.base(&part)));
        }
        let mut conn = self.conn.clone();
        let sizes: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(sizes.into_iter().sum())
    }
}
