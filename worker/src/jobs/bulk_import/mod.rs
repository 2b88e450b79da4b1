//! Runs `bulk_import`: copies the uploaded file from Postgres to a local temporary file, reads
//! it row by row in a blocking thread ([`shared::imports::for_each_row`]), judges each row
//! ([`rows`]) and writes chunks of [`chunk::CHUNK_ROWS`] rows, each in one transaction with its
//! claim in the checkpoint ([`chunk`]), [`WRITERS`] chunks at a time: Postgres works on each
//! on its own connection, so the import is not bound to one backend's speed.
//!
//! # Resuming
//! The checkpoint is the set of committed chunks (`user_import_chunks`). An attempt re-reads the
//! file from the start (judging every row again rebuilds the in-file duplicate map, so a
//! duplicate is found whichever attempt reads it) and writes only the chunks not committed,
//! cutting the file with the rows per chunk the first attempt fixed. A chunk commits its claim,
//! its users, their invitations and their `send_invitation` jobs together: a worker killed at any
//! point leaves either the whole chunk or none of it, so no row is imported twice or skipped,
//! and no invitation is sent twice. (A claim another transaction holds makes the second wait for
//! it, then skip the chunk if it committed.)
//!
//! # Memory
//! One part of the file (1 MiB) while copying it, up to four chunks of judged rows (two in the
//! channel, two being written), and the duplicate map (about 20 bytes a row).
//!
//! # Back-pressure
//! Invitations are jobs, counted against the project's open-jobs quota
//! (`JOB_MAX_OPEN_PER_PROJECT`): before a chunk would pass it, the import waits for the
//! project's queue to drain (checking for a cancel every second) instead of failing.
//!
//! # Failures
//! A file that cannot be read (it passed the upload's check, so this means it changed or a
//! release reads it differently) fails the import at once with the reason; Postgres or Redis
//! errors retry the attempt, which resumes. When the job goes dead its on-dead hook marks the
//! import `failed` with the last error.

pub mod chunk;
pub mod rows;

use std::{collections::HashSet, io::Write as _, ops::ControlFlow, time::Duration};

use anyhow::Context as _;
use apalis_core::error::{AbortError, BoxDynError};
use futures::{StreamExt as _, future::BoxFuture};
use serde::Serialize;
use shared::{
    db::{self, audit::NewEntry, imports::Import},
    imports::{self, ColumnMap, ImportOptions, Layout},
    jobs::{BulkImport, QUEUES},
    queue::{DeadJob, backend::JobHandle},
};
use tokio::sync::mpsc;

use self::{
    chunk::{CHUNK_ROWS, Chunk, Target, Written},
    rows::Judge,
};
use super::Handler;
use crate::context::JobContext;

/// Chunks written at once by one import (each in its own transaction and connection).
pub const WRITERS: usize = 2;

/// What a run did (kept as the job's result).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Outcome {
    /// `completed`, `cancelled` or `failed`.
    pub status: String,
    /// Rows read.
    pub rows: i64,
    /// Users created (or that would be, in a dry run).
    pub created: i64,
    /// Users updated.
    pub updated: i64,
    /// Rows skipped.
    pub skipped: i64,
    /// Rows refused.
    pub failed: i64,
}

impl Outcome {
    fn of(import: &Import) -> Self {
        Self {
            status: import.status.clone(),
            rows: import.rows_done,
            created: import.created,
            updated: import.updated,
            skipped: import.skipped,
            failed: import.failed,
        }
    }
}

impl Handler for BulkImport {
    type Output = Outcome;

    async fn run(self, ctx: &JobContext, handle: &JobHandle) -> Result<Outcome, BoxDynError> {
        run(ctx, &self, handle).await
    }

    const ON_DEAD: Option<super::OnDead<Self>> = Some(on_dead);
}

/// The stored layout: what the upload found.
#[derive(serde::Deserialize)]
struct Stored {
    layout: Layout,
    map: ColumnMap,
}

