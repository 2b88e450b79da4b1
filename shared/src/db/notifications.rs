//! Notifications' SQL: what `process_event` writes for the rules an event matched, once
//! however often it runs (unique `(project, event, rule)`; recipients keyed by user).

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
/// each rule's target roles now), in the caller's transaction; a re-run adds nothing.
pub async fn create_for_event(
    conn: &mut PgConnection,
    project_id: Uuid,
    event_id: Uuid,
    new: &[NewNotification],
) -> Result<Created, sqlx::Error> {
    if new.is_empty() {
        return Ok(Created::default());
    }
    let ids: Vec<Uuid> = new.iter().map(|_| Uuid::now_v7()).collect();
    let rules: Vec<Uuid> = new.iter().map(|n| n.rule_id).collect();
    let titles: Vec<&str> = new.iter().map(|n| n.title.as_str()).collect();
    let bodies: Vec<&str> = new.iter().map(|n| n.body.as_str()).collect();
    let priorities: Vec<i32> = new.iter().map(|n| n.priority).collect();
    let sounds: Vec<Option<&str>> = new.iter().map(|n| n.sound.as_deref()).collect();
    // text[] per row does not fit unnest: channels travel as comma lists
    let channels: Vec<String> = new.iter().map(|n| n.channels.join(",")).collect();
    sqlx::query(
        r#"
        INSERT INTO notifications (project_id, notification_id, event_id, rule_id, title, body,
                                   priority, sound, channels)
        SELECT $1, n.id, $2, n.rule, n.title, n.body, n.priority, n.sound,
               string_to_array(nullif(n.channels, ''), ',')
        FROM unnest($3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::integer[], $8::text[],
                    $9::text[]) AS n(id, rule, title, body, priority, sound, channels)
        ON CONFLICT (project_id, event_id, rule_id) DO NOTHING
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
    .execute(&mut *conn)
    .await?;

    // (rule, role) pairs: the recipients of each rule's notification
    let (pair_rules, pair_roles): (Vec<Uuid>, Vec<Uuid>) = new
        .iter()
        .flat_map(|n| n.target_role_ids.iter().map(move |r| (n.rule_id, *r)))
        .unzip();
    sqlx::query(
        r#"
        INSERT INTO notification_recipients (project_id, notification_id, user_id)
        SELECT DISTINCT $1, n.notification_id, ur.user_id
        FROM unnest($3::uuid[], $4::uuid[]) AS t(rule_id, role_id)
        JOIN notifications n
          ON n.project_id = $1 AND n.event_id = $2 AND n.rule_id = t.rule_id
        JOIN user_roles ur ON ur.project_id = $1 AND ur.role_id = t.role_id
        JOIN users u ON u.project_id = $1 AND u.user_id = ur.user_id AND u.status = 'ACTIVE'
        ON CONFLICT DO NOTHING
        "#,
    )
    .bind(project_id)
    .bind(event_id)
    .bind(&pair_rules)
    .bind(&pair_roles)
    .execute(&mut *conn)
    .await?;

    let (notifications, recipients): (i64, i64) = sqlx::query_as(
        r#"
        SELECT count(DISTINCT n.notification_id), count(r.user_id)
        FROM notifications n
        LEFT JOIN notification_recipients r
          ON r.project_id = n.project_id AND r.notification_id = n.notification_id
        WHERE n.project_id = $1 AND n.event_id = $2
        "#,
    )
    .bind(project_id)
    .bind(event_id)
    .fetch_one(conn)
    .await?;
    Ok(Created {
        notifications: notifications as i32,
        recipients: recipients as i32,
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
