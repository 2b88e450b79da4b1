//! Deliveries' SQL: what `deliver_notification` reads to deliver a notification (the
//! notification, its event, its recipients with their preferences) and the attempts it records,
//! one row per (job attempt, target) in `delivery_attempts`.
//!
//! A target (a user, a webhook endpoint) is done once it has an `ok`, `skipped` or `permanent`
//! row, or a `deferred` one (its delivery was handed to a later job): a retried attempt delivers
//! only to the targets not done ([`done_targets`]). A rule's in-app delivery is the exception:
//! `process_event` delivers it to every recipient in the statement that stores the
//! notification and records it once, on the notification (`in_app_job_id`, `in_app_attempt`;
//! a recipient a re-run adds names the re-run's on their own row); its per-recipient attempts
//! are read from the recipients' rows ([`attempts`]).

use std::collections::HashSet;

use chrono::{DateTime, NaiveTime, Utc};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::jobs::Channel;

/// A notification as its delivery needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ToDeliver {
    /// `rule`, `digest` or `system`.
    pub kind: String,
    /// The rule (none for a system notice).
    pub rule_id: Option<Uuid>,
    /// The rule's name (none for a system notice, or a deleted rule).
    pub rule_name: Option<String>,
    /// The event (a rule's match only).
    pub event_id: Option<Uuid>,
    /// The event's type.
    pub event_type: Option<String>,
    /// The event's source.
    pub event_source: Option<String>,
    /// When the event happened.
    pub event_occurred_at: Option<DateTime<Utc>>,
    /// The event's payload.
    pub event_payload: Option<serde_json::Value>,
    /// Rendered title.
    pub title: String,
    /// Rendered body.
    pub body: String,
    /// The rule's priority.
    pub priority: i32,
    /// The rule's sound.
    pub sound: Option<String>,
    /// The channels it goes out on.
    pub channels: Vec<String>,
    /// A match its rule's suppression folded into a digest: never delivered by itself.
    pub suppressed: bool,
    /// A digest's or notice's details.
    pub data: Option<serde_json::Value>,
    /// Created.
    pub created_at: DateTime<Utc>,
    /// The targets of the asked channel that are done (see [`done_targets`]): read with the
    /// notification, in the same round trip.
    pub done: Vec<Uuid>,
}

/// Reads a notification for delivery (with its event and rule, when it has them), and the
/// targets of `channel` that are done for job `job_id` (as [`done_targets`]).
pub async fn to_deliver(
    pool: &PgPool,
    project_id: Uuid,
    notification_id: Uuid,
    channel: Channel,
    job_id: Uuid,
) -> Result<Option<ToDeliver>, sqlx::Error> {
    let mut conn = pool.acquire().await?;
    let key = (project_id, notification_id, channel, job_id);
    Ok(to_deliver_many(&mut conn, &[key])
        .await?
        .pop()
        .map(|(_, n)| n))
}

/// One job's read for [`to_deliver_many`]: (project, notification, channel, job).
pub type DeliveryKey = (Uuid, Uuid, Channel, Uuid);

