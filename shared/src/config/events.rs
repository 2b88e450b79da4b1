//! Event ingestion: payload size, batch bounds and the default per-project rate.

use super::{ConfigError, Env, RateLimit};

/// Settings of event ingestion.
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// `EVENT_MAX_PAYLOAD_BYTES`: the largest event payload, as JSON (default 65536).
    pub max_payload_bytes: usize,
    /// `EVENT_BATCH_MAX_BYTES`: the largest `POST /api/v1/events/batch` body (default 8 MiB).
    pub batch_max_bytes: usize,
    /// `RATE_LIMIT_EVENTS_PER_PROJECT`: events a project may send per window, single or in
    /// batches, unless its settings say otherwise (default `2000/1`).
    pub per_project: RateLimit,
}

/// The most events in one batch.
pub const MAX_BATCH: usize = 1000;

impl EventSettings {
    pub(super) fn from_env(env: &Env<'_>) -> Result<Self, ConfigError> {
        Ok(Self {
            max_payload_bytes: env.at_least("EVENT_MAX_PAYLOAD_BYTES", 65_536, 2)?,
            batch_max_bytes: env.at_least("EVENT_BATCH_MAX_BYTES", 8 * 1024 * 1024, 1024)?,
            per_project: env.parse(
                "RATE_LIMIT_EVENTS_PER_PROJECT",
                RateLimit::per_secs(2000, 1),
            )?,
        })
    }
}
