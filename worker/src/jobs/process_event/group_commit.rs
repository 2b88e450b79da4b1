//! `process_event`'s writes, group-committed ([`shared::group_commit`]): the results of events
//! processed at the same moment share one transaction, one statement per project and one
//! commit (one WAL flush), instead of one of each per event. Postgres CPU per event was what
//! bounded `process_event` (about 6 ms of backend time per event, most of it planning and
//! committing a statement written for one event; BENCHMARKS.md).
//!
//! Each handler evaluates its event's rules itself, concurrently, then hands its writes to the
//! process's [`EventWriter`] and waits: its job succeeds only once its writes have committed,
//! as before. Idempotency is unchanged: a batch is the union of what its events' runs would
//! write alone, on the same unique keys; two runs of one event are never in one batch.
//!
//! In-app delivery is part of the batch: the recipients of in-app notifications are inserted
//! delivered and their feed entries appended by the same statement
//! ([`db::notifications::create_for_events`]), and after the commit the entries are published to
//! the users' streams ([`shared::inbox::publish_rendered`]), rendered from what the batch wrote
//! (a notification this run created is, at the commit, exactly that: no read back, so nothing
//! stands between the commit and the publish that could let a later batch's publish overtake
//! it, which costs every stream concerned a read of its feed). No `deliver_notification` job is made for
//! the in-app channel of a rule's notification: it would cost a job, a relay pass and about ten
//! Postgres round trips per notification for what one statement per batch does (BENCHMARKS.md,
//! "Events and rules"). A publish that fails leaves the delivery committed; the notifications
//! are then handed to `deliver_notification` in-app jobs, whose run publishes the committed
//! entries again (streams drop what they have). A re-run of an event whose notifications an
//! earlier run stored does the same, for a crash between that run's commit and its publish.

use anyhow::Context as _;
use shared::{
    db::{
        self,
        inbox::{FeedEntry, InboxRow, RenderedEntry},
        notifications::{Created, EventMatches},
    },
    group_commit::{BatchWrite, GroupCommit},
    inbox,
    jobs::{Channel, DeliverNotification, EnqueueOptions, Job as _, RuleDigest, delivery_jobs},
    queue::{NewJob, OutboxWaker, Queues},
};
use sqlx::PgPool;
use uuid::Uuid;

/// The most events one batch writes.
pub const MAX_BATCH: usize = 64;

/// Batches written at the same time (each holds one Postgres connection while it commits).
pub const IN_FLIGHT: usize = 2;

/// How long a batch's publish may take before its entries are handed to re-publishing jobs.
const PUBLISH_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// A digest job runs this long after its period closes: matches decided just before the close
/// have committed by then.
const DIGEST_GRACE_MS: i64 = 2_000;

/// What one event's run writes.
#[derive(Debug, Clone)]
pub struct Write {
    /// The event's project.
    pub project_id: Uuid,
    /// The event, its notifications and the rules it matched.
    pub matches: EventMatches,
    /// Suppression periods this event opened: their digest jobs.
    pub digests: Vec<RuleDigest>,
    /// The request id the delivery jobs carry.
    pub request_id: Option<String>,
}

/// What one event's writes did.
#[derive(Debug, Clone, Default)]
pub struct Written {
    /// The event's notifications and recipients.
    pub created: Created,
    /// Delivery jobs enqueued for it.
    pub deliveries: usize,
}

/// The process's writer of events' results.
pub type EventWriter = GroupCommit<Writer>;

/// Starts the process's [`EventWriter`].
pub fn spawn(pool: PgPool, queues: Queues, outbox: OutboxWaker) -> EventWriter {
    GroupCommit::spawn(
        Writer {
            pool,
            queues,
            outbox,
        },
        MAX_BATCH,
        IN_FLIGHT,
    )
}

/// Writes batches of events' results (see [`write_many`]), wakes the relays, and publishes the
/// in-app deliveries.
pub struct Writer {
    pool: PgPool,
    queues: Queues,
    outbox: OutboxWaker,
}

