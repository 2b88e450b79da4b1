//! The apalis `Backend` over Comet's Redis queue: what a worker process runs.
//!
//! One [`QueueBackend`] serves one job kind's queue in one worker process. It owns:
//! - leased, batched fetch (up to the free concurrency, at most `JOB_FETCH_BATCH` per call);
//! - a heartbeat that extends every lease it holds, so only a dead or stalled process loses jobs;
//! - the outcome of every attempt, written by its middleware ([`AckLayer`]) through a batching
//!   acker, fenced by the attempt's token so a stale attempt changes nothing;
//! - the retry decision: exponential backoff with full jitter, waiting in Redis (not in a slot);
//! - a maintenance pass (promote due jobs, take back expired leases, trim old jobs);
//! - wake-ups over pub/sub, with a poll as fallback, so idle workers start new jobs at once.
//!
//! Redis errors never end the worker: every loop logs, counts `comet_redis_errors_total`, backs
//! off and tries again. apalis would stop a worker whose backend returns an error, so none is
//! ever returned.

use std::{
    collections::{HashMap, VecDeque},
    future::Future,
    marker::PhantomData,
    pin::Pin,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    task::{Context, Poll},
    time::Duration,
};

use apalis_core::{
    backend::{Backend, BackendConfig},
    error::{AbortError, BoxDynError, RetryAfterError},
    task::{Task, builder::TaskBuilder, from_request::FromRequest, task_id::TaskId},
    worker::context::WorkerContext,
};
use futures::{FutureExt, StreamExt, future::BoxFuture};
use rand::Rng;
use serde::{Serialize, de::DeserializeOwned};
use tokio::sync::{Notify, mpsc, oneshot};
use tower_layer::Layer;
use tower_service::Service;
use tracing::Instrument;
use uuid::Uuid;

use super::{KEPT_ERRORS, OUTCOME_CHUNK, QueueError, Queues, RetryPolicy};

mod ack;
mod leases;
mod parts;

pub use ack::{AckLayer, AckService};
use ack::{AckMsg, Outcome, OutcomeKind};
use parts::{FetchedJob, Lease, PART_DOWN, Part, by_part};

/// Longest error text kept per attempt.
const MAX_ERROR_LEN: usize = 2000;

/// A job argument type the backend can run.
pub trait JobArgs: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static {}
impl<T: Serialize + DeserializeOwned + Send + Sync + Unpin + 'static> JobArgs for T {}

/// What a running job knows about itself: ids, attempt, and a way to report progress.
///
/// Handlers take it as an argument (`handle: JobHandle`).
#[derive(Clone, Debug)]
pub struct JobHandle {
    /// The job id.
    pub id: Uuid,
    /// The queue.
    pub queue: &'static str,
    /// This attempt's number (1-based; a lost worker's attempt counted too).
    pub attempt: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The tenant.
    pub project_id: Option<Uuid>,
    /// The request that enqueued the job.
    pub request_id: Option<String>,
    /// The name of the worker running it.
    pub worker: Arc<str>,
    token: u64,
    /// The partition it was fetched from (`queue` itself unless the queue is partitioned).
    part: Arc<Part>,
    queues: Queues,
}

impl JobHandle {
    /// Records progress (any JSON, e.g. `{"done": 40, "total": 100}`), shown by the jobs API.
    /// Only the attempt holding the job's current token can write it.
    pub async fn progress(&self, value: &serde_json::Value) -> Result<(), QueueError> {
        let mut conn = self.queues.conn.clone();
        let _: i64 = self
            .queues
            .scripts
            .progress
            .key(&self.part.keys)
            .arg(self.id.to_string())
            .arg(self.token.to_string())
            .arg(serde_json::to_string(value)?)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
    }
}

impl JobHandle {
    fn lease(&self) -> (Uuid, Lease) {
        (
            self.id,
            Lease {
                token: self.token,
                part: self.part.index,
            },
        )
    }
}

/// A handler asked for a [`JobHandle`] on a task that did not come from [`QueueBackend`].
#[derive(Debug, thiserror::Error)]
#[error("task was not fetched by the Comet queue backend")]
pub struct MissingJobHandle;

