//! User imports: the import row (options, layout, status, checkpoint and counters), the
//! uploaded file's parts and the rows' errors. Every query is scoped by project.

use chrono::{DateTime, Utc};
use futures::{StreamExt as _, stream::BoxStream};
use serde::Serialize;
use sqlx::{PgConnection, PgPool};
use utoipa::ToSchema;
use uuid::Uuid;

/// Size of the parts a file is stored in.
pub const PART_BYTES: usize = 1024 * 1024;

/// An import as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Import {
    /// Its id.
    pub import_id: Uuid,
    /// The project.
    pub project_id: Uuid,
    /// Who uploaded (a user id).
    pub created_by: Option<Uuid>,
    /// The `bulk_import` job.
    pub job_id: Uuid,
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// The file's name as uploaded, if given.
    pub file_name: Option<String>,
    /// The file's SHA-256, hex.
    pub file_sha256: String,
    /// The file's size.
    pub file_bytes: i64,
    /// `csv` or `xlsx`.
    pub format: String,
    /// [`crate::imports::ImportOptions`].
    pub options: serde_json::Value,
    /// [`crate::imports::Layout`] and [`crate::imports::ColumnMap`]: `{layout, map}`.
    pub columns: serde_json::Value,
    /// Data rows (estimated until `total_estimated` is false).
    pub total_rows: Option<i64>,
    /// Whether `total_rows` is an estimate.
    pub total_estimated: bool,
    /// Rows in committed chunks.
    pub rows_done: i64,
    /// Rows per chunk, fixed by the first attempt.
    pub chunk_rows: Option<i32>,
    /// Bytes of the file behind the checkpoint (CSV).
    pub bytes_done: i64,
    /// Users created (or, in a dry run, that would be).
    pub created: i64,
    /// Existing users updated.
    pub updated: i64,
    /// Rows left alone (duplicates under `skip`).
    pub skipped: i64,
    /// Rows refused.
    pub failed: i64,
    /// Why the import failed.
    pub error: Option<String>,
    /// When a cancel was asked.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// Uploaded.
    pub created_at: DateTime<Utc>,
    /// First attempt started.
    pub started_at: Option<DateTime<Utc>>,
    /// Last checkpoint.
    pub progress_at: Option<DateTime<Utc>>,
    /// Ended (completed, failed or cancelled).
    pub finished_at: Option<DateTime<Utc>>,
}

macro_rules! columns {
    () => {
        "SELECT import_id, project_id, created_by, job_id, status, file_name, file_sha256, \
    file_bytes, format, options, columns, total_rows, total_estimated, rows_done, chunk_rows, bytes_done, \
    created, updated, skipped, failed, error, cancel_requested_at, created_at, started_at, \
    progress_at, finished_at FROM user_imports "
    };
}

/// A new import.
#[derive(Debug)]
pub struct NewImport<'a> {
    /// Its id.
    pub import_id: Uuid,
    /// The project.
    pub project_id: Uuid,
    /// The uploader.
    pub created_by: Option<Uuid>,
    /// The job that will run it.
    pub job_id: Uuid,
    /// As uploaded.
    pub file_name: Option<&'a str>,
    /// SHA-256, hex.
    pub file_sha256: &'a str,
    /// Size.
    pub file_bytes: i64,
    /// `csv` or `xlsx`.
    pub format: &'a str,
    /// The options.
    pub options: serde_json::Value,
    /// `{layout, map}`.
    pub columns: serde_json::Value,
    /// Rows found by the pre-flight.
    pub total_rows: i64,
    /// Whether that count is exact.
    pub total_exact: bool,
}

/// Creates the import row (its parts are added with [`insert_part`] in the same transaction).
pub async fn create(conn: &mut PgConnection, new: NewImport<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO user_imports (import_id, project_id, created_by, job_id, file_name, \
         file_sha256, file_bytes, format, options, columns, total_rows, total_estimated) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
    )
    .bind(new.import_id)
    .bind(new.project_id)
    .bind(new.created_by)
    .bind(new.job_id)
    .bind(new.file_name)
    .bind(new.file_sha256)
    .bind(new.file_bytes)
    .bind(new.format)
    .bind(new.options)
    .bind(new.columns)
    .bind(new.total_rows)
    .bind(!new.total_exact)
    .execute(conn)
    .await?;
    Ok(())
}

