//! `revoke_sessions`: revokes every session of a user after a deactivation or a role change.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Job;
use crate::queue::RetryPolicy;

/// Revokes every session of a user: blacklists each live token for its remaining life,
/// deletes the session records, audits the revocation. (The API has already made the user's
/// older tokens invalid synchronously; this is the per-session clean-up.)
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RevokeSessions {
    /// The tenant.
    pub project_id: Uuid,
    /// The user.
    pub user_id: Uuid,
    /// Who asked (user id), if anyone.
    pub actor_id: Option<Uuid>,
    /// Why: `deactivated`, `role_changed`, …
    pub reason: String,
    /// Tokens issued before this instant (ms) are revoked; the job re-asserts the API's marker
    /// in case Redis lost it.
    pub revoked_before_ms: i64,
    /// More users of the project whose sessions this job revokes the same way (a bulk action
    /// revokes a chunk of users with one job).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub also: Vec<Uuid>,
}

impl Job for RevokeSessions {
    const QUEUE: &'static str = "revoke_sessions";
    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 10,
        backoff_base: Duration::from_millis(500),
        backoff_cap: Duration::from_secs(60),
        timeout: Duration::from_secs(30),
        concurrency: 16,
        prefetch: 0,
    };
    fn project_id(&self) -> Uuid {
        self.project_id
    }
}
