//! Open jobs per project: reading the counts the queue scripts keep in
//! `p:{q}:open_by_project` (see `lua/open.lua`), for the API's per-project quota and for the
//! operators' views (the ops endpoint and the top-N metric).
//!
//! Each queue keeps its own count (a sorted set, project id → that queue's open jobs of the
//! project), so every script still touches one Redis Cluster slot; a project's total is the sum
//! over the queues, read in one round trip.

use std::collections::{BTreeMap, HashMap};

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use super::{QueueError, Queues};

/// One project's open jobs (waiting, delayed, active or retrying), in total and per queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ProjectOpenJobs {
    /// The project.
    pub project_id: Uuid,
    /// Its open jobs in every queue together.
    pub open_jobs: u64,
    /// Its open jobs per queue (queues where it has none are left out).
    pub by_queue: BTreeMap<String, u64>,
}

/// How deep [`Queues::top_projects`] reads each queue's ranking at most.
pub const TOP_DEPTH: usize = 1024;

/// The projects with the most open jobs ([`Queues::top_projects`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct TopProjects {
    /// Most open jobs first (ties by project id), each with its exact count.
    pub projects: Vec<ProjectOpenJobs>,
    /// `None` when the list is exactly the top. Otherwise the search stopped at its bound
    /// (many projects whose jobs are spread over several queues): every project not listed
    /// has at most this many open jobs, and one of them may have more than the last listed.
    pub others_at_most: Option<u64>,
}

impl Queues {
    /// The key of queue `queue`'s open-jobs-per-project sorted set.
    fn open_key(&self, queue: &str) -> String {
        format!("{}open_by_project", self.base(queue))
    }

    /// `project`'s open jobs across `queues` (one round trip): what its quota is checked
    /// against. Exact as of the read: every script that opens or closes a job counts it.
    pub async fn open_jobs(&self, queues: &[&str], project: Uuid) -> Result<u64, QueueError> {
        if queues.is_empty() {
            return Ok(0);
        }
        let member = project.to_string();
        let mut pipe = redis::pipe();
        for q in self.expand(queues).await? {
            pipe.zscore(self.open_key(&q), &member);
        }
        let mut conn = self.conn.clone();
        let scores: Vec<Option<f64>> = pipe.query_async(&mut conn).await?;
        Ok(scores.into_iter().filter_map(count).sum())
    }

