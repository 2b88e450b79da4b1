//! The outbox relay: moves committed outbox rows to their Redis queues.
//!
//! Runs in every worker process: drain in batches, then again on each wake (a Redis `PUBLISH`
//! that whoever committed outbox rows sends after the commit, see
//! [`shared::queue::OutboxWaker`]) or after the poll interval (`OUTBOX_POLL_MS`: the fallback for
//! a wake never sent), with up to two drains at once. Several relays and passes share the
//! backlog (`FOR UPDATE SKIP LOCKED`); a relay that dies between pushing and deleting pushes
//! again harmlessly, because the job id is fixed in the row and the enqueue script ignores an id
//! it already holds. Postgres or Redis being down is logged, counted and retried with backoff;
//! the relay only returns when asked to stop. The SQL lives in [`shared::db::outbox`].

use std::{pin::Pin, time::Duration};

use anyhow::Context as _;
use futures::{Stream, StreamExt as _};
use shared::{
    db::outbox,
    queue::{NewJob, Queues},
};
use sqlx::PgPool;

use super::Stop;

/// Rows one relay pass moves at most.
const BATCH: i64 = 1000;

/// Moves one batch from the outbox to Redis; returns how many rows it moved.
pub async fn relay_once(pool: &PgPool, queues: &Queues) -> anyhow::Result<usize> {
    let mut tx = pool
        .begin()
        .await
        .context("Failed to begin relay transaction")?;
    let jobs = outbox::lock_batch(&mut tx, BATCH)
        .await
        .context("Failed to read the outbox")?;
    if jobs.is_empty() {
        return Ok(0);
    }
    let ids: Vec<_> = jobs.iter().map(|j| j.id).collect();
    let mut by_queue: std::collections::BTreeMap<String, Vec<NewJob>> = Default::default();
    for job in jobs {
        by_queue.entry(job.queue.clone()).or_default().push(job);
    }
    for (queue, jobs) in &by_queue {
        queues
            .push_many(queue, jobs)
            .await
            .with_context(|| format!("Failed to push outbox jobs to queue {queue}"))?;
    }
    outbox::delete(&mut tx, &ids)
        .await
        .context("Failed to delete relayed outbox rows")?;
    tx.commit()
        .await
        .context("Failed to commit relay transaction")?;
    metrics::counter!("comet_outbox_relayed_total").increment(ids.len() as u64);
    Ok(ids.len())
}

/// Passes one relay runs at once. Two: a wake that arrives while a pass is running starts
/// another at once instead of waiting for it (the wait was the relay's latency tail under load,
/// BENCHMARKS.md, "Notifications"); `SKIP LOCKED` keeps their rows apart.
const PASSES: usize = 2;

/// Moves batches until the outbox has fewer than a batch left.
async fn drain(pool: PgPool, queues: Queues) -> anyhow::Result<()> {
    while relay_once(&pool, &queues).await? as i64 == BATCH {}
    Ok(())
}

/// Runs the relay until `stop` resolves: drain, then again on each wake (Redis pub/sub, see
/// [`shared::queue::OutboxWaker`]) or after the poll interval; at most [`PASSES`] drains at
/// once, and a wake while they all run starts one more as soon as one ends. At the stop, the
/// passes running are waited for.
pub async fn run(pool: PgPool, queues: Queues, poll: Duration, stop: Stop) -> anyhow::Result<()> {
    let stop = stop.requested();
    tokio::pin!(stop);
    let mut wakes: Option<Pin<Box<dyn Stream<Item = ()> + Send>>> = None;
    let mut backoff = Duration::from_millis(100);
    let mut wait = poll;
    let mut passes = tokio::task::JoinSet::new();
    // a drain is due: at the start, and after every wake or poll
    let mut due = true;
    loop {
        if wakes.is_none() {
            // subscribed before the pass below, so a wake sent during it is not lost
            let subscribe = tokio::time::timeout(Duration::from_secs(5), queues.outbox_wakes());
            match subscribe.await {
                Ok(Ok(s)) => {
                    wakes = Some(Box::pin(s));
                    // a wake may have been missed while unsubscribed
                    due = true;
                }
                Ok(Err(e)) => {
                    tracing::warn!(error = %e, "outbox relay could not subscribe to wakes; polling")
                }
                Err(_) => tracing::warn!("outbox relay's subscription timed out; polling"),
            }
        }
        if due && passes.len() < PASSES {
            due = false;
            passes.spawn(drain(pool.clone(), queues.clone()));
        }
        let woken = async {
            match wakes.as_mut() {
                Some(w) => w.next().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = &mut stop => {
                while passes.join_next().await.is_some() {}
                return Ok(());
            }
            () = tokio::time::sleep(wait) => due = true,
            wake = woken => match wake {
                Some(()) => due = true,
                None => {
                    tracing::warn!("outbox wake subscription lost; subscribing again");
                    wakes = None;
                }
            },
            // a pass that panicked counts as a failed one
            Some(done) = passes.join_next() => match done.map_err(anyhow::Error::from).and_then(|r| r) {
                Ok(()) => {
                    backoff = Duration::from_millis(100);
                    wait = poll;
                }
                Err(e) => {
                    metrics::counter!("comet_outbox_relay_errors_total").increment(1);
                    tracing::warn!(
                        error = format!("{e:#}"),
                        "outbox relay failed; retrying with backoff"
                    );
                    wait = backoff;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            },
        }
    }
}