#[tracing::instrument(name = "bulk_import", skip_all, fields(project_id = %job.project_id, import_id = %job.import_id))]
async fn run(ctx: &JobContext, job: &BulkImport, handle: &JobHandle) -> Result<Outcome, BoxDynError> {
    let (project, id) = (job.project_id, job.import_id);
    let Some(import) = db::imports::get(&ctx.pool, project, id).await.context("Failed to read the import")? else {
        return Err(AbortError::new("the import does not exist (its project was deleted?)").into());
    };
    if import.finished_at.is_some() {
        return Ok(Outcome::of(&import));
    }
    if import.cancel_requested_at.is_some() {
        return end(ctx, job, "cancelled", None, handle).await;
    }
    let options: ImportOptions = match serde_json::from_value(import.options.clone()) {
        Ok(o) => o,
        Err(e) => return fail(ctx, job, &format!("the import's options do not read: {e}")).await,
    };
    let stored: Stored = match serde_json::from_value(import.columns.clone()) {
        Ok(s) => s,
        Err(e) => return fail(ctx, job, &format!("the import's layout does not read: {e}")).await,
    };
    let Some(chunk_rows) = db::imports::mark_running(&ctx.pool, project, id, CHUNK_ROWS as i32)
        .await
        .context("Failed to mark the import running")?
    else {
        return end(ctx, job, "cancelled", None, handle).await;
    };
    let chunk_rows = u32::try_from(chunk_rows).unwrap_or(CHUNK_ROWS).max(1);
    let done: HashSet<u32> = db::imports::done_chunks(&ctx.pool, id)
        .await
        .context("Failed to read the committed chunks")?
        .into_iter()
        .filter_map(|c| u32::try_from(c).ok())
        .collect();

    let roles = db::roles::list(&ctx.pool, project).await.context("Failed to read the roles")?;
    if let Some(gone) = options.default_role_ids.iter().find(|r| !roles.iter().any(|x| x.id == **r)) {
        return fail(ctx, job, &format!("the default role {gone} no longer exists")).await;
    }
    let file = download(ctx, &import).await?;
    let judge = Judge::new(
        stored.map.clone(),
        options.clone(),
        &roles,
        ctx.settings.users.allowed_invite_domains.clone(),
    );
    let (tx, mut rx) = mpsc::channel::<Chunk>(2);
    let (layout, file_bytes) = (stored.layout.clone(), import.file_bytes);
    let reader = tokio::task::spawn_blocking(move || {
        read(file, &layout, judge, Cut { chunk_rows, done }, file_bytes, tx)
    });

    let target = Target {
        project_id: project,
        import_id: id,
        created_by: import.created_by,
        options: &options,
        request_id: handle.request_id.clone(),
        email_header: stored.map.header(imports::Field::Email).unwrap_or("email").to_owned(),
    };
    let write_one = |chunk: Chunk| {
        let target = &target;
        async move {
            if options.send_invitations
                && !options.dry_run
                && !wait_for_quota(ctx, target, chunk.rows.len()).await?
            {
                return Ok::<_, BoxDynError>(Written::Stopped);
            }
            Ok(chunk::write(ctx, target, &chunk).await.context("Failed to write a chunk")?)
        }
    };
    // WRITERS chunks in flight, each on its own connection: Postgres works on them in parallel
    let mut inflight = futures::stream::FuturesUnordered::new();
    let (mut stopped, mut drained) = (false, false);
    loop {
        let written = tokio::select! {
            biased;
            Some(w) = inflight.next(), if !inflight.is_empty() => w?,
            chunk = rx.recv(), if !stopped && !drained && inflight.len() < WRITERS => {
                match chunk {
                    Some(chunk) => inflight.push(write_one(chunk)),
                    None => drained = true,
                }
                continue;
            }
            else => break,
        };
        match written {
            Written::Done(counts) => {
                if counts.created > 0 && options.send_invitations {
                    ctx.outbox.wake();
                }
                for (outcome, n) in [
                    ("created", counts.created),
                    ("updated", counts.updated),
                    ("skipped", counts.skipped),
                    ("failed", counts.failed),
                ] {
                    metrics::counter!("comet_import_rows_total", "outcome" => outcome)
                        .increment(n as u64);
                }
                progress(ctx, job, handle).await;
            }
            Written::AlreadyDone => {}
            Written::Stopped => stopped = true,
        }
    }
    drop(rx);
    let read = reader.await.context("the file reader panicked")?;
    if stopped {
        return end(ctx, job, "cancelled", None, handle).await;
    }
    if let Err(e) = read {
        return fail(ctx, job, &e.to_string()).await;
    }
    end(ctx, job, "completed", None, handle).await
}

