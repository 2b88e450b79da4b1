//! Access tokens and login limits.

use std::time::Duration;

use secrecy::SecretString;

use super::{ConfigError, Env, RateLimit};

/// How tokens are signed and logins limited.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// `JWT_SECRET`: HS256 signing key, at least 32 bytes (required). Also seals the invitation
    /// tokens that jobs carry.
    pub jwt_secret: SecretString,
    /// `JWT_TTL_SECS`: lifetime of minted tokens (default 3600).
    pub jwt_ttl: Duration,
    /// `RATE_LIMIT_LOGIN_PER_IP`: login attempts per client IP (default `30/60`).
    pub login_per_ip: RateLimit,
    /// `RATE_LIMIT_LOGIN_PER_EMAIL`: login attempts per email (default `10/300`).
    pub login_per_email: RateLimit,
}

impl AuthSettings {
    pub(super) fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let jwt_secret = env.required("JWT_SECRET")?;
        if jwt_secret.len() < 32 {
            return Err(env.invalid("JWT_SECRET", "must be at least 32 bytes"));
        }
        Ok(Self {
            jwt_secret: jwt_secret.into(),
            jwt_ttl: Duration::from_secs(env.at_least("JWT_TTL_SECS", 3600, 1)?),
            login_per_ip: env.parse("RATE_LIMIT_LOGIN_PER_IP", RateLimit::per_secs(30, 60))?,
            login_per_email: env
                .parse("RATE_LIMIT_LOGIN_PER_EMAIL", RateLimit::per_secs(10, 300))?,
        })
    }
}
