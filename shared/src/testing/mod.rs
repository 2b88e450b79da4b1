//! Test support (feature `test-support`): every test gets its own Postgres database and its own
//! Redis key prefix, so tests run in parallel against the real services without seeing each
//! other. `TEST_DATABASE_URL` (default `postgres://postgres@127.0.0.1:5432/postgres`) names the
//! server, `TEST_REDIS_URL` (default `redis://127.0.0.1:6379`) the Redis.

pub mod smtp;

use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use uuid::Uuid;

use crate::{
    config::{QueueSettings, Settings},
    queue::Queues,
};

/// The secret test tokens are signed with.
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret!";

/// The Postgres server tests create their databases on.
pub fn server_url() -> String {
    std::env::var("TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// The Redis tests use (each under its own prefix).
pub fn redis_url() -> String {
    std::env::var("TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// An isolated environment: a fresh migrated database, a fresh Redis prefix, settings for both.
pub struct TestEnv {
    /// Settings pointing at this environment (short lease and maintenance period for speed).
    pub settings: Settings,
    /// The database pool.
    pub pool: PgPool,
    /// The queue client under this test's prefix.
    pub queues: Queues,
    /// The demo project every test starts with.
    pub project_id: Uuid,
    /// The database's name (dropped on [`TestEnv::cleanup`]).
    pub db_name: String,
}

impl TestEnv {
    /// A new environment with default test settings.
    pub async fn new() -> Self {
        Self::with(|_| {}).await
    }

    /// A new environment; `tweak` adjusts the settings before anything connects.
    pub async fn with(tweak: impl FnOnce(&mut Settings)) -> Self {
        crate::telemetry::init_test_tracing();
        let id = Uuid::new_v4().simple().to_string();
        let db_name = format!("comet_test_{}", &id[..16]);
        let server = server_url();
        let mut admin = PgConnection::connect(&server)
            .await
            .expect("connect to test Postgres");
        sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
            .execute(&mut admin)
            .await
            .expect("create test database");
        let base = server.rsplit_once('/').map_or(server.as_str(), |(b, _)| b);
        let db_url = format!("{base}/{db_name}");
        let prefix = format!("test-{}", &id[..12]);
        let redis = redis_url();
        let vars = [
            ("APP_ENV", "test".to_owned()),
            ("DATABASE_URL", db_url),
            ("REDIS_URL", redis),
            ("REDIS_PREFIX", prefix),
            ("JWT_SECRET", JWT_SECRET.to_owned()),
            ("PORT", "0".into()),
            ("WORKER_PORT", "0".into()),
            ("DATABASE_MAX_CONNECTIONS", "5".into()),
        ];
        let mut settings =
            Settings::from_source(&|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
                .expect("test settings");
        settings.queue = QueueSettings {
            lease: Duration::from_secs(3),
            maintenance_interval: Duration::from_millis(200),
            idle_poll: Duration::from_millis(500),
            ..QueueSettings::default()
        };
        settings.worker.outbox_poll = Duration::from_millis(500);
        settings.worker.shutdown_timeout = Duration::from_secs(10);
        tweak(&mut settings);
        let pool = crate::db::pool(&settings).expect("pool");
        crate::db::migrate(&pool)
            .await
            .expect("migrate test database");
        let queues = Queues::new(
            settings.redis_client().expect("redis url"),
            &settings.redis.prefix,
            settings.queue.clone(),
        )
        .expect("queues");
        let mut conn = pool.acquire().await.expect("acquire");
        let project_id = crate::db::projects::ensure(&mut conn, "demo")
            .await
            .expect("project");
        Self {
            settings,
            pool,
            queues,
            project_id,
            db_name,
        }
    }

    /// Another project in the same database (for isolation tests).
    pub async fn other_project(&self, name: &str) -> Uuid {
        let mut conn = self.pool.acquire().await.expect("acquire");
        crate::db::projects::ensure(&mut conn, name)
            .await
            .expect("project")
    }

    /// A signed token for a project with the given permissions.
    pub fn token(&self, project_id: Uuid, permissions: &[&str]) -> String {
        let claims = crate::auth::Claims::new(
            "test",
            project_id,
            permissions.iter().map(|p| (*p).to_owned()).collect(),
            600,
        );
        crate::auth::mint(&self.settings.auth.jwt_secret, &claims).expect("mint")
    }

    /// Environment variables that make a `comet-api`/`comet-worker` process use this
    /// environment (for tests that run the real binaries).
    pub fn process_env(&self) -> Vec<(String, String)> {
        use secrecy::ExposeSecret;
        let s = &self.settings;
        vec![
            ("APP_ENV".into(), "test".into()),
            (
                "DATABASE_URL".into(),
                s.database.url.expose_secret().to_owned(),
            ),
            ("REDIS_URL".into(), s.redis.url.expose_secret().to_owned()),
            ("REDIS_PREFIX".into(), s.redis.prefix.clone()),
            ("JWT_SECRET".into(), JWT_SECRET.into()),
            ("JOB_LEASE_SECS".into(), s.queue.lease.as_secs().to_string()),
            (
                "JOB_MAINTENANCE_MS".into(),
                s.queue.maintenance_interval.as_millis().to_string(),
            ),
            (
                "JOB_IDLE_POLL_MS".into(),
                s.queue.idle_poll.as_millis().to_string(),
            ),
            (
                "SHUTDOWN_TIMEOUT_SECS".into(),
                s.worker.shutdown_timeout.as_secs().to_string(),
            ),
            (
                "OUTBOX_POLL_MS".into(),
                s.worker.outbox_poll.as_millis().to_string(),
            ),
            ("DATABASE_MAX_CONNECTIONS".into(), "5".into()),
            ("LOG_FORMAT".into(), "json".into()),
        ]
    }

    /// Drops the database and deletes the Redis keys (best effort).
    pub async fn cleanup(self) {
        let _ = tokio::time::timeout(Duration::from_secs(10), self.queues.purge()).await;
        // close() waits for every checked-out connection; never let cleanup hang a test
        let _ = tokio::time::timeout(Duration::from_secs(5), self.pool.close()).await;
        if let Ok(mut admin) = PgConnection::connect(&server_url()).await {
            let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.db_name
            )))
            .execute(&mut admin)
            .await;
        }
    }
}

/// Polls `check` every 50 ms until it returns `Some`, or panics after `timeout` naming `what`.
pub async fn eventually<T, F, Fut>(timeout: Duration, what: &str, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if let Some(v) = check().await {
            return v;
        }
        if tokio::time::Instant::now() > deadline {
            panic!("timed out after {timeout:?} waiting for: {what}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
