//! Configuration: the one typed [`Settings`], read from the environment once at start-up.
//!
//! Nothing else in Comet reads environment variables. Settings are split by concern, each part
//! in its own module parsing its own variables (and holding their defaults, written once):
//! [`stores`] (Postgres, Redis), [`http`] (the API), [`auth`] (tokens, login limits), [`email`],
//! [`users`] (invitations), [`queue`] (the queue, and the worker process), [`webhooks`]
//! (webhook delivery). Every variable is
//! documented in `.env.example` and README; a missing or malformed one fails start-up with its
//! name in the message.

mod auth;
mod email;
mod events;
mod http;
mod inbox;
mod queue;
mod scheduler;
mod stores;
mod users;
mod webhooks;

use std::{str::FromStr, time::Duration};

pub use auth::AuthSettings;
pub use email::EmailSettings;
pub use events::{EventSettings, MAX_BATCH};
pub use http::HttpSettings;
pub use inbox::InboxSettings;
pub use queue::{QueueSettings, WorkerSettings};
pub use scheduler::{RetentionSettings, SchedulerSettings};
pub use stores::{DatabaseSettings, RedisSettings};
pub use users::{UserSettings, link_with_token};
pub use webhooks::WebhookSettings;

/// A configuration problem, naming the variable at fault.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A required variable is not set.
    #[error("environment variable {0} is required but not set")]
    Missing(&'static str),
    /// A variable is set but cannot be used.
    #[error("environment variable {name} is invalid: {reason}")]
    Invalid {
        /// The variable's name.
        name: &'static str,
        /// What is wrong with its value.
        reason: String,
    },
    /// A schedule's expression does not parse (or its declaration is wrong).
    #[error("environment variable {var} is invalid: schedule `{schedule}`: {reason}")]
    Schedule {
        /// `SCHEDULE_<NAME>`, or where the declaration is.
        var: String,
        /// The schedule's name.
        schedule: &'static str,
        /// The parse error.
        reason: String,
    },
    /// `SCHEDULE_*` variables that name no schedule.
    #[error("environment variables {0:?} name no schedule (known: {known})", known = crate::schedule::ALL.iter().map(|d| d.schedule.name).collect::<Vec<_>>().join(", "))]
    UnknownSchedules(Vec<String>),
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable lines (development).
    Pretty,
}

/// Every setting Comet's processes use, by concern.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `APP_ENV`: `development` (default), `test` or `production`.
    pub app_env: String,
    /// `LOG_FORMAT`: `json` or `pretty` (default: json in production, pretty otherwise).
    pub log_format: LogFormat,
    /// Postgres.
    pub database: DatabaseSettings,
    /// Redis.
    pub redis: RedisSettings,
    /// The API's HTTP server.
    pub http: HttpSettings,
    /// Tokens and login limits.
    pub auth: AuthSettings,
    /// Outgoing email.
    pub email: EmailSettings,
    /// User management and invitations.
    pub users: UserSettings,
    /// Queue behaviour shared by the API (enqueue, status) and the worker (run).
    pub queue: QueueSettings,
    /// Event ingestion.
    pub events: EventSettings,
    /// The in-app inbox's live stream.
    pub inbox: InboxSettings,
    /// The worker process.
    pub worker: WorkerSettings,
    /// Webhook endpoints and deliveries.
    pub webhooks: WebhookSettings,
    /// The scheduler and every schedule's expression in force.
    pub scheduler: SchedulerSettings,
    /// The sweeps: retention periods and batch sizes.
    pub retention: RetentionSettings,
}

/// A fixed-window rate limit: `count` actions per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Actions allowed per window.
    pub count: u64,
    /// The window.
    pub window: Duration,
}

impl RateLimit {
    /// `count` actions per `secs` seconds.
    pub const fn per_secs(count: u64, secs: u64) -> Self {
        Self {
            count,
            window: Duration::from_secs(secs),
        }
    }
}

