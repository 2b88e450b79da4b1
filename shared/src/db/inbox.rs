//! The in-app inbox's SQL: delivery to recipients, the per-user feed the live stream replays,
//! reading, acknowledging and deleting, webview actions, and the unread counter.
//!
//! **Lock order** (every writer follows it, so none deadlocks with another): the notification
//! row, then the `inbox_users` rows of the users concerned in user-id order
//! ([`lock_users`]), then recipient rows. The unread counter's triggers touch `inbox_users`
//! rows the statement's caller has already locked. `process_event`'s delivery
//! ([`crate::db::notifications::create_for_events`]) inserts new notifications and recipient
//! rows (invisible to every other writer until it commits), then, in the same statement,
//! updates the users' rows in user order (unread count and feed sequence at once: its
//! transaction turns the insert trigger's count off) and appends to those users' feeds.
//!
//! **Feed sequence.** [`append`] advances `inbox_users.last_seq` of locked rows; a user's seqs
//! therefore commit in order (the next writer waits for the lock), and a reader that sees seq
//! k+1 committed also sees k: resuming with `seq > last` never skips a late commit.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// A feed entry's kind.
pub const NOTIFICATION: &str = "notification";
/// A feed entry's kind: the notification was acknowledged (by this user or another).
pub const ACKNOWLEDGED: &str = "acknowledged";
/// A feed entry's kind: the user deleted the notification.
pub const DELETED: &str = "deleted";

/// One entry of a user's feed (written, not yet rendered).
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct FeedEntry {
    /// The user.
    pub user_id: Uuid,
    /// Its position in the user's feed (1, 2, …).
    pub seq: i64,
    /// `notification`, `acknowledged` or `deleted`.
    pub kind: String,
    /// The notification.
    pub notification_id: Uuid,
}

/// A notification as one recipient sees it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct InboxRow {
    /// Id.
    pub notification_id: Uuid,
    /// `rule`, `digest` or `system`.
    pub kind: String,
    /// The rule (not for system notices).
    pub rule_id: Option<Uuid>,
    /// The event (rule matches only).
    pub event_id: Option<Uuid>,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Priority.
    pub priority: i32,
    /// Sound.
    pub sound: Option<String>,
    /// Structured data (digests, notices).
    pub data: Option<serde_json::Value>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// Delivered to this user's inbox.
    pub delivered_at: Option<DateTime<Utc>>,
    /// When this user acknowledged it.
    pub read_at: Option<DateTime<Utc>>,
    /// When this user deleted it.
    pub deleted_at: Option<DateTime<Utc>>,
    /// The first recipient to acknowledge it.
    pub acknowledged_by: Option<Uuid>,
    /// When.
    pub acknowledged_at: Option<DateTime<Utc>>,
}

/// A rendered feed entry: the entry and, when it still exists, the notification as its user
/// sees it now.
#[derive(Debug, Clone)]
pub struct RenderedEntry {
    /// The entry.
    pub entry: FeedEntry,
    /// The notification (None once it was removed).
    pub row: Option<InboxRow>,
}

const ROW_COLUMNS: &str = r#"n.notification_id, n.kind, n.rule_id, n.event_id, n.title, n.body,
    n.priority, n.sound, n.data, n.created_at, r.delivered_at, r.read_at, r.deleted_at,
    n.acknowledged_by, n.acknowledged_at"#;

/// Creates the missing `inbox_users` rows of `users` (existing users of the project only) and
/// locks them, in user-id order, until the transaction ends.
pub async fn lock_users(
    conn: &mut PgConnection,
    project_id: Uuid,
    users: &[Uuid],
) -> Result<(), sqlx::Error> {
    let mut sorted = users.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    sqlx::query(
        r#"
        INSERT INTO inbox_users (project_id, user_id)
        SELECT $1, u.user_id FROM users u
        WHERE u.project_id = $1 AND u.user_id = ANY($2)
        ORDER BY u.user_id
        ON CONFLICT DO NOTHING
        "#,
    )
    .bind(project_id)
    .bind(&sorted)
    .execute(&mut *conn)
    .await?;
    sqlx::query(
        r#"
        SELECT 1 FROM inbox_users WHERE project_id = $1 AND user_id = ANY($2)
        ORDER BY user_id FOR UPDATE
        "#,
    )
    .bind(project_id)
    .bind(&sorted)
    .execute(conn)
    .await?;
    Ok(())
}

