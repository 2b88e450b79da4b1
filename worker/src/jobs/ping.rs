//! Runs `ping`: answers at once, or as its diagnostic options ask.

use std::time::Duration;

use apalis_core::error::{AbortError, BoxDynError};
use redis::AsyncCommands;
use serde::Serialize;
use shared::{
    jobs::{MAX_SLEEP_MS, Ping},
    queue::backend::JobHandle,
};

use super::Handler;
use crate::context::JobContext;

/// What a ping answers: who ran it.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Pong {
    /// The worker that ran it.
    pub worker: String,
    /// The attempt that succeeded.
    pub attempt: u32,
}

impl Handler for Ping {
    type Output = Pong;

    fn run(
        self,
        ctx: &JobContext,
        handle: &JobHandle,
    ) -> impl Future<Output = Result<Pong, BoxDynError>> + Send {
        ping(self, ctx, handle)
    }
}

async fn ping(job: Ping, ctx: &JobContext, handle: &JobHandle) -> Result<Pong, BoxDynError> {
    if job.record {
        let mut conn = ctx.queues.connection();
        let key = format!("{}pongs", ctx.queues.base("ping"));
        let _: i64 = conn.hincr(key, handle.id.to_string(), 1).await?;
    }
    let total = job.sleep_ms.min(MAX_SLEEP_MS);
    if total >= 1000 {
        // A long ping reports its progress, as every long job does, in ten steps.
        for step in 1..=10u64 {
            tokio::time::sleep(Duration::from_millis(total / 10)).await;
            let progress =
                serde_json::json!({ "done": step * 10, "total": 100, "unit": "percent" });
            if let Err(e) = handle.progress(&progress).await {
                tracing::warn!(error = %e, "could not record progress");
            }
        }
    } else if total > 0 {
        tokio::time::sleep(Duration::from_millis(total)).await;
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
