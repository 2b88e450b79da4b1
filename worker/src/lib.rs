//! Comet's worker: runs every job kind from the Redis queue under apalis.
//!
//! # Layout
//! - [`context`]: [`JobContext`], what every handler and service gets, built once.
//! - [`jobs`]: one handler per job kind ([`jobs::Handler`]), declared from the one list of
//!   kinds ([`shared::with_job_kinds!`]).
//! - [`registry`]: registers every kind with its queue, concurrency, timeout and retry policy,
//!   and refuses a kind the list lacks or one registered twice.
//! - [`rules_cache`]: compiled rules per project, for `process_event`.
//! - [`services`]: the long-running loops besides the job runners (HTTP, outbox relay, on-dead
//!   hooks, the scheduler), started from one list in [`run`], with one shutdown path.
//! - [`sweeps`]: what the scheduled sweep jobs share (platform-only payloads, batches,
//!   progress).
//! - [`run`]: wires the monitor and the services, and shuts them down in order on
//!   SIGTERM/SIGINT; any of them failing stops the process with a non-zero status.

pub mod context;
pub mod jobs;
pub mod registry;
pub mod rules_cache;
pub mod services;
pub mod sweeps;

use std::{future::Future, sync::Arc, time::Duration};

use anyhow::Context as _;
pub use context::JobContext;
use services::Services;
use shared::{config::Settings, queue::Queues};

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

