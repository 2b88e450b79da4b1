//! Partitioned queues: a hot queue split into N partitions, each a queue of its own keys under
//! its own hash tag (`p:{q}:…` is partition 0, `p:{q~1}:…`, `p:{q~2}:…` the others), so each
//! script still touches one Redis Cluster slot and, on a cluster, the partitions can live on
//! different masters.
//!
//! - **Producers** put a job in one partition ([`partition_of`]): by its partition key when it
//!   has one (jobs of one key stay in one partition, in line), else by its idempotency key (a
//!   repeated key meets the first job's mark), else by its id (spread evenly). A partition is
//!   chosen by the first eight bytes of the key's SHA-256, modulo N: the same in every process.
//!   Where an earlier push may have left the job or its key elsewhere (`Queues::place`), they
//!   look first.
//! - **Workers** fetch from the partitions in turn (`backend`): each fetch starts at the next
//!   partition and goes on to the others while one is empty.
//! - **Readers** (counts, the jobs API, the ops views, the quota, the archiver) read every
//!   partition and show one queue; a job's record names the queue, never the partition.
//!
//! The number is set per queue (`QUEUE_PARTITIONS`, default 1: the layout of an unpartitioned
//! queue, unchanged). What every process uses is the highest number any process was configured
//! with, recorded in Redis (`p:partitions`, queue → count; read at most every few seconds), so a
//! rolling change places, fetches and reads alike. The count only grows: raising it is safe at
//! any time (jobs and idempotency keys placed under the old count are found where they are, for
//! `JOB_IDEMPOTENCY_TTL_SECS` after the raise); a lower setting changes nothing. To lower it,
//! drain the queue, then delete the queue's two fields of `p:partitions`.
//!
//! Not across partitions: priority (a fetch takes one partition's best), `JOB_MAX_COMPLETED`
//! and `JOB_REDIS_COMPLETED` (each partition keeps as many), FIFO between jobs of different
//! partitions.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use redis::Script;
use sha2::{Digest, Sha256};

use super::{ENQUEUE_CHUNK, NewJob, QueueError, Queues};

/// Most partitions one queue may have.
pub const MAX_PARTITIONS: usize = 64;

/// What separates a queue's name from its partition's number in the partition's name.
const SEP: char = '~';

/// How long a process trusts the recorded partition counts it read.
const RECORDED_TTL: Duration = Duration::from_secs(5);

/// The name of partition `i` of `queue`: the queue's own name for partition 0 (so an
/// unpartitioned queue keeps its keys), `<queue>~<i>` for the others.
pub fn partition_name(queue: &str, i: usize) -> String {
    if i == 0 {
        queue.to_owned()
    } else {
        format!("{queue}{SEP}{i}")
    }
}

/// The queue a partition name belongs to (`ping~2` → `ping`; a queue's own name as it is).
pub fn queue_of(name: &str) -> &str {
    match name.rsplit_once(SEP) {
        Some((queue, i)) if !i.is_empty() && i.bytes().all(|b| b.is_ascii_digit()) => queue,
        _ => name,
    }
}

/// The partition of `n` that `key` belongs to.
pub fn partition_index(key: &[u8], n: usize) -> usize {
    if n <= 1 {
        return 0;
    }
    let digest = Sha256::digest(key);
    let head = u64::from_be_bytes(digest[..8].try_into().expect("eight bytes"));
    (head % n as u64) as usize
}

/// The partition of `n` that `job` goes to: by its partition key, else its idempotency key,
/// else its id.
pub fn partition_of(job: &NewJob, n: usize) -> usize {
    let key = job
        .partition_key
        .as_deref()
        .or(job.idempotency_key.as_deref())
        .map_or(job.id.as_bytes().as_slice(), str::as_bytes);
    partition_index(key, n)
}

/// A queue's partitions as recorded in Redis (`p:partitions`: `<queue>` → the count,
/// `<queue>:raised` → when it was last raised over a queue that had held jobs, ms, or 0).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Layout {
    /// Partitions that may hold jobs (and that producers place jobs in).
    pub(crate) count: usize,
    /// When the count was last raised over jobs (Unix ms; 0: never, or over an unused queue).
    pub(crate) raised_ms: i64,
}

/// The layouts recorded in Redis, as this process last read them.
#[derive(Default)]
pub(crate) struct Recorded {
    cache: Mutex<Option<(Instant, HashMap<String, Layout>)>>,
}

/// Raises a queue's recorded count to ARGV[2] if it is lower, noting when (unless ARGV[3] says
/// the queue never held a job and nothing was recorded); answers {count, count before, raised}.
const RECORD: &str = r"
local n = tonumber(ARGV[2])
local had = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if n <= had then
  return {had, had, tonumber(redis.call('HGET', KEYS[1], ARGV[1] .. ':raised') or '0')}
