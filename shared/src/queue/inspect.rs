//! Reading a queue: one job by id (in one queue or across several), the counts per state with
//! the latency of the next job in line, Redis's clock, and a page of the jobs in one state. The
//! operators' views and the API's job look-up are built on these.

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use uuid::Uuid;

use super::{JobRecord, JobState, QueueCounts, QueueError, Queues, record};

impl Queues {
    /// One job of one queue, or `None`.
    pub async fn job(&self, queue: &str, id: Uuid) -> Result<Option<JobRecord>, QueueError> {
        let mut conn = self.conn.clone();
        let id = id.to_string();
        let raw: Option<Vec<u8>> = conn.hget(format!("{}jobs", self.base(queue)), &id).await?;
        record::decode(queue, &id, raw)
    }

    /// Finds a job by id across the given queues (one round trip).
    pub async fn find_job(
        &self,
        queues: &[&str],
        id: Uuid,
    ) -> Result<Option<JobRecord>, QueueError> {
        let id = id.to_string();
        let mut pipe = redis::pipe();
        for q in queues {
            pipe.hget(format!("{}jobs", self.base(q)), &id);
        }
        let mut conn = self.conn.clone();
        let raws: Vec<Option<Vec<u8>>> = pipe.query_async(&mut conn).await?;
        for (q, raw) in queues.iter().zip(raws) {
            if let Some(job) = record::decode(q, &id, raw)? {
                return Ok(Some(job));
            }
        }
        Ok(None)
    }

    /// Counts per state of one queue (one round trip).
    pub async fn counts(&self, queue: &str) -> Result<QueueCounts, QueueError> {
        let base = self.base(queue);
        let mut pipe = redis::pipe();
        for (_, set) in JobState::REDIS {
            pipe.zcard(format!("{base}{set}"));
        }
        pipe.exists(format!("{base}paused"));
        pipe.hget(format!("{base}stats"), "completed");
        pipe.hget(format!("{base}stats"), "dead");
        pipe.llen(format!("{base}wait"));
        let mut conn = self.conn.clone();
        let c: Vec<Option<u64>> = pipe.query_async(&mut conn).await?;
        let mut c: Vec<u64> = c.into_iter().map(Option::unwrap_or_default).collect();
        // waiting: the other priorities' set and priority 0's list
        c[0] += c[10];
        Ok(QueueCounts {
            queue: queue.to_owned(),
            waiting: c[0],
            delayed: c[1],
            active: c[2],
            retrying: c[3],
            completed: c[4],
            dead: c[5],
            cancelled: c[6],
            paused: c[7] > 0,
            completed_total: c[8],
            dead_total: c[9],
            latency_seconds: self.latency_if_ready(queue, c[0]).await?,
            workers: None,
        })
    }

    /// Redis's clock, the one every job time is written with (host clocks do not matter).
    pub async fn redis_now(&self) -> Result<DateTime<Utc>, QueueError> {
        let mut conn = self.conn.clone();
        let (secs, micros): (i64, i64) = redis::cmd("TIME").query_async(&mut conn).await?;
        Ok(DateTime::from_timestamp(secs, (micros * 1000) as u32).unwrap_or_else(Utc::now))
    }

    /// [`Queues::latency`] as of now, or 0 without asking Redis when `ready` (the size of the
    /// queue's ready set, read with the counts) says no job waits.
    pub(super) async fn latency_if_ready(
        &self,
        queue: &str,
        ready: u64,
    ) -> Result<f64, QueueError> {
        if ready == 0 {
            return Ok(0.0);
        }
        self.latency(queue, self.redis_now().await?).await
    }

    /// How long the job at the head of `queue`'s ready set (the next one a worker takes:
    /// highest priority, then oldest) has been ready at `now`, in seconds; 0 when none waits.
    /// With one priority in use, the oldest ready job's age.
    pub async fn latency(&self, queue: &str, now: DateTime<Utc>) -> Result<f64, QueueError> {
        let (head, _) = self.list(queue, JobState::Waiting, 0, 1).await?;
        Ok(head.first().map_or(0.0, |job| {
            // ready since it was enqueued, or since its runAt (a delayed job, a retry's backoff)
            let since = job.run_at.max(job.created_at).unwrap_or(now);
            ((now - since).num_milliseconds().max(0) as f64) / 1000.0
        }))
    }

