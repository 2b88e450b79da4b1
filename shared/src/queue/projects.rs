//! Open jobs per project: reading the counts the queue scripts keep in
//! `p:{q}:open_by_project` (see `lua/open.lua`), for the API's per-project quota and for the
//! operators' views (the ops endpoint and the top-N metric).
//!
//! Each queue keeps its own count (a sorted set, project id → that queue's open jobs of the
//! project), so every script still touches one Redis Cluster slot; a project's total is the sum
//! over the queues, read in one round trip.

use std::collections::{BTreeMap, BTreeSet};

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

impl Queues {
    /// The key of queue `queue`'s open-jobs-per-project sorted set.
    fn open_key(&self, queue: &str) -> String {
        format!("{}open_by_project", self.base(queue))
    }

    /// `project`'s open jobs across `queues` (one round trip): what its quota is checked
    /// against. Exact as of the read: every script that opens or closes a job counts it.
    pub async fn open_jobs(&self, queues: &[&str], project: Uuid) -> Result<u64, QueueError> {
        let counts = self.open_by_queue(queues, &[project]).await?;
        Ok(counts.into_iter().next().map_or(0, |p| p.open_jobs))
    }

    /// Every queue's count of each of `projects` (one round trip), in the order given.
    async fn open_by_queue(
        &self,
        queues: &[&str],
        projects: &[Uuid],
    ) -> Result<Vec<ProjectOpenJobs>, QueueError> {
        if queues.is_empty() || projects.is_empty() {
            return Ok(projects
                .iter()
                .map(|p| ProjectOpenJobs {
                    project_id: *p,
                    open_jobs: 0,
                    by_queue: BTreeMap::new(),
                })
                .collect());
        }
        let mut pipe = redis::pipe();
        for p in projects {
            let member = p.to_string();
            for q in queues {
                pipe.zscore(self.open_key(q), &member);
            }
        }
        let mut conn = self.conn.clone();
        let scores: Vec<Option<f64>> = pipe.query_async(&mut conn).await?;
        Ok(projects
            .iter()
            .zip(scores.chunks(queues.len()))
            .map(|(p, row)| {
                let by_queue: BTreeMap<String, u64> = queues
                    .iter()
                    .zip(row)
                    .filter_map(|(q, s)| Some(((*q).to_owned(), count(*s)?)))
                    .collect();
                ProjectOpenJobs {
                    project_id: *p,
                    open_jobs: by_queue.values().sum(),
                    by_queue,
                }
            })
            .collect())
    }

    /// The `n` projects with the most open jobs across `queues`, most first (ties by project
    /// id), exactly.
    ///
    /// Each queue ranks its own projects, and a project's total is the sum over the queues, so
    /// the top of the sum is found with the threshold algorithm (Fagin): read the `depth` best
    /// of every queue, sum each candidate exactly over every queue, and stop when the `n`-th
    /// best candidate has at least what any project outside the candidates can have (the sum of
    /// each queue's `depth`-th score); else double `depth`. With few queues it stops at the
    /// first round unless the top projects of one queue are unlike those of another. A handful
    /// of round trips, whatever the number of projects.
    pub async fn top_projects(
        &self,
        queues: &[&str],
        n: usize,
    ) -> Result<Vec<ProjectOpenJobs>, QueueError> {
        if n == 0 || queues.is_empty() {
            return Ok(Vec::new());
        }
        let mut depth = n;
        loop {
            let mut pipe = redis::pipe();
            for q in queues {
                pipe.zrevrange_withscores(self.open_key(q), 0, depth as isize - 1);
            }
            let mut conn = self.conn.clone();
            let tops: Vec<Vec<(String, f64)>> = pipe.query_async(&mut conn).await?;
            let mut candidates = BTreeSet::new();
            // the most a project outside the candidates can have
            let mut threshold = 0;
            let mut exhausted = true;
            for top in &tops {
                if top.len() >= depth {
                    exhausted = false;
                    threshold += top.last().and_then(|(_, s)| count(Some(*s))).unwrap_or(0);
                }
                for (member, _) in top {
                    // a member that is not a UUID was not written by the scripts: left out
                    if let Ok(id) = Uuid::parse_str(member) {
                        candidates.insert(id);
                    }
                }
            }
            let candidates: Vec<Uuid> = candidates.into_iter().collect();
            let mut ranked = self.open_by_queue(queues, &candidates).await?;
            ranked.retain(|p| p.open_jobs > 0);
            ranked.sort_by(|a, b| {
                b.open_jobs
                    .cmp(&a.open_jobs)
                    .then(a.project_id.cmp(&b.project_id))
            });
            let settled = ranked.len() >= n && ranked[n - 1].open_jobs >= threshold;
            if exhausted || settled {
                ranked.truncate(n);
                return Ok(ranked);
            }
            depth *= 2;
        }
    }

    /// Every open job of `queues` (waiting, delayed, active, retrying), whatever its project:
    /// one round trip.
    pub async fn open_jobs_total(&self, queues: &[&str]) -> Result<u64, QueueError> {
        if queues.is_empty() {
            return Ok(0);
        }
        let mut pipe = redis::pipe();
        for q in queues {
            let base = self.base(q);
            for set in ["ready", "delayed", "active", "retry"] {
                pipe.zcard(format!("{base}{set}"));
            }
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
        client: redis::Client,
    }

    impl Fixture {
        fn new() -> Self {
            let url =
                std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
            let prefix = format!("test-unit-{}", &Uuid::new_v4().simple().to_string()[..12]);
            let client = redis::Client::open(url).expect("redis url");
            let queues = Queues::new(
                client.clone(),
                &prefix,
                crate::config::QueueSettings::default(),
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
                    project_id: project,
                    request_id: None,
                })
                .collect();
            self.queues.push_many(queue, &jobs).await.expect("push");
        }
    }

    impl Drop for Fixture {
        fn drop(&mut self) {
            let Ok(mut conn) = self.client.get_connection() else {
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
        assert_eq!(top.len(), 1);
        assert_eq!(top[0].project_id, p[2]);
        assert_eq!(top[0].open_jobs, 18);
        assert_eq!(
            top[0].by_queue,
            BTreeMap::from([("a".to_owned(), 9), ("b".to_owned(), 9)])
        );

        let all = f.queues.top_projects(&["a", "b"], 10).await.expect("top");
        let order: Vec<(Uuid, u64)> = all.iter().map(|p| (p.project_id, p.open_jobs)).collect();
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
        let got: Vec<(Uuid, u64)> = top.iter().map(|p| (p.project_id, p.open_jobs)).collect();
        assert_eq!(got, want);
    }
}