impl BatchWrite for Writer {
    type Item = Write;
    type Output = Written;
    type Key = (Uuid, Uuid);

    fn key(w: &Write) -> (Uuid, Uuid) {
        (w.project_id, w.matches.event_id)
    }

    async fn write(&self, writes: &[&Write]) -> anyhow::Result<Vec<Written>> {
        let Batch { results, feeds } = write_many(&self.pool, writes).await?;
        if results.iter().any(|r| r.deliveries > 0) || writes.iter().any(|w| !w.digests.is_empty())
        {
            self.outbox.wake();
        }
        for feed in feeds {
            self.publish(writes, feed).await;
        }
        Ok(results)
    }

    fn name(&self) -> &'static str {
        "process_event"
    }
}

impl Writer {
    /// Publishes a project's committed in-app entries; on failure hands their notifications to
    /// in-app delivery jobs, which publish them again (see the module docs).
    async fn publish(&self, writes: &[&Write], feed: ProjectFeed) {
        let ProjectFeed {
            project_id,
            rendered,
            unrendered,
        } = feed;
        // bounded: every event being processed waits for this batch's writer
        let published = tokio::time::timeout(PUBLISH_TIMEOUT, async {
            inbox::publish_rendered(&self.queues, project_id, &rendered).await?;
            // entries of notifications an earlier run created: read as they are now
            inbox::publish(&self.pool, &self.queues, project_id, &unrendered).await
        })
        .await;
        let e = match published {
            Ok(Ok(())) => return,
            Ok(Err(e)) => e.to_string(),
            Err(_) => format!("no answer within {PUBLISH_TIMEOUT:?}"),
        };
        metrics::counter!("comet_inbox_publish_failed_total").increment(1);
        tracing::warn!(error = %e, %project_id, "in-app delivery committed but not pushed live");
        let mut notifications: Vec<Uuid> = (rendered.iter().map(|r| &r.entry))
            .chain(&unrendered)
            .map(|e| e.notification_id)
            .collect();
        notifications.sort_unstable();
        notifications.dedup();
        let request_id = writes
            .iter()
            .find(|w| w.project_id == project_id)
            .and_then(|w| w.request_id.as_deref());
        let mut jobs = Vec::new();
        let queued = async {
            republish_jobs(project_id, &notifications, request_id, &mut jobs)?;
            let mut tx = self.pool.begin().await?;
            db::outbox::insert_many(&mut tx, &jobs).await?;
            tx.commit().await?;
            anyhow::Ok(())
        };
        match queued.await {
            Ok(()) => self.outbox.wake(),
            // the streams re-read their feeds when their own Redis subscription comes back
            Err(e) => tracing::error!(error = %e, %project_id,
                "could not queue the in-app entries' publish: streams see them at their next resync"),
        }
    }
}

/// In-app delivery jobs for `notifications`, delivered already: their run publishes the
/// committed feed entries again.
fn republish_jobs(
    project_id: Uuid,
    notifications: &[Uuid],
    request_id: Option<&str>,
    jobs: &mut Vec<NewJob>,
) -> anyhow::Result<()> {
    for &notification_id in notifications {
        let job = DeliverNotification {
            project_id,
            notification_id,
            channel: Channel::InApp,
            user_id: None,
        };
        let opts = EnqueueOptions {
            request_id: request_id.map(str::to_owned),
            // not the delivery's key (`deliver:<n>:inApp`): that may be taken by an earlier
            // job, and a second re-publish must run too (a duplicate one is harmless)
            idempotency_key: None,
            ..job.enqueue_options()
        };
        jobs.push(job.to_new_job(opts)?);
    }
    Ok(())
}

/// What a batch wrote: one result per write, and per project the feed entries to publish.
struct Batch {
    results: Vec<Written>,
    feeds: Vec<ProjectFeed>,
}

