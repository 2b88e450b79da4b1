//! A user's own notifications, read and changed by the user: the inbox list, one item,
//! acknowledgement, soft deletion and webview actions. Only delivered notifications exist for
//! their user; another user's or another project's are not found. The transactions that also
//! write the feed (and their lock order) are in `crate::inbox`.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

pub use super::inbox::InboxRow;

/// Filters of the inbox list.
#[derive(Debug, Clone, Default)]
pub struct InboxFilter {
    /// Only unread (`true`) or only read (`false`).
    pub unread: Option<bool>,
    /// Only acknowledged by someone (`true`) or by no one (`false`).
    pub acknowledged: Option<bool>,
    /// Only this rule's.
    pub rule_id: Option<Uuid>,
    /// Created at or after.
    pub from: Option<DateTime<Utc>>,
    /// Created before.
    pub to: Option<DateTime<Utc>>,
}

const COLUMNS: &str = r#"n.notification_id, n.kind, n.rule_id, n.event_id, n.title, n.body,
    n.priority, n.sound, n.data, n.created_at, r.delivered_at, r.read_at, r.deleted_at,
    n.acknowledged_by, n.acknowledged_at"#;

/// The user's notifications, newest first, after the cursor `before` (a notification id).
pub async fn list<'e>(
    executor: impl PgExecutor<'e>,
    project_id: Uuid,
    user_id: Uuid,
    filter: &InboxFilter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<InboxRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"
        SELECT {COLUMNS}
        FROM notification_recipients r
        JOIN notifications n
          ON n.project_id = r.project_id AND n.notification_id = r.notification_id
        WHERE r.project_id = $1 AND r.user_id = $2
          AND r.delivered_at IS NOT NULL AND r.deleted_at IS NULL
          AND ($3::boolean IS NULL OR (r.read_at IS NULL) = $3)
          AND ($4::boolean IS NULL OR (n.acknowledged_at IS NOT NULL) = $4)
          AND ($5::uuid IS NULL OR n.rule_id = $5)
          AND ($6::timestamptz IS NULL OR n.created_at >= $6)
          AND ($7::timestamptz IS NULL OR n.created_at < $7)
          AND ($8::uuid IS NULL OR r.notification_id < $8)
        ORDER BY r.notification_id DESC
        LIMIT $9
        "#
    )))
    .bind(project_id)
    .bind(user_id)
    .bind(filter.unread)
    .bind(filter.acknowledged)
    .bind(filter.rule_id)
    .bind(filter.from)
    .bind(filter.to)
    .bind(before)
    .bind(limit)
    .fetch_all(executor)
    .await
}

/// One of the user's notifications (delivered, not deleted).
pub async fn find<'e>(
    executor: impl PgExecutor<'e>,
    project_id: Uuid,
    user_id: Uuid,
    notification_id: Uuid,
) -> Result<Option<InboxRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"
        SELECT {COLUMNS}
        FROM notification_recipients r
        JOIN notifications n
          ON n.project_id = r.project_id AND n.notification_id = r.notification_id
        WHERE r.project_id = $1 AND r.user_id = $2 AND r.notification_id = $3
          AND r.delivered_at IS NOT NULL AND r.deleted_at IS NULL
        "#
    )))
    .bind(project_id)
    .bind(user_id)
    .bind(notification_id)
    .fetch_optional(executor)
    .await
}

/// Locks the notification (`FOR UPDATE`) if it is in the user's inbox; returns whether anyone
/// acknowledged it already.
pub async fn lock_for_ack(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    notification_id: Uuid,
) -> Result<Option<bool>, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        SELECT n.acknowledged_by IS NOT NULL
        FROM notifications n
        JOIN notification_recipients r
          ON r.project_id = n.project_id AND r.notification_id = n.notification_id
        WHERE n.project_id = $1 AND n.notification_id = $3 AND r.user_id = $2
          AND r.delivered_at IS NOT NULL AND r.deleted_at IS NULL
        FOR UPDATE OF n
        "#,
    )
    .bind(project_id)
    .bind(user_id)
    .bind(notification_id)
    .fetch_optional(conn)
    .await
}

