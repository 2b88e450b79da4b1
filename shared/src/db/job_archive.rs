//! The job archive's SQL (`job_archive`): finished jobs copied from Redis by the workers'
//! archiver, the search operators run over them, and dead jobs grouped by error fingerprint.
//!
//! Every read takes an optional project: `Some` for a project's own callers (the rows of other
//! projects are never read), `None` only for platform operators.

use chrono::{DateTime, SubsecRound, Utc};
use sqlx::{PgPool, Postgres, QueryBuilder};
use uuid::Uuid;

use super::job_dead_alerts::Death;
use crate::queue::{AttemptError, JobRecord, JobState, fingerprint::fingerprint};

/// What [`write`] did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Written {
    /// Finished jobs upserted.
    pub written: u64,
    /// Archived rows deleted (jobs open again).
    pub deleted: u64,
    /// Job lifecycle messages enqueued (`job_webhook` jobs, through the outbox).
    pub messages: usize,
    /// Messages not made because their project was at its open-jobs quota, per project.
    pub dropped: std::collections::HashMap<Uuid, u64>,
}

/// Writes a batch in one transaction: finished jobs upserted (a later copy of the same job
/// replaces an earlier one unless it is older), jobs open again (a dead job retried) deleted,
/// each new death counted into its dead-job alert window (`job_dead_alerts`, windows of
/// `dead_alert_window`), and each new finish told to the endpoints of its project that
/// subscribe to it (`job_webhook` jobs in the outbox; wake the relays after), within each
/// project's `room` (see [`crate::jobs::lifecycle_jobs`]; `None`: not limited).
pub async fn write(
    pool: &PgPool,
    finished: &[&JobRecord],
    reopened: &[Uuid],
    dead_alert_window: std::time::Duration,
    room: Option<&std::collections::HashMap<Uuid, u64>>,
) -> Result<Written, sqlx::Error> {
    let mut tx = pool.begin().await?;
    let mut written = 0;
    let fresh = new_finishes(&mut tx, finished).await?;
    let deaths = deaths(&fresh);
    let lifecycle = crate::jobs::lifecycle_jobs(&fresh.jobs, &fresh.subscribers, room)
        .map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
    super::outbox::insert_many(&mut tx, &lifecycle.jobs).await?;
    if !finished.is_empty() {
        let mut ids = Vec::with_capacity(finished.len());
        let (mut queues, mut kinds, mut projects, mut states) = (vec![], vec![], vec![], vec![]);
        let (mut attempts, mut maxes, mut priorities) = (vec![], vec![], vec![]);
        let (mut payloads, mut results, mut progresses, mut errors) =
            (vec![], vec![], vec![], vec![]);
        let (mut last_errors, mut fingerprints, mut rids, mut workers) =
            (vec![], vec![], vec![], vec![]);
        let (mut run_ats, mut created, mut started, mut done) = (vec![], vec![], vec![], vec![]);
        for j in finished {
            ids.push(j.id);
            queues.push(j.queue.clone());
            kinds.push(j.kind.clone());
            projects.push(j.project_id);
            states.push(j.state.as_str());
            attempts.push(j.attempts as i32);
            maxes.push(j.max_attempts as i32);
            priorities.push(j.priority);
            payloads.push(j.payload.clone());
            results.push(j.result.clone());
            progresses.push(j.progress.clone());
            errors.push(serde_json::to_value(&j.errors).unwrap_or_default());
            fingerprints.push(
                j.last_error
                    .as_deref()
                    .filter(|_| j.state == JobState::Dead)
                    .map(fingerprint),
            );
            last_errors.push(j.last_error.clone());
            rids.push(j.request_id.clone());
            workers.push(j.worker.clone());
            run_ats.push(j.run_at);
            created.push(j.created_at);
            started.push(j.started_at);
            done.push(j.finished_at.unwrap_or_else(Utc::now));
        }
        written = sqlx::query(
            r#"
            INSERT INTO job_archive (job_id, queue, kind, project_id, state, attempts, max_attempts,
                priority, payload, result, progress, errors, last_error, fingerprint, request_id,
                worker, run_at, created_at, started_at, finished_at)
            SELECT * FROM UNNEST($1::uuid[], $2::text[], $3::text[], $4::uuid[], $5::text[],
                $6::int4[], $7::int4[], $8::int2[], $9::jsonb[], $10::jsonb[], $11::jsonb[],
                $12::jsonb[], $13::text[], $14::text[], $15::text[], $16::text[],
                $17::timestamptz[], $18::timestamptz[], $19::timestamptz[], $20::timestamptz[])
            ON CONFLICT (job_id) DO UPDATE SET
                state = EXCLUDED.state, attempts = EXCLUDED.attempts,
                max_attempts = EXCLUDED.max_attempts, result = EXCLUDED.result,
                progress = EXCLUDED.progress, errors = EXCLUDED.errors,
                last_error = EXCLUDED.last_error, fingerprint = EXCLUDED.fingerprint,
                worker = EXCLUDED.worker, started_at = EXCLUDED.started_at,
                finished_at = EXCLUDED.finished_at, archived_at = now()
            WHERE job_archive.finished_at <= EXCLUDED.finished_at
            "#,
        )
        .bind(&ids)
        .bind(&queues)
        .bind(&kinds)
        .bind(&projects)
        .bind(&states)
        .bind(&attempts)
        .bind(&maxes)
        .bind(&priorities)
        .bind(&payloads)
        .bind(&results)
        .bind(&progresses)
        .bind(&errors)
        .bind(&last_errors)
        .bind(&fingerprints)
        .bind(&rids)
        .bind(&workers)
        .bind(&run_ats)
        .bind(&created)
        .bind(&started)
        .bind(&done)
        .execute(&mut *tx)
        .await?
        .rows_affected();
    }
    super::job_dead_alerts::count(&mut tx, &deaths, dead_alert_window).await?;
    let deleted = if reopened.is_empty() {
        0
    } else {
        sqlx::query("DELETE FROM job_archive WHERE job_id = ANY($1)")
            .bind(reopened)
            .execute(&mut *tx)
            .await?
            .rows_affected()
    };
    tx.commit().await?;
    Ok(Written {
        written,
        deleted,
        messages: lifecycle.jobs.len(),
        dropped: lifecycle.dropped,
    })
}

