//! Waking the outbox relays after a commit, without `NOTIFY` (which takes a global lock at
//! commit and serialises every ingest transaction): a Redis `PUBLISH` on the deployment's
//! channel `<REDIS_PREFIX>:outbox:wake`, which every relay subscribes to.
//!
//! Whoever commits a transaction that wrote to the outbox calls [`OutboxWaker::wake`] after
//! the commit. It never waits: it hands the wake to the process's one publisher task, which
//! coalesces wakes that arrive while it publishes (every wake is followed by a publish that
//! starts after it). A process that dies between its commit and the publish leaves the row to
//! the relays' poll (`OUTBOX_POLL_MS`), as does a publish that fails (counted in
//! `comet_outbox_wake_errors_total`).

use futures::Stream;
use tokio::sync::mpsc;

use super::{QueueError, Queues};
use crate::redis_client::Channel;

impl Queues {
    /// The outbox relays' wake channel of this deployment (under its key prefix).
    pub fn outbox_wake_channel(&self) -> String {
        format!("{}:outbox:wake", self.prefix)
    }

    /// Wakes every outbox relay of the deployment now (one `PUBLISH`).
    pub async fn publish_outbox_wake(&self) -> Result<(), QueueError> {
        let mut conn = self.conn.clone();
        let _: i64 = redis::cmd("PUBLISH")
            .arg(self.outbox_wake_channel())
            .arg("")
            .query_async(&mut conn)
            .await?;
        Ok(())
    }

    /// Subscribes to the outbox wake channel on a connection of its own: an item per wake; the
    /// stream ends when the subscription is lost (`RedisClient::subscribe`: subscribe again,
    /// and relay once: a wake may have been missed meanwhile).
    pub async fn outbox_wakes(&self) -> Result<impl Stream<Item = ()> + Send + use<>, QueueError> {
        let channels = [Channel::Plain(self.outbox_wake_channel())];
        let messages = self.client.subscribe(&channels).await?;
        Ok(futures::StreamExt::map(messages, |_| ()))
    }
}

/// The process's handle on its outbox wake publisher (cheap to clone).
#[derive(Debug, Clone)]
pub struct OutboxWaker {
    tx: mpsc::Sender<()>,
}

impl OutboxWaker {
    /// Starts the publisher task on the current tokio runtime; it ends when the last clone of
    /// the handle is dropped. Outside a runtime there is no task: wakes are dropped and the
    /// relays' poll moves the rows.
    pub fn spawn(queues: Queues) -> Self {
        // one slot: a wake that finds one already waiting is that one
        let (tx, mut rx) = mpsc::channel::<()>(1);
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            tracing::warn!("no tokio runtime: outbox wakes are not published");
            return Self { tx };
        };
        runtime.spawn(async move {
            while rx.recv().await.is_some() {
                if let Err(e) = queues.publish_outbox_wake().await {
                    metrics::counter!("comet_outbox_wake_errors_total").increment(1);
                    tracing::warn!(error = %e, "could not wake the outbox relays; they will poll");
                }
            }
        });
        Self { tx }
    }

    /// Wakes the relays: call after committing a transaction that wrote to the outbox. Never
    /// waits (the publish happens on the publisher task, coalesced with other wakes).
    pub fn wake(&self) {
        // full: a wake is already waiting, and its publish comes after this call
        let _ = self.tx.try_send(());
    }
}
