//! The Redis queue: Comet's own transport for apalis (see `ARCHITECTURE.md`).
//!
//! This module owns the Redis key layout, the Lua scripts that move jobs between states (their
//! sources assembled in `scripts.rs`), and
//! [`Queues`], the client the API uses to enqueue and inspect jobs. [`backend`] adapts the same
//! scripts to apalis' `Backend` trait for the worker. [`Queues`]' methods are spread by use:
//! enqueueing here, reading jobs and counts in `inspect.rs`, one-job controls in `controls.rs`,
//! the open jobs per project the scripts count (the API's quota, the ops views) in
//! `projects.rs`, a project's own view of a queue in `tenant.rs`.
//!
//! Key layout, per queue `q` under prefix `p` (every key of a queue shares the hash tag `{q}`, so
//! a Redis Cluster keeps a queue on one slot and each script touches one slot). A queue has a
//! fixed set of keys ([`QUEUE_KEYS`]) whatever it holds, and every script is given all of them
//! in `KEYS` (enqueue adds its idempotency keys): no script builds a key name it was not given
//! (`script_source_checked` makes a test fail if one does).
//!
//! | key | type | holds |
//! |---|---|---|
//! | `p:{q}:jobs` | hash | job id → the job's record (`lua/job.lua`, `record.rs`): payload, state, attempts, token, errors, progress, times, as a MessagePack array |
//! | `p:{q}:wait` | list | waiting jobs of priority 0 (nearly all), FIFO, by id as 16 bytes (`lua/job.lua`; entries of text from before are still read) |
//! | `p:{q}:ready` | zset | waiting jobs of another priority, by priority then FIFO sequence; a fetch takes those above 0, then `wait`, then those below 0 |
//! | `p:{q}:delayed` / `p:{q}:retry` | zset | jobs not due yet, by due time (ms, Redis clock) |
//! | `p:{q}:active` | zset | leased jobs, by lease deadline (ms) |
//! | `p:{q}:completed` / `dead` / `cancelled` | zset | finished jobs, by finish time, trimmed |
//! | `p:{q}:idem:<key>` | string | idempotency key → first job id, with a TTL |
//! | `p:{q}:seq`, `p:{q}:stats` | string, hash | FIFO sequence; lifetime counters |
//! | `p:{q}:open_by_project` | zset | project id → its open (waiting, delayed, active, retrying) jobs of the queue; only projects with some (`projects.rs`) |
//! | `p:{q}:project_states` | hash | `<project>\|<state>` → the project's jobs in that open state, and totals of those that finished (`tenant.rs`) |
//! | `p:{q}:open_pages` | hash | the open index: `<project><lower bound>` (16 + 22 bytes) → a page of the project's open jobs' keys `<created ms><id>` (22 bytes each, binary, ascending; about 64 a page): a project's open jobs newest first (`lua/open.lua`, `tenant.rs`) |
//! | `p:{q}:open_dir` | zset | the names of the pages of `open_pages`, all score 0: the page holding a key is the last name at or below it |
//! | `p:{q}:open_index` | zset | `<project><created ms><id>` (38 bytes) of jobs opened by a call of fewer than 8, until maintenance moves them into pages (and what an earlier Comet indexed here) |
//! | `p:{q}:dead_hooks` | zset | hooked kinds only: dead jobs whose on-dead hook has not run, by due time (a claim pushes it later) |
//! | channel `p:{q}:wake` | pub/sub | "jobs became ready", wakes idle workers at once |
//! | channel `p:outbox:wake` | pub/sub | "outbox rows committed", wakes the outbox relays (`outbox_wake.rs`) |
//! | `p:{ping}:pongs` | hash | `ping` with `record` only: executions per job id (delivery checks) |
//! | `p:{q}:archive` | zset | finished jobs (and dead jobs retried) the archiver has not yet copied to Postgres, by change time (`archive.rs`) |
//! | `p:{q}:archiver` | string | the worker process that archives the queue now, with a TTL |
//! | `p:{q}:minutes` | hash | `<m>:<counter>` → jobs enqueued, completed, retried and dead in minute `m` (Unix minutes), older than two hours pruned (`series.rs`) |
//! | `p:{q}:layout` | string | `records` once the queue's jobs of the per-job-hash layout are moved (`migrate.rs`); until then the fetch script leases nothing |
//! | `p:{q}:paused` | string | present while the queue is paused: the fetch script leases nothing (`pause.rs`) |
//! | `p:{q~i}:…` | | partition i of a partitioned queue: the keys above, of its own (`partitions.rs`) |
//! | `p:partitions` | hash | queue → its partition count, the highest any process ran with; `<q>:raised` → when it was last raised over jobs |
//! | `p:workers` | zset | `<queue>@<process>#<run>` by last heartbeat (ms); names unseen for an hour are dropped |
//! | `p:worker:<process>` | hash | what a worker process announced (host, pid, version, start, queues) and its jobs held per queue (`workers.rs`) |

