//! Enqueueing from a request: a job written to the outbox in the request's transaction, so it
//! exists exactly when the write it follows commits (the relay moves it to Redis).

use shared::{
    db,
    jobs::{EnqueueOptions, Job},
};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    error::{ApiError, Result},
    request_id,
};

/// Writes a job to the outbox in the caller's transaction, tagged with the request id; returns
/// its id.
pub async fn enqueue<J: Job>(tx: &mut PgConnection, job: &J) -> Result<Uuid> {
    let new = shared::jobs::enqueue(
        job,
        EnqueueOptions {
            request_id: Some(request_id::current()),
            ..EnqueueOptions::default()
        },
    )
    .map_err(|e| ApiError::Internal(anyhow::Error::new(e).context("Failed to encode a job")))?;
    db::outbox::enqueue(tx, &new).await?;
    Ok(new.id)
}
