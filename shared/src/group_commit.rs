//! Group commit: writes that arrive at the same moment from concurrent tasks (requests, job
//! handlers) share one transaction and one commit, instead of one of each per write. Postgres
//! pays per statement (planning, round trip) and per commit (a WAL flush); a write of 64 rows
//! costs far less than 64 writes of one.
//!
//! A caller hands its item to a [`GroupCommit`] and waits for its own answer: it returns only
//! once its item has committed, so nothing is acknowledged before it is durable. A writer task
//! takes whatever has queued (at most `max_batch` items) and writes it while the next batch
//! queues. An item alone is written at once, with no timer: batching adds no latency at low
//! rates and grows with the load. At most `in_flight` batches are written at once.
//!
//! Failure isolation: a batch that fails is written again one item at a time, so one bad item
//! fails only its own caller; unless Postgres could not be reached ([`unreachable`]), which
//! fails every item of the batch at once rather than waiting for the pool once per item. Items with the same [`BatchWrite::key`] are never in one batch
//! (the later ones are written alone after it), and a batch is sorted by key, so two batches
//! lock rows in one order.

use std::{collections::HashSet, future::Future, hash::Hash, sync::Arc};

use tokio::sync::{Semaphore, mpsc, oneshot};

/// How a batch of items is written: in one transaction, one output per item, in order.
pub trait BatchWrite: Send + Sync + 'static {
    /// One caller's write.
    type Item: Send + Sync + 'static;
    /// What the caller gets back.
    type Output: Send + 'static;
    /// Identifies items that must not share a batch (and orders a batch).
    type Key: Ord + Hash + Send;

    /// The item's key.
    fn key(item: &Self::Item) -> Self::Key;

    /// Writes `items` in one transaction; returns one output per item, in order. Any error
    /// means nothing was written.
    fn write(
        &self,
        items: &[&Self::Item],
    ) -> impl Future<Output = anyhow::Result<Vec<Self::Output>>> + Send;

    /// A name for the metrics (`comet_group_commit_batch_size{writer}`).
    fn name(&self) -> &'static str;
}

/// Every item of a batch failed because Postgres could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("the database could not be reached: {0}")]
pub struct Unreachable(String);

/// Whether `e` (or an error it wraps) says Postgres could not be reached (a pool timeout, an
/// I/O error, a closed pool), as opposed to a failure of the items themselves.
pub fn unreachable(e: &anyhow::Error) -> bool {
    e.chain().any(|c| {
        c.is::<Unreachable>()
            || matches!(
                c.downcast_ref::<sqlx::Error>(),
                Some(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed)
            )
    })
}

/// Exports this module's metrics at zero for `writers` (the [`BatchWrite::name`]s a process
/// runs), so they are on `/metrics` from start-up.
pub fn metrics_at_zero(writers: &[&str]) {
    use crate::telemetry::{MetricKind, export_at_zero};
    for (kind, name, help) in [
        (
            MetricKind::Histogram,
            "comet_group_commit_batch_size",
            "Writes committed together in one transaction, by writer",
        ),
        (
            MetricKind::Counter,
            "comet_group_commit_split_total",
            "Group-commit batches that failed and were written again one item at a time, by writer",
        ),
    ] {
        export_at_zero(
            kind,
            name,
            help,
            writers.iter().map(|w| vec![("writer", (*w).to_owned())]),
        );
    }
}

type Reply<O> = oneshot::Sender<anyhow::Result<O>>;

/// The handle callers write through: cheap to clone, one writer task behind it.
pub struct GroupCommit<B: BatchWrite> {
    tx: mpsc::UnboundedSender<(B::Item, Reply<B::Output>)>,
}

impl<B: BatchWrite> Clone for GroupCommit<B> {
    fn clone(&self) -> Self {
        Self {
            tx: self.tx.clone(),
        }
    }
}

impl<B: BatchWrite> std::fmt::Debug for GroupCommit<B> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("GroupCommit").finish_non_exhaustive()
    }
}

impl<B: BatchWrite> GroupCommit<B> {
    /// Starts the writer task on the current runtime: batches of at most `max_batch` items, at
    /// most `in_flight` written at once (each holds a Postgres connection while it commits).
    pub fn spawn(writer: B, max_batch: usize, in_flight: usize) -> Self {
        let (tx, rx) = mpsc::unbounded_channel();
        tokio::spawn(run(
            Arc::new(writer),
            rx,
            max_batch.max(1),
            in_flight.max(1),
        ));
        Self { tx }
    }

    /// Writes `item` with whichever others are waiting; returns once they have committed (or
    /// failed: nothing of this item was written).
    pub async fn write(&self, item: B::Item) -> anyhow::Result<B::Output> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((item, reply))
            .map_err(|_| anyhow::anyhow!("the group commit writer has stopped"))?;
        answer
            .await
            .map_err(|_| anyhow::anyhow!("the group commit writer dropped the write"))?
    }
}

async fn run<B: BatchWrite>(
    writer: Arc<B>,
    mut rx: mpsc::UnboundedReceiver<(B::Item, Reply<B::Output>)>,
    max_batch: usize,
    in_flight: usize,
) {
    let permits = Arc::new(Semaphore::new(in_flight));
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let Some(first) = rx.recv().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < max_batch {
            match rx.try_recv() {
                Ok(item) => batch.push(item),
                Err(_) => break,
            }
        }
        let writer = writer.clone();
        tokio::spawn(async move {
            write_batch(&*writer, batch).await;
            drop(permit);
        });
    }
}

