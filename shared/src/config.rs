//! Configuration: the one typed [`Settings`], read from the environment once at start-up.
//!
//! Nothing else in Comet reads environment variables. Every variable is documented in
//! `.env.example`; a missing or malformed one fails start-up with its name in the message.

use std::{collections::HashMap, str::FromStr, time::Duration};

use secrecy::{ExposeSecret, SecretString};

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
}

/// How logs are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// One JSON object per line (production).
    Json,
    /// Human-readable lines (development).
    Pretty,
}

/// Every setting Comet's processes use.
#[derive(Debug, Clone)]
pub struct Settings {
    /// `APP_ENV`: `development` (default), `test` or `production`.
    pub app_env: String,
    /// `DATABASE_URL`: Postgres connection string (required).
    pub database_url: SecretString,
    /// `DATABASE_MAX_CONNECTIONS`: pool size per process (default 10).
    pub database_max_connections: u32,
    /// `REDIS_URL`: Redis connection string (default `redis://127.0.0.1:6379`).
    pub redis_url: SecretString,
    /// `REDIS_PREFIX`: prefix of every Redis key Comet writes (default `comet`).
    pub redis_prefix: String,
    /// `PORT`: the API's HTTP port (default 8080).
    pub port: u16,
    /// `WORKER_PORT`: the worker's health/metrics port (default 9090; 0 picks a free one).
    pub worker_port: u16,
    /// `JWT_SECRET`: HS256 signing key, at least 32 bytes (required).
    pub jwt_secret: SecretString,
    /// `JWT_TTL_SECS`: lifetime of minted tokens (default 3600).
    pub jwt_ttl: Duration,
    /// `LOG_FORMAT`: `json` or `pretty` (default: json in production, pretty otherwise).
    pub log_format: LogFormat,
    /// `REQUEST_TIMEOUT_SECS`: API request timeout (default 30).
    pub request_timeout: Duration,
    /// `SHUTDOWN_TIMEOUT_SECS`: how long a stopping worker lets running jobs finish (default 30).
    pub shutdown_timeout: Duration,
    /// Queue behaviour shared by the API (enqueue, status) and the worker (run).
    pub queue: QueueSettings,
    /// `OUTBOX_POLL_MS`: how often the outbox relay polls when no NOTIFY arrives (default 1000).
    pub outbox_poll: Duration,
    /// `WORKER_QUEUES`: comma list of queues this worker process runs (default: all).
    pub worker_queues: Option<Vec<String>>,
    /// `QUEUE_CONCURRENCY`: per-queue concurrency overrides, `ping=64,send_invitation=8`.
    pub queue_concurrency: HashMap<String, usize>,
    /// `TRUSTED_PROXIES`: comma list of the reverse proxies' addresses (IPs or CIDRs) whose
    /// `X-Forwarded-For` the API believes (default none: the socket's peer is the client).
    pub trusted_proxies: Vec<ipnet::IpNet>,
    /// User management, invitations and email.
    pub users: UserSettings,
}

/// A fixed-window rate limit: `count` actions per `window`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateLimit {
    /// Actions allowed per window.
    pub count: u64,
    /// The window.
    pub window: Duration,
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
        Ok(Self {
            count,
            window: Duration::from_secs(secs),
        })
    }
}

impl std::fmt::Display for RateLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.count, self.window.as_secs())
    }
}

/// Settings of the user-management panel.
#[derive(Debug, Clone)]
pub struct UserSettings {
    /// `APP_BASE_URL`: the dashboard's URL; invitation links point at
    /// `<APP_BASE_URL>/invitations/accept?token=…` (default `http://localhost:8080`).
    pub app_base_url: String,
    /// `ALLOWED_INVITE_DOMAINS`: comma list of email domains invitees and inviters must use
    /// (empty: no restriction).
    pub allowed_invite_domains: Vec<String>,
    /// `INVITATION_EXPIRY_DAYS`: how long an invitation works (default 30).
    pub invitation_expiry_days: u32,
    /// `SMTP_URL`: e.g. `smtp://user:pass@mail:587?tls=required`; unset: emails are written as
    /// `.eml` files to `EMAIL_OUTBOX_DIR` (refused in production).
    pub smtp_url: Option<SecretString>,
    /// `FROM_EMAIL`: the sender (default `Comet <no-reply@comet.local>`).
    pub from_email: String,
    /// `EMAIL_OUTBOX_DIR`: where emails go without SMTP (default `outbox`).
    pub email_outbox_dir: String,
    /// `RATE_LIMIT_INVITE_PER_USER`: invites and resends per inviter (default `20/3600`).
    pub invite_per_user: RateLimit,
    /// `RATE_LIMIT_INVITE_PER_PROJECT`: invites and resends per project (default `200/3600`).
    pub invite_per_project: RateLimit,
    /// `RATE_LIMIT_LOGIN_PER_IP`: login attempts per client IP (default `30/60`).
    pub login_per_ip: RateLimit,
    /// `RATE_LIMIT_LOGIN_PER_EMAIL`: login attempts per email (default `10/300`).
    pub login_per_email: RateLimit,
}

