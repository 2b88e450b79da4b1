//! Bulk user imports: the upload ([`upload`]), and following one: its progress and counters,
//! its first errors inline and all of them as a CSV report, the project's list, and cancel.
//! The work is the worker's `bulk_import` job.

pub mod upload;

use axum::{extract::State, response::Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use shared::{
    db::{
        self,
        imports::{CancelOutcome, Import, RowError},
    },
    imports::{ColumnMap, Field, ImportOptions, OnDuplicate},
};
use utoipa::{IntoParams, ToSchema};
use uuid::Uuid;

use crate::{
    AppState,
    auth::{Authorized, UserCreate, UserRead},
    envelope::{ApiJson, CursorList, Data},
    error::{ApiError, AuthRefusals, ErrorEnvelope, Result},
    extract::{ApiQuery, PathId},
};

/// Errors shown inline in an import.
pub const INLINE_ERRORS: i64 = 100;

/// Where each field was found.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportColumns {
    /// The email column's header.
    pub email: String,
    /// The name column's header, if any.
    pub name: Option<String>,
    /// The roles column's header, if any.
    pub roles: Option<String>,
    /// The status column's header, if any.
    pub status: Option<String>,
}

/// The options an import runs with.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportOptionsView {
    /// Validate only.
    pub dry_run: bool,
    /// What happens to rows whose email exists.
    pub on_duplicate: OnDuplicate,
    /// New users are invited by email.
    pub send_invitations: bool,
    /// Roles every row gets.
    pub default_role_ids: Vec<Uuid>,
}

/// An import: its file, options, progress, counters and first errors.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "camelCase")]
pub struct ImportView {
    /// The import id.
    pub id: Uuid,
    /// `queued`, `running`, `completed`, `failed` or `cancelled`.
    pub status: String,
    /// The `bulk_import` job (`GET /api/v1/jobs/{jobId}`).
    pub job_id: Uuid,
    /// Who uploaded it.
    pub created_by: Option<Uuid>,
    /// The file's name, if given.
    pub file_name: Option<String>,
    /// The file's SHA-256 (hex).
    pub file_sha256: String,
    /// The file's size in bytes.
    pub file_bytes: i64,
    /// `csv` or `xlsx`.
    pub format: String,
    /// The options.
    pub options: ImportOptionsView,
    /// Where each field was found.
    pub columns: Option<ImportColumns>,
    /// Headers no field uses (ignored).
    pub unknown_columns: Vec<String>,
    /// Data rows in the file: counted at upload for CSV; for XLSX the sheet's declared size
    /// until the import ends (`totalEstimated`).
    pub total_rows: Option<i64>,
    /// Whether `totalRows` is an estimate.
    pub total_estimated: bool,
    /// Rows processed (committed).
    pub processed: i64,
    /// Users created (in a dry run: that would be).
    pub created: i64,
    /// Existing users updated (`onDuplicate=update`).
    pub updated: i64,
    /// Rows left alone (`onDuplicate=skip`).
    pub skipped: i64,
    /// Rows refused (see `errors`).
    pub failed: i64,
    /// Rows per second since the import started.
    pub rows_per_second: Option<f64>,
    /// Seconds left at that rate, while running.
    pub eta_seconds: Option<i64>,
    /// Why it failed, if it did.
    pub error: Option<String>,
    /// When a cancel was asked.
    pub cancel_requested_at: Option<DateTime<Utc>>,
    /// Uploaded.
    pub created_at: DateTime<Utc>,
    /// Started.
    pub started_at: Option<DateTime<Utc>>,
    /// Ended.
    pub finished_at: Option<DateTime<Utc>>,
    /// The first errors by row (at most 100; all of them at `errorsUrl`). Empty in lists.
    pub errors: Vec<RowError>,
    /// The full error report (CSV).
    pub errors_url: String,
}

#[derive(Deserialize)]
struct StoredColumns {
    map: ColumnMap,
}

