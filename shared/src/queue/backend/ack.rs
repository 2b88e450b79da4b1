//! Attempts' outcomes: the middleware ([`AckLayer`]) that turns each attempt's result into its
//! outcome (completed, a retry with backoff, or dead), and the acker that writes them to Redis
//! in batches, fenced by each attempt's token so a stale attempt changes nothing.

use super::*;

pub(super) enum AckMsg {
    Outcome(Outcome),
    Flush(oneshot::Sender<()>),
}

pub(super) struct Outcome {
    pub(super) id: Uuid,
    pub(super) token: u64,
    /// The partition the job was fetched from.
    pub(super) part: usize,
    /// The job's project, as the fetch read it (the ack script finds the job's entry of the
    /// open index with it).
    pub(super) project: Option<Uuid>,
    pub(super) kind: OutcomeKind,
}

pub(super) enum OutcomeKind {
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
pub(super) struct AckSummary {
    /// Outcomes written as sent.
    pub(super) applied: usize,
    /// Outcomes of attempts whose lease had moved on: nothing written.
    pub(super) stale: usize,
    /// Failures whose job could not record them (a corrupt hash): the job went dead instead.
    pub(super) poisoned: usize,
}

impl Shared {
    /// Hands each outcome to its partition's writer (one task per partition, started at its
    /// first outcome), so a partition whose master is failing over holds back only its own
    /// outcomes; a flush is answered once every writer has written what it had.
    pub(super) async fn acker(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<AckMsg>) {
        let mut writers: HashMap<usize, mpsc::UnboundedSender<AckMsg>> = HashMap::new();
        while let Some(msg) = rx.recv().await {
            match msg {
                AckMsg::Outcome(o) => {
                    let writer = writers.entry(o.part).or_insert_with(|| {
                        let (tx, rx) = mpsc::unbounded_channel();
                        tokio::spawn(self.clone().part_acker(rx));
                        tx
                    });
                    let _ = writer.send(AckMsg::Outcome(o));
                }
                AckMsg::Flush(done) => {
                    let waits: Vec<oneshot::Receiver<()>> = writers
                        .values()
                        .map(|w| {
                            let (tx, rx) = oneshot::channel();
                            let _ = w.send(AckMsg::Flush(tx));
                            rx
                        })
                        .collect();
                    tokio::spawn(async move {
                        for w in waits {
                            let _ = w.await;
                        }
                        let _ = done.send(());
                    });
                }
            }
        }
    }

    /// Writes one partition's outcomes in batches: whatever has queued up while the previous
    /// batch was in flight goes in the next call.
    async fn part_acker(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<AckMsg>) {
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
            self.write_batch(std::mem::take(&mut batch)).await;
            for tx in flushes.drain(..) {
                let _ = tx.send(());
            }
        }
    }

    /// Writes one partition's outcomes, retrying while Redis does not answer.
    async fn write_batch(&self, mut batch: Vec<Outcome>) {
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
                    if self.stopping.load(Ordering::SeqCst) && backoff > Duration::from_secs(2) {
                        return;
                    }
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
    }

    /// Stops heartbeating the attempts whose outcome is written (a job fetched again since,
    /// under a new token, stays held).
    pub(super) fn forget(&self, written: &[Outcome]) {
        let mut held = self.held.lock().expect("held");
        for o in written {
            if held.get(&o.id).map(|l| l.token) == Some(o.token) {
                held.remove(&o.id);
            }
        }
    }

    /// Writes outcomes one per call; an outcome the script refuses even alone is dropped (its
    /// lease then expires and maintenance takes the job back). Returns the outcomes that could
    /// not be written for another reason (Redis not answering), to try again.
    pub(super) async fn write_each(&self, batch: Vec<Outcome>) -> Vec<Outcome> {
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

    /// Writes one batch of outcomes (of one partition) in one script call, and counts what the script made of
    /// each (`comet_jobs_total` only for outcomes it applied).
    pub(super) async fn write_outcomes(&self, batch: &[Outcome]) -> Result<AckSummary, QueueError> {
        let Some(first) = batch.first() else {
            return Ok(AckSummary::default());
        };
        let mut inv = self.queues.scripts.ack.key(&self.part(first.part).keys);
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
                .arg(result)
                .arg(o.project.as_ref().map_or(&[][..], |p| p.as_bytes()))
                .arg(o.id.as_bytes());
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
}

/// Middleware that turns each attempt's result into its outcome in Redis.
#[derive(Clone)]
pub struct AckLayer(pub(super) Arc<Shared>);

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

pub(super) fn is_permanent(err: &BoxDynError) -> bool {
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
    pub(super) fn finish_attempt<Res: Serialize>(
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
            part: h.part.index,
            project: h.project_id,
            kind,
        }));
    }
}