/// The finishes of a batch that the archive has not seen yet, among the jobs someone listens
/// to: dead jobs of a project (the dead-job alerts), and completed or dead jobs of the projects
/// with endpoints subscribed to job messages.
struct Finishes<'a> {
    /// The jobs that finished so since the archive last saw them.
    jobs: Vec<&'a JobRecord>,
    /// The batch's projects' enabled endpoints that take job messages.
    subscribers: Vec<(Uuid, super::webhook_endpoints::Endpoint)>,
}

/// Reads [`Finishes`]: a job's finish is new if the archive does not hold it, or holds it in
/// another state, or from an earlier finish (a job retried and finished again). A batch
/// archived again after a crash has none, so each finish is counted and told once. Locks the
/// rows it reads.
async fn new_finishes<'a>(
    conn: &mut sqlx::PgConnection,
    finished: &[&'a JobRecord],
) -> Result<Finishes<'a>, sqlx::Error> {
    let told = |j: &JobRecord| matches!(j.state, JobState::Completed | JobState::Dead);
    let projects = told_projects(finished);
    let subscribers = if projects.is_empty() {
        Vec::new()
    } else {
        super::webhook_endpoints::job_subscribers(&mut *conn, &projects).await?
    };
    let listened: Vec<&JobRecord> = finished
        .iter()
        .copied()
        .filter(|j| {
            j.project_id.is_some_and(|p| {
                j.state == JobState::Dead || (told(j) && subscribers.iter().any(|(sp, _)| *sp == p))
            })
        })
        .collect();
    if listened.is_empty() {
        return Ok(Finishes {
            jobs: Vec::new(),
            subscribers,
        });
    }
    let ids: Vec<Uuid> = listened.iter().map(|j| j.id).collect();
    let prior: Vec<(Uuid, String, DateTime<Utc>)> = sqlx::query_as(
        "SELECT job_id, state, finished_at FROM job_archive WHERE job_id = ANY($1)
         ORDER BY job_id FOR UPDATE",
    )
    .bind(&ids)
    .fetch_all(&mut *conn)
    .await?;
    let prior: std::collections::HashMap<Uuid, (String, DateTime<Utc>)> =
        prior.into_iter().map(|(id, s, at)| (id, (s, at))).collect();
    let jobs = listened
        .into_iter()
        .filter(|j| {
            // as Postgres stores it (microseconds)
            let at = j.finished_at.unwrap_or_else(Utc::now).trunc_subsecs(6);
            !prior
                .get(&j.id)
                .is_some_and(|(state, was)| state == j.state.as_str() && *was >= at)
        })
        .collect();
    Ok(Finishes { jobs, subscribers })
}

