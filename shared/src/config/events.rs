//! Event ingestion: payload size and the default per-project rate. (A batch's body is bounded
//! by a constant, `BATCH_MAX_BYTES` in `api/src/routes/events/ingest.rs`: 1000 events of the
//! default payload size and more.)

use super::{ConfigError, Env, RateLimit};

/// Settings of event ingestion.
#[derive(Debug, Clone)]
pub struct EventSettings {
    /// `EVENT_MAX_PAYLOAD_BYTES`: the largest event payload, as JSON (default 65536).
    pub max_payload_bytes: usize,
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
            per_project: env.parse(
                "RATE_LIMIT_EVENTS_PER_PROJECT",
                RateLimit::per_secs(2000, 1),
            )?,
        })
    }
}