/// [`to_deliver`] for many jobs in one statement: the notifications of the jobs starting at
/// the same moment (`deliver_notification`'s batched read). Returns the found ones with their
/// keys, in no particular order; a key whose notification does not exist is left out.
pub async fn to_deliver_many(
    conn: &mut PgConnection,
    keys: &[DeliveryKey],
) -> Result<Vec<(DeliveryKey, ToDeliver)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        ix: i32,
        #[sqlx(flatten)]
        n: ToDeliver,
    }
    let projects: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
    let notifications: Vec<Uuid> = keys.iter().map(|k| k.1).collect();
    let channels: Vec<&str> = keys.iter().map(|k| k.2.as_str()).collect();
    let jobs: Vec<Uuid> = keys.iter().map(|k| k.3).collect();
    let rows: Vec<Row> = sqlx::query_as(
        // driven by the keys (lateral, not flattened): primary-key look-ups whatever the
        // statistics
        r#"
        SELECT k.ix::int4 AS ix, n.kind, n.rule_id, r.name AS rule_name, n.event_id,
               e.type AS event_type, e.source AS event_source,
               e.occurred_at AS event_occurred_at, e.payload AS event_payload, n.title, n.body,
               n.priority, n.sound, n.channels, n.suppressed, n.data, n.created_at,
               ARRAY(SELECT a.target_id FROM delivery_attempts a
                     WHERE a.project_id = n.project_id AND a.notification_id = n.notification_id
                       AND a.channel = k.channel
                       AND (a.outcome IN ('ok', 'skipped', 'permanent')
                            OR (a.outcome = 'deferred' AND a.job_id = k.job_id))
                     UNION
                     -- a rule's in-app delivery, done by process_event for every recipient
                     SELECT r.user_id FROM notification_recipients r
                     WHERE k.channel = 'inApp'
                       AND coalesce(r.in_app_job_id, n.in_app_job_id) IS NOT NULL
                       AND r.project_id = n.project_id
                       AND r.notification_id = n.notification_id) AS done
        FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[])
             WITH ORDINALITY AS k(project_id, notification_id, channel, job_id, ix)
        CROSS JOIN LATERAL (SELECT * FROM notifications n
                            WHERE n.project_id = k.project_id
                              AND n.notification_id = k.notification_id
                            OFFSET 0) n
        LEFT JOIN events e ON e.project_id = n.project_id AND e.event_id = n.event_id
        LEFT JOIN rules r ON r.project_id = n.project_id AND r.rule_id = n.rule_id
        "#,
    )
    .bind(&projects)
    .bind(&notifications)
    .bind(&channels)
    .bind(&jobs)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|r| {
            let key = *keys.get(usize::try_from(r.ix).ok()?.checked_sub(1)?)?;
            Some((key, r.n))
        })
        .collect())
}

/// A recipient as delivery sees it: address, status, channel preferences.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Recipient {
    /// The user.
    pub user_id: Uuid,
    /// Their address.
    pub email: String,
    /// Their name.
    pub name: Option<String>,
    /// `ACTIVE`, `INVITED` or `DEACTIVATED` now.
    pub status: String,
    /// In-app on (default true).
    pub in_app: bool,
    /// Email on (default true).
    pub email_on: bool,
    /// Quiet hours for email: start (local time).
    pub quiet_start: Option<NaiveTime>,
    /// Quiet hours for email: end (local time).
    pub quiet_end: Option<NaiveTime>,
    /// Their time zone (IANA name).
    pub time_zone: String,
}

/// The notification's recipients (all of them, or `only` one), with their preferences now.
pub async fn recipients(
    pool: &PgPool,
    project_id: Uuid,
    notification_id: Uuid,
    only: Option<Uuid>,
) -> Result<Vec<Recipient>, sqlx::Error> {
    sqlx::query_as(
        r#"
        SELECT u.user_id, u.email, u.name, u.status,
               coalesce(p.in_app, true) AS in_app, coalesce(p.email, true) AS email_on,
               p.quiet_start, p.quiet_end, coalesce(p.time_zone, 'UTC') AS time_zone
        FROM notification_recipients nr
        JOIN users u ON u.project_id = nr.project_id AND u.user_id = nr.user_id
        LEFT JOIN notification_preferences p
          ON p.project_id = nr.project_id AND p.user_id = nr.user_id
        WHERE nr.project_id = $1 AND nr.notification_id = $2
          AND ($3::uuid IS NULL OR nr.user_id = $3)
        ORDER BY u.user_id
        "#,
    )
    .bind(project_id)
    .bind(notification_id)
    .bind(only)
    .fetch_all(pool)
    .await
}

/// How one attempt ended for one target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Delivered.
    Ok,
    /// Failed; the job retries it.
    Retry,
    /// Failed for good.
    Permanent,
    /// Not sent by choice (preferences, inactive user, disabled endpoint).
    Skipped,
    /// Held by quiet hours; a later job sends it.
    Deferred,
}

impl Outcome {
    /// As stored.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Retry => "retry",
            Outcome::Permanent => "permanent",
            Outcome::Skipped => "skipped",
            Outcome::Deferred => "deferred",
        }
    }
}