impl<A: Sync> FromRequest<Task<A>> for JobHandle {
    type Error = MissingJobHandle;
    async fn from_request(req: &Task<A>) -> Result<Self, Self::Error> {
        req.ctx()
            .data()
            .get::<JobHandle>()
            .cloned()
            .ok_or(MissingJobHandle)
    }
}

/// How one backend behaves: concurrency and the kind's retry policy.
#[derive(Debug, Clone)]
pub struct BackendOptions {
    /// Most jobs this process runs at once for the queue (also the most it leases).
    pub concurrency: usize,
    /// Retry policy of the job kind.
    pub policy: RetryPolicy,
    /// Whether the kind has an on-dead hook: a job that goes dead (last attempt failed, timed
    /// out, panicked, or its lease expired) is then queued for it in `dead_hooks`.
    pub dead_hook: bool,
}

/// State shared by a backend, its middleware and its background tasks.
struct Shared {
    queues: Queues,
    queue: &'static str,
    /// Partition 0's key prefix (the queue's own, the only one unless it is partitioned).
    #[cfg_attr(not(test), allow(dead_code))]
    base: String,
    /// The partitions fetched from, in order; only ever grows (`queue::partitions`).
    parts: std::sync::RwLock<Arc<Vec<Arc<Part>>>>,
    /// Where the next fetch starts (the partitions are taken in turn).
    next_part: AtomicUsize,
    /// The clock of the partitions' `down_until`.
    started_at: std::time::Instant,
    worker: Arc<str>,
    options: BackendOptions,
    /// Jobs this process holds a lease on (fetched, running, or acked but not yet written).
    held: Mutex<HashMap<Uuid, Lease>>,
    /// Jobs fetched and not yet finished by a handler (sizes the next fetch).
    inflight: AtomicUsize,
    notify: Notify,
    acks: mpsc::UnboundedSender<AckMsg>,
    acks_rx: Mutex<Option<mpsc::UnboundedReceiver<AckMsg>>>,
    stopping: AtomicBool,
    stop: Notify,
    started: AtomicBool,
}

/// A handle on a running backend, kept by the worker binary for shutdown.
#[derive(Clone)]
pub struct BackendHandle(Arc<Shared>);

impl BackendHandle {
    /// Gives back every lease this process still holds (jobs that did not finish within the
    /// shutdown timeout) without counting their attempt; returns how many were released.
    pub async fn release_held(&self) -> usize {
        self.0.stopping.store(true, Ordering::SeqCst);
        self.0.stop.notify_waiters();
        let held: Vec<(Uuid, Lease)> = self.0.held.lock().expect("held").drain().collect();
        self.0.release(&held).await
    }

    /// The queue this backend serves.
    pub fn queue(&self) -> &'static str {
        self.0.queue
    }
}

/// Whether Redis refused the call itself (a script error, a reply the client cannot read) rather
/// than failed to answer: sending the same call again cannot succeed.
fn is_refusal(err: &QueueError) -> bool {
    match err {
        // a script's own error (`ERR`) or a command's inside it (`WRONGTYPE`, …), not a server
        // that is busy, loading, out of memory or failing over
        QueueError::Redis(e) => e.code().is_some_and(|code| {
            !matches!(
                code,
                "BUSY"
                    | "OOM"
                    | "LOADING"
                    | "TRYAGAIN"
                    | "CLUSTERDOWN"
                    | "MASTERDOWN"
                    | "READONLY"
                    | "NOREPLICAS"
                    | "MISCONF"
                    | "NOSCRIPT"
            )
        }),
        QueueError::Payload(_)
        | QueueError::Parse(_)
        | QueueError::Protocol(_)
        | QueueError::Corrupt { .. }
        | QueueError::TooDeep { .. } => true,
        // the write landed on the master; a replica may catch up
        QueueError::NotReplicated { .. } => false,
    }
}

fn record_redis_error(queue: &str, what: &'static str, err: &QueueError) {
    metrics::counter!("comet_redis_errors_total", "queue" => queue.to_owned(), "op" => what)
        .increment(1);
    tracing::warn!(queue, op = what, error = %err, "redis call failed; retrying with backoff");
}

