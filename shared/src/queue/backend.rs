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
    /// Completed: the result as JSON, or why it could not be serialised (no result is stored,
    /// and the reason shows as the job's last error).
    Ok(Result<String, String>),
    Retry {
        delay: Duration,
        error: String,
    },
    Dead(String),
}

impl OutcomeKind {
    /// The outcome's name in `comet_jobs_total`.
    fn metric(&self) -> &'static str {
        match self {
            OutcomeKind::Ok(_) => "completed",
            OutcomeKind::Retry { .. } => "retried",
            OutcomeKind::Dead(_) => "dead",
        }
    }
}

/// What the ack script made of one batch of outcomes.
#[derive(Debug, Default, PartialEq, Eq)]
struct AckSummary {
    /// Outcomes written as sent.
    applied: usize,
    /// Outcomes of attempts whose lease had moved on: nothing written.
    stale: usize,
    /// Failures whose job could not record them (a corrupt hash): the job went dead instead.
    poisoned: usize,
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
        | QueueError::Corrupt { .. } => true,
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
                    Ok(_) => {
                        self.forget(&batch);
                        batch.clear();
                    }
                    // One outcome the script refuses must not hold back the others (nor be
                    // retried forever while its lease is heartbeated): write them one by one.
                    Err(e) if is_refusal(&e) => {
                        tracing::warn!(queue = self.queue, error = %e, outcomes = batch.len(),
                            "the ack script refused a batch; writing its outcomes one by one");
                        batch = self.write_each(std::mem::take(&mut batch)).await;
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

    /// Stops heartbeating the attempts whose outcome is written (a job fetched again since,
    /// under a new token, stays held).
    fn forget(&self, written: &[Outcome]) {
        let mut held = self.held.lock().expect("held");
        for o in written {
            if held.get(&o.id) == Some(&o.token) {
                held.remove(&o.id);
            }
        }
    }

    /// Writes outcomes one per call; an outcome the script refuses even alone is dropped (its
    /// lease then expires and maintenance takes the job back). Returns the outcomes that could
    /// not be written for another reason (Redis not answering), to try again.
    async fn write_each(&self, batch: Vec<Outcome>) -> Vec<Outcome> {
        let mut again = Vec::new();
        for o in batch {
            let one = std::slice::from_ref(&o);
            match self.write_outcomes(one).await {
                Ok(_) => self.forget(one),
                Err(e) if is_refusal(&e) => {
                    metrics::counter!("comet_ack_refused_total", "queue" => self.queue)
                        .increment(1);
                    tracing::error!(queue = self.queue, job_id = %o.id, error = %e,
                        "the ack script refuses this outcome; dropped (the lease expires)");
                    self.forget(one);
                }
                Err(_) => again.push(o),
            }
        }
        again
    }

    /// Writes one batch of outcomes in one script call, and counts what the script made of
    /// each (`comet_jobs_total` only for outcomes it applied).
    async fn write_outcomes(&self, batch: &[Outcome]) -> Result<AckSummary, QueueError> {
        let mut inv = self.queues.scripts.ack.key(&self.base);
        inv.arg(KEPT_ERRORS)
            .arg(batch.len())
            .arg(u8::from(self.options.dead_hook));
        for o in batch {
            let (name, delay, err, result) = match &o.kind {
                OutcomeKind::Ok(Ok(r)) => ("ok", 0, "", r.as_str()),
                OutcomeKind::Ok(Err(why)) => ("ok", 0, why.as_str(), ""),
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
        let reply: Vec<String> = inv.invoke_async(&mut conn).await?;
        let (codes, mut reasons) = match reply.split_first() {
            Some((codes, reasons)) if codes.len() == batch.len() => (codes, reasons.iter()),
            _ => return Err(QueueError::Protocol(format!("ack reply {reply:?}"))),
        };
        let mut summary = AckSummary::default();
        for (o, code) in batch.iter().zip(codes.bytes()) {
            let outcome = match code {
                b'a' => {
                    summary.applied += 1;
                    o.kind.metric()
                }
                b's' => {
                    summary.stale += 1;
                    continue;
                }
                b'p' => {
                    summary.poisoned += 1;
                    let reason = reasons.next().map_or("", String::as_str);
                    metrics::counter!("comet_jobs_poisoned_total", "queue" => self.queue)
                        .increment(1);
                    tracing::error!(queue = self.queue, job_id = %o.id, reason,
                        "job hash is corrupt; the job went dead instead");
                    "dead"
                }
                _ => return Err(QueueError::Protocol(format!("ack code {code}"))),
            };
            metrics::counter!("comet_jobs_total", "queue" => self.queue, "outcome" => outcome)
                .increment(1);
        }
        if summary.stale > 0 {
            metrics::counter!("comet_stale_acks_total", "queue" => self.queue)
                .increment(summary.stale as u64);
            tracing::warn!(
                queue = self.queue,
                stale = summary.stale,
                "ignored outcomes of stale attempts"
            );
        }
        Ok(summary)
    }

    /// A copy of the jobs held now (the heartbeat sends it while the acker keeps writing).
    fn held_copy(&self) -> Vec<(Uuid, u64)> {
        let held = self.held.lock().expect("held");
        held.iter().map(|(k, v)| (*k, *v)).collect()
    }

    async fn heartbeat_loop(self: Arc<Self>) {
        let period = self.queues.settings.lease / 3;
        while self.sleep_or_stop(period).await {
            let held = self.held_copy();
            for chunk in held.chunks(OUTCOME_CHUNK) {
                if let Err(e) = self.heartbeat(chunk).await {
                    record_redis_error(self.queue, "heartbeat", &e);
                }
            }
            self.register().await;
        }
    }

    /// Extends the leases of `copy` (at most [`OUTCOME_CHUNK`] jobs, copied from the held set
    /// while the acker may have written some of their outcomes since). Returns how many leases
    /// were lost: only jobs still held under the token the script was given count (and stop
    /// being held); a job that failed and was fetched again meanwhile is held under its new
    /// token, and stays heartbeated.
    async fn heartbeat(&self, copy: &[(Uuid, u64)]) -> Result<usize, QueueError> {
        let mut inv = self.queues.scripts.heartbeat.key(&self.base);
        inv.arg(self.queues.settings.lease.as_millis() as u64);
        for (id, tok) in copy {
            inv.arg(id.to_string()).arg(tok.to_string());
        }
        let mut conn = self.queues.conn.clone();
        let lost: Vec<String> = inv.invoke_async(&mut conn).await?;
        let lost = {
            let mut held = self.held.lock().expect("held");
            lost.iter()
                .filter_map(|s| Uuid::parse_str(s).ok())
                .filter(|id| {
                    let sent = copy.iter().find(|(c, _)| c == id).map(|(_, tok)| tok);
                    let still = sent.is_some() && held.get(id) == sent;
                    if still {
                        held.remove(id);
                    }
                    still
                })
                .count()
        };
        if lost > 0 {
            metrics::counter!("comet_leases_lost_total", "queue" => self.queue)
                .increment(lost as u64);
            tracing::warn!(
                queue = self.queue,
                lost,
                "leases lost (expired while this worker was stalled); their outcomes will be ignored"
            );
        }
        Ok(lost)
    }

    /// The worker registry (for ops views, see `queue::workers`): this worker's last heartbeat
    /// and the jobs it holds in this queue; names unseen for an hour are dropped, so restarts
    /// do not grow it.
    async fn register(&self) {
        let mut conn = self.queues.conn.clone();
        let now = chrono::Utc::now().timestamp_millis();
        let key = format!("{}:workers", self.queues.prefix);
        let info = format!(
            "{}:worker:{}",
            self.queues.prefix,
            super::workers::process_of(&self.worker)
        );
        let held = self.held.lock().expect("held").len();
        let registered: Result<(), redis::RedisError> = redis::pipe()
            .zadd(&key, &*self.worker, now)
            .zrembyscore(&key, "-inf", now - 3_600_000)
            .hset(&info, format!("inflight:{}", self.queue), held)
            .pexpire(&info, 3_600_000)
            .query_async(&mut conn)
            .await;
        if let Err(e) = registered {
            record_redis_error(self.queue, "register", &e.into());
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
        let attempt = async move {
            let started = std::time::Instant::now();
            let res = fut.await.map_err(Into::into);
            if let Some(h) = handle {
                shared.finish_attempt(&h, &res, started.elapsed());
            }
            res
        };
        Box::pin(attempt.instrument(span))
    }
}

impl Shared {
    /// Turns an attempt's result into its outcome and hands it to the acker.
    fn finish_attempt<Res: Serialize>(
        &self,
        h: &JobHandle,
        res: &Result<Res, BoxDynError>,
        took: Duration,
    ) {
        self.inflight.fetch_sub(1, Ordering::SeqCst);
        let queue = self.queue;
        let kind = match res {
            Ok(v) => OutcomeKind::Ok(serde_json::to_string(v).map_err(|e| {
                metrics::counter!("comet_job_result_errors_total", "queue" => queue).increment(1);
                let why = format!("the job succeeded but its result could not be stored: {e}");
                tracing::error!(queue, job_id = %h.id, attempt = h.attempt, error = %why,
                    "job result not serialisable");
                why
            })),
            Err(e) if is_permanent(e) || h.attempt >= h.max_attempts => {
                OutcomeKind::Dead(error_text(e))
            }
            Err(e) => OutcomeKind::Retry {
                delay: e
                    .downcast_ref::<RetryAfterError>()
                    .map(|r| r.get_duration())
                    .unwrap_or_else(|| backoff_delay(&self.options.policy, h.attempt)),
                error: error_text(e),
            },
        };
        metrics::histogram!("comet_job_duration_seconds", "queue" => queue)
            .record(took.as_secs_f64());
        match &kind {
            OutcomeKind::Ok(_) => {
                tracing::debug!(queue, job_id = %h.id, attempt = h.attempt, "job completed");
            }
            OutcomeKind::Retry { delay, error } => {
                let retry_in_ms = delay.as_millis() as u64;
                tracing::warn!(queue, job_id = %h.id, attempt = h.attempt, retry_in_ms, %error,
                    "job failed; will retry");
            }
            OutcomeKind::Dead(error) => {
                tracing::error!(queue, job_id = %h.id, attempt = h.attempt, %error,
                    "job failed; dead");
            }
        }
        // `comet_jobs_total` is counted once the ack script has applied the outcome (a stale
        // attempt's outcome changes nothing and is counted as `comet_stale_acks_total`).
        let _ = self.acks.send(AckMsg::Outcome(Outcome {
            id: h.id,
            token: h.token,
            kind,
        }));
    }
}

#[cfg(test)]
mod tests {
    use redis::AsyncCommands;

    use super::*;
    use crate::queue::{JobRecord, JobState};

    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 10,
        backoff_base: Duration::from_millis(100),
        backoff_cap: Duration::from_millis(1000),
        timeout: Duration::from_secs(1),
        concurrency: 4,
        prefetch: 0,
    };

    #[test]
    fn backoff_is_spread_over_the_whole_range_from_zero_to_the_capped_ceiling() {
        for attempt in 1..=10 {
            let ceiling = (100u64 << (attempt - 1)).min(1000);
            let delays: Vec<u64> = (0..2000)
                .map(|_| backoff_delay(&POLICY, attempt).as_millis() as u64)
                .collect();
            let (min, max) = (delays.iter().min().unwrap(), delays.iter().max().unwrap());
            let mean = delays.iter().sum::<u64>() as f64 / delays.len() as f64;
            // full jitter: uniform in [0, ceiling]; neither a fixed delay nor none at all
            assert!(*max <= ceiling, "attempt {attempt}: {max} > {ceiling}");
            assert!(
                *max >= ceiling * 9 / 10,
                "attempt {attempt}: never near the ceiling"
            );
            assert!(*min <= ceiling / 10, "attempt {attempt}: never near zero");
            let half = ceiling as f64 / 2.0;
            assert!(
                (mean - half).abs() < ceiling as f64 * 0.05,
                "attempt {attempt}: mean {mean} is not about {half}"
            );
        }
    }

    /// A backend of queue `ping` under a prefix of its own, on the test Redis.
    struct Fixture {
        shared: Arc<Shared>,
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
            let options = BackendOptions {
                concurrency: 4,
                policy: POLICY,
                dead_hook: false,
            };
            let backend =
                QueueBackend::<serde_json::Value>::new(queues.clone(), "ping", "worker-a", options);
            Self {
                shared: backend.shared.clone(),
                queues,
                client,
            }
        }

        /// Writes a waiting job as the enqueue script would (the fields the scripts read).
        async fn waiting(&self) -> Uuid {
            let id = Uuid::new_v4();
            let mut conn = self.queues.connection();
            let seq: i64 = conn
                .incr(format!("{}seq", self.shared.base), 1)
                .await
                .expect("seq");
            let fields = [
                ("id", id.to_string()),
                ("kind", "ping".into()),
                ("payload", "{}".into()),
                ("state", "waiting".into()),
                ("att", "0".into()),
                ("max", "5".into()),
                ("pri", "0".into()),
                ("rs", seq.to_string()),
                ("tok", "0".into()),
            ];
            let _: () = redis::pipe()
                .hset_multiple(self.key(id), &fields)
                .zadd(format!("{}ready", self.shared.base), id.to_string(), seq)
                .query_async(&mut conn)
                .await
                .expect("job written");
            id
        }

        fn key(&self, id: Uuid) -> String {
            format!("{}job:{id}", self.shared.base)
        }

        /// Leases up to `n` jobs with the backend's own fetch; their tokens, by id.
        async fn lease(&self, n: usize) -> HashMap<Uuid, u64> {
            let (_, _, jobs) = self.shared.clone().fetch(n).await.expect("fetch");
            jobs.into_iter().map(|j| (j.id, j.token)).collect()
        }

        fn held(&self) -> HashMap<Uuid, u64> {
            self.shared.held.lock().expect("held").clone()
        }

        async fn job(&self, id: Uuid) -> JobRecord {
            self.queues
                .job("ping", id)
                .await
                .expect("job")
                .expect("exists")
        }

        async fn lease_deadline(&self, id: Uuid) -> Option<i64> {
            let mut conn = self.queues.connection();
            conn.zscore(format!("{}active", self.shared.base), id.to_string())
                .await
                .expect("zscore")
        }
    }

    /// Deletes the fixture's keys, also when its test panicked (a blocking connection: no
    /// runtime is needed in `drop`).
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

    fn outcome(id: Uuid, token: u64, kind: OutcomeKind) -> Outcome {
        Outcome { id, token, kind }
    }

    /// The chaos run's false "leases lost": the heartbeat copied the held jobs, then the acker
    /// wrote one's outcome, then the heartbeat script ran on the copy.
    #[tokio::test]
    async fn a_heartbeat_does_not_report_a_job_whose_outcome_landed_after_the_copy_as_lost() {
        let f = Fixture::new();
        let id = f.waiting().await;
        let token = f.lease(1).await[&id];
        let copy = f.shared.held_copy();

        let written = [outcome(id, token, OutcomeKind::Ok(Ok("1".into())))];
        let summary = f.shared.write_outcomes(&written).await.expect("ack");
        assert_eq!(summary.applied, 1);
        // the acker has written the outcome but not yet forgotten the job when the heartbeat runs
        assert_eq!(f.shared.heartbeat(&copy).await.expect("heartbeat"), 0);
        f.shared.forget(&written);
        assert!(f.held().is_empty());
        assert_eq!(f.job(id).await.state, JobState::Completed);
    }

    /// The chaos run's lost heartbeat: the attempt failed, its retry was due at once and this
    /// worker fetched the job again (new token) between the heartbeat's copy and its script.
    #[tokio::test]
    async fn a_job_that_failed_and_was_fetched_again_meanwhile_stays_heartbeated() {
        let f = Fixture::new();
        let id = f.waiting().await;
        let first = f.lease(1).await[&id];
        let copy = f.shared.held_copy();

        let retry = OutcomeKind::Retry {
            delay: Duration::ZERO,
            error: "boom".into(),
        };
        let written = [outcome(id, first, retry)];
        assert_eq!(
            f.shared
                .write_outcomes(&written)
                .await
                .expect("ack")
                .applied,
            1
        );
        f.shared.forget(&written);
        let second = f.lease(1).await[&id];
        assert_ne!(first, second);
        assert_eq!(f.held(), HashMap::from([(id, second)]));

        // the heartbeat's copy still has the first attempt: that attempt's lease is gone, but
        // the job is held under the second, which must stay held and heartbeated
        assert_eq!(f.shared.heartbeat(&copy).await.expect("heartbeat"), 0);
        assert_eq!(f.held(), HashMap::from([(id, second)]));
        let mut conn = f.queues.connection();
        let _: i64 = conn
            .zadd(format!("{}active", f.shared.base), id.to_string(), 0)
            .await
            .expect("deadline moved back");
        assert_eq!(
            f.shared
                .heartbeat(&f.shared.held_copy())
                .await
                .expect("heartbeat"),
            0
        );
        let deadline = f.lease_deadline(id).await.expect("still leased");
        assert!(
            deadline > chrono::Utc::now().timestamp_millis(),
            "lease extended"
        );
    }

    #[tokio::test]
    async fn a_job_whose_error_history_is_corrupt_goes_dead_alone_and_the_rest_of_its_batch_lands()
    {
        let f = Fixture::new();
        let (a, b, c) = (f.waiting().await, f.waiting().await, f.waiting().await);
        let tokens = f.lease(3).await;
        let mut conn = f.queues.connection();
        let _: i64 = conn
            .hset(f.key(b), "errors", "[{\"attempt\": 1, oops")
            .await
            .expect("corrupted");
        let retry = |error: &str| OutcomeKind::Retry {
            delay: Duration::from_secs(60),
            error: error.into(),
        };
        let batch = [
            outcome(a, tokens[&a], retry("a failed")),
            outcome(b, tokens[&b], retry("b failed")),
            outcome(c, tokens[&c], OutcomeKind::Ok(Ok("\"done\"".into()))),
        ];
        let summary = f.shared.write_outcomes(&batch).await.expect("ack");
        assert_eq!(
            summary,
            AckSummary {
                applied: 2,
                stale: 0,
                poisoned: 1
            }
        );

        use JobState;
        let (ja, jb, jc) = (f.job(a).await, f.job(b).await, f.job(c).await);
        assert_eq!((ja.state, ja.errors.len()), (JobState::Retrying, 1));
        assert_eq!(jc.state, JobState::Completed);
        assert_eq!(jc.result, Some(serde_json::json!("done")));
        assert_eq!(jb.state, JobState::Dead);
        let reason = jb.last_error.expect("a reason");
        assert!(
            reason.starts_with("corrupt job: its error history is not JSON")
                && reason.ends_with("(the attempt ended with: b failed)"),
            "{reason}"
        );
        assert_eq!(jb.errors.len(), 1, "the unreadable history is replaced");
        assert_eq!(jb.errors[0].error, reason);
        let counts = f.queues.counts("ping").await.expect("counts");
        assert_eq!(
            (
                counts.active,
                counts.retrying,
                counts.completed,
                counts.dead
            ),
            (0, 1, 1, 1)
        );
    }

    #[tokio::test]
    async fn a_waiting_job_with_a_corrupt_attempt_count_goes_dead_and_its_batch_is_leased() {
        let f = Fixture::new();
        let (bad, good) = (f.waiting().await, f.waiting().await);
        let mut conn = f.queues.connection();
        let _: i64 = conn
            .hset(f.key(bad), "att", "two")
            .await
            .expect("corrupted");
        let leased = f.lease(2).await;
        assert_eq!(leased.keys().collect::<Vec<_>>(), [&good]);
        // (the record itself does not read: its `att` is still corrupt, and says so)
        let (state, why): (String, String) = redis::cmd("HMGET")
            .arg(f.key(bad))
            .arg("state")
            .arg("last_error")
            .query_async(&mut conn)
            .await
            .expect("fields");
        assert_eq!(state, "dead");
        assert!(why.starts_with("corrupt job: its att or tok"), "{why}");
        assert!(matches!(
            f.queues.job("ping", bad).await,
            Err(QueueError::Corrupt { field: "att", .. })
        ));
        let counts = f.queues.counts("ping").await.expect("counts");
        assert_eq!((counts.waiting, counts.active, counts.dead), (0, 1, 1));
    }

    #[tokio::test]
    async fn the_acker_drops_an_outcome_the_script_refuses_and_writes_the_others() {
        let f = Fixture::new();
        let (a, b) = (f.waiting().await, f.waiting().await);
        let tokens = f.lease(2).await;
        // b's key is no longer a hash: reading it fails inside the script
        let mut conn = f.queues.connection();
        let _: () = redis::pipe()
            .del(f.key(b))
            .set(f.key(b), "not a hash")
            .query_async(&mut conn)
            .await
            .expect("b broken");
        let rx = f.shared.acks_rx.lock().expect("rx").take().expect("rx");
        tokio::spawn(f.shared.clone().acker(rx));
        for id in [b, a] {
            let kind = OutcomeKind::Ok(Ok("1".into()));
            let _ = f
                .shared
                .acks
                .send(AckMsg::Outcome(outcome(id, tokens[&id], kind)));
        }
        let (tx, flushed) = oneshot::channel();
        let _ = f.shared.acks.send(AckMsg::Flush(tx));
        tokio::time::timeout(Duration::from_secs(10), flushed)
            .await
            .expect("the batch is not retried forever")
            .expect("flushed");

        assert_eq!(f.job(a).await.state, JobState::Completed);
        assert!(
            f.held().is_empty(),
            "b is no longer heartbeated: its lease expires"
        );
    }

    #[tokio::test]
    async fn a_result_that_cannot_be_serialised_is_an_error_on_the_completed_job_not_null() {
        let f = Fixture::new();
        let id = f.waiting().await;
        let token = f.lease(1).await[&id];
        let handle = JobHandle {
            id,
            queue: "ping",
            attempt: 1,
            max_attempts: 5,
            project_id: None,
            request_id: None,
            worker: f.shared.worker.clone(),
            token,
            queues: f.queues.clone(),
        };
        // a map with non-string keys has no JSON form
        let result: Result<HashMap<(u8, u8), u8>, BoxDynError> = Ok(HashMap::from([((1, 2), 3)]));
        f.shared
            .finish_attempt(&handle, &result, Duration::from_millis(5));
        let mut rx = f.shared.acks_rx.lock().expect("rx").take().expect("rx");
        let Some(AckMsg::Outcome(o)) = rx.recv().await else {
            panic!("no outcome")
        };
        assert_eq!(f.shared.write_outcomes(&[o]).await.expect("ack").applied, 1);

        let job = f.job(id).await;
        assert_eq!(job.state, JobState::Completed);
        assert_eq!(job.result, None);
        let why = job.last_error.expect("why there is no result");
        assert!(
            why.starts_with("the job succeeded but its result could not be stored"),
            "{why}"
        );
    }

    #[test]
    fn abort_errors_are_permanent_wherever_they_sit_in_the_chain() {
        let e: BoxDynError = Box::new(AbortError::new("bad payload"));
        assert!(is_permanent(&e));
        let e: BoxDynError = "transient".into();
        assert!(!is_permanent(&e));
    }
}