mod archive;
pub mod backend;
mod controls;
mod enqueue;
pub mod fingerprint;
mod inspect;
mod migrate;
mod outbox_wake;
mod partitions;
mod pause;
mod policy;
mod projects;
mod record;
mod scripts;
mod series;
mod tenant;
mod workers;

pub use archive::{ARCHIVE_BATCH, ArchiveBatch, ArchivedJob};
pub use inspect::MAX_MERGED;
pub use outbox_wake::OutboxWaker;
pub use partitions::{MAX_PARTITIONS, partition_index, partition_name, partition_of, queue_of};
pub use policy::RetryPolicy;
pub use projects::{ProjectOpenJobs, TOP_DEPTH, TopProjects};
pub use record::{
    JOB_FIELDS, decode_fields as decode_job_fields, encode_fields as encode_job_fields,
};
use scripts::Scripts;
pub use scripts::{SCRIPT_NAMES, script_source, script_source_checked, script_source_for};
pub use series::MinuteCounts;
pub use tenant::OPEN_STATES;
pub use workers::{QueueFleet, WorkerAnnouncement, WorkerInfo, WorkerQueue};

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use redis::AsyncCommands;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    config::QueueSettings,
    redis_client::{RedisClient, RedisConn},
};

/// Most jobs one enqueue script call carries (bounded work per call).
pub const ENQUEUE_CHUNK: usize = 1000;
/// Most items one ack/heartbeat/release call carries.
pub(crate) const OUTCOME_CHUNK: usize = 500;
/// Most errors kept per job (one per attempt, the oldest dropped first).
pub(crate) const KEPT_ERRORS: usize = 25;

/// The keys of one queue every script receives in `KEYS`, in this order (the scripts name them
/// `K.<name>`): a script declares every key it touches, as Redis Cluster, key-routing proxies
/// and other Redis-compatible servers require. Enqueue adds its idempotency keys after these.
pub const QUEUE_KEYS: [&str; 21] = [
    "jobs",
    "wait",
    "ready",
    "delayed",
    "retry",
    "active",
    "completed",
    "dead",
    "cancelled",
    "seq",
    "stats",
    "open_by_project",
    "project_states",
    "open_index",
    "open_pages",
    "open_dir",
    "dead_hooks",
    "archive",
    "minutes",
    "paused",
    "layout",
];

/// The [`QUEUE_KEYS`] of the queue whose keys start with `base`.
pub fn queue_keys(base: &str) -> Vec<String> {
    QUEUE_KEYS.iter().map(|k| format!("{base}{k}")).collect()
}

/// How many connections of their own enqueues use when they `WAIT` for replicas.
const WAIT_CONNECTIONS: usize = 16;