/// Stores part `seq` of the file.
pub async fn insert_part(
    conn: &mut PgConnection,
    import_id: Uuid,
    seq: i32,
    data: &[u8],
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO user_import_parts (import_id, seq, data) VALUES ($1, $2, $3)")
        .bind(import_id)
        .bind(seq)
        .bind(data)
        .execute(conn)
        .await?;
    Ok(())
}

/// Part `seq` of the file (`None` past the last), read one at a time so that a reader holds
/// one part in memory.
pub async fn part(
    pool: &PgPool,
    import_id: Uuid,
    seq: i32,
) -> Result<Option<Vec<u8>>, sqlx::Error> {
    sqlx::query_scalar("SELECT data FROM user_import_parts WHERE import_id = $1 AND seq = $2")
        .bind(import_id)
        .bind(seq)
        .fetch_optional(pool)
        .await
}

/// Deletes the file once the import has ended.
pub async fn delete_parts(conn: &mut PgConnection, import_id: Uuid) -> Result<u64, sqlx::Error> {
    sqlx::query("DELETE FROM user_import_parts WHERE import_id = $1")
        .bind(import_id)
        .execute(conn)
        .await
        .map(|r| r.rows_affected())
}

/// One import of the project.
pub async fn get(
    pool: &PgPool,
    project_id: Uuid,
    import_id: Uuid,
) -> Result<Option<Import>, sqlx::Error> {
    sqlx::query_as(concat!(
        columns!(),
        "WHERE project_id = $1 AND import_id = $2"
    ))
    .bind(project_id)
    .bind(import_id)
    .fetch_optional(pool)
    .await
}

/// Locks the import (the chunk writer's check of the checkpoint and of a cancel).
pub async fn lock(
    conn: &mut PgConnection,
    project_id: Uuid,
    import_id: Uuid,
) -> Result<Option<Import>, sqlx::Error> {
    sqlx::query_as(concat!(
        columns!(),
        "WHERE project_id = $1 AND import_id = $2 FOR UPDATE"
    ))
    .bind(project_id)
    .bind(import_id)
    .fetch_optional(conn)
    .await
}

