//! The in-app inbox: delivering a notification into its recipients' inboxes and pushing it
//! live, and the changes a user makes (acknowledge, acknowledge all, delete) with their pushes,
//! so that every open stream of every recipient stays in step.
//!
//! Every change is written in one transaction with an entry per affected user in the user's
//! feed (`inbox_feed`, numbered per user; see [`crate::db::inbox`] for why a user's numbers
//! commit in order). After the commit the entries are rendered and published on Redis pub/sub,
//! one channel per (project, user): [`channel`]. The API's stream forwards what its users'
//! channels carry, de-duplicated by seq, and reads whatever it missed back from the feed.
//!
//! A publish that fails leaves the change committed: the stream learns of it at the user's
//! next event (a gap in the seqs makes it read the feed) or after its pub/sub connection comes
//! back (it re-reads the feed of every open stream). [`deliver_in_app`] returns the failure so
//! that its job retries; the retry delivers nothing twice and publishes the same entries again,
//! which streams drop as duplicates.

pub mod streams;

use std::collections::HashSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use utoipa::ToSchema;
use uuid::Uuid;

use crate::{
    db::{
        inbox::{self as feed, FeedEntry, RenderedEntry},
        inbox_items::{self as items, InboxRow},
    },
    queue::Queues,
};

/// A notification as one of its recipients sees it in the inbox.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct InboxItem {
    /// Id (UUIDv7, time-ordered).
    pub id: Uuid,
    /// `rule` (a rule matched an event), `digest` (a suppressed rule's window) or `system`.
    pub kind: String,
    /// The rule (none for system notices).
    pub rule_id: Option<Uuid>,
    /// The event (rule matches only).
    pub event_id: Option<Uuid>,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Priority (higher first).
    pub priority: i32,
    /// The sound to play.
    pub sound: Option<String>,
    /// Structured data (digests and notices).
    #[schema(value_type = Option<Object>)]
    pub data: Option<serde_json::Value>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// When it reached this user's inbox.
    pub delivered_at: Option<DateTime<Utc>>,
    /// Not yet acknowledged by this user.
    pub unread: bool,
    /// When this user acknowledged it.
    pub read_at: Option<DateTime<Utc>>,
    /// The first recipient who acknowledged it (any recipient's inbox shows it).
    pub acknowledged_by: Option<Uuid>,
    /// When that was.
    pub acknowledged_at: Option<DateTime<Utc>>,
}

impl From<InboxRow> for InboxItem {
    fn from(r: InboxRow) -> Self {
        Self {
            id: r.notification_id,
            kind: r.kind,
            rule_id: r.rule_id,
            event_id: r.event_id,
            title: r.title,
            body: r.body,
            priority: r.priority,
            sound: r.sound,
            data: r.data,
            created_at: r.created_at,
            delivered_at: r.delivered_at,
            unread: r.read_at.is_none(),
            read_at: r.read_at,
            acknowledged_by: r.acknowledged_by,
            acknowledged_at: r.acknowledged_at,
        }
    }
}

/// The data of an `acknowledged` stream event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct AcknowledgedData {
    /// The notification.
    pub notification_id: Uuid,
    /// Its first acknowledger.
    pub acknowledged_by: Option<Uuid>,
    /// When.
    pub acknowledged_at: Option<DateTime<Utc>>,
    /// When this stream's user acknowledged it (null: still unread for them).
    pub read_at: Option<DateTime<Utc>>,
}

/// The data of a `deleted` stream event.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct DeletedData {
    /// The notification, gone from this user's inbox.
    pub notification_id: Uuid,
}

/// One event of a user's stream: what is published live and what a resume reads back.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StreamEvent {
    /// The user's feed seq: the SSE `id`.
    pub seq: i64,
    /// `notification`, `acknowledged` or `deleted`: the SSE `event`.
    pub event: String,
    /// The SSE `data` ([`InboxItem`], [`AcknowledgedData`] or [`DeletedData`]).
    pub data: serde_json::Value,
}

impl StreamEvent {
    /// A feed entry as its stream shows it (a notification since removed shows as deleted).
    pub fn from_rendered(r: &RenderedEntry) -> Self {
        let e = &r.entry;
        let deleted = || {
            (
                feed::DELETED,
                serde_json::json!(DeletedData {
                    notification_id: e.notification_id
                }),
            )
        };
        let (event, data) = match (&r.row, e.kind.as_str()) {
            (Some(row), feed::NOTIFICATION) => (
                feed::NOTIFICATION,
                serde_json::json!(InboxItem::from(row.clone())),
            ),
            (Some(row), feed::ACKNOWLEDGED) => (
                feed::ACKNOWLEDGED,
                serde_json::json!(AcknowledgedData {
                    notification_id: e.notification_id,
                    acknowledged_by: row.acknowledged_by,
                    acknowledged_at: row.acknowledged_at,
                    read_at: row.read_at,
                }),
            ),
            _ => deleted(),
        };
        Self {
            seq: e.seq,
            event: event.to_owned(),
            data,
        }
    }
}