/// Exponential backoff with full jitter: uniform in `[0, min(cap, base * 2^(attempt-1))]`.
pub fn backoff_delay(policy: &RetryPolicy, attempt: u32) -> Duration {
    let exp = policy
        .backoff_base
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1).min(30)));
    let ceiling = exp.min(policy.backoff_cap);
    let ms = ceiling.as_millis() as u64;
    Duration::from_millis(if ms == 0 {
        0
    } else {
        rand::rng().random_range(0..=ms)
    })
}

impl Shared {
    /// The partitions to fetch from: those this process knows, and any more that
    /// [`Queues::partition_count`] says may hold jobs now.
    async fn current_parts(&self) -> Result<Arc<Vec<Arc<Part>>>, QueueError> {
        let n = self.queues.partition_count(self.queue).await?;
        let known = self.parts.read().expect("parts").clone();
        if known.len() >= n {
            return Ok(known);
        }
        let mut parts = self.parts.write().expect("parts");
        let mut grown: Vec<Arc<Part>> = parts.iter().cloned().collect();
        for i in grown.len()..n {
            grown.push(Arc::new(Part::new(&self.queues, self.queue, i)));
        }
        *parts = Arc::new(grown);
        Ok(parts.clone())
    }

    /// Leases up to `n` jobs: from one partition, the first of them (taken in turn, starting
    /// one further at each call) that has some. Answers the earliest due time of a job not
    /// ready yet (when none was leased), Redis's clock, and the jobs. A partition whose Redis
    /// does not answer is passed over while another has jobs.
    async fn fetch(
        self: Arc<Self>,
        n: usize,
    ) -> Result<(Option<i64>, i64, Vec<FetchedJob>), QueueError> {
        let parts = self.current_parts().await?;
        let start = self.next_part.fetch_add(1, Ordering::Relaxed);
        let (mut next_due, mut now, mut failed) = (None::<i64>, 0, None);
        let clock = self.started_at.elapsed().as_millis() as u64;
        // partitions whose Redis just failed wait their turn behind the others
        let order: Vec<&Arc<Part>> = {
            let ring = (0..parts.len()).map(|k| &parts[(start + k) % parts.len()]);
            let (up, down): (Vec<_>, Vec<_>) =
                ring.partition(|p| p.down_until.load(Ordering::Relaxed) <= clock);
            up.into_iter().chain(down).collect()
        };
        for part in order {
            if now != 0 && part.down_until.load(Ordering::Relaxed) > clock {
                break; // another partition answered: leave the failing one be for now
            }
            match self.fetch_part(part, n).await {
                Ok((due, at, jobs)) => {
                    now = at;
                    next_due = match (next_due, due) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    if !jobs.is_empty() {
                        return Ok((next_due, now, jobs));
                    }
                }
                Err(e) if parts.len() > 1 => {
                    record_redis_error(self.queue, "fetch", &e);
                    let until = self.started_at.elapsed() + PART_DOWN;
                    part.down_until
                        .store(until.as_millis() as u64, Ordering::Relaxed);
                    failed = Some(e);
                }
                Err(e) => return Err(e),
            }
        }
        match failed {
            // every partition failed, or those that answered had nothing
            Some(e) if now == 0 => Err(e),
            _ => Ok((next_due, now, Vec::new())),
        }
    }