/// The project's imports, newest first: a page of `limit` after `before` (created, id).
pub async fn list(
    pool: &PgPool,
    project_id: Uuid,
    before: Option<(DateTime<Utc>, Uuid)>,
    limit: i64,
) -> Result<Vec<Import>, sqlx::Error> {
    let (at, id) = before.unzip();
    sqlx::query_as(concat!(
        columns!(),
        "WHERE project_id = $1 \
         AND ($2::timestamptz IS NULL OR (created_at, import_id) < ($2, $3)) \
         ORDER BY created_at DESC, import_id DESC LIMIT $4"
    ))
    .bind(project_id)
    .bind(at)
    .bind(id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Marks the import running (its first start is kept) and fixes its rows per chunk (the first
/// attempt's `chunk_rows`); returns the rows per chunk to use, `None` if it has ended.
pub async fn mark_running(
    pool: &PgPool,
    project_id: Uuid,
    import_id: Uuid,
    chunk_rows: i32,
) -> Result<Option<i32>, sqlx::Error> {
    sqlx::query_scalar(
        "UPDATE user_imports SET status = 'running', started_at = coalesce(started_at, now()), \
           chunk_rows = coalesce(chunk_rows, $3) \
         WHERE project_id = $1 AND import_id = $2 AND status IN ('queued', 'running') \
         RETURNING chunk_rows",
    )
    .bind(project_id)
    .bind(import_id)
    .bind(chunk_rows)
    .fetch_optional(pool)
    .await
}

/// The chunks committed so far.
pub async fn done_chunks(pool: &PgPool, import_id: Uuid) -> Result<Vec<i32>, sqlx::Error> {
    sqlx::query_scalar("SELECT chunk FROM user_import_chunks WHERE import_id = $1")
        .bind(import_id)
        .fetch_all(pool)
        .await
}

/// Claims chunk `chunk` in the caller's transaction: false if another transaction committed
/// it (one still running makes this wait for its end).
pub async fn claim_chunk(
    conn: &mut PgConnection,
    import_id: Uuid,
    chunk: i32,
) -> Result<bool, sqlx::Error> {
    let claimed: Option<i32> = sqlx::query_scalar(
        "INSERT INTO user_import_chunks (import_id, chunk) VALUES ($1, $2) \
         ON CONFLICT DO NOTHING RETURNING chunk",
    )
    .bind(import_id)
    .bind(chunk)
    .fetch_optional(conn)
    .await?;
    Ok(claimed.is_some())
}

/// Whether the import has ended or been asked to stop (read without a lock: chunks run in
/// parallel and must not queue on the import's row).
pub async fn stopping(
    conn: &mut PgConnection,
    project_id: Uuid,
    import_id: Uuid,
) -> Result<bool, sqlx::Error> {
    let row: Option<bool> = sqlx::query_scalar(
        "SELECT finished_at IS NOT NULL OR cancel_requested_at IS NOT NULL FROM user_imports \
         WHERE project_id = $1 AND import_id = $2",
    )
    .bind(project_id)
    .bind(import_id)
    .fetch_optional(conn)
    .await?;
    Ok(row.unwrap_or(true))
}

/// How a cancel request went.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It had not started: cancelled now.
    Cancelled,
    /// It is running: it stops at its next chunk.
    Requested,
    /// It had already ended (in this status).
    Ended,
}

/// Asks an import to stop; `None` if the project has no such import.
pub async fn request_cancel(
    pool: &PgPool,
    project_id: Uuid,
    import_id: Uuid,
) -> Result<Option<CancelOutcome>, sqlx::Error> {
    let status: Option<String> = sqlx::query_scalar(
        "WITH old AS (SELECT import_id, status FROM user_imports \
                       WHERE project_id = $1 AND import_id = $2 FOR UPDATE) \
         UPDATE user_imports u SET \
           cancel_requested_at = CASE WHEN old.status IN ('queued', 'running') \
                                 THEN coalesce(u.cancel_requested_at, now()) ELSE u.cancel_requested_at END, \
           status = CASE WHEN old.status = 'queued' THEN 'cancelled' ELSE u.status END, \
           finished_at = CASE WHEN old.status = 'queued' THEN now() ELSE u.finished_at END \
         FROM old WHERE u.import_id = old.import_id \
         RETURNING old.status",
    )
    .bind(project_id)
    .bind(import_id)
    .fetch_optional(pool)
    .await?;
    Ok(status.map(|before| match before.as_str() {
        "queued" => CancelOutcome::Cancelled,
        "running" => CancelOutcome::Requested,
        _ => CancelOutcome::Ended,
    }))
}

/// A chunk's effect on the import's checkpoint and counters.
#[derive(Debug, Clone, Copy, Default)]
pub struct ChunkCounts {
    /// Rows the chunk covered (the new checkpoint is `rows_done + rows`).
    pub rows: i64,
    /// Bytes of the file read up to the chunk's end (CSV).
    pub bytes_done: i64,
    /// Created.
    pub created: i64,
    /// Updated.
    pub updated: i64,
    /// Skipped.
    pub skipped: i64,
    /// Failed.
    pub failed: i64,
    /// A new estimate of the data rows, if any.
    pub total_rows: Option<i64>,
}

/// Adds a chunk's counts to the import (the chunk's last statement, so that parallel chunks
/// hold the import's row only while they commit).
pub async fn advance(
    conn: &mut PgConnection,
    project_id: Uuid,
    import_id: Uuid,
    c: ChunkCounts,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE user_imports SET rows_done = rows_done + $3, bytes_done = greatest(bytes_done, $4), \
           created = created + $5, updated = updated + $6, skipped = skipped + $7, \
           failed = failed + $8, progress_at = now(), \
           total_rows = CASE WHEN total_estimated AND $9::bigint IS NOT NULL THEN $9 ELSE total_rows END \
         WHERE project_id = $1 AND import_id = $2",
    )
    .bind(project_id)
    .bind(import_id)
    .bind(c.rows)
    .bind(c.bytes_done)
    .bind(c.created)
    .bind(c.updated)
    .bind(c.skipped)
    .bind(c.failed)
    .bind(c.total_rows)
    .execute(conn)
    .await?;
    Ok(())
}

/// Ends the import: `completed` or `cancelled` (the count of rows is then exact), or `failed`
/// with its reason.
pub async fn finish(
    conn: &mut PgConnection,
    project_id: Uuid,
    import_id: Uuid,
    status: &str,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE user_imports SET status = $3, error = $4, finished_at = now(), \
           total_rows = CASE WHEN $3 = 'completed' THEN rows_done ELSE total_rows END, \
           total_estimated = total_estimated AND $3 <> 'completed' \
         WHERE project_id = $1 AND import_id = $2 AND finished_at IS NULL",
    )
    .bind(project_id)
    .bind(import_id)
    .bind(status)
    .bind(error)
    .execute(conn)
    .await?;
    Ok(())
}