/// Settings of the Redis queue.
#[derive(Debug, Clone)]
pub struct QueueSettings {
    /// `JOB_LEASE_SECS`: a fetched job's lease; heartbeats extend it every third of it (default 15).
    pub lease: Duration,
    /// `JOB_COMPLETED_RETENTION_SECS`: how long finished jobs stay visible (default 86400).
    pub completed_retention: Duration,
    /// `JOB_DEAD_RETENTION_SECS`: how long dead and cancelled jobs are kept (default 604800).
    pub dead_retention: Duration,
    /// `JOB_MAX_COMPLETED`: completed jobs kept per queue at most (default 100000).
    pub max_completed: u64,
    /// `JOB_IDEMPOTENCY_TTL_SECS`: how long an idempotency key maps to its job (default 86400).
    pub idempotency_ttl: Duration,
    /// `JOB_MAINTENANCE_MS`: period of the promote/reap/trim pass (default 1000).
    pub maintenance_interval: Duration,
    /// `JOB_IDLE_POLL_MS`: an idle worker re-checks its queue at least this often (default 1000).
    pub idle_poll: Duration,
    /// `JOB_FETCH_BATCH`: most jobs one fetch leases (default 100).
    pub fetch_batch: usize,
}

impl Default for QueueSettings {
    fn default() -> Self {
        Self {
            lease: Duration::from_secs(15),
            completed_retention: Duration::from_secs(86_400),
            dead_retention: Duration::from_secs(7 * 86_400),
            max_completed: 100_000,
            idempotency_ttl: Duration::from_secs(86_400),
            maintenance_interval: Duration::from_millis(1000),
            idle_poll: Duration::from_millis(1000),
            fetch_batch: 100,
        }
    }
}

/// Reads variables from a source (the process environment, or a map in tests).
struct Env<'a>(&'a dyn Fn(&str) -> Option<String>);

impl Env<'_> {
    fn get(&self, name: &'static str) -> Option<String> {
        (self.0)(name).filter(|v| !v.trim().is_empty())
    }

    fn required(&self, name: &'static str) -> Result<String, ConfigError> {
        self.get(name).ok_or(ConfigError::Missing(name))
    }

    fn parse<T: FromStr>(&self, name: &'static str, default: T) -> Result<T, ConfigError>
    where
        T::Err: std::fmt::Display,
    {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v.trim().parse().map_err(|e: T::Err| ConfigError::Invalid {
                name,
                reason: format!("{v:?}: {e}"),
            }),
        }
    }

    fn secs(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.parse(name, default).map(Duration::from_secs)
    }

    fn millis(&self, name: &'static str, default: u64) -> Result<Duration, ConfigError> {
        self.parse(name, default).map(Duration::from_millis)
    }
}

impl Settings {
    /// Reads the settings from the process environment (after loading `.env` if present).
    pub fn from_env() -> Result<Self, ConfigError> {
        let _ = dotenvy::dotenv();
        Self::from_source(&|name| std::env::var(name).ok())
    }