    /// Leases up to `n` jobs of one partition.
    async fn fetch_part(
        &self,
        part: &Arc<Part>,
        n: usize,
    ) -> Result<(Option<i64>, i64, Vec<FetchedJob>), QueueError> {
        let mut conn = self.queues.conn.clone();
        let mut reply: Vec<redis::Value> = Vec::new();
        // the script leases nothing until the queue's jobs of the earlier layout are moved into
        // records (`migrate.rs`): at the first fetch, and again after Redis lost its data
        for _ in 0..2 {
            reply = self
                .queues
                .scripts
                .fetch
                .key(&part.keys)
                .arg(&*self.worker)
                .arg(n)
                .arg(self.queues.settings.lease.as_millis() as u64)
                .arg(1000)
                .invoke_async(&mut conn)
                .await?;
            if reply.first() != Some(&redis::Value::Int(-2)) {
                break;
            }
            self.queues
                .migrate_legacy_jobs(&super::partition_name(self.queue, part.index))
                .await?;
        }
        if reply.len() < 2 || !(reply.len() - 2).is_multiple_of(7) {
            return Err(QueueError::Protocol(format!(
                "fetch reply of {} items",
                reply.len()
            )));
        }
        let next_due: i64 = redis::from_redis_value_ref(&reply[0])?;
        let next_due = next_due.max(-1);
        let now: i64 = redis::from_redis_value_ref(&reply[1])?;
        let mut jobs = Vec::with_capacity((reply.len() - 2) / 7);
        for f in reply[2..].chunks(7) {
            let id: String = redis::from_redis_value_ref(&f[0])?;
            jobs.push(FetchedJob {
                id: Uuid::parse_str(&id).map_err(|e| QueueError::Protocol(e.to_string()))?,
                payload: redis::from_redis_value_ref(&f[1])?,
                attempt: redis::from_redis_value_ref(&f[2])?,
                max_attempts: redis::from_redis_value_ref(&f[3])?,
                token: redis::from_redis_value_ref(&f[4])?,
                project: redis::from_redis_value_ref(&f[5])?,
                request_id: redis::from_redis_value_ref(&f[6])?,
                part: part.clone(),
            });
        }
        {
            let mut held = self.held.lock().expect("held");
            for j in &jobs {
                held.insert(j.id, j.lease());
            }
        }
        self.inflight.fetch_add(jobs.len(), Ordering::SeqCst);
        Ok(((next_due >= 0).then_some(next_due), now, jobs))
    }

    /// The partition at `index` (known: a lease names only partitions fetched from).
    fn part(&self, index: usize) -> Arc<Part> {
        self.parts.read().expect("parts")[index].clone()
    }

    async fn release(&self, jobs: &[(Uuid, Lease)]) -> usize {
        let mut released = 0;
        for (part, group) in by_part(jobs, |(_, l)| l.part) {
            let part = self.part(part);
            for chunk in group.chunks(OUTCOME_CHUNK) {
                let mut inv = self.queues.scripts.release.key(&part.keys);
                for (id, lease) in chunk {
                    inv.arg(id.to_string()).arg(lease.token.to_string());
                }
                for attempt in 0..3 {
                    let mut conn = self.queues.conn.clone();
                    match inv.invoke_async::<i64>(&mut conn).await {
                        Ok(n) => {
                            released += n as usize;
                            break;
                        }
                        Err(e) => {
                            record_redis_error(self.queue, "release", &e.into());
                            tokio::time::sleep(Duration::from_millis(200 << attempt)).await;
                        }
                    }
                }
            }
        }
        released
    }

    fn start_background(self: &Arc<Self>) {
        if self.started.swap(true, Ordering::SeqCst) {
            return;
        }
        let rx = self.acks_rx.lock().expect("acks").take();
        if let Some(rx) = rx {
            tokio::spawn(self.clone().acker(rx));
        }
        tokio::spawn(self.clone().heartbeat_loop());
        tokio::spawn(self.clone().maintenance_loop());
        tokio::spawn(self.clone().wake_loop());
    }

    async fn sleep_or_stop(&self, d: Duration) -> bool {
        if self.stopping.load(Ordering::SeqCst) {
            return false;
        }
        tokio::select! {
            _ = tokio::time::sleep(d) => !self.stopping.load(Ordering::SeqCst),
            _ = self.stop.notified() => false,
        }
    }
}

type FetchFuture = BoxFuture<'static, Result<(Option<i64>, i64, Vec<FetchedJob>), QueueError>>;

