//! Reading a queue: one job by id (in one queue or across several), the counts per state with
//! the latency of the next job in line, Redis's clock, and a page of the jobs in one state. The
//! operators' views and the API's job look-up are built on these. A partitioned queue
//! (`partitions.rs`) reads as one: counts summed, pages merged.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::{JobRecord, JobState, QueueCounts, QueueError, Queues, record};

/// How deep the pages of a partitioned queue go (offset + page size): every partition is read
/// from its start to the page's end and merged, so the cost grows with the depth times the
/// partitions; past it a listing is refused ([`QueueError::TooDeep`]).
pub const MAX_MERGED: usize = 10_000;

impl Queues {
    /// One job of one queue, or `None`.
    pub async fn job(&self, queue: &str, id: Uuid) -> Result<Option<JobRecord>, QueueError> {
        self.find_job(&[queue], id).await
    }

    /// Finds a job by id across the given queues (one round trip).
    pub async fn find_job(
        &self,
        queues: &[&str],
        id: Uuid,
    ) -> Result<Option<JobRecord>, QueueError> {
        let id = id.to_string();
        let queues = self.expand(queues).await?;
        let mut pipe = redis::pipe();
        for q in &queues {
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

    /// Counts per state of one queue (one round trip; every partition's counts summed).
    pub async fn counts(&self, queue: &str) -> Result<QueueCounts, QueueError> {
        const PER_PART: usize = 11;
        let parts = self.parts(queue).await?;
        let mut pipe = redis::pipe();
        for part in &parts {
            let base = self.base(part);
            for (_, set) in JobState::REDIS {
                pipe.zcard(format!("{base}{set}"));
            }
            pipe.exists(format!("{base}paused"));
            pipe.hget(format!("{base}stats"), "completed");
            pipe.hget(format!("{base}stats"), "dead");
            pipe.llen(format!("{base}wait"));
        }
        let mut conn = self.conn.clone();
        let all: Vec<Option<u64>> = pipe.query_async(&mut conn).await?;
        let mut c = [0u64; PER_PART];
        for part in all.chunks(PER_PART) {
            for (sum, n) in c.iter_mut().zip(part) {
                *sum += n.unwrap_or_default();
            }
        }
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
            // set and cleared on every partition together (`pause.rs`)
            paused: c[7] > 0,
            partitions: parts.len() as u32,
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
    /// With one priority in use, the oldest ready job's age; on a partitioned queue, the
    /// longest of its partitions' heads.
    pub async fn latency(&self, queue: &str, now: DateTime<Utc>) -> Result<f64, QueueError> {
        let mut longest: f64 = 0.0;
        for part in self.parts(queue).await? {
            let (head, _) = self.list_part(&part, JobState::Waiting, 0, 1).await?;
            let head = self.records(&part, &head).await?;
            if let Some(Some(job)) = head.first() {
                // ready since it was enqueued, or since its runAt (a delayed job, a retry's
                // backoff)
                let since = job.run_at.max(job.created_at).unwrap_or(now);
                longest = longest.max(((now - since).num_milliseconds().max(0) as f64) / 1000.0);
            }
        }
        Ok(longest)
    }

    /// Jobs of one queue in one state, newest first for finished states, in run order otherwise
    /// (waiting: the line a fetch takes, see [`Queues::waiting_ids`]); returns the page and the
    /// total in that state.
    ///
    /// On a partitioned queue the partitions' pages are merged: by time for the sorted states,
    /// and for waiting jobs one from each partition in turn (as workers take them). Each
    /// partition is read from its start to the page's end, so pages reach [`MAX_MERGED`] at
    /// most there (a deeper one is [`QueueError::TooDeep`]).
    pub async fn list(
        &self,
        queue: &str,
        state: JobState,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<JobRecord>, u64), QueueError> {
        let limit = limit.max(1);
        let parts = self.parts(queue).await?;
        if let [part] = parts.as_slice() {
            return self.list_in(part, state, offset, limit).await;
        }
        if offset + limit > MAX_MERGED {
            return Err(QueueError::TooDeep { max: MAX_MERGED });
        }
        let mut total = 0;
        let mut pages = Vec::with_capacity(parts.len());
        for part in &parts {
            let (ids, n) = self.list_part(part, state, 0, offset + limit).await?;
            total += n;
            pages.push(ids);
        }
        let newest_first = matches!(
            state,
            JobState::Completed | JobState::Dead | JobState::Cancelled
        );
        // (partition, id, order key): by score for the sorted states, by place in line
        // (round-robin over the partitions) for waiting
        let mut merged: Vec<(usize, String, f64)> = pages
            .into_iter()
            .enumerate()
            .flat_map(|(p, ids)| {
                ids.into_iter()
                    .enumerate()
                    .map(move |(i, (id, score))| (p, id, score.unwrap_or(i as f64)))
            })
            .collect();
        merged.sort_by(|a, b| {
            let by = a.2.total_cmp(&b.2).then(a.0.cmp(&b.0));
            if newest_first && state != JobState::Waiting {
                by.reverse()
            } else {
                by
            }
        });
        let page: Vec<(usize, String, f64)> = merged.into_iter().skip(offset).take(limit).collect();
        let mut jobs: Vec<Option<JobRecord>> = vec![None; page.len()];
        for (p, part) in parts.iter().enumerate() {
            let (at, ids): (Vec<usize>, Vec<(String, Option<f64>)>) = page
                .iter()
                .enumerate()
                .filter(|(_, (q, _, _))| *q == p)
                .map(|(i, (_, id, _))| (i, (id.clone(), None)))
                .unzip();
            for (i, job) in at.into_iter().zip(self.records(part, &ids).await?) {
                jobs[i] = job;
            }
        }
        // a job trimmed between the round trips is simply left out
        Ok((jobs.into_iter().flatten().collect(), total))
    }

    /// [`Queues::list`] of one partition (`part`, a name of [`crate::queue::partition_name`];
    /// partition 0's is the queue's own): what a selection that needs no merged order reads,
    /// partition after partition.
    pub async fn list_in(
        &self,
        part: &str,
        state: JobState,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<JobRecord>, u64), QueueError> {
        let (ids, total) = self.list_part(part, state, offset, limit.max(1)).await?;
        let jobs = self.records(part, &ids).await?;
        Ok((jobs.into_iter().flatten().collect(), total))
    }

    /// One partition's page of jobs in `state`: ids with their score (none for waiting jobs),
    /// and the partition's total in that state.
    async fn list_part(
        &self,
        part: &str,
        state: JobState,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<(String, Option<f64>)>, u64), QueueError> {
        let Some(set) = state.set() else {
            return Ok((Vec::new(), 0));
        };
        if state == JobState::Waiting {
            let (ids, total) = self.waiting_ids(part, offset, limit).await?;
            return Ok((ids.into_iter().map(|id| (id, None)).collect(), total));
        }
        let key = format!("{}{}", self.base(part), set);
        let newest_first = matches!(
            state,
            JobState::Completed | JobState::Dead | JobState::Cancelled
        );
        let (start, stop) = (offset as isize, (offset + limit) as isize - 1);
        let mut conn = self.conn.clone();
        let (ids, total): (Vec<(String, f64)>, u64) = if newest_first {
            redis::pipe()
                .zrevrange_withscores(&key, start, stop)
                .zcard(&key)
                .query_async(&mut conn)
                .await?
        } else {
            redis::pipe()
                .zrange_withscores(&key, start, stop)
                .zcard(&key)
                .query_async(&mut conn)
                .await?
        };
        Ok((
            ids.into_iter().map(|(id, s)| (id, Some(s))).collect(),
            total,
        ))
    }

    /// The records of jobs `ids` of one partition, in that order (`None`: no longer there).
    async fn records(
        &self,
        part: &str,
        ids: &[(String, Option<f64>)],
    ) -> Result<Vec<Option<JobRecord>>, QueueError> {
        if ids.is_empty() {
            // an empty pipeline is an error in the redis client: past the last page is no error
            return Ok(Vec::new());
        }
        let mut conn = self.conn.clone();
        let raws: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
            .arg(format!("{}jobs", self.base(part)))
            .arg(ids.iter().map(|(id, _)| id.as_str()).collect::<Vec<_>>())
            .query_async(&mut conn)
            .await?;
        ids.iter()
            .zip(raws)
            .map(|((id, _), raw)| record::decode(part, id, raw))
            .collect()
    }

    /// Ids of a partition's waiting jobs in the order a fetch takes them (priorities above 0 from
    /// `ready`, then priority 0's list `wait`, then priorities below 0), `limit` from `offset`,
    /// and how many wait: one round trip to size the three parts, one for the page.
    async fn waiting_ids(
        &self,
        part: &str,
        offset: usize,
        limit: usize,
    ) -> Result<(Vec<String>, u64), QueueError> {
        const PRI0: &str = "(1099511627776000"; // scores below priority 0's: priorities above 0
        let base = self.base(part);
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
        let pages: Vec<Vec<Vec<u8>>> = pipe.query_async(&mut conn).await?;
        Ok((pages.into_iter().flatten().map(line_id).collect(), total))
    }
}

/// The job id of an entry of the waiting line: the list `wait` holds ids as 16 bytes (and, from
/// before, as text: `lua/job.lua`'s `line_id`), the sorted set `ready` as text.
pub(crate) fn line_id(entry: Vec<u8>) -> String {
    match <[u8; 16]>::try_from(entry.as_slice()) {
        Ok(bytes) => uuid::Uuid::from_bytes(bytes).to_string(),
        Err(_) => String::from_utf8_lossy(&entry).into_owned(),
    }
}
