//! The one place every job kind is registered with its queue, concurrency, timeout and retries.
//!
//! [`crate::jobs`] registers every kind of [`shared::with_job_kinds!`] through a [`Registrar`];
//! the registrar refuses, at start-up and with a message naming the kind, a kind the list lacks
//! or a kind registered twice, and [`monitor`] then checks that every kind of the list was
//! registered and that `WORKER_QUEUES` names only known queues.

use std::{
    any::Any,
    sync::{Arc, Mutex},
};

use apalis::{
    layers::catch_panic::{CatchPanicLayer, PanicError},
    prelude::WorkerBuilderExt,
};
use apalis_core::{
    error::BoxDynError, monitor::Monitor, task::data::Data, worker::builder::WorkerBuilder,
};
use shared::{
    jobs::Kind,
    queue::backend::{BackendHandle, BackendOptions, JobHandle, QueueBackend},
};

use crate::{context::JobContext, jobs::Handler, services::dead_hooks::DeadHook};

/// Backends' shutdown handles, filled as the monitor (re)builds workers.
pub type Handles = Arc<Mutex<Vec<BackendHandle>>>;

/// What this process runs: the apalis monitor, the backends' shutdown handles, and the
/// on-dead hooks of its kinds.
pub struct Registry {
    /// One apalis worker per job kind this process runs.
    pub monitor: Monitor,
    /// The backends' shutdown handles.
    pub handles: Handles,
    /// The on-dead hooks of the kinds this process runs.
    pub dead_hooks: Vec<DeadHook>,
    /// The queues this process runs, with their concurrency.
    pub queues: Vec<(&'static str, usize)>,
}

/// Collects the registrations of one process: see the module docs.
pub struct Registrar<'a> {
    ctx: &'a JobContext,
    process: &'a str,
    known: &'a [Kind],
    monitor: Option<Monitor>,
    handles: Handles,
    dead_hooks: Vec<DeadHook>,
    /// Every kind registered so far (run here or not).
    declared: Vec<&'static str>,
    /// The queues this process runs, with their concurrency.
    running: Vec<(&'static str, usize)>,
}

/// Turns a caught panic into the error of a failed attempt.
pub type PanicHandler = fn(&Box<dyn Any + Send>) -> PanicError;

/// The panic guard every kind runs under: a panic becomes an ordinary failed attempt, retried
/// while attempts are left (apalis's own `catch_panic` wraps it in an `AbortError`, which
/// would send the job dead at once, on the assumption that handlers are pure).
pub fn catch_panics() -> CatchPanicLayer<PanicHandler, PanicError> {
    fn retryable(panic: &Box<dyn Any + Send>) -> PanicError {
        let message = panic
            .downcast_ref::<&str>()
            .map(|s| (*s).to_owned())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a panic without a message".to_owned());
        PanicError(format!("the handler panicked: {message}"))
    }
    CatchPanicLayer::with_panic_handler(retryable)
}

/// The apalis handler of every kind: runs the kind's [`Handler`].
async fn handle<J: Handler>(
    job: J,
    ctx: Data<JobContext>,
    handle: JobHandle,
) -> Result<J::Output, BoxDynError> {
    job.run(&ctx, &handle).await
}

impl<'a> Registrar<'a> {
    /// A registrar for the kinds of `known` (the list, or a test's own).
    pub fn new(ctx: &'a JobContext, process: &'a str, known: &'a [Kind]) -> Self {
        Self {
            ctx,
            process,
            known,
            monitor: Some(Monitor::new()),
            handles: Arc::default(),
            dead_hooks: Vec::new(),
            declared: Vec::new(),
            running: Vec::new(),
        }
    }

    /// Whether this process runs `queue` (`WORKER_QUEUES`, default all).
    fn runs(&self, queue: &str) -> bool {
        self.ctx
            .settings
            .worker
            .queues
            .as_ref()
            .is_none_or(|qs| qs.iter().any(|q| q == queue))
    }

    /// Registers job kind `J`: its own queue and backend, its concurrency (`QUEUE_CONCURRENCY`
    /// or the policy's), its policy's timeout, panics caught, and its on-dead hook. Skipped
    /// (but still counted as declared) when `WORKER_QUEUES` leaves the kind out.
    pub fn register<J: Handler>(&mut self) -> anyhow::Result<()> {
        if !self.known.iter().any(|k| k.queue == J::QUEUE) {
            anyhow::bail!(
                "job kind `{}` is registered but not in the list of job kinds \
                 (shared::with_job_kinds!); add it there",
                J::QUEUE
            );
        }
        if self.declared.contains(&J::QUEUE) {
            anyhow::bail!("job kind `{}` is registered twice", J::QUEUE);
        }
        self.declared.push(J::QUEUE);
        if !self.runs(J::QUEUE) {
            return Ok(());
        }
        let settings = &self.ctx.settings;
        let opts = BackendOptions {
            dead_hook: J::ON_DEAD.is_some(),
            concurrency: settings
                .worker
                .concurrency
                .get(J::QUEUE)
                .copied()
                .unwrap_or(J::POLICY.concurrency),
            policy: J::POLICY,
        };
        self.dead_hooks.extend(J::ON_DEAD.map(DeadHook::new::<J>));
        self.running.push((J::QUEUE, opts.concurrency));
        let (ctx, handles, process) = (
            self.ctx.clone(),
            self.handles.clone(),
            self.process.to_owned(),
        );
        let monitor = self.monitor.take().unwrap_or_default();
        self.monitor = Some(monitor.register(move |run| {
            let name = format!("{}@{process}#{run}", J::QUEUE);
            let backend = QueueBackend::<J>::new(ctx.queues.clone(), J::QUEUE, &name, opts.clone());
            handles.lock().expect("handles").push(backend.handle());
            WorkerBuilder::new(name)
                .backend(backend)
                .concurrency(opts.concurrency)
                .timeout(J::POLICY.timeout)
                .layer(catch_panics())
                .data(ctx.clone())
                .build(handle::<J>)
        }));
        Ok(())
    }

