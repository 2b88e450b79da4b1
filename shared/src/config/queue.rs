//! The Redis queue (shared by the API, which enqueues and inspects, and the worker, which runs)
//! and the worker process's own settings.

use std::{collections::HashMap, time::Duration};

use super::{ConfigError, Env, RateLimit};

/// Settings of the Redis queue.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// `JOB_LEASE_SECS`: a fetched job's lease; heartbeats extend it every third of it (default 15).
    pub lease: Duration,
    /// `JOB_COMPLETED_RETENTION_SECS`: how long finished jobs stay visible (default 86400).
    pub completed_retention: Duration,
    /// `JOB_DEAD_RETENTION_SECS`: how long dead and cancelled jobs are kept (default 604800).
    pub dead_retention: Duration,
    /// `JOB_MAX_COMPLETED`: completed jobs kept in Redis per queue at most, archived or not
    /// (default 100000): the bound when the archiver is down or behind.
    pub max_completed: u64,
    /// `JOB_REDIS_COMPLETED`: completed jobs kept in Redis per queue once archived to Postgres
    /// (default 1000); the archive holds the rest (`GET /api/v1/jobs`).
    pub redis_completed: u64,
    /// `JOB_ARCHIVE_MS`: how often a worker's archiver copies finished jobs to Postgres
    /// (default 500).
    pub archive_interval: Duration,
    /// `JOB_DEAD_ALERT_WINDOW_SECS`: dead jobs of one project, queue and error fingerprint are
    /// counted per window of this length, and each window raises one `job.dead` event with the
    /// count once it has closed (default 60, at least 1).
    pub dead_alert_window: Duration,
    /// `JOB_IDEMPOTENCY_TTL_SECS`: how long an idempotency key maps to its job (default 86400).
    pub idempotency_ttl: Duration,
    /// `JOB_MAINTENANCE_MS`: period of the promote/reap/trim pass (default 1000).
    pub maintenance_interval: Duration,
    /// `JOB_IDLE_POLL_MS`: an idle worker re-checks its queue at least this often (default 1000).
    pub idle_poll: Duration,
    /// `JOB_FETCH_BATCH`: most jobs one fetch leases (default 100).
    pub fetch_batch: usize,
    /// `JOB_MAX_DELAY_SECS`: how far ahead a job may be scheduled (default 90 days).
    pub max_delay: Duration,
    /// `RATE_LIMIT_ENQUEUE_PER_PROJECT`: jobs a project may enqueue through the API per window
    /// (default `200/1`).
    pub enqueue_per_project: RateLimit,
    /// `JOB_MAX_OPEN_PER_PROJECT`: most open jobs (waiting, delayed, running, retrying, or
    /// still in the outbox) a project may have before the API refuses to enqueue more (default
    /// 100000, at least 1).
    pub max_open_per_project: u64,
    /// `REDIS_WAIT_REPLICAS`: replicas that must have an enqueue before it counts as done
    /// (Redis `WAIT`; default 0: off). An enqueue that fewer replicas acknowledged within
    /// `REDIS_WAIT_TIMEOUT_MS` fails although the master has its jobs (the API answers 503, the
    /// outbox relay keeps the row and pushes it again: a no-op while the job is in Redis).
    /// Outcomes do not wait: losing one re-runs its job rather than losing it.
    pub wait_replicas: u32,
    /// `REDIS_WAIT_TIMEOUT_MS`: how long an enqueue waits for those replicas (default 1000,
    /// 1 to 4000: below the 5 s reply timeout).
    pub wait_timeout: Duration,
    /// `QUEUE_CHECK_SCRIPT_KEYS`: load the queue scripts in their checking form, which fails a
    /// script that touches a key it was not given in `KEYS` (`queue::script_source_checked`;
    /// default false). The test harness always sets it; it costs a `COMMAND GETKEYS` per Redis
    /// command a script runs, so leave it off in production.
    pub check_script_keys: bool,
    /// `QUEUE_PARTITIONS`: queues split into partitions, `process_event=4,ping=2` (1 to 64 each;
    /// default 1: unpartitioned). Each partition is a queue of its own keys and Redis Cluster
    /// slot; producers spread jobs over them, workers fetch from them in turn, and every view
    /// shows one queue (`queue::partitions`). The highest count any process was configured
    /// with is recorded in Redis and used by all, so it can be raised at any time (set it on
    /// every process) and only grows (README, "Partitioned queues").
    pub partitions: HashMap<String, usize>,
}

impl Default for QueueSettings {
    /// The defaults, as an environment without any `JOB_*` variable gives them.
    fn default() -> Self {
        Self::from_env(&Env::empty()).expect("the queue defaults are valid")
    }
}