end
local raised = 0
if ARGV[3] ~= '1' or had > 0 then
  local t = redis.call('TIME')
  raised = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
redis.call('HSET', KEYS[1], ARGV[1], n, ARGV[1] .. ':raised', raised)
return {n, had, raised}";

impl Queues {
    /// The partitions this process is configured with for `queue` (`QUEUE_PARTITIONS`,
    /// default 1). Producers, workers and readers use [`Queues::partition_count`], which is
    /// never less.
    pub fn partitions(&self, queue: &str) -> usize {
        self.settings
            .partitions
            .get(queue)
            .copied()
            .unwrap_or(1)
            .clamp(1, MAX_PARTITIONS)
    }

    /// The names of every partition of `queue` ([`Queues::partition_count`] of them): what
    /// workers fetch from and readers read.
    pub async fn parts(&self, queue: &str) -> Result<Vec<String>, QueueError> {
        let n = self.partition_count(queue).await?;
        Ok((0..n).map(|i| partition_name(queue, i)).collect())
    }

    /// How many partitions `queue` has: the highest count any process was configured with
    /// (recorded in Redis, read at most every few seconds), so every process places, fetches
    /// and reads the same partitions whatever its own setting.
    pub async fn partition_count(&self, queue: &str) -> Result<usize, QueueError> {
        Ok(self.layout(queue).await?.count)
    }

    /// `queue`'s [`Layout`]: recorded, raised first to this process's own count if that is
    /// higher.
    pub(crate) async fn layout(&self, queue: &str) -> Result<Layout, QueueError> {
        if queue_of(queue) != queue {
            // a partition's name: itself
            return Ok(Layout {
                count: 1,
                raised_ms: 0,
            });
        }
        let own = self.partitions(queue);
        let cached = {
            let cache = self.recorded.cache.lock().expect("recorded");
            cache
                .as_ref()
                .filter(|(at, _)| at.elapsed() < RECORDED_TTL)
                .map(|(_, c)| c.get(queue).copied().unwrap_or_default())
        };
        let recorded = match cached {
            Some(layout) => layout,
            None => {
                let mut conn = self.conn.clone();
                let fields: HashMap<String, i64> = redis::cmd("HGETALL")
                    .arg(self.partitions_key())
                    .query_async(&mut conn)
                    .await?;
                let mut all: HashMap<String, Layout> = HashMap::new();
                for (field, v) in fields {
                    match field.strip_suffix(":raised") {
                        Some(q) => all.entry(q.to_owned()).or_default().raised_ms = v,
                        None => all.entry(field).or_default().count = v.max(0) as usize,
                    }
                }
                let layout = all.get(queue).copied().unwrap_or_default();
                *self.recorded.cache.lock().expect("recorded") = Some((Instant::now(), all));
                layout
            }
        };
        let layout = if own > recorded.count {
            self.raise(queue, own).await?
        } else {
            recorded
        };
        Ok(Layout {
            count: layout.count.clamp(1, MAX_PARTITIONS),
            ..layout
        })
    }

    /// Records `n` partitions for `queue` (the first write with more than recorded, or after
    /// Redis lost the record), copies a pause onto the partitions it adds (before any job is
    /// placed in them), and answers the layout now recorded.
    async fn raise(&self, queue: &str, n: usize) -> Result<Layout, QueueError> {
        let mut conn = self.conn.clone();
        // a queue that never held a job (no record, no job, no counters): no job or
        // idempotency key can be in another partition than the new count places it in
        let base = self.base(queue);
        let used: u64 = redis::cmd("EXISTS")
            .arg(format!("{base}jobs"))
            .arg(format!("{base}stats"))
            .query_async(&mut conn)
            .await?;
        let (count, had, raised_ms): (usize, usize, i64) = Script::new(RECORD)
            .key(self.partitions_key())
            .arg(queue)
            .arg(n)
            .arg(u8::from(used == 0))
            .invoke_async(&mut conn)
            .await?;
        if count > had {
            let paused: bool = redis::cmd("EXISTS")
                .arg(format!("{base}paused"))
                .query_async(&mut conn)
                .await?;
            if paused {
                for i in had.max(1)..count {
                    let _: () = redis::cmd("SET")
                        .arg(format!("{}paused", self.base(&partition_name(queue, i))))
                        .arg(1)
                        .query_async(&mut conn)
                        .await?;
                }
            }
        }
        let layout = Layout { count, raised_ms };
        if let Some((_, c)) = self.recorded.cache.lock().expect("recorded").as_mut() {
            c.insert(queue.to_owned(), layout);
        }
        Ok(layout)
    }