impl FromStr for RateLimit {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        let (count, secs) = s
            .split_once('/')
            .ok_or_else(|| "expected COUNT/SECONDS, e.g. 20/3600".to_owned())?;
        let count: u64 = count.trim().parse().map_err(|e| format!("count: {e}"))?;
        let secs: u64 = secs.trim().parse().map_err(|e| format!("seconds: {e}"))?;
        if count == 0 || secs == 0 {
            return Err("count and seconds must be positive".into());
        }
        Ok(Self::per_secs(count, secs))
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.count, self.window.as_secs())
    }
}

/// Reads variables from a source (the process environment, or a map in tests). An empty or
/// blank value counts as unset.
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    /// A source with no variables: every setting at its default.
    fn empty() -> Env<'static> {
        Env(&|_| None)
    }

    fn get(&self, name: &'static str) -> Option<String> {
        self.get_dyn(name)
    }

    /// [`Env::get`] for a name built at run time (`SCHEDULE_<NAME>`).
    fn get_dyn(&self, name: &str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing(name))
    }

    /// The non-empty, trimmed items of a comma list (none when unset).
    fn list(&self, name: &'static str) -> impl Iterator<Item = String> {
        let value = self.get(name).unwrap_or_default();
        value
            .split(',')
            .map(|i| i.trim().to_owned())
            .filter(|i| !i.is_empty())
            .collect::<Vec<_>>()
            .into_iter()
    }

    fn invalid(&self, name: &'static str, reason: impl Into<String>) -> ConfigError {
        ConfigError::Invalid {
            name,
            reason: reason.into(),
        }
    }

    fn parse<T: FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .trim()
                .parse()
                .map_err(|e: T::Err| self.invalid(name, format!("{v:?}: {e}"))),
        }
    }

    fn secs(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.parse(name, default).map(Duration::from_secs)
    }

    /// A number that must be at least `min` (zero would mean a busy loop, or a feature that
    /// always fails).
    fn at_least<T: FromStr + PartialOrd + std::fmt::Display>(
        &self,
        name: &'static str,
        default: T,
        min: T,
    ) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        let value = self.parse(name, default)?;
        if value < min {
            return Err(self.invalid(name, format!("must be at least {min}")));
        }
        Ok(value)
    }
}