/// A project's feed entries written by a batch.
struct ProjectFeed {
    project_id: Uuid,
    /// Entries of notifications the batch created, rendered from what it wrote.
    rendered: Vec<RenderedEntry>,
    /// Entries of notifications an earlier run created (a recipient added by a re-run).
    unrendered: Vec<FeedEntry>,
}

/// Writes `writes` (sorted by project, distinct events) in one transaction: per project one
/// statement for the notifications, recipients, in-app deliveries (counters and feed entries)
/// and processed marks, then one insert of every delivery job, then the digests.
async fn write_many(pool: &PgPool, writes: &[&Write]) -> anyhow::Result<Batch> {
    let mut tx = pool
        .begin_with(db::notifications::BEGIN_BATCH)
        .await
        .context("Failed to begin")?;
    let mut results = Vec::with_capacity(writes.len());
    let mut feeds = Vec::new();
    let mut jobs: Vec<NewJob> = Vec::new();
    for group in writes.chunk_by(|a, b| a.project_id == b.project_id) {
        let project_id = group[0].project_id;
        let matches: Vec<EventMatches> = group.iter().map(|w| w.matches.clone()).collect();
        let mut created = db::notifications::create_for_events(&mut tx, project_id, &matches)
            .await
            .context("Failed to store the notifications and mark the events processed")?;
        let mut entries = Vec::new();
        let mut rows: std::collections::HashMap<Uuid, InboxRow> = std::collections::HashMap::new();
        for w in group {
            // an event no longer in the project (deleted since its read) wrote nothing
            let mut created = created
                .iter()
                .position(|(e, _)| *e == w.matches.event_id)
                .map(|i| created.swap_remove(i).1)
                .unwrap_or_default();
            let before = jobs.len();
            delivery_jobs(
                project_id,
                &created.new,
                w.request_id.as_deref(),
                &mut jobs,
            )
            .context("Failed to build the delivery jobs")?;
            let deliveries = jobs.len() - before;
            republish_jobs(
                project_id,
                &created.in_app_earlier,
                w.request_id.as_deref(),
                &mut jobs,
            )
            .context("Failed to build the in-app publish jobs")?;
            rows.extend(
                created
                    .new_rows
                    .drain(..)
                    .map(|r| (r.notification_id, r)),
            );
            entries.extend(created.in_app.iter().cloned());
            results.push(Written {
                deliveries,
                created,
            });
        }
        if !entries.is_empty() {
            let (mut rendered, mut unrendered) = (Vec::new(), Vec::new());
            for entry in entries {
                match rows.get(&entry.notification_id) {
                    Some(row) => rendered.push(RenderedEntry {
                        entry,
                        row: Some(row.clone()),
                    }),
                    None => unrendered.push(entry),
                }
            }
            // as a read would return them: by user, then seq
            rendered.sort_by_key(|r| (r.entry.user_id, r.entry.seq));
            feeds.push(ProjectFeed {
                project_id,
                rendered,
                unrendered,
            });
        }
    }
    db::outbox::insert_many(&mut tx, &jobs)
        .await
        .context("Failed to enqueue the deliveries")?;
    for w in writes {
        for digest in &w.digests {
            // when the period closes, plus a moment for matches decided just before it to commit
            let run_at =
                chrono::DateTime::from_timestamp_millis(digest.period_end_ms + DIGEST_GRACE_MS);
            let opts = EnqueueOptions {
                run_at,
                idempotency_key: Some(digest.idempotency_key()),
                request_id: w.request_id.clone(),
                ..EnqueueOptions::default()
            };
            digest
                .enqueue(&mut tx, opts)
                .await
                .context("Failed to enqueue the suppression digest")?;
        }
    }
    tx.commit().await.context("Failed to commit")?;
    let delivered: usize = feeds
        .iter()
        .map(|f| f.rendered.len() + f.unrendered.len())
        .sum();
    metrics::counter!("comet_inbox_delivered_total").increment(delivered as u64);
    metrics::counter!("comet_deliveries_total", "channel" => "inApp", "outcome" => "ok")
        .increment(delivered as u64);
    Ok(Batch { results, feeds })
}
