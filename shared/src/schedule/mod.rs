//! Schedules: jobs enqueued on a cron expression, declared in code next to the job they
//! enqueue, overridable per deployment, and the one list of them, [`ALL`].
//!
//! A job kind that runs on a schedule implements [`Scheduled`] in its own file under
//! `shared/src/jobs/`: its [`Schedule`] (name, expression, time zone, catch-up and overlap
//! policies) and how to build the job for a [`Tick`]. Then one line in [`ALL`]:
//!
//! ```ignore
//! impl Scheduled for BucketMonitor {
//!     const SCHEDULE: Schedule = Schedule::new("bucket_monitor", "*/5 * * * *")
//!         .catch_up(CatchUp::Once)
//!         .overlap(Overlap::Skip);
//!     fn for_tick(tick: &Tick) -> Self {
//!         Self { project_id: PLATFORM, run: tick.clone() }
//!     }
//! }
//! // shared/src/schedule/mod.rs, in ALL:
//! Declared::of::<jobs::BucketMonitor>(),
//! ```
//!
//! A deployment overrides a schedule's expression with `SCHEDULE_<NAME>` (the name upper-cased:
//! `SCHEDULE_BUCKET_MONITOR="*/30 * * * * *"`) or switches it off with `SCHEDULE_<NAME>=off`;
//! [`crate::config::SchedulerSettings`] reads and parses them at start-up, and a bad
//! expression stops the process naming the schedule and the parse error. The expressions
//! accepted are in [`expression`]. The worker's `services::scheduler` fires them (exactly one
//! job per tick across the fleet: see ARCHITECTURE.md, "The scheduler"); the API lists,
//! pauses, resumes and triggers them (`/api/v1/schedules`). Scheduled jobs are platform-wide:
//! their `projectId` is [`PLATFORM`] (the nil id, as platform tokens'), and a sweep works
//! across every project itself.

pub mod expression;
pub mod fire;

use chrono::{DateTime, TimeZone as _, Utc};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    jobs::{self, EnqueueOptions, Job},
    queue::NewJob,
};

/// The `projectId` of platform-wide jobs (every scheduled sweep): the nil id, which is no
/// project's (as a platform operator's token is bound to none).
pub const PLATFORM: Uuid = Uuid::nil();

/// What a schedule does with ticks no worker fired in time (the fleet was down).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum CatchUp {
    /// Fire none of them: the next tick runs as usual.
    Skip,
    /// Fire one job for all of them, at once, carrying how many were missed.
    Once,
}

/// What a tick does while the schedule's previous run is still queued or running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub enum Overlap {
    /// Fire nothing (the tick is counted as skipped).
    Skip,
    /// Fire anyway.
    Allow,
}

/// A schedule as declared in code (see the module docs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Schedule {
    /// Its name: `[a-z0-9_]`, unique; `SCHEDULE_<NAME>` overrides it.
    pub name: &'static str,
    /// The default expression ([`expression`]).
    pub expression: &'static str,
    /// The IANA time zone the expression is read in (default `UTC`).
    pub time_zone: &'static str,
    /// Ticks missed while the fleet was down.
    pub catch_up: CatchUp,
    /// A tick while the previous run is queued or running.
    pub overlap: Overlap,
}

impl Schedule {
    /// A schedule in UTC that skips missed ticks and overlapping runs.
    pub const fn new(name: &'static str, expression: &'static str) -> Self {
        Self {
            name,
            expression,
            time_zone: "UTC",
            catch_up: CatchUp::Skip,
            overlap: Overlap::Skip,
        }
    }

    /// Read the expression in this IANA time zone.
    pub const fn time_zone(mut self, tz: &'static str) -> Self {
        self.time_zone = tz;
        self
    }

    /// The catch-up policy.
    pub const fn catch_up(mut self, policy: CatchUp) -> Self {
        self.catch_up = policy;
        self
    }

    /// The overlap policy.
    pub const fn overlap(mut self, policy: Overlap) -> Self {
        self.overlap = policy;
        self
    }