/// The pub/sub channel of one user's stream events.
pub fn channel(prefix: &str, project_id: Uuid, user_id: Uuid) -> String {
    format!("{prefix}:inbox-live:{project_id}:{user_id}")
}

/// The pattern matching every user's channel (one subscription per API process).
pub fn channel_pattern(prefix: &str) -> String {
    format!("{prefix}:inbox-live:*")
}

/// The (project, user) of a channel of [`channel`].
pub fn parse_channel(prefix: &str, channel: &str) -> Option<(Uuid, Uuid)> {
    let rest = channel.strip_prefix(prefix)?.strip_prefix(":inbox-live:")?;
    let (p, u) = rest.split_once(':')?;
    Some((Uuid::parse_str(p).ok()?, Uuid::parse_str(u).ok()?))
}

/// Renders committed feed entries and publishes each on its user's channel.
pub async fn publish(
    pool: &PgPool,
    queues: &Queues,
    project_id: Uuid,
    entries: &[FeedEntry],
) -> Result<(), InboxError> {
    if entries.is_empty() {
        return Ok(());
    }
    let rendered = feed::render(pool, project_id, entries).await?;
    publish_rendered(queues, project_id, &rendered).await
}

/// Publishes entries rendered already (by their writer, from what it wrote): one pipeline, in
/// the given order.
pub async fn publish_rendered(
    queues: &Queues,
    project_id: Uuid,
    rendered: &[RenderedEntry],
) -> Result<(), InboxError> {
    if rendered.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    for r in rendered {
        let payload = serde_json::to_string(&StreamEvent::from_rendered(r))
            .map_err(|e| InboxError::Encode(e.to_string()))?;
        pipe.cmd("PUBLISH")
            .arg(channel(queues.prefix(), project_id, r.entry.user_id))
            .arg(payload)
            .ignore();
    }
    let mut conn = queues.connection();
    pipe.query_async::<()>(&mut conn).await?;
    metrics::counter!("comet_inbox_published_total").increment(rendered.len() as u64);
    Ok(())
}

/// Publishes, logging (not returning) a failure: for changes a user made, which are committed
/// and reach the streams at the next event or resync anyway.
async fn publish_logged(pool: &PgPool, queues: &Queues, project_id: Uuid, entries: &[FeedEntry]) {
    if let Err(e) = publish(pool, queues, project_id, entries).await {
        metrics::counter!("comet_inbox_publish_failed_total").increment(1);
        tracing::warn!(error = %e, %project_id, "inbox change committed but not pushed live");
    }
}

/// A failure of an inbox operation.
#[derive(Debug, thiserror::Error)]
pub enum InboxError {
    /// Postgres.
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    /// Redis (publishing): the change is committed; a retry publishes it again.
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    /// An event could not be encoded (a bug).
    #[error("encode: {0}")]
    Encode(String),
}

/// What in-app delivery did for one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InAppOutcome {
    /// Delivered now: in the user's inbox, at this seq of their feed.
    Delivered {
        /// The feed seq.
        seq: i64,
    },
    /// An earlier run delivered it (published again; streams drop the duplicate).
    AlreadyDelivered,
    /// The user is not a recipient of the notification.
    NotRecipient,
    /// The notification is suppressed (folded into a digest): nobody gets it.
    Suppressed,
    /// The user's in-app channel is off (`notification_preferences.in_app`).
    PreferenceOff,
    /// The user is no longer ACTIVE.
    Inactive,
    /// The notification does not exist (deleted since).
    NotificationGone,
}

impl InAppOutcome {
    /// Whether the user has it (now or before): the attempt's `ok`.
    pub fn is_delivered(self) -> bool {
        matches!(self, Self::Delivered { .. } | Self::AlreadyDelivered)
    }

    /// Why it was not delivered, for a `skipped` attempt (None when delivered).
    pub fn skip_reason(self) -> Option<&'static str> {
        match self {
            Self::Delivered { .. } | Self::AlreadyDelivered => None,
            Self::NotRecipient => Some("not a recipient"),
            Self::Suppressed => Some("suppressed"),
            Self::PreferenceOff => Some("in-app notifications off"),
            Self::Inactive => Some("user not active"),
            Self::NotificationGone => Some("notification deleted"),
        }
    }
}