/// Appends entries to their users' feeds (whose rows the caller locked with [`lock_users`]),
/// numbering each user's entries in the order given; returns them with their seqs.
pub async fn append(
    conn: &mut PgConnection,
    project_id: Uuid,
    entries: &[(Uuid, &str, Uuid)],
) -> Result<Vec<FeedEntry>, sqlx::Error> {
    if entries.is_empty() {
        return Ok(Vec::new());
    }
    let users: Vec<Uuid> = entries.iter().map(|e| e.0).collect();
    let kinds: Vec<&str> = entries.iter().map(|e| e.1).collect();
    let notifications: Vec<Uuid> = entries.iter().map(|e| e.2).collect();
    sqlx::query_as(
        r#"
        WITH e AS (
            SELECT * FROM unnest($2::uuid[], $3::text[], $4::uuid[]) WITH ORDINALITY
                AS e(user_id, kind, notification_id, ord)
        ), c AS (
            SELECT user_id, count(*) AS n FROM e GROUP BY user_id
        ), u AS (
            UPDATE inbox_users i SET last_seq = i.last_seq + c.n
            FROM c WHERE i.project_id = $1 AND i.user_id = c.user_id
            RETURNING i.user_id, i.last_seq - c.n AS base
        )
        INSERT INTO inbox_feed (project_id, user_id, seq, kind, notification_id)
        SELECT $1, e.user_id,
               u.base + row_number() OVER (PARTITION BY e.user_id ORDER BY e.ord),
               e.kind, e.notification_id
        FROM e JOIN u USING (user_id)
        RETURNING user_id, seq, kind, notification_id
        "#,
    )
    .bind(project_id)
    .bind(&users)
    .bind(&kinds)
    .bind(&notifications)
    .fetch_all(conn)
    .await
}

#[derive(sqlx::FromRow)]
struct RenderRow {
    feed_user_id: Uuid,
    feed_seq: i64,
    feed_kind: String,
    feed_notification_id: Uuid,
    present: bool,
    #[sqlx(flatten)]
    row: InboxRowOpt,
}

/// [`InboxRow`] from a LEFT JOIN (every column nullable).
#[derive(sqlx::FromRow)]
struct InboxRowOpt {
    notification_id: Option<Uuid>,
    kind: Option<String>,
    rule_id: Option<Uuid>,
    event_id: Option<Uuid>,
    title: Option<String>,
    body: Option<String>,
    priority: Option<i32>,
    sound: Option<String>,
    data: Option<serde_json::Value>,
    created_at: Option<DateTime<Utc>>,
    delivered_at: Option<DateTime<Utc>>,
    read_at: Option<DateTime<Utc>>,
    deleted_at: Option<DateTime<Utc>>,
    acknowledged_by: Option<Uuid>,
    acknowledged_at: Option<DateTime<Utc>>,
}

impl From<RenderRow> for RenderedEntry {
    fn from(r: RenderRow) -> Self {
        let o = r.row;
        let row = match (r.present, o.notification_id, o.kind, o.title, o.body) {
            (true, Some(notification_id), Some(kind), Some(title), Some(body)) => Some(InboxRow {
                notification_id,
                kind,
                rule_id: o.rule_id,
                event_id: o.event_id,
                title,
                body,
                priority: o.priority.unwrap_or_default(),
                sound: o.sound,
                data: o.data,
                created_at: o.created_at.unwrap_or_default(),
                delivered_at: o.delivered_at,
                read_at: o.read_at,
                deleted_at: o.deleted_at,
                acknowledged_by: o.acknowledged_by,
                acknowledged_at: o.acknowledged_at,
            }),
            _ => None,
        };
        Self {
            entry: FeedEntry {
                user_id: r.feed_user_id,
                seq: r.feed_seq,
                kind: r.feed_kind,
                notification_id: r.feed_notification_id,
            },
            row,
        }
    }
}

fn render_sql(filter: &str) -> String {
    format!(
        r#"
        SELECT f.user_id AS feed_user_id, f.seq AS feed_seq, f.kind AS feed_kind,
               f.notification_id AS feed_notification_id,
               (r.user_id IS NOT NULL AND n.notification_id IS NOT NULL) AS present,
               {ROW_COLUMNS}
        FROM inbox_feed f
        LEFT JOIN notifications n
          ON n.project_id = f.project_id AND n.notification_id = f.notification_id
        LEFT JOIN notification_recipients r
          ON r.project_id = f.project_id AND r.notification_id = f.notification_id
         AND r.user_id = f.user_id
        WHERE f.project_id = $1 AND {filter}
        ORDER BY f.user_id, f.seq
        "#
    )
}

/// The given feed entries (committed), rendered from their notifications' current state.
pub async fn render<'e>(
    executor: impl PgExecutor<'e>,
    project_id: Uuid,
    entries: &[FeedEntry],
) -> Result<Vec<RenderedEntry>, sqlx::Error> {
    let users: Vec<Uuid> = entries.iter().map(|e| e.user_id).collect();
    let seqs: Vec<i64> = entries.iter().map(|e| e.seq).collect();
    let rows: Vec<RenderRow> = sqlx::query_as(sqlx::AssertSqlSafe(render_sql(
        "(f.user_id, f.seq) IN (SELECT * FROM unnest($2::uuid[], $3::bigint[]))",
    )))
    .bind(project_id)
    .bind(&users)
    .bind(&seqs)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(RenderedEntry::from).collect())
}