/// Copies the file's parts to a local temporary file (one part in memory at a time).
async fn download(ctx: &JobContext, import: &Import) -> Result<tempfile::NamedTempFile, BoxDynError> {
    let mut file = tempfile::NamedTempFile::new().context("Failed to create a temporary file")?;
    let mut seq = 0;
    let mut written = 0i64;
    while let Some(part) = db::imports::part(&ctx.pool, import.import_id, seq)
        .await
        .context("Failed to read the file")?
    {
        written += part.len() as i64;
        file = tokio::task::spawn_blocking(move || file.write_all(&part).map(|()| file))
            .await
            .context("the file writer panicked")?
            .context("Failed to write the temporary file")?;
        seq += 1;
    }
    if written != import.file_bytes {
        return Err(AbortError::new(format!(
            "the stored file has {written} of its {} bytes (it was deleted or is damaged)",
            import.file_bytes
        ))
        .into());
    }
    Ok(file)
}

/// The blocking reader: judges every row, hands over chunks of the rows past `resume_at`.
/// How the file is cut: rows per chunk, and the chunks already committed (skipped).
struct Cut {
    chunk_rows: u32,
    done: HashSet<u32>,
}

/// The blocking reader: judges every row (the duplicate map needs them all), hands over the
/// chunks not committed yet.
fn read(
    file: tempfile::NamedTempFile,
    layout: &Layout,
    mut judge: Judge,
    cut: Cut,
    file_bytes: i64,
    tx: mpsc::Sender<Chunk>,
) -> Result<(), imports::FileError> {
    let per = u64::from(cut.chunk_rows);
    let mut index = 0u64;
    let new_chunk = |index: u32| Chunk {
        index,
        rows: Vec::with_capacity(cut.chunk_rows as usize),
        bytes_at: 0,
        estimate: None,
    };
    let mut pending = new_chunk(0);
    let mut closed = false;
    imports::for_each_row(file.path(), layout, |row, bytes_at| {
        let judged = judge.judge(&row);
        let i = index;
        index += 1;
        let chunk = u32::try_from(i / per).unwrap_or(u32::MAX);
        let last_of_chunk = (i + 1).is_multiple_of(per);
        if cut.done.contains(&chunk) {
            if last_of_chunk {
                pending = new_chunk(chunk.saturating_add(1));
            }
            return ControlFlow::Continue(());
        }
        pending.rows.push(judged);
        pending.bytes_at = bytes_at;
        if last_of_chunk {
            if bytes_at > 0 {
                // rows so far times the file's size over the bytes read so far
                pending.estimate =
                    Some((index as f64 * file_bytes as f64 / bytes_at as f64).round() as u64);
            }
            let next = new_chunk(chunk.saturating_add(1));
            if tx.blocking_send(std::mem::replace(&mut pending, next)).is_err() {
                closed = true;
                return ControlFlow::Break(());
            }
        }
        ControlFlow::Continue(())
    })?;
    if !closed && !pending.rows.is_empty() {
        let _ = tx.blocking_send(pending);
    }
    Ok(())
}

