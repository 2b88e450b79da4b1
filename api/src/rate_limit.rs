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
    refuse(name, s.sessions.rate_limit(name, key, limit).await)
}

/// [`check`] for `n` actions at once (a batch; at least 1).
pub async fn check_n(s: &AppState, name: &str, key: &str, limit: &RateLimit, n: u64) -> Result<()> {
    refuse(name, s.sessions.rate_limit_by(name, key, limit, n).await)
}

/// A limiter's answer as the route's: 429 with `Retry-After`, or 503 when Redis failed.
fn refuse(name: &str, verdict: redis::RedisResult<Result<(), Limited>>) -> Result<()> {
    match verdict.map_err(ApiError::session_store)? {
        Ok(()) => Ok(()),
        Err(Limited { retry_after }) => {
            tracing::info!(limit = name, retry_after, "rate limited");
            Err(ApiError::TooManyRequests { retry_after })
        }
    }
}

/// Refuses (429 with `Retry-After`) when `name` by `key` has used up `limit`, counting nothing:
/// for limits on failures, counted with [`count`] once the action failed.
pub async fn refuse_if_reached(
    s: &AppState,
    name: &str,
    key: &str,
    limit: &RateLimit,
) -> Result<()> {
    refuse(name, s.sessions.limit_reached(name, key, limit).await)
}

/// Counts one `name` action (a failure) by `key` against `limit`, refusing nothing.
pub async fn count(s: &AppState, name: &str, key: &str, limit: &RateLimit) -> Result<()> {
    s.sessions
        .rate_limit(name, key, limit)
        .await
        .map_err(ApiError::session_store)?
        .ok();
    Ok(())
}
