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
    queues: Queues,
}

impl JobHandle {
    /// Records progress (any JSON, e.g. `{"done": 40, "total": 100}`), shown by the jobs API.
    /// Only the attempt holding the job's current token can write it.
    pub async fn progress(&self, value: &serde_json::Value) -> Result<(), QueueError> {
        let script = redis::Script::new(
            r"if redis.call('HGET', KEYS[1], 'tok') == ARGV[1] then
                redis.call('HSET', KEYS[1], 'progress', ARGV[2]) return 1 end return 0",
        );
        let mut conn = self.queues.conn.clone();
        let _: i64 = script
            .key(format!("{}job:{}", self.queues.base(self.queue), self.id))
            .arg(self.token.to_string())
            .arg(serde_json::to_string(value)?)
            .invoke_async(&mut conn)
            .await?;
        Ok(())
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

enum AckMsg {
    Outcome(Outcome),
    Flush(oneshot::Sender<()>),
}

struct Outcome {
    id: Uuid,
    token: u64,
    kind: OutcomeKind,
}

enum OutcomeKind {
    Ok(String),
    Retry { delay: Duration, error: String },
    Dead(String),
}

/// State shared by a backend, its middleware and its background tasks.
struct Shared {
    queues: Queues,
    queue: &'static str,
    base: String,
    worker: Arc<str>,
    options: BackendOptions,
    /// Jobs this process holds a lease on (fetched, running, or acked but not yet written).
    held: Mutex<HashMap<Uuid, u64>>,
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
        let held: Vec<(Uuid, u64)> = self.0.held.lock().expect("held").drain().collect();
        self.0.release(&held).await
    }

    /// The queue this backend serves.
    pub fn queue(&self) -> &'static str {
        self.0.queue
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
    async fn fetch(
        self: Arc<Self>,
        n: usize,
    ) -> Result<(Option<i64>, i64, Vec<FetchedJob>), QueueError> {
        let mut conn = self.queues.conn.clone();
        let reply: Vec<redis::Value> = self
            .queues
            .scripts
            .fetch
            .key(&self.base)
            .arg(&*self.worker)
            .arg(n)
            .arg(self.queues.settings.lease.as_millis() as u64)
            .arg(1000)
            .invoke_async(&mut conn)
            .await?;
        if reply.len() < 2 || !(reply.len() - 2).is_multiple_of(8) {
            return Err(QueueError::Protocol(format!(
                "fetch reply of {} items",
                reply.len()
            )));
        }
        let next_due: i64 = redis::from_redis_value_ref(&reply[0])?;
        let now: i64 = redis::from_redis_value_ref(&reply[1])?;
        let mut jobs = Vec::with_capacity((reply.len() - 2) / 8);
        for f in reply[2..].chunks(8) {
            let id: String = redis::from_redis_value_ref(&f[0])?;
            jobs.push(FetchedJob {
                id: Uuid::parse_str(&id).map_err(|e| QueueError::Protocol(e.to_string()))?,
                payload: redis::from_redis_value_ref(&f[2])?,
                attempt: redis::from_redis_value_ref(&f[3])?,
                max_attempts: redis::from_redis_value_ref(&f[4])?,
                token: redis::from_redis_value_ref(&f[5])?,
                project: redis::from_redis_value_ref(&f[6])?,
                request_id: redis::from_redis_value_ref(&f[7])?,
            });
        }
        {
            let mut held = self.held.lock().expect("held");
            for j in &jobs {
                held.insert(j.id, j.token);
            }
        }
        self.inflight.fetch_add(jobs.len(), Ordering::SeqCst);
        Ok(((next_due >= 0).then_some(next_due), now, jobs))
    }

    async fn release(&self, jobs: &[(Uuid, u64)]) -> usize {
        let mut released = 0;
        for chunk in jobs.chunks(OUTCOME_CHUNK) {
            let mut inv = self.queues.scripts.release.key(&self.base);
            for (id, tok) in chunk {
                inv.arg(id.to_string()).arg(tok.to_string());
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

    /// Writes attempt outcomes in batches: whatever has queued up while the previous batch was
    /// in flight goes in the next call.
    async fn acker(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<AckMsg>) {
        let mut batch: Vec<Outcome> = Vec::new();
        let mut flushes: Vec<oneshot::Sender<()>> = Vec::new();
        while let Some(msg) = rx.recv().await {
            let mut next = Some(msg);
            while let Some(m) = next.take() {
                match m {
                    AckMsg::Outcome(o) => batch.push(o),
                    AckMsg::Flush(tx) => flushes.push(tx),
                }
                if batch.len() < OUTCOME_CHUNK {
                    next = rx.try_recv().ok();
                }
            }
            let mut backoff = Duration::from_millis(50);
            while !batch.is_empty() {
                match self.write_outcomes(&batch).await {
                    Ok(()) => {
                        let mut held = self.held.lock().expect("held");
                        for o in batch.drain(..) {
                            if held.get(&o.id) == Some(&o.token) {
                                held.remove(&o.id);
                            }
                        }
                    }
                    Err(e) => {
                        record_redis_error(self.queue, "ack", &e);
                        // Give up only when stopping with Redis gone for good: the leases then
                        // expire and the jobs run again (at-least-once).
                        if self.stopping.load(Ordering::SeqCst) && backoff > Duration::from_secs(2)
                        {
                            batch.clear();
                            break;
                        }
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(5));
                    }
                }
            }
            for tx in flushes.drain(..) {
                let _ = tx.send(());
            }
        }
    }

    async fn write_outcomes(&self, batch: &[Outcome]) -> Result<(), QueueError> {
        let mut inv = self.queues.scripts.ack.key(&self.base);
        inv.arg(KEPT_ERRORS)
            .arg(batch.len())
            .arg(u8::from(self.options.dead_hook));
        for o in batch {
            let (name, delay, err, result) = match &o.kind {
                OutcomeKind::Ok(r) => ("ok", 0, "", r.as_str()),
                OutcomeKind::Retry { delay, error } => {
                    ("retry", delay.as_millis() as u64, error.as_str(), "")
                }
                OutcomeKind::Dead(e) => ("dead", 0, e.as_str(), ""),
            };
            inv.arg(o.id.to_string())
                .arg(o.token.to_string())
                .arg(name)
                .arg(delay)
                .arg(err)
                .arg(result);
        }
        let mut conn = self.queues.conn.clone();
        let (applied, stale): (u64, u64) = inv.invoke_async(&mut conn).await?;
        if stale > 0 {
            metrics::counter!("comet_stale_acks_total", "queue" => self.queue).increment(stale);
            tracing::warn!(
                queue = self.queue,
                stale,
                "ignored outcomes of stale attempts"
            );
        }
        let _ = applied;
        Ok(())
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let period = self.queues.settings.lease / 3;
        while self.sleep_or_stop(period).await {
            let held: Vec<(Uuid, u64)> = self
                .held
                .lock()
                .expect("held")
                .iter()
                .map(|(k, v)| (*k, *v))
                .collect();
            for chunk in held.chunks(OUTCOME_CHUNK) {
                let mut inv = self.queues.scripts.heartbeat.key(&self.base);
                inv.arg(self.queues.settings.lease.as_millis() as u64);
                for (id, tok) in chunk {
                    inv.arg(id.to_string()).arg(tok.to_string());
                }
                let mut conn = self.queues.conn.clone();
                match inv.invoke_async::<Vec<String>>(&mut conn).await {
                    Ok(lost) if !lost.is_empty() => {
                        tracing::warn!(
                            queue = self.queue,
                            lost = lost.len(),
                            "leases lost (expired while this worker was stalled); their outcomes will be ignored"
                        );
                        let mut held = self.held.lock().expect("held");
                        for id in lost.iter().filter_map(|s| Uuid::parse_str(s).ok()) {
                            held.remove(&id);
                        }
                    }
                    Ok(_) => {}
                    Err(e) => record_redis_error(self.queue, "heartbeat", &e.into()),
                }
            }
            // The worker registry (for ops views): this worker's last heartbeat; names unseen for
            // an hour are dropped, so restarts do not grow it.
            let mut conn = self.queues.conn.clone();
            let now = chrono::Utc::now().timestamp_millis();
            let key = format!("{}:workers", self.queues.prefix);
            let registered: Result<(), redis::RedisError> = redis::pipe()
                .zadd(&key, &*self.worker, now)
                .zrembyscore(&key, "-inf", now - 3_600_000)
                .query_async(&mut conn)
                .await;
            if let Err(e) = registered {
                record_redis_error(self.queue, "register", &e.into());
            }
        }
    }

    async fn maintenance_loop(self: Arc<Self>) {
        let s = self.queues.settings.clone();
        let mut period = s.maintenance_interval;
        while self.sleep_or_stop(period).await {
            let mut conn = self.queues.conn.clone();
            let res: Result<(u64, u64, u64, u64), _> = self
                .queues
                .scripts
                .maintain
                .key(&self.base)
                .arg(1000)
                .arg(s.completed_retention.as_millis() as u64)
                .arg(s.dead_retention.as_millis() as u64)
                .arg(s.max_completed)
                .arg(KEPT_ERRORS)
                .arg(u8::from(self.options.dead_hook))
                .invoke_async(&mut conn)
                .await;
            match res {
                Ok((promoted, reaped, died, trimmed)) => {
                    if reaped > 0 {
                        metrics::counter!("comet_jobs_lease_expired_total", "queue" => self.queue)
                            .increment(reaped);
                        tracing::warn!(
                            queue = self.queue,
                            reaped,
                            dead = died,
                            "took back jobs whose worker stopped heartbeating"
                        );
                    }
                    // A full pass means more is due: go again at once.
                    period = if promoted.max(reaped).max(trimmed) >= 1000 {
                        Duration::from_millis(1)
                    } else {
                        s.maintenance_interval
                    };
                }
                Err(e) => {
                    record_redis_error(self.queue, "maintain", &e.into());
                    period = s.maintenance_interval;
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

    /// Listens on the queue's wake channel; reconnects with backoff and wakes the fetcher after
    /// every reconnect (a message may have been missed meanwhile).
    async fn wake_loop(self: Arc<Self>) {
        let channel = format!("{}wake", self.base);
        let mut backoff = Duration::from_millis(100);
        loop {
            if self.stopping.load(Ordering::SeqCst) {
                return;
            }
            let sub = async {
                let mut pubsub = self.queues.client.get_async_pubsub().await?;
                pubsub.subscribe(&channel).await?;
                Ok::<_, redis::RedisError>(pubsub)
            };
            match tokio::time::timeout(Duration::from_secs(5), sub).await {
                Ok(Ok(mut pubsub)) => {
                    backoff = Duration::from_millis(100);
                    self.notify.notify_one();
                    let mut stream = pubsub.on_message();
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

struct FetchedJob {
    id: Uuid,
    payload: String,
    attempt: u32,
    max_attempts: u32,
    token: u64,
    project: String,
    request_id: String,
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
        let base = queues.base(queue);
        Self {
            shared: Arc::new(Shared {
                queues,
                queue,
                base,
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
            let mut unstarted: Vec<(Uuid, u64)> = self
                .buffer
                .drain(..)
                .filter_map(|t| t.ctx().data().get::<JobHandle>().map(|h| (h.id, h.token)))
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
                        unstarted.extend(jobs.iter().map(|j| (j.id, j.token)));
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

/// Middleware that turns each attempt's result into its outcome in Redis.
#[derive(Clone)]
pub struct AckLayer(Arc<Shared>);

impl<S> Layer<S> for AckLayer {
    type Service = AckService<S>;
    fn layer(&self, inner: S) -> AckService<S> {
        AckService {
            inner,
            shared: self.0.clone(),
        }
    }
}

/// See [`AckLayer`].
#[derive(Clone)]
pub struct AckService<S> {
    inner: S,
    shared: Arc<Shared>,
}

fn error_text(err: &BoxDynError) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    if text.len() > MAX_ERROR_LEN {
        let mut cut = MAX_ERROR_LEN;
        while !text.is_char_boundary(cut) {
            cut -= 1;
        }
        text.truncate(cut);
        text.push('…');
    }
    text
}

fn is_permanent(err: &BoxDynError) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err.as_ref());
    while let Some(e) = cur {
        if e.is::<AbortError>() {
            return true;
        }
        cur = e.source();
    }
    false
}

impl<S, J, Res> Service<Task<J>> for AckService<S>
where
    S: Service<Task<J>, Response = Res>,
    S::Error: Into<BoxDynError>,
    S::Future: Send + 'static,
    Res: Serialize + Send + 'static,
    J: Send + 'static,
{
    type Response = Res;
    type Error = BoxDynError;
    type Future = Pin<Box<dyn Future<Output = Result<Res, BoxDynError>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), BoxDynError>> {
        self.inner.poll_ready(cx).map_err(Into::into)
    }

    fn call(&mut self, task: Task<J>) -> Self::Future {
        let handle = task.ctx().data().get::<JobHandle>().cloned();
        let shared = self.shared.clone();
        let span = match &handle {
            Some(h) => tracing::info_span!("job", queue = shared.queue, job_id = %h.id,
                attempt = h.attempt, request_id = h.request_id.as_deref().unwrap_or("")),
            None => tracing::info_span!("job", queue = shared.queue),
        };
        let fut = self.inner.call(task);
        Box::pin(
            async move {
            let started = std::time::Instant::now();
            let res = fut.await.map_err(Into::into);
            let Some(h) = handle else { return res };
            shared.inflight.fetch_sub(1, Ordering::SeqCst);
            let queue = shared.queue;
            let kind = match &res {
                Ok(v) => {
                    OutcomeKind::Ok(serde_json::to_string(v).unwrap_or_else(|_| "null".into()))
                }
                Err(e) if is_permanent(e) => OutcomeKind::Dead(error_text(e)),
                Err(e) if h.attempt >= h.max_attempts => OutcomeKind::Dead(error_text(e)),
                Err(e) => {
                    let delay = e
                        .downcast_ref::<RetryAfterError>()
                        .map(|r| r.get_duration())
                        .unwrap_or_else(|| backoff_delay(&shared.options.policy, h.attempt));
                    OutcomeKind::Retry {
                        delay,
                        error: error_text(e),
                    }
                }
            };
            let outcome = match &kind {
                OutcomeKind::Ok(_) => "completed",
                OutcomeKind::Retry { .. } => "retried",
                OutcomeKind::Dead(_) => "dead",
            };
            metrics::counter!("comet_jobs_total", "queue" => queue, "outcome" => outcome)
                .increment(1);
            metrics::histogram!("comet_job_duration_seconds", "queue" => queue)
                .record(started.elapsed().as_secs_f64());
            match &kind {
                OutcomeKind::Ok(_) => {
                    tracing::debug!(queue, job_id = %h.id, attempt = h.attempt, "job completed")
                }
                OutcomeKind::Retry { delay, error } => tracing::warn!(queue, job_id = %h.id,
                    attempt = h.attempt, retry_in_ms = delay.as_millis() as u64, %error, "job failed; will retry"),
                OutcomeKind::Dead(error) => tracing::error!(queue, job_id = %h.id,
                    attempt = h.attempt, %error, "job failed; dead"),
            }
            let _ = shared.acks.send(AckMsg::Outcome(Outcome {
                id: h.id,
                token: h.token,
                kind,
            }));
            res
            }
            .instrument(span),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_stays_within_the_exponential_ceiling_and_the_cap() {
        let p = RetryPolicy {
            max_attempts: 10,
            backoff_base: Duration::from_millis(100),
            backoff_cap: Duration::from_millis(1000),
            timeout: Duration::from_secs(1),
            concurrency: 1,
            prefetch: 0,
        };
        for attempt in 1..=10 {
            let ceiling = (100u64 << (attempt - 1)).min(1000);
            for _ in 0..200 {
                let d = backoff_delay(&p, attempt).as_millis() as u64;
                assert!(d <= ceiling, "attempt {attempt}: {d} > {ceiling}");
            }
        }
        // full jitter: delays spread over the range rather than sitting at the ceiling
        let spread: std::collections::HashSet<u128> =
            (0..200).map(|_| backoff_delay(&p, 5).as_millis()).collect();
        assert!(spread.len() > 50);
    }

    #[test]
    fn abort_errors_are_permanent_wherever_they_sit_in_the_chain() {
        let e: BoxDynError = Box::new(AbortError::new("bad payload"));
        assert!(is_permanent(&e));
        let e: BoxDynError = "transient".into();
        assert!(!is_permanent(&e));
    }
}
