//! A project's own view of a queue: its jobs' counts per state and its open jobs, newest first,
//! read from the per-project state counts and open index the scripts keep (`lua/open.lua`:
//! `p:{q}:project_states`, and the open index: `p:{q}:open_dir` with `p:{q}:open_pages`, and
//! `p:{q}:open_index`). This is what a tenant's admin sees in place
//! of the queue-wide views, which span every project.
//!
//! Both are exact for jobs enqueued since the index existed. A job already open when a
//! deployment first ran this version is in neither until it finishes (its project's gauges
//! start from 0 and are never taken below it); it still shows in the queue-wide views and, once
//! finished, in the job archive.

use std::collections::VecDeque;

use uuid::Uuid;

use super::{JobRecord, JobState, QueueCounts, QueueError, Queues, record};

/// How many pages of the open index (about 64 jobs each) one round trip of
/// [`Queues::project_jobs`] reads.
const PAGES: usize = 4;
/// The bytes of one key of the open index: creation time (6), job id (16).
const KEY_LEN: usize = 22;

/// The open states a project's index holds.
pub const OPEN_STATES: [JobState; 4] = [
    JobState::Waiting,
    JobState::Delayed,
    JobState::Active,
    JobState::Retrying,
];

impl Queues {
    /// `project`'s jobs in `queue` per state: the open states as they are now; `completed`,
    /// `dead` and `cancelled` (and `completedTotal`, `deadTotal`) count every job of the project
    /// that ever finished so since the index existed. `paused` and `latencySeconds` are the
    /// queue's.
    pub async fn project_counts(
        &self,
        queue: &str,
        project: Uuid,
    ) -> Result<QueueCounts, QueueError> {
        let states = [
            "waiting",
            "delayed",
            "active",
            "retrying",
            "completed",
            "dead",
            "cancelled",
        ];
        let fields: Vec<String> = states.iter().map(|s| format!("{project}|{s}")).collect();
        let parts = self.parts(queue).await?;
        let mut pipe = redis::pipe();
        for part in &parts {
            let base = self.base(part);
            pipe.cmd("HMGET")
                .arg(format!("{base}project_states"))
                .arg(&fields)
                .exists(format!("{base}paused"))
                .zcard(format!("{base}ready"))
                .llen(format!("{base}wait"));
        }
        let mut conn = self.conn.clone();
        let replies: Vec<(Vec<Option<i64>>, bool, u64, u64)> = {
            let flat: Vec<redis::Value> = pipe.query_async(&mut conn).await?;
            flat.chunks(4)
                .map(|r| {
                    Ok((
                        redis::from_redis_value_ref(&r[0])?,
                        redis::from_redis_value_ref(&r[1])?,
                        redis::from_redis_value_ref(&r[2])?,
                        redis::from_redis_value_ref(&r[3])?,
                    ))
                })
                .collect::<Result<_, redis::ParsingError>>()?
        };
        let (mut c, mut paused, mut ready) = (vec![0i64; states.len()], false, 0);
        for (counts, p, r, l) in replies {
            for (sum, n) in c.iter_mut().zip(counts) {
                *sum += n.unwrap_or_default().max(0);
            }
            paused |= p;
            ready += r + l;
        }
        let c: Vec<u64> = c.into_iter().map(|n| n as u64).collect();
        Ok(QueueCounts {
            queue: queue.to_owned(),
            waiting: c[0],
            delayed: c[1],
            active: c[2],
            retrying: c[3],
            completed: c[4],
            dead: c[5],
            cancelled: c[6],
            paused,
            partitions: parts.len() as u32,
            completed_total: c[4],
            dead_total: c[5],
            latency_seconds: self.latency_if_ready(queue, ready).await?,
            workers: None,
        })
    }

