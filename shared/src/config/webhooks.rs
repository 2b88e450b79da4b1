//! Webhook delivery: the HTTP client's timeouts and body cap, the SSRF guard's switch, the
//! automatic disabling of an endpoint that keeps failing, rotation grace and the test route's
//! rate.

use std::time::Duration;

use super::{ConfigError, Env, RateLimit};

/// Settings of webhook endpoints and deliveries.
#[derive(Debug, Clone)]
pub struct WebhookSettings {
    /// `WEBHOOK_CONNECT_TIMEOUT_MS`: TCP and TLS connect timeout (default 5000).
    pub connect_timeout: Duration,
    /// `WEBHOOK_TIMEOUT_MS`: the whole request, connect to the capped body (default 15000).
    pub timeout: Duration,
    /// `WEBHOOK_RESPONSE_BODY_CAP`: bytes of a response body read and kept (default 4096).
    pub response_body_cap: usize,
    /// `WEBHOOK_ALLOW_PRIVATE`: lifts the SSRF guard (loopback, private, link-local, metadata
    /// addresses become reachable). For tests and closed networks only (default false).
    pub allow_private: bool,
    /// `WEBHOOK_DISABLE_AFTER_SECS`: an endpoint whose deliveries have failed continuously
    /// for this long is disabled (default 259200, three days).
    pub disable_after: Duration,
    /// `WEBHOOK_ROTATION_GRACE_SECS`: how long the previous secret keeps signing after a
    /// rotation that names no grace (default 86400).
    pub rotation_grace: Duration,
    /// `WEBHOOK_MAX_RETRY_AFTER_SECS`: the longest `Retry-After` honoured (default 3600).
    pub max_retry_after: Duration,
    /// `RATE_LIMIT_WEBHOOK_TESTS`: test messages a project may send (default `30/60`).
    pub test_rate: RateLimit,
}

impl Default for WebhookSettings {
    fn default() -> Self {
        Self::from_env(&Env::empty()).expect("the defaults are valid")
    }
}

impl WebhookSettings {
    pub(super) fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        let connect_ms: u64 = env.at_least("WEBHOOK_CONNECT_TIMEOUT_MS", 5_000, 1)?;
        let total_ms: u64 = env.at_least("WEBHOOK_TIMEOUT_MS", 15_000, 1)?;
        Ok(Self {
            connect_timeout: Duration::from_millis(connect_ms),
            timeout: Duration::from_millis(total_ms),
            response_body_cap: env.at_least("WEBHOOK_RESPONSE_BODY_CAP", 4096, 1)?,
            allow_private: env.parse("WEBHOOK_ALLOW_PRIVATE", false)?,
            disable_after: Duration::from_secs(env.at_least(
                "WEBHOOK_DISABLE_AFTER_SECS",
                3 * 86_400,
                1,
            )?),
            rotation_grace: env.secs("WEBHOOK_ROTATION_GRACE_SECS", 86_400)?,
            max_retry_after: env.secs("WEBHOOK_MAX_RETRY_AFTER_SECS", 3600)?,
            test_rate: env.parse("RATE_LIMIT_WEBHOOK_TESTS", RateLimit::per_secs(30, 60))?,
        })
    }
}
