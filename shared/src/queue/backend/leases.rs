//! Keeping leases and the queue healthy: the heartbeat that extends every lease this process
//! holds (and writes the worker registry), the maintenance pass (promote due jobs, take back
//! expired leases, trim old jobs, the per-queue gauges) and the wake-up subscription.

use super::*;
use crate::redis_client::Channel;

impl Shared {
    /// A copy of the jobs held now (the heartbeat sends it while the acker keeps writing).
    pub(super) fn held_copy(&self) -> Vec<(Uuid, Lease)> {
        let held = self.held.lock().expect("held");
        held.iter().map(|(k, v)| (*k, *v)).collect()
    }

    pub(super) async fn heartbeat_loop(self: Arc<Self>) {
        let period = self.queues.settings.lease / 3;
        while self.sleep_or_stop(period).await {
            if let Err(e) = self.heartbeat(&self.held_copy()).await {
                record_redis_error(self.queue, "heartbeat", &e);
            }
            self.register().await;
        }
    }

    /// Extends the leases of `copy` (copied from the held set while the acker may have written
    /// some of their outcomes since): one script call per partition and [`OUTCOME_CHUNK`]
    /// jobs, each tried even when another fails (the first error is returned). Returns how
    /// many leases were lost (see [`Shared::heartbeat_part`]).
    pub(super) async fn heartbeat(&self, copy: &[(Uuid, Lease)]) -> Result<usize, QueueError> {
        // the partitions side by side: one whose master is failing over must not delay the
        // others' heartbeats past their leases
        let groups = by_part(copy, |(_, l)| l.part);
        let results = futures::future::join_all(groups.iter().map(|(_, group)| async move {
            let (mut lost, mut failed) = (0, None);
            for chunk in group.chunks(OUTCOME_CHUNK) {
                match self.heartbeat_part(chunk).await {
                    Ok(n) => lost += n,
                    Err(e) => failed = failed.or(Some(e)),
                }
            }
            (lost, failed)
        }))
        .await;
        let (mut lost, mut failed) = (0, None);
        for (n, e) in results {
            lost += n;
            failed = failed.or(e);
        }
        failed.map_or(Ok(lost), Err)
    }

    /// Extends the leases of `copy`, jobs of one partition. Returns how many leases
    /// were lost: only jobs still held under the token the script was given count (and stop
    /// being held); a job that failed and was fetched again meanwhile is held under its new
    /// token, and stays heartbeated.
    async fn heartbeat_part(&self, copy: &[(Uuid, Lease)]) -> Result<usize, QueueError> {
        let Some((_, first)) = copy.first() else {
            return Ok(0);
        };
        let mut inv = self
            .queues
            .scripts
            .heartbeat
            .key(&self.part(first.part).keys);
        inv.arg(self.queues.settings.lease.as_millis() as u64);
        for (id, lease) in copy {
            inv.arg(id.to_string()).arg(lease.token.to_string());
        }
        let mut conn = self.queues.conn.clone();
        let lost: Vec<String> = inv.invoke_async(&mut conn).await?;
        let lost = {
            let mut held = self.held.lock().expect("held");
            lost.iter()
                .filter_map(|s| Uuid::parse_str(s).ok())
                .filter(|id| {
                    let sent = copy.iter().find(|(c, _)| c == id).map(|(_, tok)| tok);
                    let still = sent.is_some() && held.get(id) == sent;
                    if still {
                        held.remove(id);
                    }
                    still
                })
                .count()
        };
        if lost > 0 {
            metrics::counter!("comet_leases_lost_total", "queue" => self.queue)
                .increment(lost as u64);
            tracing::warn!(
                queue = self.queue,
                lost,
                "leases lost (expired while this worker was stalled); their outcomes will be ignored"
            );
        }
        Ok(lost)
    }