/// Errors from the queue.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// Redis did not answer or refused the command.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// A job's payload could not be serialised.
    #[error("payload: {0}")]
    Payload(#[from] serde_json::Error),
    /// A Redis reply had an unexpected type.
    #[error("redis reply: {0}")]
    Parse(#[from] redis::ParsingError),
    /// Redis answered something the scripts never return (a bug or a foreign key).
    #[error("unexpected reply from redis: {0}")]
    Protocol(String),
    /// `REDIS_WAIT_REPLICAS` is set and fewer replicas acknowledged an enqueue in time: the
    /// jobs are on the master but could be lost with it (push again: the job id makes a second
    /// push a no-op while the job is still in Redis).
    #[error("only {acknowledged} of {wanted} Redis replicas acknowledged the write in time")]
    NotReplicated {
        /// Replicas required (`REDIS_WAIT_REPLICAS`).
        wanted: u32,
        /// Replicas that acknowledged.
        acknowledged: u32,
    },
    /// A page past what a partitioned queue's merged listing reads (each partition is read from
    /// its start to the page's end): narrow the listing (a project, the job search) instead.
    #[error("a partitioned queue lists only its first {max} jobs in a state")]
    TooDeep {
        /// The deepest position a page may reach ([`MAX_MERGED`]).
        max: usize,
    },
    /// A job hash the scripts could not have written (edited by hand, or a bug).
    #[error("corrupt job {job}: `{field}` {detail}")]
    Corrupt {
        /// `queue/id` of the job.
        job: String,
        /// The field that does not parse.
        field: &'static str,
        /// What is wrong with it.
        detail: String,
    },
}

/// The states a job moves through (see the state machine in `ARCHITECTURE.md`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Written to the Postgres outbox, not yet relayed to Redis.
    Pending,
    /// Ready to run, waiting for a worker.
    Waiting,
    /// Scheduled for a later `runAt`.
    Delayed,
    /// Leased by a worker and running.
    Active,
    /// Failed an attempt; waiting for its backoff to pass.
    Retrying,
    /// Finished successfully.
    Completed,
    /// Out of attempts or failed permanently; kept with its errors, can be retried.
    Dead,
    /// Cancelled before it ran.
    Cancelled,
}

impl JobState {
    /// Every state held in Redis, with the sorted set that indexes it.
    pub const REDIS: [(JobState, &'static str); 7] = [
        (JobState::Waiting, "ready"),
        (JobState::Delayed, "delayed"),
        (JobState::Active, "active"),
        (JobState::Retrying, "retry"),
        (JobState::Completed, "completed"),
        (JobState::Dead, "dead"),
        (JobState::Cancelled, "cancelled"),
    ];

    /// The state's name as stored and shown.
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Pending => "pending",
            JobState::Waiting => "waiting",
            JobState::Delayed => "delayed",
            JobState::Active => "active",
            JobState::Retrying => "retrying",
            JobState::Completed => "completed",
            JobState::Dead => "dead",
            JobState::Cancelled => "cancelled",
        }
    }

    /// The state named `s` (as [`JobState::as_str`] writes it), if any.
    pub fn parse(s: &str) -> Option<Self> {
        Self::REDIS
            .iter()
            .map(|(st, _)| *st)
            .chain([JobState::Pending])
            .find(|st| st.as_str() == s)
    }

    fn set(self) -> Option<&'static str> {
        Self::REDIS
            .iter()
            .find(|(s, _)| *s == self)
            .map(|(_, k)| *k)
    }
}