/// Waits until the project's open jobs leave room for `n` invitations; false if the import
/// was cancelled meanwhile.
async fn wait_for_quota(ctx: &JobContext, t: &Target<'_>, n: usize) -> Result<bool, BoxDynError> {
    let max = ctx.settings.queue.max_open_per_project;
    loop {
        let open = ctx.queues.open_jobs(QUEUES, t.project_id).await?;
        // never wait for room the quota can never make
        if open + n as u64 <= max || open == 0 {
            return Ok(true);
        }
        let import = db::imports::get(&ctx.pool, t.project_id, t.import_id).await?;
        if import.is_none_or(|i| i.cancel_requested_at.is_some()) {
            return Ok(false);
        }
        tracing::info!(open, max, "import waits for the project's open jobs to drain");
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

/// Reports the counters on the job (best effort: the import row has them too).
async fn progress(ctx: &JobContext, job: &BulkImport, handle: &JobHandle) {
    if let Ok(Some(import)) = db::imports::get(&ctx.pool, job.project_id, job.import_id).await {
        let value = serde_json::json!({
            "rowsDone": import.rows_done,
            "totalRows": import.total_rows,
            "totalEstimated": import.total_estimated,
            "created": import.created,
            "updated": import.updated,
            "skipped": import.skipped,
            "failed": import.failed,
        });
        if let Err(e) = handle.progress(&value).await {
            tracing::debug!(error = %e, "progress not recorded");
        }
    }
}

/// Ends the import (`completed` or `cancelled`): the status, the audit entry, the file's parts
/// deleted, in one transaction.
async fn end(
    ctx: &JobContext,
    job: &BulkImport,
    status: &str,
    error: Option<&str>,
    handle: &JobHandle,
) -> Result<Outcome, BoxDynError> {
    let (project, id) = (job.project_id, job.import_id);
    let mut tx = ctx.pool.begin().await.context("Failed to begin")?;
    let Some(import) = db::imports::lock(&mut tx, project, id).await.context("Failed to lock the import")? else {
        return Err(AbortError::new("the import does not exist").into());
    };
    if import.finished_at.is_none() {
        db::imports::finish(&mut tx, project, id, status, error).await.context("Failed to end the import")?;
        record(&mut tx, &import, status, error).await.context("Failed to audit the import")?;
        db::imports::delete_parts(&mut tx, id).await.context("Failed to delete the file")?;
    }
    tx.commit().await.context("Failed to commit the end of the import")?;
    let import = db::imports::get(&ctx.pool, project, id)
        .await
        .context("Failed to read the import")?
        .ok_or_else(|| AbortError::new("the import does not exist"))?;
    progress(ctx, job, handle).await;
    tracing::info!(status = %import.status, rows = import.rows_done, created = import.created, failed = import.failed, "import ended");
    Ok(Outcome::of(&import))
}

/// Fails the import with `reason` and sends the job dead (no retry reads the file differently).
async fn fail(ctx: &JobContext, job: &BulkImport, reason: &str) -> Result<Outcome, BoxDynError> {
    mark_failed(ctx, job, reason).await?;
    Err(AbortError::new(format!("the import failed: {reason}")).into())
}

async fn mark_failed(ctx: &JobContext, job: &BulkImport, reason: &str) -> anyhow::Result<()> {
    let mut tx = ctx.pool.begin().await.context("Failed to begin")?;
    if let Some(import) = db::imports::lock(&mut tx, job.project_id, job.import_id).await?
        && import.finished_at.is_none()
    {
        db::imports::finish(&mut tx, job.project_id, job.import_id, "failed", Some(reason)).await?;
        record(&mut tx, &import, "failed", Some(reason)).await?;
        db::imports::delete_parts(&mut tx, job.import_id).await?;
    }
    tx.commit().await.context("Failed to commit the failed import")?;
    Ok(())
}

/// The `users.imported` audit entry.
async fn record(
    conn: &mut sqlx::PgConnection,
    import: &Import,
    status: &str,
    error: Option<&str>,
) -> Result<(), sqlx::Error> {
    db::audit::record(
        conn,
        NewEntry::new(import.project_id, "users.imported")
            .actor(import.created_by)
            .target("import", import.import_id)
            .metadata(serde_json::json!({
                "status": status,
                "error": error,
                "fileName": import.file_name,
                "fileSha256": import.file_sha256,
                "fileBytes": import.file_bytes,
                "dryRun": import.options.get("dryRun"),
                "rows": import.rows_done,
                "created": import.created,
                "updated": import.updated,
                "skipped": import.skipped,
                "failed": import.failed,
            })),
    )
    .await
}

/// The on-dead hook: the import is `failed` with the job's last error (idempotent).
fn on_dead(ctx: JobContext, job: BulkImport, dead: DeadJob) -> BoxFuture<'static, anyhow::Result<()>> {
    Box::pin(async move {
        let reason = format!(
            "the import gave up after {} attempts: {}",
            dead.attempts, dead.last_error
        );
        mark_failed(&ctx, &job, &reason).await
    })
}
