//! Where the data lives: the Postgres and Redis settings.

use secrecy::{ExposeSecret, SecretString};

use super::{ConfigError, Env};
use crate::redis_client::RedisClient;

/// The Postgres connection.
#[derive(Debug, Clone)]
pub struct DatabaseSettings {
    /// `DATABASE_URL`: Postgres connection string (required).
    pub url: SecretString,
    /// `DATABASE_MAX_CONNECTIONS`: pool size per process (default 10).
    pub max_connections: u32,
}

impl DatabaseSettings {
    pub(super) fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let url = env.required("DATABASE_URL")?;
        if !url.starts_with("postgres://") && !url.starts_with("postgresql://") {
            return Err(env.invalid("DATABASE_URL", "expected a postgres:// URL"));
        }
        Ok(Self {
            url: url.into(),
            max_connections: env.at_least("DATABASE_MAX_CONNECTIONS", 10, 1)?,
        })
    }
}

/// The Redis connection and key prefix.
#[derive(Debug, Clone)]
pub struct RedisSettings {
    /// `REDIS_URL`: one Redis server (`redis://`, default `redis://127.0.0.1:6379`) or a Redis
    /// Cluster's seed nodes (`redis+cluster://host1:port1,host2:port2`).
    pub url: SecretString,
    /// `REDIS_PREFIX`: prefix of every Redis key Comet writes (default `comet`).
    pub prefix: String,
}

impl RedisSettings {
    pub(super) fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let url = env
            .get("REDIS_URL")
            .unwrap_or_else(|| "redis://127.0.0.1:6379".into());
        if RedisClient::open(url.as_str()).is_err() {
            return Err(env.invalid(
                "REDIS_URL",
                "not a valid redis:// or redis+cluster://host:port,host:port URL",
            ));
        }
        let prefix = env.get("REDIS_PREFIX").unwrap_or_else(|| "comet".into());
        if prefix.contains(['{', '}', ' ']) {
            return Err(env.invalid("REDIS_PREFIX", "must not contain braces or spaces"));
        }
        Ok(Self {
            url: url.into(),
            prefix,
        })
    }

    /// A client for [`Self::url`].
    pub fn client(&self) -> redis::RedisResult<RedisClient> {
        RedisClient::open(self.url.expose_secret())
    }
}
