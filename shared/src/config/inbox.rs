//! The in-app inbox's live stream: keep-alive, per-connection buffer, per-user cap, tickets.

use std::time::Duration;

use super::{ConfigError, Env};

/// Settings of `GET /api/v1/notifications/stream`.
#[derive(Debug, Clone)]
pub struct InboxSettings {
    /// `STREAM_KEEPALIVE_MS`: how often an idle stream sends a keep-alive comment, and renews
    /// its slot under the per-user cap (default 15000).
    pub keepalive: Duration,
    /// `STREAM_BUFFER`: events queued for one connection; a client that lets it fill is
    /// disconnected (it resumes with `Last-Event-ID`) (default 256).
    pub buffer: usize,
    /// `STREAM_MAX_PER_USER`: open streams per user across every API process; one more is
    /// refused with 429 (default 10).
    pub max_per_user: u32,
    /// `STREAM_TICKET_TTL_SECS`: how long a stream ticket is valid (default 30).
    pub ticket_ttl: Duration,
}

impl InboxSettings {
    pub(super) fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            keepalive: Duration::from_millis(env.at_least("STREAM_KEEPALIVE_MS", 15_000, 50)?),
            buffer: env.at_least("STREAM_BUFFER", 256, 1)?,
            max_per_user: env.at_least("STREAM_MAX_PER_USER", 10, 1)?,
            ticket_ttl: Duration::from_secs(env.at_least("STREAM_TICKET_TTL_SECS", 30, 1)?),
        })
    }

    /// How long a stream's slot counts without renewal: four keep-alives (at least 10 s), so a
    /// process that died frees its users' slots soon, and a slow Redis round trip frees none.
    pub fn slot_lease(&self) -> Duration {
        (self.keepalive * 4).max(Duration::from_secs(10))
    }
}