/// Up to `limit` entries of the user's feed after `after`, in order, rendered.
pub async fn backlog<'e>(
    executor: impl PgExecutor<'e>,
    project_id: Uuid,
    user_id: Uuid,
    after: i64,
    limit: i64,
) -> Result<Vec<RenderedEntry>, sqlx::Error> {
    let rows: Vec<RenderRow> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "{} LIMIT $4",
        render_sql("f.user_id = $2 AND f.seq > $3")
    )))
    .bind(project_id)
    .bind(user_id)
    .bind(after)
    .bind(limit)
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(RenderedEntry::from).collect())
}

/// The user's last feed seq (0 before any) and unread count.
pub async fn counters<'e>(
    executor: impl PgExecutor<'e>,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<(i64, i64), sqlx::Error> {
    let row: Option<(i64, i64)> = sqlx::query_as(
        "SELECT last_seq, unread FROM inbox_users WHERE project_id = $1 AND user_id = $2",
    )
    .bind(project_id)
    .bind(user_id)
    .fetch_optional(executor)
    .await?;
    Ok(row.unwrap_or((0, 0)))
}

/// Deletes feed entries older than `before` (a resume further back than that gets a reset).
pub async fn prune_feed(
    conn: &mut PgConnection,
    before: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM inbox_feed WHERE created_at < $1")
        .bind(before)
        .execute(conn)
        .await?
        .rows_affected())
}

/// The oldest seq the user's feed still holds (None when empty).
pub async fn first_seq<'e>(
    executor: impl PgExecutor<'e>,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<Option<i64>, sqlx::Error> {
    sqlx::query_scalar("SELECT min(seq) FROM inbox_feed WHERE project_id = $1 AND user_id = $2")
        .bind(project_id)
        .bind(user_id)
        .fetch_one(executor)
        .await
}

/// The notification for in-app delivery, locked `FOR SHARE` (an acknowledgement waits):
/// whether it is suppressed. None when it does not exist.
pub async fn lock_for_delivery(
    conn: &mut PgConnection,
    project_id: Uuid,
    notification_id: Uuid,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        SELECT suppressed FROM notifications
        WHERE project_id = $1 AND notification_id = $2 FOR SHARE
        "#,
    )
    .bind(project_id)
    .bind(notification_id)
    .fetch_optional(conn)
    .await
}

/// Each of `users` who is a recipient: whether it is delivered already, whether the user is
/// ACTIVE, and whether its in-app channel is on.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RecipientState {
    /// The user.
    pub user_id: Uuid,
    /// Delivered already (its feed seq, if the feed still holds it).
    pub delivered: bool,
    /// The entry that delivered it (None if not delivered or pruned).
    pub seq: Option<i64>,
    /// The user is ACTIVE.
    pub active: bool,
    /// Its in-app channel is on.
    pub in_app: bool,
}

/// The recipient state of `users` for a notification (users who are not recipients are absent).
pub async fn recipients_state(
    conn: &mut PgConnection,
    project_id: Uuid,
    notification_id: Uuid,
    users: &[Uuid],
) -> Result<Vec<RecipientState>, sqlx::Error> {
    sqlx::query_as(
        r#"
        SELECT r.user_id, (r.delivered_at IS NOT NULL) AS delivered,
               (SELECT f.seq FROM inbox_feed f
                WHERE f.project_id = r.project_id AND f.user_id = r.user_id
                  AND f.notification_id = r.notification_id AND f.kind = 'notification'
                ORDER BY f.seq LIMIT 1) AS seq,
               COALESCE(u.status = 'ACTIVE', false) AS active,
               COALESCE(p.in_app, true) AS in_app
        FROM notification_recipients r
        LEFT JOIN users u ON u.project_id = r.project_id AND u.user_id = r.user_id
        LEFT JOIN notification_preferences p
          ON p.project_id = r.project_id AND p.user_id = r.user_id
        WHERE r.project_id = $1 AND r.notification_id = $2 AND r.user_id = ANY($3)
        ORDER BY r.user_id
        "#,
    )
    .bind(project_id)
    .bind(notification_id)
    .bind(users)
    .fetch_all(conn)
    .await
}

/// Marks the notification delivered to `users` (those not yet delivered); returns who now is.
pub async fn mark_delivered(
    conn: &mut PgConnection,
    project_id: Uuid,
    notification_id: Uuid,
    users: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        UPDATE notification_recipients SET delivered_at = now()
        WHERE project_id = $1 AND notification_id = $2 AND user_id = ANY($3)
          AND delivered_at IS NULL
        RETURNING user_id
        "#,
    )
    .bind(project_id)
    .bind(notification_id)
    .bind(users)
    .fetch_all(conn)
    .await
}
