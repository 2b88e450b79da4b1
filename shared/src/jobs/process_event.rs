//! `process_event`: turns an accepted event into notifications, by the project's rules.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Job;
use crate::queue::RetryPolicy;

/// Evaluates the project's active rules for one event, by priority, and stores a notification
/// with its recipients for each rule that matches. Written with the event, in the same
/// transaction (the outbox). Idempotent: a re-run creates nothing twice.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct ProcessEvent {
    /// The tenant.
    pub project_id: Uuid,
    /// The event.
    pub event_id: Uuid,
}

impl Job for ProcessEvent {
    const QUEUE: &'static str = "process_event";
    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 10,
        backoff_base: Duration::from_millis(500),
        backoff_cap: Duration::from_secs(300),
        timeout: Duration::from_secs(60),
        // a handler mostly waits for its batch's commit (group commit): many in flight make
        // large batches, one statement and one commit for up to 64 events (BENCHMARKS.md)
        concurrency: 128,
        prefetch: 0,
    };
    fn project_id(&self) -> Uuid {
        self.project_id
    }
}