/// Registers every counter and histogram the README documents for the worker, for the queues
/// this process runs, so a fresh `/metrics` shows them at zero.
fn metrics_at_zero(settings: &Settings, dead_hooks: &[services::dead_hooks::DeadHook]) {
    use shared::telemetry::{MetricKind::*, export_at_zero, per_queue, per_queue_and, unlabelled};
    // the recorder first: series registered before it would go nowhere
    shared::telemetry::metrics_handle();
    let queues: Vec<&str> = shared::jobs::QUEUES
        .iter()
        .copied()
        .filter(|q| {
            settings
                .worker
                .queues
                .as_ref()
                .is_none_or(|wanted| wanted.iter().any(|w| w == q))
        })
        .collect();
    let hooked: Vec<&str> = dead_hooks
        .iter()
        .map(|h| h.queue)
        .filter(|q| queues.contains(q))
        .collect();
    let counters: [(&'static str, &'static str); 7] = [
        (
            "comet_jobs_lease_expired_total",
            "Jobs taken back from a worker that stopped heartbeating",
        ),
        (
            "comet_stale_acks_total",
            "Outcomes ignored because their attempt had lost its lease",
        ),
        (
            "comet_leases_lost_total",
            "Jobs this worker held whose lease another took",
        ),
        (
            "comet_jobs_poisoned_total",
            "Jobs sent dead because their stored state is corrupt",
        ),
        (
            "comet_ack_refused_total",
            "Outcomes the ack script refused even alone",
        ),
        (
            "comet_job_result_errors_total",
            "Completed jobs whose result could not be stored",
        ),
        (
            "comet_corrupt_jobs_total",
            "Job hashes that could not be read back",
        ),
    ];
    for (name, help) in counters {
        export_at_zero(Counter, name, help, per_queue(&queues));
    }
    // the archiver copies every queue, whichever this process runs
    export_at_zero(
        Counter,
        "comet_jobs_archived_total",
        "Finished jobs copied from Redis to the Postgres job archive",
        per_queue(shared::jobs::QUEUES),
    );
    export_at_zero(
        Counter,
        "comet_archive_errors_total",
        "Job archive passes that failed (retried next period)",
        per_queue(shared::jobs::QUEUES),
    );
    export_at_zero(
        Counter,
        "comet_dead_job_alerts_total",
        "job.dead events raised: one per project, queue, error fingerprint and window",
        [vec![]],
    );
    export_at_zero(
        Counter,
        "comet_job_webhooks_total",
        "Job lifecycle messages POSTed to subscribed endpoints, by type and outcome",
        ["job.completed", "job.dead"].into_iter().flat_map(|event| {
            ["ok", "failed"]
                .into_iter()
                .map(move |o| vec![("event", event.to_owned()), ("outcome", o.to_owned())])
        }),
    );
    export_at_zero(
        Counter,
        "comet_job_webhooks_dropped_total",
        "Job lifecycle messages not made: their project was at its open-jobs quota",
        [vec![("reason", "quota".to_owned())]],
    );
    shared::group_commit::metrics_at_zero(&[
        "process_event",
        "process_event_read",
        "deliver_notification",
        "deliver_notification_read",
    ]);
    export_at_zero(
        Counter,
        "comet_password_resets_total",
        "Password-reset requests handled, by outcome",
        ["sent", "no_account"]
            .into_iter()
            .map(|o| vec![("outcome", o.to_owned())]),
    );
    export_at_zero(
        Counter,
        "comet_import_rows_total",
        "Rows bulk imports committed, by outcome",
        ["created", "updated", "skipped", "failed"]
            .into_iter()
            .map(|o| vec![("outcome", o.to_owned())]),
    );
    export_at_zero(
        Counter,
        "comet_bucket_monitor_changed_total",
        "Buckets whose low-balance state bucket_monitor changed, by change",
        ["alerted", "rearmed"]
            .into_iter()
            .map(|c| vec![("change", c.to_owned())]),
    );
    export_at_zero(
        Histogram,
        "comet_bucket_monitor_duration_seconds",
        "bucket_monitor run time",
        unlabelled(),
    );
    export_at_zero(
        Counter,
        "comet_jobs_total",
        "Attempts finished, by queue and outcome",
        per_queue_and(&queues, "outcome", &["completed", "retried", "dead"]),
    );
    export_at_zero(
        Histogram,
        "comet_job_duration_seconds",
        "Attempt run time, by queue",
        per_queue(&queues),
    );
    export_at_zero(
        Counter,
        "comet_dead_hooks_total",
        "On-dead hook runs, by queue and outcome",
        per_queue_and(
            &hooked,
            "outcome",
            &["ok", "failed", "timeout", "undecodable"],
        ),
    );
    export_at_zero(
        Counter,
        "comet_redis_errors_total",
        "Failed Redis calls, by queue and operation (all retried)",
        per_queue_and(
            &queues,
            "op",
            &[
                "fetch",
                "ack",
                "heartbeat",
                "maintain",
                "register",
                "release",
                "subscribe",
                "counts",
            ],
        ),
    );
    export_at_zero(
        Counter,
        "comet_redis_errors_total",
        "Failed Redis calls, by queue and operation (all retried)",
        per_queue_and(&hooked, "op", &["claim_dead"]),
    );
    export_at_zero(
        Counter,
        "comet_redis_wait_short_total",
        "Writes fewer Redis replicas than REDIS_WAIT_REPLICAS acknowledged in time",
        unlabelled(),
    );
    export_at_zero(
        Counter,
        "comet_outbox_relayed_total",
        "Outbox rows moved to Redis",
        unlabelled(),
    );
    export_at_zero(
        Counter,
        "comet_outbox_relay_errors_total",
        "Failed relay passes (retried with backoff)",
        unlabelled(),
    );
    export_at_zero(
        Counter,
        "comet_rule_evaluation_errors_total",
        "Rule conditions that failed to evaluate on an event",
        unlabelled(),
    );
    // the scheduler's, per schedule; also in a process that does not run the scheduler (they
    // stay 0 there), so an alert on missed ticks sees 0 rather than no data
    let schedules: Vec<&str> = settings
        .scheduler
        .schedules
        .iter()
        .map(shared::schedule::Resolved::name)
        .collect();
    let per_schedule = || {
        schedules
            .iter()
            .map(|s| vec![("schedule", (*s).to_owned())])
            .collect::<Vec<_>>()
    };
    export_at_zero(
        Counter,
        "comet_schedule_runs_total",
        "Schedule ticks fired (one job each), by schedule",
        per_schedule(),
    );
    export_at_zero(
        Counter,
        "comet_schedule_missed_total",
        "Schedule ticks no worker fired in time, by schedule",
        per_schedule(),
    );
    export_at_zero(
        Counter,
        "comet_schedule_skipped_total",
        "Schedule ticks that fired nothing, by schedule and reason",
        schedules.iter().flat_map(|s| {
            ["paused", "missed", "overlap"]
                .into_iter()
                .map(|r| vec![("schedule", (*s).to_owned()), ("reason", r.to_owned())])
        }),
    );
    export_at_zero(
        Histogram,
        "comet_schedule_tick_lateness_seconds",
        "Enqueue time minus tick time, for ticks fired on time, by schedule",
        per_schedule(),
    );
    export_at_zero(
        Counter,
        "comet_scheduler_errors_total",
        "Failed scheduler passes (retried with backoff)",
        unlabelled(),
    );
}