    /// The `n` projects with the most open jobs across `queues`, most first (ties by project
    /// id), each with its exact count.
    ///
    /// Each queue ranks its own projects and a project's total is the sum over the queues, so
    /// the top of the sums is found with the threshold algorithm (Fagin): read each queue's
    /// ranking down to `depth`, complete every project seen with its count in the other queues,
    /// and stop once the `n`-th best total is at least what a project not seen can have (the
    /// sum of each queue's score at `depth`); else read twice as deep. It usually stops at the
    /// first round (when the projects with the most jobs in one queue are not spread thinly
    /// over the others). The work is bounded: past [`TOP_DEPTH`] entries per queue it stops
    /// with the best totals it has and says how many jobs an unlisted project has at most
    /// ([`TopProjects::others_at_most`]), so a scrape costs the same with a million projects.
    pub async fn top_projects(&self, queues: &[&str], n: usize) -> Result<TopProjects, QueueError> {
        if n == 0 || queues.is_empty() {
            return Ok(TopProjects {
                projects: Vec::new(),
                others_at_most: None,
            });
        }
        // a partitioned queue's partitions rank their projects on their own: the search runs
        // over partitions, and each project's counts are summed per queue at the end
        let parts = self.expand(queues).await?;
        let queues: Vec<&str> = parts.iter().map(String::as_str).collect();
        let mut seen: HashMap<Uuid, BTreeMap<String, u64>> = HashMap::new();
        let mut exhausted = vec![false; queues.len()];
        let (mut from, mut depth) = (0, n.min(TOP_DEPTH));
        let mut conn = self.conn.clone();
        loop {
            // sorted access: ranks from..depth of every queue still being read
            let mut pipe = redis::pipe();
            for q in &queues {
                pipe.zrevrange_withscores(self.open_key(q), from as isize, depth as isize - 1);
            }
            let slices: Vec<Vec<(String, f64)>> = pipe.query_async(&mut conn).await?;
            let mut threshold = 0;
            let mut new = Vec::new();
            for (i, (q, slice)) in queues.iter().zip(&slices).enumerate() {
                if exhausted[i] {
                    continue;
                }
                exhausted[i] = slice.len() < depth - from;
                for (member, score) in slice {
                    // a member that is not a project id was not written by the scripts
                    let (Ok(id), Some(n)) = (Uuid::parse_str(member), count(Some(*score))) else {
                        continue;
                    };
                    let counts = seen.entry(id).or_insert_with(|| {
                        new.push(id);
                        BTreeMap::new()
                    });
                    counts.insert((*q).to_owned(), n);
                }
                if !exhausted[i] {
                    threshold += slice.last().and_then(|(_, s)| count(Some(*s))).unwrap_or(0);
                }
            }
            // random access: the other queues' counts of the projects seen for the first time
            let mut pipe = redis::pipe();
            let mut asked = Vec::new();
            for id in &new {
                for q in &queues {
                    if !seen[id].contains_key(*q) {
                        pipe.zscore(self.open_key(q), id.to_string());
                        asked.push((*id, *q));
                    }
                }
            }
            if !asked.is_empty() {
                let scores: Vec<Option<f64>> = pipe.query_async(&mut conn).await?;
                for ((id, q), score) in asked.into_iter().zip(scores) {
                    if let Some(n) = count(score) {
                        seen.entry(id).or_default().insert(q.to_owned(), n);
                    }
                }
            }
            let mut ranked: Vec<ProjectOpenJobs> = seen
                .iter()
                .map(|(id, by_part)| {
                    let mut by_queue = BTreeMap::new();
                    for (part, n) in by_part {
                        *by_queue
                            .entry(super::queue_of(part).to_owned())
                            .or_default() += n;
                    }
                    ProjectOpenJobs {
                        project_id: *id,
                        open_jobs: by_part.values().sum(),
                        by_queue,
                    }
                })
                .collect();
            ranked.sort_by(|a, b| {
                b.open_jobs
                    .cmp(&a.open_jobs)
                    .then(a.project_id.cmp(&b.project_id))
            });
            let all_read = exhausted.iter().all(|e| *e);
            let settled = all_read || (ranked.len() >= n && ranked[n - 1].open_jobs >= threshold);
            if settled || depth >= TOP_DEPTH {
                ranked.truncate(n);
                return Ok(TopProjects {
                    projects: ranked,
                    others_at_most: (!settled).then_some(threshold),
                });
            }
            from = depth;
            depth = (depth * 2).min(TOP_DEPTH);
        }
    }

    /// Every open job of `queues` (waiting, delayed, active, retrying), whatever its project:
    /// one round trip.
    pub async fn open_jobs_total(&self, queues: &[&str]) -> Result<u64, QueueError> {
        if queues.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for q in self.expand(queues).await? {
            let base = self.base(&q);
            for set in ["ready", "delayed", "active", "retry"] {
                pipe.zcard(format!("{base}{set}"));
            }
            pipe.llen(format!("{base}wait"));
        }
        let mut conn = self.conn.clone();
        let sizes: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(sizes.into_iter().sum())
    }
}

