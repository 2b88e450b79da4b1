//! `bulk_users`: applies one bulk action (deactivate, reactivate, add or remove a role, delete)
//! to a set of users.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Job;
use crate::queue::RetryPolicy;

/// Runs the bulk action `action_id` (`user_bulk_actions`, which holds what, on whom, and the
/// checkpoint): users in id order, a chunk per transaction; a retried attempt resumes after the
/// last committed chunk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkUsers {
    /// The tenant.
    pub project_id: Uuid,
    /// The action.
    pub action_id: Uuid,
}

impl Job for BulkUsers {
    const QUEUE: &'static str = "bulk_users";
    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 10,
        backoff_base: Duration::from_secs(1),
        backoff_cap: Duration::from_secs(60),
        timeout: Duration::from_secs(1800),
        concurrency: 2,
        prefetch: 0,
    };
    fn project_id(&self) -> Uuid {
        self.project_id
    }
}