/// A job ready to be enqueued: what the outbox stores and the enqueue script receives.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct NewJob {
    /// Chosen at enqueue (UUID v7), so a relay that pushes twice cannot make two jobs.
    pub id: Uuid,
    /// The queue, which is also the job kind: one queue per kind, one handler per queue.
    pub queue: String,
    /// The serialised job arguments.
    pub payload: serde_json::Value,
    /// Run no earlier than this (server time); `None` runs at once.
    pub run_at: Option<DateTime<Utc>>,
    /// Higher runs first within the queue (-1000..=1000, default 0).
    pub priority: i16,
    /// Attempts before the job goes dead.
    pub max_attempts: u32,
    /// A second enqueue with the same key returns the first job's id.
    pub idempotency_key: Option<String>,
    /// On a partitioned queue, jobs with the same key go to the same partition (and wait in
    /// line there, in order); without one a job's partition follows its idempotency key, else
    /// its id (`partitions.rs`). Ignored on a queue of one partition.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_key: Option<String>,
    /// The tenant the job belongs to.
    pub project_id: Uuid,
    /// The request that enqueued it, carried into the job's logs.
    pub request_id: Option<String>,
}

/// The result of one enqueue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Enqueued {
    /// The job's id (the first job's, for a duplicate idempotency key).
    pub id: Uuid,
    /// False when an earlier job with the same id or idempotency key was returned instead.
    pub created: bool,
}

/// One failed attempt, as kept on the job.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AttemptError {
    /// The attempt number (1-based).
    pub attempt: u32,
    /// The error the attempt ended with.
    pub error: String,
    /// When it failed.
    pub at: DateTime<Utc>,
    /// The worker that ran it.
    pub worker: String,
}

/// A job as the queue knows it: what `GET /api/v1/jobs/{id}` shows.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct JobRecord {
    /// The job id.
    pub id: Uuid,
    /// The job kind.
    pub kind: String,
    /// The queue it runs on.
    pub queue: String,
    /// Its current state.
    pub state: JobState,
    /// Attempts started so far (a lost worker's attempt counts).
    pub attempts: u32,
    /// Attempts allowed before it goes dead.
    pub max_attempts: u32,
    /// Priority within the queue (higher first).
    pub priority: i16,
    /// When it is (or was) due.
    pub run_at: Option<DateTime<Utc>>,
    /// The error of every failed attempt, oldest first.
    pub errors: Vec<AttemptError>,
    /// The last error, if any.
    pub last_error: Option<String>,
    /// The job's arguments as enqueued (secrets in them are sealed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Object>)]
    pub payload: Option<serde_json::Value>,
    /// Progress reported by the running job, if any.
    #[schema(value_type = Option<Object>)]
    pub progress: Option<serde_json::Value>,
    /// What the job returned, once completed.
    #[schema(value_type = Option<Object>)]
    pub result: Option<serde_json::Value>,
    /// The tenant it belongs to.
    pub project_id: Option<Uuid>,
    /// The request that enqueued it.
    pub request_id: Option<String>,
    /// The worker that ran its latest attempt.
    pub worker: Option<String>,
    /// When it was enqueued.
    pub created_at: Option<DateTime<Utc>>,
    /// When its latest attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// When it completed, died or was cancelled.
    pub finished_at: Option<DateTime<Utc>>,
}

/// Job counts of one queue by state.
#[derive(Debug, Clone, Default, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct QueueCounts {
    /// Queue name.
    pub queue: String,
    /// Ready and waiting for a worker.
    pub waiting: u64,
    /// Scheduled for later.
    pub delayed: u64,
    /// Running now.
    pub active: u64,
    /// Waiting for a retry.
    pub retrying: u64,
    /// Completed, still in Redis: the newest `JOB_REDIS_COMPLETED` once archived, within
    /// retention (`completedTotal` counts them all; `GET /api/v1/jobs` finds them).
    pub completed: u64,
    /// Dead (within retention).
    pub dead: u64,
    /// Cancelled (within retention).
    pub cancelled: u64,
    /// Paused: workers lease nothing from it (`POST /api/v1/queues/{queue}/pause`).
    #[serde(default)]
    pub paused: bool,
    /// Its partitions (`QUEUE_PARTITIONS`; 1: not partitioned): every count here is summed
    /// over them.
    #[serde(default = "one_partition")]
    pub partitions: u32,
    /// Jobs completed since the queue's Redis keys were made (`completed` counts only those
    /// still in Redis: the newest, once archived).
    #[serde(default)]
    pub completed_total: u64,
    /// Jobs that went dead since the queue's Redis keys were made.
    #[serde(default)]
    pub dead_total: u64,
    /// How long the next job in line (the head of the ready set: highest priority, then
    /// oldest) has been ready, in seconds; 0 when none waits.
    #[serde(default)]
    pub latency_seconds: f64,
    /// The live worker processes running the queue, their configured concurrency and the jobs
    /// they hold, summed from their last heartbeats. Platform operators only (a project's
    /// view leaves it out: the fleet serves every project).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workers: Option<workers::QueueFleet>,
}

