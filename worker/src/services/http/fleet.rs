//! The fleet-wide gauges of the worker's `/metrics`, read from Redis and Postgres at each scrape
//! (not kept in the process's recorder): how long the next job of each queue has waited and
//! whether the queue is paused, the live workers of each queue, and the outbox's backlog and
//! lag. They are what an operator alerts on (`ops/prometheus/comet-alerts.yml`): "queue latency
//! above a threshold", "no live workers for a queue", "outbox lag".
//!
//! Every worker process renders the same values (they describe the fleet, not the process), so
//! aggregate them with `max by (queue)`, never `sum`. A section whose source does not answer
//! within [`SECTION_TIMEOUT`] is left out of that scrape, and the rest is served (as the API's
//! per-project gauges are).
//!
//! Cost per scrape: three Redis round trips per queue (the head of its ready set, its pause
//! flag), one for the registry, and one grouped count of `job_outbox` (bounded by the backlog,
//! which the relays keep small; while they are down this count is what tells you).
//!
//! A home closer to the data would be the maintenance pass (`shared/src/queue/backend/`, next
//! to `comet_queue_jobs`) for the latency, and a cheaper `min(created_at)`-only query in
//! `shared::db::outbox` for the lag; both were being changed by other work when these were
//! added.

use std::{fmt::Write as _, future::Future, time::Duration};

use chrono::Utc;
use shared::queue::Queues;
use sqlx::PgPool;

/// The most one section may take before it is left out of the scrape.
const SECTION_TIMEOUT: Duration = Duration::from_secs(1);

/// The gauges, in Prometheus's text format (`HELP` and `TYPE` lines included).
pub async fn render(pool: &PgPool, queues: &Queues) -> String {
    let mut out = String::new();
    let (latency, workers, outbox) = tokio::join!(
        section("queue latency", latency(queues)),
        section("workers", workers(queues)),
        section("outbox", outbox(pool)),
    );
    for text in [latency, workers, outbox].into_iter().flatten() {
        out.push_str(&text);
    }
    out
}

/// Runs one section within [`SECTION_TIMEOUT`]; `None` (logged) when it failed or timed out.
async fn section(
    what: &'static str,
    f: impl Future<Output = anyhow::Result<String>>,
) -> Option<String> {
    match tokio::time::timeout(SECTION_TIMEOUT, f).await {
        Ok(Ok(text)) => Some(text),
        Ok(Err(e)) => {
            tracing::warn!(section = what, error = %e, "metrics: a fleet gauge failed; left out");
            None
        }
        Err(_) => {
            tracing::warn!(section = what, "metrics: a fleet gauge timed out; left out");
            None
        }
    }
}

fn header(out: &mut String, name: &str, help: &str) {
    let _ = writeln!(out, "# HELP {name} {help}");
    let _ = writeln!(out, "# TYPE {name} gauge");
}

/// `comet_queue_latency_seconds{queue}`: how long the job at the head of each queue's ready
/// set (the next one a worker takes: highest priority, then oldest) has been ready, on Redis's
/// clock; 0 when none waits. With one priority in use that is the oldest ready job's age.
/// And `comet_queue_paused{queue}`.
async fn latency(queues: &Queues) -> anyhow::Result<String> {
    let now = queues.redis_now().await?;
    let mut out = String::new();
    header(
        &mut out,
        "comet_queue_latency_seconds",
        "How long the next job of the queue (the head of its ready set) has been ready; \
         0 when none waits",
    );
    for q in shared::jobs::QUEUES {
        let age = queues.latency(q, now).await?;
        let _ = writeln!(out, "comet_queue_latency_seconds{{queue=\"{q}\"}} {age}");
    }
    // a paused queue's latency grows by design: alerts leave those out
    header(
        &mut out,
        "comet_queue_paused",
        "1 while the queue is paused (workers lease none of its jobs), else 0",
    );
    for q in shared::jobs::QUEUES {
        let paused = u8::from(queues.is_paused(q).await?);
        let _ = writeln!(out, "comet_queue_paused{{queue=\"{q}\"}} {paused}");
    }
    Ok(out)
}

/// `comet_queue_workers{queue}`, `comet_queue_worker_slots{queue}`,
/// `comet_queue_in_flight{queue}`: from the worker registry, the live processes (heard from
/// within `JOB_LEASE_SECS`) running each queue, their concurrency together, and the jobs they
/// hold; 0 for a queue none runs.
async fn workers(queues: &Queues) -> anyhow::Result<String> {
    let all = queues.workers(queues.settings().lease).await?;
    let mut out = String::new();
    let live: Vec<&shared::queue::WorkerQueue> = all
        .iter()
        .filter(|w| !w.lost)
        .flat_map(|w| w.queues.iter())
        .collect();
    let per_queue = |q: &'static str| live.iter().filter(move |wq| wq.queue == q);
    header(
        &mut out,
        "comet_queue_workers",
        "Live worker processes running the queue (from the registry)",
    );
    for q in shared::jobs::QUEUES {
        let n = per_queue(q).count();
        let _ = writeln!(out, "comet_queue_workers{{queue=\"{q}\"}} {n}");
    }
    header(
        &mut out,
        "comet_queue_worker_slots",
        "Jobs the live workers of the queue run at once, together (their concurrency)",
    );
    for q in shared::jobs::QUEUES {
        let n: u64 = per_queue(q).map(|wq| wq.concurrency).sum();
        let _ = writeln!(out, "comet_queue_worker_slots{{queue=\"{q}\"}} {n}");
    }
    header(
        &mut out,
        "comet_queue_in_flight",
        "Jobs the live workers of the queue hold, as of their last heartbeats",
    );
    for q in shared::jobs::QUEUES {
        let n: u64 = per_queue(q).map(|wq| wq.in_flight).sum();
        let _ = writeln!(out, "comet_queue_in_flight{{queue=\"{q}\"}} {n}");
    }
    Ok(out)
}

/// `comet_outbox_waiting{queue}` (rows committed in Postgres, not yet relayed to Redis) and
/// `comet_outbox_lag_seconds` (the oldest row's age; 0 when empty).
async fn outbox(pool: &PgPool) -> anyhow::Result<String> {
    let (per_queue, oldest) = shared::db::outbox::waiting(pool).await?;
    // this host's clock against Postgres's `created_at`, as `GET /api/v1/outbox` does: an
    // offset between the two shifts the lag by as much
    let now = Utc::now();
    let mut out = String::new();
    header(
        &mut out,
        "comet_outbox_waiting",
        "Outbox rows committed and not yet relayed to Redis, by queue",
    );
    for q in shared::jobs::QUEUES {
        let n = per_queue
            .iter()
            .find(|(queue, _)| queue == q)
            .map_or(0, |(_, n)| *n);
        let _ = writeln!(out, "comet_outbox_waiting{{queue=\"{q}\"}} {n}");
    }
    header(
        &mut out,
        "comet_outbox_lag_seconds",
        "Age of the oldest outbox row: how far behind the relays are (0 when empty)",
    );
    let lag = oldest.map_or(0.0, |at| {
        ((now - at).num_milliseconds().max(0) as f64) / 1000.0
    });
    let _ = writeln!(out, "comet_outbox_lag_seconds {lag}");
    Ok(out)
}