/// Runs the worker until `shutdown` resolves, then stops fetching, lets running jobs finish
/// within `SHUTDOWN_TIMEOUT_SECS`, releases what is left, and returns. Returns an error (the
/// binary then exits non-zero) when the monitor or any service fails, at once rather than
/// running on half-dead.
pub async fn run(
    settings: Settings,
    listener: tokio::net::TcpListener,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let settings = Arc::new(settings);
    let pool = shared::db::pool(&settings).context("Failed to configure the Postgres pool")?;
    let queues = Queues::from_settings(&settings).context("Failed to configure the Redis queue")?;
    let ctx = JobContext::new(settings.clone(), pool.clone(), queues.clone())?;
    let name = process_name();
    tracing::info!(worker = %name, email = %ctx.mailer.describe(), "worker starting");

    let registry::Registry {
        monitor,
        handles,
        dead_hooks,
        queues: running,
    } = registry::monitor(&ctx, &name)?;
    if let Err(e) = queues
        .announce_worker(&shared::queue::WorkerAnnouncement {
            name: &name,
            host: &hostname::get()
                .ok()
                .and_then(|h| h.into_string().ok())
                .unwrap_or_default(),
            pid: std::process::id(),
            version: env!("CARGO_PKG_VERSION"),
            queues: &running,
        })
        .await
    {
        // the registry is for ops views: a worker runs without it
        tracing::warn!(error = %e, "worker not announced in the registry");
    }
    metrics_at_zero(&settings, &dead_hooks);

    // Every long-running loop of the process, from one list.
    let mut services = Services::new();
    services.start("http", |stop| {
        services::http::serve(listener, pool.clone(), queues.clone(), stop)
    });
    services.start("outbox relay", |stop| {
        services::relay::run(
            pool.clone(),
            queues.clone(),
            settings.worker.outbox_poll,
            stop,
        )
    });
    services.start("queue pauses", |stop| {
        services::pauses::run(pool.clone(), queues.clone(), stop)
    });
    services.start("job archiver", |stop| {
        services::archiver::run(
            pool.clone(),
            queues.clone(),
            name.clone(),
            settings.queue.archive_interval,
            stop,
        )
    });
    services.start("on-dead hooks", |stop| {
        services::dead_hooks::run(
            ctx.clone(),
            dead_hooks,
            settings.queue.maintenance_interval,
            stop,
        )
    });

    if settings.scheduler.enabled {
        services.start("scheduler", |stop| {
            services::scheduler::run(ctx.clone(), stop)
        });
    }

    // The monitor runs until the shutdown signal, or until a service fails.
    let mut failure = None;
    let signal = async {
        tokio::select! {
            () = shutdown => {
                tracing::info!("shutdown requested: no new jobs are fetched; running jobs may finish");
            }
            f = services.first_failure() => {
                tracing::error!(service = f.service, error = format!("{:#}", f.error),
                    "a worker service failed: stopping the worker");
                failure = Some(f);
            }
        }
        Ok(())
    };
    let monitor_result = monitor
        .shutdown_timeout(settings.worker.shutdown_timeout)
        .run_with_signal(signal)
        .await;

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
    let mut failures: Vec<_> = failure.into_iter().collect();
    failures.extend(services.stop(Duration::from_secs(10)).await);
    if let Err(e) = monitor_result {
        anyhow::bail!("the job monitor failed: {e}");
    }
    if let Some(f) = failures.into_iter().next() {
        return Err(f
            .error
            .context(format!("the worker's {} service failed", f.service)));
    }
    tracing::info!("worker stopped");
    Ok(())
}
