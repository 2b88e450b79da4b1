//! Postgres: the pool, the embedded migrations, and all SQL, one module per aggregate.
//!
//! # Why runtime-checked queries
//! Comet's SQL uses `sqlx::query`/`query_as` with `FromRow` types, not the compile-time checked
//! `query!` macros. The macros need a live, migrated database (or a `.sqlx/` cache kept in step
//! with `cargo sqlx prepare --check` in CI) for every build, including `cargo check` in an
//! editor and the README's one-command start on a fresh machine, where Postgres may not be up
//! yet; several queries are also assembled from optional filters (`users::list`), which the
//! macros cannot check. What the macros would catch (a misspelt column, a type mismatch) is
//! caught instead by the integration suites, which run every query against the real, migrated
//! Postgres: a query no test runs is a gap in the tests. Revisit if the schema churns enough
//! that a compile error would save real time; the switch is per query.

pub mod api_keys;
pub mod audit;
pub mod buckets;
pub mod bulk_actions;
pub mod deliveries;
pub mod events;
pub mod imports;
pub mod inbox;
pub mod inbox_items;
pub mod invitations;
pub mod job_archive;
pub mod job_dead_alerts;
pub mod notifications;
pub mod outbox;
pub mod password_resets;
pub mod preferences;
pub mod projects;
pub mod queue_pauses;
pub mod refresh_tokens;
pub mod retention;
pub mod roles;
pub mod rules;
pub mod schedules;
pub mod users;
pub mod webhook_endpoints;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::config::Settings;

/// The migrations in `migrations/`, embedded in every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A connection idle longer than this is pinged before it is handed out.
const PING_IDLE_AFTER: Duration = Duration::from_secs(10);

/// A lazily connecting pool (a process starts while Postgres is down; `/ready` tells).
///
/// A connection is pinged before it is handed out only when it sat idle for more than
/// [`PING_IDLE_AFTER`] (where a restarted server or a dropped link shows): sqlx's default pings
/// on every acquire, a round trip added to every request and job.
pub fn pool(settings: &Settings) -> Result<PgPool, sqlx::Error> {
    use sqlx::Connection as _;
    PgPoolOptions::new()
        .max_connections(settings.database.max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for > PING_IDLE_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .connect_lazy(settings.database.url.expose_secret())
}

/// Applies the migrations, then brings the `permissions` table in line with
/// [`crate::permissions::ALL`] (see [`roles::sync_permissions`]). What `comet-api migrate` (the
/// release phase) and the tests run.
pub async fn migrate(pool: &PgPool) -> anyhow::Result<()> {
    use anyhow::Context as _;
    MIGRATOR
        .run(pool)
        .await
        .context("Failed to run migrations")?;
    let mut tx = pool.begin().await.context("Failed to begin")?;
    roles::sync_permissions(&mut tx)
        .await
        .context("Failed to bring the permissions table in line with the code")?;
    tx.commit()
        .await
        .context("Failed to commit the permissions")?;
    Ok(())
}
