//! Password hashing and verification (Argon2), run off the async threads: each costs tens of
//! milliseconds of CPU.

use shared::{domain::Password, secrets};

use crate::error::{ApiError, Result};

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("blocking task failed")))
}

/// The hash to store for a new password.
pub async fn hash(password: Password) -> Result<String> {
    blocking(move || secrets::hash_password(password.as_ref()))
        .await?
        .map_err(|e| ApiError::Internal(anyhow::anyhow!("Failed to hash a password: {e}")))
}

/// Whether `password` matches each of `hashes`, in order (every hash is tried, so the work
/// does not depend on which one matches).
pub async fn verify_each(password: String, hashes: Vec<String>) -> Result<Vec<bool>> {
    blocking(move || {
        hashes
            .iter()
            .map(|h| secrets::verify_password(&password, h))
            .collect()
    })
    .await
}
