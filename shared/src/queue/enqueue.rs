//! The enqueue path: [`Queues::push`] and [`Queues::push_many`] place each job in its queue
//! (its partition, on a partitioned queue: `partitions`) and run the enqueue script, 1000 jobs
//! per call, with the queue's keys and the chunk's idempotency keys declared; with
//! `REDIS_WAIT_REPLICAS` set, a `WAIT` follows the script on an enqueue connection of its own.

use uuid::Uuid;

use super::{
    ENQUEUE_CHUNK, Enqueued, NewJob, QueueError, Queues, partition_name, queue_keys, queue_of,
    scripts::with_script,
};
use crate::redis_client::RedisConn;

impl Queues {
    /// Pushes one job into its queue (what `Job::enqueue_now` and the outbox relay do).
    pub async fn push(&self, job: &NewJob) -> Result<Enqueued, QueueError> {
        let out = self
            .push_many(&job.queue, std::slice::from_ref(job))
            .await?;
        out.into_iter()
            .next()
            .ok_or_else(|| QueueError::Protocol("empty enqueue reply".into()))
    }

    /// Pushes many jobs of one queue, 1000 per script call (per partition, on a partitioned
    /// queue: each job goes to the partition `Queues::place` picks). Answers in `jobs`' order.
    pub async fn push_many(
        &self,
        queue: &str,
        jobs: &[NewJob],
    ) -> Result<Vec<Enqueued>, QueueError> {
        // the recorded count (written first if this process's own is higher), so that every
        // process places a job alike
        let layout = self.layout(queue).await?;
        let n = layout.count;
        if n == 1 {
            return self.push_part(queue, jobs.iter()).await;
        }
        let mut by_part: Vec<Vec<usize>> = vec![Vec::new(); n];
        for (i, p) in self
            .place(queue, layout, jobs)
            .await?
            .into_iter()
            .enumerate()
        {
            by_part[p].push(i);
        }
        let mut out = vec![None; jobs.len()];
        for (part, picked) in by_part.iter().enumerate() {
            if picked.is_empty() {
                continue;
            }
            let name = partition_name(queue, part);
            let done = self
                .push_part(&name, picked.iter().map(|&i| &jobs[i]))
                .await?;
            for (&i, e) in picked.iter().zip(done) {
                out[i] = Some(e);
            }
        }
        out.into_iter()
            .map(|e| e.ok_or_else(|| QueueError::Protocol("a job got no enqueue reply".into())))
            .collect()
    }

    /// Pushes jobs into one partition (a queue's own keys, `part` its name).
    async fn push_part<'a>(
        &self,
        part: &str,
        jobs: impl ExactSizeIterator<Item = &'a NewJob>,
    ) -> Result<Vec<Enqueued>, QueueError> {
        let jobs: Vec<&NewJob> = jobs.collect();
        let base = self.base(part);
        let keys = queue_keys(&base);
        let ttl = self.settings.idempotency_ttl.as_millis() as u64;
        let mut out = Vec::with_capacity(jobs.len());
        let wanted = self.settings.wait_replicas;
        for chunk in jobs.chunks(ENQUEUE_CHUNK) {
            let mut inv = redis::cmd("EVALSHA");
            // the queue's keys, then every idempotency key of the chunk (declared: the script
            // touches no key it was not given)
            let idem_keys: Vec<String> = chunk
                .iter()
                .filter_map(|j| j.idempotency_key.as_deref())
                .map(|k| format!("{base}idem:{k}"))
                .collect();
            inv.arg(self.scripts.enqueue.get_hash())
                .arg(keys.len() + idem_keys.len())
                .arg(&keys)
                .arg(&idem_keys)
                .arg(ttl)
                .arg(chunk.len());
            for job in chunk {
                debug_assert_eq!(job.queue, queue_of(part));
                inv.arg(job.id.to_string())
                    .arg(serde_json::to_string(&job.payload)?)
                    .arg(job.run_at.map_or(0, |t| t.timestamp_millis()))
                    .arg(job.priority.clamp(-1000, 1000))
                    .arg(job.max_attempts.max(1))
                    .arg(job.idempotency_key.as_deref().unwrap_or(""))
                    .arg(job.project_id.to_string())
                    .arg(job.request_id.as_deref().unwrap_or(""))
                    .arg(job.project_id.as_bytes())
                    .arg(job.id.as_bytes());
            }
            let mut pipe = redis::pipe();
            pipe.add_command(inv);
            // `REDIS_WAIT_REPLICAS`: the WAIT follows the script on the same connection, in the
            // same pipeline (on a cluster, to the same master; a retry sends both again, and
            // the job ids make a second enqueue a no-op). Those connections are the enqueues'
            // own: a WAIT blocks the connection's later commands until it returns.
            let mut conn = if wanted == 0 {
                self.conn.clone()
            } else {
                pipe.cmd("WAIT")
                    .arg(wanted)
                    .arg(self.settings.wait_timeout.as_millis() as u64);
                self.wait_conn()
            };
            let replies = with_script(&mut conn, &self.scripts.enqueue, &pipe).await?;
            let mut replies = replies.into_iter();
            let reply: Vec<redis::Value> = match replies.next() {
                Some(r) => redis::from_redis_value(r)?,
                None => return Err(QueueError::Protocol("empty enqueue reply".into())),
            };
            if wanted > 0 {
                let acknowledged: u32 = match replies.next() {
                    Some(r) => redis::from_redis_value(r)?,
                    None => return Err(QueueError::Protocol("no WAIT reply".into())),
                };
                if acknowledged < wanted {
                    metrics::counter!("comet_redis_wait_short_total").increment(1);
                    return Err(QueueError::NotReplicated {
                        wanted,
                        acknowledged,
                    });
                }
            }
            for pair in reply.chunks(2) {
                let id: String = redis::from_redis_value_ref(&pair[0])?;
                let created: i64 = redis::from_redis_value_ref(&pair[1])?;
                let id = Uuid::parse_str(&id).map_err(|e| QueueError::Protocol(e.to_string()))?;
                out.push(Enqueued {
                    id,
                    created: created == 1,
                });
            }
        }
        Ok(out)
    }

    /// One of the enqueues' own connections (`REDIS_WAIT_REPLICAS` set), in turn.
    fn wait_conn(&self) -> RedisConn {
        let i = self
            .next_wait_conn
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.wait_conns[i % self.wait_conns.len()].clone()
    }
}
