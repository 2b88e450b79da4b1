//! Rate limits: count an action against a [`RateLimit`] from the settings (fixed windows in
//! Redis, shared by every API process).

use shared::{config::RateLimit, sessions::Limited};

use crate::{
    AppState,
    error::{ApiError, Result},
};

/// Counts one `name` action by `key` against `limit`: 429 with `Retry-After` when over it,
/// 503 if Redis fails (limits fail closed).
pub async fn check(s: &AppState, name: &str, key: &str, limit: &RateLimit) -> Result<()> {
    match s
        .sessions
        .rate_limit(name, key, limit)
        .await
        .map_err(ApiError::session_store)?
    {
        Ok(()) => Ok(()),
        Err(Limited { retry_after }) => {
            tracing::info!(limit = name, retry_after, "rate limited");
            Err(ApiError::TooManyRequests { retry_after })
        }
    }
}