    /// The worker registry (for ops views, see `queue::workers`): this worker's last heartbeat
    /// and the jobs it holds in this queue; names unseen for an hour are dropped, so restarts
    /// do not grow it.
    pub(super) async fn register(&self) {
        let mut conn = self.queues.conn.clone();
        let now = chrono::Utc::now().timestamp_millis();
        let key = format!("{}:workers", self.queues.prefix);
        let info = format!(
            "{}:worker:{}",
            self.queues.prefix,
            crate::queue::workers::process_of(&self.worker)
        );
        let held = self.held.lock().expect("held").len();
        let registered: Result<(), redis::RedisError> = redis::pipe()
            .zadd(&key, &*self.worker, now)
            .zrembyscore(&key, "-inf", now - 3_600_000)
            .hset(&info, format!("inflight:{}", self.queue), held)
            .pexpire(&info, 3_600_000)
            .query_async(&mut conn)
            .await;
        if let Err(e) = registered {
            record_redis_error(self.queue, "register", &e.into());
        }
    }

    pub(super) async fn maintenance_loop(self: Arc<Self>) {
        let s = self.queues.settings.clone();
        let mut period = s.maintenance_interval;
        while self.sleep_or_stop(period).await {
            period = s.maintenance_interval;
            let parts = match self.current_parts().await {
                Ok(parts) => parts,
                Err(e) => {
                    record_redis_error(self.queue, "maintain", &e);
                    continue;
                }
            };
            for part in parts.iter() {
                let mut conn = self.queues.conn.clone();
                let res: Result<(u64, u64, u64, u64, u64), _> = self
                    .queues
                    .scripts
                    .maintain
                    .key(&part.keys)
                    .arg(1000)
                    .arg(s.completed_retention.as_millis() as u64)
                    .arg(s.dead_retention.as_millis() as u64)
                    .arg(s.max_completed)
                    .arg(KEPT_ERRORS)
                    .arg(u8::from(self.options.dead_hook))
                    .arg(s.redis_completed)
                    .invoke_async(&mut conn)
                    .await;
                match res {
                    Ok((promoted, reaped, died, trimmed, indexed)) => {
                        if reaped > 0 {
                            metrics::counter!("comet_jobs_lease_expired_total", "queue" => self.queue)
                                .increment(reaped);
                            tracing::warn!(
                                queue = self.queue,
                                partition = part.index,
                                reaped,
                                dead = died,
                                "took back jobs whose worker stopped heartbeating"
                            );
                        }
                        // A full pass means more is due: go again at once.
                        if promoted.max(reaped).max(trimmed).max(indexed) >= 1000 {
                            period = Duration::from_millis(1);
                        }
                    }
                    Err(e) => record_redis_error(self.queue, "maintain", &e.into()),
                }
            }
            match self.queues.counts(self.queue).await {
                Ok(c) => {
                    for (state, n) in [
                        ("waiting", c.waiting),
                        ("delayed", c.delayed),
                        ("active", c.active),
                        ("retrying", c.retrying),
                        ("dead", c.dead),
                    ] {
                        metrics::gauge!("comet_queue_jobs", "queue" => self.queue, "state" => state)
                            .set(n as f64);
                    }
                }
                Err(e) => record_redis_error(self.queue, "counts", &e),
            }
        }
    }

    /// Listens on the wake channels of the queue's partitions; reconnects with backoff and wakes the fetcher after
    /// every reconnect (a message may have been missed meanwhile).
    pub(super) async fn wake_loop(self: Arc<Self>) {
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            // every partition's channel (those known now: one a later raise adds is found by
            // the idle poll until the next reconnect)
            let channels: Vec<Channel> = self
                .parts
                .read()
                .expect("parts")
                .iter()
                .map(|p| Channel::Sharded(format!("{}wake", p.base)))
                .collect();
            let sub = self.queues.client.subscribe(&channels);
            match tokio::time::timeout(Duration::from_secs(5), sub).await {
                Ok(Ok(stream)) => {
                    backoff = Duration::from_millis(100);
                    self.notify.notify_one();
                    let mut stream = std::pin::pin!(stream);
                    loop {
                        tokio::select! {
                            msg = stream.next() => match msg {
                                Some(_) => self.notify.notify_one(),
                                None => break,
                            },
                            _ = self.stop.notified() => return,
                        }
                    }
                }
                Ok(Err(e)) => record_redis_error(self.queue, "subscribe", &e.into()),
                Err(_) => tracing::warn!(queue = self.queue, "subscribe timed out; retrying"),
            }
            if !self.sleep_or_stop(backoff).await {
                return;
            }
            backoff = (backoff * 2).min(Duration::from_secs(5));
        }
    }
}