impl ImportView {
    /// The view of `import`, with `errors` inline.
    pub fn new(import: Import, errors: Vec<RowError>) -> Self {
        let options: ImportOptions =
            serde_json::from_value(import.options.clone()).unwrap_or_default();
        let map = serde_json::from_value::<StoredColumns>(import.columns.clone())
            .ok()
            .map(|c| c.map);
        let columns = map.as_ref().map(|m| ImportColumns {
            email: m.header(Field::Email).unwrap_or_default().to_owned(),
            name: m.header(Field::Name).map(str::to_owned),
            roles: m.header(Field::Roles).map(str::to_owned),
            status: m.header(Field::Status).map(str::to_owned),
        });
        let end = import.finished_at.or(import.progress_at);
        let rate = match (import.started_at, end) {
            (Some(start), Some(end)) if end > start && import.rows_done > 0 => {
                let secs = (end - start).num_milliseconds() as f64 / 1000.0;
                Some((import.rows_done as f64 / secs * 10.0).round() / 10.0)
            }
            _ => None,
        };
        let eta = match (rate, import.total_rows, import.finished_at) {
            (Some(r), Some(total), None) if r > 0.0 => {
                Some(((total - import.rows_done).max(0) as f64 / r).ceil() as i64)
            }
            _ => None,
        };
        Self {
            id: import.import_id,
            errors_url: format!("/api/v1/users/imports/{}/errors.csv", import.import_id),
            status: import.status,
            job_id: import.job_id,
            created_by: import.created_by,
            file_name: import.file_name,
            file_sha256: import.file_sha256,
            file_bytes: import.file_bytes,
            format: import.format,
            options: ImportOptionsView {
                dry_run: options.dry_run,
                on_duplicate: options.on_duplicate,
                send_invitations: options.send_invitations,
                default_role_ids: options.default_role_ids,
            },
            columns,
            unknown_columns: map.map(|m| m.unknown).unwrap_or_default(),
            total_rows: import.total_rows,
            total_estimated: import.total_estimated,
            processed: import.rows_done,
            created: import.created,
            updated: import.updated,
            skipped: import.skipped,
            failed: import.failed,
            rows_per_second: rate,
            eta_seconds: eta,
            error: import.error,
            cancel_requested_at: import.cancel_requested_at,
            created_at: import.created_at,
            started_at: import.started_at,
            finished_at: import.finished_at,
            errors,
        }
    }
}

/// One import of the caller's project.
async fn find(s: &AppState, project: Uuid, id: Uuid) -> Result<Import> {
    db::imports::get(&s.pool, project, id)
        .await?
        .ok_or(ApiError::NotFound("import"))
}

