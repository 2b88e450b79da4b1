//! Enqueueing from a request: a job written to the outbox in the request's transaction, so it
//! exists exactly when the write it follows commits (the relay moves it to Redis).

use shared::jobs::{EnqueueOptions, Job};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{error::Result, request_id};

/// Writes a job to the outbox in the caller's transaction, tagged with the request id; returns
/// its id.
pub async fn enqueue<J: Job>(tx: &mut PgConnection, job: &J) -> Result<Uuid> {
    let opts = EnqueueOptions::for_request(request_id::current());
    Ok(job.enqueue(tx, opts).await?)
}
