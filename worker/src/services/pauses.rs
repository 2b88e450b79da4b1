//! Paused queues, from Postgres into Redis: every [`PERIOD`] each worker copies the lasting
//! state (`queue_pauses`, written by `POST /api/v1/queues/{queue}/pause` and `/resume`) into
//! the queues' Redis flags, which the fetch script reads. The route writes both at once; this
//! loop makes a pause survive a Redis restart (Redis keeps nothing on disk here) and heals a
//! flag the route could not write. Errors are logged and retried next period.

use std::{collections::BTreeSet, time::Duration};

use anyhow::Context as _;
use shared::{db, jobs::QUEUES, queue::Queues};
use sqlx::PgPool;

use super::Stop;

/// How often the flags are copied.
pub const PERIOD: Duration = Duration::from_secs(2);

/// Copies the paused queues into Redis once; returns them.
pub async fn sync_once(pool: &PgPool, queues: &Queues) -> anyhow::Result<BTreeSet<String>> {
    let paused: BTreeSet<String> = db::queue_pauses::all(pool)
        .await
        .context("Failed to read the paused queues")?
        .into_iter()
        .map(|(q, _)| q)
        .collect();
    for q in QUEUES {
        queues
            .set_paused(q, paused.contains(*q))
            .await
            .context("Failed to set a queue's pause flag")?;
    }
    Ok(paused)
}

/// Runs [`sync_once`] every [`PERIOD`] until stopped.
pub async fn run(pool: PgPool, queues: Queues, stop: Stop) -> anyhow::Result<()> {
    let mut last: Option<BTreeSet<String>> = None;
    loop {
        match sync_once(&pool, &queues).await {
            Ok(paused) => {
                if last.as_ref() != Some(&paused) {
                    tracing::info!(paused = ?paused, "paused queues");
                }
                last = Some(paused);
            }
            Err(e) => tracing::warn!(
                error = format!("{e:#}"),
                "paused queues not copied to Redis; retrying"
            ),
        }
        tokio::select! {
            () = stop.clone().requested() => return Ok(()),
            () = tokio::time::sleep(PERIOD) => {}
        }
    }
}