/// The projects of the completed and dead jobs of `finished`, the ones that may be told of
/// them (sorted, once each).
pub fn told_projects(finished: &[&JobRecord]) -> Vec<Uuid> {
    let mut projects: Vec<Uuid> = finished
        .iter()
        .filter(|j| matches!(j.state, JobState::Completed | JobState::Dead))
        .filter_map(|j| j.project_id)
        .collect();
    projects.sort_unstable();
    projects.dedup();
    projects
}

/// The new deaths among `fresh`, for their alert windows.
fn deaths(fresh: &Finishes<'_>) -> Vec<Death> {
    fresh
        .jobs
        .iter()
        .filter(|j| j.state == JobState::Dead)
        .map(|j| {
            let error = j.last_error.clone().unwrap_or_default();
            Death {
                project_id: j.project_id.unwrap_or_default(),
                queue: j.queue.clone(),
                fingerprint: fingerprint(&error),
                job_id: j.id,
                at: j.finished_at.unwrap_or_else(Utc::now),
                error: error.chars().take(2000).collect(),
            }
        })
        .collect()
}

/// What to look for in the archive. Every filter is optional; they combine with AND.
/// Serialised (camelCase) into a `bulk_jobs` job's payload.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "camelCase", default, deny_unknown_fields)]
pub struct ArchiveFilter {
    /// Only this project's jobs (always set for a project's own callers).
    pub project_id: Option<Uuid>,
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this finished state (completed, dead or cancelled).
    pub state: Option<JobState>,
    /// Last error containing this text (case-insensitive).
    pub error: Option<String>,
    /// Only dead jobs of this fingerprint.
    pub fingerprint: Option<String>,
    /// Job ids starting with these hex digits (dashes ignored).
    pub id_prefix: Option<String>,
    /// Finished at or after.
    pub from: Option<DateTime<Utc>>,
    /// Finished before.
    pub to: Option<DateTime<Utc>>,
}

/// The inclusive id range of the ids starting with `prefix` (hex digits, dashes ignored; at
/// most 32): `None` if it is not hex.
pub fn id_range(prefix: &str) -> Option<(Uuid, Uuid)> {
    let hex: String = prefix.chars().filter(|c| *c != '-').collect();
    if hex.is_empty() || hex.len() > 32 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let lo = format!("{hex:0<32}");
    let hi = format!("{hex:f<32}");
    Some((Uuid::parse_str(&lo).ok()?, Uuid::parse_str(&hi).ok()?))
}

fn push_filter(q: &mut QueryBuilder<Postgres>, f: &ArchiveFilter) {
    q.push(" WHERE true");
    if let Some(p) = f.project_id {
        q.push(" AND project_id = ").push_bind(p);
    }
    if let Some(queue) = &f.queue {
        q.push(" AND queue = ").push_bind(queue);
    }
    if let Some(kind) = &f.kind {
        q.push(" AND kind = ").push_bind(kind);
    }
    if let Some(state) = f.state {
        q.push(" AND state = ").push_bind(state.as_str());
    }
    if let Some(pattern) = crate::db::users::like_pattern(&f.error) {
        q.push(" AND last_error ILIKE ").push_bind(pattern);
    }
    if let Some(fp) = &f.fingerprint {
        q.push(" AND state = 'dead' AND fingerprint = ")
            .push_bind(fp);
    }
    if let Some(prefix) = f.id_prefix.as_deref() {
        match id_range(prefix) {
            Some((lo, hi)) => {
                q.push(" AND job_id BETWEEN ")
                    .push_bind(lo)
                    .push(" AND ")
                    .push_bind(hi);
            }
            // more than 32 hex digits (or none): no id starts with them
            None => {
                q.push(" AND false");
            }
        }
    }
    if let Some(from) = f.from {
        q.push(" AND finished_at >= ").push_bind(from);
    }
    if let Some(to) = f.to {
        q.push(" AND finished_at < ").push_bind(to);
    }
}

const COLUMNS: &str = "job_id, queue, kind, project_id, state, attempts, max_attempts, priority, \
    result, progress, errors, last_error, request_id, worker, run_at, created_at, started_at, \
    finished_at";

