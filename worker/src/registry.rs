//! The one place every job kind is registered with its queue, concurrency, timeout and retries.

use std::sync::{Arc, Mutex};

use apalis::prelude::WorkerBuilderExt;
use apalis_core::{monitor::Monitor, worker::builder::WorkerBuilder};
use shared::{
    jobs::{Job, Ping, RevokeSessions, SendInvitation},
    queue::backend::{BackendHandle, BackendOptions, QueueBackend},
};

use crate::{JobContext, dead_hooks::DeadHook, jobs};

/// Backends' shutdown handles, filled as the monitor (re)builds workers.
pub type Handles = Arc<Mutex<Vec<BackendHandle>>>;

/// Whether this process runs `queue` (`WORKER_QUEUES`, default all).
fn runs(ctx: &JobContext, queue: &str) -> bool {
    ctx.settings
        .worker_queues
        .as_ref()
        .is_none_or(|qs| qs.iter().any(|q| q == queue))
}

fn options<J: Job>(ctx: &JobContext, dead_hook: bool) -> BackendOptions {
    BackendOptions {
        dead_hook,
        concurrency: ctx
            .settings
            .queue_concurrency
            .get(J::QUEUE)
            .copied()
            .unwrap_or(J::POLICY.concurrency),
        policy: J::POLICY,
    }
}

/// What this process runs: the apalis monitor, the backends' shutdown handles, and the
/// on-dead hooks of its kinds.
pub struct Registry {
    /// One apalis worker per job kind this process runs.
    pub monitor: Monitor,
    /// The backends' shutdown handles.
    pub handles: Handles,
    /// The on-dead hooks of the kinds this process runs.
    pub dead_hooks: Vec<DeadHook>,
}

/// Builds the monitor with one apalis worker per job kind this process runs.
pub fn monitor(ctx: &JobContext, process: &str) -> anyhow::Result<Registry> {
    let handles: Handles = Arc::default();
    let mut monitor = Monitor::new();
    let mut registered = Vec::new();
    let mut dead_hooks = Vec::new();

    // Registers job kind `$job` (if this process runs its queue) with `$handler`: its own queue
    // and backend, concurrency from `options`, its policy's timeout, panics caught; and its
    // on-dead hook if it has one. (A macro: apalis's handler bounds make a generic function far
    // harder to read.)
    macro_rules! register {
        ($job:ty, $handler:path $(, on_dead = $hook:path)?) => {
            if runs(ctx, <$job>::QUEUE) {
                let hook: Option<DeadHook> = None $(.or(Some(DeadHook::new::<$job, _, _>($hook))))?;
                let opts = options::<$job>(ctx, hook.is_some());
                dead_hooks.extend(hook);
                let (ctx, handles, process) = (ctx.clone(), handles.clone(), process.to_owned());
                registered.push(format!("{}×{}", <$job>::QUEUE, opts.concurrency));
                monitor = monitor.register(move |run| {
                    let name = format!("{}@{process}#{run}", <$job>::QUEUE);
                    let backend = QueueBackend::<$job>::new(
                        ctx.queues.clone(),
                        <$job>::QUEUE,
                        &name,
                        opts.clone(),
                    );
                    handles.lock().expect("handles").push(backend.handle());
                    WorkerBuilder::new(name)
                        .backend(backend)
                        .concurrency(opts.concurrency)
                        .timeout(<$job>::POLICY.timeout)
                        .catch_panic()
                        .data(ctx.clone())
                        .build($handler)
                });
            }
        };
    }
    register!(Ping, jobs::ping::run);
    register!(
        SendInvitation,
        jobs::send_invitation::run,
        on_dead = jobs::send_invitation::on_dead
    );
    register!(RevokeSessions, jobs::revoke_sessions::run);

    if registered.is_empty() {
        anyhow::bail!(
            "WORKER_QUEUES names no known queue (known: {:?})",
            shared::jobs::QUEUES
        );
    }
    tracing::info!(queues = ?registered, "job kinds registered");
    Ok(Registry {
        monitor,
        handles,
        dead_hooks,
    })
}
