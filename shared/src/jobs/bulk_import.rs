//! `bulk_import`: reads an uploaded CSV or XLSX file of users and writes it in chunks.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Job;
use crate::queue::RetryPolicy;

/// Imports the users of one uploaded file (`user_imports`, whose row holds the options, the
/// file's layout and the checkpoint). Each chunk commits with its checkpoint: an attempt that
/// dies is resumed by the next from the last committed chunk.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct BulkImport {
    /// The tenant.
    pub project_id: Uuid,
    /// The import.
    pub import_id: Uuid,
}

impl Job for BulkImport {
    const QUEUE: &'static str = "bulk_import";
    const POLICY: RetryPolicy = RetryPolicy {
        // an attempt resumes where the last one stopped: attempts are cheap to retry
        max_attempts: 10,
        backoff_base: Duration::from_secs(2),
        backoff_cap: Duration::from_secs(120),
        // a million rows take about a minute; room for a slow database and the invitation
        // quota's back-pressure
        timeout: Duration::from_secs(3600),
        // each import holds a file copy and a chunk in memory: few at once per worker
        concurrency: 2,
        prefetch: 0,
    };
    fn project_id(&self) -> Uuid {
        self.project_id
    }
}