impl QueueSettings {
    pub(super) fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let queue = Self {
            lease: env.secs("JOB_LEASE_SECS", 15)?,
            completed_retention: env.secs("JOB_COMPLETED_RETENTION_SECS", 86_400)?,
            dead_retention: env.secs("JOB_DEAD_RETENTION_SECS", 7 * 86_400)?,
            max_completed: env.parse("JOB_MAX_COMPLETED", 100_000)?,
            redis_completed: env.parse("JOB_REDIS_COMPLETED", 1000)?,
            archive_interval: Duration::from_millis(env.at_least("JOB_ARCHIVE_MS", 500, 10)?),
            dead_alert_window: Duration::from_secs(env.at_least(
                "JOB_DEAD_ALERT_WINDOW_SECS",
                60,
                1,
            )?),
            idempotency_ttl: Duration::from_secs(env.at_least(
                "JOB_IDEMPOTENCY_TTL_SECS",
                86_400,
                1,
            )?),
            maintenance_interval: Duration::from_millis(env.at_least(
                "JOB_MAINTENANCE_MS",
                1000,
                10,
            )?),
            idle_poll: Duration::from_millis(env.at_least("JOB_IDLE_POLL_MS", 1000, 10)?),
            fetch_batch: env.parse("JOB_FETCH_BATCH", 100)?,
            max_delay: Duration::from_secs(env.at_least("JOB_MAX_DELAY_SECS", 90 * 86_400, 1)?),
            enqueue_per_project: env.parse(
                "RATE_LIMIT_ENQUEUE_PER_PROJECT",
                RateLimit::per_secs(200, 1),
            )?,
            max_open_per_project: env.at_least("JOB_MAX_OPEN_PER_PROJECT", 100_000, 1)?,
            wait_replicas: env.parse("REDIS_WAIT_REPLICAS", 0)?,
            wait_timeout: Duration::from_millis(env.at_least("REDIS_WAIT_TIMEOUT_MS", 1000, 1)?),
            check_script_keys: env.parse("QUEUE_CHECK_SCRIPT_KEYS", false)?,
            partitions: per_queue(env, "QUEUE_PARTITIONS", 1..=crate::queue::MAX_PARTITIONS)?,
        };
        if queue.lease < Duration::from_secs(3) {
            return Err(env.invalid("JOB_LEASE_SECS", "must be at least 3"));
        }
        if queue.wait_timeout > Duration::from_millis(4000) {
            return Err(env.invalid(
                "REDIS_WAIT_TIMEOUT_MS",
                "must be at most 4000 (below the 5 s reply timeout)",
            ));
        }
        if queue.fetch_batch == 0 || queue.fetch_batch > 1000 {
            return Err(env.invalid("JOB_FETCH_BATCH", "must be between 1 and 1000"));
        }
        Ok(queue)
    }
}

/// Settings of a worker process.
#[derive(Debug, Clone)]
pub struct WorkerSettings {
    /// `WORKER_PORT`: the worker's health/metrics port (default 9090; 0 picks a free one).
    pub port: u16,
    /// `SHUTDOWN_TIMEOUT_SECS`: how long a stopping worker lets running jobs finish (default 30).
    pub shutdown_timeout: Duration,
    /// `OUTBOX_POLL_MS`: how often the outbox relay polls when no wake arrives (default 1000).
    pub outbox_poll: Duration,
    /// `WORKER_QUEUES`: comma list of queues this worker process runs (default: all; checked
    /// against the job kinds at start-up).
    pub queues: Option<Vec<String>>,
    /// `QUEUE_CONCURRENCY`: per-queue concurrency overrides, `ping=64,send_invitation=8`.
    pub concurrency: HashMap<String, usize>,
}

impl WorkerSettings {
    pub(super) fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let queues = env
            .get("WORKER_QUEUES")
            .map(|_| env.list("WORKER_QUEUES").collect());
        let concurrency = per_queue(env, "QUEUE_CONCURRENCY", 1..=usize::MAX)?;
        Ok(Self {
            port: env.parse("WORKER_PORT", 9090)?,
            shutdown_timeout: env.secs("SHUTDOWN_TIMEOUT_SECS", 30)?,
            outbox_poll: Duration::from_millis(env.at_least("OUTBOX_POLL_MS", 1000, 10)?),
            queues,
            concurrency,
        })
    }
}

/// A `queue=number` list (`ping=64,send_invitation=8`), each number within `range`.
fn per_queue(
    env: &Env<'_>,
    name: &'static str,
    range: std::ops::RangeInclusive<usize>,
) -> Result<HashMap<String, usize>, ConfigError> {
    let mut out = HashMap::new();
    for pair in env.list(name) {
        let parsed = pair
            .split_once('=')
            .and_then(|(q, n)| Some((q.trim().to_owned(), n.trim().parse::<usize>().ok()?)))
            .filter(|(q, n)| !q.is_empty() && range.contains(n));
        let Some((q, n)) = parsed else {
            let number = if *range.end() == usize::MAX {
                format!("at least {}", range.start())
            } else {
                format!("from {} to {}", range.start(), range.end())
            };
            return Err(env.invalid(
                name,
                format!("{pair:?}: expected queue=number, the number {number}"),
            ));
        };
        out.insert(q, n);
    }
    Ok(out)
}