    /// `SCHEDULE_<NAME>`.
    pub fn env_var(&self) -> String {
        format!("SCHEDULE_{}", self.name.to_ascii_uppercase())
    }
}

/// Why a scheduled job runs: carried in its payload (`run`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct Tick {
    /// The schedule.
    pub schedule: String,
    /// The tick it fires for (`null`: triggered by hand, outside the tick sequence).
    pub tick_at: Option<DateTime<Utc>>,
    /// Ticks missed before this one (catch-up `once` fires one run for all of them).
    #[serde(default)]
    pub missed: u64,
}

impl Tick {
    /// A run triggered by hand.
    pub fn manual(schedule: &str) -> Self {
        Self {
            schedule: schedule.to_owned(),
            tick_at: None,
            missed: 0,
        }
    }
}

/// A job kind that runs on a schedule (see the module docs).
pub trait Scheduled: Job {
    /// Its schedule.
    const SCHEDULE: Schedule;
    /// The job a tick (or a manual trigger) enqueues.
    fn for_tick(tick: &Tick) -> Self;
}

/// A schedule of [`ALL`]: the declaration and how to build its job.
#[derive(Debug, Clone, Copy)]
pub struct Declared {
    /// The declaration.
    pub schedule: Schedule,
    /// The queue of the job it enqueues.
    pub queue: &'static str,
    build: fn(&Tick, EnqueueOptions) -> Result<NewJob, serde_json::Error>,
}

fn build<J: Scheduled>(tick: &Tick, opts: EnqueueOptions) -> Result<NewJob, serde_json::Error> {
    J::for_tick(tick).to_new_job(opts)
}

impl Declared {
    /// The schedule of job kind `J`.
    pub const fn of<J: Scheduled>() -> Self {
        Self {
            schedule: J::SCHEDULE,
            queue: J::QUEUE,
            build: build::<J>,
        }
    }

    /// The job for `tick`, with a fresh id.
    pub fn job(&self, tick: &Tick, opts: EnqueueOptions) -> Result<NewJob, serde_json::Error> {
        (self.build)(tick, opts)
    }
}

/// Every schedule. Add one line per scheduled kind.
pub const ALL: &[Declared] = &[
    Declared::of::<jobs::ExpireInvitations>(),
    Declared::of::<jobs::SweepSessions>(),
    Declared::of::<jobs::ApplyRetention>(),
    Declared::of::<jobs::SweepApiKeys>(),
    Declared::of::<jobs::Ping>(),
];

/// The declared schedule `name`.
pub fn declared(name: &str) -> Option<&'static Declared> {
    ALL.iter().find(|d| d.schedule.name == name)
}

/// A schedule as this deployment runs it: its declaration, the expression in force
/// (`SCHEDULE_<NAME>` or the declared one) parsed, or `None` when switched off.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The declaration.
    pub declared: &'static Declared,
    /// The expression in force, as written (`off` when switched off).
    pub expression: String,
    /// Whether `SCHEDULE_<NAME>` set it.
    pub overridden: bool,
    /// The time zone.
    pub time_zone: chrono_tz::Tz,
    /// The parsed expression; `None`: switched off.
    pub cron: Option<cron::Schedule>,
}