/// One target's attempt, to record.
#[derive(Debug, Clone)]
pub struct NewAttempt {
    /// A user (inApp, email) or an endpoint (webhook).
    pub target_id: Uuid,
    /// When this target's attempt started.
    pub started_at: DateTime<Utc>,
    /// How it ended.
    pub outcome: Outcome,
    /// A webhook's HTTP status.
    pub http_status: Option<i32>,
    /// The SMTP server's reply (redacted of addresses).
    pub smtp_reply: Option<String>,
    /// Why it failed or was skipped (no addresses, no secrets).
    pub error: Option<String>,
}

/// One job attempt's results, to record with [`record_many`].
#[derive(Debug, Clone)]
pub struct AttemptRecord {
    /// The project.
    pub project_id: Uuid,
    /// The notification.
    pub notification_id: Uuid,
    /// The channel.
    pub channel: Channel,
    /// The job.
    pub job_id: Uuid,
    /// Its attempt number.
    pub attempt: u32,
    /// One row per target.
    pub rows: Vec<NewAttempt>,
}

/// Records one job attempt's results (one row per target); a re-recorded attempt (the same
/// attempt number, after a crash between recording and acknowledging) keeps the first rows.
pub async fn record(
    conn: &mut PgConnection,
    project_id: Uuid,
    notification_id: Uuid,
    channel: Channel,
    job_id: Uuid,
    attempt: u32,
    rows: &[NewAttempt],
) -> Result<(), sqlx::Error> {
    let one = AttemptRecord {
        project_id,
        notification_id,
        channel,
        job_id,
        attempt,
        rows: rows.to_vec(),
    };
    record_many(conn, &[&one]).await
}

/// [`record`] for the attempts of many jobs in one statement (`deliver_notification`'s group
/// commit).
pub async fn record_many(
    conn: &mut PgConnection,
    records: &[&AttemptRecord],
) -> Result<(), sqlx::Error> {
    let rows = || {
        records
            .iter()
            .flat_map(|r| r.rows.iter().map(move |a| (*r, a)))
    };
    if rows().next().is_none() {
        return Ok(());
    }
    let projects: Vec<Uuid> = rows().map(|(r, _)| r.project_id).collect();
    let notifications: Vec<Uuid> = rows().map(|(r, _)| r.notification_id).collect();
    let channels: Vec<&str> = rows().map(|(r, _)| r.channel.as_str()).collect();
    let attempts: Vec<i32> = rows()
        .map(|(r, _)| i32::try_from(r.attempt).unwrap_or(i32::MAX))
        .collect();
    let jobs: Vec<Uuid> = rows().map(|(r, _)| r.job_id).collect();
    let targets: Vec<Uuid> = rows().map(|(_, a)| a.target_id).collect();
    let started: Vec<DateTime<Utc>> = rows().map(|(_, a)| a.started_at).collect();
    let outcomes: Vec<&str> = rows().map(|(_, a)| a.outcome.as_str()).collect();
    let statuses: Vec<Option<i32>> = rows().map(|(_, a)| a.http_status).collect();
    let replies: Vec<Option<&str>> = rows().map(|(_, a)| a.smtp_reply.as_deref()).collect();
    let errors: Vec<Option<&str>> = rows().map(|(_, a)| a.error.as_deref()).collect();
    sqlx::query(
        r#"
        INSERT INTO delivery_attempts (project_id, notification_id, channel, target_id, attempt,
                                       job_id, started_at, outcome, http_status, smtp_reply, error)
        SELECT t.project, t.notification, t.channel, t.target, t.attempt, t.job, t.started,
               t.outcome, t.status, t.reply, t.error
        FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::uuid[], $5::integer[], $6::uuid[],
                    $7::timestamptz[], $8::text[], $9::integer[], $10::text[], $11::text[])
             AS t(project, notification, channel, target, attempt, job, started, outcome,
                  status, reply, error)
        ON CONFLICT DO NOTHING
        "#,
    )
    .bind(&projects)
    .bind(&notifications)
    .bind(&channels)
    .bind(&targets)
    .bind(&attempts)
    .bind(&jobs)
    .bind(&started)
    .bind(&outcomes)
    .bind(&statuses)
    .bind(&replies)
    .bind(&errors)
    .execute(conn)
    .await?;
    Ok(())
}

