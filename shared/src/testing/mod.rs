//! Test support (feature `test-support`): every test gets its own Postgres database and its own
//! Redis key prefix, so tests run in parallel against the real services without seeing each
//! other, and [`TestEnv`] owns their clean-up: dropping it (at the end of a test, or while a
//! failed assertion unwinds) drops the database and deletes the keys. `TEST_DATABASE_URL`
//! (default `postgres://postgres@127.0.0.1:5432/postgres`) names the server, `TEST_REDIS_URL`
//! (default `redis://127.0.0.1:6379`) the Redis.

pub mod cluster;
pub mod metrics;
pub mod smtp;

use std::time::Duration;

use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::Semaphore;
use uuid::Uuid;

use crate::{
    config::{QueueSettings, Settings},
    queue::Queues,
};

/// The secret test tokens are signed with.
pub const JWT_SECRET: &str = "test-secret-test-secret-test-secret!";

/// How many `CREATE DATABASE`/`DROP DATABASE` connections one test process opens at once, so
/// that many tests finishing together cannot add a burst of connections to what their pools
/// already hold of the server's `max_connections` (100 by default). A `DROP DATABASE` takes
/// 0.1 to 1 s on a busy server: with 4 permits a run at `--test-threads=16` took 63 to 68 s
/// against 43 to 49 s without a limit; with 16 it took 38 to 50 s.
const ADMIN_CONNECTIONS: usize = 16;

static ADMIN: Semaphore = Semaphore::const_new(ADMIN_CONNECTIONS);

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
///
/// Dropping it drops the database and deletes the prefix's Redis keys, on a thread with a
/// runtime of its own (the test's runtime may be unwinding, or blocked in this very drop), and
/// waits for that to finish: a test that panics cleans up too, and nothing outlives the test.
pub struct TestEnv {
    /// Settings pointing at this environment (short lease and maintenance period for speed).
    pub settings: Settings,
    /// The database pool.
    pub pool: PgPool,
    /// The queue client under this test's prefix.
    pub queues: Queues,
    /// The demo project every test starts with.
    pub project_id: Uuid,
    /// The database's name (dropped with the environment).
    pub db_name: String,
    /// Whether dropping this handle drops the database and the Redis keys: false for a
    /// [`TestEnv::share`] handle, and once [`TestEnv::cleanup`] ran.
    owner: bool,
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
        {
            let _permit = ADMIN
                .acquire()
                .await
                .expect("the semaphore is never closed");
            let mut admin = PgConnection::connect(&server)
                .await
                .expect("connect to test Postgres");
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {db_name}")))
                .execute(&mut admin)
                .await
                .expect("create test database");
            let _ = admin.close().await;
        }
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
            // webhook receivers in tests listen on loopback
            ("WEBHOOK_ALLOW_PRIVATE", "true".into()),
        ];
        let mut settings =
            Settings::from_source(&|k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.clone()))
                .expect("test settings");
        settings.queue = QueueSettings {
            lease: Duration::from_secs(3),
            maintenance_interval: Duration::from_millis(200),
            idle_poll: Duration::from_millis(500),
            // every test runs the scripts in the form that fails on an undeclared key
            check_script_keys: true,
            ..QueueSettings::default()
        };
        settings.worker.outbox_poll = Duration::from_millis(500);
        // emails sent without SMTP go to files: this test's own folder, removed with it
        settings.email.outbox_dir = std::env::temp_dir()
            .join(format!("comet-test-emails-{}", &id[..16]))
            .to_string_lossy()
            .into_owned();
        settings.worker.shutdown_timeout = Duration::from_secs(10);
        // a test's workers fire no schedule unless the test asks (scheduler tests turn it on)
        settings.scheduler.enabled = false;
        tweak(&mut settings);
        let pool = crate::db::pool(&settings).expect("pool");
        crate::db::migrate(&pool)
            .await
            .expect("migrate test database");
        let queues = Queues::from_settings(&settings).expect("queues");
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
            owner: true,
        }
    }

    /// Another handle on this environment's database and Redis prefix, connecting with
    /// `settings` (a second API process, or one whose Redis is down); dropping it cleans
    /// nothing: the original owns the clean-up.
    pub fn share(&self, settings: Settings) -> Self {
        let queues = Queues::from_settings(&settings).expect("queues");
        Self {
            pool: crate::db::pool(&settings).expect("pool"),
            queues,
            project_id: self.project_id,
            db_name: self.db_name.clone(),
            settings,
            owner: false,
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
            ("SCHEDULER_ENABLED".into(), s.scheduler.enabled.to_string()),
        ]
    }

    /// Drops the database and deletes the Redis keys now (best effort) rather than when the
    /// environment is dropped. Optional: dropping does the same.
    pub async fn cleanup(mut self) {
        if std::mem::take(&mut self.owner) {
            self.teardown().await;
        }
    }

    fn teardown(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let (settings, db_name) = (self.settings.clone(), self.db_name.clone());
        async move {
            // a Redis that is down answers at once (connection refused); never hang a test
            if let Ok(queues) = Queues::from_settings(&settings) {
                let _ = tokio::time::timeout(Duration::from_secs(10), queues.purge()).await;
            }
            // only the folder `with` made (a test may have pointed the setting elsewhere)
            let emails = &settings.email.outbox_dir;
            if emails.contains("comet-test-emails-") {
                let _ = tokio::fs::remove_dir_all(emails).await;
            }
            let _permit = ADMIN.acquire().await;
            let connect = PgConnection::connect(&server_url());
            if let Ok(Ok(mut admin)) = tokio::time::timeout(Duration::from_secs(10), connect).await
            {
                // FORCE ends the sessions the test's pools (and processes) still hold
                let _ = sqlx::query(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {db_name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await;
                let _ = admin.close().await;
            }
        }
    }
}

impl Drop for TestEnv {
    fn drop(&mut self) {
        if !std::mem::take(&mut self.owner) {
            return;
        }
        let teardown = self.teardown();
        // never panic here: a panic while a failed test unwinds would abort the whole binary
        let cleaner = std::thread::Builder::new()
            .name("test-env-cleanup".into())
            .spawn(move || {
                if let Ok(rt) = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    rt.block_on(teardown);
                }
            });
        if let Ok(cleaner) = cleaner {
            let _ = cleaner.join();
        }
    }
}

/// Waits (at most 10 s) until an outbox relay of the environment listens for wakes (see
/// [`crate::queue::OutboxWaker`]), so that a wake sent now reaches it.
pub async fn outbox_relay_subscribed(env: &TestEnv) {
    let channel = env.queues.outbox_wake_channel();
    eventually(
        Duration::from_secs(10),
        "an outbox relay subscribes",
        || async {
            let mut conn = env.queues.connection();
            let (_, n): (String, i64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut conn)
                .await
                .ok()?;
            (n >= 1).then_some(())
        },
    )
    .await;
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
