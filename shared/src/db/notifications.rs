//! Notifications' SQL: what `process_event` writes for the rules an event matched, once
//! however often it runs (unique `(project, event, rule)`; recipients keyed by user), in one
//! statement with the event's processed mark.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::{
    db::inbox::{FeedEntry, InboxRow, NOTIFICATION},
    jobs::Channel,
};

/// How a transaction that calls [`create_for_events`] begins, in the same round trip as its
/// `BEGIN`: with sequential scans off (its statements read by key; see the comment in
/// [`create_for_events`] for the plan this prevents), and with the unread counter's insert
/// trigger off (`comet.recipients_counted`: the statement that inserts the recipients keeps
/// their users' `inbox_users` rows itself, in the same update as their feed's sequence).
pub const BEGIN_BATCH: &str =
    "BEGIN; SET LOCAL enable_seqscan = off; SET LOCAL comet.recipients_counted = on";

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
    /// in the same transaction (every channel but in-app, delivered here already).
    pub new: Vec<ToEnqueue>,
    /// The feed entries of the in-app deliveries made now (by user, then seq): the caller
    /// publishes them after the commit.
    pub in_app: Vec<FeedEntry>,
    /// In-app recipients skipped now (their in-app channel is off).
    pub in_app_skipped: usize,
    /// In-app notifications of this event stored by an earlier run (a re-run): their entries
    /// may never have been published (a crash between the commit and the publish), so the
    /// caller has them published again (streams drop what they have).
    pub in_app_earlier: Vec<Uuid>,
    /// The delivered notifications this run created, as each of their in-app recipients sees
    /// them at the commit (unread, unacknowledged, created and delivered at the transaction's
    /// time): the caller publishes them without reading them back.
    pub new_rows: Vec<InboxRow>,
}

/// One event's matches, to store with [`create_for_events`].
#[derive(Debug, Clone)]
pub struct EventMatches {
    /// The event.
    pub event_id: Uuid,
    /// The notifications of the rules that matched (suppressed ones included).
    pub new: Vec<NewNotification>,
    /// Every rule that matched, for the event's `matched_rule_ids`.
    pub matched: Vec<Uuid>,
    /// The `process_event` job and its attempt: the in-app delivery attempts' job.
    pub job: (Uuid, i32),
}

