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
    /// The suppression period (start, Unix ms) this match was folded into: stored, with no
    /// recipients and no delivery.
    pub suppressed_in: Option<i64>,
}

/// A notification created now (not by an earlier run), to deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ToEnqueue {
    /// The notification.
    pub notification_id: Uuid,
    /// Its channels.
    pub channels: Vec<String>,
}

/// What creating an event's notifications did.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Created {
    /// Notifications the event has (created now or by an earlier run).
    pub notifications: i32,
    /// Their recipients.
    pub recipients: i32,
    /// The delivered (not suppressed) notifications this run created: their delivery jobs go
    /// in the same transaction.
    pub new: Vec<ToEnqueue>,
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
        .filter(|n| n.suppressed_in.is_none())
        .flat_map(|n| n.target_role_ids.iter().map(move |r| (n.rule_id, *r)))
        .unzip();
    // Every part of one statement sees the rows as they were before it: `earlier` (an earlier
    // run's notifications) and `added` never overlap, nor do `earlier_recipients` and `rec`.
    let periods: Vec<Option<i64>> = new.iter().map(|n| n.suppressed_in).collect();
    let (notifications, recipients, added): (i32, i32, Vec<Uuid>) = sqlx::query_as(
        r#"
        WITH added AS (
            INSERT INTO notifications (project_id, notification_id, event_id, rule_id, title,
                                       body, priority, sound, channels, suppressed, data)
            SELECT $1, n.id, $2, n.rule, n.title, n.body, n.priority, n.sound,
                   coalesce(string_to_array(nullif(n.channels, ''), ','), '{}'),
                   n.period IS NOT NULL,
                   CASE WHEN n.period IS NOT NULL
                        THEN jsonb_build_object('period', n.period::text) END
            FROM unnest($3::uuid[], $4::uuid[], $5::text[], $6::text[], $7::integer[],
                        $8::text[], $9::text[], $13::bigint[])
                 AS n(id, rule, title, body, priority, sound, channels, period)
            ON CONFLICT (project_id, event_id, rule_id) DO NOTHING
            RETURNING notification_id, rule_id, suppressed
        ),
        earlier AS (
            SELECT notification_id, rule_id, suppressed FROM notifications
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
                       AS recipients,
                   (SELECT coalesce(array_agg(notification_id), '{}') FROM added
                    WHERE NOT suppressed) AS added
        )
        UPDATE events SET processed_at = coalesce(processed_at, now()), matched_rule_ids = $12,
                          notification_count = c.notifications, recipient_count = c.recipients
        FROM counts c
        WHERE project_id = $1 AND event_id = $2
        RETURNING c.notifications, c.recipients, c.added
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
    .bind(&periods)
    .fetch_optional(conn)
    .await?
    .unwrap_or_default();
    // the delivered notifications inserted now, with their rules' channels
    let channels_of: std::collections::HashMap<Uuid, &Vec<String>> = ids
        .iter()
        .zip(new)
        .map(|(id, n)| (*id, &n.channels))
        .collect();
    Ok(Created {
        notifications,
        recipients,
        new: added
            .into_iter()
            .map(|notification_id| ToEnqueue {
                notification_id,
                channels: channels_of
                    .get(&notification_id)
                    .map(|c| c.to_vec())
                    .unwrap_or_default(),
            })
            .collect(),
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

/// A closed suppression period's matches, as its digest tells them.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PeriodSummary {
    /// Matches suppressed in the period.
    pub count: i64,
    /// The first suppressed event.
    pub first_event_id: Uuid,
    /// The last suppressed event.
    pub last_event_id: Uuid,
    /// When the first was stored.
    pub first_at: chrono::DateTime<chrono::Utc>,
    /// When the last was stored.
    pub last_at: chrono::DateTime<chrono::Utc>,
}

/// The matches of `rule_id` suppressed in the period that opened at `period_start_ms`, or
/// `None` when there were none.
pub async fn suppressed_in_period(
    conn: &mut PgConnection,
    project_id: Uuid,
    rule_id: Uuid,
    period_start_ms: i64,
) -> Result<Option<PeriodSummary>, sqlx::Error> {
    sqlx::query_as(
        r#"
        SELECT count(*) AS count,
               (array_agg(event_id ORDER BY created_at, event_id))[1] AS first_event_id,
               (array_agg(event_id ORDER BY created_at DESC, event_id DESC))[1] AS last_event_id,
               min(created_at) AS first_at, max(created_at) AS last_at
        FROM notifications
        WHERE project_id = $1 AND rule_id = $2 AND suppressed
          AND (data ->> 'period') = $3::text
        HAVING count(*) > 0
        "#,
    )
    .bind(project_id)
    .bind(rule_id)
    .bind(period_start_ms.to_string())
    .fetch_optional(conn)
    .await
}

/// A digest (or system notice) to create once, keyed by `dedupe_key`.
#[derive(Debug, Clone)]
pub struct NewKeyed {
    /// `digest` or `system`.
    pub kind: &'static str,
    /// The key that makes it exist once per project.
    pub dedupe_key: String,
    /// The rule (a digest's).
    pub rule_id: Option<Uuid>,
    /// Title.
    pub title: String,
    /// Body.
    pub body: String,
    /// Priority.
    pub priority: i32,
    /// Sound.
    pub sound: Option<String>,
    /// Channels.
    pub channels: Vec<String>,
    /// Details (counts, ids).
    pub data: serde_json::Value,
    /// Roles whose ACTIVE holders receive it.
    pub target_role_ids: Vec<Uuid>,
}

/// Creates a keyed notification with its recipients (the ACTIVE holders of its target roles
/// now), in the caller's transaction; `None` when it already exists (a re-run).
pub async fn create_keyed(
    conn: &mut PgConnection,
    project_id: Uuid,
    n: &NewKeyed,
) -> Result<Option<ToEnqueue>, sqlx::Error> {
    let id: Option<Uuid> = sqlx::query_scalar(
        r#"
        INSERT INTO notifications (project_id, notification_id, kind, dedupe_key, rule_id, title,
                                   body, priority, sound, channels, data)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        ON CONFLICT (project_id, dedupe_key) WHERE dedupe_key IS NOT NULL DO NOTHING
        RETURNING notification_id
        "#,
    )
    .bind(project_id)
    .bind(Uuid::now_v7())
    .bind(n.kind)
    .bind(&n.dedupe_key)
    .bind(n.rule_id)
    .bind(&n.title)
    .bind(&n.body)
    .bind(n.priority)
    .bind(&n.sound)
    .bind(&n.channels)
    .bind(&n.data)
    .fetch_optional(&mut *conn)
    .await?;
    let Some(id) = id else { return Ok(None) };
    sqlx::query(
        r#"
        INSERT INTO notification_recipients (project_id, notification_id, user_id)
        SELECT DISTINCT $1, $2, ur.user_id
        FROM user_roles ur
        JOIN users u ON u.project_id = ur.project_id AND u.user_id = ur.user_id
                    AND u.status = 'ACTIVE'
        WHERE ur.project_id = $1 AND ur.role_id = ANY($3)
        ON CONFLICT DO NOTHING
        "#,
    )
    .bind(project_id)
    .bind(id)
    .bind(&n.target_role_ids)
    .execute(conn)
    .await?;
    Ok(Some(ToEnqueue {
        notification_id: id,
        channels: n.channels.clone(),
    }))
}
