//! `send_invitation`: emails an invitation (or its resend) to an invited user.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::Job;
use crate::queue::RetryPolicy;

/// Sends (or re-sends) an invitation email.
///
/// Carries the token sealed with [`crate::secrets::seal`]: the worker opens it, re-reads the
/// invitation, and sends only if the invitation still has this token (not resent, accepted or
/// deleted since).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct SendInvitation {
    /// The tenant.
    pub project_id: Uuid,
    /// The invitation.
    pub invitation_id: Uuid,
    /// The invited user.
    pub user_id: Uuid,
    /// Who invited (for the email's wording).
    pub inviter_id: Option<Uuid>,
    /// The token, sealed.
    pub sealed_token: String,
    /// The token's SHA-256, as the invitation stores it (not a secret: the token has 256 random
    /// bits). Lets the on-dead hook find the invitation state this job was for even when the
    /// seal does not open. Empty in jobs enqueued before it existed.
    #[serde(default)]
    pub token_hash: String,
    /// A resend (audited as `invitation.resent`).
    pub resent: bool,
}

impl Job for SendInvitation {
    const QUEUE: &'static str = "send_invitation";
    const POLICY: RetryPolicy = RetryPolicy {
        max_attempts: 8,
        backoff_base: Duration::from_secs(2),
        backoff_cap: Duration::from_secs(300),
        timeout: Duration::from_secs(60),
        concurrency: 8,
        prefetch: 0,
    };
    fn project_id(&self) -> Uuid {
        self.project_id
    }
}