/// A stored count as a number of jobs (`None` for a missing member; the scripts only store
/// positive integers).
fn count(score: Option<f64>) -> Option<u64> {
    score.filter(|s| *s >= 1.0).map(|s| s as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::queue::NewJob;

    /// Queues under a prefix of their own on the test Redis, deleted on drop.
    struct Fixture {
        queues: Queues,
        client: Option<redis::Client>,
    }

    impl Fixture {
        fn new() -> Self {
            let url =
                std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            let prefix = format!("test-unit-{}", &Uuid::new_v4().simple().to_string()[..12]);
            // a blocking client for the clean-up in `drop` (none on a test cluster, which goes away
            // with the tests)
            let client = redis::Client::open(url.as_str()).ok();
            let queues = Queues::new(
                crate::redis_client::RedisClient::open(&url).expect("redis url"),
                &prefix,
                crate::config::QueueSettings {
                    check_script_keys: true,
                    ..Default::default()
                },
            )
            .expect("queues");
            Self { queues, client }
        }

        /// Pushes `n` jobs of `project` into `queue` with the enqueue script.
        async fn push(&self, queue: &str, project: Uuid, n: usize) {
            let jobs: Vec<NewJob> = (0..n)
                .map(|_| NewJob {
                    id: Uuid::now_v7(),
                    queue: queue.to_owned(),
                    payload: serde_json::json!({}),
                    run_at: None,
                    priority: 0,
                    max_attempts: 1,
                    idempotency_key: None,
                    partition_key: None,
                    project_id: project,
                    request_id: None,
                })
                .collect();
            self.queues.push_many(queue, &jobs).await.expect("push");
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let Some(Ok(mut conn)) = self.client.as_ref().map(redis::Client::get_connection) else {
                return;
            };
            let pattern = format!("{}:*", self.queues.prefix());
            let keys: Vec<String> = redis::Commands::scan_match(&mut conn, &pattern)
                .map_or_else(|_| Vec::new(), |iter| iter.filter_map(Result::ok).collect());
            if !keys.is_empty() {
                let _: Result<(), _> = redis::Commands::del(&mut conn, keys);
            }
        }
    }

    fn ids(n: usize) -> Vec<Uuid> {
        let mut v: Vec<Uuid> = (0..n).map(|_| Uuid::new_v4()).collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn the_top_projects_are_those_of_the_largest_totals_not_of_each_queues_top() {
        let f = Fixture::new();
        let p = ids(4);
        // each queue's own leader (p0 in a, p1 in b) is second overall: p2 leads the sum
        f.push("a", p[0], 10).await;
        f.push("a", p[2], 9).await;
        f.push("b", p[1], 10).await;
        f.push("b", p[2], 9).await;
        f.push("a", p[3], 1).await;

        let top = f.queues.top_projects(&["a", "b"], 1).await.expect("top");
        assert_eq!(top.others_at_most, None, "exact");
        let top = top.projects;
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].project_id, p[2]);
        assert_eq!(top[0].open_jobs, 18);
        assert_eq!(
            top[0].by_queue,
            BTreeMap::from([("a".to_owned(), 9), ("b".to_owned(), 9)])
        );

        let all = f.queues.top_projects(&["a", "b"], 10).await.expect("top");
        let order: Vec<(Uuid, u64)> = all
            .projects
            .iter()
            .map(|p| (p.project_id, p.open_jobs))
            .collect();
        assert_eq!(
            order,
            [(p[2], 18), (p[0], 10), (p[1], 10), (p[3], 1)],
            "most first, ties by project id"
        );
        assert_eq!(f.queues.open_jobs(&["a", "b"], p[2]).await.unwrap(), 18);
        assert_eq!(
            f.queues
                .open_jobs(&["a", "b"], Uuid::new_v4())
                .await
                .unwrap(),
            0
        );
        assert_eq!(f.queues.open_jobs_total(&["a", "b"]).await.unwrap(), 39);
    }

    #[tokio::test]
    async fn the_top_of_many_projects_spread_over_queues_matches_a_full_count() {
        let f = Fixture::new();
        let projects = ids(60);
        let queues = ["a", "b", "c"];
        let mut expected: BTreeMap<Uuid, u64> = BTreeMap::new();
        for (i, p) in projects.iter().enumerate() {
            // a spread where a queue's ranking says little about the totals
            for (j, q) in queues.iter().enumerate() {
                let n = (i * 7 + j * 13) % 11;
                if n > 0 {
                    f.push(q, *p, n).await;
                    *expected.entry(*p).or_default() += n as u64;
                }
            }
        }
        let mut want: Vec<(Uuid, u64)> = expected.into_iter().collect();
        want.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        want.truncate(10);

        let top = f.queues.top_projects(&queues, 10).await.expect("top");
        assert_eq!(top.others_at_most, None, "exact");
        let got: Vec<(Uuid, u64)> = top
            .projects
            .iter()
            .map(|p| (p.project_id, p.open_jobs))
            .collect();
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn past_its_depth_the_top_says_how_many_jobs_an_unlisted_project_has_at_most() {
        let f = Fixture::new();
        let queues = ["a", "b", "c"];
        // 1,100 projects in each queue, none in two: the totals are no larger than one
        // queue's counts, so the threshold stays above them down to any depth
        let mut conn = f.queues.connection();
        let mut all: Vec<(Uuid, u64)> = Vec::new();
        for q in queues {
            let mut pipe = redis::pipe();
            for i in 0..1100u64 {
                let p = Uuid::new_v4();
                pipe.zadd(f.queues.open_key(q), p.to_string(), 1000 + i)
                    .ignore();
                all.push((p, 1000 + i));
            }
            let _: () = pipe.query_async(&mut conn).await.expect("zadd");
        }
        all.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        all.truncate(10);

        let top = f.queues.top_projects(&queues, 10).await.expect("top");
        let got: Vec<(Uuid, u64)> = top
            .projects
            .iter()
            .map(|p| (p.project_id, p.open_jobs))
            .collect();
        assert_eq!(got, all, "the best totals it read, each exact");
        // each queue read down to rank 1024, whose count is 1000 + 1100 - 1024
        assert_eq!(top.others_at_most, Some(3 * (1000 + 1100 - 1024)));
    }
}