async fn write_batch<B: BatchWrite>(writer: &B, batch: Vec<(B::Item, Reply<B::Output>)>) {
    metrics::histogram!("comet_group_commit_batch_size", "writer" => writer.name())
        .record(batch.len() as f64);
    let mut seen = HashSet::new();
    let (mut together, mut alone): (Vec<_>, Vec<_>) = (Vec::new(), Vec::new());
    for item in batch {
        if seen.insert(B::key(&item.0)) {
            together.push(item);
        } else {
            alone.push(item);
        }
    }
    together.sort_by_key(|(item, _)| B::key(item));
    if together.len() > 1 {
        let items: Vec<&B::Item> = together.iter().map(|(i, _)| i).collect();
        match writer.write(&items).await {
            Ok(outputs) if outputs.len() == together.len() => {
                for ((_, reply), out) in together.into_iter().zip(outputs) {
                    let _ = reply.send(Ok(out));
                }
            }
            Err(e) if unreachable(&e) => {
                let why = format!("{e:#}");
                for (_, reply) in together {
                    let _ = reply.send(Err(Unreachable(why.clone()).into()));
                }
                for (_, reply) in alone {
                    let _ = reply.send(Err(Unreachable(why.clone()).into()));
                }
                return;
            }
            result => {
                metrics::counter!("comet_group_commit_split_total", "writer" => writer.name())
                    .increment(1);
                let why = match result {
                    Ok(o) => format!("{} outputs for {} items", o.len(), together.len()),
                    Err(e) => format!("{e:#}"),
                };
                tracing::info!(writer = writer.name(), error = %why, items = together.len(),
                    "a batch failed; writing its items one by one");
                together.append(&mut alone);
                alone = together;
            }
        }
    } else {
        together.append(&mut alone);
        alone = together;
    }
    for (item, reply) in alone {
        let result = writer.write(&[&item]).await.and_then(|mut out| {
            out.pop()
                .ok_or_else(|| anyhow::anyhow!("the writer returned no output"))
        });
        let _ = reply.send(result);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// Records its batches; 13 fails any batch but its own, 66 fails every batch.
    struct Recorder {
        batches: Mutex<Vec<Vec<u32>>>,
    }

    impl BatchWrite for Recorder {
        type Item = u32;
        type Output = u32;
        type Key = u32;

        fn key(item: &u32) -> u32 {
            *item / 10
        }

        async fn write(&self, items: &[&u32]) -> anyhow::Result<Vec<u32>> {
            self.batches
                .lock()
                .expect("not poisoned")
                .push(items.iter().map(|i| **i).collect());
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
            if items.len() > 1 && items.iter().any(|i| **i == 13) {
                anyhow::bail!("13 spoils a batch");
            }
            if items.iter().any(|i| **i == 66) {
                anyhow::bail!("66 always fails");
            }
            Ok(items.iter().map(|i| **i * 2).collect())
        }

        fn name(&self) -> &'static str {
            "test"
        }
    }

    async fn write_all(items: &[u32]) -> (Vec<anyhow::Result<u32>>, Vec<Vec<u32>>) {
        let recorder = Arc::new(Recorder {
            batches: Mutex::default(),
        });
        struct Shared(Arc<Recorder>);
        impl BatchWrite for Shared {
            type Item = u32;
            type Output = u32;
            type Key = u32;
            fn key(item: &u32) -> u32 {
                Recorder::key(item)
            }
            async fn write(&self, items: &[&u32]) -> anyhow::Result<Vec<u32>> {
                self.0.write(items).await
            }
            fn name(&self) -> &'static str {
                "test"
            }
        }
        let gc = GroupCommit::spawn(Shared(recorder.clone()), 4, 1);
        let tasks: Vec<_> = items
            .iter()
            .map(|i| {
                let gc = gc.clone();
                let i = *i;
                tokio::spawn(async move { gc.write(i).await })
            })
            .collect();
        let mut results = Vec::new();
        for t in tasks {
            results.push(t.await.expect("the task ran"));
        }
        let batches = recorder.batches.lock().expect("not poisoned").clone();
        (results, batches)
    }

    #[tokio::test]
    async fn concurrent_writes_share_batches_and_each_gets_its_own_answer() {
        let items: Vec<u32> = (0..9).map(|i| i * 10).collect();
        let (results, batches) = write_all(&items).await;
        for (i, r) in items.iter().zip(&results) {
            assert_eq!(*r.as_ref().expect("written"), i * 2);
        }
        // the first write goes alone (nothing queued yet); the rest queue behind it
        assert!(batches.len() < items.len(), "no batching: {batches:?}");
        assert!(batches.iter().all(|b| b.len() <= 4), "{batches:?}");
        for b in &batches {
            let mut sorted = b.clone();
            sorted.sort_unstable();
            assert_eq!(&sorted, b, "a batch is written in key order");
        }
    }

    #[tokio::test]
    async fn a_bad_item_fails_alone_and_spares_its_batch() {
        let (results, batches) = write_all(&[0, 20, 13, 66, 40, 50]).await;
        let by_item: Vec<(u32, bool)> = [0, 20, 13, 66, 40, 50]
            .into_iter()
            .zip(results.iter().map(Result::is_ok))
            .collect();
        assert_eq!(
            by_item,
            vec![
                (0, true),
                (20, true),
                (13, true),
                (66, false),
                (40, true),
                (50, true)
            ],
            "batches: {batches:?}"
        );
    }

    #[tokio::test]
    async fn items_with_one_key_never_share_a_batch() {
        let (results, batches) = write_all(&[10, 11, 12, 13, 14]).await;
        assert!(results.iter().all(Result::is_ok));
        assert!(batches.iter().all(|b| b.len() == 1), "{batches:?}");
    }
}