/// One row's error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, ToSchema, sqlx::FromRow)]
#[serde(rename_all = "camelCase")]
pub struct RowError {
    /// The row as a spreadsheet numbers it (the header is row 1).
    pub row_number: i64,
    /// The column's header, if the error is about one cell.
    pub column_name: Option<String>,
    /// The cell's value (cut at 200 characters).
    pub value: Option<String>,
    /// What is wrong.
    pub message: String,
}

/// Stores a chunk's errors.
pub async fn insert_errors(
    conn: &mut PgConnection,
    project_id: Uuid,
    import_id: Uuid,
    errors: &[RowError],
) -> Result<(), sqlx::Error> {
    if errors.is_empty() {
        return Ok(());
    }
    let mut rows = Vec::with_capacity(errors.len());
    let mut seqs = Vec::with_capacity(errors.len());
    let (mut columns, mut values, mut messages) = (Vec::new(), Vec::new(), Vec::new());
    let mut last: Option<(i64, i16)> = None;
    for e in errors {
        let seq = match last {
            Some((row, seq)) if row == e.row_number => seq + 1,
            _ => 0,
        };
        last = Some((e.row_number, seq));
        rows.push(e.row_number);
        seqs.push(seq);
        columns.push(e.column_name.as_deref());
        values.push(e.value.as_deref());
        messages.push(e.message.as_str());
    }
    sqlx::query(
        "INSERT INTO user_import_errors (import_id, project_id, row_number, seq, column_name, value, message) \
         SELECT $1, $2, * FROM unnest($3::bigint[], $4::smallint[], $5::text[], $6::text[], $7::text[]) \
         ON CONFLICT DO NOTHING",
    )
    .bind(import_id)
    .bind(project_id)
    .bind(rows)
    .bind(seqs)
    .bind(columns)
    .bind(values)
    .bind(messages)
    .execute(conn)
    .await?;
    Ok(())
}

/// The first `limit` errors, by row.
pub async fn first_errors(
    pool: &PgPool,
    project_id: Uuid,
    import_id: Uuid,
    limit: i64,
) -> Result<Vec<RowError>, sqlx::Error> {
    sqlx::query_as(
        "SELECT row_number, column_name, value, message FROM user_import_errors \
         WHERE project_id = $1 AND import_id = $2 ORDER BY row_number, seq LIMIT $3",
    )
    .bind(project_id)
    .bind(import_id)
    .bind(limit)
    .fetch_all(pool)
    .await
}

/// Every error, by row, as a stream (the CSV report).
pub fn stream_errors(
    pool: PgPool,
    project_id: Uuid,
    import_id: Uuid,
) -> BoxStream<'static, Result<RowError, sqlx::Error>> {
    async_stream_errors(pool, project_id, import_id).boxed()
}

fn async_stream_errors(
    pool: PgPool,
    project_id: Uuid,
    import_id: Uuid,
) -> impl futures::Stream<Item = Result<RowError, sqlx::Error>> + Send + 'static {
    // pages by key, so that no connection is held while the client reads slowly
    futures::stream::unfold(
        (pool, Some((0i64, -1i16))),
        move |(pool, after)| async move {
            let (row, seq) = after?;
            let page: Result<Vec<(RowError, i16)>, sqlx::Error> =
                sqlx::query_as::<_, (i64, Option<String>, Option<String>, String, i16)>(
                    "SELECT row_number, column_name, value, message, seq FROM user_import_errors \
                 WHERE project_id = $1 AND import_id = $2 AND (row_number, seq) > ($3, $4) \
                 ORDER BY row_number, seq LIMIT 1000",
                )
                .bind(project_id)
                .bind(import_id)
                .bind(row)
                .bind(seq)
                .fetch_all(&pool)
                .await
                .map(|rows| {
                    rows.into_iter()
                        .map(|(row_number, column_name, value, message, seq)| {
                            (
                                RowError {
                                    row_number,
                                    column_name,
                                    value,
                                    message,
                                },
                                seq,
                            )
                        })
                        .collect()
                });
            match page {
                Err(e) => Some((vec![Err(e)], (pool, None))),
                Ok(page) if page.is_empty() => None,
                Ok(page) => {
                    let next = page.last().map(|(e, seq)| (e.row_number, *seq));
                    let next = if page.len() < 1000 { None } else { next };
                    Some((page.into_iter().map(|(e, _)| Ok(e)).collect(), (pool, next)))
                }
            }
        },
    )
    .flat_map(futures::stream::iter)
}
