//! Events' SQL: accepting them with their `process_event` jobs (one transaction, the outbox),
//! listing and reading them, and what `process_event` reads and writes.
//!
//! Event ids are UUIDv7, so `(project_id, event_id)` orders the list and a time range is a key
//! range ([`id_bound`]). An idempotency key is unique per project: the same key answers the
//! first event, never a second row.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgPool, Row as _};
use uuid::Uuid;

use crate::{
    jobs::{EnqueueOptions, Job as _, ProcessEvent},
    queue::NewJob,
};

/// An event to accept (validated by the caller).
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// Its type (`transfer.failed`).
    pub event_type: String,
    /// Who sent it, if said.
    pub source: Option<String>,
    /// The JSON object.
    pub payload: serde_json::Value,
    /// When it happened (default: when it was received).
    pub occurred_at: DateTime<Utc>,
    /// The sender's idempotency key, unique in the project.
    pub idempotency_key: Option<String>,
}

/// What accepting an event gave.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Accepted {
    /// The event (the first one, for a repeated idempotency key).
    pub event_id: Uuid,
    /// Its `process_event` job.
    pub job_id: Uuid,
    /// False when the idempotency key named an earlier event.
    pub created: bool,
}

/// Accepts events of `project_id` in the caller's transaction: one row each, and one
/// `process_event` job each through the outbox, in two statements whatever their number.
/// Answers in the order given.
pub async fn accept(
    conn: &mut PgConnection,
    project_id: Uuid,
    events: &[NewEvent],
    opts: &EnqueueOptions,
) -> Result<Vec<Accepted>, crate::jobs::EnqueueError> {
    let projects = vec![project_id; events.len()];
    accept_each(conn, &projects, events, |_| opts.clone()).await
}

/// [`accept`] for events of several projects at once (`projects[i]` is `events[i]`'s): what
/// Comet raises itself across projects (`bucket.low_balance` from `bucket_monitor`) goes in
/// the same two statements whatever the number of projects.
pub async fn accept_across(
    conn: &mut PgConnection,
    projects: &[Uuid],
    events: &[NewEvent],
    opts: &EnqueueOptions,
) -> Result<Vec<Accepted>, crate::jobs::EnqueueError> {
    accept_each(conn, projects, events, |_| opts.clone()).await
}