/// Delivers a notification into the inboxes of `user_ids` (its recipients) and pushes it to
/// their open streams, wherever they are connected. Idempotent: a user delivered before is
/// not delivered again (`AlreadyDelivered`), and its feed entry is published again under the
/// same seq, which the streams drop as a duplicate. Returns one outcome per distinct user,
/// in user-id order.
///
/// In one transaction: the notification is locked `FOR SHARE` (an acknowledgement waits for
/// the delivery, so the delivered item and the acknowledgement push agree), the users' feed
/// rows are locked in id order, `notification_recipients.delivered_at` is set for the users
/// who are recipients, ACTIVE and have in-app on, and a `notification` entry is appended to
/// each one's feed. After the commit the entries are published.
///
/// An `Err` is retryable: a database error changed nothing; a Redis error
/// ([`InboxError::Redis`]) came after the commit, and a retry publishes again.
pub async fn deliver_in_app(
    pool: &PgPool,
    queues: &Queues,
    project_id: Uuid,
    notification_id: Uuid,
    user_ids: &[Uuid],
) -> Result<Vec<(Uuid, InAppOutcome)>, InboxError> {
    let mut users = user_ids.to_vec();
    users.sort_unstable();
    users.dedup();
    let mut tx = pool.begin().await?;
    let Some(suppressed) = feed::lock_for_delivery(&mut tx, project_id, notification_id).await?
    else {
        return Ok(all(&users, InAppOutcome::NotificationGone));
    };
    if suppressed {
        return Ok(all(&users, InAppOutcome::Suppressed));
    }
    let states = feed::recipients_state(&mut tx, project_id, notification_id, &users).await?;
    let eligible: Vec<Uuid> = states
        .iter()
        .filter(|s| !s.delivered && s.active && s.in_app)
        .map(|s| s.user_id)
        .collect();
    feed::lock_users(&mut tx, project_id, &eligible).await?;
    let delivered = feed::mark_delivered(&mut tx, project_id, notification_id, &eligible).await?;
    let new: Vec<(Uuid, &str, Uuid)> = delivered
        .iter()
        .map(|u| (*u, feed::NOTIFICATION, notification_id))
        .collect();
    let appended = feed::append(&mut tx, project_id, &new).await?;
    tx.commit().await?;

    // an earlier run's entries, published again (the streams drop what they have)
    let mut to_publish = appended.clone();
    to_publish.extend(delivered_entries(&states, notification_id));
    let outcomes = users
        .iter()
        .map(|u| {
            let outcome = if let Some(e) = appended.iter().find(|e| e.user_id == *u) {
                InAppOutcome::Delivered { seq: e.seq }
            } else {
                match states.iter().find(|s| s.user_id == *u) {
                    None => InAppOutcome::NotRecipient,
                    Some(s) if s.delivered => InAppOutcome::AlreadyDelivered,
                    Some(s) if !s.active => InAppOutcome::Inactive,
                    Some(s) if !s.in_app => InAppOutcome::PreferenceOff,
                    // a concurrent run delivered it between the read and the update
                    Some(_) => InAppOutcome::AlreadyDelivered,
                }
            };
            (*u, outcome)
        })
        .collect();
    metrics::counter!("comet_inbox_delivered_total").increment(appended.len() as u64);
    publish(pool, queues, project_id, &to_publish).await?;
    Ok(outcomes)
}

/// The feed entries by which `states`' recipients who have the notification got it (those the
/// feed still holds).
fn delivered_entries(
    states: &[feed::RecipientState],
    notification_id: Uuid,
) -> impl Iterator<Item = FeedEntry> + '_ {
    states.iter().filter(|s| s.delivered).filter_map(move |s| {
        s.seq.map(|seq| FeedEntry {
            user_id: s.user_id,
            seq,
            kind: feed::NOTIFICATION.to_owned(),
            notification_id,
        })
    })
}

/// Publishes again the entries by which `users` got the notification (those who have it): for
/// a delivery that committed but whose publish may not have happened (`process_event`'s
/// fallback; a crash between its commit and its publish). Streams drop what they have; nothing
/// is written. Returns how many entries were published.
pub async fn republish(
    pool: &PgPool,
    queues: &Queues,
    project_id: Uuid,
    notification_id: Uuid,
    users: &[Uuid],
) -> Result<usize, InboxError> {
    if users.is_empty() {
        return Ok(0);
    }
    let states = {
        let mut conn = pool.acquire().await?;
        feed::recipients_state(&mut conn, project_id, notification_id, users).await?
    };
    let entries: Vec<FeedEntry> = delivered_entries(&states, notification_id).collect();
    publish(pool, queues, project_id, &entries).await?;
    Ok(entries.len())
}