/// The targets of (notification, channel) that are done: delivered, skipped, failed for good,
/// or deferred to a later job (by a job other than `job_id`, or by this one); for the in-app
/// channel of a rule's notification, every recipient (`process_event` delivered to all of them).
pub async fn done_targets(
    pool: &PgPool,
    project_id: Uuid,
    notification_id: Uuid,
    channel: Channel,
    job_id: Uuid,
) -> Result<HashSet<Uuid>, sqlx::Error> {
    let rows: Vec<Uuid> = sqlx::query_scalar(
        r#"
        SELECT target_id FROM delivery_attempts
        WHERE project_id = $1 AND notification_id = $2 AND channel = $3
          AND (outcome IN ('ok', 'skipped', 'permanent')
               OR (outcome = 'deferred' AND job_id = $4))
        UNION
        -- a rule's in-app delivery, done by process_event for every recipient at once
        SELECT r.user_id FROM notifications n
        JOIN notification_recipients r
          ON r.project_id = n.project_id AND r.notification_id = n.notification_id
        WHERE n.project_id = $1 AND n.notification_id = $2 AND $3 = 'inApp'
          AND coalesce(r.in_app_job_id, n.in_app_job_id) IS NOT NULL
        "#,
    )
    .bind(project_id)
    .bind(notification_id)
    .bind(channel.as_str())
    .bind(job_id)
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}

/// One recorded attempt, as the deliveries API shows it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AttemptRow {
    /// `inApp`, `email` or `webhook`.
    pub channel: String,
    /// A user or a webhook endpoint.
    pub target_id: Uuid,
    /// The job attempt (1-based).
    pub attempt: i32,
    /// The job.
    pub job_id: Uuid,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Finished.
    pub finished_at: DateTime<Utc>,
    /// `ok`, `retry`, `permanent`, `skipped` or `deferred`.
    pub outcome: String,
    /// A webhook's HTTP status.
    pub http_status: Option<i32>,
    /// The SMTP reply.
    pub smtp_reply: Option<String>,
    /// The error.
    pub error: Option<String>,
}

/// Every recorded attempt of a notification, by channel, target and attempt; at most `limit`.
///
/// A rule's in-app delivery is recorded once, on the notification (`in_app_job_id`,
/// `in_app_attempt`: the `process_event` attempt that stored it and delivered it to every
/// recipient in the same statement); each recipient's attempt is read from their row: `ok`
/// when delivered, `skipped` when their in-app channel was off, under the job and attempt the
/// row names when a re-run added it (a user given the rule's role between the runs), else the
/// notification's. Every other attempt is a row of
/// `delivery_attempts`.
pub async fn attempts(
    pool: &PgPool,
    project_id: Uuid,
    notification_id: Uuid,
    limit: i64,
) -> Result<Vec<AttemptRow>, sqlx::Error> {
    sqlx::query_as(
        r#"
        SELECT channel, target_id, attempt, job_id, started_at, finished_at, outcome,
               http_status, smtp_reply, error
        FROM delivery_attempts
        WHERE project_id = $1 AND notification_id = $2
        UNION ALL
        SELECT 'inApp', r.user_id, coalesce(r.in_app_attempt, n.in_app_attempt),
               coalesce(r.in_app_job_id, n.in_app_job_id), n.created_at,
               coalesce(r.delivered_at, n.created_at),
               CASE WHEN r.delivered_at IS NOT NULL THEN 'ok' ELSE 'skipped' END,
               NULL, NULL,
               CASE WHEN r.delivered_at IS NULL THEN 'in-app notifications off' END
        FROM notifications n
        JOIN notification_recipients r
          ON r.project_id = n.project_id AND r.notification_id = n.notification_id
        WHERE n.project_id = $1 AND n.notification_id = $2
          AND coalesce(r.in_app_job_id, n.in_app_job_id) IS NOT NULL
        ORDER BY channel, target_id, attempt
        LIMIT $3
        "#,
    )
    .bind(project_id)
    .bind(notification_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Whether the notification exists in the project.
pub async fn notification_exists(
    pool: &PgPool,
    project_id: Uuid,
    notification_id: Uuid,
) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM notifications WHERE project_id = $1 AND notification_id = $2)",
    )
    .bind(project_id)
    .bind(notification_id)
    .fetch_one(pool)
    .await
}
