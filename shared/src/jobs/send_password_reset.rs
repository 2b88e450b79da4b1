//! `send_password_reset`: looks up the account an email asked a password reset for and, if
//! there is one, issues a one-time reset token and emails it.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Job;
use crate::queue::RetryPolicy;

/// How long a password-reset token works.
pub const PASSWORD_RESET_TTL: Duration = Duration::from_secs(3600);

/// Emails a password-reset token to the account of an email, if it has one.
///
/// The API enqueues one for every request, whatever the email, and looks nothing up: the
/// answer and the work behind it are the same for an unknown email (whose job finds no account
/// and finishes). So the job carries the address (sealed with [`crate::secrets::seal`]: neither
/// Redis nor the logs hold it in the clear) rather than a user id, and `projectId` is the
/// project the caller named, or the nil UUID when it named none (the project is then the
/// email's most recently active account's, as for a login).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendPasswordReset {
    /// The project the caller named (nil: none named).
    pub project_id: Uuid,
    /// The email, lower-cased and sealed.
    pub sealed_email: String,
}

impl Job for SendPasswordReset {
    const QUEUE: &'static str = "send_password_reset";
    const POLICY: RetryPolicy = RetryPolicy {
        // a reset email older than a few minutes is of little use: fewer, shorter retries
        // than an invitation's
        max_attempts: 5,
        backoff_base: Duration::from_secs(2),
        backoff_cap: Duration::from_secs(60),
        timeout: Duration::from_secs(60),
        concurrency: 8,
        prefetch: 0,
    };
    fn project_id(&self) -> Uuid {
        self.project_id
    }
}
