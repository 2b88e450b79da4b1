//! The one place every job kind is registered with its queue, concurrency, timeout and retries.

use std::sync::{Arc, Mutex};

use apalis::prelude::WorkerBuilderExt;
use apalis_core::{monitor::Monitor, worker::builder::WorkerBuilder};
use shared::{
    jobs::{Job, Ping},
    queue::backend::{BackendHandle, BackendOptions, QueueBackend},
};

use crate::{JobContext, jobs};

/// Backends' shutdown handles, filled as the monitor (re)builds workers.
pub type Handles = Arc<Mutex<Vec<BackendHandle>>>;

/// Whether this process runs `queue` (`WORKER_QUEUES`, default all).
fn runs(ctx: &JobContext, queue: &str) -> bool {
    ctx.settings
        .worker_queues
        .as_ref()
        .is_none_or(|qs| qs.iter().any(|q| q == queue))
}

fn options<J: Job>(ctx: &JobContext) -> BackendOptions {
    BackendOptions {
        concurrency: ctx
            .settings
            .queue_concurrency
            .get(J::QUEUE)
            .copied()
            .unwrap_or(J::POLICY.concurrency),
        policy: J::POLICY,
    }
}

/// Builds the monitor with one apalis worker per job kind this process runs.
pub fn monitor(ctx: &JobContext, process: &str) -> anyhow::Result<(Monitor, Handles)> {
    let handles: Handles = Arc::default();
    let mut monitor = Monitor::new();
    let mut registered = Vec::new();

    if runs(ctx, Ping::QUEUE) {
        let (ctx, handles, process) = (ctx.clone(), handles.clone(), process.to_owned());
        let opts = options::<Ping>(&ctx);
        registered.push(format!("{}×{}", Ping::QUEUE, opts.concurrency));
        monitor = monitor.register(move |run| {
            let name = format!("{}@{process}#{run}", Ping::QUEUE);
            let backend =
                QueueBackend::<Ping>::new(ctx.queues.clone(), Ping::QUEUE, &name, opts.clone());
            handles.lock().expect("handles").push(backend.handle());
            WorkerBuilder::new(name)
                .backend(backend)
                .concurrency(opts.concurrency)
                .timeout(Ping::POLICY.timeout)
                .catch_panic()
                .data(ctx.clone())
                .build(jobs::ping::run)
        });
    }

    if registered.is_empty() {
        anyhow::bail!(
            "WORKER_QUEUES names no known queue (known: {:?})",
            shared::jobs::QUEUES
        );
    }
    tracing::info!(queues = ?registered, "job kinds registered");
    Ok((monitor, handles))
}