fn one_partition() -> u32 {
    1
}

/// A job that went dead, as its kind's on-dead hook sees it.
#[derive(Debug, Clone)]
pub struct DeadJob {
    /// The job's id.
    pub id: Uuid,
    /// Its payload (JSON) as enqueued.
    pub payload: String,
    /// Attempts it used.
    pub attempts: u32,
    /// The error of its last attempt.
    pub last_error: String,
    /// The request that enqueued it.
    pub request_id: Option<String>,
}

/// The client for Comet's Redis queues: enqueue, inspect, retry, cancel.
///
/// Cheap to clone; one multiplexed connection that reconnects by itself (and, with
/// `REDIS_WAIT_REPLICAS` set, the enqueues' own connections).
#[derive(Clone)]
pub struct Queues {
    pub(crate) conn: RedisConn,
    pub(crate) client: RedisClient,
    pub(crate) prefix: Arc<str>,
    pub(crate) settings: Arc<QueueSettings>,
    pub(crate) scripts: Arc<Scripts>,
    /// With `REDIS_WAIT_REPLICAS` set, the enqueues' own connections (else empty).
    wait_conns: Arc<Vec<RedisConn>>,
    next_wait_conn: Arc<std::sync::atomic::AtomicUsize>,
    /// The partition counts recorded in Redis, as last read (`partitions.rs`).
    pub(crate) recorded: Arc<partitions::Recorded>,
}