fn all(users: &[Uuid], outcome: InAppOutcome) -> Vec<(Uuid, InAppOutcome)> {
    users.iter().map(|u| (*u, outcome)).collect()
}

/// The user acknowledges a notification in their inbox: it becomes read for them, and if
/// nobody had acknowledged it, they are its acknowledger, pushed to every recipient's streams.
/// Acknowledging again changes nothing. None when it is not in the user's inbox.
pub async fn acknowledge(
    pool: &PgPool,
    queues: &Queues,
    project_id: Uuid,
    user_id: Uuid,
    notification_id: Uuid,
) -> Result<Option<InboxItem>, InboxError> {
    let mut tx = pool.begin().await?;
    let Some(acked) = items::lock_for_ack(&mut tx, project_id, user_id, notification_id).await?
    else {
        return Ok(None);
    };
    let mut holders = vec![user_id];
    if !acked {
        holders.extend(
            items::inbox_holders(&mut tx, project_id, &[notification_id])
                .await?
                .into_iter()
                .map(|(_, u)| u),
        );
    }
    feed::lock_users(&mut tx, project_id, &holders).await?;
    let first = !items::acknowledge(&mut tx, project_id, user_id, &[notification_id])
        .await?
        .is_empty();
    let read = !items::mark_read(&mut tx, project_id, user_id, &[notification_id])
        .await?
        .is_empty();
    holders.sort_unstable();
    holders.dedup();
    let targets: Vec<(Uuid, &str, Uuid)> = match (first, read) {
        (true, _) => holders
            .iter()
            .map(|u| (*u, feed::ACKNOWLEDGED, notification_id))
            .collect(),
        (false, true) => vec![(user_id, feed::ACKNOWLEDGED, notification_id)],
        (false, false) => Vec::new(),
    };
    let appended = feed::append(&mut tx, project_id, &targets).await?;
    let item = items::find(&mut *tx, project_id, user_id, notification_id).await?;
    tx.commit().await?;
    publish_logged(pool, queues, project_id, &appended).await;
    Ok(item.map(InboxItem::from))
}

/// The user acknowledges every unread notification of their inbox (as [`acknowledge`] each);
/// returns how many were unread.
pub async fn acknowledge_all(
    pool: &PgPool,
    queues: &Queues,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<u64, InboxError> {
    let mut tx = pool.begin().await?;
    let unread = items::lock_unread(&mut tx, project_id, user_id).await?;
    if unread.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = unread.iter().map(|(n, _)| *n).collect();
    let unacked: Vec<Uuid> = unread.iter().filter(|(_, a)| !a).map(|(n, _)| *n).collect();
    let holders = items::inbox_holders(&mut tx, project_id, &unacked).await?;
    let mut users: Vec<Uuid> = holders.iter().map(|(_, u)| *u).collect();
    users.push(user_id);
    feed::lock_users(&mut tx, project_id, &users).await?;
    let first: HashSet<Uuid> = items::acknowledge(&mut tx, project_id, user_id, &unacked)
        .await?
        .into_iter()
        .collect();
    let read = items::mark_read(&mut tx, project_id, user_id, &ids).await?;
    let mut targets: Vec<(Uuid, &str, Uuid)> = holders
        .iter()
        .filter(|(n, _)| first.contains(n))
        .map(|(n, u)| (*u, feed::ACKNOWLEDGED, *n))
        .collect();
    targets.extend(
        read.iter()
            .filter(|n| !first.contains(n))
            .map(|n| (user_id, feed::ACKNOWLEDGED, *n)),
    );
    let appended = feed::append(&mut tx, project_id, &targets).await?;
    tx.commit().await?;
    publish_logged(pool, queues, project_id, &appended).await;
    Ok(read.len() as u64)
}

/// The user deletes a notification from their inbox (soft: for them only), pushed to their
/// streams. False when it is not in their inbox.
pub async fn delete(
    pool: &PgPool,
    queues: &Queues,
    project_id: Uuid,
    user_id: Uuid,
    notification_id: Uuid,
) -> Result<bool, InboxError> {
    let mut tx = pool.begin().await?;
    feed::lock_users(&mut tx, project_id, &[user_id]).await?;
    if !items::soft_delete(&mut tx, project_id, user_id, notification_id).await? {
        return Ok(false);
    }
    let appended = feed::append(
        &mut tx,
        project_id,
        &[(user_id, feed::DELETED, notification_id)],
    )
    .await?;
    tx.commit().await?;
    publish_logged(pool, queues, project_id, &appended).await;
    Ok(true)
}
