//! Notifications' SQL: what `process_event` writes for the rules an event matched, once
//! however often it runs (unique `(project, event, rule)`; recipients keyed by user), in one
//! statement with the event's processed mark.

use sqlx::PgConnection;
use uuid::Uuid;

/// A notification to create for a matched rule.
#[derive(Debug, Clone)]
pub struct NewNotification {
    /// The rule that matched.
    pub rule_id: Uuid,
    /// Rendered title.
    pub title: String,
    /// Rendered body.
    pub body: String,
    /// The rule's priority.
    pub priority: i32,
    /// The rule's sound.
    pub sound: Option<String>,
    /// The rule's channels.
    pub channels: Vec<String>,
    /// Roles whose ACTIVE holders receive it.
    pub target_role_ids: Vec<Uuid>,
}

/// What creating an event's notifications did.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Created {
    /// Notifications the event has (created now or by an earlier run).
    pub notifications: i32,
    /// Their recipients.
    pub recipients: i32,
}

/// Creates the event's notifications and their recipients (the ACTIVE users holding any of
/// each rule's target roles now) and marks the event processed with the rules it matched and
/// its counts (the first processing time is kept): one statement, one round trip, in the
/// caller's transaction; a re-run adds nothing. The counts are the event's notifications and
/// recipients, created now or by an earlier run.
pub async fn create_for_event(
    conn: &mut PgConnection,
    project_id: Uuid,
    event_id: Uuid,
    new: &[NewNotification],
    matched: &[Uuid],
) -> Result<Created, sqlx::Error> {
    let ids: Vec<Uuid> = new.iter().map(|_| Uuid::now_v7()).collect();
    let rules: Vec<Uuid> = new.iter().map(|n| n.rule_id).collect();
    let titles: Vec<&str> = new.iter().map(|n| n.title.as_str()).collect();
    let bodies: Vec<&str> = new.iter().map(|n| n.body.as_str()).collect();
    let priorities: Vec<i32> = new.iter().map(|n| n.priority).collect();
    let sounds: Vec<Option<&str>> = new.iter().map(|n| n.sound.as_deref()).collect();
    // text[] per row does not fit unnest: channels travel as comma lists
    let channels: Vec<String> = new.iter().map(|n| n.channels.join(",")).collect();
    // (rule, role) pairs: the recipients of each rule's notification
    let (pair_rules, pair_roles): (Vec<Uuid>, Vec<Uuid>) = new
        .iter()
        .flat_map(|n| n.target_role_ids.iter().map(move |r| (n.rule_id, *r)))
        .unzip();
    // Every part of one statement sees the rows as they were before it: `earlier` (an earlier
    // run's notifications) and `added` never overlap, nor do `earlier_recipients` and `rec`.
    let (notifications, recipients): (i32, i32) = sqlx::query_as(
        r#"
        WITH added AS (
            INSERT INTO notifications (project_id, notification_id, event_id, rule_id, title,
                                       body, priority, sound, channels)
            SELECT $1, n.id, $2, n.rule, n.title, n.body, n.priority, n.sound,
                   string_to_array(nullif(n.channels, ''), ',')
            FROM unnest($3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::integer[],
                        $8::text[], $9::text[])
                 AS n(id, rule, title, body, priority, sound, channels)
            ON CONFLICT (project_id, event_id, rule_id) DO NOTHING
            RETURNING notification_id, rule_id
        ),
        earlier AS (
            SELECT notification_id, rule_id FROM notifications
            WHERE project_id = $1 AND event_id = $2
        ),
        notes AS (
            SELECT * FROM added UNION ALL SELECT * FROM earlier
        ),
        rec AS (
            INSERT INTO notification_recipients (project_id, notification_id, user_id)
            SELECT DISTINCT $1, n.notification_id, ur.user_id
            FROM unnest($10::uuid[], $11::uuid[]) AS t(rule_id, role_id)
            JOIN notes n ON n.rule_id = t.rule_id
            JOIN user_roles ur ON ur.project_id = $1 AND ur.role_id = t.role_id
            JOIN users u ON u.project_id = $1 AND u.user_id = ur.user_id AND u.status = 'ACTIVE'
            ON CONFLICT DO NOTHING
            RETURNING 1
        ),
        counts AS (
            SELECT (SELECT count(*) FROM notes)::integer AS notifications,
                   ((SELECT count(*) FROM rec)
                    + (SELECT count(*) FROM notification_recipients r
                       JOIN earlier e ON r.project_id = $1
                                     AND r.notification_id = e.notification_id))::integer
                       AS recipients
        )
        UPDATE events SET processed_at = coalesce(processed_at, now()), matched_rule_ids = $12,
                          notification_count = c.notifications, recipient_count = c.recipients
        FROM counts c
        WHERE project_id = $1 AND event_id = $2
        RETURNING c.notifications, c.recipients
        "#,
    )
    .bind(project_id)
    .bind(event_id)
    .bind(&ids)
    .bind(&rules)
    .bind(&titles)
    .bind(&bodies)
    .bind(&priorities)
    .bind(&sounds)
    .bind(&channels)
    .bind(&pair_rules)
    .bind(&pair_roles)
    .bind(matched)
    .fetch_optional(conn)
    .await?
    .unwrap_or_default();
    Ok(Created {
        notifications,
        recipients,
    })
}

/// One notification an event created.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventNotification {
    /// Id.
    pub notification_id: Uuid,
    /// The rule.
    pub rule_id: Uuid,
    /// Title.
    pub title: String,
    /// Recipients.
    pub recipients: i64,
}

/// The notifications an event created, with their recipient counts.
pub async fn of_event(
    conn: &mut PgConnection,
    project_id: Uuid,
    event_id: Uuid,
) -> Result<Vec<EventNotification>, sqlx::Error> {
    sqlx::query_as(
        r#"
        SELECT n.notification_id, n.rule_id, n.title,
               (SELECT count(*) FROM notification_recipients r
                WHERE r.project_id = n.project_id AND r.notification_id = n.notification_id)
                AS recipients
        FROM notifications n
        WHERE n.project_id = $1 AND n.event_id = $2
        ORDER BY n.priority DESC, n.notification_id
        "#,
    )
    .bind(project_id)
    .bind(event_id)
    .fetch_all(conn)
    .await
}