enum Phase {
    Idle,
    Fetching(FetchFuture),
    Waiting(BoxFuture<'static, ()>),
}

/// The apalis backend of one queue in one worker process (see the module docs).
pub struct QueueBackend<J> {
    shared: Arc<Shared>,
    buffer: VecDeque<Task<J>>,
    phase: Phase,
    error_backoff: Duration,
    closing: Option<BoxFuture<'static, ()>>,
    _job: PhantomData<fn() -> J>,
}

impl<J: JobArgs> QueueBackend<J> {
    /// A backend for `queue`, run by a worker with the given name (unique per process).
    pub fn new(queues: Queues, queue: &'static str, worker: &str, options: BackendOptions) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        let parts: Vec<Arc<Part>> = (0..queues.partitions(queue))
            .map(|i| Arc::new(Part::new(&queues, queue, i)))
            .collect();
        Self {
            shared: Arc::new(Shared {
                base: parts[0].base.clone(),
                parts: std::sync::RwLock::new(Arc::new(parts)),
                next_part: AtomicUsize::new(0),
                started_at: std::time::Instant::now(),
                queues,
                queue,
                worker: worker.into(),
                options,
                held: Mutex::new(HashMap::new()),
                inflight: AtomicUsize::new(0),
                notify: Notify::new(),
                acks: tx,
                acks_rx: Mutex::new(Some(rx)),
                stopping: AtomicBool::new(false),
                stop: Notify::new(),
                started: AtomicBool::new(false),
            }),
            buffer: VecDeque::new(),
            phase: Phase::Idle,
            error_backoff: Duration::from_millis(100),
            closing: None,
            _job: PhantomData,
        }
    }

    /// A handle for shutdown (release of what is still held).
    pub fn handle(&self) -> BackendHandle {
        BackendHandle(self.shared.clone())
    }

    fn to_task(&self, job: FetchedJob) -> Result<Task<J>, Box<(FetchedJob, String)>> {
        let mut de = serde_json::Deserializer::from_str(&job.payload);
        let args: J = match serde_path_to_error::deserialize(&mut de) {
            Ok(a) => a,
            Err(e) => {
                let error = format!("invalid payload at `{}`: {}", e.path(), e.inner());
                return Err(Box::new((job, error)));
            }
        };
        let handle = JobHandle {
            id: job.id,
            queue: self.shared.queue,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            project_id: Uuid::parse_str(&job.project).ok(),
            request_id: (!job.request_id.is_empty()).then(|| job.request_id.clone()),
            worker: self.shared.worker.clone(),
            token: job.token,
            part: job.part.clone(),
            queues: self.shared.queues.clone(),
        };
        Ok(TaskBuilder::new(args)
            .task_id(TaskId::from_string(job.id.to_string()))
            .attempt(job.attempt.saturating_sub(1) as usize)
            .max_attempts(job.max_attempts as usize)
            .data(handle)
            .build())
    }
}

impl<J: JobArgs> Backend for QueueBackend<J> {
    type Task = Task<J>;
    type Error = QueueError;

    fn poll_ready(
        &mut self,
        _: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        Poll::Ready(Ok(()))
    }

