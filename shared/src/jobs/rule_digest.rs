//! `rule_digest`: when a rule's suppression period closes, folds the matches it suppressed
//! into one digest notification.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Job;
use crate::queue::RetryPolicy;

/// Creates the digest of one suppression period of one rule ("rule X fired 214 more times
/// between … and …"), with its recipients and delivery jobs, once. Enqueued by `process_event`
/// with the match that opened the period, to run when the period closes.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct RuleDigest {
    /// The tenant.
    pub project_id: Uuid,
    /// The suppressed rule.
    pub rule_id: Uuid,
    /// When the period opened (Unix ms, Redis time): the period's id.
    pub period_start_ms: i64,
    /// When it closes (Unix ms).
    pub period_end_ms: i64,
}

impl RuleDigest {
    /// The idempotency key: one digest job per (rule, period).
    pub fn idempotency_key(&self) -> String {
        format!("digest:{}:{}", self.rule_id, self.period_start_ms)
    }
}

impl Job for RuleDigest {
    const QUEUE: &'static str = "rule_digest";
    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 10,
        backoff_base: Duration::from_secs(1),
        backoff_cap: Duration::from_secs(300),
        timeout: Duration::from_secs(60),
        concurrency: 8,
        prefetch: 0,
    };
    fn project_id(&self) -> Uuid {
        self.project_id
    }
}