impl Resolved {
    /// The schedule's name.
    pub fn name(&self) -> &'static str {
        self.declared.schedule.name
    }

    /// Resolves `declared` with the deployment's override (`None`: the declared expression);
    /// the error names what is wrong, for the start-up message.
    pub fn new(declared: &'static Declared, over: Option<&str>) -> Result<Self, String> {
        let s = &declared.schedule;
        let time_zone: chrono_tz::Tz = s
            .time_zone
            .parse()
            .map_err(|_| format!("time zone {:?} is not an IANA zone", s.time_zone))?;
        let expression = over.map_or(s.expression, str::trim).to_owned();
        let cron = if expression.eq_ignore_ascii_case("off") {
            None
        } else {
            Some(expression::parse(&expression).map_err(|e| format!("{expression:?}: {e}"))?)
        };
        Ok(Self {
            declared,
            overridden: over.is_some(),
            expression,
            time_zone,
            cron,
        })
    }

    /// Whether it runs at all (not `off`).
    pub fn enabled(&self) -> bool {
        self.cron.is_some()
    }

    /// The first tick strictly after `t`.
    pub fn next_after(&self, t: DateTime<Utc>) -> Option<DateTime<Utc>> {
        let cron = self.cron.as_ref()?;
        let local = self.time_zone.from_utc_datetime(&t.naive_utc());
        cron.after(&local).next().map(|d| d.with_timezone(&Utc))
    }

    /// The ticks in `(after, upto]`, at most `cap` of them (a schedule every second left for
    /// days would be large): how many, and the last.
    pub fn ticks_between(
        &self,
        after: DateTime<Utc>,
        upto: DateTime<Utc>,
        cap: u64,
    ) -> (u64, Option<DateTime<Utc>>) {
        let Some(cron) = self.cron.as_ref() else {
            return (0, None);
        };
        let local = self.time_zone.from_utc_datetime(&after.naive_utc());
        let mut count = 0;
        let mut last = None;
        for t in cron.after(&local) {
            let t = t.with_timezone(&Utc);
            if t > upto || count >= cap {
                break;
            }
            count += 1;
            last = Some(t);
        }
        (count, last)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_declared_schedule_parses_and_names_are_unique_and_plain() {
        let mut names: Vec<_> = ALL.iter().map(|d| d.schedule.name).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), ALL.len(), "two schedules share a name");
        for d in ALL {
            let name = d.schedule.name;
            assert!(
                !name.is_empty()
                    && name
                        .chars()
                        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_'),
                "{name}"
            );
            let r = Resolved::new(d, None).expect(name);
            assert!(r.enabled());
            let job = d
                .job(&Tick::manual(name), EnqueueOptions::default())
                .expect("job");
            assert_eq!(job.queue, d.queue);
            assert_eq!(job.project_id, PLATFORM);
        }
    }

    #[test]
    fn an_override_replaces_the_expression_or_switches_it_off() {
        let d = declared("canary").expect("canary");
        let r = Resolved::new(d, Some("*/2 * * * * *")).expect("valid");
        assert!(r.overridden);
        let t0 = DateTime::parse_from_rfc3339("2026-12-01T00:00:01Z")
            .expect("t")
            .with_timezone(&Utc);
        let (n, last) = r.ticks_between(t0, t0 + chrono::Duration::seconds(10), 100);
        assert_eq!(n, 5, "02 04 06 08 10");
        assert_eq!(last, Some(t0 + chrono::Duration::seconds(9)));
        let (n, _) = r.ticks_between(t0, t0 + chrono::Duration::seconds(10), 3);
        assert_eq!(n, 3, "capped");
        let off = Resolved::new(d, Some("OFF")).expect("off");
        assert!(!off.enabled());
        assert_eq!(off.next_after(t0), None);
        let err = Resolved::new(d, Some("every minute")).expect_err("bad");
        assert!(err.contains("every minute"), "{err}");
    }

    #[test]
    fn a_schedule_is_read_in_its_time_zone() {
        static LOCAL: Declared = Declared {
            schedule: Schedule::new("local", "0 9 * * *").time_zone("Europe/Paris"),
            queue: "ping",
            build: build::<jobs::Ping>,
        };
        let r = Resolved::new(&LOCAL, None).expect("valid");
        let t0 = DateTime::parse_from_rfc3339("2026-12-01T00:00:00Z")
            .expect("t")
            .with_timezone(&Utc);
        // 09:00 in Paris in winter is 08:00 UTC
        assert_eq!(
            r.next_after(t0).map(|t| t.to_rfc3339()),
            Some("2026-12-01T08:00:00+00:00".to_owned())
        );
    }
}