    /// Jobs of one queue in one state, newest first for finished states, in run order otherwise
    /// (waiting: the line a fetch takes, see [`Queues::waiting_ids`]); returns the page and the
    /// total in that state.
    pub async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<JobRecord>, u64), QueueError> {
        let Some(set) = state.set() else {
            return Ok((Vec::new(), 0));
        };
        let key = format!("{}{}", self.base(queue), set);
        let newest_first = matches!(
            state,
            JobState::Completed | JobState::Dead | JobState::Cancelled
        );
        let (start, stop) = (offset as isize, (offset + limit.max(1)) as isize - 1);
        let mut conn = self.conn.clone();
        let (ids, total): (Vec<String>, u64) = if state == JobState::Waiting {
            self.waiting_ids(queue, offset, limit.max(1)).await?
        } else if newest_first {
            redis::pipe()
                .zrevrange(&key, start, stop)
                .zcard(&key)
                .query_async(&mut conn)
                .await?
        } else {
            redis::pipe()
                .zrange(&key, start, stop)
                .zcard(&key)
                .query_async(&mut conn)
                .await?
        };
        if ids.is_empty() {
            // an empty pipeline is an error in the redis client: past the last page is no error
            return Ok((Vec::new(), total));
        }
        let raws: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(format!("{}jobs", self.base(queue)))
            .arg(&ids)
            .query_async(&mut conn)
            .await?;
        let mut jobs = Vec::with_capacity(raws.len());
        for (id, raw) in ids.iter().zip(raws) {
            // a job trimmed between the two round trips is simply left out
            jobs.extend(record::decode(queue, id, raw)?);
        }
        Ok((jobs, total))
    }

    /// Ids of `queue`'s waiting jobs in the order a fetch takes them (priorities above 0 from
    /// `ready`, then priority 0's list `wait`, then priorities below 0), `limit` from `offset`,
    /// and how many wait: one round trip to size the three parts, one for the page.
    async fn waiting_ids(
        &self,
        queue: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<String>, u64), QueueError> {
        const PRI0: &str = "(1099511627776000"; // scores below priority 0's: priorities above 0
        let base = self.base(queue);
        let (ready, wait) = (format!("{base}ready"), format!("{base}wait"));
        let mut conn = self.conn.clone();
        let (high, listed, all): (usize, usize, usize) = redis::pipe()
            .zcount(&ready, "-inf", PRI0)
            .llen(&wait)
            .zcard(&ready)
            .query_async(&mut conn)
            .await?;
        let total = (listed + all) as u64;
        // the page's slice of each part, in line order: [0, high) of `ready`, the list, then
        // [high, all) of `ready`
        let (from, to) = (offset, offset + limit);
        let part = |start: usize, len: usize| {
            let (a, b) = (from.max(start), to.min(start + len));
            (a < b).then(|| (a - start, b - start))
        };
        let mut pipe = redis::pipe();
        let mut parts = 0;
        if let Some((a, b)) = part(0, high) {
            pipe.zrange(&ready, a as isize, b as isize - 1);
            parts += 1;
        }
        if let Some((a, b)) = part(high, listed) {
            pipe.lrange(&wait, a as isize, b as isize - 1);
            parts += 1;
        }
        if let Some((a, b)) = part(high + listed, all.saturating_sub(high)) {
            pipe.zrange(&ready, (high + a) as isize, (high + b) as isize - 1);
            parts += 1;
        }
        if parts == 0 {
            return Ok((Vec::new(), total));
        }
        let pages: Vec<Vec<String>> = pipe.query_async(&mut conn).await?;
        Ok((pages.into_iter().flatten().collect(), total))
    }
}
