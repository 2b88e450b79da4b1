//! Moving a queue's jobs from the layout before `p:{q}:jobs` (one Redis hash per job,
//! `p:{q}:job:<id>`) into records (`lua/job.lua`): what a worker does for each of its queues
//! when it starts, so that jobs enqueued by an earlier Comet still run.
//!
//! Every job Comet still knows is in one of the queue's state sets (a hash outside them was
//! trimmed), so the pass walks those sets rather than the keyspace (`SCAN` would have to visit
//! every node of a cluster) and hands the script each old key by name: it touches only keys it
//! was given. Once a pass has walked every set, `p:{q}:layout` says so and later starts skip it;
//! until then the fetch script leases nothing, so no worker pops a job whose record does not
//! exist yet, and maintenance and the on-dead hooks touch nothing (a paused queue is moved too:
//! the move comes before the pause check). The archiver moves a queue's jobs itself before it
//! reads any, so a queue no process fetches is archived too. The backend runs the pass before its first fetch ([`super::backend`]).
//! The old per-minute counters (`p:{q}:minute:<m>`) are not moved: the throughput chart of a
//! queue restarts at the upgrade (they expire within two hours).
//!
//! Stop every worker and API process of the earlier version before starting this one: an old
//! process still running would keep writing jobs in the old layout, which nothing reads.

use redis::AsyncCommands;

use super::{JobState, QueueError, Queues};

/// Ids one migration call carries.
const MIGRATE_CHUNK: isize = 500;
/// Most walks over the sets one migration makes (each after the first finds only the jobs a
/// concurrent enqueue shifted past the one before).
const MAX_PASSES: usize = 10;
/// The value of `p:{q}:layout` once a queue's jobs are all records.
pub(super) const LAYOUT: &str = "records";

impl Queues {
    /// Moves `queue`'s jobs of the earlier layout into records, once; returns how many moved.
    pub async fn migrate_legacy_jobs(&self, queue: &str) -> Result<u64, QueueError> {
        let base = self.base(queue);
        let marker = format!("{base}layout");
        let mut conn = self.conn.clone();
        let done: Option<String> = conn.get(&marker).await?;
        // (the marker is one of the queue's keys: the fetch script reads it)
        if done.as_deref() == Some(LAYOUT) {
            return Ok(0);
        }
        let keys = self.keys(queue);
        let mut moved = 0;
        // Pages by rank, so a job added meanwhile (an API of this release enqueues while the
        // queue waits for its move) can shift a page past an old job: passes repeat until one
        // moves nothing (the second, normally).
        for _ in 0..MAX_PASSES {
            let pass = self.migrate_pass(queue, &keys).await?;
            moved += pass;
            if pass == 0 {
                break;
            }
        }
        // then waiting jobs of priority 0 leave `ready` for the list, oldest at the front
        loop {
            let taken: u64 = self
                .scripts
                .migrate
                .key(&keys)
                .arg("line")
                .invoke_async(&mut conn)
                .await?;
            if taken == 0 {
                break;
            }
        }
        let _: () = conn.set(&marker, LAYOUT).await?;
        if moved > 0 {
            tracing::info!(
                queue,
                moved,
                "jobs moved from the per-job hashes into records"
            );
        }
        Ok(moved)
    }

    /// One walk over the queue's state sets, giving records to the jobs of the earlier layout
    /// it finds; returns how many.
    async fn migrate_pass(&self, queue: &str, keys: &[String]) -> Result<u64, QueueError> {
        let base = self.base(queue);
        let mut conn = self.conn.clone();
        let mut moved = 0;
        for (_, set) in JobState::REDIS {
            let set_key = format!("{base}{set}");
            let mut start = 0;
            loop {
                let ids: Vec<String> = conn
                    .zrange(&set_key, start, start + MIGRATE_CHUNK - 1)
                    .await?;
                if ids.is_empty() {
                    break;
                }
                let old: Vec<String> = ids.iter().map(|id| format!("{base}job:{id}")).collect();
                let n: u64 = self
                    .scripts
                    .migrate
                    .key(keys)
                    .key(&old)
                    .arg("records")
                    .arg(&ids)
                    .invoke_async(&mut conn)
                    .await?;
                moved += n;
                start += MIGRATE_CHUNK;
            }
        }
        Ok(moved)
    }
}
