//! On-dead hooks: what a job kind does once one of its jobs has gone dead, whatever killed it.
//!
//! A job can go dead in ways its handler never sees: the last attempt timed out or panicked,
//! or the worker holding it died and the lease expired. The queue scripts therefore record every
//! job of a hooked kind that goes dead in the queue's `dead_hooks` set, and this loop, running
//! in every worker process that runs the queue, claims those entries and calls the kind's hook
//! with the decoded payload. Delivery is at least once: a claim lasts [`CLAIM`]; a hook that
//! fails, or whose process dies, runs again after it, so hooks must be idempotent. A job retried
//! by an operator before its hook ran is dropped from the set (it is no longer dead).

use std::{sync::Arc, time::Duration};

use futures::future::BoxFuture;
use shared::{jobs::Job, queue::DeadJob};

use super::Stop;
use crate::{context::JobContext, jobs::OnDead};

/// How long a claimed hook has before it is due again (a failed or interrupted hook then runs
/// again, in this process or another).
pub const CLAIM: Duration = Duration::from_secs(30);

/// The most a hook may take (it is abandoned, and runs again after its claim, past this).
const HOOK_TIMEOUT: Duration = Duration::from_secs(20);

/// Hooks claimed per queue and pass.
const BATCH: usize = 50;

/// Why a hook did not complete.
#[derive(Debug, thiserror::Error)]
enum HookError {
    /// The dead job's payload does not decode: the hook has nothing to act on, and running it
    /// again will not help. Counted as `undecodable`, logged as an error, and dropped.
    #[error("the dead job's payload does not decode: {0}")]
    Undecodable(serde_json::Error),
    /// The hook failed; it runs again after its claim.
    #[error(transparent)]
    Failed(anyhow::Error),
}

type HookFuture = BoxFuture<'static, Result<(), HookError>>;

/// A job kind's on-dead hook, with its payload decoding done.
#[derive(Clone)]
pub struct DeadHook {
    /// The kind's queue.
    pub queue: &'static str,
    run: Arc<dyn Fn(JobContext, DeadJob) -> HookFuture + Send + Sync>,
}

impl std::fmt::Debug for DeadHook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeadHook")
            .field("queue", &self.queue)
            .finish_non_exhaustive()
    }
}

impl DeadHook {
    /// The hook `f` of job kind `J`, decoding the dead job's payload first.
    pub fn new<J: Job>(f: OnDead<J>) -> Self {
        Self {
            queue: J::QUEUE,
            run: Arc::new(move |ctx, dead| {
                Box::pin(async move {
                    let job =
                        serde_json::from_str::<J>(&dead.payload).map_err(HookError::Undecodable)?;
                    f(ctx, job, dead).await.map_err(HookError::Failed)
                })
            }),
        }
    }
}

/// Runs the hooks of `hooks` until `stop` resolves, every `period` (at once again after a full
/// batch).
pub async fn run(
    ctx: JobContext,
    hooks: Vec<DeadHook>,
    period: Duration,
    stop: Stop,
) -> anyhow::Result<()> {
    let stop = stop.requested();
    if hooks.is_empty() {
        stop.await;
        return Ok(());
    }
    tokio::pin!(stop);
    loop {
        let mut full = false;
        for hook in &hooks {
            full |= pass(&ctx, hook).await >= BATCH;
        }
        let wait = if full {
            Duration::from_millis(1)
        } else {
            period
        };
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// One claim-and-run pass over one queue; returns how many hooks it claimed.
async fn pass(ctx: &JobContext, hook: &DeadHook) -> usize {
    let claimed = match ctx.queues.claim_dead_hooks(hook.queue, BATCH, CLAIM).await {
        Ok(c) => c,
        Err(e) => {
            metrics::counter!("comet_redis_errors_total", "queue" => hook.queue, "op" => "claim_dead")
                .increment(1);
            tracing::warn!(queue = hook.queue, error = %e, "could not claim on-dead hooks");
            return 0;
        }
    };
    let n = claimed.len();
    for dead in claimed {
        let id = dead.id;
        let span = tracing::info_span!("on_dead", queue = hook.queue, job_id = %id,
            request_id = dead.request_id.as_deref().unwrap_or(""));
        let outcome = tokio::time::timeout(HOOK_TIMEOUT, (hook.run)(ctx.clone(), dead));
        let res = tracing::Instrument::instrument(outcome, span.clone()).await;
        let _entered = span.enter();
        match res {
            Ok(Ok(())) => {
                metrics::counter!("comet_dead_hooks_total", "queue" => hook.queue, "outcome" => "ok")
                    .increment(1);
                if let Err(e) = ctx.queues.dead_hook_done(hook.queue, id).await {
                    tracing::warn!(error = %e, "on-dead hook ran but could not be marked done; it runs again");
                }
            }
            Ok(Err(HookError::Undecodable(e))) => {
                metrics::counter!("comet_dead_hooks_total", "queue" => hook.queue, "outcome" => "undecodable")
                    .increment(1);
                tracing::error!(error = %e,
                    "dead job's payload does not decode: its on-dead hook cannot run and is dropped");
                if let Err(e) = ctx.queues.dead_hook_done(hook.queue, id).await {
                    tracing::warn!(error = %e, "could not drop the undecodable hook entry; it is claimed again");
                }
            }
            Ok(Err(HookError::Failed(e))) => {
                metrics::counter!("comet_dead_hooks_total", "queue" => hook.queue, "outcome" => "failed")
                    .increment(1);
                tracing::warn!(error = %format!("{e:#}"), retry_in_secs = CLAIM.as_secs(),
                    "on-dead hook failed; it runs again");
            }
            Err(_) => {
                metrics::counter!("comet_dead_hooks_total", "queue" => hook.queue, "outcome" => "timeout")
                    .increment(1);
                tracing::warn!(
                    timeout_secs = HOOK_TIMEOUT.as_secs(),
                    retry_in_secs = CLAIM.as_secs(),
                    "on-dead hook timed out; it runs again"
                );
            }
        }
    }
    n
}