/// [`accept_across`] with each event's job options of its own (`opts(i)` for `events[i]`):
/// events of several requests written together (the API's group commit), each job with its
/// request id.
pub async fn accept_each(
    conn: &mut PgConnection,
    projects: &[Uuid],
    events: &[NewEvent],
    opts: impl Fn(usize) -> EnqueueOptions,
) -> Result<Vec<Accepted>, crate::jobs::EnqueueError> {
    debug_assert_eq!(projects.len(), events.len());
    let (event_ids, jobs) = new_ids_and_jobs(projects, events, opts)?;
    let job_ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let EventColumns {
        types,
        sources,
        payloads,
        occurred,
    } = EventColumns::of(events);
    let keys: Vec<Option<&str>> = events
        .iter()
        .map(|e| e.idempotency_key.as_deref())
        .collect();
    let created: Vec<Uuid> = sqlx::query_scalar(
        r#"
        INSERT INTO events (project_id, event_id, type, source, payload, occurred_at,
                            idempotency_key, job_id, rules_version)
        SELECT e.project_id, e.event_id, e.type, e.source, e.payload, e.occurred_at,
               e.idempotency_key, e.job_id,
               (SELECT p.rules_version FROM projects p WHERE p.project_id = e.project_id)
        FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[],
                    $6::timestamptz[], $7::text[], $8::uuid[])
             AS e (project_id, event_id, type, source, payload, occurred_at,
                   idempotency_key, job_id)
        ON CONFLICT (project_id, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
        RETURNING event_id
        "#,
    )
    .bind(projects)
    .bind(&event_ids)
    .bind(&types)
    .bind(&sources)
    .bind(&payloads)
    .bind(&occurred)
    .bind(&keys)
    .bind(&job_ids)
    .fetch_all(&mut *conn)
    .await?;
    let created: std::collections::HashSet<Uuid> = created.into_iter().collect();

    // repeated keys (earlier requests, or earlier in this batch) answer the first event
    let (repeated_projects, repeated_keys): (Vec<Uuid>, Vec<&str>) = events
        .iter()
        .zip(projects)
        .zip(&event_ids)
        .filter(|(_, id)| !created.contains(id))
        .filter_map(|((e, p), _)| Some((*p, e.idempotency_key.as_deref()?)))
        .unzip();
    let mut first: HashMap<(Uuid, String), (Uuid, Uuid)> = HashMap::new();
    if !repeated_keys.is_empty() {
        let rows: Vec<(Uuid, String, Uuid, Uuid)> = sqlx::query_as(
            "SELECT e.project_id, e.idempotency_key, e.event_id, e.job_id FROM events e \
             JOIN unnest($1::uuid[], $2::text[]) AS k (project_id, idempotency_key) \
               ON e.project_id = k.project_id AND e.idempotency_key = k.idempotency_key",
        )
        .bind(&repeated_projects)
        .bind(&repeated_keys)
        .fetch_all(&mut *conn)
        .await?;
        first = rows
            .into_iter()
            .map(|(p, k, e, j)| ((p, k), (e, j)))
            .collect();
    }
    let new_jobs: Vec<NewJob> = jobs
        .into_iter()
        .zip(&event_ids)
        .filter(|(_, id)| created.contains(id))
        .map(|(j, _)| j)
        .collect();
    crate::db::outbox::insert_many(conn, &new_jobs).await?;

    Ok(events
        .iter()
        .zip(projects)
        .zip(event_ids.iter().zip(&job_ids))
        .map(|((e, p), (event_id, job_id))| {
            if created.contains(event_id) {
                return Accepted {
                    event_id: *event_id,
                    job_id: *job_id,
                    created: true,
                };
            }
            let (event_id, job_id) = e
                .idempotency_key
                .as_ref()
                .and_then(|k| first.get(&(*p, k.clone())))
                .copied()
                // not created and no key: cannot happen (only keys conflict)
                .unwrap_or((*event_id, *job_id));
            Accepted {
                event_id,
                job_id,
                created: false,
            }
        })
        .collect())
}

/// Events' type, source, payload and occurrence time as the arrays of a multi-row insert.
struct EventColumns<'a> {
    types: Vec<&'a str>,
    sources: Vec<Option<&'a str>>,
    payloads: Vec<&'a serde_json::Value>,
    occurred: Vec<DateTime<Utc>>,
}

impl<'a> EventColumns<'a> {
    fn of(events: &'a [NewEvent]) -> Self {
        Self {
            types: events.iter().map(|e| e.event_type.as_str()).collect(),
            sources: events.iter().map(|e| e.source.as_deref()).collect(),
            payloads: events.iter().map(|e| &e.payload).collect(),
            occurred: events.iter().map(|e| e.occurred_at).collect(),
        }
    }
}

/// New ids for `events` (UUIDv7) and each one's `process_event` job (`opts(i)` for
/// `events[i]`).
fn new_ids_and_jobs(
    projects: &[Uuid],
    events: &[NewEvent],
    opts: impl Fn(usize) -> EnqueueOptions,
) -> Result<(Vec<Uuid>, Vec<NewJob>), serde_json::Error> {
    let event_ids: Vec<Uuid> = events.iter().map(|_| Uuid::now_v7()).collect();
    let jobs = event_ids
        .iter()
        .zip(projects)
        .enumerate()
        .map(|(i, (&event_id, &project_id))| {
            ProcessEvent {
                project_id,
                event_id,
            }
            .to_new_job(opts(i))
        })
        .collect::<Result<_, _>>()?;
    Ok((event_ids, jobs))
}