impl Settings {
    /// Reads the settings from the process environment (after loading `.env` if present).
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        let unknown = scheduler::unknown_schedule_vars(
            std::env::vars_os()
                .filter_map(|(k, _)| k.into_string().ok())
                .collect::<Vec<_>>()
                .iter()
                .map(String::as_str),
        );
        if !unknown.is_empty() {
            return Err(ConfigError::UnknownSchedules(unknown));
        }
        Self::from_source(&|name| std::env::var(name).ok())
    }

    /// Reads the settings from any source of variables (tests pass a map).
    pub fn from_source(source: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(source);
        let app_env = env.get("APP_ENV").unwrap_or_else(|| "development".into());
        if !["development", "test", "production"].contains(&app_env.as_str()) {
            return Err(env.invalid(
                "APP_ENV",
                format!("{app_env:?}: expected development, test or production"),
            ));
        }
        let production = app_env == "production";
        let log_format = match env.get("LOG_FORMAT").as_deref() {
            Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            None if production => LogFormat::Json,
            None => LogFormat::Pretty,
            Some(other) => {
                return Err(
                    env.invalid("LOG_FORMAT", format!("{other:?}: expected json or pretty"))
                );
            }
        };
        Ok(Self {
            auth: AuthSettings::from_env(&env)?,
            database: DatabaseSettings::from_env(&env)?,
            redis: RedisSettings::from_env(&env)?,
            http: HttpSettings::from_env(&env)?,
            email: EmailSettings::from_env(&env, production)?,
            users: UserSettings::from_env(&env)?,
            queue: QueueSettings::from_env(&env)?,
            events: EventSettings::from_env(&env)?,
            inbox: InboxSettings::from_env(&env)?,
            worker: WorkerSettings::from_env(&env)?,
            webhooks: WebhookSettings::from_env(&env)?,
            scheduler: SchedulerSettings::from_env(&env)?,
            retention: RetentionSettings::from_env(&env)?,
            log_format,
            app_env,
        })
    }

    /// Whether this is a production deployment.
    pub fn is_production(&self) -> bool {
        self.app_env == "production"
    }

    /// A Redis client for `REDIS_URL`.
    pub fn redis_client(&self) -> redis::RedisResult<crate::redis_client::RedisClient> {
        self.redis.client()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn source(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect();
        move |k| map.get(k).cloned()
    }

    const BASE: [(&str, &str); 2] = [
        ("DATABASE_URL", "postgres://localhost/comet"),
        ("JWT_SECRET", "0123456789abcdef0123456789abcdef"),
    ];

    #[test]
    fn a_missing_required_variable_is_named() {
        let err = Settings::from_source(&source(&[BASE[0]])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "environment variable JWT_SECRET is required but not set"
        );
    }

    #[test]
    fn a_malformed_number_names_its_variable() {
        let mut pairs = BASE.to_vec();
        pairs.push(("PORT", "eighty"));
        let err = Settings::from_source(&source(&pairs)).unwrap_err();
        assert!(err.to_string().contains("PORT"), "{err}");
    }

    #[test]
    fn trusted_proxies_take_addresses_and_cidrs_and_name_a_bad_one() {
        let mut pairs = BASE.to_vec();
        pairs.push(("TRUSTED_PROXIES", "10.0.0.0/8, 192.168.1.7,::1"));
        let s = Settings::from_source(&source(&pairs)).unwrap();
        let shown: Vec<String> = s
            .http
            .trusted_proxies
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(shown, ["10.0.0.0/8", "192.168.1.7/32", "::1/128"]);
        pairs.pop();
        pairs.push(("TRUSTED_PROXIES", "10.0.0.0/8,loadbalancer"));
        let err = Settings::from_source(&source(&pairs)).unwrap_err();
        assert!(err.to_string().contains("TRUSTED_PROXIES"), "{err}");
        assert!(err.to_string().contains("loadbalancer"), "{err}");
    }

    #[test]
    fn queue_concurrency_overrides_are_parsed_and_checked() {
        let mut pairs = BASE.to_vec();
        pairs.push(("QUEUE_CONCURRENCY", "ping=64, send_invitation=8"));
        let s = Settings::from_source(&source(&pairs)).unwrap();
        assert_eq!(s.worker.concurrency["ping"], 64);
        assert_eq!(s.worker.concurrency["send_invitation"], 8);
        pairs.push(("QUEUE_CONCURRENCY", "ping=0"));
        pairs.swap_remove(2);
        let err = Settings::from_source(&source(&pairs)).unwrap_err();
        assert!(err.to_string().contains("QUEUE_CONCURRENCY"), "{err}");
    }

    #[test]
    fn queue_partitions_are_parsed_and_bounded() {
        let s = Settings::from_source(&source(&BASE)).unwrap();
        assert!(s.queue.partitions.is_empty());
        let mut pairs = BASE.to_vec();
        pairs.push(("QUEUE_PARTITIONS", "process_event=4, ping=64"));
        let s = Settings::from_source(&source(&pairs)).unwrap();
        assert_eq!(s.queue.partitions["process_event"], 4);
        assert_eq!(s.queue.partitions["ping"], 64);
        for bad in ["ping=0", "ping=65", "ping", "=3", "ping=two"] {
            pairs.pop();
            pairs.push(("QUEUE_PARTITIONS", bad));
            let err = Settings::from_source(&source(&pairs)).unwrap_err();
            assert!(err.to_string().contains("QUEUE_PARTITIONS"), "{bad}: {err}");
            assert!(err.to_string().contains("from 1 to 64"), "{bad}: {err}");
        }
    }

    #[test]
    fn values_that_would_spin_or_always_fail_are_refused_by_name() {
        for name in [
            "JOB_MAINTENANCE_MS",
            "JOB_IDLE_POLL_MS",
            "JOB_IDEMPOTENCY_TTL_SECS",
            "OUTBOX_POLL_MS",
            "JWT_TTL_SECS",
            "REQUEST_TIMEOUT_SECS",
            "DATABASE_MAX_CONNECTIONS",
            "JOB_MAX_OPEN_PER_PROJECT",
            "WEBHOOK_TIMEOUT_MS",
            "WEBHOOK_DISABLE_AFTER_SECS",
        ] {
            let mut pairs = BASE.to_vec();
            pairs.push((name, "0"));
            let err = Settings::from_source(&source(&pairs)).unwrap_err();
            assert!(err.to_string().contains(name), "{name}: {err}");
            assert!(err.to_string().contains("at least"), "{name}: {err}");
        }
    }

    #[test]
    fn a_schedule_override_is_applied_and_a_bad_one_names_the_schedule_and_the_error() {
        let mut pairs = BASE.to_vec();
        pairs.push(("SCHEDULE_CANARY", "*/2 * * * * *"));
        pairs.push(("SCHEDULE_SWEEP_SESSIONS", "off"));
        let s = Settings::from_source(&source(&pairs)).unwrap();
        let canary = s.scheduler.get("canary").unwrap();
        assert_eq!(canary.expression, "*/2 * * * * *");
        assert!(canary.overridden && canary.enabled());
        assert!(!s.scheduler.get("sweep_sessions").unwrap().enabled());
        assert!(s.scheduler.get("expire_invitations").unwrap().enabled());
        pairs.push(("SCHEDULE_EXPIRE_INVITATIONS", "0 9 * *"));
        let err = Settings::from_source(&source(&pairs))
            .unwrap_err()
            .to_string();
        assert!(err.contains("SCHEDULE_EXPIRE_INVITATIONS"), "{err}");
        assert!(err.contains("schedule `expire_invitations`"), "{err}");
        assert!(err.contains("expected 5 fields"), "{err}");
    }

    #[test]
    fn schedule_variables_that_name_no_schedule_are_found() {
        let vars = [
            "SCHEDULE_CANARY",
            "SCHEDULE_CANRAY",
            "SCHEDULER_ENABLED",
            "PATH",
        ];
        assert_eq!(
            scheduler::unknown_schedule_vars(vars.into_iter()),
            ["SCHEDULE_CANRAY"]
        );
        let err = ConfigError::UnknownSchedules(vec!["SCHEDULE_CANRAY".into()]).to_string();
        assert!(err.contains("known: expire_invitations"), "{err}");
    }

    #[test]
    fn retention_days_default_keep_and_refuse_nonsense() {
        let s = Settings::from_source(&source(&BASE)).unwrap();
        assert_eq!(
            s.retention.audit_days, None,
            "the audit log is kept by default"
        );
        assert_eq!(s.retention.event_days, Some(90));
        let mut pairs = BASE.to_vec();
        pairs.push(("AUDIT_RETENTION_DAYS", "365"));
        pairs.push(("EVENT_RETENTION_DAYS", "keep"));
        let s = Settings::from_source(&source(&pairs)).unwrap();
        assert_eq!(s.retention.audit_days, Some(365));
        assert_eq!(s.retention.event_days, None);
        pairs.push(("NOTIFICATION_RETENTION_DAYS", "1"));
        let err = Settings::from_source(&source(&pairs))
            .unwrap_err()
            .to_string();
        assert!(err.contains("NOTIFICATION_RETENTION_DAYS"), "{err}");
    }

    #[test]
    fn a_short_jwt_secret_is_refused() {
        let pairs = [BASE[0], ("JWT_SECRET", "short")];
        let err = Settings::from_source(&source(&pairs)).unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
    }
}
