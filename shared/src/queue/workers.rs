//! The worker registry, for ops views: which worker processes are alive, what they run and
//! how many jobs each holds.
//!
//! `<prefix>:workers` (a zset, `<queue>@<process>#<run>` → last heartbeat in ms) is written by
//! every queue backend at each heartbeat (`JOB_LEASE_SECS` / 3); `<prefix>:worker:<process>` (a
//! hash) holds what the process announced at start-up (host, pid, version, start, queues with
//! their concurrency) and, per queue, the jobs it holds (`inflight:<queue>`, updated with the
//! heartbeat). Both forget a process unseen for an hour. A process whose last heartbeat is older than three
//! heartbeat periods is shown as lost: its leases expire and maintenance takes its jobs back.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::Serialize;
use utoipa::ToSchema;

use super::{QueueError, Queues};

/// The process of a backend's worker name `<queue>@<process>#<run>` (the name itself if it has
/// another form).
pub(crate) fn process_of(worker: &str) -> &str {
    worker
        .split_once('@')
        .map(|(_, rest)| rest.rsplit_once('#').map_or(rest, |(p, _)| p))
        .unwrap_or(worker)
}

/// How long the registry keeps a process it has not heard from.
const FORGET_MS: i64 = 3_600_000;

/// What a worker process announces when it starts.
#[derive(Debug)]
pub struct WorkerAnnouncement<'a> {
    /// Its unique name.
    pub name: &'a str,
    /// Its host.
    pub host: &'a str,
    /// Its process id.
    pub pid: u32,
    /// Comet's version.
    pub version: &'a str,
    /// The queues it runs, with their concurrency.
    pub queues: &'a [(&'a str, usize)],
}

/// One queue a worker runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerQueue {
    /// The queue.
    pub queue: String,
    /// Jobs it runs at once.
    pub concurrency: u64,
    /// Jobs it holds now (running, or fetched and about to run), as of its last heartbeat.
    pub in_flight: u64,
}

/// A worker process.
#[derive(Debug, Clone, PartialEq, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorkerInfo {
    /// Its unique name (host, pid, a random suffix).
    pub name: String,
    /// Its host.
    pub host: Option<String>,
    /// Its process id.
    pub pid: Option<u32>,
    /// Comet's version it runs.
    pub version: Option<String>,
    /// When it started.
    pub started_at: Option<DateTime<Utc>>,
    /// Its last heartbeat.
    pub last_heartbeat: DateTime<Utc>,
    /// Silent for more than three heartbeat periods: its leases expire, maintenance takes its
    /// jobs back.
    pub lost: bool,
    /// The queues it runs.
    pub queues: Vec<WorkerQueue>,
}

/// One queue's share of the live fleet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, serde::Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueFleet {
    /// Live worker processes that run the queue (lost ones are not counted).
    pub processes: u64,
    /// Jobs they run at once, summed: the queue's configured concurrency across the fleet.
    pub concurrency: u64,
    /// Jobs they hold now (running, or fetched and about to run), summed from their last
    /// heartbeats.
    pub in_flight: u64,
}

impl QueueFleet {
    /// `queue`'s share of `workers`, the live ones only.
    pub fn of(workers: &[WorkerInfo], queue: &str) -> Self {
        workers
            .iter()
            .filter(|w| !w.lost)
            .flat_map(|w| w.queues.iter().filter(|q| q.queue == queue))
            .fold(Self::default(), |f, q| Self {
                processes: f.processes + 1,
                concurrency: f.concurrency + q.concurrency,
                in_flight: f.in_flight + q.in_flight,
            })
    }
}

impl Queues {
    fn worker_key(&self, name: &str) -> String {
        format!("{}:worker:{name}", self.prefix)
    }

    /// Records what a starting worker runs (kept an hour after its last heartbeat).
    pub async fn announce_worker(&self, w: &WorkerAnnouncement<'_>) -> Result<(), QueueError> {
        let key = self.worker_key(w.name);
        let queues: Vec<serde_json::Value> = w
            .queues
            .iter()
            .map(|(q, c)| serde_json::json!({ "queue": q, "concurrency": c }))
            .collect();
        let mut conn = self.conn.clone();
        let _: () = redis::pipe()
            .del(&key)
            .hset_multiple(
                &key,
                &[
                    ("host", w.host.to_owned()),
                    ("pid", w.pid.to_string()),
                    ("version", w.version.to_owned()),
                    ("started", Utc::now().timestamp_millis().to_string()),
                    ("queues", serde_json::Value::from(queues).to_string()),
                ],
            )
            .pexpire(&key, FORGET_MS)
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// The registry's worker processes, most recently heard from first. `lost_after`: the
    /// silence after which a process is shown as lost.
    pub async fn workers(&self, lost_after: Duration) -> Result<Vec<WorkerInfo>, QueueError> {
        let mut conn = self.conn.clone();
        let entries: Vec<(String, f64)> = redis::cmd("ZREVRANGE")
            .arg(format!("{}:workers", self.prefix))
            .arg(0)
            .arg(9999)
            .arg("WITHSCORES")
            .query_async(&mut conn)
            .await?;
        // one entry per queue a process runs: the process's last heartbeat is its latest
        let mut names: Vec<(String, f64)> = Vec::new();
        for (entry, beat) in entries {
            let process = process_of(&entry);
            match names.iter_mut().find(|(n, _)| n == process) {
                Some((_, last)) => *last = last.max(beat),
                None => names.push((process.to_owned(), beat)),
            }
        }
        if names.is_empty() {
            // an empty pipeline is an error to the client
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for (name, _) in &names {
            pipe.hgetall(self.worker_key(name));
        }
        let details: Vec<std::collections::HashMap<String, String>> =
            pipe.query_async(&mut conn).await?;
        let now = Utc::now();
        Ok(names
            .into_iter()
            .zip(details)
            .map(|((name, beat), d)| {
                let last = DateTime::from_timestamp_millis(beat as i64).unwrap_or(now);
                let queues = d
                    .get("queues")
                    .and_then(|q| serde_json::from_str::<Vec<serde_json::Value>>(q).ok())
                    .unwrap_or_default()
                    .into_iter()
                    .filter_map(|q| {
                        let queue = q["queue"].as_str()?.to_owned();
                        Some(WorkerQueue {
                            in_flight: d
                                .get(&format!("inflight:{queue}"))
                                .and_then(|n| n.parse().ok())
                                .unwrap_or(0),
                            concurrency: q["concurrency"].as_u64().unwrap_or(0),
                            queue,
                        })
                    })
                    .collect();
                WorkerInfo {
                    host: d.get("host").cloned(),
                    pid: d.get("pid").and_then(|p| p.parse().ok()),
                    version: d.get("version").cloned(),
                    started_at: d
                        .get("started")
                        .and_then(|s| s.parse().ok())
                        .and_then(DateTime::from_timestamp_millis),
                    lost: (now - last)
                        .to_std()
                        .is_ok_and(|silence| silence > lost_after),
                    last_heartbeat: last,
                    queues,
                    name,
                }
            })
            .collect())
    }
}