/// [`accept_each`] for events none of which has an idempotency key, in one statement of its
/// own (an implicit transaction: both inserts commit together or neither does): one round trip
/// instead of four (`BEGIN`, two inserts, `COMMIT`), the API's single-event path when no
/// request of the group sent a key. Such events cannot conflict, so every one is created.
/// Panics in debug builds if an event has a key.
pub async fn accept_each_keyless(
    pool: &PgPool,
    projects: &[Uuid],
    events: &[NewEvent],
    opts: impl Fn(usize) -> EnqueueOptions,
) -> Result<Vec<Accepted>, crate::jobs::EnqueueError> {
    debug_assert_eq!(projects.len(), events.len());
    debug_assert!(events.iter().all(|e| e.idempotency_key.is_none()));
    let (event_ids, jobs) = new_ids_and_jobs(projects, events, opts)?;
    let job_ids: Vec<Uuid> = jobs.iter().map(|j| j.id).collect();
    let EventColumns {
        types,
        sources,
        payloads,
        occurred,
    } = EventColumns::of(events);
    let cols = crate::db::outbox::Columns::of(&jobs);
    let q = sqlx::query(
        r#"
        WITH ev AS (
            INSERT INTO events (project_id, event_id, type, source, payload, occurred_at,
                                job_id, rules_version)
            SELECT e.project_id, e.event_id, e.type, e.source, e.payload, e.occurred_at,
                   e.job_id,
                   (SELECT p.rules_version FROM projects p WHERE p.project_id = e.project_id)
            FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::jsonb[],
                        $6::timestamptz[], $7::uuid[])
                 AS e (project_id, event_id, type, source, payload, occurred_at, job_id)
            RETURNING 1
        ), jobs AS (
            INSERT INTO job_outbox
                (job_id, queue, payload, run_at, priority, max_attempts,
                 idempotency_key, project_id, request_id, partition_key)
            SELECT * FROM unnest($8::uuid[], $9::text[], $10::jsonb[], $11::timestamptz[],
                                 $12::smallint[], $13::integer[], $14::text[], $15::uuid[],
                                 $16::text[], $17::text[])
            RETURNING 1
        )
        SELECT (SELECT count(*) FROM ev), (SELECT count(*) FROM jobs)
        "#,
    )
    .bind(projects)
    .bind(&event_ids)
    .bind(&types)
    .bind(&sources)
    .bind(&payloads)
    .bind(&occurred)
    .bind(&job_ids);
    let row = cols.bind(q).fetch_one(pool).await?;
    let (stored, queued): (i64, i64) = (row.try_get(0)?, row.try_get(1)?);
    let n = events.len() as i64;
    if stored != n || queued != n {
        // cannot happen: keyless events do not conflict and the statement is all or nothing
        return Err(sqlx::Error::Protocol(format!(
            "accepted {stored} events and {queued} jobs of {n}"
        ))
        .into());
    }
    Ok(event_ids
        .into_iter()
        .zip(job_ids)
        .map(|(event_id, job_id)| Accepted {
            event_id,
            job_id,
            created: true,
        })
        .collect())
}

/// The smallest (`upper` false) or largest (`upper` true) UUIDv7 of the millisecond `at`: a
/// time bound on event ids.
pub fn id_bound(at: DateTime<Utc>, upper: bool) -> Uuid {
    let ms = at.timestamp_millis().clamp(0, (1 << 48) - 1) as u64;
    let mut bytes = [if upper { 0xFF } else { 0 }; 16];
    bytes[..6].copy_from_slice(&ms.to_be_bytes()[2..]);
    Uuid::from_bytes(bytes)
}

/// Filters of the event list.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only this type (exact).
    pub event_type: Option<String>,
    /// Only from this source.
    pub source: Option<String>,
    /// Received at or after.
    pub from: Option<DateTime<Utc>>,
    /// Received before.
    pub to: Option<DateTime<Utc>>,
    /// Only processed (true) or not yet processed (false) events.
    pub processed: Option<bool>,
}

/// One event as lists and reads show it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct EventRow {
    /// Id (UUIDv7).
    pub event_id: Uuid,
    /// Type.
    #[sqlx(rename = "type")]
    pub event_type: String,
    /// Source.
    pub source: Option<String>,
    /// Payload.
    pub payload: serde_json::Value,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// When it was received.
    pub received_at: DateTime<Utc>,
    /// The sender's idempotency key.
    pub idempotency_key: Option<String>,
    /// Its `process_event` job.
    pub job_id: Uuid,
    /// When `process_event` finished with it.
    pub processed_at: Option<DateTime<Utc>>,
    /// The rules it matched.
    pub matched_rule_ids: Vec<Uuid>,
    /// Notifications created.
    pub notification_count: i32,
    /// Recipients of those notifications.
    pub recipient_count: i32,
}