#[derive(sqlx::FromRow)]
struct Row {
    job_id: Uuid,
    queue: String,
    kind: String,
    project_id: Option<Uuid>,
    state: String,
    attempts: i32,
    max_attempts: i32,
    priority: i16,
    #[sqlx(default)]
    payload: Option<serde_json::Value>,
    result: Option<serde_json::Value>,
    progress: Option<serde_json::Value>,
    errors: serde_json::Value,
    last_error: Option<String>,
    request_id: Option<String>,
    worker: Option<String>,
    run_at: Option<DateTime<Utc>>,
    created_at: Option<DateTime<Utc>>,
    started_at: Option<DateTime<Utc>>,
    finished_at: DateTime<Utc>,
}

impl Row {
    fn record(self) -> JobRecord {
        let state = match self.state.as_str() {
            "completed" => JobState::Completed,
            "cancelled" => JobState::Cancelled,
            _ => JobState::Dead,
        };
        JobRecord {
            id: self.job_id,
            kind: self.kind,
            queue: self.queue,
            state,
            attempts: self.attempts.max(0) as u32,
            max_attempts: self.max_attempts.max(0) as u32,
            priority: self.priority,
            run_at: self.run_at,
            errors: serde_json::from_value::<Vec<AttemptError>>(self.errors).unwrap_or_default(),
            last_error: self.last_error,
            payload: self.payload,
            progress: self.progress,
            result: self.result,
            project_id: self.project_id,
            request_id: self.request_id,
            worker: self.worker,
            created_at: self.created_at,
            started_at: self.started_at,
            finished_at: Some(self.finished_at),
        }
    }
}

/// A page of the archive, newest first (by finish time, then id), from right after `after`:
/// up to `limit + 1` jobs (the extra one says a next page exists). Payloads are left out (see
/// [`get`]).
///
/// Every page is a keyset scan of an index led by (queue or project and) state. Without a state
/// filter, one scan per finished state (each stopping after `limit + 1` rows) merged by finish
/// time: a single ORDER BY over every state would read and sort all the matching rows (about
/// 0.5 s over a million).
pub async fn search(
    pool: &PgPool,
    filter: &ArchiveFilter,
    after: Option<(DateTime<Utc>, Uuid)>,
    limit: u32,
) -> Result<Vec<JobRecord>, sqlx::Error> {
    let states = match filter.state {
        Some(state) => vec![state],
        None => vec![JobState::Completed, JobState::Dead, JobState::Cancelled],
    };
    let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM ("));
    for (k, state) in states.into_iter().enumerate() {
        if k > 0 {
            q.push(" UNION ALL ");
        }
        q.push(format!("(SELECT {COLUMNS} FROM job_archive"));
        let branch = ArchiveFilter {
            state: Some(state),
            ..filter.clone()
        };
        push_filter(&mut q, &branch);
        if let Some((at, id)) = after {
            q.push(" AND (finished_at, job_id) < (")
                .push_bind(at)
                .push(", ")
                .push_bind(id)
                .push(")");
        }
        q.push(" ORDER BY finished_at DESC, job_id DESC LIMIT ")
            .push_bind(i64::from(limit) + 1)
            .push(")");
    }
    q.push(") page ORDER BY finished_at DESC, job_id DESC LIMIT ")
        .push_bind(i64::from(limit) + 1);
    let rows: Vec<Row> = q.build_query_as().fetch_all(pool).await?;
    Ok(rows.into_iter().map(Row::record).collect())
}

/// An offset page of the archive in one state (`filter.state` must be set), newest first, and
/// how many jobs match in all: a project's finished jobs in the queue views, which page by
/// number. Deep pages cost their offset; the search pages by cursor instead.
pub async fn page(
    pool: &PgPool,
    filter: &ArchiveFilter,
    offset: i64,
    limit: i64,
) -> Result<(Vec<JobRecord>, u64), sqlx::Error> {
    let mut q = QueryBuilder::new(format!("SELECT {COLUMNS} FROM job_archive"));
    push_filter(&mut q, filter);
    q.push(" ORDER BY finished_at DESC, job_id DESC OFFSET ")
        .push_bind(offset)
        .push(" LIMIT ")
        .push_bind(limit);
    let rows: Vec<Row> = q.build_query_as().fetch_all(pool).await?;
    let mut c = QueryBuilder::new("SELECT count(*) FROM job_archive");
    push_filter(&mut c, filter);
    let total: i64 = c.build_query_scalar().fetch_one(pool).await?;
    Ok((
        rows.into_iter().map(Row::record).collect(),
        u64::try_from(total).unwrap_or_default(),
    ))
}

/// A job a bulk action touches: its id, queue and project.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Target {
    /// The job.
    pub job_id: Uuid,
    /// Its queue.
    pub queue: String,
    /// Its project.
    pub project_id: Option<Uuid>,
}

