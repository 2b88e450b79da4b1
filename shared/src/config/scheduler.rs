//! The scheduler (`SCHEDULER_*`, and each schedule's `SCHEDULE_<NAME>` override) and the
//! sweeps' settings (retention, batches).

use std::time::Duration;

use super::{ConfigError, Env};
use crate::schedule::{self, Resolved};

/// The scheduler's settings: every declared schedule as this deployment runs it.
#[derive(Debug, Clone)]
pub struct SchedulerSettings {
    /// `SCHEDULER_ENABLED` (default `true`): whether this worker process runs the scheduler
    /// (the others still do; any number may).
    pub enabled: bool,
    /// `SCHEDULER_MISFIRE_GRACE_MS` (default 60000): a tick a worker sees later than this after
    /// its time counts as missed (catch-up policy), unless it is the latest due.
    pub misfire_grace: Duration,
    /// Every declared schedule with its `SCHEDULE_<NAME>` override applied, in declaration
    /// order.
    pub schedules: Vec<Resolved>,
}

impl SchedulerSettings {
    pub(super) fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let mut schedules = Vec::with_capacity(schedule::ALL.len());
        for declared in schedule::ALL {
            let var = declared.schedule.env_var();
            let over = env.get_dyn(&var);
            let resolved = Resolved::new(declared, over.as_deref()).map_err(|reason| {
                ConfigError::Schedule {
                    var: if over.is_some() {
                        var.clone()
                    } else {
                        "(declared in code)".into()
                    },
                    schedule: declared.schedule.name,
                    reason,
                }
            })?;
            schedules.push(resolved);
        }
        Ok(Self {
            enabled: env.parse("SCHEDULER_ENABLED", true)?,
            misfire_grace: Duration::from_millis(env.at_least(
                "SCHEDULER_MISFIRE_GRACE_MS",
                60_000u64,
                1,
            )?),
            schedules,
        })
    }

    /// The schedule `name`, as this deployment runs it.
    pub fn get(&self, name: &str) -> Option<&Resolved> {
        self.schedules.iter().find(|s| s.name() == name)
    }

    /// Overrides schedule `name` with `expression` (tests; `off` switches it off).
    pub fn set(&mut self, name: &str, expression: &str) -> Result<(), String> {
        let declared = schedule::declared(name).ok_or_else(|| format!("no schedule {name}"))?;
        let resolved = Resolved::new(declared, Some(expression))?;
        for s in &mut self.schedules {
            if s.name() == name {
                *s = resolved.clone();
            }
        }
        Ok(())
    }
}

/// Unknown `SCHEDULE_*` variables in `names` (a typo would otherwise be silently ignored).
pub fn unknown_schedule_vars<'a>(names: impl Iterator<Item = &'a str>) -> Vec<String> {
    names
        .filter_map(|n| n.strip_prefix("SCHEDULE_").map(|rest| (n, rest)))
        .filter(|(_, rest)| schedule::declared(&rest.to_ascii_lowercase()).is_none())
        .map(|(n, _)| n.to_owned())
        .collect()
}

/// How long the sweeps keep things, and how much one run does.
#[derive(Debug, Clone)]
pub struct RetentionSettings {
    /// `AUDIT_RETENTION_DAYS` (default unset: keep the audit log forever).
    pub audit_days: Option<u32>,
    /// `EVENT_RETENTION_DAYS` (default 90): processed events older than this, whose
    /// notifications are gone, are deleted.
    pub event_days: Option<u32>,
    /// `NOTIFICATION_RETENTION_DAYS` (default 90; at least 2, so deliveries, deferrals and
    /// retries are long over): notifications older than this are deleted with their
    /// recipients, delivery attempts and webview actions.
    pub notification_days: Option<u32>,
    /// `INBOX_FEED_RETENTION_DAYS` (default 30): live-stream feed entries older than this (a
    /// stream resuming from further back starts at the oldest entry kept).
    pub inbox_feed_days: Option<u32>,
    /// `SCHEDULER_HISTORY_DAYS` (default 7): schedule runs (`schedule_runs`) kept this long.
    pub schedule_run_days: Option<u32>,
    /// `RETENTION_BATCH` (default 1000, 10–10000): rows one delete statement removes, each in
    /// its own short transaction.
    pub batch: u32,
    /// `RETENTION_MAX_BATCHES` (default 1000): batches one run deletes per table at most (the
    /// next run goes on).
    pub max_batches: u32,
    /// `SESSION_SWEEP_MAX_KEYS` (default 10000): per-user session sets one `sweep_sessions`
    /// run examines at most (the next run resumes the SCAN where it stopped).
    pub session_sweep_max_keys: u32,
}

impl RetentionSettings {
    pub(super) fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        // `0` or `keep` (or unset, for the audit log) keeps forever
        let days = |name: &'static str, default: Option<u32>, min: u32| match env.get(name) {
            None => Ok(default),
            Some(v) if v.trim().eq_ignore_ascii_case("keep") || v.trim() == "0" => Ok(None),
            Some(v) => match v.trim().parse::<u32>() {
                Ok(d) if d >= min => Ok(Some(d)),
                Ok(_) => Err(env.invalid(name, format!("must be at least {min} (or keep)"))),
                Err(e) => Err(env.invalid(name, format!("{v:?}: {e}"))),
            },
        };
        let batch = env.at_least("RETENTION_BATCH", 1000u32, 10)?;
        if batch > 10_000 {
            return Err(env.invalid("RETENTION_BATCH", "must be at most 10000"));
        }
        Ok(Self {
            audit_days: days("AUDIT_RETENTION_DAYS", None, 1)?,
            event_days: days("EVENT_RETENTION_DAYS", Some(90), 1)?,
            notification_days: days("NOTIFICATION_RETENTION_DAYS", Some(90), 2)?,
            inbox_feed_days: days("INBOX_FEED_RETENTION_DAYS", Some(30), 1)?,
            schedule_run_days: days("SCHEDULER_HISTORY_DAYS", Some(7), 1)?,
            batch,
            max_batches: env.at_least("RETENTION_MAX_BATCHES", 1000u32, 1)?,
            session_sweep_max_keys: env.at_least("SESSION_SWEEP_MAX_KEYS", 10_000u32, 1)?,
        })
    }
}

impl Default for RetentionSettings {
    fn default() -> Self {
        Self::from_env(&Env::empty()).expect("the defaults are valid")
    }
}