    /// Checks the registrations against the list and `WORKER_QUEUES`, and hands over what this
    /// process runs.
    pub fn finish(self) -> anyhow::Result<Registry> {
        let missing: Vec<_> = self
            .known
            .iter()
            .map(|k| k.queue)
            .filter(|q| !self.declared.contains(q))
            .collect();
        if !missing.is_empty() {
            anyhow::bail!("job kinds without a registered handler: {missing:?}");
        }
        if let Some(wanted) = &self.ctx.settings.worker.queues {
            let unknown: Vec<_> = wanted
                .iter()
                .filter(|q| !self.declared.contains(&q.as_str()))
                .collect();
            if !unknown.is_empty() {
                anyhow::bail!(
                    "WORKER_QUEUES names unknown queues {unknown:?} (known: {:?})",
                    self.declared
                );
            }
        }
        if self.running.is_empty() {
            anyhow::bail!("this worker runs no queue (WORKER_QUEUES is empty)");
        }
        let running: Vec<String> = self
            .running
            .iter()
            .map(|(q, c)| format!("{q}×{c}"))
            .collect();
        tracing::info!(queues = ?running, "job kinds registered");
        Ok(Registry {
            monitor: self.monitor.unwrap_or_default(),
            handles: self.handles,
            dead_hooks: self.dead_hooks,
            queues: self.running,
        })
    }
}

/// Registers every kind of the list with `registrar`, in the list's order.
macro_rules! register_each {
    ($($module:ident::$kind:ident),* $(,)?) => {
        fn register_all(registrar: &mut Registrar<'_>) -> anyhow::Result<()> {
            $(registrar.register::<shared::jobs::$kind>()?;)*
            Ok(())
        }
    };
}

shared::with_job_kinds!(register_each);

/// Builds the monitor with one apalis worker per job kind this process runs.
pub fn monitor(ctx: &JobContext, process: &str) -> anyhow::Result<Registry> {
    let mut registrar = Registrar::new(ctx, process, shared::jobs::KINDS);
    register_all(&mut registrar)?;
    registrar.finish()
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use shared::{
        config::Settings,
        jobs::{Kind, Ping, RevokeSessions, SendInvitation},
        queue::Queues,
    };

    use super::*;

    /// A context that connects to nothing (pool and queues are lazy).
    fn ctx(worker_queues: Option<&str>) -> JobContext {
        let vars = [
            ("DATABASE_URL", Some("postgres://127.0.0.1:1/none")),
            ("REDIS_URL", Some("redis://127.0.0.1:1")),
            ("JWT_SECRET", Some("0123456789abcdef0123456789abcdef")),
            ("WORKER_QUEUES", worker_queues),
        ];
        let settings = Settings::from_source(&|k| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .and_then(|(_, v)| v.map(str::to_owned))
        })
        .expect("settings");
        let pool = shared::db::pool(&settings).expect("pool");
        let queues = Queues::from_settings(&settings).expect("queues");
        JobContext::new(Arc::new(settings), pool, queues).expect("context")
    }

    fn error_of(res: anyhow::Result<impl Sized>) -> String {
        match res {
            Ok(_) => panic!("expected an error"),
            Err(e) => e.to_string(),
        }
    }

    #[tokio::test]
    async fn every_kind_of_the_list_registers() {
        let registry = monitor(&ctx(None), "test").expect("registry");
        let mut hooked: Vec<&str> = registry.dead_hooks.iter().map(|h| h.queue).collect();
        hooked.sort_unstable();
        assert_eq!(
            hooked,
            ["bulk_import", "send_invitation"],
            "the kinds with an on-dead hook"
        );
    }

    #[tokio::test]
    async fn a_kind_registered_twice_is_refused_by_name() {
        let ctx = ctx(None);
        let mut r = Registrar::new(&ctx, "test", shared::jobs::KINDS);
        r.register::<Ping>().expect("first");
        let err = error_of(r.register::<Ping>());
        assert_eq!(err, "job kind `ping` is registered twice");
    }

    #[tokio::test]
    async fn a_kind_the_list_lacks_is_refused_by_name() {
        let ctx = ctx(None);
        let known = [Kind::of::<Ping>()];
        let mut r = Registrar::new(&ctx, "test", &known);
        let err = error_of(r.register::<SendInvitation>());
        assert!(err.starts_with("job kind `send_invitation` is registered but not in the list"));
    }

    #[tokio::test]
    async fn a_kind_of_the_list_without_a_handler_is_refused() {
        let ctx = ctx(None);
        let known = [Kind::of::<Ping>(), Kind::of::<RevokeSessions>()];
        let mut r = Registrar::new(&ctx, "test", &known);
        r.register::<Ping>().expect("ping");
        let err = error_of(r.finish());
        assert_eq!(
            err,
            r#"job kinds without a registered handler: ["revoke_sessions"]"#
        );
    }

    #[tokio::test]
    async fn worker_queues_may_name_only_known_queues() {
        let registry = monitor(&ctx(Some("ping")), "test").expect("ping only");
        assert!(
            registry.dead_hooks.is_empty(),
            "send_invitation is not run here"
        );
        let err = error_of(monitor(&ctx(Some("ping,pnig")), "test"));
        assert!(
            err.starts_with(r#"WORKER_QUEUES names unknown queues ["pnig"]"#),
            "{err}"
        );
    }
}
