//! Access and refresh tokens, and the limits of the public authentication routes.

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
    /// `RATE_LIMIT_LOGIN_PER_EMAIL_IP`: failed logins per (email, client IP); past it that
    /// client gets 429 for that email (default `10/300`).
    pub login_per_email_ip: RateLimit,
    /// `RATE_LIMIT_LOGIN_PER_EMAIL`: failed logins per email from every client together; past
    /// it only clients that logged in as that email before are let through (default
    /// `100/3600`).
    pub login_per_email: RateLimit,
    /// `RATE_LIMIT_ACCEPT_PER_IP`: invitation acceptances (a public route) per client IP
    /// (default `20/60`); the browser accept page's views and submissions count here too.
    pub accept_per_ip: RateLimit,
    /// `REFRESH_TOKEN_TTL_SECS`: how long a refresh token works after it is issued; each
    /// refresh issues a new one (default 2592000, 30 days).
    pub refresh_ttl: Duration,
    /// `RATE_LIMIT_REFRESH_PER_IP`: token refreshes per client IP (default `60/60`).
    pub refresh_per_ip: RateLimit,
    /// `RATE_LIMIT_RESET_PER_IP`: password-reset requests and confirmations per client IP
    /// (default `10/300`).
    pub reset_per_ip: RateLimit,
    /// `RATE_LIMIT_RESET_PER_EMAIL`: password-reset requests per email, from every client
    /// together (default `5/3600`).
    pub reset_per_email: RateLimit,
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
            login_per_email_ip: env.parse(
                "RATE_LIMIT_LOGIN_PER_EMAIL_IP",
                RateLimit::per_secs(10, 300),
            )?,
            login_per_email: env
                .parse("RATE_LIMIT_LOGIN_PER_EMAIL", RateLimit::per_secs(100, 3600))?,
            accept_per_ip: env.parse("RATE_LIMIT_ACCEPT_PER_IP", RateLimit::per_secs(20, 60))?,
            refresh_ttl: Duration::from_secs(env.at_least(
                "REFRESH_TOKEN_TTL_SECS",
                30 * 86_400,
                60,
            )?),
            refresh_per_ip: env.parse("RATE_LIMIT_REFRESH_PER_IP", RateLimit::per_secs(60, 60))?,
            reset_per_ip: env.parse("RATE_LIMIT_RESET_PER_IP", RateLimit::per_secs(10, 300))?,
            reset_per_email: env
                .parse("RATE_LIMIT_RESET_PER_EMAIL", RateLimit::per_secs(5, 3600))?,
        })
    }
}
