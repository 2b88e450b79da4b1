//! Postgres: the pool, the embedded migrations, and all SQL, one module per aggregate.

pub mod audit;
pub mod invitations;
pub mod outbox;
pub mod projects;
pub mod roles;
pub mod users;

use std::time::Duration;

use secrecy::ExposeSecret;
use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::config::Settings;

/// The migrations in `migrations/`, embedded in every binary.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../migrations");

/// A lazily connecting pool (a process starts while Postgres is down; `/ready` tells).
pub fn pool(settings: &Settings) -> Result<PgPool, sqlx::Error> {
    PgPoolOptions::new()
        .max_connections(settings.database_max_connections)
        .acquire_timeout(Duration::from_secs(5))
        .connect_lazy(settings.database_url.expose_secret())
}