/// An import: status, progress (processed, total, rate, ETA), counters and the first 100
/// errors by row.
///
/// Permission: `user:read`. Another project's import is not found.
#[utoipa::path(get, path = "/api/v1/users/imports/{id}", tag = "users",
    params(("id" = Uuid, Path, description = "Import id")),
    security(("bearer" = ["user:read"])),
    responses((status = 200, body = inline(Data<ImportView>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(crate) async fn get_import(
    auth: Authorized<UserRead>,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<ApiJson<Data<ImportView>>> {
    let project = auth.claims.project_id;
    let import = find(&s, project, id).await?;
    let errors = db::imports::first_errors(&s.pool, project, id, INLINE_ERRORS).await?;
    Ok(ApiJson(Data::new(ImportView::new(import, errors))))
}

/// Page of the imports list.
#[derive(Debug, Deserialize, IntoParams)]
#[serde(rename_all = "camelCase")]
#[into_params(parameter_in = Query)]
pub struct ImportListParams {
    /// The previous page's `meta.nextCursor`; empty is no cursor.
    pub after: Option<String>,
    /// Imports per page, 1 to 100 (default 50).
    #[param(minimum = 1, maximum = 100)]
    pub limit: Option<u32>,
}

/// The project's imports, newest first (without their errors).
///
/// Permission: `user:read`.
#[utoipa::path(get, path = "/api/v1/users/imports", tag = "users",
    params(ImportListParams),
    security(("bearer" = ["user:read"])),
    responses((status = 200, body = inline(CursorList<ImportView>)),
              (status = 400, body = ErrorEnvelope),
              (status = 422, body = ErrorEnvelope),
              AuthRefusals))]
pub(crate) async fn list_imports(
    auth: Authorized<UserRead>,
    State(s): State<AppState>,
    ApiQuery(params): ApiQuery<ImportListParams>,
) -> Result<ApiJson<CursorList<ImportView>>> {
    let (limit, before) = crate::envelope::cursor_page(params.limit, params.after.as_deref())?;
    let rows = db::imports::list(
        &s.pool,
        auth.claims.project_id,
        before,
        i64::from(limit) + 1,
    )
    .await?;
    Ok(ApiJson(CursorList::new(
        rows.into_iter()
            .map(|i| ImportView::new(i, Vec::new()))
            .collect(),
        limit,
        |v| crate::envelope::created_cursor(v.created_at, v.id),
    )))
}

/// Cancels an import: one not started yet is cancelled at once; a running one stops at its
/// next chunk boundary, keeping the chunks already committed. Answers the import.
///
/// Permission: `user:create`. 409 if the import has already ended.
#[utoipa::path(post, path = "/api/v1/users/imports/{id}/cancel", tag = "users",
    params(("id" = Uuid, Path, description = "Import id")),
    security(("bearer" = ["user:create"])),
    responses((status = 200, body = inline(Data<ImportView>)),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              (status = 409, body = ErrorEnvelope),
              AuthRefusals))]
pub(crate) async fn cancel_import(
    auth: Authorized<UserCreate>,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<ApiJson<Data<ImportView>>> {
    let project = auth.claims.project_id;
    match db::imports::request_cancel(&s.pool, project, id).await? {
        None => return Err(ApiError::NotFound("import")),
        Some(CancelOutcome::Ended) => {
            let import = find(&s, project, id).await?;
            return Err(ApiError::Conflict(format!(
                "the import has already ended ({})",
                import.status
            )));
        }
        Some(CancelOutcome::Cancelled | CancelOutcome::Requested) => {}
    }
    let import = find(&s, project, id).await?;
    let errors = db::imports::first_errors(&s.pool, project, id, INLINE_ERRORS).await?;
    Ok(ApiJson(Data::new(ImportView::new(import, errors))))
}

/// Every row error of an import as CSV (`row,column,value,message`, by row), streamed; cells a
/// spreadsheet would run as formulas are quoted with a leading `'`.
///
/// Permission: `user:read`. Another project's import is not found.
#[utoipa::path(get, path = "/api/v1/users/imports/{id}/errors.csv", tag = "users",
    params(("id" = Uuid, Path, description = "Import id")),
    security(("bearer" = ["user:read"])),
    responses((status = 200, content_type = "text/csv", body = String,
               description = "row,column,value,message"),
              (status = 400, body = ErrorEnvelope),
              (status = 404, body = ErrorEnvelope),
              AuthRefusals))]
pub(crate) async fn import_errors_csv(
    auth: Authorized<UserRead>,
    State(s): State<AppState>,
    PathId(id): PathId,
) -> Result<Response> {
    let project = auth.claims.project_id;
    find(&s, project, id).await?;
    let rows = db::imports::stream_errors(s.pool.clone(), project, id);
    crate::csv_export::response(
        &format!("import-{id}-errors.csv"),
        &["row", "column", "value", "message"],
        rows,
        |e| {
            vec![
                e.row_number.to_string(),
                e.column_name.unwrap_or_default(),
                e.value.unwrap_or_default(),
                e.message,
            ]
        },
    )
    .await
}