    /// Reads the settings from any source of variables (tests pass a map).
    pub fn from_source(source: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let env = Env(source);
        let app_env = env.get("APP_ENV").unwrap_or_else(|| "development".into());
        if !["development", "test", "production"].contains(&app_env.as_str()) {
            return Err(ConfigError::Invalid {
                name: "APP_ENV",
                reason: format!("{app_env:?}: expected development, test or production"),
            });
        }
        let jwt_secret = env.required("JWT_SECRET")?;
        if jwt_secret.len() < 32 {
            return Err(ConfigError::Invalid {
                name: "JWT_SECRET",
                reason: "must be at least 32 bytes".into(),
            });
        }
        let database_url = env.required("DATABASE_URL")?;
        if !database_url.starts_with("postgres://") && !database_url.starts_with("postgresql://") {
            return Err(ConfigError::Invalid {
                name: "DATABASE_URL",
                reason: "expected a postgres:// URL".into(),
            });
        }
        let redis_url = env
            .get("REDIS_URL")
            .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
        if redis::Client::open(redis_url.as_str()).is_err() {
            return Err(ConfigError::Invalid {
                name: "REDIS_URL",
                reason: "not a valid redis:// URL".into(),
            });
        }
        let log_format = match env.get("LOG_FORMAT").as_deref() {
            Some("json") => LogFormat::Json,
            Some("pretty") => LogFormat::Pretty,
            None if app_env == "production" => LogFormat::Json,
            None => LogFormat::Pretty,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    name: "LOG_FORMAT",
                    reason: format!("{other:?}: expected json or pretty"),
                });
            }
        };
        let redis_prefix = env.get("REDIS_PREFIX").unwrap_or_else(|| "comet".into());
        if redis_prefix.contains(['{', '}', ' ']) {
            return Err(ConfigError::Invalid {
                name: "REDIS_PREFIX",
                reason: "must not contain braces or spaces".into(),
            });
        }
        let queue = QueueSettings {
            lease: env.secs("JOB_LEASE_SECS", 15)?,
            completed_retention: env.secs("JOB_COMPLETED_RETENTION_SECS", 86_400)?,
            dead_retention: env.secs("JOB_DEAD_RETENTION_SECS", 7 * 86_400)?,
            max_completed: env.parse("JOB_MAX_COMPLETED", 100_000)?,
            idempotency_ttl: env.secs("JOB_IDEMPOTENCY_TTL_SECS", 86_400)?,
            maintenance_interval: env.millis("JOB_MAINTENANCE_MS", 1000)?,
            idle_poll: env.millis("JOB_IDLE_POLL_MS", 1000)?,
            fetch_batch: env.parse("JOB_FETCH_BATCH", 100)?,
        };
        if queue.lease < Duration::from_secs(3) {
            return Err(ConfigError::Invalid {
                name: "JOB_LEASE_SECS",
                reason: "must be at least 3".into(),
            });
        }
        if queue.fetch_batch == 0 || queue.fetch_batch > 1000 {
            return Err(ConfigError::Invalid {
                name: "JOB_FETCH_BATCH",
                reason: "must be between 1 and 1000".into(),
            });
        }
        let worker_queues = env.get("WORKER_QUEUES").map(|v| {
            v.split(',')
                .map(|q| q.trim().to_owned())
                .filter(|q| !q.is_empty())
                .collect()
        });
        let mut queue_concurrency = HashMap::new();
        if let Some(v) = env.get("QUEUE_CONCURRENCY") {
            for pair in v.split(',').filter(|p| !p.trim().is_empty()) {
                let parsed = pair
                    .split_once('=')
                    .and_then(|(q, n)| Some((q.trim().to_owned(), n.trim().parse::<usize>().ok()?)))
                    .filter(|(_, n)| *n > 0);
                let Some((q, n)) = parsed else {
                    return Err(ConfigError::Invalid {
                        name: "QUEUE_CONCURRENCY",
                        reason: format!("{pair:?}: expected queue=positive number"),
                    });
                };
                queue_concurrency.insert(q, n);
            }
        }
        let mut trusted_proxies = Vec::new();
        for item in env
            .get("TRUSTED_PROXIES")
            .iter()
            .flat_map(|v| v.split(','))
            .map(str::trim)
            .filter(|i| !i.is_empty())
        {
            let net = item
                .parse::<ipnet::IpNet>()
                .or_else(|_| item.parse::<std::net::IpAddr>().map(ipnet::IpNet::from))
                .map_err(|_| ConfigError::Invalid {
                    name: "TRUSTED_PROXIES",
                    reason: format!("{item:?}: expected an IP address or a CIDR (10.0.0.0/8)"),
                })?;
            trusted_proxies.push(net);
        }
        let smtp_url = env.get("SMTP_URL");
        if smtp_url.is_none() && app_env == "production" {
            return Err(ConfigError::Invalid {
                name: "SMTP_URL",
                reason: "is required in production (the file outbox is for development)".into(),
            });
        }
        let users = UserSettings {
            app_base_url: env
                .get("APP_BASE_URL")
                .unwrap_or_else(|| "http://localhost:8080".into())
                .trim_end_matches('/')
                .to_owned(),
            allowed_invite_domains: env
                .get("ALLOWED_INVITE_DOMAINS")
                .map(|v| {
                    v.split(',')
                        .map(|d| d.trim().trim_start_matches('@').to_ascii_lowercase())
                        .filter(|d| !d.is_empty())
                        .collect()
                })
                .unwrap_or_default(),
            invitation_expiry_days: env.parse("INVITATION_EXPIRY_DAYS", 30)?,
            smtp_url: smtp_url.map(Into::into),
            from_email: env
                .get("FROM_EMAIL")
                .unwrap_or_else(|| "Comet <no-reply@comet.local>".into()),
            email_outbox_dir: env
                .get("EMAIL_OUTBOX_DIR")
                .unwrap_or_else(|| "outbox".into()),
            invite_per_user: env.parse(
                "RATE_LIMIT_INVITE_PER_USER",
                RateLimit {
                    count: 20,
                    window: Duration::from_secs(3600),
                },
            )?,
            invite_per_project: env.parse(
                "RATE_LIMIT_INVITE_PER_PROJECT",
                RateLimit {
                    count: 200,
                    window: Duration::from_secs(3600),
                },
            )?,
            login_per_ip: env.parse(
                "RATE_LIMIT_LOGIN_PER_IP",
                RateLimit {
                    count: 30,
                    window: Duration::from_secs(60),
                },
            )?,
            login_per_email: env.parse(
                "RATE_LIMIT_LOGIN_PER_EMAIL",
                RateLimit {
                    count: 10,
                    window: Duration::from_secs(300),
                },
            )?,
        };
        if users.invitation_expiry_days == 0 {
            return Err(ConfigError::Invalid {
                name: "INVITATION_EXPIRY_DAYS",
                reason: "must be at least 1".into(),
            });
        }
        Ok(Self {
            users,
            database_url: database_url.into(),
            database_max_connections: env.parse("DATABASE_MAX_CONNECTIONS", 10)?,
            redis_url: redis_url.into(),
            redis_prefix,
            port: env.parse("PORT", 8080)?,
            worker_port: env.parse("WORKER_PORT", 9090)?,
            jwt_secret: jwt_secret.into(),
            jwt_ttl: env.secs("JWT_TTL_SECS", 3600)?,
            log_format,
            request_timeout: env.secs("REQUEST_TIMEOUT_SECS", 30)?,
            shutdown_timeout: env.secs("SHUTDOWN_TIMEOUT_SECS", 30)?,
            queue,
            outbox_poll: env.millis("OUTBOX_POLL_MS", 1000)?,
            worker_queues,
            queue_concurrency,
            trusted_proxies,
            app_env,
        })
    }

    /// Whether this is a production deployment.
    pub fn is_production(&self) -> bool {
        self.app_env == "production"
    }

    /// A Redis client for [`Self::redis_url`].
    pub fn redis_client(&self) -> redis::RedisResult<redis::Client> {
        redis::Client::open(self.redis_url.expose_secret())
    }
}

#[cfg(test)]
mod tests {
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
        let shown: Vec<String> = s.trusted_proxies.iter().map(ToString::to_string).collect();
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
        assert_eq!(s.queue_concurrency["ping"], 64);
        assert_eq!(s.queue_concurrency["send_invitation"], 8);
        pairs.push(("QUEUE_CONCURRENCY", "ping=0"));
        pairs.swap_remove(2);
        let err = Settings::from_source(&source(&pairs)).unwrap_err();
        assert!(err.to_string().contains("QUEUE_CONCURRENCY"), "{err}");
    }

    #[test]
    fn a_short_jwt_secret_is_refused() {
        let pairs = [BASE[0], ("JWT_SECRET", "short")];
        let err = Settings::from_source(&source(&pairs)).unwrap_err();
        assert!(err.to_string().contains("at least 32 bytes"), "{err}");
    }
}
