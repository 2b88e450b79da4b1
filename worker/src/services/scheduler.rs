//! The scheduler: fires every enabled schedule's ticks, in every worker process (any number may
//! run it; each tick still enqueues one job, see [`shared::schedule::fire`]).
//!
//! The loop sleeps until the earliest next tick of its schedules (judged on Postgres's clock:
//! the offset between this host's clock and the database's is measured at every pass, so a
//! host whose clock is off neither fires early nor late), then runs [`fire::fire_due`] for each
//! schedule that is due and computes its next tick from the cursor it returns. It wakes at
//! least every 30 s even with nothing due, to move the cursors of switched-off schedules. A
//! database error is logged, counted (`comet_scheduler_errors_total`) and retried with backoff;
//! the loop returns only when asked to stop.
//!
//! Metrics: `comet_schedule_runs_total{schedule}`, `comet_schedule_missed_total{schedule}`,
//! `comet_schedule_skipped_total{schedule, reason}`, and
//! `comet_schedule_tick_lateness_seconds{schedule}` (histogram: Postgres's clock at the enqueue
//! minus the tick, for ticks fired on time).

use std::{collections::HashMap, time::Duration};

use chrono::{DateTime, Utc};
use shared::{
    db::schedules,
    schedule::{
        Resolved,
        fire::{self, Outcome},
    },
};

use super::Stop;
use crate::context::JobContext;

/// The longest the loop sleeps.
const MAX_SLEEP: Duration = Duration::from_secs(30);

/// Runs the scheduler until `stop` resolves (see the module docs).
pub async fn run(ctx: JobContext, stop: Stop) -> anyhow::Result<()> {
    let stop = stop.requested();
    tokio::pin!(stop);
    let settings = &ctx.settings.scheduler;
    let (enabled, off): (Vec<&Resolved>, Vec<&Resolved>) =
        settings.schedules.iter().partition(|s| s.enabled());
    let off: Vec<&str> = off.iter().map(|s| s.name()).collect();
    tracing::info!(
        schedules = ?enabled.iter().map(|s| format!("{}={}", s.name(), s.expression)).collect::<Vec<_>>(),
        off = ?off,
        "scheduler starting"
    );
    let names: Vec<&str> = settings.schedules.iter().map(Resolved::name).collect();
    let mut backoff = Duration::from_millis(200);
    // created before the first pass (their cursor starts now); retried like any pass
    loop {
        match schedules::ensure(&ctx.pool, &names).await {
            Ok(()) => break,
            Err(e) => {
                metrics::counter!("comet_scheduler_errors_total").increment(1);
                tracing::warn!(error = %e, "scheduler could not create its schedules; retrying");
                tokio::select! {
                    () = &mut stop => return Ok(()),
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }

    // next tick per schedule; `None`: fire now to learn the cursor
    let mut next: HashMap<&str, Option<DateTime<Utc>>> =
        enabled.iter().map(|s| (s.name(), None)).collect();
    // Postgres's clock minus ours
    let mut offset = chrono::Duration::zero();
    loop {
        let db_now = Utc::now() + offset;
        let mut failed = false;
        for schedule in &enabled {
            let name = schedule.name();
            if next[name].is_some_and(|t| t > db_now) {
                continue;
            }
            match fire::fire_due(&ctx.pool, &ctx.queues, schedule, settings.misfire_grace).await {
                Ok((outcome, cursor, now)) => {
                    offset = now - Utc::now();
                    record(name, &outcome);
                    if matches!(outcome, Outcome::Fired { .. }) {
                        ctx.outbox.wake();
                    }
                    next.insert(name, schedule.next_after(cursor.max(now)));
                }
                Err(e) => {
                    failed = true;
                    metrics::counter!("comet_scheduler_errors_total").increment(1);
                    tracing::warn!(schedule = name, error = %e, "scheduler pass failed; retrying");
                }
            }
        }
        if let Err(e) = schedules::idle(&ctx.pool, &off).await {
            failed = true;
            tracing::warn!(error = %e, "scheduler could not move switched-off cursors");
        }
        let wait = if failed {
            let b = backoff;
            backoff = (backoff * 2).min(Duration::from_secs(5));
            b
        } else {
            backoff = Duration::from_millis(200);
            let soonest = next.values().flatten().min().copied();
            soonest.map_or(MAX_SLEEP, |t| {
                (t - (Utc::now() + offset))
                    .to_std()
                    .unwrap_or_default()
                    .min(MAX_SLEEP)
            })
        };
        tokio::select! {
            () = &mut stop => return Ok(()),
            () = tokio::time::sleep(wait) => {}
        }
    }
}

/// Counts and logs one pass's outcome.
fn record(name: &'static str, outcome: &Outcome) {
    match outcome {
        Outcome::NotDue => {}
        Outcome::Fired {
            job_id,
            tick_at,
            missed,
            on_time,
            lateness,
        } => {
            metrics::counter!("comet_schedule_runs_total", "schedule" => name).increment(1);
            if *missed > 0 {
                metrics::counter!("comet_schedule_missed_total", "schedule" => name)
                    .increment(*missed);
                tracing::warn!(schedule = name, missed, %tick_at, %job_id,
                    "ticks were missed (the fleet was down)");
            }
            if *on_time {
                metrics::histogram!("comet_schedule_tick_lateness_seconds", "schedule" => name)
                    .record(lateness.as_secs_f64());
                tracing::info!(schedule = name, %tick_at, %job_id,
                    lateness_ms = lateness.as_millis() as u64, "schedule fired");
            }
        }
        Outcome::Skipped { reason, missed } => {
            metrics::counter!("comet_schedule_skipped_total", "schedule" => name, "reason" => *reason)
                .increment(1);
            if *missed > 0 {
                metrics::counter!("comet_schedule_missed_total", "schedule" => name)
                    .increment(*missed);
            }
            tracing::info!(schedule = name, reason, missed, "schedule tick skipped");
        }
    }
}
