//! Partitioned queues: a hot queue split into N partitions, each a queue of its own keys under
//! its own hash tag (`p:{q}:…` is partition 0, `p:{q~1}:…`, `p:{q~2}:…` the others), so each
//! script still touches one Redis Cluster slot and, on a cluster, the partitions can live on
//! different masters.
//!
//! - **Producers** put a job in one partition ([`partition_of`]): by its partition key when it
//!   has one (jobs of one key stay in one partition, in line), else by its idempotency key (a
//!   repeated key meets the first job's mark), else by its id (spread evenly). A partition is
//!   chosen by the first eight bytes of the key's SHA-256, modulo N: the same in every process.
//! - **Workers** fetch from the partitions in turn (`backend`): each fetch starts at the next
//!   partition and goes on to the others while one is empty.
//! - **Readers** (counts, the jobs API, the ops views, the quota, the archiver) read every
//!   partition and show one queue; a job's record names the queue, never the partition.
//!
//! The number is set per queue (`QUEUE_PARTITIONS`, default 1: the layout of an unpartitioned
//! queue, unchanged). Raising it is safe at any time. Lowering it would strand the jobs of the
//! partitions dropped, so the highest number a process ever wrote with is recorded in Redis
//! (`p:partitions`, queue → count), and readers and workers use that, not their own setting:
//! the dropped partitions keep being fetched and shown (empty ones cost an empty fetch).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use redis::Script;
use sha2::{Digest, Sha256};

use super::{NewJob, QueueError, Queues};

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

/// The partition counts recorded in Redis, as this process last read them.
#[derive(Default)]
pub(crate) struct Recorded {
    counts: Mutex<Option<(Instant, HashMap<String, usize>)>>,
}

/// Raises a queue's recorded count to ARGV[2] if it is lower; answers the recorded count.
const RECORD: &str = r"
local n = tonumber(ARGV[2])
local had = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '0')
if n > had then redis.call('HSET', KEYS[1], ARGV[1], n) return n end
return had";

impl Queues {
    /// The partitions producers write `queue`'s jobs to (`QUEUE_PARTITIONS`, default 1).
    pub fn partitions(&self, queue: &str) -> usize {
        self.settings
            .partitions
            .get(queue)
            .copied()
            .unwrap_or(1)
            .clamp(1, MAX_PARTITIONS)
    }

    /// The names of every partition of `queue` that may hold jobs: those this process writes
    /// to and those a process configured with more once wrote to (recorded in Redis, read at
    /// most every few seconds). What workers fetch from and readers read.
    pub async fn parts(&self, queue: &str) -> Result<Vec<String>, QueueError> {
        let n = self.partition_count(queue).await?;
        Ok((0..n).map(|i| partition_name(queue, i)).collect())
    }

    /// How many partitions of `queue` may hold jobs (see [`Queues::parts`]).
    pub async fn partition_count(&self, queue: &str) -> Result<usize, QueueError> {
        if queue_of(queue) != queue {
            return Ok(1); // a partition's name: itself
        }
        let own = self.partitions(queue);
        let fresh = {
            let counts = self.recorded.counts.lock().expect("recorded");
            counts
                .as_ref()
                .filter(|(at, _)| at.elapsed() < RECORDED_TTL)
                .map(|(_, c)| c.get(queue).copied().unwrap_or(0))
        };
        let recorded = match fresh {
            Some(n) => n,
            None => {
                let mut conn = self.conn.clone();
                let all: HashMap<String, usize> = redis::cmd("HGETALL")
                    .arg(self.partitions_key())
                    .query_async(&mut conn)
                    .await?;
                let n = all.get(queue).copied().unwrap_or(0);
                *self.recorded.counts.lock().expect("recorded") = Some((Instant::now(), all));
                n
            }
        };
        if own > recorded {
            // first write with more partitions than recorded (or Redis lost the record)
            let mut conn = self.conn.clone();
            let _: usize = Script::new(RECORD)
                .key(self.partitions_key())
                .arg(queue)
                .arg(own)
                .invoke_async(&mut conn)
                .await?;
            if let Some((_, c)) = self.recorded.counts.lock().expect("recorded").as_mut() {
                c.insert(queue.to_owned(), own);
            }
        }
        Ok(own.max(recorded).min(MAX_PARTITIONS))
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