/// The jobs matching `filter`, newest first, at most `limit`.
pub async fn targets(
    pool: &PgPool,
    filter: &ArchiveFilter,
    limit: i64,
) -> Result<Vec<Target>, sqlx::Error> {
    let mut q = QueryBuilder::new("SELECT job_id, queue, project_id FROM job_archive");
    push_filter(&mut q, filter);
    q.push(" ORDER BY finished_at DESC, job_id DESC LIMIT ")
        .push_bind(limit);
    q.build_query_as().fetch_all(pool).await
}

/// One archived job with its payload; `project_id` scopes it (`None`: any project).
pub async fn get(
    pool: &PgPool,
    project_id: Option<Uuid>,
    id: Uuid,
) -> Result<Option<JobRecord>, sqlx::Error> {
    let row: Option<Row> = sqlx::query_as(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS}, payload FROM job_archive
         WHERE job_id = $1 AND ($2::uuid IS NULL OR project_id = $2)"
    )))
    .bind(id)
    .bind(project_id)
    .fetch_optional(pool)
    .await?;
    Ok(row.map(Row::record))
}

/// Deletes one archived job; `project_id` scopes it (`None`: any project). True if it was there.
pub async fn delete(
    pool: &PgPool,
    project_id: Option<Uuid>,
    id: Uuid,
) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query(
        "DELETE FROM job_archive WHERE job_id = $1 AND ($2::uuid IS NULL OR project_id = $2)",
    )
    .bind(id)
    .bind(project_id)
    .execute(pool)
    .await?
    .rows_affected()
        > 0)
}

/// Dead jobs sharing an error fingerprint.
#[derive(Debug, Clone, serde::Serialize, utoipa::ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct FailureGroup {
    /// The error with ids, numbers and quoted values masked.
    pub fingerprint: String,
    /// The queue.
    pub queue: String,
    /// Dead jobs in the group.
    pub count: i64,
    /// When the first of them died.
    pub first_seen: DateTime<Utc>,
    /// When the last of them died.
    pub last_seen: DateTime<Utc>,
    /// The most recent one's id.
    pub sample_job_id: Uuid,
    /// Its error, unmasked.
    pub sample_error: Option<String>,
}

/// The dead jobs matching `filter` grouped by (queue, fingerprint), largest groups first; at
/// most `limit` groups.
pub async fn failure_groups(
    pool: &PgPool,
    filter: &ArchiveFilter,
    limit: u32,
) -> Result<Vec<FailureGroup>, sqlx::Error> {
    let mut q = QueryBuilder::new(
        "SELECT fingerprint, queue, count(*) AS count, min(finished_at) AS first_seen,
                max(finished_at) AS last_seen,
                (array_agg(job_id ORDER BY finished_at DESC))[1] AS sample_job_id,
                (array_agg(last_error ORDER BY finished_at DESC))[1] AS sample_error
         FROM job_archive",
    );
    push_filter(&mut q, filter);
    q.push(" AND state = 'dead' AND fingerprint IS NOT NULL");
    q.push(" GROUP BY fingerprint, queue ORDER BY count(*) DESC, max(finished_at) DESC LIMIT ")
        .push_bind(i64::from(limit));
    q.build_query_as().fetch_all(pool).await
}

/// One batch of archived jobs that finished before their retention: completed ones before
/// `completed_before`, dead and cancelled ones before `dead_before`.
pub async fn expire(
    pool: &PgPool,
    completed_before: DateTime<Utc>,
    dead_before: DateTime<Utc>,
    batch: i64,
) -> Result<u64, sqlx::Error> {
    Ok(sqlx::query(
        r#"
        DELETE FROM job_archive WHERE job_id IN (
            SELECT job_id FROM job_archive
            WHERE (state = 'completed' AND finished_at < $1)
               OR (state IN ('dead', 'cancelled') AND finished_at < $2)
            LIMIT $3 FOR UPDATE SKIP LOCKED)
        "#,
    )
    .bind(completed_before)
    .bind(dead_before)
    .bind(batch)
    .execute(pool)
    .await?
    .rows_affected())
}