/// Locks (`FOR UPDATE`, in id order) the user's unread notifications; returns (id, whether
/// anyone acknowledged it already).
pub async fn lock_unread(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
) -> Result<Vec<(Uuid, bool)>, sqlx::Error> {
    sqlx::query_as(
        r#"
        SELECT n.notification_id, n.acknowledged_by IS NOT NULL
        FROM notifications n
        JOIN notification_recipients r
          ON r.project_id = n.project_id AND r.notification_id = n.notification_id
        WHERE r.project_id = $1 AND r.user_id = $2
          AND r.delivered_at IS NOT NULL AND r.deleted_at IS NULL AND r.read_at IS NULL
        ORDER BY n.notification_id
        FOR UPDATE OF n
        "#,
    )
    .bind(project_id)
    .bind(user_id)
    .fetch_all(conn)
    .await
}

/// The delivered, undeleted recipients of the notifications: (notification, user) pairs.
pub async fn inbox_holders(
    conn: &mut PgConnection,
    project_id: Uuid,
    notifications: &[Uuid],
) -> Result<Vec<(Uuid, Uuid)>, sqlx::Error> {
    sqlx::query_as(
        r#"
        SELECT notification_id, user_id FROM notification_recipients
        WHERE project_id = $1 AND notification_id = ANY($2)
          AND delivered_at IS NOT NULL AND deleted_at IS NULL
        ORDER BY notification_id, user_id
        "#,
    )
    .bind(project_id)
    .bind(notifications)
    .fetch_all(conn)
    .await
}

/// Records `user_id` as the first acknowledger of those of the notifications no one has
/// acknowledged; returns them.
pub async fn acknowledge(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    notifications: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        UPDATE notifications SET acknowledged_by = $2, acknowledged_at = now()
        WHERE project_id = $1 AND notification_id = ANY($3) AND acknowledged_by IS NULL
        RETURNING notification_id
        "#,
    )
    .bind(project_id)
    .bind(user_id)
    .bind(notifications)
    .fetch_all(conn)
    .await
}

/// Marks the notifications read for the user; returns those that were unread.
pub async fn mark_read(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    notifications: &[Uuid],
) -> Result<Vec<Uuid>, sqlx::Error> {
    sqlx::query_scalar(
        r#"
        UPDATE notification_recipients SET read_at = now()
        WHERE project_id = $1 AND user_id = $2 AND notification_id = ANY($3)
          AND read_at IS NULL AND delivered_at IS NOT NULL AND deleted_at IS NULL
        RETURNING notification_id
        "#,
    )
    .bind(project_id)
    .bind(user_id)
    .bind(notifications)
    .fetch_all(conn)
    .await
}

/// Hides the notification from the user (soft); false when it is not in the user's inbox.
pub async fn soft_delete(
    conn: &mut PgConnection,
    project_id: Uuid,
    user_id: Uuid,
    notification_id: Uuid,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        r#"
        UPDATE notification_recipients SET deleted_at = now()
        WHERE project_id = $1 AND user_id = $2 AND notification_id = $3
          AND delivered_at IS NOT NULL AND deleted_at IS NULL
        "#,
    )
    .bind(project_id)
    .bind(user_id)
    .bind(notification_id)
    .execute(conn)
    .await?
    .rows_affected()
        == 1)
}

/// A recorded webview action.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct WebviewAction {
    /// Id.
    pub webview_action_id: Uuid,
    /// The notification.
    pub notification_id: Uuid,
    /// Who.
    pub user_id: Uuid,
    /// What.
    pub action: String,
    /// With what.
    pub data: Option<serde_json::Value>,
    /// When.
    pub created_at: DateTime<Utc>,
}

/// Records an action the user took from a notification in its inbox; None when it is not.
pub async fn record_action<'e>(
    executor: impl PgExecutor<'e>,
    project_id: Uuid,
    user_id: Uuid,
    notification_id: Uuid,
    action: &str,
    data: Option<&serde_json::Value>,
) -> Result<Option<WebviewAction>, sqlx::Error> {
    sqlx::query_as(
        r#"
        INSERT INTO webview_actions (project_id, webview_action_id, notification_id, user_id,
                                     action, data)
        SELECT r.project_id, $5, r.notification_id, r.user_id, $4, $6
        FROM notification_recipients r
        WHERE r.project_id = $1 AND r.user_id = $2 AND r.notification_id = $3
          AND r.delivered_at IS NOT NULL AND r.deleted_at IS NULL
        RETURNING webview_action_id, notification_id, user_id, action, data, created_at
        "#,
    )
    .bind(project_id)
    .bind(user_id)
    .bind(notification_id)
    .bind(action)
    .bind(Uuid::now_v7())
    .bind(data)
    .fetch_optional(executor)
    .await
}