const COLUMNS: &str = "event_id, type, source, payload, occurred_at, received_at, \
    idempotency_key, job_id, processed_at, matched_rule_ids, notification_count, recipient_count";

/// A page of a project's events, newest first, after the cursor `before` (an event id).
pub async fn list(
    pool: &PgPool,
    project_id: Uuid,
    filter: &EventFilter,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<EventRow>, sqlx::Error> {
    let lower = filter.from.map(|t| id_bound(t, false));
    let upper = filter.to.map(|t| id_bound(t, false));
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        r#"
        SELECT {COLUMNS} FROM events
        WHERE project_id = $1
          AND ($2::text IS NULL OR type = $2)
          AND ($3::text IS NULL OR source = $3)
          AND ($4::uuid IS NULL OR event_id >= $4)
          AND ($5::uuid IS NULL OR event_id < $5)
          AND ($6::boolean IS NULL OR (processed_at IS NOT NULL) = $6)
          AND ($7::uuid IS NULL OR event_id < $7)
        ORDER BY event_id DESC
        LIMIT $8
        "#
    )))
    .bind(project_id)
    .bind(&filter.event_type)
    .bind(&filter.source)
    .bind(lower)
    .bind(upper)
    .bind(filter.processed)
    .bind(before)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// One event of the project.
pub async fn find(
    pool: &PgPool,
    project_id: Uuid,
    event_id: Uuid,
) -> Result<Option<EventRow>, sqlx::Error> {
    sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM events WHERE project_id = $1 AND event_id = $2"
    )))
    .bind(project_id)
    .bind(event_id)
    .fetch_optional(pool)
    .await
}

/// What `process_event` reads of an event.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ToProcess {
    /// Type.
    #[sqlx(rename = "type")]
    pub event_type: String,
    /// Source.
    pub source: Option<String>,
    /// Payload.
    pub payload: serde_json::Value,
    /// When it happened.
    pub occurred_at: DateTime<Utc>,
    /// The project's rules version when the event was accepted.
    pub rules_version: i64,
    /// Set once processed.
    pub processed_at: Option<DateTime<Utc>>,
}

/// The events `process_event` works on, many at once (one statement): `(project, event)` keys
/// in, the events found out with their keys, in no particular order; an event not in its
/// project is left out.
pub async fn to_process_many(
    conn: &mut PgConnection,
    keys: &[(Uuid, Uuid)],
) -> Result<Vec<(Uuid, Uuid, ToProcess)>, sqlx::Error> {
    #[derive(sqlx::FromRow)]
    struct Row {
        project_id: Uuid,
        event_id: Uuid,
        #[sqlx(flatten)]
        event: ToProcess,
    }
    let projects: Vec<Uuid> = keys.iter().map(|k| k.0).collect();
    let events: Vec<Uuid> = keys.iter().map(|k| k.1).collect();
    let rows: Vec<Row> = sqlx::query_as(
        // a join driven by the keys: one primary-key look-up each, whatever the statistics
        "SELECT e.project_id, e.event_id, e.type, e.source, e.payload, e.occurred_at, \
                e.rules_version, e.processed_at \
         FROM unnest($1::uuid[], $2::uuid[]) AS k(project_id, event_id) \
         CROSS JOIN LATERAL (SELECT * FROM events e \
                             WHERE e.project_id = k.project_id AND e.event_id = k.event_id) e",
    )
    .bind(&projects)
    .bind(&events)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| (r.project_id, r.event_id, r.event))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_bounds_enclose_every_v7_id_of_their_millisecond() {
        let at: DateTime<Utc> = "2026-12-02T10:00:00.123Z".parse().unwrap();
        let ts = uuid::Timestamp::from_unix(uuid::NoContext, at.timestamp() as u64, 123_000_000);
        let id = Uuid::new_v7(ts);
        assert!(id_bound(at, false) <= id && id <= id_bound(at, true));
        let next = at + chrono::Duration::milliseconds(1);
        assert!(id < id_bound(next, false));
    }
}
