//! Firing schedules: the one transaction that turns due ticks into (at most) one job, shared by
//! every worker's scheduler, and the manual trigger the API calls.
//!
//! [`fire_due`] locks the schedule's row, reads the ticks due since the fleet's cursor on
//! Postgres's clock, decides by the catch-up, pause and overlap rules, and, to fire, writes the
//! run row (unique per (schedule, tick)) and the job's outbox row in that same transaction, then
//! moves the cursor. Whichever workers race, one transaction accounts for each tick: the others
//! wait for the lock and find nothing due. ARCHITECTURE.md, "The scheduler", says why this is
//! exactly once.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::{CatchUp, Overlap, Resolved, Tick};
use crate::{
    db::{outbox, schedules},
    jobs::EnqueueOptions,
    queue::{JobState, Queues},
};

/// Most ticks counted in one catch-up (a schedule every second left off for 11 days).
pub const MAX_TICKS_COUNTED: u64 = 1_000_000;

/// What one [`fire_due`] pass did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Nothing was due (another worker had it, or it is not time yet).
    NotDue,
    /// Enqueued a run of tick `tick_at` (`missed` ticks before it were missed).
    Fired {
        /// The job.
        job_id: Uuid,
        /// The tick.
        tick_at: DateTime<Utc>,
        /// Ticks missed before it (counted; a catch-up `once` run carries them in its job).
        missed: u64,
        /// Whether the tick itself was on time (within the grace), not a catch-up.
        on_time: bool,
        /// How late it fired (Postgres's clock minus the tick).
        lateness: Duration,
    },
    /// The ticks were accounted for without a run.
    Skipped {
        /// Why: `paused`, `overlap` (the previous run still open) or `missed` (late, catch-up
        /// `skip`).
        reason: &'static str,
        /// Ticks missed among them.
        missed: u64,
    },
}

/// Why firing failed.
#[derive(Debug, thiserror::Error)]
pub enum FireError {
    /// Postgres.
    #[error("schedule database: {0}")]
    Database(#[from] sqlx::Error),
    /// Redis (the overlap check).
    #[error(transparent)]
    Queue(#[from] crate::queue::QueueError),
    /// The job would not serialise (a bug in its type).
    #[error("schedule job payload: {0}")]
    Payload(#[from] serde_json::Error),
}

/// The state of a schedule's run: `Pending` while in the outbox, its queue state after; `None`
/// when its job is gone (trimmed after retention).
pub async fn run_state(
    conn: &mut PgConnection,
    queues: &Queues,
    queue: &str,
    job_id: Uuid,
) -> Result<Option<JobState>, FireError> {
    if schedules::in_outbox(conn, job_id).await? {
        return Ok(Some(JobState::Pending));
    }
    Ok(queues.job(queue, job_id).await?.map(|j| j.state))
}

/// Whether a state is queued or running.
pub fn is_open(state: JobState) -> bool {
    matches!(
        state,
        JobState::Pending
            | JobState::Waiting
            | JobState::Delayed
            | JobState::Active
            | JobState::Retrying
    )
}

/// Fires `schedule`'s due ticks, if any (see the module docs). `grace`: a tick seen later than
/// this after its time is missed (`SCHEDULER_MISFIRE_GRACE_MS`); every due tick but the latest
/// is missed anyway (the next was due too). Returns what it did and the cursor after it.
pub async fn fire_due(
    pool: &PgPool,
    queues: &Queues,
    schedule: &Resolved,
    grace: Duration,
) -> Result<(Outcome, DateTime<Utc>, DateTime<Utc>), FireError> {
    let name = schedule.name();
    let mut tx = pool.begin().await?;
    let (row, now) = schedules::lock(&mut tx, name).await?;
    let (due, last) = schedule.ticks_between(row.last_tick_at, now, MAX_TICKS_COUNTED);
    let Some(tick_at) = last else {
        tx.rollback().await?;
        return Ok((Outcome::NotDue, row.last_tick_at, now));
    };
    let late = (now - tick_at).to_std().unwrap_or_default();
    let on_time = late <= grace;
    let missed = due - u64::from(on_time);
    let declared = schedule.declared;

    let outcome = if row.paused {
        // paused ticks are not missed: nobody was meant to run them
        schedules::advance(&mut tx, name, tick_at, 0, None).await?;
        Outcome::Skipped {
            reason: "paused",
            missed: 0,
        }
    } else if !on_time && declared.schedule.catch_up == CatchUp::Skip {
        schedules::advance(&mut tx, name, tick_at, missed, None).await?;
        Outcome::Skipped {
            reason: "missed",
            missed,
        }
    } else if declared.schedule.overlap == Overlap::Skip
        && previous_open(&mut tx, queues, declared.queue, name).await?
    {
        schedules::advance(&mut tx, name, tick_at, missed, None).await?;
        Outcome::Skipped {
            reason: "overlap",
            missed,
        }
    } else {
        // catch-up `skip` fires only an on-time tick, and then nothing before it was meant to
        // run; `once` fires one run carrying the count
        let carried = match declared.schedule.catch_up {
            CatchUp::Once => missed,
            CatchUp::Skip => 0,
        };
        let tick = Tick {
            schedule: name.to_owned(),
            tick_at: Some(tick_at),
            missed: carried,
        };
        let job = declared.job(&tick, EnqueueOptions::default())?;
        let run = schedules::NewRun {
            schedule: name,
            job_id: job.id,
            tick_at: Some(tick_at),
            missed: carried,
        };
        if !schedules::insert_run(&mut tx, &run).await? {
            // a run of this tick exists: another transaction fired it (the row lock makes
            // this unreachable; the unique row is what guarantees it)
            tx.rollback().await?;
            return Ok((Outcome::NotDue, tick_at, now));
        }
        outbox::insert(&mut tx, &job).await?;
        schedules::advance(&mut tx, name, tick_at, missed, Some(job.id)).await?;
        Outcome::Fired {
            job_id: job.id,
            tick_at,
            missed,
            on_time,
            lateness: late,
        }
    };
    tx.commit().await?;
    Ok((outcome, tick_at, now))
}

/// Whether the schedule's latest run is still queued or running.
async fn previous_open(
    conn: &mut PgConnection,
    queues: &Queues,
    queue: &str,
    name: &str,
) -> Result<bool, FireError> {
    let Some(job) = schedules::latest_job(conn, name).await? else {
        return Ok(false);
    };
    Ok(run_state(conn, queues, queue, job)
        .await?
        .is_some_and(is_open))
}

/// Enqueues one run of `schedule` now, outside its tick sequence (paused or not), with `opts`
/// (the request id); the caller wakes the relays after. Returns the job id.
pub async fn trigger(
    pool: &PgPool,
    schedule: &Resolved,
    opts: EnqueueOptions,
) -> Result<Uuid, FireError> {
    let name = schedule.name();
    let mut tx = pool.begin().await?;
    // the row lock orders a trigger with the ticks (the overlap check sees it)
    schedules::lock(&mut tx, name).await?;
    let job = schedule.declared.job(&Tick::manual(name), opts)?;
    let run = schedules::NewRun {
        schedule: name,
        job_id: job.id,
        tick_at: None,
        missed: 0,
    };
    schedules::insert_run(&mut tx, &run).await?;
    outbox::insert(&mut tx, &job).await?;
    schedules::record_trigger(&mut tx, name, job.id).await?;
    tx.commit().await?;
    Ok(job.id)
}