impl std::fmt::Debug for Queues {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queues")
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl Queues {
    /// The queues of `settings` (`REDIS_URL`, `REDIS_PREFIX`, the queue settings): what every
    /// process and test builds. Connects lazily, as [`Queues::new`].
    pub fn from_settings(settings: &crate::config::Settings) -> Result<Self, QueueError> {
        Self::new(
            settings.redis_client()?,
            &settings.redis.prefix,
            settings.queue.clone(),
        )
    }

    /// Connects lazily: the first command connects, and a lost connection is re-made with
    /// backoff, so a process starts (and stays up) while Redis is down.
    pub fn new(
        client: RedisClient,
        prefix: &str,
        settings: QueueSettings,
    ) -> Result<Self, QueueError> {
        let conn = client.connection()?;
        let wait_conns = if settings.wait_replicas > 0 {
            (0..WAIT_CONNECTIONS)
                .map(|_| client.connection())
                .collect::<Result<_, _>>()?
        } else {
            Vec::new()
        };
        Ok(Self {
            conn,
            wait_conns: Arc::new(wait_conns),
            next_wait_conn: Arc::default(),
            recorded: Arc::default(),
            scripts: Arc::new(Scripts::load(
                client.is_cluster(),
                settings.check_script_keys,
            )),
            client,
            prefix: prefix.into(),
            settings: Arc::new(settings),
        })
    }

    /// The key prefix (`<prefix>:{<queue>}:`) of one queue; the braces are the hash tag.
    pub fn base(&self, queue: &str) -> String {
        format!("{}:{{{}}}:", self.prefix, queue)
    }

    /// The keys every script of `queue` is given ([`QUEUE_KEYS`]).
    pub(crate) fn keys(&self, queue: &str) -> Vec<String> {
        queue_keys(&self.base(queue))
    }

    /// The shared multiplexed connection (for job handlers' own Redis work).
    pub fn connection(&self) -> RedisConn {
        self.conn.clone()
    }

    /// The client, for connections of their own (pub/sub subscriptions).
    pub fn client(&self) -> &RedisClient {
        &self.client
    }

    /// The key prefix every Comet key starts with.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The queue settings in force.
    pub fn settings(&self) -> &QueueSettings {
        &self.settings
    }

    /// Whether Redis answers (for `/ready`).
    pub async fn ping(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        conn.ping().await?;
        Ok(())
    }

    /// Claims up to `limit` dead jobs of the queue whose on-dead hook is due (from each
    /// partition in turn, up to `limit` in all). A claimed job is due again after `claim`
    /// unless [`Queues::dead_hook_done`] is called first, so a hook that fails, or whose
    /// process dies, runs again (at least once). Jobs trimmed or retried since they went dead
    /// are dropped from the hook queue.
    pub async fn claim_dead_hooks(
        &self,
        queue: &str,
        limit: usize,
        claim: Duration,
    ) -> Result<Vec<DeadJob>, QueueError> {
        let limit = limit.clamp(1, 1000);
        let mut conn = self.conn.clone();
        let mut out = Vec::new();
        for part in self.parts(queue).await? {
            if out.len() >= limit {
                break;
            }
            let flat: Vec<String> = self
                .scripts
                .claim_dead
                .key(self.keys(&part))
                .arg(limit - out.len())
                .arg(claim.as_millis() as u64)
                .invoke_async(&mut conn)
                .await?;
            for f in flat.chunks(5) {
                let [id, payload, attempts, last_error, rid] = f else {
                    return Err(QueueError::Protocol("claim_dead reply not in fives".into()));
                };
                out.push(DeadJob {
                    id: Uuid::parse_str(id)
                        .map_err(|_| QueueError::Protocol(format!("bad job id {id:?}")))?,
                    payload: payload.clone(),
                    attempts: attempts.parse().unwrap_or(0),
                    last_error: last_error.clone(),
                    request_id: Some(rid.clone()).filter(|r| !r.is_empty()),
                });
            }
        }
        Ok(out)
    }

    /// Marks a dead job's on-dead hook as done.
    pub async fn dead_hook_done(&self, queue: &str, id: Uuid) -> Result<(), QueueError> {
        let mut pipe = redis::pipe();
        for part in self.parts(queue).await? {
            pipe.zrem(format!("{}dead_hooks", self.base(&part)), id.to_string());
        }
        let mut conn = self.conn.clone();
        let _: Vec<i64> = pipe.query_async(&mut conn).await?;
        Ok(())
    }

    /// How many dead jobs of the queue still wait for their on-dead hook.
    pub async fn dead_hooks_pending(&self, queue: &str) -> Result<u64, QueueError> {
        let mut pipe = redis::pipe();
        for part in self.parts(queue).await? {
            pipe.zcard(format!("{}dead_hooks", self.base(&part)));
        }
        let mut conn = self.conn.clone();
        let n: Vec<u64> = pipe.query_async(&mut conn).await?;
        Ok(n.into_iter().sum())
    }

    /// Deletes every key under this client's prefix (tests and benchmarks only).
    pub async fn purge(&self) -> Result<u64, QueueError> {
        let mut conn = self.conn.clone();
        let pattern = format!("{}:*", self.prefix);
        let mut cursor: u64 = 0;
        let mut deleted = 0;
        loop {
            let (next, keys) = conn.scan(cursor, &pattern, 1000).await?;
            if !keys.is_empty() {
                let n: u64 = conn.del(&keys).await?;
                deleted += n;
            }
            if next == 0 {
                return Ok(deleted);
            }
            cursor = next;
        }
    }
}