/// Creates the events' notifications and their recipients (the ACTIVE users holding any of
/// each rule's target roles now) and marks the events processed with the rules they matched
/// and their counts (the first processing time is kept): for many events of one project in one
/// statement (one plan, one round trip), in the caller's transaction; what `process_event`'s
/// group commit writes for the events of its batch. A re-run adds nothing. The counts are the
/// event's notifications and recipients, created now or by an earlier run.
///
/// In-app delivery happens here too, for the notifications whose channels hold `inApp`: a
/// recipient whose in-app channel is on is inserted delivered (in their inbox from the commit
/// on), one who turned it off is not; the notification records the event's job and attempt as
/// its in-app delivery (`in_app_job_id`, `in_app_attempt`), from which
/// [`crate::db::deliveries::attempts`] shows each recipient's attempt (`ok` / `skipped`). The
/// users delivered to have their `inbox_users` row created or locked, in user order, and
/// updated once: unread count and feed sequence together (the transaction began with
/// [`BEGIN_BATCH`], which turns the unread trigger's count off); their feed entries are
/// appended (what [`crate::db::inbox::append`] does for the other writers) and returned
/// ([`Created::in_app`]) for the caller to publish after the commit.
///
/// Returns one [`Created`] per event found in the project, in no particular order; an event
/// that is not in the project is left out.
pub async fn create_for_events(
    conn: &mut PgConnection,
    project_id: Uuid,
    events: &[EventMatches],
) -> Result<Vec<(Uuid, Created)>, sqlx::Error> {
    let all = || {
        events
            .iter()
            .flat_map(|e| e.new.iter().map(move |n| (e.event_id, n)))
    };
    let ids: Vec<Uuid> = all().map(|_| Uuid::now_v7()).collect();
    let note_events: Vec<Uuid> = all().map(|(e, _)| e).collect();
    let rules: Vec<Uuid> = all().map(|(_, n)| n.rule_id).collect();
    let titles: Vec<&str> = all().map(|(_, n)| n.title.as_str()).collect();
    let bodies: Vec<&str> = all().map(|(_, n)| n.body.as_str()).collect();
    let priorities: Vec<i32> = all().map(|(_, n)| n.priority).collect();
    let sounds: Vec<Option<&str>> = all().map(|(_, n)| n.sound.as_deref()).collect();
    // text[] per row does not fit unnest: channels and matched rules travel as comma lists
    let channels: Vec<String> = all().map(|(_, n)| n.channels.join(",")).collect();
    let periods: Vec<Option<i64>> = all().map(|(_, n)| n.suppressed_in).collect();
    // (event, rule, role) triples: the recipients of each rule's notification
    let mut pair_events = Vec::new();
    let mut pair_rules = Vec::new();
    let mut pair_roles = Vec::new();
    for (event, n) in all().filter(|(_, n)| n.suppressed_in.is_none()) {
        for role in &n.target_role_ids {
            pair_events.push(event);
            pair_rules.push(n.rule_id);
            pair_roles.push(*role);
        }
    }
    let event_ids: Vec<Uuid> = events.iter().map(|e| e.event_id).collect();
    let matched: Vec<String> = events
        .iter()
        .map(|e| {
            e.matched
                .iter()
                .map(Uuid::to_string)
                .collect::<Vec<_>>()
                .join(",")
        })
        .collect();
    let job_ids: Vec<Uuid> = events.iter().map(|e| e.job.0).collect();
    let attempts: Vec<i32> = events.iter().map(|e| e.job.1).collect();
    // Every part of one statement sees the rows as they were before it: `earlier` (an earlier
    // run's notifications) and `added` never overlap, nor do `earlier_recipients` and `rec`.
    // The per-event aggregates are MATERIALIZED: the planner estimates a data-modifying CTE's
    // output at a row or so, and with that estimate it put an aggregate on the inner side of a
    // nested loop over the batch's events, re-sorting and re-aggregating every recipient row
    // once per event (a batch of 62 events spent 26 of its 29 ms there; BENCHMARKS.md,
    // "Notifications"); a rescan of a materialized CTE reads its few rows back.
    // Events are updated in id order (the caller's batches never meet in a different order).
    //
    // Every table this statement reads it reads by key, a few rows per event; but on a small
    // project's tables the planner prices a sequential scan below an index look-up and then
    // runs it once per recipient (the active check walked the 200 users of the bench's project
    // for each of a batch's 640 recipients: 14 of the statement's 20 ms). The caller's
    // transaction therefore runs with sequential scans off ([`BEGIN_BATCH`]).
    #[allow(clippy::type_complexity)]
    let rows: Vec<(
        Uuid,
        i32,
        i32,
        Vec<Uuid>,
        Vec<Uuid>,
        Vec<Uuid>,
        Vec<i64>,
        i64,
        Vec<Uuid>,
        DateTime<Utc>,
    )> =
        sqlx::query_as(
            r#"
        WITH ev AS (
            SELECT * FROM unnest($2::uuid[], $3::text[], $16::uuid[], $17::integer[])
                AS e(event_id, matched, job_id, attempt)
        ),
        added AS (
            -- a rule's in-app delivery is recorded here, once: the job and attempt that
            -- delivers it to every recipient in this statement (`deliveries::attempts` reads
            -- the per-recipient outcomes from the recipients' rows)
            INSERT INTO notifications (project_id, notification_id, event_id, rule_id, title,
                                       body, priority, sound, channels, suppressed, data,
                                       in_app_job_id, in_app_attempt)
            SELECT $1, n.id, n.event, n.rule, n.title, n.body, n.priority, n.sound,
                   coalesce(string_to_array(nullif(n.channels, ''), ','), '{}'),
                   n.period IS NOT NULL,
                   CASE WHEN n.period IS NOT NULL
                        THEN jsonb_build_object('period', n.period::text) END,
                   CASE WHEN n.in_app THEN e.job_id END,
                   CASE WHEN n.in_app THEN e.attempt END
            FROM (SELECT *, n.period IS NULL AND 'inApp' = ANY(string_to_array(n.channels, ','))
                            AS in_app
                  FROM unnest($4::uuid[], $5::uuid[], $6::uuid[], $7::text[], $8::text[],
                              $9::integer[], $10::text[], $11::text[], $12::bigint[])
                       AS n(id, event, rule, title, body, priority, sound, channels, period)) n
            JOIN ev e ON e.event_id = n.event
            ON CONFLICT (project_id, event_id, rule_id) DO NOTHING
            RETURNING notification_id, event_id, rule_id, suppressed, channels, false AS earlier
        ),
        earlier AS (
            -- one (project_id, event_id, rule_id) key look-up per event, whatever the
            -- statistics: a lateral subquery that is not flattened (OFFSET 0) is run per event
            -- (with a plan made while the table was small, a join walked every notification
            -- of the project: BENCHMARKS.md, "Notifications")
            SELECT n.notification_id, n.event_id, n.rule_id, n.suppressed, n.channels,
                   true AS earlier
            FROM ev CROSS JOIN LATERAL (
                SELECT * FROM notifications n
                WHERE n.project_id = $1 AND n.event_id = ev.event_id OFFSET 0
            ) n
        ),
        notes AS (
            SELECT * FROM added UNION ALL SELECT * FROM earlier
        ),
        rec AS (
            -- in-app delivery: a recipient whose in-app channel is on is in their inbox from
            -- the commit on (the unread trigger creates and locks their inbox_users row); one
            -- this run adds to an earlier run's notification names this run's job and attempt
            -- (the notification names the earlier one's)
            INSERT INTO notification_recipients (project_id, notification_id, user_id,
                                                 delivered_at, in_app_job_id, in_app_attempt)
            SELECT DISTINCT $1, n.notification_id, ur.user_id,
                   CASE WHEN 'inApp' = ANY(n.channels) AND coalesce(p.in_app, true)
                        THEN now() END,
                   CASE WHEN n.earlier AND 'inApp' = ANY(n.channels) THEN e.job_id END,
                   CASE WHEN n.earlier AND 'inApp' = ANY(n.channels) THEN e.attempt END
            FROM unnest($13::uuid[], $14::uuid[], $15::uuid[]) AS t(event_id, rule_id, role_id)
            JOIN ev e ON e.event_id = t.event_id
            -- a suppressed match has no recipients (a re-run whose suppression decision
            -- changed still finds it stored suppressed)
            JOIN notes n ON n.event_id = t.event_id AND n.rule_id = t.rule_id
                        AND NOT n.suppressed
            JOIN user_roles ur ON ur.project_id = $1 AND ur.role_id = t.role_id
            -- the user by primary key (a plan made on small tables walked the project's
            -- users by status for each recipient)
            CROSS JOIN LATERAL (
                SELECT u.status FROM users u
                WHERE u.project_id = $1 AND u.user_id = ur.user_id OFFSET 0
            ) u
            LEFT JOIN notification_preferences p
              ON p.project_id = $1 AND p.user_id = ur.user_id
            WHERE u.status = 'ACTIVE'
            ON CONFLICT DO NOTHING
            RETURNING notification_id, user_id, delivered_at IS NOT NULL AS delivered
        ),
        rec_in_app AS (
            SELECT n.event_id, r.notification_id, r.user_id, r.delivered
            FROM rec r JOIN notes n USING (notification_id)
            WHERE 'inApp' = ANY(n.channels)
        ),
        numbered AS MATERIALIZED (
            -- each user's in-app deliveries of this statement, numbered in notification order
            SELECT event_id, user_id, notification_id,
                   row_number() OVER (PARTITION BY user_id ORDER BY notification_id) AS k,
                   count(*) OVER (PARTITION BY user_id) AS n
            FROM rec_in_app WHERE delivered
        ),
        counters AS (
            -- the unread counter and the feed's sequence of every user delivered to, in one
            -- update per user, taken in user order (the lock order; the insert trigger's count
            -- is off in this transaction: BEGIN_BATCH)
            INSERT INTO inbox_users AS i (project_id, user_id, unread, last_seq)
            SELECT $1, user_id, n, n FROM numbered WHERE k = 1 ORDER BY user_id
            ON CONFLICT (project_id, user_id)
                DO UPDATE SET unread = i.unread + excluded.unread,
                              last_seq = i.last_seq + excluded.last_seq
            RETURNING user_id, last_seq
        ),
        last_seqs AS MATERIALIZED (
            -- one row: each user's last seq after the update, looked up by key below (a join
            -- of two CTEs is planned on a guess of about one row each: as a nested loop, it
            -- compared every delivery with every user, 47 of a 64-event batch's 85 ms)
            SELECT jsonb_object_agg(user_id::text, last_seq) AS of_user FROM counters
        ),
        sequenced AS MATERIALIZED (
            SELECT nb.event_id, nb.user_id, nb.notification_id,
                   (l.of_user ->> nb.user_id::text)::bigint - nb.n + nb.k AS seq
            FROM numbered nb CROSS JOIN last_seqs l
        ),
        feed AS (
            INSERT INTO inbox_feed (project_id, user_id, seq, kind, notification_id)
            SELECT $1, user_id, seq, 'notification', notification_id FROM sequenced
        ),
        in_app AS MATERIALIZED (
            SELECT event_id,
                   array_agg(notification_id ORDER BY user_id, seq) AS notes,
                   array_agg(user_id ORDER BY user_id, seq) AS users,
                   array_agg(seq ORDER BY user_id, seq) AS seqs
            FROM sequenced GROUP BY event_id
        ),
        in_app_skipped AS MATERIALIZED (
            SELECT event_id, count(*) AS skipped FROM rec_in_app WHERE NOT delivered
            GROUP BY event_id
        ),
        rec_counts AS MATERIALIZED (
            SELECT n.event_id, count(*) AS c FROM rec JOIN notes n USING (notification_id)
            GROUP BY n.event_id
        ),
        earlier_rec_counts AS MATERIALIZED (
            SELECT e.event_id, count(*) AS c FROM notification_recipients r
            JOIN earlier e ON r.project_id = $1 AND r.notification_id = e.notification_id
            GROUP BY e.event_id
        ),
        note_counts AS MATERIALIZED (
            SELECT event_id, count(*) AS c,
                   coalesce(array_agg(notification_id) FILTER (WHERE NOT suppressed
                            AND notification_id IN (SELECT notification_id FROM added)), '{}')
                       AS added,
                   coalesce(array_agg(notification_id) FILTER (WHERE NOT suppressed
                            AND 'inApp' = ANY(channels)
                            AND notification_id IN (SELECT notification_id FROM earlier)), '{}')
                       AS earlier_in_app
            FROM notes GROUP BY event_id
        ),
        counts AS (
            SELECT ev.event_id, ev.matched,
                   coalesce(nc.c, 0)::integer AS notifications,
                   (coalesce(rc.c, 0) + coalesce(erc.c, 0))::integer AS recipients,
                   coalesce(nc.added, '{}') AS added,
                   coalesce(ia.notes, '{}') AS in_app_notes,
                   coalesce(ia.users, '{}') AS in_app_users,
                   coalesce(ia.seqs, '{}') AS in_app_seqs,
                   coalesce(sk.skipped, 0) AS in_app_skipped,
                   coalesce(nc.earlier_in_app, '{}') AS earlier_in_app
            FROM ev
            LEFT JOIN note_counts nc ON nc.event_id = ev.event_id
            LEFT JOIN rec_counts rc ON rc.event_id = ev.event_id
            LEFT JOIN earlier_rec_counts erc ON erc.event_id = ev.event_id
            LEFT JOIN in_app ia ON ia.event_id = ev.event_id
            LEFT JOIN in_app_skipped sk ON sk.event_id = ev.event_id
        )
        UPDATE events SET processed_at = coalesce(processed_at, now()),
                          matched_rule_ids = coalesce(string_to_array(nullif(c.matched, ''), ',')::uuid[], '{}'),
                          notification_count = c.notifications, recipient_count = c.recipients
        FROM counts c
        WHERE project_id = $1 AND events.event_id = c.event_id
        RETURNING c.event_id, c.notifications, c.recipients, c.added, c.in_app_notes,
                  c.in_app_users, c.in_app_seqs, c.in_app_skipped, c.earlier_in_app, now()
        "#,
        )
        .bind(project_id)
        .bind(&event_ids)
        .bind(&matched)
        .bind(&ids)
        .bind(&note_events)
        .bind(&rules)
        .bind(&titles)
        .bind(&bodies)
        .bind(&priorities)
        .bind(&sounds)
        .bind(&channels)
        .bind(&periods)
        .bind(&pair_events)
        .bind(&pair_rules)
        .bind(&pair_roles)
        .bind(&job_ids)
        .bind(&attempts)
        .fetch_all(conn)
        .await?;
    // the notifications inserted now, with the event and the rule's match they came from
    let made: std::collections::HashMap<Uuid, (Uuid, &NewNotification)> = ids
        .iter()
        .zip(all())
        .map(|(id, (e, n))| (*id, (e, n)))
        .collect();
    Ok(rows
        .into_iter()
        .map(
            |(
                event_id,
                notifications,
                recipients,
                added,
                notes,
                users,
                seqs,
                skipped,
                earlier,
                at,
            )| {
                let made_now = || added.iter().filter_map(|id| Some((*id, made.get(id)?)));
                // every channel but in-app (delivered here already)
                let new = made_now()
                    .map(|(notification_id, (_, n))| ToEnqueue {
                        notification_id,
                        channels: n
                            .channels
                            .iter()
                            .filter(|c| c.as_str() != Channel::InApp.as_str())
                            .cloned()
                            .collect(),
                    })
                    .collect();
                // what `notifications` and the recipient rows hold now: the columns' defaults
                // and `now()` are the transaction's time
                let new_rows = made_now()
                    .filter(|(_, (_, n))| n.channels.iter().any(|c| c == Channel::InApp.as_str()))
                    .map(|(notification_id, (event, n))| InboxRow {
                        notification_id,
                        kind: "rule".to_owned(),
                        rule_id: Some(n.rule_id),
                        event_id: Some(*event),
                        title: n.title.clone(),
                        body: n.body.clone(),
                        priority: n.priority,
                        sound: n.sound.clone(),
                        data: None,
                        created_at: at,
                        delivered_at: Some(at),
                        read_at: None,
                        deleted_at: None,
                        acknowledged_by: None,
                        acknowledged_at: None,
                    })
                    .collect();
                (
                    event_id,
                    Created {
                        notifications,
                        recipients,
                        new,
                        in_app: notes
                            .into_iter()
                            .zip(users)
                            .zip(seqs)
                            .map(|((notification_id, user_id), seq)| FeedEntry {
                                user_id,
                                seq,
                                kind: NOTIFICATION.to_owned(),
                                notification_id,
                            })
                            .collect(),
                        in_app_skipped: usize::try_from(skipped).unwrap_or_default(),
                        in_app_earlier: earlier,
                        new_rows,
                    },
                )
            },
        )
        .collect())
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
