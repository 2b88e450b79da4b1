//! Comet's worker: runs every job kind from the Redis queue under apalis.
//!
//! # Layout
//! - [`jobs`]: one handler per job kind, each a plain async function of the job and the
//!   [`JobContext`].
//! - [`registry`]: registers every kind with its queue, concurrency, timeout and retry policy.
//! - [`dead_hooks`]: runs a kind's on-dead hook once one of its jobs has gone dead, however it
//!   died.
//! - [`http`]: `/health`, `/ready` and `/metrics` on `WORKER_PORT`.
//! - [`run`]: wires the monitor, the outbox relay and the HTTP server, and shuts them down in
//!   order on SIGTERM/SIGINT.

pub mod dead_hooks;
pub mod http;
pub mod jobs;
pub mod registry;

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
use shared::{config::Settings, email::Mailer, queue::Queues, sessions::Sessions};
use sqlx::PgPool;

/// What every job handler gets: built once from the settings.
#[derive(Clone)]
pub struct JobContext {
    /// Postgres.
    pub pool: PgPool,
    /// The Redis queues.
    pub queues: Queues,
    /// The settings.
    pub settings: Arc<Settings>,
    /// Renders and sends emails (templates parsed once).
    pub mailer: Mailer,
    /// Sessions and revocation, on the queues' Redis connection.
    pub sessions: Sessions,
}

impl JobContext {
    /// The context for `settings`: the pool and queues are the process's own; the mailer is
    /// built here, so a malformed `SMTP_URL` or `FROM_EMAIL` fails start-up.
    pub fn new(settings: Arc<Settings>, pool: PgPool, queues: Queues) -> anyhow::Result<Self> {
        let mailer = Mailer::from_settings(&settings).context("Failed to configure email")?;
        Ok(Self {
            sessions: Sessions::new(&queues),
            pool,
            queues,
            settings,
            mailer,
        })
    }
}

impl std::fmt::Debug for JobContext {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // `Sessions` has no `Debug`; the settings' secrets print redacted
        f.debug_struct("JobContext")
            .field("queues", &self.queues)
            .field("mailer", &self.mailer)
            .finish_non_exhaustive()
    }
}

/// A name unique to this process (host, pid, random suffix): a restarted worker registers at
/// once, never colliding with its predecessor's name.
pub fn process_name() -> String {
    let host = hostname::get()
        .ok()
        .and_then(|h| h.into_string().ok())
        .unwrap_or_else(|| "worker".into());
    format!(
        "{host}-{}-{:04x}",
        std::process::id(),
        rand::random::<u16>()
    )
}

/// Runs the worker until `shutdown` resolves, then stops fetching, lets running jobs finish
/// within `SHUTDOWN_TIMEOUT_SECS`, releases what is left, and returns.
pub async fn run(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let pool = shared::db::pool(&settings).context("Failed to configure the Postgres pool")?;
    let queues = Queues::new(
        settings
            .redis_client()
            .context("Failed to configure Redis")?,
        &settings.redis_prefix,
        settings.queue.clone(),
    )
    .context("Failed to configure the Redis queue")?;
    let ctx = JobContext::new(settings.clone(), pool.clone(), queues.clone())?;
    let name = process_name();
    tracing::info!(worker = %name, email = %ctx.mailer.describe(), "worker starting");

    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let wait_stop = move || {
        let mut rx = stop_rx.clone();
        async move {
            let _ = rx.wait_for(|s| *s).await;
        }
    };

    let http = tokio::spawn(http::serve(
        listener,
        pool.clone(),
        queues.clone(),
        wait_stop(),
    ));
    let relay = tokio::spawn(shared::db::outbox::run_relay(
        pool.clone(),
        queues.clone(),
        settings.outbox_poll,
        wait_stop(),
    ));

    let registry::Registry {
        monitor,
        handles,
        dead_hooks,
    } = registry::monitor(&ctx, &name)?;
    let hooks = tokio::spawn(dead_hooks::run(
        ctx.clone(),
        dead_hooks,
        settings.queue.maintenance_interval,
        wait_stop(),
    ));
    let signal = {
        let stop_tx = stop_tx.clone();
        async move {
            shutdown.await;
            tracing::info!("shutdown requested: no new jobs are fetched; running jobs may finish");
            let _ = stop_tx.send(true);
            Ok(())
        }
    };
    let res = monitor
        .shutdown_timeout(settings.shutdown_timeout)
        .run_with_signal(signal)
        .await;
    if let Err(e) = res {
        tracing::error!(error = %e, "monitor stopped with an error");
    }
    let _ = stop_tx.send(true);
    let mut released = 0;
    let held: Vec<_> = handles.lock().expect("handles").clone();
    for h in &held {
        released += tokio::time::timeout(Duration::from_secs(5), h.release_held())
            .await
            .unwrap_or(0);
    }
    if released > 0 {
        tracing::warn!(
            released,
            "jobs still running at the shutdown timeout were released to run again"
        );
    }
    let _ = relay.await;
    let _ = hooks.await;
    let _ = http.await;
    tracing::info!("worker stopped");
    Ok(())
}