    fn poll_next(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Option<Result<Task<J>, QueueError>>> {
        self.shared.start_background();
        loop {
            // 1. Drive the fetch or the wait in progress (a fetch runs ahead of the buffer).
            match &mut self.phase {
                Phase::Idle => {}
                Phase::Fetching(fut) => match fut.poll_unpin(cx) {
                    Poll::Pending => {}
                    Poll::Ready(Ok((next_due, now, jobs))) => {
                        self.error_backoff = Duration::from_millis(100);
                        let got = !jobs.is_empty();
                        for job in jobs {
                            match self.to_task(job) {
                                Ok(task) => self.buffer.push_back(task),
                                Err(bad) => {
                                    let (job, error) = *bad;
                                    tracing::error!(queue = self.shared.queue, job_id = %job.id,
                                        %error, "job has an unreadable payload; it goes dead");
                                    self.shared.inflight.fetch_sub(1, Ordering::SeqCst);
                                    let _ = self.shared.acks.send(AckMsg::Outcome(Outcome {
                                        id: job.id,
                                        token: job.token,
                                        part: job.part.index,
                                        project: Uuid::parse_str(&job.project).ok(),
                                        kind: OutcomeKind::Dead(error),
                                    }));
                                }
                            }
                        }
                        if got {
                            self.phase = Phase::Idle;
                        } else {
                            let mut wait = self.shared.queues.settings.idle_poll;
                            if let Some(due) = next_due {
                                let until = Duration::from_millis((due - now).max(1) as u64);
                                wait = wait.min(until);
                            }
                            let shared = self.shared.clone();
                            self.phase = Phase::Waiting(
                                async move {
                                    tokio::select! {
                                        _ = shared.notify.notified() => {}
                                        _ = tokio::time::sleep(wait) => {}
                                        _ = shared.stop.notified() => {}
                                    }
                                }
                                .boxed(),
                            );
                            continue;
                        }
                    }
                    Poll::Ready(Err(e)) => {
                        record_redis_error(self.shared.queue, "fetch", &e);
                        let wait = self.error_backoff;
                        self.error_backoff = (wait * 2).min(Duration::from_secs(5));
                        self.phase = Phase::Waiting(tokio::time::sleep(wait).boxed());
                        continue;
                    }
                },
                Phase::Waiting(fut) => {
                    if fut.poll_unpin(cx).is_ready() {
                        self.phase = Phase::Idle;
                    }
                }
            }
            // 2. Start the next fetch while there is room in the window (concurrency + prefetch).
            if matches!(self.phase, Phase::Idle) && !self.shared.stopping.load(Ordering::SeqCst) {
                let s = &self.shared;
                let window = s.options.concurrency + s.options.policy.prefetch;
                let room = window.saturating_sub(s.inflight.load(Ordering::SeqCst));
                if room > 0 {
                    let n = room.min(s.queues.settings.fetch_batch);
                    self.phase = Phase::Fetching(s.clone().fetch(n).boxed());
                    continue;
                }
            }
            // 3. Hand out a fetched task.
            if let Some(task) = self.buffer.pop_front() {
                return Poll::Ready(Some(Ok(task)));
            }
            return Poll::Pending;
        }
    }

    fn poll_close(
        &mut self,
        cx: &mut Context<'_>,
        _: &WorkerContext,
    ) -> Poll<Result<(), QueueError>> {
        if self.closing.is_none() {
            let shared = self.shared.clone();
            // Fetched but never started: give them back without using up an attempt.
            let mut unstarted: Vec<(Uuid, Lease)> = self
                .buffer
                .drain(..)
                .filter_map(|t| t.ctx().data().get::<JobHandle>().map(JobHandle::lease))
                .collect();
            // A fetch in flight has leased its jobs in Redis already: wait for it and give
            // them back too, or they would sit leased until the reaper takes them (an attempt
            // lost).
            let in_flight = match std::mem::replace(&mut self.phase, Phase::Idle) {
                Phase::Fetching(fut) => Some(fut),
                _ => None,
            };
            self.closing = Some(
                async move {
                    shared.stopping.store(true, Ordering::SeqCst);
                    shared.stop.notify_waiters();
                    if let Some(fut) = in_flight
                        && let Ok((_, _, jobs)) = fut.await
                    {
                        unstarted.extend(jobs.iter().map(|j| (j.id, j.lease())));
                    }
                    if !unstarted.is_empty() {
                        shared.inflight.fetch_sub(unstarted.len(), Ordering::SeqCst);
                        {
                            let mut held = shared.held.lock().expect("held");
                            for (id, _) in &unstarted {
                                held.remove(id);
                            }
                        }
                        let n = shared.release(&unstarted).await;
                        tracing::info!(
                            queue = shared.queue,
                            released = n,
                            "released unstarted jobs"
                        );
                    }
                    let (tx, rx) = oneshot::channel();
                    if shared.acks.send(AckMsg::Flush(tx)).is_ok() {
                        let _ = tokio::time::timeout(Duration::from_secs(10), rx).await;
                    }
                }
                .boxed(),
            );
        }
        match self.closing.as_mut().map(|f| f.poll_unpin(cx)) {
            Some(Poll::Pending) => Poll::Pending,
            _ => Poll::Ready(Ok(())),
        }
    }
}

impl<J: JobArgs> BackendConfig for QueueBackend<J> {
    type Args = J;
    type Id = String;
    type Kind = apalis_core::backend::finalize::Ephemeral;
    type Config = BackendOptions;
    type Layer = AckLayer;

    fn config(&self) -> &BackendOptions {
        &self.shared.options
    }

    fn middleware(&mut self, _: &mut WorkerContext) -> AckLayer {
        AckLayer(self.shared.clone())
    }
}

#[cfg(test)]
mod index_tests;
#[cfg(test)]
mod migrate_tests;
#[cfg(test)]
mod partition_tests;
#[cfg(test)]
mod tests;
