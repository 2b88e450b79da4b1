//! Runs `ping`: answers at once, or as its diagnostic options ask.

use std::time::Duration;

use apalis_core::{
    error::{AbortError, BoxDynError},
    task::data::Data,
};
use redis::AsyncCommands;
use serde::Serialize;
use shared::{
    jobs::{MAX_SLEEP_MS, Ping},
    queue::backend::JobHandle,
};

use crate::JobContext;

/// What a ping answers: who ran it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pong {
    /// The worker that ran it.
    pub worker: String,
    /// The attempt that succeeded.
    pub attempt: u32,
}

/// The apalis handler.
pub async fn run(job: Ping, ctx: Data<JobContext>, handle: JobHandle) -> Result<Pong, BoxDynError> {
    if job.record {
        let mut conn = ctx.queues.connection();
        let key = format!("{}pongs", ctx.queues.base("ping"));
        let _: i64 = conn.hincr(key, handle.id.to_string(), 1).await?;
    }
    if job.sleep_ms > 0 {
        tokio::time::sleep(Duration::from_millis(job.sleep_ms.min(MAX_SLEEP_MS))).await;
    }
    if job.fail_permanently {
        return Err(AbortError::new("ping asked to fail permanently").into());
    }
    if handle.attempt <= job.fail_attempts {
        return Err(format!(
            "ping asked to fail attempts 1..={} (this is attempt {})",
            job.fail_attempts, handle.attempt
        )
        .into());
    }
    Ok(Pong {
        worker: handle.worker.to_string(),
        attempt: handle.attempt,
    })
}