    /// `project`'s open jobs in `queue`, newest first (by creation), in `state` if given (an open
    /// state), skipping the first `offset` that match and returning at most `limit`. Reads the
    /// project's index [`PAGES`] pages at a time and each entry's state, so it costs two round
    /// trips per [`PAGES`] pages (about 256 jobs) of the project's open jobs read (at most the project's open-jobs
    /// quota); another project's jobs are never read. A partitioned queue's partitions are
    /// each read to the page's end and merged by creation.
    pub async fn project_jobs(
        &self,
        queue: &str,
        project: Uuid,
        state: Option<JobState>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<JobRecord>, QueueError> {
        let parts = self.parts(queue).await?;
        self.project_jobs_of(&parts, project, state, offset, limit)
            .await
    }

    /// [`Queues::project_jobs`] of one partition (`part`, as [`Queues::list_in`] takes it).
    pub async fn project_jobs_in(
        &self,
        part: &str,
        project: Uuid,
        state: Option<JobState>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<JobRecord>, QueueError> {
        self.project_jobs_of(&[part.to_owned()], project, state, offset, limit)
            .await
    }

    /// A project's open jobs across `parts` (merged when there are several).
    async fn project_jobs_of(
        &self,
        parts: &[String],
        project: Uuid,
        state: Option<JobState>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<JobRecord>, QueueError> {
        let mut picked: Vec<(Vec<u8>, usize, String)> = Vec::new();
        if let [part] = parts {
            for (key, id) in self.open_ids(part, project, state, offset, limit).await? {
                picked.push((key, 0, id));
            }
        } else {
            if offset + limit > super::MAX_MERGED {
                return Err(QueueError::TooDeep {
                    max: super::MAX_MERGED,
                });
            }
            for (p, part) in parts.iter().enumerate() {
                for (key, id) in self
                    .open_ids(part, project, state, 0, offset + limit)
                    .await?
                {
                    picked.push((key, p, id));
                }
            }
            // newest first: the index keys' creation time and id, compared as bytes
            picked.sort_by(|a, b| b.0.cmp(&a.0));
            picked = picked.into_iter().skip(offset).take(limit).collect();
        }
        let mut jobs: Vec<Option<JobRecord>> = vec![None; picked.len()];
        let mut conn = self.conn.clone();
        for (p, part) in parts.iter().enumerate() {
            let (at, ids): (Vec<usize>, Vec<&str>) = picked
                .iter()
                .enumerate()
                .filter(|(_, (_, q, _))| *q == p)
                .map(|(i, (_, _, id))| (i, id.as_str()))
                .unzip();
            if ids.is_empty() {
                continue;
            }
            let raws: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
                .arg(format!("{}jobs", self.base(part)))
                .arg(&ids)
                .query_async(&mut conn)
                .await?;
            for ((i, id), raw) in at.into_iter().zip(&ids).zip(raws) {
                // a job trimmed between the round trips is simply left out, and so is one whose
                // record is corrupt (logged and counted by `decode`): it must not hide the others
                if let Ok(Some(job)) = record::decode(part, id, raw)
                    && job.project_id == Some(project)
                {
                    jobs[i] = Some(job);
                }
            }
        }
        Ok(jobs.into_iter().flatten().collect())
    }

    /// One partition's part of [`Queues::project_jobs`]: the ids of the project's open jobs in
    /// `state` (if given), newest first, from `offset`, at most `limit`, each with its index
    /// key (creation time and id: the order key). The index's pages and its sorted set of jobs
    /// not yet in pages (`lua/open.lua`) are read in chunks and merged by key.
    async fn open_ids(
        &self,
        part: &str,
        project: Uuid,
        state: Option<JobState>,
        offset: usize,
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, String)>, QueueError> {
        let base = self.base(part);
        let mut pages = IndexCursor::new(&base, project, Source::Pages);
        let mut buffered = IndexCursor::new(&base, project, Source::Buffered);
        let mut conn = self.conn.clone();
        let (mut skipped, mut picked) = (0, Vec::new());
        'chunks: loop {
            // the next keys, newest first, from whichever source holds the newer one
            let mut ids: Vec<(Vec<u8>, String)> = Vec::new();
            while ids.len() < 256 {
                pages.fill(&mut conn).await?;
                buffered.fill(&mut conn).await?;
                let from = match (pages.keys.front(), buffered.keys.front()) {
                    (None, None) => break,
                    (Some(_), None) => &mut pages,
                    (None, Some(_)) => &mut buffered,
                    (Some(a), Some(b)) if a >= b => &mut pages,
                    _ => &mut buffered,
                };
                let key = from.keys.pop_front().expect("a front key");
                if let Some(id) = key.get(6..).and_then(|b| Uuid::from_slice(b).ok()) {
                    ids.push((key, id.to_string()));
                }
            }
            if ids.is_empty() {
                break;
            }
            let raws: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
                .arg(format!("{base}jobs"))
                .arg(ids.iter().map(|(_, id)| id.as_str()).collect::<Vec<_>>())
                .query_async(&mut conn)
                .await?;
            for (entry, raw) in ids.into_iter().zip(raws) {
                let found = raw
                    .and_then(|r| record::decode_fields(&r).ok())
                    .and_then(|mut f| f.remove("state"));
                let open = found
                    .as_deref()
                    .and_then(JobState::parse)
                    .filter(|s| OPEN_STATES.contains(s));
                let Some(s) = open else { continue };
                if state.is_some_and(|want| want != s) {
                    continue;
                }
                if skipped < offset {
                    skipped += 1;
                    continue;
                }
                picked.push(entry);
                if picked.len() >= limit {
                    break 'chunks;
                }
            }
        }
        Ok(picked)
    }
}

/// Where [`IndexCursor`] reads a project's index keys from.
#[derive(Clone, Copy, PartialEq)]
enum Source {
    /// `open_dir` and `open_pages`: [`PAGES`] pages a read.
    Pages,
    /// `open_index`, the jobs not yet in pages: 256 members a read.
    Buffered,
}

/// One project's index keys (`<created ms, 6 bytes><job id, 16>`) from one [`Source`], newest
/// first, read a chunk at a time.
struct IndexCursor {
    source: Source,
    /// `open_dir` or `open_index`
    set: String,
    pages: String,
    /// the prefix the project's names or members start with
    project: Vec<u8>,
    /// the lex range's upper end for the next read
    ceiling: Vec<u8>,
    keys: VecDeque<Vec<u8>>,
    done: bool,
}

impl IndexCursor {
    fn new(base: &str, project: Uuid, source: Source) -> Self {
        let set = match source {
            Source::Pages => format!("{base}open_dir"),
            Source::Buffered => format!("{base}open_index"),
        };
        // names and members are `<project, 16 bytes><key, 22>`; no key reaches the byte 0xff
        // (a creation time of 2^47 ms, in the year 6429)
        Self {
            source,
            set,
            pages: format!("{base}open_pages"),
            project: project.as_bytes().to_vec(),
            ceiling: [b"[".as_slice(), project.as_bytes(), &[0xff]].concat(),
            keys: VecDeque::new(),
            done: false,
        }
    }

    /// Reads the next chunk if none is left and the source is not exhausted.
    async fn fill(&mut self, conn: &mut crate::redis_client::RedisConn) -> Result<(), QueueError> {
        while self.keys.is_empty() && !self.done {
            let n = match self.source {
                Source::Pages => PAGES,
                Source::Buffered => 256,
            };
            let names: Vec<Vec<u8>> = redis::cmd("ZREVRANGEBYLEX")
                .arg(&self.set)
                .arg(&self.ceiling)
                .arg([b"[".as_slice(), &self.project].concat())
                .arg("LIMIT")
                .arg(0)
                .arg(n)
                .query_async(conn)
                .await?;
            self.done = names.len() < n;
            let Some(last) = names.last() else { break };
            self.ceiling = [b"(".as_slice(), last].concat();
            match self.source {
                Source::Buffered => self.keys.extend(
                    names
                        .iter()
                        .filter(|m| m.len() == 16 + KEY_LEN)
                        .map(|m| m[16..].to_vec()),
                ),
                Source::Pages => {
                    let pages: Vec<Option<Vec<u8>>> = redis::cmd("HMGET")
                        .arg(&self.pages)
                        .arg(&names)
                        .query_async(conn)
                        .await?;
                    // each page's keys ascend: newest first is from its end
                    self.keys.extend(
                        pages
                            .iter()
                            .flatten()
                            .flat_map(|page| page.chunks_exact(KEY_LEN).rev())
                            .map(<[u8]>::to_vec),
                    );
                }
            }
        }
        Ok(())
    }
}