    /// The partitions of `n` that `jobs` go to. Each job's own ([`partition_of`]), except
    /// where an earlier push left it (or its idempotency key) in another partition: jobs with
    /// both an idempotency key and a partition key are looked for in every partition, and so is
    /// every job within `JOB_IDEMPOTENCY_TTL_SECS` after the count was raised over a queue
    /// that had held jobs (a job pushed again by the outbox relay, or a live idempotency key,
    /// may be where the earlier count put it). One round trip per [`ENQUEUE_CHUNK`] jobs
    /// looked for; none in the steady state.
    pub(crate) async fn place(
        &self,
        queue: &str,
        layout: Layout,
        jobs: &[NewJob],
    ) -> Result<Vec<usize>, QueueError> {
        let n = layout.count;
        let mut placed: Vec<usize> = jobs.iter().map(|j| partition_of(j, n)).collect();
        let ttl = self.settings.idempotency_ttl.as_millis() as i64;
        let moved =
            layout.raised_ms > 0 && chrono::Utc::now().timestamp_millis() < layout.raised_ms + ttl;
        let look: Vec<usize> = (0..jobs.len())
            .filter(|&i| {
                moved || (jobs[i].idempotency_key.is_some() && jobs[i].partition_key.is_some())
            })
            .collect();
        let bases: Vec<String> = (0..n)
            .map(|p| self.base(&partition_name(queue, p)))
            .collect();
        let mut conn = self.conn.clone();
        for chunk in look.chunks(ENQUEUE_CHUNK) {
            let mut pipe = redis::pipe();
            for &i in chunk {
                for base in &bases {
                    if moved {
                        pipe.hexists(format!("{base}jobs"), jobs[i].id.to_string());
                    }
                    if let Some(key) = &jobs[i].idempotency_key {
                        pipe.exists(format!("{base}idem:{key}"));
                    }
                }
            }
            let found: Vec<bool> = pipe.query_async(&mut conn).await?;
            let mut found = found.into_iter();
            for &i in chunk {
                let (mut by_id, mut by_key) = (None, None);
                for p in 0..n {
                    if moved && found.next() == Some(true) {
                        by_id = by_id.or(Some(p));
                    }
                    if jobs[i].idempotency_key.is_some() && found.next() == Some(true) {
                        by_key = by_key.or(Some(p));
                    }
                }
                if let Some(p) = by_id.or(by_key) {
                    placed[i] = p;
                }
            }
        }
        Ok(placed)
    }

    /// Every partition of every queue of `queues` (see [`Queues::parts`]), queue after queue.
    pub async fn expand(&self, queues: &[&str]) -> Result<Vec<String>, QueueError> {
        let mut out = Vec::with_capacity(queues.len());
        for q in queues {
            out.extend(self.parts(q).await?);
        }
        Ok(out)
    }

    /// The partition of `queue` that holds job `id`, if one does (one round trip; the queue's
    /// own name, with no round trip, when it has one partition).
    pub(crate) async fn part_holding(
        &self,
        queue: &str,
        id: &str,
    ) -> Result<Option<String>, QueueError> {
        let parts = self.parts(queue).await?;
        if parts.len() == 1 {
            return Ok(parts.into_iter().next());
        }
        let mut pipe = redis::pipe();
        for p in &parts {
            pipe.hexists(format!("{}jobs", self.base(p)), id);
        }
        let mut conn = self.conn.clone();
        let found: Vec<bool> = pipe.query_async(&mut conn).await?;
        Ok(parts
            .into_iter()
            .zip(found)
            .find(|(_, f)| *f)
            .map(|(p, _)| p))
    }

    /// The hash of recorded partition counts (one key, outside every queue's slot).
    fn partitions_key(&self) -> String {
        format!("{}:partitions", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        assert_eq!(partition_name("ping", 0), "ping");
        assert_eq!(partition_name("ping", 3), "ping~3");
        for name in ["ping", "ping~3", "process_event~12"] {
            assert_eq!(queue_of(name), name.split('~').next().unwrap());
        }
        // a name with a tilde not followed by a number is a queue's own
        assert_eq!(queue_of("odd~name"), "odd~name");
        assert_eq!(queue_of("odd~"), "odd~");
    }

    #[test]
    fn keys_spread_evenly_and_stay_put() {
        let n = 8;
        let mut hits = [0usize; 8];
        for i in 0..80_000u32 {
            hits[partition_index(&i.to_be_bytes(), n)] += 1;
        }
        // each partition within 5% of its share
        for h in hits {
            assert!((9_500..=10_500).contains(&h), "{hits:?}");
        }
        assert_eq!(
            partition_index(b"customer-42", 8),
            partition_index(b"customer-42", 8)
        );
        assert_eq!(partition_index(b"anything", 1), 0);
    }
}
